//! The HTTP surface: the push-ingest hook ([`ingest`]), the responders' and operators'
//! API with the dashboard ([`api`]), both behind authentication ([`auth`]), with every
//! request counted by route and status.

pub mod api;
pub mod auth;
pub mod ingest;

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

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
