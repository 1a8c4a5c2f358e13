//! Labels of recorded streams (`signals::labels`): `POST /v1/signals/labels` marks a
//! stream's wall-time range as a true crisis or benign (scope operator; the label is
//! the caller's tenant's, an admin may name another; audit-logged as `label.add`
//! before it is stored), `GET /v1/signals/labels` lists the caller's tenant's labels
//! (every tenant's for admin). Stored beside the signal log; replay reads them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::ActionError;
use crate::http::api::{ApiState, action_error};
use crate::http::auth::Caller;
use crate::http::{ErrorBody, error};
use crate::signals::labels::{self, Label, Verdict};

/// The body of `POST /v1/signals/labels`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    /// The stream.
    pub stream: String,
    /// Start of the range, Unix ms (inclusive).
    pub start_ms: u64,
    /// End of the range, Unix ms (exclusive).
    pub end_ms: u64,
    /// `crisis` or `benign`.
    pub verdict: Verdict,
    /// The tenant the stream belongs to (admin only; others label their own).
    #[serde(default)]
    pub tenant: Option<String>,
    /// A note (at most 2000 characters kept).
    #[serde(default)]
    pub note: Option<String>,
}

/// `GET /v1/signals/labels`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LabelList {
    /// The labels, in the order they were set.
    pub labels: Vec<Label>,
}

/// Label a recorded stream's range.
///
/// Marks a stream's wall-time range as a true crisis or benign, for replays of the
/// signal log. Audit-logged (`label.add`); answered once the label is on disk.
#[utoipa::path(
    post,
    path = "/v1/signals/labels",
    tag = "signals",
    operation_id = "add_label",
    request_body = LabelRequest,
    responses(
        (status = 200, description = "The label, stored.", body = Label),
        (status = 400, description = "The body is not the JSON described.", body = ErrorBody),
        (status = 403, description = "Only admin may label another tenant's stream.", body = ErrorBody),
        (status = 409, description = "Signal recording is off.", body = ErrorBody),
        (status = 422, description = "Invalid range or stream.", body = ErrorBody),
        (status = 500, description = "The label could not be stored.", body = ErrorBody),
    )
)]
pub async fn add_label(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let request: LabelRequest = match crate::http::json_body(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let tenant = match (&request.tenant, caller.tenant_filter()) {
        (Some(t), Some(own)) if t != own => {
            return error(
                StatusCode::FORBIDDEN,
                "only admin may label another tenant's stream",
            );
        }
        (Some(t), _) => t.clone(),
        (None, Some(own)) => own.to_owned(),
        (None, None) => s.engine.owner(&request.stream).to_string(),
    };
    let label = Label {
        stream: request.stream,
        tenant,
        start_ms: request.start_ms,
        end_ms: request.end_ms,
        verdict: request.verdict,
        by: caller.tenant.clone(),
        note: request
            .note
            .unwrap_or_default()
            .chars()
            .take(2000)
            .collect(),
    };
    let issues = labels::check(&label, "");
    if !issues.is_empty() {
        return action_error(ActionError::Invalid(issues));
    }
    let Some(dir) = s.engine.signal_dir() else {
        return error(StatusCode::CONFLICT, "signal recording is off");
    };
    let engine = s.engine.clone();
    let stored = label.clone();
    let written = tokio::task::spawn_blocking(move || {
        engine.audit(
            &stored.by,
            "label.add",
            &stored.stream,
            serde_json::Value::Null,
            serde_json::to_value(&stored).expect("a label is JSON"),
        );
        labels::append(&dir, std::slice::from_ref(&stored))
    })
    .await
    .expect("label task");
    match written {
        Ok(()) => Json(label).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the label could not be stored: {e}"),
        ),
    }
}

/// List labels.
///
/// The labels of the caller's tenant's recorded streams (every tenant's for admin).
#[utoipa::path(
    get,
    path = "/v1/signals/labels",
    tag = "signals",
    operation_id = "list_labels",
    responses(
        (status = 200, description = "The labels.", body = LabelList),
        (status = 500, description = "The labels could not be read.", body = ErrorBody),
    )
)]
pub async fn list_labels(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let Some(dir) = s.engine.signal_dir() else {
        return Json(LabelList { labels: Vec::new() }).into_response();
    };
    let tenant = caller.tenant_filter().map(str::to_owned);
    let read = tokio::task::spawn_blocking(move || labels::load(&dir))
        .await
        .expect("label task");
    match read {
        Ok(mut list) => {
            if let Some(t) = tenant {
                list.retain(|l| l.tenant == t);
            }
            Json(LabelList { labels: list }).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
