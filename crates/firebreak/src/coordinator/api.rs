//! The coordinator's HTTP API (same credentials, scopes and tenancy as the worker's):
//!
//! - `GET /v1/incidents?limit=&offset=`: incidents, newest first, a page at a time
//!   (`read`);
//! - `GET /v1/audit?limit=&offset=`: every responder action, applied or refused
//!   (`operator`), rebuilt from the incident log like everything else;
//! - `GET /v1/thumbnails/{id}`: an evidence thumbnail (`read`, its tenant only);
//! - `GET /v1/incidents/{id}`: one incident, its streams, evidence, history and what
//!   its confirmation published (`read`);
//! - `GET /v1/incidents/{id}/preview`: what confirming it would publish now, and what
//!   each guard dropped (`read`);
//! - `POST /v1/incidents/{id}/{action}` with `acknowledge`, `confirm`, `reject`,
//!   `retract` or `resolve`, body `{"note": "..."}` optional (`operator`): answered once
//!   the action is on the incident log and applied. A tenant's confirmation (and
//!   rejection) publishes entries scoped to that tenant's streams; an admin's is
//!   fleet-wide;
//! - `POST /v1/incidents/{id}/promote` (`admin`): a confirmation's entries made
//!   fleet-wide;
//! - `GET`/`PUT /v1/policy`, `PATCH /v1/policy/rules/{name}`, `POST
//!   /v1/policy/dry-run`: the fleet's policy ([`super::policy`]).
//!
//! A tenant sees an incident only if one of its streams is the tenant's, and then only
//! its own streams; an admin sees all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use firebreak_coordinator::confirm::{self, Preview};
use firebreak_coordinator::incidents::{
    Action, ActionError, BankEntry, Incident, State as IncState, Via,
};
use serde::Serialize;
use serde_json::json;

use super::Coordinator;
use super::hub::{ActionRecord, Published, event_name, parse_action};
use crate::engine::feeds::{BANK_SCHEMA, BankRecord, WireSignal};
use crate::http::auth::{Authenticator, Caller};
use crate::http::error;

/// How long an action waits to be read back from the log.
const APPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// The responders' dashboard: incidents, their evidence summarised, the actions in
/// view, a preview before a confirmation publishes.
const DASHBOARD_TEMPLATE: &str = include_str!("../../assets/coordinator.html");

/// The responders' dashboard (with the shared tuning panel).
pub fn dashboard() -> &'static str {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PAGE.get_or_init(|| crate::http::api::with_tune(DASHBOARD_TEMPLATE))
}

