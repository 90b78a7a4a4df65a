//! `/bulkTransfers`: a bulk prepare split into transfers, the payee's bulk
//! fulfil or error, and queries, translated into messages to the bulk's
//! actor (`switch_actors::bulk`).
//!
//! A POST is answered 202 once the bulk is recorded; its lines are then
//! prepared one by one through the same position path as single transfers,
//! and the outcome arrives by callback.

use actix_web::{web, HttpRequest, HttpResponse};
use rust_decimal::Decimal;
use serde_json::Value;
use switch_actors::bulk::{
    BulkActor, BulkError, BulkFulfil, BulkGet, BulkPrepare, LineResult, LINES_MAX,
};
use switch_actors::{ErrorCode, FspiopError};
use switch_storage::bulk::NewBulk;
use switch_storage::transfers::NewTransfer;

use super::headers::{self, FspiopHeaders, Resource};
use super::transfers::{
    checked_body, checked_id, error_message, forwarded, parse_time_ms, text, version_text,
};
use crate::cluster::forward_bulk;
use crate::errors::{ApiError, ApiResult};
use crate::json::request_hash;
use crate::state::AppState;

const POST_ENDPOINT: &str = "FSPIOP_CALLBACK_URL_BULK_TRANSFER_POST";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/bulkTransfers").route(web::post().to(prepare)));
    cfg.service(
        web::resource("/bulkTransfers/{id}")
            .route(web::put().to(fulfil))
            .route(web::get().to(get)),
    );
    cfg.service(web::resource("/bulkTransfers/{id}/error").route(web::put().to(error)));
}

fn validation(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::GenericValidationError, detail)
}

/// Sends a message to the bulk's actor and waits for its first durable step.
async fn ask_bulk<M>(state: &AppState, id: &str, message: M) -> ApiResult<()>
where
    M: actix::Message<Result = Result<(), FspiopError>> + Clone + Send + 'static,
    BulkActor: actix::Handler<M>,
{
    let timeout = std::time::Duration::from_millis(state.config.actor_reply_timeout_ms);
    match state.bulks.ask(&id.to_string(), message, timeout).await {
        Ok(answer) => answer.map_err(ApiError::from),
        Err(_) => Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "the switch did not finish in time; repeat the request to learn the outcome",
        )),
    }
}

async fn prepare(
    state: web::Data<AppState>,
    request: HttpRequest,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::BulkTransfers, true, request.headers())?;
    let body = checked_body(&state, &headers, "BulkTransfersPostRequest", &bytes)?;
    let bulk = new_bulk(&headers, &body, &bytes)?;
    if headers.source != bulk.payer_fsp {
        return Err(validation(
            "FSPIOP-Source header does not match the payer FSP",
        ));
    }
    if let Some(answer) = forward_bulk(&state, &request, &bytes, &bulk.bulk_transfer_id).await? {
        return Ok(answer);
    }
    let lines = lines_of(&headers, &body, &bulk)?;
    state.overload.admit_bulk(lines.len())?;
    let has_endpoint = state
        .endpoints
        .template(&bulk.payee_fsp, POST_ENDPOINT)
        .await
        .map_err(|e| ApiError::new(ErrorCode::InternalServerError, e))?
        .is_some();
    if !has_endpoint {
        return Err(ApiError::new(
            ErrorCode::DestinationFspError,
            format!("{} has no {POST_ENDPOINT} endpoint", bulk.payee_fsp),
        ));
    }
    let id = bulk.bulk_transfer_id.clone();
    let message = BulkPrepare {
        bulk,
        lines,
        body,
        source: headers.source.clone(),
        forward: forwarded(&request, &bytes),
    };
    ask_bulk(&state, &id, message).await?;
    Ok(HttpResponse::Accepted().finish())
}

fn new_bulk(headers: &FspiopHeaders, body: &Value, bytes: &[u8]) -> ApiResult<NewBulk> {
    let id = text(body, "/bulkTransferId")?;
    checked_id(&id)?;
    let expiration = text(body, "/expiration")?;
    let expiration_ms = parse_time_ms(&expiration)
        .ok_or_else(|| validation("/expiration is not an ISO 8601 date-time"))?;
    Ok(NewBulk {
        bulk_transfer_id: id,
        bulk_quote_id: text(body, "/bulkQuoteId")?,
        payer_fsp: text(body, "/payerFsp")?,
        payee_fsp: text(body, "/payeeFsp")?,
        expiration,
        expiration_ms,
        prepare_hash: request_hash(bytes),
        content_version: version_text(headers.content_version),
    })
}

