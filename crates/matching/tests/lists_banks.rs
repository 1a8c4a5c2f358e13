//! Hash-list formats, import hygiene and reports, bank snapshots, and matching against
//! banks (negative banks, whole videos, digests).

use std::path::PathBuf;

use firebreak_hashing::vpdq::{self, VpdqFeature};
use firebreak_hashing::{Hash256, PdqHash};
use firebreak_matching::bank::{Bank, ImportPolicy, SnapshotError};
use firebreak_matching::lists::{self, ExportEntry, Format, Reason, Signal};
use firebreak_matching::matcher::{MatchConfig, Matcher};
use proptest::prelude::*;

const H1: &str = "e271017837246aaccddea259648fb7d62f435c89d9e99b2497763e216c8d055c";
const H2: &str = "c0f113783f2468acc1de825b448fbfd66f434c89cb699a249776fe216c8d855c";
const MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn conformance(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance")
        .join(rel)
}

fn import(bank: &mut Bank, format: Format, text: &str) -> firebreak_matching::bank::ImportReport {
    let parsed = lists::parse(format, text, Some("video-1"));
    bank.import(parsed.records, parsed.errors, ImportPolicy::default())
}

fn rejected(report: &firebreak_matching::bank::ImportReport) -> Vec<(usize, Reason)> {
    report.errors.iter().map(|e| (e.line, e.reason)).collect()
}

#[test]
fn local_file_lines_and_errors() {
    let text = format!(
        "# comment\n\npdq {H1}\nvpdq [\"{H2},100,0.000\",\"{H1},90,1.000\"]\nvideo_md5 {MD5}\n\
         pdq zz{}\nurl https://example.com\njustonetoken\nvpdq [\"{H2},100\"]\npdq {}\n",
        &H1[2..],
        "0".repeat(64)
    );
    let mut bank = Bank::new("gifct", false);
    let report = import(&mut bank, Format::LocalFile, &text);
    assert_eq!(report.added, 3);
    assert_eq!(
        rejected(&report),
        vec![
            (6, Reason::BadHash),
            (7, Reason::UnsupportedType),
            (8, Reason::Syntax),
            (9, Reason::Syntax),
            (10, Reason::ZeroHash)
        ]
    );
    assert_eq!(report.rejected_total(), 5);
    assert!(report.errors[0].to_string().starts_with("line 6: bad_hash"));
    let video = bank
        .entries()
        .iter()
        .find(|e| e.signal.kind() == "vpdq")
        .unwrap();
    let Signal::Vpdq(frames) = &video.signal else {
        panic!()
    };
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1].pdq.quality, 90);
    assert_eq!(frames[1].timestamp, 1.0);
}

#[test]
fn threat_updates_jsonl_array_and_envelope() {
    let jsonl = format!(
        "{{\"id\":\"101\",\"indicator\":\"{H1}\",\"type\":\"HASH_PDQ\",\"should_delete\":false,\"tags\":[\"terrorism\"]}}\n\
         {{\"id\":102,\"indicator\":\"{MD5}\",\"type\":\"HASH_VIDEO_MD5\"}}\n\
         {{\"id\":\"103\",\"indicator\":\"x\",\"type\":\"URI\"}}\n\
         not json\n\
         {{\"indicator\":\"{H2}\",\"type\":\"HASH_PDQ\"}}\n\
         {{\"id\":\"101\",\"indicator\":\"{H1}\",\"type\":\"HASH_PDQ\",\"should_delete\":true}}\n\
         {{\"id\":\"999\",\"indicator\":\"{H1}\",\"type\":\"HASH_PDQ\",\"should_delete\":true}}\n"
    );
    let mut bank = Bank::new("te", false);
    let report = import(&mut bank, Format::ThreatUpdates, &jsonl);
    assert_eq!((report.added, report.deleted), (2, 1));
    assert_eq!(
        rejected(&report),
        vec![
            (3, Reason::UnsupportedType),
            (4, Reason::Syntax),
            (5, Reason::MissingField),
            (7, Reason::UnknownDelete)
        ]
    );
    assert_eq!(bank.len(), 1);
    assert_eq!(
        bank.get("102").unwrap().signal,
        Signal::Md5(lists::parse_digest(MD5).unwrap())
    );

    let array = format!(
        "[{{\"id\":\"1\",\"indicator\":\"{H1}\",\"type\":\"HASH_PDQ\",\"tags\":[\"a\",\"b\"]}}, 7]"
    );
    let parsed = lists::parse(Format::ThreatUpdates, &array, None);
    assert_eq!(parsed.records.len(), 1);
    assert_eq!(parsed.records[0].labels, vec!["a", "b"]);
    assert_eq!(
        (parsed.errors[0].line, parsed.errors[0].reason),
        (2, Reason::Syntax)
    );

    let envelope =
        format!("{{\"data\":[{{\"id\":\"1\",\"indicator\":\"{H2}\",\"type\":\"HASH_PDQ\"}}]}}");
    let parsed = lists::parse(Format::ThreatUpdates, &envelope, None);
    assert_eq!(parsed.records.len(), 1);
    assert!(parsed.errors.is_empty());
}

