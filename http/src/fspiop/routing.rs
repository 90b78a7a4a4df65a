//! Resources the switch routes between two DFSPs without keeping state:
//! quotes, bulk quotes, transaction requests, authorizations and
//! transactions. Each message is validated (headers, schema, participants),
//! answered 202/200, and passed on unchanged (body byte for byte, the
//! DFSP's headers) to the destination's endpoint: a base URL to which the
//! request path is appended, as the reference hub does for these types.
//! Refusals that concern the destination go back to the source as a PUT
//! `/{resource}/{ID}/error` callback.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use switch_actors::notify::{HubMessage, Notification, Notifier, Routed, Target};
use switch_actors::{ErrorCode, FspiopError};

use super::headers::{self, Resource};
use super::transfers::{checked_body, checked_id, forwarded, required_destination, version_text};
use crate::errors::{ApiError, ApiResult};
use crate::json::request_hash;
use crate::state::AppState;
use switch_storage::quotes::{QuoteMessage, Recorded};

/// How one routed resource is served.
struct Route {
    resource: Resource,
    /// Path segment, e.g. `quotes`.
    segment: &'static str,
    endpoint_type: &'static str,
    post_schema: Option<&'static str>,
    put_schema: &'static str,
    /// JSON pointer of the id in a POST body.
    post_id: &'static str,
    /// JSON pointer of the destination FSP in a POST body when the header has none.
    post_destination: Option<&'static str>,
}

const ROUTES: &[Route] = &[
    Route {
        resource: Resource::Quotes,
        segment: "quotes",
        endpoint_type: "FSPIOP_CALLBACK_URL_QUOTES",
        post_schema: Some("QuotesPostRequest"),
        put_schema: "QuotesIDPutResponse",
        post_id: "/quoteId",
        post_destination: Some("/payee/partyIdInfo/fspId"),
    },
    Route {
        resource: Resource::BulkQuotes,
        segment: "bulkQuotes",
        endpoint_type: "FSPIOP_CALLBACK_URL_BULK_QUOTES",
        post_schema: Some("BulkQuotesPostRequest"),
        put_schema: "BulkQuotesIDPutResponse",
        post_id: "/bulkQuoteId",
        post_destination: None,
    },
    Route {
        resource: Resource::TransactionRequests,
        segment: "transactionRequests",
        endpoint_type: "FSPIOP_CALLBACK_URL_TRX_REQ_SERVICE",
        post_schema: Some("TransactionRequestsPostRequest"),
        put_schema: "TransactionRequestsIDPutResponse",
        post_id: "/transactionRequestId",
        post_destination: Some("/payer/fspId"),
    },
    Route {
        resource: Resource::Authorizations,
        segment: "authorizations",
        endpoint_type: "FSPIOP_CALLBACK_URL_AUTHORIZATIONS",
        post_schema: None,
        put_schema: "AuthorizationsIDPutResponse",
        post_id: "",
        post_destination: None,
    },
    // The reference hub does not route /transactions; it has no endpoint
    // type of its own, so it shares the transaction requests service URL.
    Route {
        resource: Resource::Transactions,
        segment: "transactions",
        endpoint_type: "FSPIOP_CALLBACK_URL_TRX_REQ_SERVICE",
        post_schema: None,
        put_schema: "TransactionsIDPutResponse",
        post_id: "",
        post_destination: None,
    },
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    for (index, route) in ROUTES.iter().enumerate() {
        let base = format!("/{}", route.segment);
        if route.post_schema.is_some() {
            cfg.service(web::resource(base.clone()).route(web::post().to(
                move |s: web::Data<AppState>, r: HttpRequest, b: web::Bytes| post(index, s, r, b),
            )));
        }
        cfg.service(
            web::resource(format!("{base}/{{id}}"))
                .route(web::get().to(
                    move |s: web::Data<AppState>, r: HttpRequest, id: web::Path<String>| {
                        get(index, s, r, id)
                    },
                ))
                .route(web::put().to(
                    move |s: web::Data<AppState>,
                          r: HttpRequest,
                          id: web::Path<String>,
                          b: web::Bytes| { put(index, s, r, id, b, false) },
                )),
        );
        cfg.service(
            web::resource(format!("{base}/{{id}}/error")).route(web::put().to(
                move |s: web::Data<AppState>,
                      r: HttpRequest,
                      id: web::Path<String>,
                      b: web::Bytes| { put(index, s, r, id, b, true) },
            )),
        );
    }
}

