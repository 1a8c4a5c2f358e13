//! The daemon's HTTP API besides the stream routes (`http::ingest`): escalations and
//! their live feed, the risk timeline, the policy and its audit log, reload, health,
//! metrics and the dashboard page. `openapi.json` beside this crate documents every
//! route; a test checks the two agree.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Json, Router};
use futures_util::stream::Stream;
use serde_json::{Value, json};

use crate::engine::{Action, ActionError, Engine};
use crate::http::auth::Caller;

/// The dashboard page (no external resources).
/// The dashboard page (one self-contained file).
pub const DASHBOARD: &str = include_str!("../../assets/dashboard.html");

/// Reloads policy and banks from disk (the daemon's SIGHUP path).
pub type Reloader = Arc<dyn Fn(&str) -> Result<Value, Vec<crate::config::Issue>> + Send + Sync>;

/// What the API handlers share.
pub struct ApiState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Reload.
    pub reload: Reloader,
    /// Ready once everything loaded; false again while shutting down.
    pub ready: AtomicBool,
    /// The metrics.
    pub metrics: crate::metrics::Metrics,
    /// Set when shutting down: live feeds end so connections can drain.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub(crate) fn action_error(e: ActionError) -> Response {
    match e {
        ActionError::NotFound => error(StatusCode::NOT_FOUND, "not found"),
        ActionError::Conflict(m) => error(StatusCode::CONFLICT, &m),
        ActionError::Invalid(issues) => issues_response(&issues),
        ActionError::Storage(m) => error(StatusCode::INTERNAL_SERVER_ERROR, &m),
    }
}

fn issues_response(issues: &[crate::config::Issue]) -> Response {
    let list: Vec<Value> = issues
        .iter()
        .map(|i| json!({"path": i.path, "message": i.message}))
        .collect();
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"error": "invalid", "errors": list})),
    )
        .into_response()
}

/// The routes.
pub fn routes(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/escalations", get(escalations))
        .route("/v1/escalations/{id}/ack", post(ack))
        .route("/v1/escalations/{id}/resolve", post(resolve))
        .route("/v1/events", get(events))
        .route("/v1/streams/{id}/timeline", get(timeline))
        .route("/v1/policy", get(policy).put(put_policy))
        .route("/v1/policy/rules/{name}", patch(patch_rule))
        .route("/v1/audit", get(audit))
        .route("/v1/reload", post(reload))
        .with_state(state)
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<Arc<ApiState>>) -> Response {
    let ready = s.ready.load(Ordering::Acquire);
    let checks = json!({"loaded": ready, "outbox_depth": s.engine.pipeline().depth()});
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready, "checks": checks}))).into_response()
}

async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    metrics_text(&s.metrics)
}

/// The Prometheus text exposition of `metrics`.
pub fn metrics_text(metrics: &crate::metrics::Metrics) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.encode(),
    )
        .into_response()
}

async fn escalations(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    Json(json!({"escalations": s.engine.escalations(caller.tenant_filter())}))
}

fn note(body: &Bytes) -> Result<String, Box<Response>> {
    if body.is_empty() {
        return Ok(String::new());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, &format!("body: {e}"))))?;
    Ok(v.get("note")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(2000)
        .collect())
}

async fn mark(s: &ApiState, id: &str, resolve: bool, caller: &Caller, body: &Bytes) -> Response {
    let note = match note(body) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    tracing::info!(tenant = %caller.tenant, via = caller.method, incident = id, resolve, "escalation marked");
    let action = if resolve {
        Action::Resolve
    } else {
        Action::Acknowledge
    };
    // Answered once the audit entry is on disk, waiting off the async runtime.
    let engine = s.engine.clone();
    let (id, who, credential, tenant) = (
        id.to_owned(),
        caller.tenant.clone(),
        caller.credential.clone(),
        caller.tenant_filter().map(str::to_owned),
    );
    let acted = tokio::task::spawn_blocking(move || {
        engine.act(&id, action, &who, &credential, &note, tenant.as_deref())
    })
    .await
    .expect("incident action task");
    match acted {
        Ok(e) => Json(e).into_response(),
        Err(e) => action_error(e),
    }
}

async fn ack(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    mark(&s, &id, false, &caller, &body).await
}

async fn resolve(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    mark(&s, &id, true, &caller, &body).await
}

async fn events(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut rx = s.engine.subscribe();
    // Only the caller's tenant's streams and incidents (an admin sees all).
    let tenant = caller.tenant_filter().map(str::to_owned);
    let mut closing = s.closing.subscribe();
    let stream = async_stream(move |tx| async move {
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                _ = closing.wait_for(|c| *c) => return,
            };
            match received {
                Ok((_, data))
                    if tenant
                        .as_deref()
                        .is_some_and(|t| data["tenant"].as_str() != Some(t)) => {}
                Ok((kind, data)) => {
                    if tx
                        .send(Event::default().event(kind).data(data.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                // A slow client missed events: tell it to re-fetch.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let e = Event::default().event("lagged").data(n.to_string());
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .event(Event::default().event("ping").data("")),
    )
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

async fn timeline(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let policy = s.engine.policy();
    match s.engine.timeline(&id, caller.tenant_filter()) {
        Some(points) => Json(json!({
            "stream": id,
            "tiers": std::iter::once("none".to_owned()).chain(policy.config().tiers.iter().cloned()).collect::<Vec<_>>(),
            "points": points,
        }))
        .into_response(),
        None => error(StatusCode::NOT_FOUND, "no such stream"),
    }
}

async fn policy(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let p = s.engine.policy();
    // Every tenant runs under the policy and sees its history; who changed it (an
    // administrator's identity) only administrators see.
    let history = s
        .engine
        .audit_entries(None)
        .into_iter()
        .filter(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("policy"))
        })
        .map(|mut e| {
            if !caller.is_admin()
                && let Some(o) = e.as_object_mut()
            {
                o.remove("who");
            }
            e
        })
        .collect::<Vec<_>>();
    Json(json!({
        "version": p.version(),
        "toml": toml::to_string(p.config()).unwrap_or_default(),
        "audit": history,
    }))
}

async fn put_policy(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the policy must be UTF-8 TOML");
    };
    match crate::config::policy_from_toml(text, "policy") {
        Ok(config) => {
            let engine = s.engine.clone();
            let (who, credential) = (caller.tenant.clone(), caller.credential.clone());
            let version = tokio::task::spawn_blocking(move || {
                engine.set_policy(config, &who, &credential, "policy.update", "policy")
            })
            .await
            .expect("policy task");
            match version {
                Ok(version) => Json(json!({"version": version})).into_response(),
                Err(e) => action_error(e),
            }
        }
        Err(issues) => issues_response(&issues),
    }
}

async fn patch_rule(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body: {e}")),
    };
    let engine = s.engine.clone();
    let r = tokio::task::spawn_blocking(move || {
        engine.patch_rule(&name, &patch, &caller.tenant, &caller.credential)
    })
    .await
    .expect("patch task");
    match r {
        Ok(version) => Json(json!({"version": version})).into_response(),
        Err(e) => action_error(e),
    }
}

async fn audit(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    Json(json!({"entries": s.engine.audit_entries(caller.tenant_filter())}))
}

async fn reload(State(s): State<Arc<ApiState>>, Extension(caller): Extension<Caller>) -> Response {
    let reload = s.reload.clone();
    let r = tokio::task::spawn_blocking(move || reload(&caller.tenant))
        .await
        .expect("reload task");
    match r {
        Ok(v) => Json(v).into_response(),
        Err(issues) => issues_response(&issues),
    }
}
