//! `/participants/...`: participants, their currencies and accounts,
//! endpoints, limits, positions, and operator funds in and out.
//!
//! Reads go straight to storage. Every change to a balance or a limit goes
//! through the participant's position actor, which serialises it with every
//! other change to that position and answers only once it is durable.

use actix_web::{web, HttpResponse};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use switch_actors::position::rules::{FundsMove, PositionCommand};
use switch_actors::ErrorCode;
use switch_storage::participants::{AccountRecord, ParticipantRecord};

use super::not_found;
use crate::errors::{ApiError, ApiResult};
use crate::json::{check_amount, number, request_hash, valid_correlation_id, Body};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/participants")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    );
    cfg.service(web::resource("/participants/limits").route(web::get().to(all_limits)));
    cfg.service(
        web::resource("/participants/{name}")
            .route(web::get().to(get))
            .route(web::put().to(set_active)),
    );
    cfg.service(
        web::resource("/participants/{name}/endpoints")
            .route(web::get().to(endpoints))
            .route(web::post().to(add_endpoint)),
    );
    cfg.service(
        web::resource("/participants/{name}/limits")
            .route(web::get().to(limits))
            .route(web::put().to(adjust_limit)),
    );
    cfg.service(web::resource("/participants/{name}/positions").route(web::get().to(positions)));
    cfg.service(web::resource("/participants/{name}/callbacks").route(web::get().to(callbacks)));
    cfg.service(
        web::resource("/participants/{name}/accounts")
            .route(web::get().to(accounts))
            .route(web::post().to(create_hub_account)),
    );
    cfg.service(
        web::resource("/participants/{name}/initialPositionAndLimits")
            .route(web::post().to(initial_position_and_limits)),
    );
    cfg.service(
        web::resource("/participants/{name}/accounts/{id}")
            .route(web::post().to(record_funds))
            .route(web::put().to(set_account_active)),
    );
    cfg.service(
        web::resource("/participants/{name}/accounts/{id}/transfers/{transfer_id}")
            .route(web::put().to(finish_funds_out)),
    );
}

/// Hub account types an operator may create (the reference hub's HUB_ACCOUNTS).
const HUB_ACCOUNT_TYPES: &[&str] = &["HUB_RECONCILIATION", "HUB_MULTILATERAL_SETTLEMENT"];

fn participant_json(state: &AppState, p: &ParticipantRecord) -> Value {
    let link = format!(
        "{}/participants/{}",
        state.config.operator_public_url.trim_end_matches('/'),
        p.name
    );
    let accounts: Vec<Value> = p
        .accounts
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "ledgerAccountType": a.ledger_account_type,
                "currency": a.currency,
                "isActive": a.is_active as i64,
                "createdDate": a.created_date,
                "createdBy": "unknown",
            })
        })
        .collect();
    json!({
        "name": p.name,
        "id": link,
        "created": p.created_date,
        "isActive": p.is_active as i64,
        "links": {"self": link},
        "accounts": accounts,
        "isProxy": p.is_proxy as i64,
    })
}

async fn participant(state: &AppState, name: &str) -> ApiResult<ParticipantRecord> {
    state
        .store
        .participant(name)
        .await?
        .ok_or_else(|| not_found(&format!("participant {name}")))
}

async fn check_currency(state: &AppState, field: &str, code: &str) -> ApiResult<()> {
    if state.store.currency_scale(code).await?.is_none() {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!("\"{field}\" {code} is not a supported ISO 4217 currency code"),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct ProxyFilter {
    #[serde(rename = "isProxy")]
    is_proxy: Option<String>,
}

async fn list(
    state: web::Data<AppState>,
    query: web::Query<ProxyFilter>,
) -> ApiResult<HttpResponse> {
    let filter = match query.is_proxy.as_deref() {
        None | Some("") | Some("null") => None,
        Some("true") | Some("1") => Some(true),
        Some("false") | Some("0") => Some(false),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::GenericValidationError,
                format!("\"isProxy\" {other} is not a boolean"),
            ))
        }
    };
    let participants = state.store.list_participants(filter).await?;
    Ok(HttpResponse::Ok().json(
        participants
            .iter()
            .map(|p| participant_json(&state, p))
            .collect::<Vec<_>>(),
    ))
}

