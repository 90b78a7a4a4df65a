//! Account lookup: `/parties` (routed to the party's FSP, found through the
//! oracle when the requester names no destination) and `/participants`
//! (served by the switch from its built-in oracle).
//!
//! The oracle is the built-in one, or an external one configured through the
//! ALS admin API (see `crate::oracle`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use switch_actors::notify::{ForwardedMessage, HubMessage, Notification, Notifier, Routed, Target};
use switch_actors::{ErrorCode, FspiopError};
use switch_storage::lookup::PartyKey;

use super::headers::{self, FspiopHeaders, Resource};
use super::transfers::{checked_body, forwarded, required_destination, version_text};
use crate::errors::{error_body, ApiError, ApiResult};
use crate::operator::oracles::PARTY_ID_TYPES;
use crate::state::AppState;

/// Parties registered by one batch request at most (the schema's limit).
const BATCH_PARTIES_MAX: usize = 10_000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    for path in ["/parties/{type}/{id}", "/parties/{type}/{id}/{sub}"] {
        cfg.service(
            web::resource(path)
                .route(web::get().to(get_party))
                .route(web::put().to(put_party)),
        );
        cfg.service(web::resource(format!("{path}/error")).route(web::put().to(put_party_error)));
    }
    cfg.service(web::resource("/participants").route(web::post().to(post_batch)));
    for path in [
        "/participants/{type}/{id}",
        "/participants/{type}/{id}/{sub}",
    ] {
        cfg.service(
            web::resource(path)
                .route(web::get().to(get_participant))
                .route(web::post().to(post_participant))
                .route(web::delete().to(delete_participant)),
        );
    }
}

/// The party named by the path.
struct Party {
    id_type: String,
    id: String,
    sub: Option<String>,
}

impl Party {
    fn from_path(path: &web::Path<Vec<String>>) -> ApiResult<Party> {
        let segments = path.as_slice();
        let (id_type, id) = match segments {
            [t, i] | [t, i, _] => (t.clone(), i.clone()),
            _ => return Err(ApiError::new(ErrorCode::UnknownUri, "unexpected path")),
        };
        if !PARTY_ID_TYPES.contains(&id_type.as_str()) {
            return Err(ApiError::new(
                ErrorCode::GenericValidationError,
                format!("{id_type} is not a party id type"),
            ));
        }
        if id.is_empty() || id.len() > 128 || id.contains("{{") {
            return Err(ApiError::new(
                ErrorCode::GenericValidationError,
                "the party identifier is not valid",
            ));
        }
        Ok(Party {
            id_type,
            id,
            sub: segments.get(2).cloned(),
        })
    }

    fn values(&self) -> Vec<(&'static str, String)> {
        let mut values = vec![
            ("partyIdType", self.id_type.clone()),
            ("partyIdentifier", self.id.clone()),
        ];
        if let Some(sub) = &self.sub {
            values.push(("partySubIdOrType", sub.clone()));
        }
        values
    }

    fn uri(&self, resource: &str) -> String {
        match &self.sub {
            Some(sub) => format!("/{resource}/{}/{}/{sub}", self.id_type, self.id),
            None => format!("/{resource}/{}/{}", self.id_type, self.id),
        }
    }

    fn key(&self, currency: &str) -> PartyKey {
        PartyKey {
            party_id_type: self.id_type.clone(),
            party_identifier: self.id.clone(),
            party_sub_id: self.sub.clone().unwrap_or_default(),
            currency: currency.to_string(),
        }
    }

    /// An endpoint type of the parties or participants family, with the
    /// `_SUB_ID` variant when the path has a sub id.
    fn endpoint(&self, plain: &'static str, with_sub: &'static str) -> &'static str {
        if self.sub.is_some() {
            with_sub
        } else {
            plain
        }
    }
}

/// The requester must be an active participant; it cannot be called back otherwise.
async fn known_requester(state: &AppState, headers: &FspiopHeaders) -> ApiResult<()> {
    let requester = state.participants.get(&headers.source).await?;
    if requester.is_some_and(|p| p.is_active) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::GenericIdNotFound,
            format!("Requester FSP {} not found", headers.source),
        ))
    }
}

