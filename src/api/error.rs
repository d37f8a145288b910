//! API errors and their HTTP status codes, in one place.

use axum::body::Bytes;
use axum::http::header;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;

#[derive(Debug)]
pub enum ApiError {
    Status(StatusCode, String),
    /// The leader's answer to a forwarded request, relayed as it came.
    Forwarded(StatusCode, Option<String>, Bytes),
}

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError::Status(status, msg.into())
    }
    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    }
    pub fn too_large(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg)
    }
    /// Nothing was written.
    pub fn unavailable(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg)
    }
    /// The write may or may not have happened.
    pub fn unknown(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, msg)
    }
    pub fn internal(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Status(status, msg) => (status, Json(serde_json::json!({ "error": msg }))).into_response(),
            ApiError::Forwarded(status, content_type, body) => {
                let ct = content_type.unwrap_or_else(|| "application/octet-stream".to_string());
                (status, [(header::CONTENT_TYPE, ct)], body).into_response()
            }
        }
    }
}
