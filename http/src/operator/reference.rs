//! Reference data: enumerations, ledger account types, settlement models,
//! and the decoded-transaction lookup.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use switch_actors::ErrorCode;
use switch_storage::participants::SettlementModelRecord;

use super::not_found;
use crate::errors::{ApiError, ApiResult};
use crate::json::Body;
use crate::state::AppState;

pub const LIMIT_TYPES: &[&str] = &["NET_DEBIT_CAP"];

pub async fn enums(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let types = state.store.ledger_account_types().await?;
    let ledger_account_types: serde_json::Map<String, Value> = types
        .iter()
        .map(|t| (t.name.clone(), json!(t.id)))
        .collect();
    let numbered = |names: &[&str]| -> Value {
        Value::Object(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.to_string(), json!(i + 1)))
                .collect(),
        )
    };
    Ok(HttpResponse::Ok().json(json!({
        "ledgerAccountType": ledger_account_types,
        "ledgerEntryType": numbered(&["PRINCIPLE_VALUE", "INTERCHANGE_FEE", "HUB_FEE", "POSITION_DEPOSIT", "POSITION_WITHDRAWAL",
            "SETTLEMENT_NET_RECIPIENT", "SETTLEMENT_NET_SENDER", "SETTLEMENT_NET_ZERO", "RECORD_FUNDS_IN", "RECORD_FUNDS_OUT"]),
        "participantLimitType": numbered(LIMIT_TYPES),
        "transferState": numbered(&["RECEIVED_PREPARE", "RESERVED", "RECEIVED_FULFIL", "COMMITTED", "FAILED", "RESERVED_TIMEOUT",
            "RECEIVED_REJECT", "ABORTED_REJECTED", "RECEIVED_ERROR", "ABORTED_ERROR", "EXPIRED_PREPARED", "EXPIRED_RESERVED", "INVALID", "SETTLED"]),
        "transferParticipantRoleType": numbered(&["PAYER_DFSP", "PAYEE_DFSP", "HUB", "DFSP_SETTLEMENT", "DFSP_POSITION"]),
        "settlementWindowState": numbered(&["OPEN", "PROCESSING", "CLOSED", "PENDING_SETTLEMENT", "SETTLED", "ABORTED", "FAILED"]),
        "settlementState": numbered(&["PENDING_SETTLEMENT", "PS_TRANSFERS_RECORDED", "PS_TRANSFERS_RESERVED", "PS_TRANSFERS_COMMITTED",
            "SETTLING", "SETTLED", "ABORTED"]),
        "settlementDelay": numbered(&["IMMEDIATE", "DEFERRED"]),
        "settlementGranularity": numbered(&["GROSS", "NET"]),
        "settlementInterchange": numbered(&["BILATERAL", "MULTILATERAL"]),
        "adminTransferAction": numbered(&["recordFundsIn", "recordFundsOutPrepareReserve", "recordFundsOutCommit", "recordFundsOutAbort"]),
    })))
}

pub async fn list_ledger_account_types(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let types = state.store.ledger_account_types().await?;
    let body: Vec<Value> = types
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "description": t.description,
                "isActive": t.is_active as i64,
                "isSettleable": t.is_settleable,
                "createdDate": t.created_date,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(body))
}

fn is_word(name: &str) -> bool {
    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub async fn create_ledger_account_type(
    state: web::Data<AppState>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body = Body::parse(&bytes)?;
    let name = body.str("name")?;
    let description = body.str("description")?;
    let is_active = body.bool("isActive")?;
    let is_settleable = body.bool("isSettleable")?;
    if name.len() < 2 || name.len() > 30 || !is_word(&name) {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            "\"name\" must be 2 to 30 word characters",
        ));
    }
    let existing = state.store.ledger_account_types().await?;
    if existing.iter().any(|t| t.name == name) {
        return Err(ApiError::new(
            ErrorCode::GenericClientError,
            format!("ledger account type {name} already exists"),
        ));
    }
    state
        .store
        .create_ledger_account_type(&name, &description, is_active, is_settleable)
        .await?;
    Ok(HttpResponse::Created().finish())
}

fn settlement_model_json(m: &SettlementModelRecord) -> Value {
    json!({
        "settlementModelId": m.id,
        "name": m.name,
        "isActive": m.is_active as i64,
        "settlementGranularity": m.settlement_granularity,
        "settlementInterchange": m.settlement_interchange,
        "settlementDelay": m.settlement_delay,
        "currency": m.currency,
        "requireLiquidityCheck": m.require_liquidity_check,
        "ledgerAccountTypeId": m.ledger_account_type,
        "ledgerAccountType": m.ledger_account_type,
        "settlementAccountTypeId": m.settlement_account_type,
        "settlementAccountType": m.settlement_account_type,
        "autoPositionReset": m.auto_position_reset,
    })
}

pub async fn list_settlement_models(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let models = state.store.settlement_models().await?;
    Ok(HttpResponse::Ok().json(models.iter().map(settlement_model_json).collect::<Vec<_>>()))
}

