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
    /// The leader's answer to a forwarded request, relayed as it came:
    /// status, content type, `x-walship-index`, body.
    Forwarded(StatusCode, Option<String>, Option<String>, Bytes),
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

    /// A proposal's failure as its status: 503 nothing written (retry),
    /// 504 outcome unknown (retry in a session), 400 refused for good, 409
    /// rejected by the application, 410 the client session is gone.
    pub fn from_propose(e: crate::proposer::ProposeError) -> ApiError {
        use crate::proposer::ProposeError as P;
        match e {
            P::NotLeader(_) => ApiError::unavailable("no leader at the moment; nothing was written"),
            P::Unavailable(m) => ApiError::unavailable(m),
            P::Unknown(m) => ApiError::unknown(m),
            P::Refused(m) => ApiError::bad_request(m),
            e @ P::Rejected(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            e @ P::SessionUnknown(_) => ApiError::new(StatusCode::GONE, e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Status(status, msg) => (status, Json(serde_json::json!({ "error": msg }))).into_response(),
            ApiError::Forwarded(status, content_type, index, body) => {
                let ct = content_type.unwrap_or_else(|| "application/octet-stream".to_string());
                let mut resp = (status, [(header::CONTENT_TYPE, ct)], body).into_response();
                if let Some(index) = index.and_then(|i| header::HeaderValue::from_str(&i).ok()) {
                    resp.headers_mut().insert(super::INDEX, index);
                }
                resp
            }
        }
    }
}

/// Error answers axum makes itself under `/v1` (a key that is not UTF-8, no
/// such route, a method the route does not take, a body over the limit) are
/// plain text or empty; this turns them into `{"error": ...}` like ours, so
/// every `/v1` error is JSON. Other headers (`Allow` on a 405) are kept.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let v1 = req.uri().path() == "/v1" || req.uri().path().starts_with("/v1/");
    // Kept cheaply (reference-counted), formatted only for an error.
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !v1 || resp.status().is_success() || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let what = format!("{method} {}", uri.path());
    let msg = match parts.status {
        _ if !text.is_empty() => String::from_utf8_lossy(&text).into_owned(),
        StatusCode::NOT_FOUND => format!("no such route: {what}"),
        StatusCode::METHOD_NOT_ALLOWED => format!("method not allowed: {what}"),
        s => format!("{s}: {what}"),
    };
    let json = serde_json::json!({ "error": msg }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(json))
}