async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let csp = CSP.get_or_init(|| crate::http::csp_for(dashboard()));
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if let Ok(v) = axum::http::HeaderValue::from_str(csp) {
        h.insert(axum::http::header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        axum::http::header::X_FRAME_OPTIONS,
        axum::http::HeaderValue::from_static("DENY"),
    );
    h.insert(
        axum::http::header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The routes, behind the authentication layer.
pub fn router(coord: Arc<Coordinator>, auth: Arc<Authenticator>) -> Router {
    Router::new()
        .route("/", get(|| async { axum::response::Html(dashboard()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/incidents", get(list))
        .route("/v1/incidents/{id}", get(show))
        .route("/v1/incidents/{id}/preview", get(preview))
        .route("/v1/incidents/{id}/export", get(export))
        .route("/v1/incidents/{id}/{action}", post(act))
        .route("/v1/thumbnails/{id}", get(thumbnail))
        .route("/v1/audit", get(audit))
        .route(
            "/v1/policy",
            get(super::policy::show).put(super::policy::put),
        )
        .route("/v1/policy/dry-run", post(super::policy::dry_run))
        .route(
            "/v1/policy/rules/{name}",
            axum::routing::patch(super::policy::patch_rule),
        )
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::http::auth::layer,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(coord)
}

async fn readyz(State(c): State<Arc<Coordinator>>) -> Response {
    let ready = c.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready}))).into_response()
}

/// `GET /metrics` (`metrics` scope): what the coordinator read and holds.
async fn metrics(State(c): State<Arc<Coordinator>>) -> Response {
    let (counts, by_state) = {
        let hub = c.hub();
        let mut by_state = std::collections::BTreeMap::new();
        for i in hub.incidents().list() {
            *by_state.entry(i.state).or_insert(0i64) += 1;
        }
        (hub.counts(), by_state)
    };
    let text = c.metrics.render(
        &counts,
        &by_state,
        c.ready.load(std::sync::atomic::Ordering::Acquire),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

/// One stream of an incident.
#[derive(Debug, Serialize)]
struct StreamView {
    tenant: String,
    stream: String,
    via: Via,
    first_seen_ms: u64,
    tier: String,
    max_tier: String,
    worker: Option<String>,
    ended: bool,
    /// Frame hashes the coordinator holds for it.
    frames: usize,
    /// Evidence thumbnails of its escalations (references), oldest first.
    thumbnails: Vec<super::hub::Thumb>,
    /// Its risk timeline (while its frames are kept): `[media s, score]` pairs.
    timeline: Vec<(f64, f32)>,
}

/// The banked reference frame of a match: evidence of the confirmed incident that
/// published the entry.
#[derive(Debug, Serialize)]
struct ReferenceView {
    /// The bank key matched (`bank/id`).
    entry: String,
    /// The confirmed incident that published it.
    incident: String,
    /// Its evidence thumbnail.
    thumbnail: super::hub::Thumb,
}

/// An incident as the API shows it.
#[derive(Debug, Serialize)]
struct IncidentView {
    id: String,
    state: IncState,
    spread: bool,
    /// Whether its confirmation was promoted fleet-wide.
    promoted: bool,
    opened_ms: u64,
    updated_ms: u64,
    max_tier: String,
    activation: Option<String>,
    streams: Vec<StreamView>,
    entries: Vec<BankEntry>,
    rules: Vec<String>,
    history: Vec<serde_json::Value>,
    published: Option<Published>,
    /// Banked reference frames beside the evidence, when matches came from entries
    /// a confirmation published (only those the caller may see).
    references: Vec<ReferenceView>,
}

fn view(c: &Coordinator, inc: &Incident, caller: &Caller) -> IncidentView {
    let hub = c.hub();
    let mut references = Vec::new();
    for e in &inc.entries {
        let key = format!("{}/{}", e.bank, e.entry);
        let Some(owner) = hub.entry_owner(&key) else {
            continue;
        };
        if references
            .iter()
            .any(|r: &ReferenceView| r.incident == owner)
        {
            continue;
        }
        let may_see =
            |s: &firebreak_coordinator::StreamKey| caller.is_admin() || s.tenant == caller.tenant;
        if let Some((_, t)) = hub.confirmed_thumbs(owner).iter().find(|(s, _)| may_see(s)) {
            references.push(ReferenceView {
                entry: key,
                incident: owner.to_owned(),
                thumbnail: t.clone(),
            });
        }
    }
    IncidentView {
        id: inc.id.clone(),
        state: inc.state,
        spread: inc.spread,
        promoted: inc.promoted,
        opened_ms: inc.opened_ms,
        updated_ms: inc.updated_ms,
        max_tier: inc.max_tier.clone(),
        activation: inc.activation.clone(),
        streams: inc
            .streams
            .iter()
            .map(|(k, m)| StreamView {
                tenant: k.tenant.clone(),
                stream: k.stream.clone(),
                via: m.via.clone(),
                first_seen_ms: m.first_seen_ms,
                tier: m.tier.clone(),
                max_tier: m.max_tier.clone(),
                worker: m.worker.clone(),
                ended: m.ended,
                frames: hub.frames_of(k),
                timeline: hub
                    .timeline(k)
                    .into_iter()
                    .map(|p| (p.media_ms as f64 / 1000.0, p.score))
                    .collect(),
                thumbnails: hub
                    .thumbs_of(&inc.id)
                    .into_iter()
                    .filter(|(s, _)| s == k)
                    .map(|(_, t)| t)
                    .collect(),
            })
            .collect(),
        entries: inc.entries.iter().cloned().collect(),
        rules: inc.rules.iter().cloned().collect(),
        history: inc
            .history
            .iter()
            .map(|(at, who, what)| json!({"at_ms": at, "who": who, "what": what}))
            .collect(),
        published: hub.published(&inc.id).cloned(),
        references,
    }
}

/// The incident `id` as `caller` may see it.
fn visible(c: &Coordinator, caller: &Caller, id: &str) -> Option<Incident> {
    let hub = c.hub();
    let inc = hub.incidents().get(id)?;
    if caller.is_admin() {
        Some(inc.clone())
    } else {
        inc.visible_to(&caller.tenant)
    }
}

/// `?limit=&offset=` of a list (default 100 from 0; `limit` at most 1000).
#[derive(Debug, serde::Deserialize)]
struct PageQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

impl PageQuery {
    /// The refusal of a bad page, if it is one.
    fn refusal(&self) -> Option<Response> {
        (!(1..=1000).contains(&self.limit))
            .then(|| error(StatusCode::BAD_REQUEST, "limit: 1 to 1000"))
    }

    /// The page of `total` items starting at `offset`: (range, next offset).
    fn window(&self, total: usize) -> (std::ops::Range<usize>, Option<usize>) {
        let start = self.offset.min(total);
        let end = start.saturating_add(self.limit).min(total);
        (start..end, (end < total).then_some(end))
    }
}

/// `GET /v1/incidents?limit=&offset=`: newest first, one page, with `total` and
/// `next_offset`.
async fn list(
    State(c): State<Arc<Coordinator>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Query(page): axum::extract::Query<PageQuery>,
) -> Response {
    if let Some(r) = page.refusal() {
        return r;
    }
    let (incidents, total, next) = {
        let hub = c.hub();
        let visible: Vec<&Incident> = hub
            .incidents()
            .list()
            .into_iter()
            .filter(|i| caller.is_admin() || i.streams.keys().any(|s| s.tenant == caller.tenant))
            .collect();
        let (range, next) = page.window(visible.len());
        let shown: Vec<Incident> = visible[range]
            .iter()
            .filter_map(|i| {
                if caller.is_admin() {
                    Some((*i).clone())
                } else {
                    i.visible_to(&caller.tenant)
                }
            })
            .collect();
        (shown, visible.len(), next)
    };
    let views: Vec<IncidentView> = incidents.iter().map(|i| view(&c, i, &caller)).collect();
    Json(json!({ "incidents": views, "total": total, "next_offset": next })).into_response()
}

/// `GET /v1/audit?limit=&offset=` (`operator`): every responder action read from the
/// incident log (applied or refused), newest first. A tenant sees the actions on
/// incidents holding its streams; another tenant's actor shows as its tenant only.
async fn audit(
    State(c): State<Arc<Coordinator>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Query(page): axum::extract::Query<PageQuery>,
) -> Response {
    if let Some(r) = page.refusal() {
        return r;
    }
    let prefix = format!("{}/", caller.tenant);
    let hub = c.hub();
    let rows: Vec<&super::hub::AuditRow> = hub
        .audit()
        .filter(|r| caller.is_admin() || r.streams.iter().any(|s| s.starts_with(&prefix)))
        .collect();
    let (range, next) = page.window(rows.len());
    let shown: Vec<serde_json::Value> = rows[range]
        .iter()
        .map(|r| {
            let mut r = (*r).clone();
            if !caller.is_admin() {
                r.streams.retain(|s| s.starts_with(&prefix));
                if r.tenant != caller.tenant {
                    r.who = r.tenant.clone();
                }
            }
            serde_json::to_value(r).expect("serializable")
        })
        .collect();
    Json(json!({ "audit": shown, "total": rows.len(), "next_offset": next })).into_response()
}

async fn show(
    State(c): State<Arc<Coordinator>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match visible(&c, &caller, &id) {
        Some(inc) => Json(view(&c, &inc, &caller)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such incident"),
    }
}

/// A preview as the API shows it.
#[derive(Debug, Serialize)]
struct PreviewView {
    incident: String,
    /// Entries a confirmation would publish.
    count: usize,
    /// Frames each guard dropped.
    dropped: std::collections::BTreeMap<String, usize>,
    /// The entries (stream, media time, hash, quality).
    entries: Vec<serde_json::Value>,
    /// The vPDQ video entries: per stream, how many frames.
    videos: Vec<serde_json::Value>,
}

fn preview_view(id: &str, p: &Preview) -> PreviewView {
    PreviewView {
        incident: id.to_owned(),
        count: p.entries.len(),
        dropped: p
            .dropped
            .iter()
            .map(|(k, v)| {
                let name = serde_json::to_value(k)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{k:?}"));
                (name, *v)
            })
            .collect(),
        entries: p
            .entries
            .iter()
            .map(|e| {
                json!({
                    "tenant": e.stream.tenant,
                    "stream": e.stream.stream,
                    "media_ms": e.media_ms,
                    "hash": e.hash.to_hex(),
                    "quality": e.quality,
                })
            })
            .collect(),
        videos: p
            .videos
            .iter()
            .map(|v| {
                json!({
                    "tenant": v.stream.tenant,
                    "stream": v.stream.stream,
                    "frames": v.frames.len(),
                })
            })
            .collect(),
    }
}

/// The bank record of video entry `v`, scoped to `tenant`.
fn video_bank_record(
    v: &super::hub::VideoRecord,
    labels: Vec<String>,
    tenant: Option<String>,
    metadata: serde_json::Map<String, serde_json::Value>,
) -> Option<BankRecord> {
    let (bank, id) = v.key.split_once('/')?;
    Some(BankRecord {
        bank: bank.to_owned(),
        negative: false,
        id: id.to_owned(),
        signal: WireSignal::Vpdq {
            frames: v
                .frames
                .iter()
                .enumerate()
                .map(|(i, (ms, hash, quality))| crate::engine::feeds::WireFrame {
                    frame: i as u64,
                    ts: *ms as f64 / 1000.0,
                    hash: hash.clone(),
                    quality: *quality,
                })
                .collect(),
        },
        labels,
        tenant,
        metadata,
    })
}

async fn compute_preview(c: &Arc<Coordinator>, id: &str) -> Option<Preview> {
    let (c, id) = (c.clone(), id.to_owned());
    // Comparing every candidate with every other stream's recent frames is CPU work.
    tokio::task::spawn_blocking(move || c.hub().preview(&id))
        .await
        .ok()
        .flatten()
}

async fn preview(
    State(c): State<Arc<Coordinator>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if visible(&c, &caller, &id).is_none() {
        return error(StatusCode::NOT_FOUND, "no such incident");
    }
    match compute_preview(&c, &id).await {
        Some(p) => Json(preview_view(&id, &p)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such incident"),
    }
}

/// `?format=` of an export.
#[derive(Debug, serde::Deserialize)]
struct ExportQuery {
    format: String,
}

/// `GET /v1/incidents/{id}/export?format=F`: the hashes its confirmation published, as a
/// hash list in one of the formats the industry exchanges (`csv`, `te-json`
/// (ThreatExchange threat_updates), `tcap`, `local-file` (python-threatexchange)),
/// labelled with the incident and its activation type. `firebreak lists import` reads
/// them back.
async fn export(
    State(c): State<Arc<Coordinator>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ExportQuery>,
) -> Response {
    use firebreak_matching::lists::{self, ExportEntry, Format};
    let Some(inc) = visible(&c, &caller, &id) else {
        return error(StatusCode::NOT_FOUND, "no such incident");
    };
    let Some(format) = Format::ALL
        .iter()
        .find(|(_, name)| *name == q.format)
        .map(|(f, _)| *f)
    else {
        let names: Vec<&str> = Format::ALL.iter().map(|(_, n)| *n).collect();
        return error(
            StatusCode::BAD_REQUEST,
            &format!("format: one of {}", names.join(", ")),
        );
    };
    let Some(published) = c.hub().published(&id).cloned() else {
        return error(StatusCode::CONFLICT, "the incident has no confirmed hashes");
    };
    let labels: Vec<String> = inc.activation.iter().cloned().chain([id.clone()]).collect();
    let signals: Vec<(String, firebreak_matching::lists::Signal)> = published
        .entries
        .iter()
        .filter_map(|e| {
            let entry = e.key.rsplit_once('/').map_or(e.key.as_str(), |(_, id)| id);
            let hash = e.hash.parse().ok()?;
            Some((
                entry.to_owned(),
                firebreak_matching::lists::Signal::Pdq {
                    hash,
                    quality: None,
                },
            ))
        })
        .collect();
    let (text, _) = lists::export(
        format,
        signals.iter().map(|(id, signal)| ExportEntry {
            id,
            signal,
            labels: &labels,
        }),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /v1/thumbnails/{id}` (`read`): an evidence thumbnail, to its stream's tenant
/// and admins only.
async fn thumbnail(
    State(c): State<Arc<Coordinator>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    crate::http::api::thumbnail_answer(c.evidence.clone(), &caller, id).await
}

/// Writes `records` to the bank topic, all acknowledged or an error.
async fn put_all(
    c: &Arc<Coordinator>,
    records: &[BankRecord],
) -> Result<(), firebreak_delivery::compacted::KafkaError> {
    let puts = records.iter().map(|r| {
        let value = serde_json::to_vec(r).expect("serializable");
        let (c, key) = (c.clone(), r.key());
        async move { c.banks.put(&key, BANK_SCHEMA, &value).await }
    });
    futures_util::future::try_join_all(puts).await.map(|_| ())
}

fn conflict(state: IncState, action: &str) -> Response {
    error(
        StatusCode::CONFLICT,
        &format!("cannot {action} an incident that is {state:?}").to_lowercase(),
    )
}

async fn act(
    State(c): State<Arc<Coordinator>>,
    Extension(caller): Extension<Caller>,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(action) = parse_action(&name) else {
        return error(StatusCode::NOT_FOUND, "no such action");
    };
    let note = if body.is_empty() {
        None
    } else {
        match crate::http::json_body::<serde_json::Value>(&body) {
            Ok(v) => v["note"].as_str().map(|s| s.chars().take(2000).collect()),
            Err(r) => return *r,
        }
    };
    let Some(inc) = visible(&c, &caller, &id) else {
        return error(StatusCode::NOT_FOUND, "no such incident");
    };
    let record_id = {
        let hub = c.hub();
        match hub.allowed(&id, action) {
            Ok(_) => {}
            Err(ActionError::Conflict(s)) => return conflict(s, &name),
            Err(ActionError::NotFound) => return error(StatusCode::NOT_FOUND, "no such incident"),
        }
        hub.next_action_id(&id).expect("exists")
    };
    let mut record = ActionRecord {
        v: super::hub::ACTION_VERSION,
        id: record_id.clone(),
        incident: id.clone(),
        action: name.clone(),
        event: event_name(action).to_owned(),
        who: format!("{}:{}", caller.tenant, caller.credential),
        tenant: caller.tenant.clone(),
        at_ms: now_ms(),
        streams: inc.streams.keys().map(ToString::to_string).collect(),
        entries: Vec::new(),
        hashes: Vec::new(),
        videos: Vec::new(),
        note,
        // A tenant's responders act for their platform; a platform admin for all.
        scope: (!caller.is_admin()).then(|| caller.tenant.clone()),
    };
    // Every entry of an incident carries its activation type and the incident's id;
    // its metadata says which incident and who.
    let labels: Vec<String> = inc.activation.iter().cloned().chain([id.clone()]).collect();
    let who_key = if action == Action::Promote {
        "promoted_by"
    } else {
        "by"
    };
    let metadata = |extra: &[(&str, serde_json::Value)]| {
        let mut m = serde_json::Map::new();
        m.insert("incident".into(), json!(id));
        m.insert(who_key.into(), json!(record.who));
        for (k, v) in extra {
            m.insert((*k).into(), v.clone());
        }
        m
    };
    // Bank changes first: a record on the log always has its entries published.
    let bank_result = match action {
        Action::Confirm | Action::Reject => {
            let Some(p) = compute_preview(&c, &id).await else {
                return error(StatusCode::NOT_FOUND, "no such incident");
            };
            if p.entries.is_empty() && action == Action::Confirm {
                return (
                    StatusCode::CONFLICT,
                    Json(json!({
                        "error": "nothing to publish: the guards dropped every frame",
                        "preview": preview_view(&id, &p),
                    })),
                )
                    .into_response();
            }
            let (bank, negative) = if action == Action::Confirm {
                (c.crisis_bank.clone(), false)
            } else {
                (c.negative_bank.clone(), true)
            };
            let records: Vec<BankRecord> = p
                .entries
                .iter()
                .map(|e| BankRecord {
                    bank: bank.clone(),
                    negative,
                    id: confirm::entry_id(&id, &e.hash),
                    signal: WireSignal::Pdq {
                        hash: e.hash.to_hex(),
                        quality: Some(e.quality),
                    },
                    labels: labels.clone(),
                    tenant: record.scope.clone(),
                    metadata: metadata(&[
                        ("stream", json!(e.stream.to_string())),
                        ("media_ms", json!(e.media_ms)),
                    ]),
                })
                .collect();
            record.entries = records.iter().map(BankRecord::key).collect();
            record.hashes = p.entries.iter().map(|e| e.hash.to_hex()).collect();
            let mut records = records;
            if action == Action::Confirm {
                // A vPDQ video entry per stream, beside the frame entries.
                for (i, v) in p.videos.iter().enumerate() {
                    let video = super::hub::VideoRecord {
                        key: crate::engine::feeds::bank_key(
                            &bank,
                            &confirm::video_entry_id(&id, i),
                        ),
                        stream: v.stream.to_string(),
                        frames: v
                            .frames
                            .iter()
                            .map(|f| (f.media_ms, f.hash.to_hex(), f.quality))
                            .collect(),
                    };
                    let meta = metadata(&[("stream", json!(video.stream))]);
                    if let Some(r) =
                        video_bank_record(&video, labels.clone(), record.scope.clone(), meta)
                    {
                        records.push(r);
                        record.videos.push(video);
                    }
                }
            }
            put_all(&c, &records).await
        }
        Action::Retract => {
            let (keys, videos) = c
                .hub()
                .published(&id)
                .map(|p| {
                    let keys: Vec<String> = p.entries.iter().map(|e| e.key.clone()).collect();
                    (keys, p.videos.clone())
                })
                .unwrap_or_default();
            record.entries = keys.clone();
            let keys: Vec<String> = keys
                .into_iter()
                .chain(videos.iter().map(|v| v.key.clone()))
                .collect();
            record.videos = videos;
            let dels = keys.iter().map(|k| {
                let (c, k) = (c.clone(), k.clone());
                async move { c.banks.delete(&k, BANK_SCHEMA).await }
            });
            futures_util::future::try_join_all(dels).await.map(|_| ())
        }
        Action::Promote => {
            record.scope = None;
            let Some(published) = c.hub().published(&id).cloned() else {
                return error(
                    StatusCode::CONFLICT,
                    "the incident has no confirmed entries",
                );
            };
            // The same entries, without the tenant's scope (their quality was
            // applied when they were first published).
            let mut records: Vec<BankRecord> = published
                .entries
                .iter()
                .filter_map(|e| {
                    let (bank, entry) = e.key.split_once('/')?;
                    Some(BankRecord {
                        bank: bank.to_owned(),
                        negative: false,
                        id: entry.to_owned(),
                        signal: WireSignal::Pdq {
                            hash: e.hash.clone(),
                            quality: None,
                        },
                        labels: labels.clone(),
                        tenant: None,
                        metadata: metadata(&[]),
                    })
                })
                .collect();
            record.entries = records.iter().map(BankRecord::key).collect();
            record.hashes = published.entries.iter().map(|e| e.hash.clone()).collect();
            for v in &published.videos {
                let meta = metadata(&[("stream", json!(v.stream))]);
                if let Some(r) = video_bank_record(v, labels.clone(), None, meta) {
                    records.push(r);
                }
            }
            record.videos = published.videos.clone();
            put_all(&c, &records).await
        }
        Action::Acknowledge | Action::Resolve => Ok(()),
    };
    if let Err(e) = bank_result {
        tracing::error!(error = %e, incident = %id, "coordinator: publishing bank entries");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker did not acknowledge the bank entries; retry",
        );
    }
    let value = serde_json::to_vec(&record).expect("serializable");
    if let Err(e) = c.log.put(&id, super::ACTION_SCHEMA, &value).await {
        tracing::error!(error = %e, incident = %id, "coordinator: writing the incident log");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker did not acknowledge the action; retry",
        );
    }
    tracing::info!(incident = %id, action = %name, who = %record.who, entries = record.entries.len(), "coordinator: action");
    // Applied once read back from the log (on every coordinator alike).
    let started = Instant::now();
    while !c.hub().has_applied(&record_id) {
        if started.elapsed() > APPLY_TIMEOUT {
            return (
                StatusCode::ACCEPTED,
                Json(json!({"action": record, "applied": false})),
            )
                .into_response();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match visible(&c, &caller, &id) {
        Some(inc) => {
            let view = view(&c, &inc, &caller);
            Json(json!({"incident": view, "action": record})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such incident"),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
