//! The fleet's policy at the coordinator (`firebreak.policy`, see
//! `../shared/design/fleet.md`): operators try a change on the fleet's recorded
//! signals before an admin applies it to every worker.
//!
//! - `GET /v1/policy` (`read`): the active policy, its number and the versions kept
//!   (each with the dry-run it was applied on);
//! - `POST /v1/policy/dry-run` (`operator`): a proposed policy or rule patch replayed
//!   beside the active one over the last hours of the fleet's signals (the
//!   coordinator's copy of `firebreak.signals`), the caller's tenant's streams only
//!   (every tenant's for admin); the same body and answer as a worker's;
//! - `PUT /v1/policy?dry_run=ID` (TOML) and `PATCH /v1/policy/rules/{name}?dry_run=ID`
//!   (`admin`): the next version, written to `firebreak.policy` and made active; every
//!   worker applies it. With `dry_run`, the version records that dry-run, which must
//!   have replayed exactly this policy (else 409).
//!
//! Two writers at once: the last one wins (the record is read back by every
//! coordinator and worker).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Coordinator;
use crate::engine::ActionError;
use crate::http::api::{DryRunParam, action_error};
use crate::http::auth::Caller;
use crate::http::error;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `GET /v1/policy`.
pub async fn show(State(c): State<Arc<Coordinator>>) -> Response {
    let record = c.policy.record();
    let active = c.policy.active();
    Json(json!({
        "name": c.policy.name,
        "version": active.version(),
        "number": record.as_ref().map(|r| r.active),
        "toml": toml::to_string(active.config()).unwrap_or_default(),
        "versions": record.map(|r| r.versions).unwrap_or_default(),
    }))
    .into_response()
}

/// `POST /v1/policy/dry-run`.
pub async fn dry_run(
    State(c): State<Arc<Coordinator>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let log = c.signal_log.clone();
    let answer = crate::http::dry_run::answer(
        &body,
        c.policy.active(),
        log.as_ref().map(|l| l.dir().to_owned()),
        caller.tenant_filter().map(str::to_owned),
        move || {
            // What the log's thread holds goes to disk first.
            if let Some(l) = log {
                use crate::signals::SignalSink;
                l.flush();
            }
            now_ms()
        },
    )
    .await;
    match answer {
        Ok(d) => {
            c.policy.dry_runs.remember(d.record());
            Json(d).into_response()
        }
        Err(r) => r,
    }
}

/// `PUT /v1/policy?dry_run=ID`.
pub async fn put(
    State(c): State<Arc<Coordinator>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<DryRunParam>,
    body: Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the policy must be UTF-8 TOML");
    };
    match crate::config::policy_from_toml(text, "policy") {
        Ok(config) => apply(&c, &caller, config, q.dry_run.as_deref()).await,
        Err(issues) => action_error(ActionError::Invalid(issues)),
    }
}

/// `PATCH /v1/policy/rules/{name}?dry_run=ID`: the same patch a worker applies.
pub async fn patch_rule(
    State(c): State<Arc<Coordinator>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<DryRunParam>,
    body: Bytes,
) -> Response {
    let patch: serde_json::Value = match crate::http::json_body(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let active = c.policy.active();
    match crate::engine::patched(active.config(), &name, &patch) {
        Ok(config) => apply(&c, &caller, config, q.dry_run.as_deref()).await,
        Err(e) => action_error(e),
    }
}

/// Writes `config` as the next, active version (on `dry_run` if given).
async fn apply(
    c: &Coordinator,
    caller: &Caller,
    config: firebreak_policy::config::PolicyConfig,
    dry_run: Option<&str>,
) -> Response {
    let record = match dry_run.map(|id| c.policy.dry_runs.check(id, &config)) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(m)) => return error(StatusCode::CONFLICT, &m),
    };
    let current = c.policy.record();
    let next = crate::engine::feeds::next_policy_record(
        current.as_ref(),
        &c.policy.name,
        &config,
        &caller.tenant,
        now_ms(),
        true,
        record,
    );
    let written = crate::engine::feeds::publish_policy_record(&c.policy.writer, next).await;
    match written {
        Ok(r) => {
            tracing::info!(
                who = %caller.tenant,
                number = r.active,
                dry_run = ?dry_run,
                "coordinator: policy version written"
            );
            let version = r
                .active_version()
                .map(|v| v.policy_version.clone())
                .unwrap_or_default();
            let number = r.active;
            *c.policy.record.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            Json(json!({"version": version, "number": number})).into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the policy topic did not take the version: {e}"),
        ),
    }
}
