//! `/transfers`: prepare, fulfil, error and query, translated into messages
//! to the transfer's actor.
//!
//! A request is answered (202 for POST/GET, 200 for PUT) only once its
//! outcome is durable: for a prepare that means the transfer is recorded as
//! RESERVED, rejected or invalid; for a fulfil, committed or aborted.

use actix_web::{web, HttpRequest, HttpResponse};
use rust_decimal::Decimal;
use serde_json::Value;
use switch_actors::notify::ForwardedMessage;
use switch_actors::transfer::rules::{ErrorMessage, FulfilMessage};
use switch_actors::transfer::{Fulfil, Get, PayeeError, Prepare};
use switch_actors::ErrorCode;
use switch_storage::transfers::NewTransfer;

use super::headers::{self, FspiopHeaders, Resource, Version};
use crate::cluster::forward_transfer;
use crate::errors::{ApiError, ApiResult};
use crate::json::{request_hash, valid_correlation_id};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/transfers").route(web::post().to(prepare)));
    cfg.service(
        web::resource("/transfers/{id}")
            .route(web::put().to(fulfil))
            .route(web::get().to(get)),
    );
    cfg.service(web::resource("/transfers/{id}/error").route(web::put().to(error)));
}

/// Headers passed on unchanged to the far side with a routed message.
const FORWARDED_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "date",
    "fspiop-source",
    "fspiop-destination",
    "fspiop-encryption",
    "fspiop-signature",
    "fspiop-uri",
    "fspiop-http-method",
    "traceparent",
    "tracestate",
    "x-forwarded-for",
];

pub fn forwarded(request: &HttpRequest, body: &web::Bytes) -> ForwardedMessage {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter(|(name, _)| FORWARDED_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    ForwardedMessage {
        headers: std::sync::Arc::new(headers),
        body: body.clone(),
    }
}

pub fn version_text(version: Version) -> String {
    format!("{}.{}", version.major, version.minor)
}

/// Parses the body and validates it against the schema of the header's version.
pub fn checked_body(
    state: &AppState,
    headers: &FspiopHeaders,
    schema: &str,
    bytes: &[u8],
) -> ApiResult<Value> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedSyntax,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    state
        .schemas
        .validate(headers.content_version, schema, &body)?;
    Ok(body)
}

/// A required string member of a JSON body, by JSON pointer.
pub fn text(body: &Value, pointer: &str) -> ApiResult<String> {
    crate::json::at(body, pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingMandatoryElement,
                format!("{pointer} is required"),
            )
        })
}

pub fn checked_id(id: &str) -> ApiResult<()> {
    if valid_correlation_id(id) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!("path ID {id} is not a UUID or ULID"),
        ))
    }
}

/// FSPIOP-Destination, which routing needs.
pub fn required_destination(headers: &FspiopHeaders) -> ApiResult<String> {
    headers.destination.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingMandatoryElement,
            "FSPIOP-Destination is required",
        )
    })
}

/// Milliseconds since the epoch of an FSPIOP DateTime.
pub fn parse_time_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

async fn prepare(
    state: web::Data<AppState>,
    request: HttpRequest,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::Transfers, true, request.headers())?;
    // Shed new work at the edge (2003), before the body is even read.
    let _waiting = state.overload.admit()?;
    let body = checked_body(&state, &headers, "TransfersPostRequest", &bytes)?;
    let transfer_id = text(&body, "/transferId")?;
    checked_id(&transfer_id)?;
    if let Some(answer) = forward_transfer(&state, &request, &bytes, &transfer_id).await? {
        return Ok(answer);
    }
    let amount_text = text(&body, "/amount/amount")?;
    let amount: Decimal = amount_text.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::GenericValidationError,
            "/amount/amount is not a number",
        )
    })?;
    let expiration = text(&body, "/expiration")?;
    let expiration_ms = parse_time_ms(&expiration).ok_or_else(|| {
        ApiError::new(
            ErrorCode::GenericValidationError,
            "/expiration is not an ISO 8601 date-time",
        )
    })?;
    let transfer = NewTransfer {
        transfer_id: transfer_id.clone(),
        payer_fsp: text(&body, "/payerFsp")?,
        payee_fsp: text(&body, "/payeeFsp")?,
        amount,
        currency: text(&body, "/amount/currency")?,
        condition: text(&body, "/condition")?,
        expiration,
        expiration_ms,
        ilp_packet: text(&body, "/ilpPacket")?,
        prepare_hash: request_hash(&bytes),
        content_version: version_text(headers.content_version),
        bulk_transfer_id: None,
    };
    let message = Prepare {
        transfer: std::sync::Arc::new(transfer),
        source: headers.source,
        forward: forwarded(&request, &bytes),
    };
    state.ask_transfer(&transfer_id, message).await?;
    Ok(HttpResponse::Accepted().finish())
}

async fn fulfil(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::Transfers, false, request.headers())?;
    checked_id(&id)?;
    if let Some(answer) = forward_transfer(&state, &request, &bytes, &id).await? {
        return Ok(answer);
    }
    let body = checked_body(&state, &headers, "TransfersIDPutResponse", &bytes)?;
    let completed_timestamp = body
        .get("completedTimestamp")
        .and_then(Value::as_str)
        .map(str::to_string);
    let message = FulfilMessage {
        source: headers.source.clone(),
        destination: headers.destination.clone(),
        hash: request_hash(&bytes),
        transfer_state: text(&body, "/transferState")?,
        fulfilment: body
            .get("fulfilment")
            .and_then(Value::as_str)
            .map(str::to_string),
        completed_ms: completed_timestamp.as_deref().and_then(parse_time_ms),
        completed_timestamp,
        content_version: version_text(headers.content_version),
        forward: forwarded(&request, &bytes),
    };
    state.ask_transfer(&id, Fulfil(message)).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn error(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let message = error_message(&state, Resource::Transfers, &request, &id, &bytes)?;
    if let Some(answer) = forward_transfer(&state, &request, &bytes, &id).await? {
        return Ok(answer);
    }
    state.ask_transfer(&id, PayeeError(message)).await?;
    Ok(HttpResponse::Ok().finish())
}

/// A `PUT /{resource}/{ID}/error`, checked.
pub fn error_message(
    state: &AppState,
    resource: Resource,
    request: &HttpRequest,
    id: &str,
    bytes: &web::Bytes,
) -> ApiResult<ErrorMessage> {
    let headers = headers::validate(resource, false, request.headers())?;
    checked_id(id)?;
    let body = checked_body(state, &headers, "ErrorInformationObject", bytes)?;
    Ok(ErrorMessage {
        source: headers.source.clone(),
        hash: request_hash(bytes),
        error_code: text(&body, "/errorInformation/errorCode")?,
        error_description: text(&body, "/errorInformation/errorDescription")?,
        content_version: version_text(headers.content_version),
        forward: forwarded(request, bytes),
    })
}

async fn get(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::Transfers, true, request.headers())?;
    checked_id(&id)?;
    if let Some(answer) = forward_transfer(&state, &request, &web::Bytes::new(), &id).await? {
        return Ok(answer);
    }
    let message = Get {
        source: headers.source,
        content_version: version_text(headers.content_version),
    };
    state.ask_transfer(&id, message).await?;
    Ok(HttpResponse::Accepted().finish())
}