/// Each `individualTransfers` entry as a transfer of the bulk.
fn lines_of(headers: &FspiopHeaders, body: &Value, bulk: &NewBulk) -> ApiResult<Vec<NewTransfer>> {
    let entries = body
        .get("individualTransfers")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingMandatoryElement,
                "individualTransfers is required",
            )
        })?;
    if entries.is_empty() || entries.len() > LINES_MAX {
        return Err(ApiError::new(
            ErrorCode::TooManyElements,
            format!("individualTransfers must hold 1 to {LINES_MAX} entries"),
        ));
    }
    entries
        .iter()
        .map(|entry| {
            let transfer_id = text(entry, "/transferId")?;
            checked_id(&transfer_id)?;
            let amount: Decimal = text(entry, "/transferAmount/amount")?
                .parse()
                .map_err(|_| validation("transferAmount.amount is not a number"))?;
            Ok(NewTransfer {
                transfer_id,
                payer_fsp: bulk.payer_fsp.clone(),
                payee_fsp: bulk.payee_fsp.clone(),
                amount,
                currency: text(entry, "/transferAmount/currency")?,
                condition: text(entry, "/condition")?,
                expiration: bulk.expiration.clone(),
                expiration_ms: bulk.expiration_ms,
                ilp_packet: text(entry, "/ilpPacket")?,
                prepare_hash: request_hash(entry.to_string().as_bytes()),
                content_version: version_text(headers.content_version),
                bulk_transfer_id: Some(bulk.bulk_transfer_id.clone()),
            })
        })
        .collect()
}

async fn fulfil(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::BulkTransfers, false, request.headers())?;
    checked_id(&id)?;
    if let Some(answer) = forward_bulk(&state, &request, &bytes, &id).await? {
        return Ok(answer);
    }
    let body = checked_body(&state, &headers, "BulkTransfersIDPutResponse", &bytes)?;
    let completed_timestamp = body
        .get("completedTimestamp")
        .and_then(Value::as_str)
        .map(str::to_string);
    let results = body
        .get("individualTransferResults")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().map(line_result).collect())
        .transpose()?
        .unwrap_or_default();
    let message = BulkFulfil {
        source: headers.source.clone(),
        destination: headers.destination.clone(),
        hash: request_hash(&bytes),
        completed_ms: completed_timestamp.as_deref().and_then(parse_time_ms),
        completed_timestamp,
        results,
        content_version: version_text(headers.content_version),
    };
    ask_bulk(&state, &id, message).await?;
    Ok(HttpResponse::Ok().finish())
}

fn line_result(entry: &Value) -> ApiResult<LineResult> {
    let transfer_id = text(entry, "/transferId")?;
    let error = match entry.get("errorInformation") {
        Some(information) => Some((
            text(information, "/errorCode")?,
            text(information, "/errorDescription")?,
        )),
        None => None,
    };
    Ok(LineResult {
        transfer_id,
        fulfilment: entry
            .get("fulfilment")
            .and_then(Value::as_str)
            .map(str::to_string),
        error,
        hash: request_hash(entry.to_string().as_bytes()),
    })
}

async fn error(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let message = error_message(&state, Resource::BulkTransfers, &request, &id, &bytes)?;
    if let Some(answer) = forward_bulk(&state, &request, &bytes, &id).await? {
        return Ok(answer);
    }
    ask_bulk(&state, &id, BulkError(message)).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn get(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::BulkTransfers, true, request.headers())?;
    checked_id(&id)?;
    if let Some(answer) = forward_bulk(&state, &request, &web::Bytes::new(), &id).await? {
        return Ok(answer);
    }
    let message = BulkGet {
        source: headers.source,
        content_version: version_text(headers.content_version),
    };
    ask_bulk(&state, &id, message).await?;
    Ok(HttpResponse::Accepted().finish())
}
