//! The policy's stored versions (`engine::versions`): `GET /v1/policy/versions` lists
//! them (scope read) and `POST /v1/policy/rollback {"version": N}` makes version N's
//! policy the newest version (scope admin, audit-logged as `policy.rollback`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use crate::http::api::{ApiState, action_error};
use crate::http::auth::Caller;

/// The routes.
pub fn routes(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/policy/versions", get(versions))
        .route("/v1/policy/rollback", post(rollback))
        .with_state(state)
}

async fn versions(State(s): State<Arc<ApiState>>) -> Response {
    let engine = s.engine.clone();
    // Reads the versions directory: off the async runtime.
    match tokio::task::spawn_blocking(move || engine.policy_versions())
        .await
        .expect("versions task")
    {
        Ok(list) => Json(json!({
            "current": s.engine.policy().version(),
            "versions": list,
        }))
        .into_response(),
        Err(e) => action_error(e),
    }
}

async fn rollback(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let number = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("version").and_then(Value::as_u64));
    let Some(number) = number else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected {\"version\": N}, a stored version's number"})),
        )
            .into_response();
    };
    let engine = s.engine.clone();
    let r = tokio::task::spawn_blocking(move || {
        engine.rollback_policy(number, &caller.tenant, &caller.credential)
    })
    .await
    .expect("rollback task");
    match r {
        Ok(version) => {
            Json(json!({"version": version, "audit_head": s.engine.audit_head()})).into_response()
        }
        Err(e) => action_error(e),
    }
}