pub async fn get_settlement_model(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let models = state.store.settlement_models().await?;
    let model = models
        .iter()
        .find(|m| m.name == *name)
        .ok_or_else(|| not_found("settlement model"))?;
    Ok(HttpResponse::Ok().json(settlement_model_json(model)))
}

pub async fn update_settlement_model(
    state: web::Data<AppState>,
    name: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body = Body::parse(&bytes)?;
    let is_active = body.bool("isActive")?;
    let models = state.store.settlement_models().await?;
    let model = models
        .iter()
        .find(|m| m.name == *name)
        .ok_or_else(|| not_found("settlement model"))?;
    state
        .store
        .set_settlement_model_active(model.id, is_active)
        .await?;
    state.models_changed();
    let mut updated = model.clone();
    updated.is_active = is_active;
    Ok(HttpResponse::Ok().json(settlement_model_json(&updated)))
}

/// The combinations the reference hub accepts (delay-granularity-interchange).
const VALID_MODELS: &[(&str, &str, &str)] = &[
    ("IMMEDIATE", "GROSS", "BILATERAL"),
    ("DEFERRED", "GROSS", "BILATERAL"),
    ("DEFERRED", "NET", "BILATERAL"),
    ("DEFERRED", "NET", "MULTILATERAL"),
];

fn one_of(body: &Body, field: &str, allowed: &[&str]) -> ApiResult<String> {
    let value = body.str(field)?;
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!("\"{field}\" must be one of {}", allowed.join(", ")),
        ))
    }
}

pub async fn create_settlement_model(
    state: web::Data<AppState>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let body = Body::parse(&bytes)?;
    let name = body.str("name")?;
    if name.len() < 2 || name.len() > 30 || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            "\"name\" must be 2 to 30 alphanumeric characters",
        ));
    }
    let granularity = one_of(&body, "settlementGranularity", &["GROSS", "NET"])?;
    let interchange = one_of(
        &body,
        "settlementInterchange",
        &["BILATERAL", "MULTILATERAL"],
    )?;
    let delay = one_of(&body, "settlementDelay", &["DEFERRED", "IMMEDIATE"])?;
    let require_liquidity_check = body.bool("requireLiquidityCheck")?;
    let ledger_account_type = one_of(&body, "ledgerAccountType", &["INTERCHANGE_FEE", "POSITION"])?;
    let settlement_account_type = body.str("settlementAccountType")?;
    let auto_position_reset = body.bool("autoPositionReset")?;
    let currency = body.opt_str("currency")?;
    if !VALID_MODELS.contains(&(delay.as_str(), granularity.as_str(), interchange.as_str())) {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!("Invalid settlement model definition: {delay}-{granularity}-{interchange} is not a valid combination"),
        ));
    }
    if let Some(code) = &currency {
        if state.store.currency_scale(code).await?.is_none() {
            return Err(ApiError::new(
                ErrorCode::GenericValidationError,
                format!("\"currency\" {code} is not a supported ISO 4217 code"),
            ));
        }
    }
    if !["SETTLEMENT", "INTERCHANGE_FEE_SETTLEMENT"].contains(&settlement_account_type.as_str()) {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!("\"settlementAccountType\" {settlement_account_type} must be SETTLEMENT or INTERCHANGE_FEE_SETTLEMENT"),
        ));
    }
    let models = state.store.settlement_models().await?;
    if models.iter().any(|m| m.name == name) {
        return Err(ApiError::new(
            ErrorCode::GenericClientError,
            format!("settlement model {name} already exists"),
        ));
    }
    if models
        .iter()
        .any(|m| m.ledger_account_type == ledger_account_type && m.currency == currency)
    {
        return Err(ApiError::new(
            ErrorCode::GenericClientError,
            format!(
                "a settlement model for {ledger_account_type} in {} already exists",
                currency.as_deref().unwrap_or("the default currency")
            ),
        ));
    }
    state
        .store
        .create_settlement_model(SettlementModelRecord {
            id: 0,
            name,
            is_active: true,
            settlement_granularity: granularity,
            settlement_interchange: interchange,
            settlement_delay: delay,
            currency,
            require_liquidity_check,
            ledger_account_type,
            settlement_account_type,
            auto_position_reset,
        })
        .await?;
    state.models_changed();
    Ok(HttpResponse::Created().finish())
}

/// `GET /transactions/{id}`: the transaction object carried in a transfer's
/// ILP packet (ILP v4 and v1 are both decoded), as the reference hub's
/// `GetTransactionResponse`.
pub async fn get_transaction(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let record = state.store.transfer(&id).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::TransferIdNotFound,
            format!("transfer {id} does not exist"),
        )
    })?;
    let decoded = crate::ilp::decode_packet(&record.transfer.ilp_packet).map_err(|e| {
        ApiError::new(
            ErrorCode::GenericValidationError,
            format!("the transfer's ILP packet cannot be decoded: {e}"),
        )
    })?;
    let transaction = decoded.transaction.ok_or_else(|| {
        ApiError::new(
            ErrorCode::GenericValidationError,
            "the transfer's ILP packet carries no transaction object",
        )
    })?;
    Ok(HttpResponse::Ok().json(transaction))
}