async fn get(state: web::Data<AppState>, name: web::Path<String>) -> ApiResult<HttpResponse> {
    let p = participant(&state, &name).await?;
    Ok(HttpResponse::Ok().json(participant_json(&state, &p)))
}

fn valid_name(name: &str) -> bool {
    (2..=30).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// `POST /participants`: creates a participant, or adds a currency to one.
async fn create(state: web::Data<AppState>, bytes: web::Bytes) -> ApiResult<HttpResponse> {
    let body = Body::parse(&bytes)?;
    let name = body.str("name")?;
    let currency = body.opt_str("currency")?;
    let is_proxy = body.opt_bool("isProxy")?.unwrap_or(false);
    if !valid_name(&name) {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            "\"name\" must be 2 to 30 alphanumeric characters",
        ));
    }
    let existing = state.store.participant(&name).await?;
    let Some(currency) = currency else {
        if existing.is_some() {
            return Err(ApiError::new(
                ErrorCode::GenericClientError,
                format!("participant {name} already exists"),
            ));
        }
        state.store.create_participant(&name, is_proxy).await?;
        state.participant_changed(&name);
        let created = participant(&state, &name).await?;
        return Ok(HttpResponse::Created().json(participant_json(&state, &created)));
    };
    check_currency(&state, "currency", &currency).await?;
    if let Some(p) = &existing {
        if p.accounts.iter().any(|a| a.currency == currency) {
            return Err(ApiError::new(
                ErrorCode::GenericClientError,
                "Participant currency has already been registered",
            ));
        }
    }
    for hub_type in HUB_ACCOUNT_TYPES {
        if state
            .store
            .hub_account(&state.config.hub_name, &currency, hub_type)
            .await?
            .is_none()
        {
            return Err(ApiError::new(
                ErrorCode::AddPartyInformationError,
                format!("Hub {hub_type} account for the specified currency does not exist"),
            ));
        }
    }
    let account_types = account_types_for(&state, &currency).await?;
    let participant_id = match &existing {
        Some(p) => p.id,
        None => state.store.create_participant(&name, is_proxy).await?,
    };
    let types: Vec<&str> = account_types.iter().map(String::as_str).collect();
    state
        .store
        .create_accounts(participant_id, &currency, &types)
        .await?;
    state.participant_changed(&name);
    let created = participant(&state, &name).await?;
    Ok(HttpResponse::Created().json(participant_json(&state, &created)))
}

/// The ledger and settlement account types of the settlement models for a
/// currency (or the default model), as the reference hub derives them.
async fn account_types_for(state: &AppState, currency: &str) -> ApiResult<Vec<String>> {
    let models = state.store.settlement_models().await?;
    let active: Vec<_> = models.iter().filter(|m| m.is_active).collect();
    let mut chosen: Vec<_> = active
        .iter()
        .filter(|m| m.currency.as_deref() == Some(currency))
        .collect();
    let defaults: Vec<_> = active
        .iter()
        .filter(|m| m.currency.is_none())
        .filter(|d| {
            !chosen
                .iter()
                .any(|m| m.ledger_account_type == d.ledger_account_type)
        })
        .collect();
    chosen.extend(defaults);
    if chosen.is_empty() {
        return Err(ApiError::new(
            ErrorCode::GenericSettlementError,
            "Unable to find a matching or default, Settlement Model",
        ));
    }
    let mut types: Vec<String> = Vec::new();
    for model in chosen {
        for t in [&model.ledger_account_type, &model.settlement_account_type] {
            if !types.contains(t) {
                types.push(t.clone());
            }
        }
    }
    Ok(types)
}

async fn set_active(
    state: web::Data<AppState>,
    name: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body = Body::parse(&bytes)?;
    let is_active = body.bool("isActive")?;
    let p = participant(&state, &name).await?;
    state.store.set_participant_active(p.id, is_active).await?;
    state.participant_changed(&p.name);
    let updated = participant(&state, &name).await?;
    Ok(HttpResponse::Ok().json(participant_json(&state, &updated)))
}