/// The checked message on its way to the destination.
struct Outgoing {
    source: String,
    destination: String,
    id: String,
    content_version: String,
    method: &'static str,
    /// Path and query as received, appended to the destination's base URL.
    path: String,
}

impl Outgoing {
    fn new(
        headers: &headers::FspiopHeaders,
        destination: String,
        id: String,
        method: &'static str,
        request: &HttpRequest,
    ) -> Outgoing {
        Outgoing {
            source: headers.source.clone(),
            destination,
            id,
            content_version: version_text(headers.content_version),
            method,
            path: path_and_query(request),
        }
    }
}

fn path_and_query(request: &HttpRequest) -> String {
    match request.uri().query() {
        Some(query) => format!("{}?{query}", request.path()),
        None => request.path().to_string(),
    }
}

async fn post(
    index: usize,
    state: web::Data<AppState>,
    request: HttpRequest,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let route = &ROUTES[index];
    let headers = headers::validate(route.resource, true, request.headers())?;
    // Each of these POSTs starts a transaction: refused before prepares are.
    state.overload.admit_new_transaction()?;
    let schema = route.post_schema.unwrap_or(route.put_schema);
    let body = checked_body(&state, &headers, schema, &bytes)?;
    let id = crate::json::at(&body, route.post_id)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    checked_id(&id)?;
    let destination = headers
        .destination
        .clone()
        .or_else(|| {
            route
                .post_destination
                .and_then(|p| crate::json::at(&body, p))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingMandatoryElement,
                "FSPIOP-Destination is required",
            )
        })?;
    let outgoing = Outgoing::new(&headers, destination, id, "POST", &request);
    route_message(&state, route, outgoing, Some(&body), &request, bytes).await?;
    Ok(HttpResponse::Accepted().finish())
}

async fn get(
    index: usize,
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let route = &ROUTES[index];
    let headers = headers::validate(route.resource, true, request.headers())?;
    checked_id(&id)?;
    let outgoing = Outgoing::new(
        &headers,
        required_destination(&headers)?,
        id.into_inner(),
        "GET",
        &request,
    );
    route_message(&state, route, outgoing, None, &request, web::Bytes::new()).await?;
    Ok(HttpResponse::Accepted().finish())
}

async fn put(
    index: usize,
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    bytes: web::Bytes,
    error: bool,
) -> ApiResult<HttpResponse> {
    let route = &ROUTES[index];
    let headers = headers::validate(route.resource, false, request.headers())?;
    checked_id(&id)?;
    let schema = if error {
        "ErrorInformationObject"
    } else {
        route.put_schema
    };
    checked_body(&state, &headers, schema, &bytes)?;
    let outgoing = Outgoing::new(
        &headers,
        required_destination(&headers)?,
        id.into_inner(),
        "PUT",
        &request,
    );
    route_message(&state, route, outgoing, None, &request, bytes).await?;
    Ok(HttpResponse::Ok().finish())
}

/// Checks the participants and the destination's endpoint, then passes the
/// message on, or tells the source why not.
async fn route_message(
    state: &AppState,
    route: &Route,
    outgoing: Outgoing,
    post_body: Option<&Value>,
    request: &HttpRequest,
    bytes: web::Bytes,
) -> ApiResult<()> {
    let source = state.participants.get(&outgoing.source).await?;
    if !source.as_ref().is_some_and(|p| p.is_active) {
        return Err(ApiError::new(
            ErrorCode::GenericIdNotFound,
            format!(
                "FSPIOP-Source {} is not an active participant",
                outgoing.source
            ),
        ));
    }
    let refusal = match destination_refusal(state, route, &outgoing, post_body).await? {
        Some(refusal) => Some(refusal),
        None => duplicate_refusal(state, route, &outgoing, &bytes).await?,
    };
    if let Some(refusal) = refusal {
        // Nothing is forwarded; the source learns why by callback.
        let path = format!("/{}/{}/error", route.segment, outgoing.id);
        state.notifier.notify(Notification::Hub(HubMessage {
            target: Target {
                to: outgoing.source.clone(),
                endpoint_type: route.endpoint_type,
                values: Vec::new(),
                path: Some(path.clone()),
            },
            method: "PUT",
            uri: path,
            resource: route.resource.media_name(),
            body: web::Bytes::from(crate::errors::error_body(&refusal).to_string()),
            content_version: outgoing.content_version,
        }));
        return Ok(());
    }
    state.notifier.notify(Notification::Route(Routed {
        target: Target {
            to: outgoing.destination,
            endpoint_type: route.endpoint_type,
            values: Vec::new(),
            path: Some(outgoing.path),
        },
        method: outgoing.method,
        message: forwarded(request, &bytes),
    }));
    Ok(())
}

