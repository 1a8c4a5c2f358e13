//! The policy's stored versions (`engine::versions`): `GET /v1/policy/versions` lists
//! them (scope read) and `POST /v1/policy/rollback {"version": N}` makes version N's
//! policy the newest version (scope admin, audit-logged as `policy.rollback`). Both are
//! registered by `api::api` from their `#[utoipa::path]`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::http::api::{ApiState, action_error};
use crate::http::auth::Caller;
use crate::http::{ErrorBody, error};

/// One stored policy version (without its TOML).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredVersion {
    /// Its number (1, 2, …).
    pub number: u64,
    /// When it was made, Unix milliseconds.
    pub at_ms: u64,
    /// Who made it (a tenant, `startup`, or the reload's caller).
    pub who: String,
    /// `file`, or the API action that made it.
    pub source: String,
    /// The policy's version string (on every event made under it).
    pub policy_version: String,
    /// The version it restores, for a rollback.
    pub rolled_back_from: Option<u64>,
    /// The dry-run it was applied on (`null` if none).
    #[schema(required = true)]
    pub dry_run: Option<crate::engine::versions::DryRunRecord>,
}

/// `GET /v1/policy/versions`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct VersionList {
    /// The policy version string in force.
    pub current: String,
    /// Every stored version, oldest first.
    pub versions: Vec<StoredVersion>,
}

/// The answer to a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RolledBack {
    /// The policy version string now in force.
    pub version: String,
    /// The audit log's head after the rollback's entry (compare with
    /// `firebreak audit verify`).
    pub audit_head: String,
}

/// The body of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct Rollback {
    /// A stored version's number.
    pub version: u64,
}

/// The stored policy versions.
#[utoipa::path(
    get,
    path = "/v1/policy/versions",
    tag = "policy",
    operation_id = "policy_versions",
    responses(
        (status = 200, description = "The versions.", body = VersionList),
        (status = 500, description = "The versions directory could not be read.", body = ErrorBody),
    )
)]
pub(crate) async fn versions(State(s): State<Arc<ApiState>>) -> Response {
    let engine = s.engine.clone();
    // Reads the versions directory: off the async runtime.
    match tokio::task::spawn_blocking(move || engine.policy_versions())
        .await
        .expect("versions task")
    {
        Ok(list) => Json(VersionList {
            current: s.engine.policy().version().to_owned(),
            versions: list
                .into_iter()
                .map(|v| StoredVersion {
                    number: v.number,
                    at_ms: v.at_ms,
                    who: v.who,
                    source: v.source,
                    policy_version: v.policy_version,
                    rolled_back_from: v.rolled_back_from,
                    dry_run: v.dry_run,
                })
                .collect(),
        })
        .into_response(),
        Err(e) => action_error(e),
    }
}

/// Makes a stored version's policy the newest version (audit-logged first).
#[utoipa::path(
    post,
    path = "/v1/policy/rollback",
    tag = "policy",
    operation_id = "rollback_policy",
    request_body(content = Rollback, description = "`{\"version\": N}`."),
    responses(
        (status = 200, description = "In force.", body = RolledBack),
        (status = 400, description = "The body is not `{\"version\": N}`.", body = ErrorBody),
        (status = 404, description = "No such version.", body = ErrorBody),
        (status = 409, description = "Fleet mode: the coordinator changes the fleet's policy.", body = ErrorBody),
        (status = 500, description = "Its audit entry or the version could not be written: nothing changed.", body = ErrorBody),
    )
)]
pub(crate) async fn rollback(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    if let Some(r) = crate::http::api::fleet_policy_refusal(&s) {
        return r;
    }
    let number = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("version").and_then(Value::as_u64));
    let Some(number) = number else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"version\": N}, a stored version's number",
        );
    };
    let engine = s.engine.clone();
    let r = tokio::task::spawn_blocking(move || {
        engine.rollback_policy(number, &caller.tenant, &caller.credential)
    })
    .await
    .expect("rollback task");
    match r {
        Ok(version) => Json(RolledBack {
            version,
            audit_head: s.engine.audit_head(),
        })
        .into_response(),
        Err(e) => action_error(e),
    }
}
