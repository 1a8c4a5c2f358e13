//! Live updates of a loaded `Matcher` (`insert`, `remove`, replacement, compaction)
//! answer exactly like a brute-force scan over the entries that should be loaded, and
//! like a matcher built from scratch over them; so does a matcher loaded from its
//! snapshot (read or mapped), before and after live updates, and a damaged, truncated or
//! stale snapshot is never used.

mod common;

use std::collections::BTreeMap;

use common::Rng;
use firebreak_hashing::vpdq::{self, VpdqFeature};
use firebreak_hashing::{Hash256, PdqHash};
use firebreak_matching::bank::{Bank, Entry, ImportPolicy};
use firebreak_matching::lists::{Record, Signal};
use firebreak_matching::mapfile::LoadMode;
use firebreak_matching::matcher::{MatchConfig, Matcher};
use firebreak_matching::store::{BankStore, BankSummary, MatcherOptions, MatcherSource};
use proptest::prelude::*;

/// (bank, id) → (negative, entry): what should be loaded.
type Model = BTreeMap<(String, String), (bool, Entry)>;

const BANKS: [(&str, bool); 3] = [("crisis", false), ("extra", false), ("benign", true)];

fn pdq_entry(rng: &mut Rng, id: String, near: Option<Hash256>) -> Entry {
    let hash = match near {
        Some(h) => {
            let flips = rng.below(40) as u32;
            rng.near(&h, flips)
        }
        None => rng.hash(),
    };
    Entry {
        id,
        signal: Signal::Pdq {
            hash,
            quality: Some(90),
        },
        labels: vec!["l".into()],
    }
}

fn video_entry(rng: &mut Rng, id: String, near: Option<Hash256>) -> Entry {
    let base = near.unwrap_or_else(|| rng.hash());
    let frames = (0..1 + rng.below(4))
        .map(|i| VpdqFeature {
            pdq: PdqHash {
                hash: {
                    let flips = rng.below(30) as u32;
                    rng.near(&base, flips)
                },
                quality: 100,
            },
            frame_number: i,
            timestamp: i as f64,
        })
        .collect();
    Entry {
        id,
        signal: Signal::Vpdq(frames),
        labels: vec![],
    }
}

fn digest_entry(rng: &mut Rng, id: String) -> Entry {
    // Few distinct digests, so several entries share one.
    let d = [rng.below(3) as u8 + 1; 16];
    Entry {
        id,
        signal: Signal::Md5(d),
        labels: vec![],
    }
}

fn some_hash(model: &Model) -> Option<Hash256> {
    model.values().find_map(|(_, e)| match &e.signal {
        Signal::Pdq { hash, .. } => Some(*hash),
        Signal::Vpdq(f) => f.first().map(|f| f.pdq.hash),
        _ => None,
    })
}

fn random_entry(rng: &mut Rng, model: &Model, id: String) -> Entry {
    let near = if rng.below(2) == 0 {
        some_hash(model)
    } else {
        None
    };
    match rng.below(5) {
        0 | 1 => pdq_entry(rng, id, near),
        2 | 3 => video_entry(rng, id, near),
        _ => digest_entry(rng, id),
    }
}

/// Adds `count` random entries with ids `{prefix}0…`, spread over `banks` in turn.
fn add_random(
    model: &mut Model,
    rng: &mut Rng,
    count: usize,
    prefix: &str,
    banks: &[(&str, bool)],
) {
    for i in 0..count {
        let e = random_entry(rng, model, format!("{prefix}{i}"));
        let (bank, negative) = banks[i % banks.len()];
        model.insert((bank.into(), e.id.clone()), (negative, e));
    }
}

fn banks_of(model: &Model) -> Vec<Bank> {
    BANKS
        .iter()
        .map(|&(name, negative)| {
            let mut bank = Bank::new(name, negative);
            let records = model
                .iter()
                .filter(|((b, _), _)| b == name)
                .enumerate()
                .map(|(line, ((_, id), (_, e)))| Record {
                    line: line + 1,
                    id: Some(id.clone()),
                    signal: e.signal.clone(),
                    labels: e.labels.clone(),
                    delete: false,
                })
                .collect();
            let report = bank.import(records, vec![], ImportPolicy { min_quality: 0 });
            assert_eq!(report.rejected_total(), 0, "{:?}", report.errors);
            bank
        })
        .collect()
}

