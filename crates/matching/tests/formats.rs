//! Files written by earlier builds still open: a bank snapshot in format `FBBANK01`,
//! committed as a fixture (written by `firebreak lists import` of two CSV rows before
//! on-disk formats were versioned beyond the snapshot's magic), and one in `FBBANK02`.

use std::path::PathBuf;

use firebreak_matching::lists::Signal;
use firebreak_matching::store::BankStore;

#[test]
fn a_version_1_bank_snapshot_opens() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/banks-v1");
    let bank = BankStore::new(dir)
        .load("fixture")
        .unwrap()
        .expect("the fixture bank");
    assert_eq!(bank.len(), 2);
    assert!(!bank.negative);
    let a = bank.get("entry-a").unwrap();
    assert_eq!(a.labels, ["crisis", "test"]);
    let Signal::Pdq { hash, quality } = &a.signal else {
        panic!("a PDQ entry: {:?}", a.signal)
    };
    assert_eq!(
        hash.to_string(),
        "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    );
    assert_eq!(*quality, Some(100));
    let b = bank.get("entry-b").unwrap();
    assert!(b.labels.is_empty());
}

/// `FBBANK02` (fleet banks): the snapshot records the shared topic's offsets it was
/// built at (written by this build's `BankStore::save` of a one-entry bank at offsets
/// {0: 12, 1: 0, 2: 5} of `firebreak.banks`).
#[test]
fn a_version_2_bank_snapshot_opens_with_its_position() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/banks-v2");
    let bank = BankStore::new(dir)
        .load("fixture")
        .unwrap()
        .expect("the fixture bank");
    assert_eq!(bank.len(), 1);
    assert_eq!(bank.get("entry-a").unwrap().labels, ["crisis", "test"]);
    let position = bank.position.expect("a position");
    assert_eq!(position.topic, "firebreak.banks");
    assert_eq!(
        position.offsets.into_iter().collect::<Vec<_>>(),
        [(0, 12), (1, 0), (2, 5)]
    );
}
