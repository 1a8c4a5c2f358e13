//! Escalation events: a [`Decision`] as a CloudEvents 1.0 structured-mode JSON event.
//!
//! The `data` object is described by the JSON Schema in
//! `schemas/escalation-v1.schema.json` at the repository root; tests validate every
//! event they produce against it. The event id is the decision's deterministic id, so a
//! consumer can drop redeliveries.

use serde_json::{Value, json};

use crate::policy::Decision;

/// The CloudEvents `type` of escalation events.
pub const EVENT_TYPE: &str = "org.firebreak.escalation.v1";

/// Who produced an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    /// This worker's id.
    pub worker_id: String,
    /// The tenant / platform the stream belongs to.
    pub tenant: String,
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC (`2026-11-28T15:01:46.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (proleptic Gregorian), by 400-year eras.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

/// The CloudEvent for a decision.
pub fn cloud_event(decision: &Decision, producer: &Producer) -> Value {
    json!({
        "specversion": "1.0",
        "id": decision.id,
        "source": format!("urn:firebreak:worker:{}", producer.worker_id),
        "type": EVENT_TYPE,
        "time": rfc3339(decision.wall_ms),
        "subject": decision.stream_id,
        "datacontenttype": "application/json",
        "data": {
            "stream_id": decision.stream_id,
            "tenant": producer.tenant,
            "incident_id": decision.incident_id,
            "sequence": decision.sequence,
            "kind": decision.kind,
            "tier": decision.tier,
            "previous_tier": decision.previous_tier,
            "activation": decision.activation,
            "media_time": {"start": decision.media_start, "end": decision.media_end},
            "wall_time": rfc3339(decision.wall_ms),
            "rules": decision.rules,
            "evidence": decision.evidence,
            "policy_version": decision.policy_version,
            "worker_id": producer.worker_id,
            "thumbnail": Value::Null,
        }
    })
}

/// Realistic escalation events for demos, load tests and delivery tests: for each of
/// `streams` streams, alternately a crisis-bank escalation and the stream's end, until
/// each has `per_stream` events; interleaved across streams in decision order, as
/// (key = stream id, CloudEvent JSON). Deterministic.
pub fn sample_events(
    streams: usize,
    per_stream: usize,
    producer: &Producer,
) -> Vec<(String, Vec<u8>)> {
    use crate::policy::{FrameSignals, HashMatch, Policy, StreamEvent, StreamState};
    let policy = Policy::new(crate::PolicyConfig::builtin());
    let mut states: Vec<StreamState> = (0..streams)
        .map(|s| StreamState::new(format!("stream-{s}"), &policy))
        .collect();
    let mut out = Vec::with_capacity(streams * per_stream);
    let mut wall = 1_795_878_106_000u64;
    let mut counts = vec![0usize; streams];
    while counts.iter().any(|&c| c < per_stream) {
        for (s, state) in states.iter_mut().enumerate() {
            if counts[s] >= per_stream {
                continue;
            }
            wall += 1000;
            let decisions = if counts[s].is_multiple_of(2) {
                let frame = FrameSignals {
                    media_time: (counts[s] * 10) as f64,
                    wall_ms: wall,
                    hash_matches: vec![HashMatch {
                        bank: "crisis".into(),
                        entry_id: format!("e{}", counts[s]),
                        distance: 3,
                        quality: 100,
                        view: None,
                    }],
                    ..Default::default()
                };
                state.on_frame(&policy, &frame)
            } else {
                state.on_event(&policy, StreamEvent::Ended, wall)
            };
            for d in decisions {
                let event = serde_json::to_vec(&cloud_event(&d, producer)).expect("JSON");
                out.push((d.stream_id.clone(), event));
                counts[s] += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        // 2019-03-15T01:40:00Z, the Christchurch stream's start (UTC).
        assert_eq!(rfc3339(1_552_614_000_000), "2019-03-15T01:40:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_878_106_000), "2026-11-28T15:01:46.000Z");
    }
}