/// Brute force: every (bank, id, distance) of a PDQ query, split as the matcher does.
fn brute_pdq(model: &Model, q: &Hash256) -> (Vec<(String, String, u32)>, bool) {
    let c = MatchConfig::default();
    let mut positive = Vec::new();
    let mut negative = false;
    for ((bank, id), (neg, e)) in model {
        match &e.signal {
            Signal::Pdq { hash, .. } => {
                let d = hash.distance(q);
                if *neg {
                    negative |= d <= c.negative_distance;
                } else if d <= c.pdq_distance {
                    positive.push((bank.clone(), id.clone(), d));
                }
            }
            Signal::Vpdq(frames) if *neg => {
                negative |= vpdq::prepare(frames, c.vpdq_quality)
                    .iter()
                    .any(|h| h.distance(q) <= c.negative_distance);
            }
            _ => {}
        }
    }
    positive.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.1.cmp(&b.1)));
    (positive, negative)
}

fn check(matcher: &Matcher, model: &Model, rng: &mut Rng) -> Result<(), TestCaseError> {
    let stored: Vec<Hash256> = model
        .values()
        .flat_map(|(_, e)| match &e.signal {
            Signal::Pdq { hash, .. } => vec![*hash],
            Signal::Vpdq(f) => f.iter().map(|f| f.pdq.hash).collect(),
            _ => vec![],
        })
        .collect();
    let fresh = Matcher::new(&banks_of(model), MatchConfig::default(), 1);
    for _ in 0..6 {
        let q = match stored.get(rng.below(stored.len().max(1) as u64) as usize) {
            Some(h) => {
                let flips = rng.below(35) as u32;
                rng.near(h, flips)
            }
            None => rng.hash(),
        };
        let got = matcher.match_pdq(&q);
        let (want, suppressed) = brute_pdq(model, &q);
        let as_tuples = |hits: &[firebreak_matching::matcher::PdqHit]| {
            hits.iter()
                .map(|h| (h.entry.bank.to_string(), h.entry.id.to_string(), h.distance))
                .collect::<Vec<_>>()
        };
        if suppressed && !want.is_empty() {
            prop_assert!(got.matches.is_empty());
            prop_assert_eq!(as_tuples(&got.suppressed), want);
        } else {
            prop_assert_eq!(as_tuples(&got.matches), want);
            prop_assert!(got.suppressed.is_empty());
        }
        // Whole videos: as a matcher built from scratch over the same entries.
        let query: Vec<VpdqFeature> = (0..3)
            .map(|i| VpdqFeature {
                pdq: PdqHash {
                    hash: {
                        let flips = rng.below(10) as u32;
                        rng.near(&q, flips)
                    },
                    quality: 100,
                },
                frame_number: i,
                timestamp: i as f64,
            })
            .collect();
        let key = |v: &firebreak_matching::matcher::VideoHit| {
            (
                v.entry.bank.to_string(),
                v.entry.id.to_string(),
                v.query_match_percent.to_bits(),
                v.compared_match_percent.to_bits(),
            )
        };
        let got: Vec<_> = matcher.match_video(&query).iter().map(key).collect();
        let want: Vec<_> = fresh.match_video(&query).iter().map(key).collect();
        prop_assert_eq!(got, want);
    }
    for d in 1u8..=3 {
        let mut got: Vec<(String, String)> = matcher
            .match_digests(Some(&[d; 16]), None)
            .into_iter()
            .map(|h| (h.entry.bank.to_string(), h.entry.id.to_string()))
            .collect();
        got.sort();
        let want: Vec<(String, String)> = model
            .iter()
            .filter(|(_, (_, e))| e.signal == Signal::Md5([d; 16]))
            .map(|((b, i), _)| (b.clone(), i.clone()))
            .collect();
        prop_assert_eq!(got, want);
    }
    let sizes = matcher.sizes();
    let positive_pdq = model
        .values()
        .filter(|(n, e)| !n && matches!(e.signal, Signal::Pdq { .. }))
        .count();
    let videos = model
        .values()
        .filter(|(n, e)| !n && matches!(e.signal, Signal::Vpdq(_)))
        .count();
    prop_assert_eq!(sizes.pdq, positive_pdq);
    prop_assert_eq!(sizes.videos, videos);
    Ok(())
}

fn options(mode: LoadMode) -> MatcherOptions {
    MatcherOptions {
        config: MatchConfig::default(),
        threads: 2,
        snapshot: Some(mode),
        save: true,
    }
}

