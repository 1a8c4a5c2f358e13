//! `POST /v1/policy/dry-run` (scope operator): a proposed policy or rule patch
//! replayed beside the active policy over the last hours of the local signal log
//! (`signals::dryrun`), answered with the escalations it would add or remove per
//! stream; the caller's tenant's streams only (every tenant's for admin). Nothing is
//! applied.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use firebreak_policy::policy::Policy;

use crate::engine::ActionError;
use crate::http::api::{ApiState, action_error};
use crate::http::auth::Caller;
use crate::http::{ErrorBody, error};
use crate::signals::dryrun::{DryRun, DryRunRequest, dry_run as run, proposed};

/// Dry-run a policy change.
///
/// Replays a proposed policy (`toml`) or a patch of one rule of the active policy
/// (`rule`, `patch`) beside the active policy over the last `hours` of recorded
/// signals, and answers the escalations it would add or remove, per stream. Nothing
/// is applied.
#[utoipa::path(
    post,
    path = "/v1/policy/dry-run",
    tag = "policy",
    operation_id = "dry_run_policy",
    request_body = DryRunRequest,
    responses(
        (status = 200, description = "What the proposed policy would have done differently.", body = DryRun),
        (status = 400, description = "The body is not the JSON described.", body = ErrorBody),
        (status = 409, description = "Signal recording is off.", body = ErrorBody),
        (status = 422, description = "The proposed policy is invalid, with every issue.", body = ErrorBody),
        (status = 500, description = "The signal log could not be read.", body = ErrorBody),
    )
)]
pub async fn dry_run(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let engine = s.engine.clone();
    let answer = answer(
        &body,
        s.engine.policy(),
        s.engine.signal_dir(),
        caller.tenant_filter().map(str::to_owned),
        move || {
            // What the log's thread holds goes to disk first.
            engine.flush_signals();
            engine.now_ms()
        },
    )
    .await;
    match answer {
        Ok(d) => {
            s.engine.remember_dry_run(d.record());
            Json(d).into_response()
        }
        Err(r) => r,
    }
}

/// A dry-run request (`body`) answered over the signal log in `dir` against
/// `active`, for `tenant`'s streams (all for `None`): the worker's handler and the
/// coordinator's. `now` (run off the runtime, before the replay) makes what was
/// recorded readable and gives the end of the window. An error is the response.
pub async fn answer(
    body: &[u8],
    active: Arc<Policy>,
    dir: Option<std::path::PathBuf>,
    tenant: Option<String>,
    now: impl FnOnce() -> u64 + Send + 'static,
) -> Result<DryRun, Response> {
    let request: DryRunRequest = crate::http::json_body(body).map_err(|r| *r)?;
    let hours = request.hours.unwrap_or(24.0);
    if !(hours.is_finite() && hours > 0.0 && hours <= 168.0) {
        return Err(action_error(ActionError::Invalid(vec![
            firebreak_policy::Issue::new("hours", "must be within (0, 168]"),
        ])));
    }
    let config = proposed(active.config(), &request)
        .map_err(|issues| action_error(ActionError::Invalid(issues)))?;
    let Some(dir) = dir else {
        return Err(error(StatusCode::CONFLICT, "signal recording is off"));
    };
    tokio::task::spawn_blocking(move || {
        let to_ms = now() + 1;
        let from_ms = to_ms.saturating_sub((hours * 3_600_000.0) as u64);
        run(
            &dir,
            active,
            Arc::new(Policy::new(config)),
            tenant.as_deref(),
            from_ms,
            to_ms,
        )
    })
    .await
    .expect("dry-run task")
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
}
