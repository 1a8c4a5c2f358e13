//! The escalation policy: table-driven cases, properties over random inputs (time passed
//! in), configuration errors, and every event checked against the JSON Schema.

use firebreak_policy::config::PolicyConfig;
use firebreak_policy::event::{Producer, cloud_event};
use firebreak_policy::policy::{ClassifierScore, HashMatch, VideoMatch};
use firebreak_policy::{
    Decision, DecisionKind, FrameSignals, Policy, PolicyError, StreamEvent, StreamState,
};
use proptest::prelude::*;

fn policy() -> Policy {
    Policy::new(PolicyConfig::builtin())
}

fn hash(bank: &str, entry: &str, distance: u32) -> HashMatch {
    HashMatch {
        bank: bank.into(),
        entry_id: entry.into(),
        distance,
        quality: 100,
        view: None,
    }
}

fn score(category: &str, s: f64) -> ClassifierScore {
    ClassifierScore {
        category: category.into(),
        score: s,
        model: "m".into(),
        model_version: "1".into(),
    }
}

/// Frame `i` at 2 frames per second; wall time starts at a fixed instant.
fn frame(i: u64) -> FrameSignals {
    FrameSignals {
        media_time: i as f64 * 0.5,
        wall_ms: 1_795_878_106_000 + i * 500,
        ..Default::default()
    }
}

fn schema() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/escalation-v1.schema.json"
    );
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// Every decision as an event must match the schema and the CloudEvents envelope.
fn check_events(decisions: &[Decision]) {
    let validator = schema();
    let producer = Producer {
        worker_id: "w1".into(),
        tenant: "platform-a".into(),
    };
    for d in decisions {
        let event = cloud_event(d, &producer);
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["id"], d.id.as_str());
        assert_eq!(event["subject"], d.stream_id.as_str());
        assert_eq!(event["type"], "org.firebreak.escalation.v1");
        let errors: Vec<String> = validator
            .iter_errors(&event["data"])
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}\n{event:#}");
    }
}

/// Runs frames (each built by `f(i)`), returning all decisions.
fn run(frames: u64, f: impl Fn(u64, &mut FrameSignals)) -> Vec<Decision> {
    let p = policy();
    let mut s = StreamState::new("stream-1", &p);
    let mut out = Vec::new();
    for i in 0..frames {
        let mut fr = frame(i);
        f(i, &mut fr);
        out.extend(s.on_frame(&p, &fr));
    }
    out
}

fn kinds(ds: &[Decision]) -> Vec<(DecisionKind, String)> {
    ds.iter().map(|d| (d.kind, d.tier.clone())).collect()
}

#[test]
fn crisis_bank_escalates_on_the_first_frame() {
    let ds = run(3, |i, f| {
        if i == 0 {
            f.hash_matches.push(hash("crisis", "cc-1", 12));
        }
    });
    assert_eq!(kinds(&ds), vec![(DecisionKind::Escalated, "crisis".into())]);
    let d = &ds[0];
    assert_eq!(d.previous_tier, "none");
    assert_eq!(d.activation.as_deref(), Some("content_incident"));
    assert!(d.rules.contains(&"crisis-bank-match".to_string()));
    assert!(d.policy_version.starts_with("default-1+"));
    assert_eq!(
        d.evidence.len(),
        2,
        "both matching rules cite the match: {:?}",
        d.evidence
    );
    check_events(&ds);
}