fn summaries(model: &Model) -> Vec<BankSummary> {
    let mut out: Vec<BankSummary> = banks_of(model).iter().map(BankSummary::of).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `model`'s banks saved in `dir`, and the matcher loaded from them through the matcher
/// snapshot: a first load builds it and writes the snapshot, a second loads that in
/// `mode`.
fn through_snapshot(dir: &std::path::Path, model: &Model, mode: LoadMode) -> Matcher {
    let store = BankStore::new(dir);
    for bank in banks_of(model) {
        store.save(&bank).unwrap();
    }
    let first = store.load_matcher(options(mode)).unwrap();
    assert!(
        matches!(
            &first.source,
            MatcherSource::Built {
                saved: Some(Ok(())),
                ..
            }
        ),
        "{:?}",
        first.source
    );
    let second = store.load_matcher(options(mode)).unwrap();
    assert!(
        matches!(second.source, MatcherSource::Snapshot),
        "{:?}",
        second.source
    );
    assert_eq!(second.banks, summaries(model));
    assert_eq!(first.banks, second.banks);
    second.matcher
}

#[derive(Debug, Clone)]
enum Op {
    Insert,
    Replace,
    Remove,
    RemoveAbsent,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Insert),
        2 => Just(Op::Replace),
        3 => Just(Op::Remove),
        1 => Just(Op::RemoveAbsent),
        1 => Just(Op::Compact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, rng_seed: proptest::test_runner::RngSeed::Fixed(17), ..ProptestConfig::default() })]

    /// Any sequence of inserts, replacements, removals and compactions on a loaded
    /// matcher: its answers equal a brute-force scan (PDQ, digests) and a fresh build
    /// (videos) over the entries that should be loaded.
    #[test]
    fn live_updates_equal_brute_force(seed in any::<u64>(), initial in 0usize..30, ops in proptest::collection::vec(op(), 1..40)) {
        let mut rng = Rng(seed);
        let mut model = Model::new();
        let mut next = 0u64;
        for _ in 0..initial {
            let (bank, negative) = BANKS[rng.below(3) as usize];
            next += 1;
            let e = random_entry(&mut rng, &model, format!("e{next}"));
            model.insert((bank.into(), e.id.clone()), (negative, e));
        }
        // A third of the cases start from a built matcher, the others from its
        // snapshot, read or mapped.
        let dir = tempfile::tempdir().unwrap();
        let via = [None, Some(LoadMode::Read), Some(LoadMode::Map)][(seed % 3) as usize];
        let matcher = match via {
            None => Matcher::new(&banks_of(&model), MatchConfig::default(), 1),
            Some(mode) => through_snapshot(dir.path(), &model, mode),
        };
        check(&matcher, &model, &mut rng)?;
        for op in ops {
            match op {
                Op::Insert => {
                    let (bank, negative) = BANKS[rng.below(3) as usize];
                    next += 1;
                    let e = random_entry(&mut rng, &model, format!("e{next}"));
                    matcher.insert(bank, negative, &e);
                    model.insert((bank.into(), e.id.clone()), (negative, e));
                }
                Op::Replace | Op::Remove if !model.is_empty() => {
                    let at = rng.below(model.len() as u64) as usize;
                    let key = model.keys().nth(at).unwrap().clone();
                    let (negative, old) = model.remove(&key).unwrap();
                    prop_assert!(matcher.remove(&key.0, negative, &old));
                    if matches!(op, Op::Replace) {
                        let e = random_entry(&mut rng, &model, key.1.clone());
                        matcher.insert(&key.0, negative, &e);
                        model.insert(key, (negative, e));
                    }
                }
                Op::Replace | Op::Remove => {}
                Op::RemoveAbsent => {
                    next += 1;
                    let e = random_entry(&mut rng, &model, format!("e{next}"));
                    prop_assert!(!matcher.remove("crisis", false, &e));
                }
                Op::Compact => matcher.compact_if_needed(),
            }
            check(&matcher, &model, &mut rng)?;
        }
        // The updated matcher (delta, deletions and all) saved as the snapshot of its
        // banks, and loaded back.
        if let Some(mode) = via {
            let store = BankStore::new(dir.path());
            for bank in banks_of(&model) {
                store.save(&bank).unwrap();
            }
            store.save_matcher(&matcher, &summaries(&model)).unwrap();
            let loaded = store.load_matcher(options(mode)).unwrap();
            prop_assert!(matches!(loaded.source, MatcherSource::Snapshot), "{:?}", loaded.source);
            check(&loaded.matcher, &model, &mut rng)?;
        }
    }
}

