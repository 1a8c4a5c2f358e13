//! The daemon's HTTP API besides the stream routes (`http::ingest`): escalations and
//! their live feed, the risk timeline, the policy and its audit log, reload, health,
//! metrics and the dashboard page. Each handler's `#[utoipa::path]` is its entry in the
//! OpenAPI document (`firebreak openapi`, `crates/firebreak/openapi.json`), and
//! [`api`] registers each route from it, so the two cannot disagree.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json, Router};
use futures_util::stream::Stream;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::{Action, ActionError, AuditEntry, Engine, Escalation, Point};
use crate::http::auth::Caller;
use crate::http::{ErrorBody, error};

/// The dashboard page (one self-contained file, no external resources).
const DASHBOARD_TEMPLATE: &str = include_str!("../../assets/dashboard.html");

/// The tuning panel (labels, dry-run, apply) both dashboards share, put in place of
/// the line `/*@tune*/` of their inline script.
pub const TUNE_JS: &str = include_str!("../../assets/tune.js");

/// `template` with [`TUNE_JS`] in place of its `/*@tune*/` line.
pub fn with_tune(template: &str) -> String {
    template.replacen("/*@tune*/", TUNE_JS, 1)
}

/// The live alert dashboard (with [`TUNE_JS`]).
pub fn dashboard_page() -> &'static str {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PAGE.get_or_init(|| with_tune(DASHBOARD_TEMPLATE))
}

/// Reloads policy and banks from disk (the daemon's SIGHUP path).
pub type Reloader =
    Arc<dyn Fn(&str) -> Result<ReloadResult, Vec<crate::config::Issue>> + Send + Sync>;

/// What the API handlers share.
pub struct ApiState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Reload.
    pub reload: Reloader,
    /// Ready once everything loaded; false again while shutting down.
    pub ready: AtomicBool,
    /// Fleet mode: the shared bank and policy topics were read up to the end once
    /// (always true outside fleet mode).
    pub shared_ready: AtomicBool,
    /// Fleet mode: the policy is the fleet's (`firebreak.policy`, changed at the
    /// coordinator); this worker's API does not change it.
    pub fleet_policy: bool,
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

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process serves HTTP.
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Readiness {
    /// Whether the daemon takes work (false while starting and shutting down, while
    /// the outbox is above its high-water mark, and while a disk write fails).
    pub ready: bool,
    /// What readiness is made of.
    pub checks: ReadinessChecks,
}

/// The parts of [`Readiness`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReadinessChecks {
    /// Policy, banks and models are loaded.
    pub loaded: bool,
    /// Fleet mode: the shared bank and policy topics caught up (true outside it).
    pub shared: bool,
    /// Decisions written to the outbox and not yet delivered.
    pub outbox_depth: usize,
    /// What an operator must act on, if anything. Every kind but `delivery_paused`
    /// makes the daemon not ready (decisions are still kept while delivery is paused,
    /// until the outbox fills).
    pub alarms: Vec<Alarm>,
}

/// An alarm: something only an operator can fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Alarm {
    /// What is wrong.
    pub kind: AlarmKind,
    /// The error or limit behind it.
    pub detail: String,
}

/// The kinds of [`Alarm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// The sink refuses every event (credentials, authorisation, a fatal producer
    /// state, a missing topic, the event log's disk): delivery waits and probes.
    DeliveryPaused,
    /// The outbox is above its high-water mark: pushed segments are refused (503).
    OutboxFull,
    /// A write of the outbox, the incident journal or the audit log failed (a full
    /// disk?): pushed segments are refused (503).
    Disk,
}

/// The daemon's alarms now (never waits for a disk).
pub fn alarms(engine: &Engine) -> Vec<Alarm> {
    let status = engine.pipeline().status();
    let mut out = Vec::new();
    if let Some(detail) = status.paused {
        out.push(Alarm {
            kind: AlarmKind::DeliveryPaused,
            detail,
        });
    }
    if let Some(detail) = status.pressure {
        out.push(Alarm {
            kind: AlarmKind::OutboxFull,
            detail,
        });
    }
    if let Some(e) = status.write_error {
        out.push(Alarm {
            kind: AlarmKind::Disk,
            detail: e,
        });
    }
    for (file, e) in engine.storage_alarms() {
        out.push(Alarm {
            kind: AlarmKind::Disk,
            detail: format!("{file}: {e}"),
        });
    }
    out
}