#[test]
fn tcap_records() {
    let text = format!(
        "{{\"hash_digest\":\"{H1}\",\"algorithm\":\"PDQ\",\"ideology\":\"far-right\",\"deleted\":false}}\n\
         {{\"hash_digest\":\"{SHA}\",\"algorithm\":\"SHA-256\",\"ideology\":\"islamist\"}}\n\
         {{\"hash_digest\":\"{MD5}\",\"algorithm\":\"md5\"}}\n\
         {{\"hash_digest\":\"abcd\",\"algorithm\":\"SHA1\"}}\n\
         {{\"hash_digest\":\"{H1}\",\"algorithm\":\"PDQ\",\"deleted\":\"maybe\"}}\n\
         {{\"hash_digest\":\"{H1}\",\"algorithm\":\"PDQ\",\"deleted\":true}}\n"
    );
    let mut bank = Bank::new("tcap", false);
    let report = import(&mut bank, Format::Tcap, &text);
    assert_eq!((report.added, report.deleted), (3, 1));
    assert_eq!(
        rejected(&report),
        vec![(4, Reason::UnsupportedType), (5, Reason::Syntax)]
    );
    let sha = bank
        .entries()
        .iter()
        .find(|e| e.signal.kind() == "sha256")
        .unwrap();
    assert_eq!(sha.labels, vec!["ideology:islamist"]);
}

#[test]
fn csv_quality_hygiene() {
    let text = format!(
        "hash,quality,id,labels\n{H1},100,a,violence;weapon\n{H2},49,b,\n{H2},0,c,\n{H2},abc,d,\n\
         {H2},,e,\n{},90,f,\n{H1},90,g,x,extra\n{H1}\n",
        "0".repeat(64)
    );
    let mut bank = Bank::new("csv", false);
    let report = import(&mut bank, Format::Csv, &text);
    assert_eq!(report.added, 3, "{:?}", report.errors);
    assert_eq!(
        rejected(&report),
        vec![
            (3, Reason::LowQuality),
            (4, Reason::ZeroQuality),
            (5, Reason::BadQuality),
            (7, Reason::ZeroHash),
            (8, Reason::Syntax)
        ]
    );
    assert_eq!(bank.get("a").unwrap().labels, vec!["violence", "weapon"]);
    assert_eq!(report.rejected[&Reason::LowQuality], 1);
    // A lower minimum accepts the quality-49 hash.
    let mut lenient = Bank::new("csv", false);
    let parsed = lists::parse(Format::Csv, &text, None);
    let report = lenient.import(
        parsed.records,
        parsed.errors,
        ImportPolicy { min_quality: 40 },
    );
    assert_eq!(report.added, 4);
}

#[test]
fn vpdq_file_with_a_corrupt_line() {
    let path = conformance("vpdq/expected/doorknob-hd-no-bar.txt");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let good = text.lines().count();
    text.push_str("12,100,nothex,0.4\n");
    let mut bank = Bank::new("videos", false);
    let report = import(&mut bank, Format::Vpdq, &text);
    assert_eq!(report.added, 1);
    assert_eq!(rejected(&report), vec![(good + 1, Reason::Syntax)]);
    let Signal::Vpdq(frames) = &bank.get("video-1").unwrap().signal else {
        panic!()
    };
    // Import keeps only frames usable for matching (quality >= 50, non-zero).
    let usable = vpdq::parse(&std::fs::read_to_string(&path).unwrap())
        .unwrap()
        .iter()
        .filter(|f| f.pdq.quality >= 50 && !f.pdq.hash.is_zero())
        .count();
    assert!(usable > 0 && usable < good);
    assert_eq!(frames.len(), usable);
}

fn sample_bank() -> Bank {
    let mut bank = Bank::new("mixed", false);
    let text = format!(
        "pdq {H1}\nvpdq [\"{H2},100,0.000\",\"{H1},90,1.500\"]\nvideo_md5 {MD5}\nsha256 {SHA}\n"
    );
    import(&mut bank, Format::LocalFile, &text);
    let csv = format!("{H2},77,with-labels,a;b\n");
    import(&mut bank, Format::Csv, &csv);
    bank
}