/// A bank big enough for index tables, with near-duplicates that fill heavy buckets:
/// loaded from its snapshot either way, it answers like brute force.
#[test]
fn a_snapshot_with_index_tables_answers_like_brute_force() {
    let mut rng = Rng(23);
    let centre = rng.hash();
    let mut model = Model::new();
    for i in 0..12_000 {
        let near = (i % 3 == 0).then_some(centre);
        let e = pdq_entry(&mut rng, format!("p{i}"), near);
        model.insert(("crisis".into(), e.id.clone()), (false, e));
    }
    // Positive banks only, so that nothing near the centre is suppressed.
    add_random(&mut model, &mut rng, 20, "r", &BANKS[..2]);
    for mode in [LoadMode::Read, LoadMode::Map] {
        let dir = tempfile::tempdir().unwrap();
        let matcher = through_snapshot(dir.path(), &model, mode);
        for _ in 0..5 {
            check(&matcher, &model, &mut rng).unwrap();
        }
        // Around the cluster, where the buckets are heavy.
        for flips in [0, 3, 12, 25] {
            let q = rng.near(&centre, flips);
            let got: Vec<(String, u32)> = matcher
                .match_pdq(&q)
                .matches
                .iter()
                .map(|h| (h.entry.id.to_string(), h.distance))
                .collect();
            let (want, suppressed) = brute_pdq(&model, &q);
            assert!(!suppressed);
            let want: Vec<(String, u32)> = want.into_iter().map(|(_, id, d)| (id, d)).collect();
            assert!(
                want.len() > 500,
                "flips {flips}: {} near copies",
                want.len()
            );
            assert_eq!(got, want, "flips {flips}");
        }
    }
}

