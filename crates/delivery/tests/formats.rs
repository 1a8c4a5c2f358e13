//! Outbox segments written by earlier builds still open: `fixtures/outbox-v1` was
//! written by the outbox before segments had a header (format 1): events 1..=5 keyed
//! `stream-1`/`stream-0` with payloads `{"event":N}`, 120-byte segments (events 1-4 in
//! the first, 5 in the second), acked up to 2.

use std::path::{Path, PathBuf};

use firebreak_delivery::outbox::{Outbox, OutboxConfig, SEGMENT_VERSION};

fn copy_fixture(to: &Path) {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/outbox-v1");
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_version_1_outbox_opens_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let config = OutboxConfig {
        max_bytes: 1 << 20,
        segment_bytes: 120,
        ..OutboxConfig::default()
    };
    let (o, recovery) = Outbox::open(dir.path(), config).unwrap();
    assert_eq!((recovery.acked, recovery.pending), (2, 3));
    let pending: Vec<(u64, String, String)> = o
        .pending(10)
        .into_iter()
        .map(|r| (r.seq, r.key, String::from_utf8(r.payload).unwrap()))
        .collect();
    assert_eq!(
        pending,
        [
            (3, "stream-1".into(), "{\"event\":3}".into()),
            (4, "stream-0".into(), "{\"event\":4}".into()),
            (5, "stream-1".into(), "{\"event\":5}".into()),
        ]
    );
    // New events continue the sequence; once the old segments fill, new ones carry the
    // current header, and the mix reopens.
    for i in 6..=9u64 {
        assert_eq!(
            o.append("s", format!("{{\"event\":{i}}}").as_bytes())
                .unwrap(),
            i
        );
    }
    drop(o);
    let headed = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .filter(|b| b.starts_with(b"FBOX"))
        .map(|b| u32::from_le_bytes(b[4..8].try_into().unwrap()))
        .collect::<Vec<_>>();
    assert!(!headed.is_empty() && headed.iter().all(|&v| v == SEGMENT_VERSION));
    let (o, recovery) = Outbox::open(dir.path(), config).unwrap();
    assert_eq!(recovery.pending, 7);
    assert_eq!(o.pending(10).last().unwrap().seq, 9);
}

#[test]
fn an_unknown_segment_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"FBOX".to_vec();
    bytes.extend_from_slice(&(SEGMENT_VERSION + 1).to_le_bytes());
    std::fs::write(dir.path().join("seg-00000000000000000001.log"), bytes).unwrap();
    let err = Outbox::open(dir.path(), OutboxConfig::default()).unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
}
