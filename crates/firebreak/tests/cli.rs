//! The `firebreak` command line, run as a user would, on the shared conformance data.

use std::path::PathBuf;
use std::process::{Command, Output};

fn shared() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance");
    assert!(p.is_dir(), "conformance data missing at {}", p.display());
    p
}

fn firebreak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn expected_row(csv: &str, file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(shared().join("pdq").join(csv)).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{file},")))
        .unwrap();
    line.split(',').map(String::from).collect()
}

#[test]
fn hash_pdq_prints_reference_hashes_and_reports_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let a = shared().join("pdq/images/pen-and-coaster.png");
    let b = shared().join("pdq/images/synth-64x64.png");
    let out = firebreak(&[
        "hash",
        "pdq",
        a.to_str().unwrap(),
        corrupt.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a corrupt file must make the exit status non-zero"
    );
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(
        lines.len(),
        2,
        "the other files are still hashed: {lines:?}"
    );
    for (line, (file, path)) in lines
        .iter()
        .zip([("pen-and-coaster.png", &a), ("synth-64x64.png", &b)])
    {
        let want = expected_row("expected.csv", file);
        assert_eq!(line, &format!("{},{},{}", want[1], want[2], path.display()));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt.png"),
        "the error names the file: {err}"
    );
}

#[test]
fn hash_pdq_dihedral_prints_eight_hashes_in_reference_order() {
    let img = shared().join("pdq/images/pen-and-coaster.png");
    let out = firebreak(&["hash", "pdq", "--dihedral", img.to_str().unwrap()]);
    assert!(out.status.success());
    let want = expected_row("expected_dihedral.csv", "pen-and-coaster.png");
    // CSV: file,quality,h0..h7 ; output: h0..h7,quality,path
    let got: Vec<String> = stdout(&out)
        .trim_end()
        .split(',')
        .map(String::from)
        .collect();
    assert_eq!(got[..8], want[2..10]);
    assert_eq!(got[8], want[1]);
    assert_eq!(got[9], img.display().to_string());
}

#[test]
fn hash_vpdq_prints_reference_text() {
    let video = shared().join("vpdq/videos/pattern-sd-grey-bar.mp4");
    let out = firebreak(&[
        "hash",
        "vpdq",
        "--seconds-per-hash",
        "1",
        video.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want =
        std::fs::read_to_string(shared().join("vpdq/oracle/nosimd/pattern-sd-grey-bar-r1.txt"))
            .unwrap();
    assert_eq!(stdout(&out), want);
}

#[test]
fn hash_vpdq_rejects_a_file_that_is_not_video() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, vec![0x5a_u8; 4096]).unwrap();
    let out = firebreak(&["hash", "vpdq", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.mp4"));
    let out = firebreak(&[
        "hash",
        "vpdq",
        "--seconds-per-hash",
        "-1",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a negative interval is a usage error"
    );
}

#[test]
fn compare_vpdq_prints_both_percentages() {
    let oracle = shared().join("vpdq/oracle/nosimd");
    let grey = oracle.join("chair-22-sd-grey-bar.txt");
    let orig = oracle.join("chair-orig-22-sd-bar.txt");
    let other = oracle.join("doorknob-hd-no-bar.txt");
    let same = firebreak(&[
        "compare",
        "vpdq",
        grey.to_str().unwrap(),
        orig.to_str().unwrap(),
    ]);
    assert!(same.status.success());
    let text = stdout(&same);
    assert!(text.contains("query_match_percent: 100.00"), "{text}");
    assert!(text.contains("match: true"), "{text}");
    let diff = firebreak(&[
        "compare",
        "vpdq",
        grey.to_str().unwrap(),
        other.to_str().unwrap(),
    ]);
    let text = stdout(&diff);
    assert!(text.contains("query_match_percent: 0.00"), "{text}");
    assert!(text.contains("compared_match_percent: 0.00"), "{text}");
    assert!(text.contains("match: false"), "{text}");
}

#[test]
fn compare_vpdq_reports_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(
        &bad,
        format!("0,100,{},0.000\n1,100,nothex,0.033\n", "a".repeat(64)),
    )
    .unwrap();
    let good = shared().join("vpdq/oracle/nosimd/doorknob-hd-no-bar.txt");
    let out = firebreak(&[
        "compare",
        "vpdq",
        bad.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.txt") && err.contains("line 2"), "{err}");
}