/// A snapshot that is stale (a bank changed), truncated, extended or damaged is never
/// used: the banks are read instead, and the answers are the banks' own. Read and
/// mapped alike, without a fault.
#[test]
fn a_stale_truncated_or_damaged_snapshot_is_never_used() {
    let mut rng = Rng(29);
    let mut model = Model::new();
    add_random(&mut model, &mut rng, 300, "e", &BANKS);
    for mode in [LoadMode::Read, LoadMode::Map] {
        let dir = tempfile::tempdir().unwrap();
        let store = BankStore::new(dir.path());
        through_snapshot(dir.path(), &model, mode);
        let path = store.matcher_path();
        let good = std::fs::read(&path).unwrap();
        let len = good.len();
        // Each spoilt file must be refused for the given reason, and rebuilt.
        let mut spoilt: Vec<(Vec<u8>, &str)> = Vec::new();
        for cut in [0, 10, 64, len / 3, len / 2, len - 1] {
            spoilt.push((good[..cut].to_vec(), "truncated"));
        }
        spoilt.push(([good.as_slice(), &[0]].concat(), "extended"));
        for at in [len / 3, len / 2, len - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            spoilt.push((bad, "damaged"));
        }
        for (bytes, why) in spoilt {
            std::fs::write(&path, &bytes).unwrap();
            let loaded = store.load_matcher(options(mode)).unwrap();
            match &loaded.source {
                MatcherSource::Built {
                    why: Some(w),
                    saved: Some(Ok(())),
                } => assert!(w.contains(why), "{mode:?} {why}: {w}"),
                other => panic!("{mode:?} {why}: {other:?}"),
            }
            check(&loaded.matcher, &model, &mut rng).unwrap();
            // Rewritten: the next start uses it.
            assert_eq!(std::fs::read(&path).unwrap().len(), len);
        }
        // A bank saved with one more entry: the snapshot is stale.
        let e = pdq_entry(&mut rng, "late".into(), None);
        let late = match &e.signal {
            Signal::Pdq { hash, .. } => *hash,
            _ => unreachable!(),
        };
        model.insert(("crisis".into(), "late".into()), (false, e));
        for bank in banks_of(&model) {
            store.save(&bank).unwrap();
        }
        let loaded = store.load_matcher(options(mode)).unwrap();
        match &loaded.source {
            MatcherSource::Built { why: Some(w), .. } => assert!(w.contains("stale"), "{w}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            &*loaded.matcher.match_pdq(&late).matches[0].entry.id,
            "late"
        );
        let again = store.load_matcher(options(mode)).unwrap();
        assert!(
            matches!(again.source, MatcherSource::Snapshot),
            "{:?}",
            again.source
        );
        assert_eq!(&*again.matcher.match_pdq(&late).matches[0].entry.id, "late");
        model.remove(&("crisis".into(), "late".into()));
    }
    // An unreadable bank (here a directory named like one) is skipped, as without
    // snapshots: the others load, and no snapshot is written while it is there.
    let dir = tempfile::tempdir().unwrap();
    let store = BankStore::new(dir.path());
    for bank in banks_of(&model) {
        store.save(&bank).unwrap();
    }
    std::fs::create_dir(dir.path().join("odd.fbank")).unwrap();
    for _ in 0..2 {
        let loaded = store.load_matcher(options(LoadMode::Read)).unwrap();
        assert_eq!(loaded.skipped.len(), 1);
        assert!(
            matches!(loaded.source, MatcherSource::Built { saved: None, .. }),
            "{:?}",
            loaded.source
        );
        assert_eq!(loaded.banks, summaries(&model));
        check(&loaded.matcher, &model, &mut rng).unwrap();
        assert!(!store.matcher_path().exists());
    }
    // Snapshots off: built, nothing written.
    let dir = tempfile::tempdir().unwrap();
    let store = BankStore::new(dir.path());
    for bank in banks_of(&model) {
        store.save(&bank).unwrap();
    }
    let off = MatcherOptions {
        snapshot: None,
        ..options(LoadMode::Read)
    };
    let loaded = store.load_matcher(off).unwrap();
    assert!(matches!(
        loaded.source,
        MatcherSource::Built {
            why: None,
            saved: None
        }
    ));
    assert!(!store.matcher_path().exists());
}

/// Entries with the same labels share one copy of them (loaded and inserted alike), and
/// sharing keeps each entry's own labels and tenant scope.
#[test]
fn label_sets_are_shared_between_entries() {
    let pdq = |id: &str, hash: Hash256, labels: &[&str]| Entry {
        id: id.into(),
        signal: Signal::Pdq {
            hash,
            quality: None,
        },
        labels: labels.iter().map(|l| l.to_string()).collect(),
    };
    let mut rng = Rng(3);
    let hashes: Vec<Hash256> = (0..4).map(|_| rng.hash()).collect();
    let mut bank = Bank::new("crisis", false);
    let records = [
        pdq("a", hashes[0], &["violent_extremism", "gifct"]),
        pdq("b", hashes[1], &["violent_extremism", "gifct"]),
        pdq("c", hashes[2], &["violent_extremism", "tenant:acme"]),
    ];
    let records = records
        .into_iter()
        .enumerate()
        .map(|(line, e)| Record {
            line: line + 1,
            id: Some(e.id),
            signal: e.signal,
            labels: e.labels,
            delete: false,
        })
        .collect();
    let report = bank.import(records, vec![], ImportPolicy { min_quality: 0 });
    assert_eq!(report.added, 3, "{:?}", report.errors);
    let matcher = Matcher::new([&bank], MatchConfig::default(), 1);
    matcher.insert(
        "crisis",
        false,
        &pdq("d", hashes[3], &["violent_extremism", "gifct"]),
    );
    let hit = |i: usize| {
        let r = matcher.match_pdq(&hashes[i]);
        assert_eq!(r.matches.len(), 1, "query {i}");
        r.matches[0].entry.clone()
    };
    let (a, b, c, d) = (hit(0), hit(1), hit(2), hit(3));
    assert_eq!((&*a.id, &*b.id, &*c.id, &*d.id), ("a", "b", "c", "d"));
    assert!(std::sync::Arc::ptr_eq(&a.labels, &b.labels));
    assert!(
        std::sync::Arc::ptr_eq(&a.labels, &d.labels),
        "inserted entries share too"
    );
    assert!(std::sync::Arc::ptr_eq(&a.bank, &d.bank));
    assert!(!std::sync::Arc::ptr_eq(&a.labels, &c.labels));
    assert_eq!(*a.labels, ["violent_extremism", "gifct"]);
    assert_eq!(*c.labels, ["violent_extremism", "tenant:acme"]);
    assert_eq!(
        (a.tenant.as_deref(), c.tenant.as_deref()),
        (None, Some("acme"))
    );
    assert!(c.visible_to(Some("acme")) && !c.visible_to(Some("other")));
}