/// Why new work is refused now (an alarm other than `delivery_paused`), if it is.
pub fn refusal(engine: &Engine) -> Option<String> {
    alarms(engine)
        .into_iter()
        .find(|a| a.kind != AlarmKind::DeliveryPaused)
        .map(|a| a.detail)
}

/// `GET /v1/escalations`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EscalationList {
    /// Open incidents and those resolved within the last hour that the caller may
    /// see, the most recently updated first: `limit` of them from `offset`.
    pub escalations: Vec<Escalation>,
    /// How many the whole list holds.
    pub total: usize,
    /// The `offset` of the next page (`null` on the last page).
    #[schema(required = true)]
    pub next_offset: Option<usize>,
}

/// The page of `GET /v1/escalations` (query parameters).
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Incidents to skip (default 0).
    pub offset: Option<usize>,
    /// Incidents in the page: 1 to 1000 (default 500).
    pub limit: Option<usize>,
}

/// The largest page of `GET /v1/escalations`.
pub const MAX_PAGE: usize = 1000;

/// The optional body of `POST /v1/escalations/{id}/ack` and `/resolve` (an empty body
/// is allowed too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(default)]
pub struct NoteRequest {
    /// Free text kept with the acknowledgement or resolution and in the audit log
    /// (cut to 2000 characters).
    pub note: Option<String>,
}

/// `GET /v1/streams/{id}/timeline`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Timeline {
    /// The stream.
    pub stream: String,
    /// Tier names by index: `none` first, then the policy's tiers.
    #[schema(example = json!(["none", "review", "crisis"]))]
    pub tiers: Vec<String>,
    /// Risk over time, oldest first (the last 20 minutes at 2 samples/s at most).
    pub points: Vec<Point>,
}

/// `GET /v1/policy`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyView {
    /// The version in force (name and content hash).
    #[schema(example = "default@1a2b3c4d")]
    pub version: String,
    /// The whole policy in force, as TOML.
    pub toml: String,
    /// The policy's history: audit entries whose action starts with `policy` (without
    /// `who` unless the caller has the `admin` scope).
    pub audit: Vec<AuditEntry>,
}

/// The answer to a policy change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PolicyVersion {
    /// The new policy version, on every later event.
    #[schema(example = "default@1a2b3c4d")]
    pub version: String,
}

/// The body of `PATCH /v1/policy/rules/{name}`: any of a rule's thresholds (as in the
/// policy file). The handler reads it as a JSON object and checks each field itself (an
/// unknown field or a non-number is a 422 naming it); a test checks the fields listed
/// here are exactly those it accepts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
#[schema(example = json!({"enter": 0.6, "exit": 0.4}))]
pub struct RulePatch {
    /// Level a frame's (smoothed) value must reach to count, 0 to 1.
    pub enter: Option<f64>,
    /// Once active, the rule stays active while some frame within `hold_secs` has a
    /// value at or above this level (at most `enter`).
    pub exit: Option<f64>,
    /// Exponential smoothing weight of the newest value (1: no smoothing).
    pub smoothing: Option<f64>,
    /// Active when `k` of the last `n` sampled frames within `within_secs` count.
    pub k: Option<u64>,
    /// See `k`.
    pub n: Option<u64>,
    /// See `k` (media seconds).
    pub within_secs: Option<f64>,
    /// How long an active rule stays active without a frame at the exit level (wall
    /// seconds).
    pub hold_secs: Option<f64>,
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditLogView {
    /// The entries kept in memory (the last 1000), oldest first: the caller's own
    /// unless it has the `admin` scope.
    pub entries: Vec<AuditEntry>,
}

/// One bank after a reload: `[name, entries, negative]`, a JSON array (kept from the
/// first version of the API; an object would have been more regular).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BankSummary(pub String, pub usize, pub bool);

impl From<(String, usize, bool)> for BankSummary {
    fn from((name, entries, negative): (String, usize, bool)) -> Self {
        BankSummary(name, entries, negative)
    }
}

impl utoipa::PartialSchema for BankSummary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, ObjectBuilder, Type};
        ArrayBuilder::new()
            .description(Some(
                "One bank: `[name, entries, negative]` (a tuple, not an object).",
            ))
            .prefix_items([
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("The bank's name."))
                    .build(),
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .description(Some("Entries in it."))
                    .build(),
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .description(Some(
                        "Whether it is a negative bank (known content whose matches \
                         suppress the positive ones).",
                    ))
                    .build(),
            ])
            .items(ArrayItems::False)
            .min_items(Some(3))
            .examples([serde_json::json!(["crisis", 120, false])])
            .into()
    }
}

