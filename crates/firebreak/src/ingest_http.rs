//! The push-ingest HTTP hook: platforms PUT each segment of a stream, in order or not,
//! and Firebreak decodes them as one continuous stream.
//!
//! ```text
//! PUT  /v1/streams/{id}/segments/{seq}   body: segment bytes (MPEG-TS, or fMP4 with the
//!                                        init segment as segment 0)
//! POST /v1/streams/{id}/end              no more segments
//! GET  /v1/streams                       every stream with state and counters
//! GET  /v1/streams/{id}                  one stream
//! ```
//!
//! A stream is created by its first segment; sequence numbers start at 0. Duplicates
//! answer 200 with `"result": "duplicate"` (a retried PUT is harmless); segments ahead
//! of a missing one are held in a small reorder window; gaps are counted. When the
//! decoder is behind, a PUT waits (HTTP backpressure) rather than dropping accepted
//! bytes. Errors: 400 for an empty body, a bad id or a bad sequence number, 413 for a
//! body over the limit, 409 for a segment to a stream that has ended.
//!
//! The routes are a plain `Router` so that the operator-auth layer (credentials,
//! scopes) can wrap them without reshaping them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use firebreak_media::ingest::{
    FeedItem, Intake, LiveStream, SampledFrame, Sampling, SegmentFeed, Sequencer, Source,
    StreamConfig, segment_channel,
};
use serde_json::{Value, json};

/// Where sampled frames go (the detectors, in the daemon).
pub type FrameHandler = Arc<dyn Fn(SampledFrame) + Send + Sync>;

/// Push-ingest settings.
#[derive(Clone)]
pub struct IngestConfig {
    /// Largest accepted segment, bytes.
    pub max_segment_bytes: usize,
    /// Reorder window, in segments.
    pub reorder_window: u64,
    /// At most this many streams at once.
    pub max_streams: usize,
    /// Sampling for pushed streams.
    pub sampling: Sampling,
    /// Receives every sampled frame.
    pub on_frame: FrameHandler,
}

impl std::fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestConfig")
            .field("max_segment_bytes", &self.max_segment_bytes)
            .field("reorder_window", &self.reorder_window)
            .field("max_streams", &self.max_streams)
            .field("sampling", &self.sampling)
            .finish_non_exhaustive()
    }
}

struct Pushed {
    sequencer: Mutex<Sequencer<Vec<u8>>>,
    feed: Mutex<Option<SegmentFeed>>,
    stream: LiveStream,
}

/// The streams being pushed.
pub struct IngestState {
    config: IngestConfig,
    streams: Mutex<HashMap<String, Arc<Pushed>>>,
}

impl std::fmt::Debug for IngestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl IngestState {
    /// No streams yet.
    pub fn new(config: IngestConfig) -> Arc<IngestState> {
        Arc::new(IngestState {
            config,
            streams: Mutex::new(HashMap::new()),
        })
    }