/// `GET /participants/{name}/callbacks`: how callbacks to this participant
/// fared since the node started (not in the reference hub, which has no
/// delivery reporting).
async fn callbacks(state: web::Data<AppState>, name: web::Path<String>) -> ApiResult<HttpResponse> {
    let p = participant(&state, &name).await?;
    Ok(HttpResponse::Ok().json(state.notifier.ledger().of(&p.name)))
}

async fn endpoints(state: web::Data<AppState>, name: web::Path<String>) -> ApiResult<HttpResponse> {
    let p = participant(&state, &name).await?;
    let list = state.store.endpoints(p.id).await?;
    Ok(HttpResponse::Ok().json(
        list.iter()
            .map(|e| json!({"type": e.endpoint_type, "value": e.value}))
            .collect::<Vec<_>>(),
    ))
}

async fn add_endpoint(
    state: web::Data<AppState>,
    name: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body = Body::parse(&bytes)?;
    let endpoint_type = body.str("type")?;
    let value = body.str("value")?;
    let p = participant(&state, &name).await?;
    if !state.store.endpoint_type_exists(&endpoint_type).await? {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!("\"type\" {endpoint_type} is not an endpoint type"),
        ));
    }
    if value.is_empty() || value.len() > 1024 {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            "\"value\" must be 1 to 1024 characters",
        ));
    }
    // Templates such as {{transferId}} are kept verbatim; they are
    // substituted when a callback is sent.
    state
        .store
        .add_endpoint(p.id, &endpoint_type, &value)
        .await?;
    state.participant_changed(&p.name);
    Ok(HttpResponse::Created().finish())
}

#[derive(Deserialize)]
struct LimitFilter {
    currency: Option<String>,
    #[serde(rename = "type")]
    limit_type: Option<String>,
}

fn limit_json(value: Decimal, alarm: Decimal, limit_type: &str) -> Value {
    json!({"type": limit_type, "value": number(value), "alarmPercentage": number(alarm)})
}

async fn limits(
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<LimitFilter>,
) -> ApiResult<HttpResponse> {
    let p = participant(&state, &name).await?;
    let query = query.into_inner();
    let list = state
        .store
        .limits(Some(p.id), query.currency, query.limit_type)
        .await?;
    Ok(HttpResponse::Ok().json(
        list.iter()
            .map(|l| json!({"currency": l.currency, "limit": limit_json(l.value, l.alarm_percentage, &l.limit_type)}))
            .collect::<Vec<_>>(),
    ))
}

async fn all_limits(
    state: web::Data<AppState>,
    query: web::Query<LimitFilter>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    let list = state
        .store
        .limits(None, query.currency, query.limit_type)
        .await?;
    Ok(HttpResponse::Ok().json(
        list.iter()
            .map(|l| {
                json!({
                    "name": l.participant_name,
                    "currency": l.currency,
                    "limit": limit_json(l.value, l.alarm_percentage, &l.limit_type),
                })
            })
            .collect::<Vec<_>>(),
    ))
}

fn limit_type(limit: &Body) -> ApiResult<String> {
    let limit_type = limit.str("type")?;
    if !super::reference::LIMIT_TYPES.contains(&limit_type.as_str()) {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!("\"limit.type\" {limit_type} is not supported; use NET_DEBIT_CAP"),
        ));
    }
    Ok(limit_type)
}

/// The POSITION account of a participant in a currency, which must exist.
fn position_account<'a>(p: &'a ParticipantRecord, currency: &str) -> ApiResult<&'a AccountRecord> {
    p.accounts
        .iter()
        .find(|a| a.currency == currency && a.ledger_account_type == "POSITION")
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::GenericClientError,
                format!("participant {} has no account in {currency}", p.name),
            )
        })
}

/// Default alarm percentage when the request gives none (the reference hub's default).
const ALARM_PERCENTAGE_DEFAULT: i64 = 10;