impl ToSchema for BankSummary {}

/// `POST /v1/reload` (and SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReloadResult {
    /// The policy version now in force.
    pub policy_version: String,
    /// The banks now loaded.
    pub banks: Vec<BankSummary>,
}

impl std::fmt::Display for ReloadResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&json)
    }
}

/// One problem with a submitted policy or rule change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct IssueBody {
    /// Where: a dotted path into the policy, or the field of the request.
    #[schema(example = "rules[0].enter")]
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// 422: a policy, rule change or reload with problems, every one listed. (Stream
/// registration reports its problems differently: see `RegistrationInvalid`.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({"error": "invalid", "errors": [{"path": "rules[0].enter", "message": "must be in [0, 1]"}]}))]
pub struct InvalidBody {
    /// Always `invalid`.
    pub error: String,
    /// Every problem.
    pub errors: Vec<IssueBody>,
}

/// In fleet mode a worker's policy is the fleet's: changes are refused here.
pub(crate) fn fleet_policy_refusal(s: &ApiState) -> Option<Response> {
    s.fleet_policy.then(|| {
        error(
            StatusCode::CONFLICT,
            "fleet mode: the policy is the fleet's (firebreak.policy); change it at the \
             coordinator, and every worker applies it",
        )
    })
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
    let errors = issues
        .iter()
        .map(|i| IssueBody {
            path: i.path.clone(),
            message: i.message.clone(),
        })
        .collect();
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(InvalidBody {
            error: "invalid".into(),
            errors,
        }),
    )
        .into_response()
}

/// Every route of this module with its documentation (the one list both the router
/// and the OpenAPI document are made from).
pub fn api() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(escalations))
        .routes(routes!(ack))
        .routes(routes!(resolve))
        .routes(routes!(events))
        .routes(routes!(timeline))
        .routes(routes!(thumbnail))
        .routes(routes!(policy, put_policy))
        .routes(routes!(patch_rule))
        .routes(routes!(audit))
        .routes(routes!(reload))
        .routes(routes!(crate::http::policy_versions::versions))
        .routes(routes!(crate::http::policy_versions::rollback))
        .routes(routes!(crate::http::dry_run::dry_run))
        .routes(routes!(
            crate::http::labels::add_label,
            crate::http::labels::list_labels
        ))
}

/// The routes.
pub fn routes(state: Arc<ApiState>) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(state)
}

/// The dashboard page.
///
/// The dashboard: open escalations, live over SSE, with acknowledge and resolve, and
/// a stream's risk timeline. The token goes in the fragment: `/#token=TOKEN`.
#[utoipa::path(
    get,
    path = "/",
    tag = "service",
    operation_id = "dashboard",
    responses((status = 200, description = "The dashboard page (one file, no external resources).", body = String, content_type = "text/html"))
)]
async fn dashboard() -> Html<&'static str> {
    Html(dashboard_page())
}

/// Liveness.
///
/// Liveness: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    operation_id = "healthz",
    responses((status = 200, description = "Alive.", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness.
///
/// Readiness: policy, banks and models loaded, not shutting down, the outbox below its
/// high-water mark and no failing disk write; alarms listed.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Starting, shutting down, the fleet's shared topics not caught up yet, the outbox above its high-water mark or a disk write failing (same body, `ready: false`, the alarms listed).", body = Readiness),
    )
)]
async fn readyz(State(s): State<Arc<ApiState>>) -> Response {
    let loaded = s.ready.load(Ordering::Acquire);
    let shared = s.shared_ready.load(Ordering::Acquire);
    let alarms = alarms(&s.engine);
    let ready = loaded && shared && alarms.iter().all(|a| a.kind == AlarmKind::DeliveryPaused);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready,
        checks: ReadinessChecks {
            loaded,
            shared,
            outbox_depth: s.engine.pipeline().depth(),
            alarms,
        },
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics.
///
/// Prometheus metrics (text exposition format). Every series naming a stream is here,
/// so it needs a credential; `server.metrics_listen` serves it without one on an
/// internal address.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain; version=0.0.4"))
)]
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

