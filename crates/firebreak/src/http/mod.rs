//! The HTTP surface: the push-ingest hook ([`ingest`]), the responders' and operators'
//! API with the dashboard ([`api`]), both behind authentication ([`auth`]), with every
//! request counted by route and status and every answer carrying security headers
//! ([`security_headers`]).
//!
//! Every route is declared once, with its `#[utoipa::path]` documentation, through
//! `utoipa_axum::routes!`: the router serves exactly the operations the OpenAPI
//! document ([`openapi`], `firebreak openapi`) describes, and every JSON answer is a
//! typed struct whose schema is in that document.

pub mod api;
pub mod auth;
pub mod dry_run;
pub mod ingest;
pub mod labels;
pub mod limits;
pub mod openapi;
pub mod policy_versions;
pub mod server;

use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::metrics::Metrics;

/// Every route, authenticated and counted.
pub fn router(
    ingest: Arc<ingest::IngestState>,
    api: Arc<api::ApiState>,
    auth: Arc<auth::Authenticator>,
    metrics: Metrics,
) -> Router {
    ingest::routes(ingest)
        .merge(api::routes(api))
        .layer(axum::middleware::from_fn_with_state(auth, auth::layer))
        .layer(axum::middleware::from_fn(move |req, next| {
            count_requests(metrics.clone(), req, next)
        }))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Every error answer (unless an operation documents another shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({"error": "no such stream"}))]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

/// A JSON request body as `T`, or the 400 answer naming what is wrong with it.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, &format!("body: {e}"))))
}

/// `status` with `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.to_owned(),
        }),
    )
        .into_response()
}

/// The Content-Security-Policy of every answer: nothing may load but the dashboard's
/// own inline script and style (allowed by their sha256), requests go to this origin
/// only, and no page may frame it.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| csp_for(api::dashboard_page()))
}

/// The Content-Security-Policy for a page whose only script and style are its inline
/// `<script>` and `<style>` (allowed by their sha256).
pub fn csp_for(html: &str) -> String {
    let hash = |open: &str, close: &str| {
        let start = html.find(open).map(|i| i + open.len());
        let body = start.and_then(|s| html[s..].find(close).map(|e| &html[s..s + e]));
        let digest = Sha256::digest(body.unwrap_or_default().as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
         img-src 'self' data: blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        hash("<script>", "</script>"),
        hash("<style>", "</style>")
    )
}

/// Adds the security headers to every answer: the CSP, `nosniff`, no framing, no
/// referrer.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(content_security_policy()) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Counts requests by matched route and status.
async fn count_requests(metrics: Metrics, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    metrics
        .http_requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}
