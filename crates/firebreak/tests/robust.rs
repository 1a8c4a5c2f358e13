//! The robustness harness, small: `scripts/robustness/gen.sh DIR small` makes two
//! originals (real recordings), five edited families and three hard negatives with the
//! ffmpeg CLI; `firebreak eval` banks the originals and streams every copy through the
//! live detect path with the built-in policy. Families whose detection follows from
//! construction are asserted: a re-encode keeps every frame near its original; a
//! mirrored frame's dihedral `flip` hash is the original's hash (one DCT, transposed
//! signs), so only the dihedral query finds it; a pillarboxed frame without its bars is
//! the original frame, so only bar trimming finds it; an off-centre crop (85 % from
//! the top-left corner) is the original's top-left 85 %, so only the banked corner
//! views find it (the chair has bars of its own: its `+bars` corner view); a corner
//! logo inside the masked block leaves the masked view as it was, so masked views alone
//! find it. Negatives never escalate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs eval; (detected per family, summary).
fn eval(set: &Path, args: &[&str]) -> (HashMap<String, (u64, u64)>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["eval", "--set"])
        .arg(set)
        .args(args)
        .output()
        .expect("run firebreak eval");
    assert!(
        out.status.success(),
        "eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut families = HashMap::new();
    let mut summary = Value::Null;
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["summary"] == true {
            summary = v;
        } else {
            families.insert(
                v["family"].as_str().unwrap().to_owned(),
                (
                    v["detected"].as_u64().unwrap(),
                    v["originals"].as_u64().unwrap(),
                ),
            );
        }
    }
    (families, summary)
}

#[test]
fn levers_catch_mirrored_pillarboxed_and_off_centre_copies_without_false_matches() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    let status = Command::new("bash")
        .arg(repo().join("scripts/robustness/gen.sh"))
        .arg(&set)
        .arg("small")
        .env("CONFORMANCE", repo().join("../shared/conformance"))
        .status()
        .expect("run gen.sh");
    assert!(status.success());

    let (plain, plain_summary) = eval(&set, &["--bank-views", "none", "--query-views", "none"]);
    assert_eq!(plain["reencode"], (2, 2));
    assert_eq!(plain["hflip"], (0, 2), "no view: a mirrored copy is far");
    assert_eq!(plain["pillarbox"], (0, 2), "no view: bars move the hash");
    assert_eq!(
        plain["offcrop"],
        (0, 2),
        "no view: an off-centre crop is far"
    );
    assert_eq!(plain["logo"], (0, 2), "no view: the logo moves the hash");
    assert_eq!(plain_summary["negative_streams_escalations"], 0);

    // Masked views alone: the logo lies inside the top-right block of 50 % each way,
    // so the copy's view with that block masked is the original's (up to the
    // re-encode).
    let (masked, masked_summary) = eval(
        &set,
        &[
            "--bank-views",
            "notl50,notr50,nobl50,nobr50",
            "--query-views",
            "mask50",
        ],
    );
    assert_eq!(masked["logo"], (2, 2));
    assert_eq!(masked["reencode"], (2, 2));
    assert_eq!(masked_summary["negative_streams_escalations"], 0);

    let (levers, summary) = eval(&set, &[]);
    assert_eq!(levers["reencode"], (2, 2));
    assert_eq!(levers["hflip"], (2, 2));
    assert_eq!(levers["pillarbox"], (2, 2));
    assert_eq!(levers["offcrop"], (2, 2));
    assert_eq!(levers["logo"], (2, 2));
    assert_eq!(summary["negative_streams_escalations"], 0);
    assert!(summary["negative_stream_frames"].as_u64().unwrap() >= 3 * 19);
}