fn hub_message(
    to: &str,
    endpoint_type: &'static str,
    values: Vec<(&'static str, String)>,
    uri: String,
    resource: &'static str,
    body: Value,
    version: &str,
) -> Notification {
    Notification::Hub(HubMessage {
        target: Target {
            to: to.to_string(),
            endpoint_type,
            values,
            path: None,
        },
        method: "PUT",
        uri,
        resource,
        body: web::Bytes::from(body.to_string()),
        content_version: version.to_string(),
    })
}

fn with_destination(mut message: ForwardedMessage, destination: &str) -> ForwardedMessage {
    let headers = std::sync::Arc::make_mut(&mut message.headers);
    headers.retain(|(name, _)| name != "fspiop-destination");
    headers.push(("fspiop-destination".to_string(), destination.to_string()));
    message
}

async fn get_party(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<Vec<String>>,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::Parties, true, request.headers())?;
    let party = Party::from_path(&path)?;
    state.overload.admit_new_transaction()?;
    known_requester(&state, &headers).await?;
    let get_type = party.endpoint(
        "FSPIOP_CALLBACK_URL_PARTIES_GET",
        "FSPIOP_CALLBACK_URL_PARTIES_SUB_ID_GET",
    );
    let version = version_text(headers.content_version);
    let error_type = party.endpoint(
        "FSPIOP_CALLBACK_URL_PARTIES_PUT_ERROR",
        "FSPIOP_CALLBACK_URL_PARTIES_SUB_ID_PUT_ERROR",
    );
    let tell_requester = |error: FspiopError| {
        state.notifier.notify(hub_message(
            &headers.source,
            error_type,
            party.values(),
            format!("{}/error", party.uri("parties")),
            "parties",
            error_body(&error),
            &version,
        ));
    };
    let owners = match &headers.destination {
        Some(destination) => vec![destination.clone()],
        None => match state
            .oracles
            .owners(party.key(&query_currency(&request)))
            .await
        {
            Ok(owners) => owners,
            Err(error) => {
                tell_requester(error);
                return Ok(HttpResponse::Accepted().finish());
            }
        },
    };
    let mut reachable = Vec::new();
    for owner in owners {
        let active = state
            .participants
            .get(&owner)
            .await?
            .is_some_and(|p| p.is_active);
        if active
            && state
                .endpoints
                .template(&owner, get_type)
                .await
                .ok()
                .flatten()
                .is_some()
        {
            reachable.push(owner);
        }
    }
    if reachable.is_empty() {
        tell_requester(FspiopError::new(
            ErrorCode::PartyNotFound,
            "no FSP serves this party",
        ));
        return Ok(HttpResponse::Accepted().finish());
    }
    let message = forwarded(&request, &web::Bytes::new());
    for owner in reachable {
        state.notifier.notify(Notification::Route(Routed {
            target: Target {
                to: owner.clone(),
                endpoint_type: get_type,
                values: party.values(),
                path: None,
            },
            method: "GET",
            message: with_destination(message.clone(), &owner),
        }));
    }
    Ok(HttpResponse::Accepted().finish())
}

async fn route_party_answer(
    state: &AppState,
    request: &HttpRequest,
    path: &web::Path<Vec<String>>,
    bytes: web::Bytes,
    error: bool,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::Parties, false, request.headers())?;
    let party = Party::from_path(path)?;
    let schema = if error {
        "ErrorInformationObject"
    } else {
        "PartiesTypeIDPutResponse"
    };
    checked_body(state, &headers, schema, &bytes)?;
    known_requester(state, &headers).await?;
    let destination = required_destination(&headers)?;
    let endpoint_type = match error {
        false => party.endpoint(
            "FSPIOP_CALLBACK_URL_PARTIES_PUT",
            "FSPIOP_CALLBACK_URL_PARTIES_SUB_ID_PUT",
        ),
        true => party.endpoint(
            "FSPIOP_CALLBACK_URL_PARTIES_PUT_ERROR",
            "FSPIOP_CALLBACK_URL_PARTIES_SUB_ID_PUT_ERROR",
        ),
    };
    state.notifier.notify(Notification::Route(Routed {
        target: Target {
            to: destination,
            endpoint_type,
            values: party.values(),
            path: None,
        },
        method: "PUT",
        message: forwarded(request, &bytes),
    }));
    Ok(HttpResponse::Ok().finish())
}

async fn put_party(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<Vec<String>>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    route_party_answer(&state, &request, &path, bytes, false).await
}

async fn put_party_error(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<Vec<String>>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    route_party_answer(&state, &request, &path, bytes, true).await
}

/// Answers the requester of a `/participants/{Type}/{ID}` operation.
fn participant_answer(
    party: &Party,
    to: &str,
    outcome: Result<Value, FspiopError>,
    version: &str,
) -> Notification {
    match outcome {
        Ok(body) => hub_message(
            to,
            party.endpoint(
                "FSPIOP_CALLBACK_URL_PARTICIPANT_PUT",
                "FSPIOP_CALLBACK_URL_PARTICIPANT_SUB_ID_PUT",
            ),
            party.values(),
            party.uri("participants"),
            "participants",
            body,
            version,
        ),
        Err(error) => hub_message(
            to,
            party.endpoint(
                "FSPIOP_CALLBACK_URL_PARTICIPANT_PUT_ERROR",
                "FSPIOP_CALLBACK_URL_PARTICIPANT_SUB_ID_PUT_ERROR",
            ),
            party.values(),
            format!("{}/error", party.uri("participants")),
            "participants",
            error_body(&error),
            version,
        ),
    }
}

