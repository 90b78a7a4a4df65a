//! The operator API (port 3001): every path of the central-ledger admin
//! swagger, with the reference hub's field names, status codes and errors.

pub mod oracles;
mod participants;
mod reference;
mod settlement;

pub use settlement::routes as settlement_routes;

use actix_web::{web, HttpResponse};
use serde_json::json;
use switch_actors::ErrorCode;

use crate::errors::{ApiError, ApiResult};
use crate::state::AppState;

/// Registers every operator route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health)));
    cfg.service(web::resource("/metrics").route(web::get().to(metrics)));
    cfg.service(web::resource("/cluster").route(web::get().to(cluster)));
    cfg.service(web::resource("/enums").route(web::get().to(reference::enums)));
    cfg.service(
        web::resource("/ledgerAccountTypes")
            .route(web::get().to(reference::list_ledger_account_types))
            .route(web::post().to(reference::create_ledger_account_type)),
    );
    cfg.service(
        web::resource("/settlementModels")
            .route(web::get().to(reference::list_settlement_models))
            .route(web::post().to(reference::create_settlement_model)),
    );
    cfg.service(
        web::resource("/settlementModels/{name}")
            .route(web::get().to(reference::get_settlement_model))
            .route(web::put().to(reference::update_settlement_model)),
    );
    cfg.service(
        web::resource("/transactions/{id}").route(web::get().to(reference::get_transaction)),
    );
    participants::routes(cfg);
    oracles::routes(cfg);
    settlement::routes(cfg);
}

/// `GET /health` in the reference hub's shape; 502 when a dependency is down.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let mut services = Vec::new();
    let mut all_ok = true;
    let datastore = state.store.ping().await;
    all_ok &= datastore.is_ok();
    services.push(
        json!({"name": "datastore", "status": if datastore.is_ok() { "OK" } else { "DOWN" }}),
    );
    if let Some(redis) = &state.redis {
        let cache = redis.ping().await;
        all_ok &= cache.is_ok();
        services
            .push(json!({"name": "cache", "status": if cache.is_ok() { "OK" } else { "DOWN" }}));
    }
    let now = chrono::Utc::now();
    let mut body = json!({
        "status": "OK",
        "uptime": (now - state.started_at).num_milliseconds() as f64 / 1000.0,
        "startTime": state.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "versionNumber": env!("CARGO_PKG_VERSION"),
        "services": services,
    });
    if state.placement.is_cluster() {
        // A node whose heartbeat cannot reach Redis owns nothing it can
        // trust: it refuses new work (2003) and says so here.
        all_ok &= state.placement.redis_ok();
        body["cluster"] = cluster_view(&state);
    }
    body["status"] = json!(if all_ok { "OK" } else { "DOWN" });
    if all_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::BadGateway().json(body)
    }
}

/// This node, its heartbeat, its expiry timers' backlog, and the live
/// members with the slots each holds.
fn cluster_view(state: &AppState) -> serde_json::Value {
    let placement = &state.placement;
    let members: Vec<_> = placement
        .members()
        .into_iter()
        .map(|m| json!({"node": m.node, "address": m.address, "state": "ALIVE", "slots": m.slots}))
        .collect();
    json!({
        "node": placement.node(),
        "heartbeat": if placement.redis_ok() { "OK" } else { "DOWN" },
        "slots": switch_cluster::placement::SLOTS,
        "slotsOwned": placement.owned().len(),
        "slotsWithoutOwner": placement.unowned(),
        "slotOwners": placement.slot_owners(),
        "members": members,
        "timers": state.redis_timers.as_ref().map(|timers| timers.backlog()),
    })
}

/// `GET /cluster`: the cluster view of `/health` alone (404 when embedded).
pub async fn cluster(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if !state.placement.is_cluster() {
        return Err(not_found("a cluster (this node runs embedded)"));
    }
    Ok(HttpResponse::Ok().json(cluster_view(&state)))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let overload = &state.overload;
    state
        .metrics
        .set_load(overload.waiting(), overload.in_flight());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// Fallback for paths the API does not serve.
pub async fn unknown_path() -> ApiResult<HttpResponse> {
    Err(ApiError::new(
        ErrorCode::UnknownUri,
        "the requested path does not exist",
    ))
}

/// A participant name from the path must name a participant.
pub(crate) fn not_found(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::GenericIdNotFound,
        format!("{what} does not exist"),
    )
}