async fn initial_position_and_limits(
    state: web::Data<AppState>,
    name: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body = Body::parse(&bytes)?;
    let currency = body.str("currency")?;
    let limit = body.object("limit")?;
    limit_type(&limit)?;
    let value = check_amount("limit.value", limit.decimal("value")?)?;
    let alarm_percentage = limit
        .opt_decimal("alarmPercentage")?
        .unwrap_or(Decimal::from(ALARM_PERCENTAGE_DEFAULT));
    let initial_position = body
        .opt_decimal("initialPosition")?
        .unwrap_or(Decimal::ZERO);
    check_amount("initialPosition", initial_position.abs())?;
    check_currency(&state, "currency", &currency).await?;
    let p = participant(&state, &name).await?;
    position_account(&p, &currency)?;
    state
        .position(
            &p.name,
            &currency,
            PositionCommand::InitialPositionAndLimits {
                net_debit_cap: value,
                alarm_percentage,
                initial_position,
            },
        )
        .await?;
    Ok(HttpResponse::Created().finish())
}

async fn adjust_limit(
    state: web::Data<AppState>,
    name: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body = Body::parse(&bytes)?;
    let currency = body.str("currency")?;
    let limit = body.object("limit")?;
    let kind = limit_type(&limit)?;
    let value = check_amount("limit.value", limit.decimal("value")?)?;
    let alarm_percentage = limit.decimal("alarmPercentage")?;
    check_currency(&state, "currency", &currency).await?;
    let p = participant(&state, &name).await?;
    position_account(&p, &currency)?;
    let reply = state
        .position(
            &p.name,
            &currency,
            PositionCommand::SetNetDebitCap {
                value,
                alarm_percentage,
            },
        )
        .await?;
    let cap = reply.book.net_debit_cap.ok_or_else(|| {
        ApiError::new(
            ErrorCode::InternalServerError,
            "limit missing after it was set",
        )
    })?;
    Ok(HttpResponse::Ok().json(json!({
        "currency": currency,
        "limit": limit_json(cap.value, cap.alarm_percentage, &kind),
    })))
}

#[derive(Deserialize)]
struct CurrencyFilter {
    currency: Option<String>,
}

async fn positions(
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<CurrencyFilter>,
) -> ApiResult<HttpResponse> {
    let p = participant(&state, &name).await?;
    let position_of = |a: &AccountRecord| json!({"currency": a.currency, "value": number(a.value + a.reserved_value), "changedDate": a.changed_date});
    let mut list = p
        .accounts
        .iter()
        .filter(|a| a.ledger_account_type == "POSITION");
    match &query.currency {
        // With a currency the reference hub answers one object, not a list.
        Some(currency) => {
            let account = list
                .find(|a| &a.currency == currency)
                .ok_or_else(|| not_found(&format!("position of {} in {currency}", p.name)))?;
            Ok(HttpResponse::Ok().json(position_of(account)))
        }
        None => Ok(HttpResponse::Ok().json(list.map(position_of).collect::<Vec<_>>())),
    }
}

async fn accounts(state: web::Data<AppState>, name: web::Path<String>) -> ApiResult<HttpResponse> {
    let p = participant(&state, &name).await?;
    Ok(HttpResponse::Ok().json(
        p.accounts
            .iter()
            .map(|a| {
                json!({
                    "id": a.id,
                    "ledgerAccountType": a.ledger_account_type,
                    "currency": a.currency,
                    "isActive": a.is_active as i64,
                    "value": number(a.value),
                    "reservedValue": number(a.reserved_value),
                    "changedDate": a.changed_date,
                })
            })
            .collect::<Vec<_>>(),
    ))
}

/// `POST /participants/{hub}/accounts`: hub accounts only.
async fn create_hub_account(
    state: web::Data<AppState>,
    name: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body = Body::parse(&bytes)?;
    let account_type = body.str("type")?;
    let currency = body.str("currency")?;
    let p = participant(&state, &name).await?;
    if p.name != state.config.hub_name {
        return Err(ApiError::new(
            ErrorCode::GenericClientError,
            "Endpoint is reserved for creation of Hub account types only",
        ));
    }
    if !HUB_ACCOUNT_TYPES.contains(&account_type.as_str()) {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!(
                "\"type\" {account_type}: the requested hub operator account type is not allowed"
            ),
        ));
    }
    check_currency(&state, "currency", &currency).await?;
    if p.accounts
        .iter()
        .any(|a| a.currency == currency && a.ledger_account_type == account_type)
    {
        return Err(ApiError::new(
            ErrorCode::GenericClientError,
            "Hub account has already been registered.",
        ));
    }
    state
        .store
        .create_accounts(p.id, &currency, &[&account_type])
        .await?;
    state.participant_changed(&p.name);
    let updated = participant(&state, &name).await?;
    Ok(HttpResponse::Created().json(participant_json(&state, &updated)))
}

