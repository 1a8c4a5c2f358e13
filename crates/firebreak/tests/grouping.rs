//! Incident grouping on a simulated hour of a platform's live streams: what the
//! coordinator's state (`coordinator::hub::Hub`, the fold of the workers' topics) makes
//! of real frame hashes. The frames are real: clips encoded by the ffmpeg CLI, decoded
//! and PDQ-hashed at 2 frames/s; only their timing is simulated (every stream plays its
//! clip, looped, from its start time), so an hour runs in seconds.
//!
//! The hour (every stream opens with the platform's 3 s bumper, ffmpeg's `testsrc`):
//! - 6 streams rebroadcast the same programme (a popular broadcast), started 40 s apart;
//! - 3 more streams rebroadcast another (fewer than `spread_min_streams`);
//! - 10 unrelated streams, one every 2 minutes, 15 minutes each;
//! - a burst of 6 unrelated streams starting within 25 s (a scheduled event);
//! - 2 streams of the same unknown crisis content, escalated by their workers' policy,
//!   with a benign stream started between them (sharing only the bumper).
//!
//! The ground truth is the construction: an incident is true when it holds a crisis
//! stream, false otherwise. By design, the same content live on `spread_min_streams` or
//! more streams opens an incident of its own (the first 6-stream rebroadcast: one false
//! incident an hour per such group, which a responder rejects once); nothing else
//! should: not the 3-stream rebroadcast, not unrelated streams that only share the
//! bumper, and no benign stream joins the crisis incident.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use firebreak::config::Coordinator as CoordinatorConfig;
use firebreak::coordinator::hub::Hub;
use firebreak::signals::record::{FrameRecord, SignalRecord, encode_block};
use firebreak_coordinator::StreamKey;
use firebreak_hashing::Hash256;
use firebreak_media::vpdq::{VpdqOptions, hash_file};
use firebreak_policy::policy::FrameSignals;
use serde_json::json;

const T0: u64 = 1_795_878_000_000;
const FPS_MS: u64 = 500;
const HOUR_S: u64 = 3600;

type Frames = Vec<(Hash256, u8)>;

/// `seconds` of lavfi `graph` at 320x180, hashed at 2 frames/s.
fn clip(dir: &Path, name: &str, graph: &str, seconds: u32) -> Frames {
    let out = dir.join(format!("{name}.ts"));
    firebreak_testkit::media::encode(graph, seconds, 20, &out);
    let (features, _) = hash_file(
        &out,
        &VpdqOptions {
            seconds_per_hash: 0.5,
            ..VpdqOptions::default()
        },
    )
    .unwrap();
    assert!(
        features.len() as u32 >= seconds * 2 - 1,
        "{name}: {}",
        features.len()
    );
    features
        .into_iter()
        .map(|f| (f.pdq.hash, f.pdq.quality))
        .collect()
}

fn life(seed: u32) -> String {
    format!(
        "life=s=320x180:r=10:seed={seed}:ratio=0.2:mold=10:life_color=#3050FF:death_color=#102040:mold_color=#204080"
    )
}

/// One simulated stream.
struct Stream {
    id: String,
    start_s: u64,
    end_s: u64,
    /// The bumper, then the programme looped.
    programme: usize,
    crisis: bool,
}

fn escalation(id: &str, at_ms: u64, media_s: f64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": format!("esc-{id}"),
        "source": "urn:firebreak:worker:w1",
        "type": "org.firebreak.escalation.v1",
        "time": firebreak_policy::event::rfc3339(at_ms),
        "subject": id,
        "data": {
            "stream_id": id, "tenant": "platform", "incident_id": format!("{id:0>24}"),
            "sequence": 0, "kind": "escalated", "tier": "review", "previous_tier": "none",
            "activation": null, "media_time": {"start": media_s, "end": media_s},
            "wall_time": firebreak_policy::event::rfc3339(at_ms),
            "rules": ["graphic-violence-persistent"], "evidence": [],
            "policy_version": "v1", "worker_id": "w1", "thumbnail": null
        }
    }))
    .unwrap()
}

/// Runs the hour through a hub; returns it.
fn run_hour(
    streams: &[Stream],
    bumper: &Frames,
    programmes: &[Frames],
    cfg: CoordinatorConfig,
) -> Hub {
    let mut hub = Hub::new(cfg, vec!["watch".into(), "review".into(), "crisis".into()]);
    let mut escalated = BTreeSet::new();
    for tick in 0..(HOUR_S * 1000 / FPS_MS) {
        let wall = T0 + tick * FPS_MS;
        let t_ms = tick * FPS_MS;
        let mut block = Vec::new();
        for s in streams {
            if t_ms < s.start_s * 1000 || t_ms >= s.end_s * 1000 {
                continue;
            }
            let n = ((t_ms - s.start_s * 1000) / FPS_MS) as usize;
            let p = &programmes[s.programme];
            let (hash, quality) = if n < bumper.len() {
                bumper[n]
            } else {
                p[(n - bumper.len()) % p.len()]
            };
            block.push(SignalRecord::Frame(FrameRecord {
                stream: s.id.clone(),
                tenant: "platform".into(),
                pdq: Some((hash.to_bytes(), quality)),
                signals: FrameSignals {
                    media_time: n as f64 * FPS_MS as f64 / 1000.0,
                    wall_ms: wall,
                    ..FrameSignals::default()
                },
            }));
            // The crisis streams' workers escalate them 20 s in (their classifier).
            if s.crisis && n as u64 * FPS_MS >= 20_000 && escalated.insert(s.id.clone()) {
                hub.on_escalation(&escalation(&s.id, wall, 20.0));
            }
        }
        if t_ms.is_multiple_of(1000) {
            block.push(SignalRecord::Tick { wall_ms: wall });
        }
        hub.on_signals(&encode_block(&block));
    }
    hub
}