/// List incidents.
///
/// Open incidents, and those resolved within the last hour, of the caller's tenant
/// (every tenant's for `admin`), the most recently updated first, a page at a time:
/// `limit` (default 500, at most 1000) from `offset`; `next_offset` is the next page's.
#[utoipa::path(
    get,
    path = "/v1/escalations",
    tag = "escalations",
    operation_id = "list_escalations",
    params(PageQuery),
    responses(
        (status = 200, description = "The incidents.", body = EscalationList),
        (status = 400, description = "A `limit` out of range. (A parameter that is not a number is refused by the router with a plain-text 400.)", body = ErrorBody),
    )
)]
async fn escalations(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(500);
    if !(1..=MAX_PAGE).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, "limit: 1 to 1000");
    }
    let page = s
        .engine
        .escalations_page(caller.tenant_filter(), q.offset.unwrap_or(0), limit);
    Json(EscalationList {
        escalations: page.items,
        total: page.total,
        next_offset: page.next_offset,
    })
    .into_response()
}

fn note(body: &Bytes) -> Result<String, Box<Response>> {
    if body.is_empty() {
        return Ok(String::new());
    }
    let request: NoteRequest = crate::http::json_body(body)?;
    Ok(request
        .note
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
        Ok(e) => Json::<Escalation>(e).into_response(),
        Err(e) => action_error(e),
    }
}

/// Acknowledge an incident.
///
/// Acknowledges an incident (idempotent: a second acknowledgement keeps the first).
/// Audit-logged; answered once the audit entry is on disk.
#[utoipa::path(
    post,
    path = "/v1/escalations/{id}/ack",
    tag = "escalations",
    operation_id = "acknowledge_escalation",
    params(("id" = String, Path, description = "The incident id.")),
    request_body(content = Option<NoteRequest>, description = "Optional; an empty body is no note."),
    responses(
        (status = 200, description = "The incident, acknowledged.", body = Escalation),
        (status = 400, description = "The body is not the JSON described.", body = ErrorBody),
        (status = 404, description = "No such incident for this tenant.", body = ErrorBody),
        (status = 409, description = "The incident is resolved already.", body = ErrorBody),
        (status = 500, description = "Its audit entry or state could not be written: nothing changed.", body = ErrorBody),
    )
)]
async fn ack(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    mark(&s, &id, false, &caller, &body).await
}

/// Resolve an incident.
///
/// Resolves an incident (final). Audit-logged; answered once the audit entry is on
/// disk.
#[utoipa::path(
    post,
    path = "/v1/escalations/{id}/resolve",
    tag = "escalations",
    operation_id = "resolve_escalation",
    params(("id" = String, Path, description = "The incident id.")),
    request_body(content = Option<NoteRequest>, description = "Optional; an empty body is no note."),
    responses(
        (status = 200, description = "The incident, resolved.", body = Escalation),
        (status = 400, description = "The body is not the JSON described.", body = ErrorBody),
        (status = 404, description = "No such incident for this tenant.", body = ErrorBody),
        (status = 409, description = "The incident is resolved already.", body = ErrorBody),
        (status = 500, description = "Its audit entry or state could not be written: nothing changed.", body = ErrorBody),
    )
)]
async fn resolve(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    mark(&s, &id, true, &caller, &body).await
}

/// The live feed of incidents and stream tiers (Server-Sent Events).
///
/// The live feed (Server-Sent Events) of the caller's tenant (every tenant's for
/// `admin`). Events: `escalation` (data: an `Escalation`, whenever one opens, changes,
/// is acknowledged or resolved), `stream` (data: a `StreamUpdate`, after each sampled
/// frame), `lagged` (data: how many events this slow client missed; re-fetch
/// `/v1/escalations`), `ping` (empty, every 15 s). A browser's `EventSource` cannot
/// set headers: the token may be given as `?access_token=`.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "escalations",
    operation_id = "events",
    responses((status = 200, description = "An event stream that stays open (until the daemon shuts down).", body = String, content_type = "text/event-stream"))
)]
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

