//! The FSPIOP API (port 3000). The foundation serves health and metrics and
//! answers every other path with the FSPIOP "unknown URI" error; the
//! resources arrive with their issues.

use actix_web::web;

use crate::operator;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(operator::health))
        .route("/metrics", web::get().to(operator::metrics));
}