/// The account named in the path, which must belong to the participant.
fn owned_account(p: &ParticipantRecord, account_id: &str) -> ApiResult<AccountRecord> {
    let id: i64 = account_id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::GenericValidationError,
            "account id must be an integer",
        )
    })?;
    p.accounts
        .iter()
        .find(|a| a.id == id)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::GenericClientError,
                format!("account {id} does not belong to participant {}", p.name),
            )
        })
}

async fn set_account_active(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let (name, account_id) = path.into_inner();
    let body = Body::parse(&bytes)?;
    let is_active = body.bool("isActive")?;
    let p = participant(&state, &name).await?;
    let account = owned_account(&p, &account_id)?;
    if account.ledger_account_type != "POSITION" {
        return Err(ApiError::new(
            ErrorCode::GenericClientError,
            "Only position accounts can be activated or deactivated",
        ));
    }
    state
        .store
        .set_account_active(account.id, is_active)
        .await?;
    state.participant_changed(&p.name);
    Ok(HttpResponse::Ok().finish())
}

/// `POST /participants/{name}/accounts/{id}`: funds in, or funds-out reserve.
async fn record_funds(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let (name, account_id) = path.into_inner();
    let body = Body::parse(&bytes)?;
    let transfer_id = body.str("transferId")?;
    let external_reference = body.str("externalReference")?;
    let action = body.str("action")?;
    let reason = body.str("reason")?;
    let money = body.object("amount")?;
    let amount = check_amount("amount.amount", money.decimal("amount")?)?;
    let currency = money.str("currency")?;
    if !valid_correlation_id(&transfer_id) {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            "\"transferId\" must be a UUID or a ULID",
        ));
    }
    check_currency(&state, "amount.currency", &currency).await?;
    let p = participant(&state, &name).await?;
    let account = owned_account(&p, &account_id)?;
    if account.ledger_account_type != "SETTLEMENT" {
        return Err(ApiError::new(
            ErrorCode::GenericClientError,
            "funds in and out are recorded on the participant's SETTLEMENT account",
        ));
    }
    if account.currency != currency {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!(
                "\"amount.currency\" {currency} is not the account's currency {}",
                account.currency
            ),
        ));
    }
    let funds = FundsMove {
        transfer_id,
        amount,
        external_reference,
        reason,
        request_hash: request_hash(&bytes),
    };
    let command = match action.as_str() {
        "recordFundsIn" => PositionCommand::FundsIn(funds),
        "recordFundsOutPrepareReserve" => PositionCommand::FundsOutReserve(funds),
        _ => {
            return Err(ApiError::new(
                ErrorCode::GenericValidationError,
                "\"action\" must be recordFundsIn or recordFundsOutPrepareReserve",
            ))
        }
    };
    state.position(&p.name, &account.currency, command).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// `PUT /participants/{name}/accounts/{id}/transfers/{transferId}`: commit or abort a funds-out.
async fn finish_funds_out(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let (name, account_id, transfer_id) = path.into_inner();
    let body = Body::parse(&bytes)?;
    let action = body.str("action")?;
    let reason = body.str("reason")?;
    let commit = match action.as_str() {
        "recordFundsOutCommit" => true,
        "recordFundsOutAbort" => false,
        _ => {
            return Err(ApiError::new(
                ErrorCode::GenericValidationError,
                "\"action\" must be recordFundsOutCommit or recordFundsOutAbort",
            ))
        }
    };
    let p = participant(&state, &name).await?;
    let account = owned_account(&p, &account_id)?;
    if account.ledger_account_type != "SETTLEMENT" {
        return Err(ApiError::new(
            ErrorCode::GenericClientError,
            "funds out is recorded on the participant's SETTLEMENT account",
        ));
    }
    state
        .position(
            &p.name,
            &account.currency,
            PositionCommand::FundsOutFinish {
                transfer_id,
                commit,
                reason,
            },
        )
        .await?;
    Ok(HttpResponse::Accepted().finish())
}
