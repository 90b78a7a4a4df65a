//! The ALS admin API on the operator port: which oracle serves which party
//! id type (and currency). One active oracle per type, endpoint type and
//! currency, as the reference account-lookup service.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use switch_actors::ErrorCode;
use switch_storage::lookup::OracleRecord;

use crate::errors::{ApiError, ApiResult};
use crate::json::Body;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/oracles")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    );
    cfg.service(
        web::resource("/oracles/{id}")
            .route(web::put().to(update))
            .route(web::delete().to(delete)),
    );
}

/// Party id types of FSPIOP v1.1 plus those the reference ALS seeds for PISP.
pub const PARTY_ID_TYPES: &[&str] = &[
    "MSISDN",
    "EMAIL",
    "PERSONAL_ID",
    "BUSINESS",
    "DEVICE",
    "ACCOUNT_ID",
    "IBAN",
    "ALIAS",
    "CONSENT",
    "THIRD_PARTY_LINK",
];

fn oracle_json(o: &OracleRecord) -> Value {
    json!({
        "oracleId": o.id.to_string(),
        "oracleIdType": o.party_id_type,
        "endpoint": {"value": o.value, "endpointType": o.endpoint_type},
        "currency": o.currency,
        "isDefault": o.is_default,
    })
}

#[derive(Deserialize)]
struct Filter {
    #[serde(rename = "type")]
    party_id_type: Option<String>,
    currency: Option<String>,
}

async fn list(state: web::Data<AppState>, filter: web::Query<Filter>) -> ApiResult<HttpResponse> {
    let oracles = state.store.oracles().await?;
    let wanted = oracles.iter().filter(|o| {
        filter
            .party_id_type
            .as_deref()
            .is_none_or(|t| t == o.party_id_type)
            && filter
                .currency
                .as_deref()
                .is_none_or(|c| Some(c) == o.currency.as_deref())
    });
    Ok(HttpResponse::Ok().json(wanted.map(oracle_json).collect::<Vec<_>>()))
}

async fn parse(state: &AppState, bytes: &[u8], id: i64) -> ApiResult<OracleRecord> {
    let body = Body::parse(bytes)?;
    let party_id_type = body.str("oracleIdType")?;
    if !PARTY_ID_TYPES.contains(&party_id_type.as_str()) {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!("\"oracleIdType\" {party_id_type} is not a party id type"),
        ));
    }
    let endpoint = body.object("endpoint")?;
    let value = endpoint.str("value")?;
    let endpoint_type = endpoint.str("endpointType")?;
    if endpoint_type != "URL" || !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            "\"endpoint\" must be {\"endpointType\": \"URL\", \"value\": \"http(s)://...\"}",
        ));
    }
    let currency = body.opt_str("currency")?;
    if let Some(code) = &currency {
        if state.store.currency_scale(code).await?.is_none() {
            return Err(ApiError::new(
                ErrorCode::GenericValidationError,
                format!("\"currency\" {code} is not a supported ISO 4217 code"),
            ));
        }
    }
    Ok(OracleRecord {
        id,
        party_id_type,
        endpoint_type,
        value,
        currency,
        is_default: body.opt_bool("isDefault")?.unwrap_or(false),
        is_active: true,
        created_date: String::new(),
    })
}

/// One active oracle per (type, endpoint type, currency).
async fn check_unique(state: &AppState, oracle: &OracleRecord) -> ApiResult<()> {
    let clash = state.store.oracles().await?.into_iter().any(|o| {
        o.id != oracle.id
            && o.party_id_type == oracle.party_id_type
            && o.endpoint_type == oracle.endpoint_type
            && o.currency == oracle.currency
    });
    if clash {
        return Err(ApiError::new(
            ErrorCode::AddPartyInformationError,
            format!(
                "an active oracle for {} in {} already exists",
                oracle.party_id_type,
                oracle.currency.as_deref().unwrap_or("every currency")
            ),
        ));
    }
    Ok(())
}

async fn create(state: web::Data<AppState>, bytes: web::Bytes) -> ApiResult<HttpResponse> {
    let oracle = parse(&state, &bytes, 0).await?;
    check_unique(&state, &oracle).await?;
    state.store.create_oracle(oracle).await?;
    state.oracles_changed();
    Ok(HttpResponse::Created().finish())
}

async fn existing(state: &AppState, id: &str) -> ApiResult<i64> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::GenericValidationError,
            "oracle ID must be an integer",
        )
    })?;
    if state.store.oracles().await?.iter().any(|o| o.id == id) {
        Ok(id)
    } else {
        Err(ApiError::new(
            ErrorCode::GenericIdNotFound,
            format!("oracle {id} does not exist"),
        ))
    }
}

async fn update(
    state: web::Data<AppState>,
    id: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let id = existing(&state, &id).await?;
    let oracle = parse(&state, &bytes, id).await?;
    check_unique(&state, &oracle).await?;
    state.store.update_oracle(oracle).await?;
    state.oracles_changed();
    Ok(HttpResponse::NoContent().finish())
}

async fn delete(state: web::Data<AppState>, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = existing(&state, &id).await?;
    state.store.delete_oracle(id).await?;
    state.oracles_changed();
    Ok(HttpResponse::NoContent().finish())
}