#[test]
fn export_round_trips() {
    let bank = sample_bank();
    let entries = || {
        bank.entries().iter().map(|e| ExportEntry {
            id: &e.id,
            signal: &e.signal,
            labels: &e.labels,
        })
    };
    for (format, carried) in [
        (Format::LocalFile, 5),
        (Format::Csv, 2),
        (Format::ThreatUpdates, 4),
        (Format::Tcap, 4),
        (Format::Vpdq, 1),
    ] {
        let (text, skipped) = lists::export(format, entries());
        assert_eq!(skipped, 5 - carried, "{format:?}");
        let parsed = lists::parse(format, &text, Some("video"));
        assert!(parsed.errors.is_empty(), "{format:?}: {:?}", parsed.errors);
        assert_eq!(parsed.records.len(), carried, "{format:?}");
        for r in &parsed.records {
            let original = bank
                .entries()
                .iter()
                .find(|e| e.signal.to_text() == r.signal.to_text())
                .unwrap_or_else(|| panic!("{format:?}: {:?} not in the bank", r.signal));
            if let Some(id) = &r.id
                && format != Format::Vpdq
            {
                assert_eq!(id, &original.id);
            }
        }
    }
}

#[test]
fn snapshot_round_trip_and_corruption() {
    let mut bank = sample_bank();
    bank.negative = true;
    let mut bytes = Vec::new();
    bank.write_snapshot(&mut bytes).unwrap();
    let back = Bank::read_snapshot(&mut bytes.as_slice()).unwrap();
    assert_eq!(back, bank);
    assert_eq!(back.position, None);

    // A bank following the shared topic keeps its position.
    let mut followed = sample_bank();
    followed.position = Some(firebreak_matching::bank::TopicPosition {
        topic: "firebreak.banks".into(),
        offsets: [(0, 7), (1, 0), (5, 1 << 40)].into_iter().collect(),
    });
    let mut with_position = Vec::new();
    followed.write_snapshot(&mut with_position).unwrap();
    assert_eq!(&with_position[..8], b"FBBANK02");
    let back = Bank::read_snapshot(&mut with_position.as_slice()).unwrap();
    assert_eq!(back, followed);
    assert_eq!(back.position.unwrap().offsets[&5], 1 << 40);

    let mut flipped = bytes.clone();
    flipped[20] ^= 1;
    assert!(matches!(
        Bank::read_snapshot(&mut flipped.as_slice()),
        Err(SnapshotError::Checksum)
    ));
    let truncated = &bytes[..bytes.len() - 10];
    assert!(Bank::read_snapshot(&mut &truncated[..]).is_err());
    assert!(matches!(
        Bank::read_snapshot(&mut &b"hello world!"[..]),
        Err(SnapshotError::Magic)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// No input makes a parser or the snapshot reader panic.
    #[test]
    fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        for (format, _) in Format::ALL {
            let _ = lists::parse(format, &text, None);
        }
        for magic in [b"FBBANK01", b"FBBANK02"] {
            let mut with_magic = magic.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = Bank::read_snapshot(&mut with_magic.as_slice());
        }
    }
}

fn frames_of(name: &str) -> Vec<VpdqFeature> {
    vpdq::parse(
        &std::fs::read_to_string(conformance(&format!("vpdq/expected/{name}.txt"))).unwrap(),
    )
    .unwrap()
}

#[test]
fn video_matching_equals_pairwise_compare() {
    let names = [
        "chair-orig-22-sd-bar",
        "pattern-hd-no-bar",
        "doorknob-hd-no-bar",
    ];
    let mut bank = Bank::new("videos", false);
    for name in names {
        let records = vec![lists::Record {
            line: 1,
            id: Some(name.to_owned()),
            signal: Signal::Vpdq(frames_of(name)),
            labels: vec![],
            delete: false,
        }];
        bank.import(records, vec![], ImportPolicy::default());
    }
    let matcher = Matcher::new([&bank], MatchConfig::default(), 2);
    for query in [
        "chair-22-sd-sepia-bar",
        "chair-19-sd-bar",
        "pattern-sd-grey-bar",
        "doorknob-hd-no-bar",
    ] {
        let q = frames_of(query);
        let hits = matcher.match_video(&q);
        for name in names {
            let want = vpdq::compare(&q, &frames_of(name), 50, 31).unwrap();
            let got = hits.iter().find(|h| &*h.entry.id == name);
            match got {
                Some(h) => {
                    assert_eq!(
                        h.query_match_percent, want.query_match_percent,
                        "{query} vs {name}"
                    );
                    assert_eq!(h.compared_match_percent, want.compared_match_percent);
                }
                None => assert_eq!(want.query_match_percent, 0.0, "{query} vs {name}"),
            }
        }
        if query.starts_with("chair") || query.starts_with("doorknob") {
            assert!(
                hits[0].query_match_percent >= 80.0,
                "{query} should match its original"
            );
        }
    }
}

#[test]
fn negative_bank_suppresses_and_digests_match() {
    let h1: Hash256 = H1.parse().unwrap();
    // A second positive entry far from the first.
    let l = h1.limbs();
    let h2 = Hash256::from_limbs([l[0] ^ u64::MAX, l[1] ^ u64::MAX, l[2], l[3]]);
    let mut positive = Bank::new("crisis", false);
    import(
        &mut positive,
        Format::Csv,
        &format!("{H1},100,p1,\n{h2},100,p2,\n"),
    );
    import(
        &mut positive,
        Format::LocalFile,
        &format!("video_md5 {MD5}\nsha256 {SHA}\n"),
    );
    let mut negative = Bank::new("benign", true);
    // A benign image 3 bits from H2.
    let mut limbs = h2.limbs();
    limbs[0] ^= 0b111;
    let benign = Hash256::from_limbs(limbs);
    import(&mut negative, Format::Csv, &format!("{benign},100,n1,\n"));

    let matcher = Matcher::new([&positive, &negative], MatchConfig::default(), 1);
    let r = matcher.match_pdq(&h1);
    assert_eq!(r.matches.len(), 1);
    assert_eq!(&*r.matches[0].entry.id, "p1");
    assert!(r.suppressed.is_empty());
    let r = matcher.match_pdq(&h2);
    assert!(r.matches.is_empty());
    assert_eq!(&*r.suppressed[0].entry.id, "p2");
    assert_eq!(
        (&*r.negative[0].entry.id, r.negative[0].distance),
        ("n1", 3)
    );

    let md5 = lists::parse_digest::<16>(MD5).unwrap();
    let sha = lists::parse_digest::<32>(SHA).unwrap();
    let hits = matcher.match_digests(Some(&md5), Some(&sha));
    assert_eq!(
        hits.iter().map(|h| h.kind).collect::<Vec<_>>(),
        vec!["video_md5", "sha256"]
    );
    assert!(matcher.match_digests(Some(&[1; 16]), None).is_empty());

    // Run-time addition: matchable immediately.
    let fresh = Hash256::from_limbs([1, 2, 3, 4]);
    assert!(matcher.match_pdq(&fresh).matches.is_empty());
    matcher.add_pdq("crisis", "late", fresh, vec![]);
    assert_eq!(&*matcher.match_pdq(&fresh).matches[0].entry.id, "late");
    let _ = PdqHash {
        hash: fresh,
        quality: 100,
    };
}

/// An entry labelled `tenant:NAME` matches (and, in a negative bank, suppresses) only
/// for streams of tenant NAME; unlabelled entries for everyone; an unscoped query (the
/// command line's) sees all.
#[test]
fn tenant_scoped_entries_match_only_their_tenant() {
    use firebreak_matching::bank::Entry;
    let h1: Hash256 = H1.parse().unwrap();
    let l = h1.limbs();
    let h2 = Hash256::from_limbs([l[0] ^ u64::MAX, l[1] ^ u64::MAX, l[2], l[3]]);
    let matcher = Matcher::new(std::iter::empty::<&Bank>(), MatchConfig::default(), 1);
    let pdq = |id: &str, hash: Hash256, labels: &[&str]| Entry {
        id: id.into(),
        signal: Signal::Pdq {
            hash,
            quality: Some(100),
        },
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
    };
    matcher.insert(
        "crisis",
        false,
        &pdq("acme-only", h1, &["crisis", "tenant:acme"]),
    );
    matcher.insert("crisis", false, &pdq("everyone", h2, &["crisis"]));
    let ids = |r: firebreak_matching::matcher::PdqResult| -> Vec<String> {
        r.matches.iter().map(|m| m.entry.id.to_string()).collect()
    };
    assert_eq!(ids(matcher.match_pdq_for(&h1, Some("acme"))), ["acme-only"]);
    assert!(ids(matcher.match_pdq_for(&h1, Some("other"))).is_empty());
    assert_eq!(ids(matcher.match_pdq(&h1)), ["acme-only"]);
    assert_eq!(ids(matcher.match_pdq_for(&h2, Some("other"))), ["everyone"]);

    // acme's responders rejected h2 as a false positive: suppressed for acme only.
    matcher.insert("rejected", true, &pdq("fp", h2, &["tenant:acme"]));
    let r = matcher.match_pdq_for(&h2, Some("acme"));
    assert!(r.matches.is_empty());
    assert_eq!(&*r.negative[0].entry.id, "fp");
    assert_eq!(ids(matcher.match_pdq_for(&h2, Some("other"))), ["everyone"]);
    assert_eq!(
        matcher.match_pdq(&h1).matches[0].entry.tenant.as_deref(),
        Some("acme")
    );
}