type Case = (
    &'static str,
    u64,
    fn(u64, &mut FrameSignals),
    Vec<(DecisionKind, &'static str)>,
);

fn video(percent: f64) -> VideoMatch {
    VideoMatch {
        bank: "crisis".into(),
        entry_id: "v".into(),
        percent,
    }
}

#[test]
fn table_of_cases() {
    let cases: Vec<Case> = vec![
        ("nothing happens", 40, |_, _| {}, vec![]),
        (
            "other bank: escalate",
            4,
            |i, f| {
                if i == 1 {
                    f.hash_matches.push(hash("other", "x", 5))
                }
            },
            vec![(DecisionKind::Escalated, "escalate")],
        ),
        (
            "match beyond the rule distance",
            4,
            |_, f| f.hash_matches.push(hash("other", "x", 40)),
            vec![],
        ),
        (
            "violence twice is not persistence",
            20,
            |i, f| {
                if i < 2 {
                    f.scores.push(score("graphic_violence", 0.95))
                }
            },
            vec![],
        ),
        (
            "violence persists: review",
            6,
            |_, f| f.scores.push(score("graphic_violence", 0.9)),
            vec![(DecisionKind::Escalated, "review")],
        ),
        (
            "violence then crisis bank: raised",
            8,
            |i, f| {
                f.scores.push(score("graphic_violence", 0.9));
                if i == 5 {
                    f.hash_matches.push(hash("crisis", "c", 0))
                }
            },
            vec![
                (DecisionKind::Escalated, "review"),
                (DecisionKind::Escalated, "crisis"),
            ],
        ),
        (
            "video window at 60%",
            3,
            |_, f| f.video_matches.push(video(60.0)),
            vec![(DecisionKind::Escalated, "crisis")],
        ),
        (
            "video window at 40%",
            3,
            |_, f| f.video_matches.push(video(40.0)),
            vec![],
        ),
        (
            "new entry after the update interval: one update",
            130,
            |i, f| {
                if i == 0 {
                    f.hash_matches.push(hash("crisis", "a", 0))
                }
                // Entry b appears 20 s in and again at 35 s: one update, at 35 s.
                if i == 40 || i == 70 {
                    f.hash_matches.push(hash("crisis", "b", 3))
                }
                // Entry a again: nothing new.
                if i == 100 {
                    f.hash_matches.push(hash("crisis", "a", 0))
                }
            },
            vec![
                (DecisionKind::Escalated, "crisis"),
                (DecisionKind::Updated, "crisis"),
            ],
        ),
    ];
    for (name, frames, f, want) in cases {
        let ds = run(frames, f);
        let want: Vec<(DecisionKind, String)> =
            want.into_iter().map(|(k, t)| (k, t.to_owned())).collect();
        assert_eq!(kinds(&ds), want, "case {name:?}");
        check_events(&ds);
    }
}

#[test]
fn cools_down_after_hold_and_cooldown_then_closes() {
    let p = policy();
    let mut s = StreamState::new("s", &p);
    let mut f = frame(0);
    f.hash_matches.push(hash("other", "x", 1));
    let start = f.wall_ms;
    let mut ds = s.on_frame(&p, &f);
    // Hold is 30 s and cooldown 60 s: nothing until 60 s have passed.
    ds.extend(s.tick(&p, start + 31_000));
    assert_eq!(ds.len(), 1);
    ds.extend(s.tick(&p, start + 59_999));
    assert_eq!(ds.len(), 1);
    ds.extend(s.tick(&p, start + 60_000));
    assert_eq!(
        kinds(&ds),
        vec![
            (DecisionKind::Escalated, "escalate".into()),
            (DecisionKind::Deescalated, "none".into())
        ]
    );
    assert_eq!(ds[1].incident_id, ds[0].incident_id);
    assert_eq!(ds[1].sequence, 1);
    // A later match opens a new incident.
    let mut f = frame(200);
    f.wall_ms = start + 100_000;
    f.hash_matches.push(hash("other", "x", 1));
    let again = s.on_frame(&p, &f);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].incident_id, ds[0].incident_id);
    assert_eq!(again[0].sequence, 0);
    ds.extend(again);
    check_events(&ds);
}

#[test]
fn stream_end_closes_the_incident() {
    let p = policy();
    let mut s = StreamState::new("s", &p);
    let mut f = frame(0);
    f.hash_matches.push(hash("crisis", "x", 1));
    let mut ds = s.on_frame(&p, &f);
    ds.extend(s.on_event(&p, StreamEvent::Stalled, f.wall_ms + 1000));
    ds.extend(s.on_event(&p, StreamEvent::Ended, f.wall_ms + 2000));
    assert_eq!(
        kinds(&ds),
        vec![
            (DecisionKind::Escalated, "crisis".into()),
            (DecisionKind::Ended, "none".into())
        ]
    );
    assert_eq!(ds[1].previous_tier, "crisis");
    assert!(
        s.on_event(&p, StreamEvent::Ended, f.wall_ms + 3000)
            .is_empty()
    );
    check_events(&ds);
}