/// A stream's risk timeline.
///
/// A stream's risk timeline: the tier and strongest signal after each sampled frame.
#[utoipa::path(
    get,
    path = "/v1/streams/{id}/timeline",
    tag = "streams",
    operation_id = "stream_timeline",
    params(("id" = String, Path, description = "The stream id.")),
    responses(
        (status = 200, description = "The timeline.", body = Timeline),
        (status = 404, description = "No such stream for this tenant.", body = ErrorBody),
    )
)]
async fn timeline(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let policy = s.engine.policy();
    match s.engine.timeline(&id, caller.tenant_filter()) {
        Some(points) => Json(Timeline {
            stream: id,
            tiers: std::iter::once("none".to_owned())
                .chain(policy.config().tiers.iter().cloned())
                .collect(),
            points,
        })
        .into_response(),
        None => error(StatusCode::NOT_FOUND, "no such stream"),
    }
}

/// An evidence thumbnail.
///
/// The small JPEG of the frame that raised or updated an escalation, as named by the
/// escalation's `thumbnail` field. Only the stream's tenant (and admins) get it; the
/// dashboard shows it blurred until clicked.
#[utoipa::path(
    get,
    path = "/v1/thumbnails/{id}",
    tag = "escalations",
    operation_id = "get_thumbnail",
    params(("id" = String, Path, description = "The decision id (32 hex digits).")),
    responses(
        (status = 200, description = "The JPEG.", body = Vec<u8>, content_type = "image/jpeg"),
        (status = 404, description = "No such thumbnail for this tenant (or none are kept).", body = ErrorBody),
    )
)]
async fn thumbnail(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let store = s.engine.evidence().map(|r| r.store().clone());
    thumbnail_answer(store, &caller, id).await
}

/// `GET /v1/thumbnails/{id}` on a worker or the coordinator: thumbnail `id` from
/// `store` (`None`: none are kept), if the caller's tenant has it (an admin: any).
pub async fn thumbnail_answer(
    store: Option<crate::evidence::EvidenceStore>,
    caller: &Caller,
    id: String,
) -> Response {
    let Some(store) = store else {
        return error(StatusCode::NOT_FOUND, "no such thumbnail");
    };
    let tenant = caller.tenant_filter().map(str::to_owned);
    match tokio::task::spawn_blocking(move || store.get(tenant.as_deref(), &id)).await {
        Ok(Ok(Some(jpeg))) => jpeg_response(jpeg),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such thumbnail"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reading an evidence thumbnail");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the thumbnail could not be read",
            )
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the thumbnail could not be read",
        ),
    }
}

/// A JPEG answer that no cache keeps (it may show violence).
pub fn jpeg_response(jpeg: Vec<u8>) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "image/jpeg"),
            (axum::http::header::CACHE_CONTROL, "private, no-store"),
        ],
        jpeg,
    )
        .into_response()
}