/// Sends the requester the outcome of its `/participants/{Type}/{ID}` request.
fn answer_requester(
    state: &AppState,
    party: &Party,
    headers: &FspiopHeaders,
    outcome: Result<Value, FspiopError>,
) {
    let version = version_text(headers.content_version);
    state.notifier.notify(participant_answer(
        party,
        &headers.source,
        outcome,
        &version,
    ));
}

fn query_currency(request: &HttpRequest) -> String {
    request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("currency=")))
        .unwrap_or_default()
        .to_string()
}

async fn get_participant(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<Vec<String>>,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::Participants, true, request.headers())?;
    let party = Party::from_path(&path)?;
    known_requester(&state, &headers).await?;
    let outcome = match state
        .oracles
        .owners(party.key(&query_currency(&request)))
        .await
    {
        Ok(owners) => match owners.first() {
            Some(fsp) => Ok(json!({ "fspId": fsp })),
            None => Err(FspiopError::new(
                ErrorCode::PartyNotFound,
                "no FSP is registered for this party",
            )),
        },
        Err(error) => Err(error),
    };
    answer_requester(&state, &party, &headers, outcome);
    Ok(HttpResponse::Accepted().finish())
}

async fn post_participant(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<Vec<String>>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::Participants, true, request.headers())?;
    let party = Party::from_path(&path)?;
    let body = checked_body(
        &state,
        &headers,
        "ParticipantsTypeIDSubIDPostRequest",
        &bytes,
    )?;
    known_requester(&state, &headers).await?;
    let fsp = body
        .get("fspId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let currency = body
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let outcome = if fsp != headers.source {
        Err(FspiopError::new(
            ErrorCode::AddPartyInformationError,
            "a DFSP may only register identifiers for itself",
        ))
    } else {
        match state.oracles.register(party.key(&currency), &fsp).await {
            Ok(None) => Ok(json!({ "fspId": fsp })),
            Ok(Some(owner)) => Err(FspiopError::new(
                ErrorCode::AddPartyInformationError,
                format!("the party is already registered to {owner}"),
            )),
            Err(error) => Err(error),
        }
    };
    answer_requester(&state, &party, &headers, outcome);
    Ok(HttpResponse::Accepted().finish())
}

async fn delete_participant(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<Vec<String>>,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::Participants, true, request.headers())?;
    let party = Party::from_path(&path)?;
    known_requester(&state, &headers).await?;
    let removed = state
        .oracles
        .unregister(party.key(&query_currency(&request)), &headers.source)
        .await;
    let outcome = match removed {
        Ok(true) => Ok(json!({ "fspId": headers.source })),
        Ok(false) => Err(FspiopError::new(
            ErrorCode::DeletePartyInformationError,
            "the requester has no registration of this party",
        )),
        Err(error) => Err(error),
    };
    answer_requester(&state, &party, &headers, outcome);
    Ok(HttpResponse::Accepted().finish())
}

/// `POST /participants`: batch registration, answered with one result per party.
async fn post_batch(
    state: web::Data<AppState>,
    request: HttpRequest,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    let headers = headers::validate(Resource::Participants, true, request.headers())?;
    let body = checked_body(&state, &headers, "ParticipantsPostRequest", &bytes)?;
    known_requester(&state, &headers).await?;
    let request_id = body
        .get("requestId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let currency = body
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let parties = body
        .get("partyList")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if parties.len() > BATCH_PARTIES_MAX {
        return Err(ApiError::new(
            ErrorCode::TooManyElements,
            "partyList holds more than 10000 parties",
        ));
    }
    let mut results = Vec::with_capacity(parties.len());
    for entry in parties {
        let text = |field: &str| {
            entry
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let key = PartyKey {
            party_id_type: text("partyIdType"),
            party_identifier: text("partyIdentifier"),
            party_sub_id: text("partySubIdOrType"),
            currency: currency.clone(),
        };
        let refusal = if text("fspId") != headers.source {
            Some(FspiopError::new(
                ErrorCode::AddPartyInformationError,
                "a DFSP may only register identifiers for itself",
            ))
        } else {
            match state.oracles.register(key, &headers.source).await {
                Ok(None) => None,
                Ok(Some(owner)) => Some(FspiopError::new(
                    ErrorCode::AddPartyInformationError,
                    format!("the party is already registered to {owner}"),
                )),
                Err(error) => Some(error),
            }
        };
        let mut result = json!({ "partyId": entry });
        if let Some(error) = refusal {
            result["errorInformation"] = error_body(&error)["errorInformation"].clone();
        }
        results.push(result);
    }
    let mut answer = json!({ "partyList": results });
    if !currency.is_empty() {
        answer["currency"] = json!(currency);
    }
    state.notifier.notify(hub_message(
        &headers.source,
        "FSPIOP_CALLBACK_URL_PARTICIPANT_BATCH_PUT",
        vec![("requestId", request_id.clone())],
        format!("/participants/{request_id}"),
        "participants",
        answer,
        &version_text(headers.content_version),
    ));
    Ok(HttpResponse::Accepted().finish())
}