#[test]
fn config_errors_are_all_reported_with_paths() {
    let bad = r#"
version = ""
tiers = ["low", "low"]
[[activation]]
name = "x"
min_tier = "nope"
[[rule]]
name = "r"
kind = "classifier"
tier = "high"
enter = 0.5
exit = 0.7
k = 4
n = 3
"#;
    let Err(PolicyError::Invalid(issues)) = PolicyConfig::from_toml(bad) else {
        panic!("must be invalid")
    };
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "version",
            "tiers[1]",
            "activation[0].min_tier",
            "rule[0].tier",
            "rule[0].exit",
            "rule[0].k",
            "rule[0].category"
        ]
    );
    let unknown = "version = \"1\"\ntiers = [\"a\"]\nthreshold = 3\n[[rule]]\nname = \"r\"\nkind = \"hash_match\"\ntier = \"a\"\n";
    let Err(PolicyError::Toml(msg)) = PolicyConfig::from_toml(unknown) else {
        panic!("unknown field must fail")
    };
    assert!(msg.contains("threshold"), "{msg}");
    let bad_kind = "version = \"1\"\ntiers = [\"a\"]\n[[rule]]\nname = \"r\"\nkind = \"telepathy\"\ntier = \"a\"\n";
    assert!(matches!(
        PolicyConfig::from_toml(bad_kind),
        Err(PolicyError::Toml(_))
    ));
}

#[test]
fn changed_thresholds_change_the_version_and_keep_the_stream() {
    let old = policy();
    let mut config = PolicyConfig::builtin();
    config.rules[3].enter = 0.7;
    let new = Policy::new(config);
    assert_ne!(old.version(), new.version());
    let mut s = StreamState::new("s", &old);
    let mut f = frame(0);
    f.hash_matches.push(hash("crisis", "x", 1));
    assert_eq!(s.on_frame(&old, &f).len(), 1);
    s.adopt(&old, &new);
    assert_eq!(s.tier(&new), "crisis");
    let mut f = frame(1);
    f.hash_matches.push(hash("crisis", "y", 1));
    f.wall_ms += 40_000;
    let ds = s.on_frame(&new, &f);
    assert_eq!(kinds(&ds), vec![(DecisionKind::Updated, "crisis".into())]);
    assert_eq!(ds[0].policy_version, new.version());
}

/// One random input: a frame with some signals, or a tick after a gap.
#[derive(Debug, Clone)]
enum Input {
    Frame {
        gap_ms: u64,
        bank: Option<u8>,
        violence: f64,
        weapon: f64,
        video: Option<f64>,
    },
    Tick {
        gap_ms: u64,
    },
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => (
            100u64..3000,
            proptest::option::weighted(0.1, 0u8..3),
            0.0f64..1.0,
            0.0f64..1.0,
            proptest::option::weighted(0.1, 0.0f64..100.0)
        )
            .prop_map(|(gap_ms, bank, violence, weapon, video)| Input::Frame {
                gap_ms,
                bank,
                violence,
                weapon,
                video
            }),
        1 => (1000u64..90_000).prop_map(|gap_ms| Input::Tick { gap_ms }),
    ]
}