fn scenario(dir: &Path) -> (Vec<Stream>, Frames, Vec<Frames>) {
    let bumper = clip(dir, "bumper", "testsrc=s=320x180:r=10", 3);
    // Programme 0: the popular broadcast; 1: the smaller one; 2: the crisis content
    // (testsrc2, tinted red); 3..: unrelated streams' own content.
    let mut programmes = vec![
        clip(dir, "broadcast", &life(1000), 60),
        clip(dir, "small", &life(2000), 60),
        clip(
            dir,
            "crisis",
            "testsrc2=s=320x180:r=10,lutrgb=r=150+val*0.4:g=40+val*0.3:b=10+val*0.2",
            60,
        ),
    ];
    let mut streams = Vec::new();
    for k in 0..6 {
        streams.push(Stream {
            id: format!("rebroadcast-{k}"),
            start_s: 60 + k * 40,
            end_s: HOUR_S,
            programme: 0,
            crisis: false,
        });
    }
    for k in 0..3 {
        streams.push(Stream {
            id: format!("small-{k}"),
            start_s: 300 + k * 30,
            end_s: HOUR_S,
            programme: 1,
            crisis: false,
        });
    }
    let mut next = 3;
    for k in 0..10u64 {
        programmes.push(clip(dir, &format!("u{k}"), &life(3000 + k as u32), 60));
        streams.push(Stream {
            id: format!("unrelated-{k}"),
            start_s: 600 + k * 120,
            end_s: 600 + k * 120 + 900,
            programme: next,
            crisis: false,
        });
        next += 1;
    }
    for k in 0..6u64 {
        programmes.push(clip(dir, &format!("b{k}"), &life(4000 + k as u32), 60));
        streams.push(Stream {
            id: format!("burst-{k}"),
            start_s: 1800 + k * 5,
            end_s: 2400,
            programme: next,
            crisis: false,
        });
        next += 1;
    }
    for (k, start) in [2400u64, 2410].into_iter().enumerate() {
        streams.push(Stream {
            id: format!("crisis-{k}"),
            start_s: start,
            end_s: HOUR_S,
            programme: 2,
            crisis: true,
        });
    }
    programmes.push(clip(dir, "beside", &life(5000), 60));
    streams.push(Stream {
        id: "beside-crisis".into(),
        start_s: 2405,
        end_s: HOUR_S,
        programme: next,
        crisis: false,
    });
    (streams, bumper, programmes)
}

/// (true incidents, false incidents, benign streams grouped with crisis streams), with
/// each incident's streams.
fn judge(hub: &Hub, streams: &[Stream]) -> (usize, Vec<BTreeSet<String>>, BTreeSet<String>) {
    let crisis: BTreeSet<String> = streams
        .iter()
        .filter(|s| s.crisis)
        .map(|s| s.id.clone())
        .collect();
    let mut truly = 0;
    let mut false_incidents = Vec::new();
    let mut grouped_benign = BTreeSet::new();
    for inc in hub.incidents().list() {
        let members: BTreeSet<String> = inc.streams.keys().map(|k| k.stream.clone()).collect();
        if members.iter().any(|m| crisis.contains(m)) {
            truly += 1;
            grouped_benign.extend(members.into_iter().filter(|m| !crisis.contains(m)));
        } else {
            false_incidents.push(members);
        }
    }
    (truly, false_incidents, grouped_benign)
}

#[test]
fn an_hour_of_streams_groups_only_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let (streams, bumper, programmes) = scenario(dir.path());
    let hub = run_hour(&streams, &bumper, &programmes, CoordinatorConfig::default());
    let (truly, false_incidents, grouped_benign) = judge(&hub, &streams);
    let by_group: BTreeMap<usize, usize> =
        false_incidents
            .iter()
            .fold(BTreeMap::new(), |mut m, members| {
                *m.entry(members.len()).or_default() += 1;
                m
            });
    eprintln!(
        "MEASURE grouping over 1 simulated hour, {} streams: true incidents {truly}, \
         false incidents {} (per hour; by size {by_group:?}): {false_incidents:?}; \
         benign streams grouped with the crisis: {grouped_benign:?}",
        streams.len(),
        false_incidents.len()
    );
    // The crisis: one incident with both crisis streams, and nothing else in it.
    assert_eq!(truly, 1);
    let crisis_incident = hub
        .incidents()
        .of_stream(&StreamKey::new("platform", "crisis-0"))
        .unwrap();
    assert!(
        crisis_incident
            .streams
            .contains_key(&StreamKey::new("platform", "crisis-1"))
    );
    assert!(grouped_benign.is_empty(), "{grouped_benign:?}");
    // The 6-stream rebroadcast is the one false incident, by design (the same content
    // on spread_min_streams or more streams); the bumper alone links nothing.
    let rebroadcast: BTreeSet<String> = (0..6).map(|k| format!("rebroadcast-{k}")).collect();
    assert_eq!(false_incidents, vec![rebroadcast]);
}