    /// The stream `id`, created if new; `None` when the stream limit is reached.
    fn stream(&self, id: &str) -> Option<Arc<Pushed>> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = streams.get(id) {
            return Some(s.clone());
        }
        if streams.len() >= self.config.max_streams {
            return None;
        }
        let (feed, reader) = segment_channel(8);
        let mut config = StreamConfig::new(id);
        config.sampling = self.config.sampling;
        let stream = LiveStream::start(config, Source::Segments(reader));
        // Hand frames to the detectors from a thread of the stream's own.
        let frames = stream.frames().clone();
        let handler = self.config.on_frame.clone();
        std::thread::Builder::new()
            .name(format!("frames-{id}"))
            .spawn(move || {
                while !(frames.is_closed() && frames.is_empty()) {
                    if let Some(f) = frames.pop(Duration::from_millis(200)) {
                        handler(f);
                    }
                }
            })
            .expect("spawn frame consumer");
        let pushed = Arc::new(Pushed {
            sequencer: Mutex::new(Sequencer::new(self.config.reorder_window)),
            feed: Mutex::new(Some(feed)),
            stream,
        });
        streams.insert(id.to_owned(), pushed.clone());
        Some(pushed)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The ingest routes, with the body limit applied.
pub fn routes(state: Arc<IngestState>) -> Router {
    let limit = state.config.max_segment_bytes;
    Router::new()
        .route("/v1/streams", get(list))
        .route("/v1/streams/{id}", get(show))
        .route("/v1/streams/{id}/segments/{seq}", put(put_segment))
        .route("/v1/streams/{id}/end", post(end))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn stream_json(id: &str, p: &Pushed) -> Value {
    let st = p.stream.stats();
    let seq = p
        .sequencer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .stats();
    json!({
        "id": id,
        "state": st.state.name(),
        "frames": {"decoded": st.decoded, "sampled": st.sampled, "dropped": {"queue_full": st.dropped_queue_full}},
        "degraded": st.degraded,
        "decode_errors": st.decode_errors,
        "open_errors": st.open_errors,
        "discontinuities": st.discontinuities,
        "since_last_frame_ms": st.since_last_frame_ms,
        "lag_ms": st.lag_ms,
        "error": st.error,
        "segments": {
            "received": seq.received, "released": seq.released, "duplicates": seq.duplicates,
            "late": seq.late, "missing": seq.missing, "reordered": seq.reordered,
        },
    })
}

async fn list(State(state): State<Arc<IngestState>>) -> Json<Value> {
    let streams = state.streams.lock().unwrap_or_else(|e| e.into_inner());
    let mut ids: Vec<&String> = streams.keys().collect();
    ids.sort();
    Json(Value::Array(
        ids.into_iter()
            .map(|id| stream_json(id, &streams[id]))
            .collect(),
    ))
}

async fn show(State(state): State<Arc<IngestState>>, Path(id): Path<String>) -> Response {
    let streams = state.streams.lock().unwrap_or_else(|e| e.into_inner());
    match streams.get(&id) {
        Some(p) => Json(stream_json(&id, p)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such stream"),
    }
}

async fn put_segment(
    State(state): State<Arc<IngestState>>,
    Path((id, seq)): Path<(String, u64)>,
    body: Bytes,
) -> Response {
    if !valid_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            "stream id: 1-128 of A-Z a-z 0-9 - _ .",
        );
    }
    if body.is_empty() {
        return error(StatusCode::BAD_REQUEST, "empty segment");
    }
    let Some(pushed) = state.stream(&id) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many streams");
    };
    let Some(feed) = pushed
        .feed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    else {
        return error(StatusCode::CONFLICT, "the stream has ended");
    };
    let intake = pushed
        .sequencer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(seq, body.to_vec());
    let (result, released, gap) = match intake {
        Intake::Released {
            segments,
            gap_before,
        } => {
            let n = segments.len();
            // Wait (off the async runtime) while the decoder catches up.
            let sent = tokio::task::spawn_blocking(move || {
                segments
                    .into_iter()
                    .try_for_each(|(_, b)| feed.send_blocking(FeedItem::Bytes(b)))
            })
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                return error(StatusCode::CONFLICT, "the stream has stopped");
            }
            ("released", n, gap_before)
        }
        Intake::Held => ("held", 0, 0),
        Intake::Duplicate => ("duplicate", 0, 0),
        Intake::Late => ("late", 0, 0),
    };
    Json(json!({"stream": id, "sequence": seq, "result": result, "released": released, "gap_before": gap}))
        .into_response()
}

async fn end(State(state): State<Arc<IngestState>>, Path(id): Path<String>) -> Response {
    let pushed = {
        let streams = state.streams.lock().unwrap_or_else(|e| e.into_inner());
        match streams.get(&id) {
            Some(p) => p.clone(),
            None => return error(StatusCode::NOT_FOUND, "no such stream"),
        }
    };
    let Some(feed) = pushed.feed.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Json(json!({"stream": id, "result": "already ended"})).into_response();
    };
    let rest = pushed
        .sequencer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .finish();
    let n = rest.len();
    let _ = tokio::task::spawn_blocking(move || {
        for (_, b, _) in rest {
            if feed.send_blocking(FeedItem::Bytes(b)).is_err() {
                break;
            }
        }
        // Dropping the feed ends the byte stream: the decoder drains and ends.
    })
    .await;
    Json(json!({"stream": id, "result": "ended", "released": n})).into_response()
}
