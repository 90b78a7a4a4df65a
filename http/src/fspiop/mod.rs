//! The FSPIOP API (port 3000): header and schema validation, then one module
//! per resource. Unknown paths get 3002, wrong methods 3000 (405).

pub mod bulk;
pub mod headers;
pub mod lookup;
pub mod routing;
pub mod schema;
pub mod transfers;

use actix_web::{web, HttpResponse};

use crate::operator;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(operator::health)));
    cfg.service(web::resource("/metrics").route(web::get().to(operator::metrics)));
    cfg.service(web::resource("/endpointcache").route(web::delete().to(flush_endpoint_cache)));
    transfers::routes(cfg);
    bulk::routes(cfg);
    routing::routes(cfg);
    lookup::routes(cfg);
}

/// `DELETE /endpointcache`: forget every cached callback URL, as the reference hub.
async fn flush_endpoint_cache(state: web::Data<AppState>) -> HttpResponse {
    state.endpoints.clear();
    state.participants.clear();
    HttpResponse::Accepted().finish()
}