/// The policy in force.
///
/// The policy in force, as TOML, with its history. Every tenant runs under it.
#[utoipa::path(
    get,
    path = "/v1/policy",
    tag = "policy",
    operation_id = "get_policy",
    responses((status = 200, description = "The policy.", body = PolicyView))
)]
async fn policy(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Json<PolicyView> {
    let p = s.engine.policy();
    // Every tenant runs under the policy and sees its history; who changed it (an
    // administrator's identity) only administrators see.
    let history = s
        .engine
        .audit_entries(None)
        .into_iter()
        .filter(|e| e.action.starts_with("policy"))
        .map(|mut e| {
            if !caller.is_admin() {
                e.who = None;
            }
            e
        })
        .collect();
    Json(PolicyView {
        version: p.version().to_owned(),
        toml: toml::to_string(p.config()).unwrap_or_default(),
        audit: history,
    })
}

/// `?dry_run=ID` of a policy change: the dry-run it is applied on (recorded with the
/// version; the change must be the policy that dry-run replayed).
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DryRunParam {
    /// The id a `POST /v1/policy/dry-run` answered.
    pub dry_run: Option<String>,
}

/// Replace the policy.
///
/// Replaces the whole policy (streams adopt it at their next frame, keeping their
/// state). Audit-logged.
#[utoipa::path(
    put,
    path = "/v1/policy",
    tag = "policy",
    operation_id = "put_policy",
    params(DryRunParam),
    request_body(content = String, description = "A whole policy, TOML (as the policy file).", content_type = "application/toml"),
    responses(
        (status = 200, description = "In force.", body = PolicyVersion),
        (status = 400, description = "The body is not UTF-8.", body = ErrorBody),
        (status = 409, description = "`dry_run` names no recent dry-run, or one of another policy; or fleet mode (the coordinator changes the fleet's policy).", body = ErrorBody),
        (status = 422, description = "The policy has problems (nothing changed).", body = InvalidBody),
        (status = 500, description = "Its audit entry or state could not be written: nothing changed.", body = ErrorBody),
    )
)]
async fn put_policy(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Query(q): axum::extract::Query<DryRunParam>,
    body: Bytes,
) -> Response {
    if let Some(r) = fleet_policy_refusal(&s) {
        return r;
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the policy must be UTF-8 TOML");
    };
    match crate::config::policy_from_toml(text, "policy") {
        Ok(config) => {
            let engine = s.engine.clone();
            let (who, credential) = (caller.tenant.clone(), caller.credential.clone());
            let version = tokio::task::spawn_blocking(move || {
                engine.set_policy_after(
                    config,
                    &who,
                    &credential,
                    "policy.update",
                    "policy",
                    q.dry_run.as_deref(),
                )
            })
            .await
            .expect("policy task");
            match version {
                Ok(version) => Json(PolicyVersion { version }).into_response(),
                Err(e) => action_error(e),
            }
        }
        Err(issues) => issues_response(&issues),
    }
}

/// Change a rule's thresholds.
///
/// Changes some thresholds of one rule. Audit-logged.
#[utoipa::path(
    patch,
    path = "/v1/policy/rules/{name}",
    tag = "policy",
    operation_id = "patch_rule",
    params(("name" = String, Path, description = "The rule's name."), DryRunParam),
    request_body(content = RulePatch, description = "Any of the rule's thresholds."),
    responses(
        (status = 200, description = "In force.", body = PolicyVersion),
        (status = 400, description = "The body is not JSON.", body = ErrorBody),
        (status = 404, description = "No such rule.", body = ErrorBody),
        (status = 409, description = "`dry_run` names no recent dry-run, or one of another policy; or fleet mode (the coordinator changes the fleet's policy).", body = ErrorBody),
        (status = 422, description = "An unknown field, a non-number, or a resulting policy with problems (nothing changed).", body = InvalidBody),
        (status = 500, description = "Its audit entry or state could not be written: nothing changed.", body = ErrorBody),
    )
)]
async fn patch_rule(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<DryRunParam>,
    body: Bytes,
) -> Response {
    if let Some(r) = fleet_policy_refusal(&s) {
        return r;
    }
    let patch: serde_json::Value = match crate::http::json_body(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let engine = s.engine.clone();
    let r = tokio::task::spawn_blocking(move || {
        engine.patch_rule(
            &name,
            &patch,
            &caller.tenant,
            &caller.credential,
            q.dry_run.as_deref(),
        )
    })
    .await
    .expect("patch task");
    match r {
        Ok(version) => Json(PolicyVersion { version }).into_response(),
        Err(e) => action_error(e),
    }
}

/// The audit log.
///
/// The audit log: policy changes, reloads, acknowledgements, resolutions and denied
/// requests. The caller's own entries (every entry for `admin`).
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "policy",
    operation_id = "audit_log",
    responses((status = 200, description = "The entries.", body = AuditLogView))
)]
async fn audit(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Json<AuditLogView> {
    Json(AuditLogView {
        entries: s.engine.audit_entries(caller.tenant_filter()),
    })
}

/// Reload credentials, certificate, policy and banks.
///
/// Reloads the config file's credentials, the TLS certificate, the policy file and the
/// banks, as SIGHUP does, without touching the streams. Audit-logged.
#[utoipa::path(
    post,
    path = "/v1/reload",
    tag = "policy",
    operation_id = "reload",
    responses(
        (status = 200, description = "Reloaded.", body = ReloadResult),
        (status = 422, description = "A file has problems; everything in force stays.", body = InvalidBody),
    )
)]
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
