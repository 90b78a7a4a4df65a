//! FSPIOP errors on the wire: one place maps every [`ErrorCode`] to its HTTP
//! status and the `errorInformation` body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use switch_actors::{ErrorCode, FspiopError};

/// An error answered synchronously by the switch.
#[derive(Debug)]
pub struct ApiError(pub FspiopError);

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError(FspiopError::new(code, detail))
    }
}

impl From<FspiopError> for ApiError {
    fn from(error: FspiopError) -> Self {
        ApiError(error)
    }
}

impl From<switch_storage::StorageError> for ApiError {
    fn from(error: switch_storage::StorageError) -> Self {
        tracing::error!(%error, "storage failure");
        ApiError(FspiopError::from(error))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The reference hub's mapping: 10xx 503, 20xx 500, everything else 400,
/// with the overrides of the spec.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::ServiceUnavailable | ErrorCode::ServerBusy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::UnacceptableVersion => StatusCode::NOT_ACCEPTABLE,
        ErrorCode::UnknownUri => StatusCode::NOT_FOUND,
        ErrorCode::CommunicationError => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `{"errorInformation": {"errorCode", "errorDescription"}}`.
pub fn error_body(error: &FspiopError) -> serde_json::Value {
    let mut information = json!({
        "errorCode": error.code.code(),
        "errorDescription": error.description(),
    });
    if !error.extensions.is_empty() {
        let extension: Vec<serde_json::Value> = error
            .extensions
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value}))
            .collect();
        information["extensionList"] = json!({ "extension": extension });
    }
    json!({ "errorInformation": information })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        status_of(self.0.code)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(error_body(&self.0))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