fn replay(inputs: &[Input], max_score: f64) -> Vec<Decision> {
    let p = policy();
    let mut s = StreamState::new("prop", &p);
    let mut wall = 1_795_878_106_000u64;
    let mut media = 0.0;
    let mut out = Vec::new();
    for i in inputs {
        match i {
            Input::Frame {
                gap_ms,
                bank,
                violence,
                weapon,
                video: v,
            } => {
                wall += gap_ms;
                media += *gap_ms as f64 / 1000.0;
                let mut f = FrameSignals {
                    media_time: media,
                    wall_ms: wall,
                    ..Default::default()
                };
                if let Some(b) = bank {
                    f.hash_matches
                        .push(hash(["crisis", "other", "third"][*b as usize], "e", 10));
                }
                f.scores
                    .push(score("graphic_violence", violence * max_score));
                f.scores.push(score("weapon", weapon * max_score));
                if let Some(v) = v {
                    f.video_matches.push(video(*v));
                }
                out.extend(s.on_frame(&p, &f));
            }
            Input::Tick { gap_ms } => {
                wall += gap_ms;
                out.extend(s.tick(&p, wall));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Classifier scores that never reach a rule's enter level never escalate.
    #[test]
    fn below_enter_never_escalates(inputs in proptest::collection::vec(input(), 0..200)) {
        let quiet: Vec<Input> = inputs
            .into_iter()
            .map(|i| match i {
                Input::Frame { gap_ms, violence, weapon, .. } => {
                    Input::Frame { gap_ms, bank: None, violence, weapon, video: None }
                }
                t => t,
            })
            .collect();
        // Scores scaled into [0, 0.79]: below graphic violence's 0.8 and weapon's 0.9.
        prop_assert!(replay(&quiet, 0.79).is_empty());
    }

    /// The tier never drops sooner than the cooldown after the previous change; the
    /// same inputs give the same decisions; ids are unique; sequences count up per
    /// incident; every event matches the schema.
    #[test]
    fn no_flapping_and_deterministic(inputs in proptest::collection::vec(input(), 0..150)) {
        let a = replay(&inputs, 1.0);
        let b = replay(&inputs, 1.0);
        prop_assert_eq!(&a, &b);
        let cooldown_ms = (PolicyConfig::builtin().cooldown_secs * 1000.0) as u64;
        let mut last_change: Option<u64> = None;
        let mut ids = std::collections::HashSet::new();
        let mut expected_seq = std::collections::HashMap::new();
        for d in &a {
            prop_assert!(ids.insert(d.id.clone()), "duplicate id");
            let seq = expected_seq.entry(d.incident_id.clone()).or_insert(0u64);
            prop_assert_eq!(d.sequence, *seq);
            *seq += 1;
            match d.kind {
                DecisionKind::Deescalated => {
                    let prev = last_change.expect("a drop follows a change");
                    prop_assert!(
                        d.wall_ms - prev >= cooldown_ms,
                        "dropped {} ms after the last change",
                        d.wall_ms - prev
                    );
                    last_change = Some(d.wall_ms);
                }
                DecisionKind::Escalated => last_change = Some(d.wall_ms),
                _ => {}
            }
        }
        check_events(&a);
    }
}

/// Fleet mode moves a stream's state between workers as JSON: the restored state goes
/// on with the same incident (no second `escalated`), where a fresh one would escalate
/// again.
#[test]
fn a_serialised_state_continues_its_incident() {
    let p = policy();
    let mut s = StreamState::new("s", &p);
    let crisis = |i: u64| {
        let mut f = frame(i);
        f.hash_matches.push(hash("crisis", "cc-1", 12));
        f
    };
    let first: Vec<Decision> = (0..4).flat_map(|i| s.on_frame(&p, &crisis(i))).collect();
    assert_eq!(
        kinds(&first),
        vec![(DecisionKind::Escalated, "crisis".into())]
    );
    let json = serde_json::to_string(&s).unwrap();
    let mut moved: StreamState = serde_json::from_str(&json).unwrap();
    let later: Vec<Decision> = (4..8)
        .flat_map(|i| moved.on_frame(&p, &crisis(i)))
        .collect();
    assert!(
        later
            .iter()
            .all(|d| d.kind != DecisionKind::Escalated && d.incident_id == first[0].incident_id),
        "{later:?}"
    );
    let mut fresh = StreamState::new("s", &p);
    let again: Vec<Decision> = (4..8)
        .flat_map(|i| fresh.on_frame(&p, &crisis(i)))
        .collect();
    assert!(again.iter().any(|d| d.kind == DecisionKind::Escalated));
}