/// With quote persistence on, stores a quote message and refuses a changed
/// resend with 3106. An identical resend is passed on again, as the
/// reference quoting service does.
async fn duplicate_refusal(
    state: &AppState,
    route: &Route,
    outgoing: &Outgoing,
    bytes: &web::Bytes,
) -> ApiResult<Option<FspiopError>> {
    let persisted = matches!(route.resource, Resource::Quotes | Resource::BulkQuotes);
    if !state.config.quotes_persistence_enabled || !persisted {
        return Ok(None);
    }
    let kind = match outgoing.method {
        "POST" => "REQUEST",
        "PUT" if outgoing.path.ends_with("/error") => "ERROR",
        "PUT" => "RESPONSE",
        _ => return Ok(None),
    };
    let message = QuoteMessage {
        resource: route.segment.to_string(),
        quote_id: outgoing.id.clone(),
        kind: kind.to_string(),
        hash: request_hash(bytes),
        source_fsp: outgoing.source.clone(),
        destination_fsp: outgoing.destination.clone(),
        body: String::from_utf8_lossy(bytes).into_owned(),
    };
    match state.store.record_quote_message(message).await? {
        Recorded::New | Recorded::Resend => Ok(None),
        Recorded::Changed => Ok(Some(FspiopError::new(
            ErrorCode::ModifiedRequest,
            format!(
                "a different {} message was already received for {}",
                route.segment, outgoing.id
            ),
        ))),
    }
}

/// Why the message cannot go to its destination, if it cannot.
async fn destination_refusal(
    state: &AppState,
    route: &Route,
    outgoing: &Outgoing,
    post_body: Option<&Value>,
) -> ApiResult<Option<FspiopError>> {
    let quote = route.resource == Resource::Quotes && post_body.is_some();
    let destination = state.participants.get(&outgoing.destination).await?;
    let Some(destination) = destination.filter(|p| p.is_active) else {
        let code = if quote {
            ErrorCode::PayeeFspIdNotFound
        } else {
            ErrorCode::DestinationFspError
        };
        return Ok(Some(FspiopError::new(
            code,
            format!("{} is not an active participant", outgoing.destination),
        )));
    };
    if let (true, Some(body)) = (quote, post_body) {
        // The quoting service's check: both parties hold an active account
        // in the quote's currency.
        let currency = crate::json::at(body, "/amount/currency")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let source = state.participants.get(&outgoing.source).await?;
        let has_account = |p: &switch_actors::participants::ParticipantSnapshot| {
            p.position_account(currency).is_some_and(|a| a.is_active)
        };
        if !source.as_deref().is_some_and(has_account) {
            return Ok(Some(FspiopError::new(
                ErrorCode::PayerFspIdNotFound,
                format!("{} has no active account in {currency}", outgoing.source),
            )));
        }
        if !has_account(&destination) {
            return Ok(Some(FspiopError::new(
                ErrorCode::PayeeFspIdNotFound,
                format!(
                    "{} has no active account in {currency}",
                    outgoing.destination
                ),
            )));
        }
    }
    let endpoint = state
        .endpoints
        .template(&outgoing.destination, route.endpoint_type)
        .await
        .map_err(|e| ApiError::new(ErrorCode::InternalServerError, e))?;
    if endpoint.is_none() {
        return Ok(Some(FspiopError::new(
            ErrorCode::DestinationFspError,
            format!(
                "{} has no {} endpoint",
                outgoing.destination, route.endpoint_type
            ),
        )));
    }
    Ok(None)
}
