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

fn firebreak_in(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .env("FIREBREAK_DATA", data)
        .args(args)
        .output()
        .unwrap()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn flip_bits(hex: &str, n: usize) -> String {
    let mut h: firebreak_hashing::Hash256 = hex.parse().unwrap();
    let mut limbs = h.limbs();
    for b in 0..n {
        limbs[b % 4] ^= 1 << (b * 7 % 64);
    }
    h = firebreak_hashing::Hash256::from_limbs(limbs);
    h.to_hex()
}

#[test]
fn lists_import_match_negative_export_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let image = shared().join("pdq/images/pen-and-coaster.png");
    let want = expected_row("expected.csv", "pen-and-coaster.png");
    let near = flip_bits(&want[1], 5);
    let list = dir.path().join("list.csv");
    std::fs::write(
        &list,
        format!(
            "hash,quality,id,labels\n{near},100,pen,weapon\n{},20,low,\nnothex,100,bad,\n",
            flip_bits(&want[1], 40)
        ),
    )
    .unwrap();
    let out = firebreak_in(
        &data,
        &[
            "lists",
            "import",
            list.to_str().unwrap(),
            "--format",
            "csv",
            "--bank",
            "crisis",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = &json_lines(&out)[0];
    assert_eq!(report["added"], 1);
    assert_eq!(report["rejected"]["low_quality"], 1);
    assert_eq!(report["rejected"]["bad_hash"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("list.csv:line 3: low_quality"), "{stderr}");
    assert!(stderr.contains("line 4: bad_hash"), "{stderr}");

    let unrelated = "0f".repeat(32);
    let out = firebreak_in(
        &data,
        &[
            "match",
            "pdq",
            image.to_str().unwrap(),
            &want[1],
            &unrelated,
        ],
    );
    assert!(out.status.success());
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3);
    for line in &lines[..2] {
        assert_eq!(line["matches"][0]["entry_id"], "pen");
        assert_eq!(line["matches"][0]["bank"], "crisis");
        assert_eq!(line["matches"][0]["distance"], 5);
        assert_eq!(line["matches"][0]["labels"][0], "weapon");
    }
    assert_eq!(lines[0]["hash"], want[1].as_str());
    assert!(lines[2]["matches"].as_array().unwrap().is_empty());
    // That match built the matcher and wrote its snapshot beside the banks; the next
    // one loads the snapshot, and answers the same.
    assert!(data.join("banks/matcher.fmatch").is_file());
    let stats = |out: &std::process::Output| -> serde_json::Value {
        let err = String::from_utf8_lossy(&out.stderr);
        serde_json::from_str(err.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {err}"))
    };
    let args = ["match", "pdq", "--stats", "--first-queries", "50", &want[1]];
    let out = firebreak_in(&data, &args);
    assert!(out.status.success());
    assert_eq!(stats(&out)["source"], "snapshot");
    assert_eq!(stats(&out)["first_queries"]["count"], 50);
    assert_eq!(json_lines(&out)[0]["matches"][0]["entry_id"], "pen");
    assert_eq!(json_lines(&out)[0]["matches"][0]["distance"], 5);

    // A negative bank with the image's own hash suppresses the match.
    let benign = dir.path().join("benign.txt");
    std::fs::write(&benign, format!("pdq {}\n", want[1])).unwrap();
    let out = firebreak_in(
        &data,
        &[
            "lists",
            "import",
            benign.to_str().unwrap(),
            "--format",
            "local-file",
            "--bank",
            "benign",
            "--negative",
        ],
    );
    assert!(out.status.success());
    // A bank changed: the snapshot is stale, so the matcher is built from the banks.
    let out = firebreak_in(&data, &args);
    assert_eq!(stats(&out)["source"], "built");
    let line = &json_lines(&out)[0];
    assert!(line["matches"].as_array().unwrap().is_empty());
    assert_eq!(line["suppressed"][0]["entry_id"], "pen");
    assert_eq!(line["negative"][0]["bank"], "benign");
    // Importing into a negative bank without --negative is refused.
    let out = firebreak_in(
        &data,
        &[
            "lists",
            "import",
            benign.to_str().unwrap(),
            "--format",
            "local-file",
            "--bank",
            "benign",
        ],
    );
    assert!(!out.status.success());

    let out = firebreak_in(
        &data,
        &[
            "lists",
            "export",
            "--bank",
            "crisis",
            "--format",
            "local-file",
        ],
    );
    assert_eq!(stdout(&out), format!("pdq {near}\n"));

    // A corrupt snapshot is reported and skipped; the other banks still match.
    std::fs::write(data.join("banks/broken.fbank"), b"garbage").unwrap();
    let out = firebreak_in(&data, &["lists", "stats"]);
    assert!(out.status.success());
    let stats = json_lines(&out);
    let names: Vec<&str> = stats.iter().map(|s| s["bank"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["benign", "crisis"]);
    assert_eq!(stats[1]["entries"], 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.fbank"));
    let out = firebreak_in(&data, &["match", "pdq", image.to_str().unwrap()]);
    assert_eq!(json_lines(&out)[0]["suppressed"][0]["entry_id"], "pen");
}

#[test]
fn match_vpdq_finds_the_banked_video_and_its_md5() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let original = shared().join("vpdq/expected/chair-orig-22-sd-bar.txt");
    let out = firebreak_in(
        &data,
        &[
            "lists",
            "import",
            original.to_str().unwrap(),
            "--format",
            "vpdq",
            "--bank",
            "videos",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let query = shared().join("vpdq/videos/chair-22-sd-sepia-bar.mp4");
    let md5 = Command::new("md5sum").arg(&query).output().unwrap();
    let md5 = stdout(&md5).split_whitespace().next().unwrap().to_owned();
    let list = dir.path().join("md5.txt");
    std::fs::write(&list, format!("video_md5 {md5}\n")).unwrap();
    let out = firebreak_in(
        &data,
        &[
            "lists",
            "import",
            list.to_str().unwrap(),
            "--format",
            "local-file",
            "--bank",
            "files",
        ],
    );
    assert!(out.status.success());

    let out = firebreak_in(&data, &["match", "vpdq", query.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = &json_lines(&out)[0];
    assert_eq!(line["md5"], md5.as_str());
    assert_eq!(line["videos"][0]["entry_id"], "chair-orig-22-sd-bar");
    assert_eq!(line["videos"][0]["is_match"], true);
    assert_eq!(line["digests"][0]["kind"], "video_md5");
    assert_eq!(line["digests"][0]["bank"], "files");

    // An unrelated video matches neither.
    let other = shared().join("vpdq/videos/doorknob-hd-no-bar.mp4");
    let out = firebreak_in(&data, &["match", "vpdq", other.to_str().unwrap()]);
    let line = &json_lines(&out)[0];
    assert!(
        line["videos"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["is_match"] == false)
    );
    assert!(line["digests"].as_array().unwrap().is_empty());
}

#[test]
fn classify_prints_scores_categories_and_detections() {
    let models = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let out = firebreak(&[
        "classify",
        models.join("test/yolo_nchw_rgb").to_str().unwrap(),
        models
            .join("test/images/white_200x300.png")
            .to_str()
            .unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(line["model"], "yolo_nchw_rgb");
    let knife = line["scores"]["knife"].as_f64().unwrap();
    assert!((knife - 0.8272).abs() < 1e-3, "{line}");
    assert_eq!(line["categories"][0]["category"], "weapon");
    assert_eq!(line["categories"][0]["flagged"], true);
    assert!(line["detections"].as_array().unwrap().len() >= 3);

    let out = firebreak(&[
        "models",
        "check",
        models.join("test/softmax_nchw_rgb").to_str().unwrap(),
        models.join("test/bad/sha256_mismatch").to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a bad model fails the check");
    let text = stdout(&out);
    assert!(
        text.contains("ok ") && text.contains("error ") && text.contains("sha256"),
        "{text}"
    );
}

/// `lists add-video` banks a video's vPDQ entry, every frame whose hash moved, and
/// the views asked for: the frame entries are the reference's frame hashes (Meta's
/// vPDQ output for the same file, up to decoder differences), and every frame entry
/// has its masked view beside it.
#[test]
fn lists_add_video_banks_frames_and_their_views() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let video = shared().join("vpdq/videos/chair-orig-22-sd-bar.mp4");
    let out = firebreak_in(
        &data,
        &[
            "lists",
            "add-video",
            video.to_str().unwrap(),
            "--bank",
            "crisis",
            "--id",
            "chair",
            "--views",
            "notr40",
            "--min-change",
            "0",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = &json_lines(&out)[0];
    assert_eq!(report["id"], "chair");
    assert_eq!(report["entries_added"], report["records"]);

    let reference: Vec<(u64, String)> =
        std::fs::read_to_string(shared().join("vpdq/expected/chair-orig-22-sd-bar.txt"))
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].parse().unwrap(), f[2].to_owned())
            })
            .collect();
    let out = firebreak_in(
        &data,
        &["lists", "export", "--bank", "crisis", "--format", "csv"],
    );
    assert!(out.status.success());
    let hex = |h: &str| -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    };
    let distance = |a: &str, b: &str| -> u32 {
        let (a, b) = (hex(a), hex(b));
        assert_eq!((a.len(), b.len()), (32, 32));
        a.iter().zip(&b).map(|(x, y)| (x ^ y).count_ones()).sum()
    };
    let (mut frames, mut masked) = (Vec::new(), Vec::new());
    for line in stdout(&out).lines() {
        let f: Vec<&str> = line.split(',').collect();
        let (hash, id) = (f[0], f[2]);
        let rest = id.strip_prefix("chair/f").unwrap_or_else(|| panic!("{id}"));
        match rest.split_once('@') {
            None => frames.push((rest.parse::<u64>().unwrap(), hash.to_owned())),
            Some((n, "notr40")) => masked.push(n.parse::<u64>().unwrap()),
            Some(_) => panic!("unexpected view entry {id}"),
        }
    }
    // Every frame is banked but for those whose hash did not move at all.
    assert!(
        frames.len() * 10 >= reference.len() * 9,
        "{} of {}",
        frames.len(),
        reference.len()
    );
    for (n, hash) in &frames {
        let want = &reference
            .iter()
            .find(|(f, _)| f == n)
            .unwrap_or_else(|| panic!("no reference frame {n}"))
            .1;
        let d = distance(hash, want);
        assert!(d <= 16, "frame {n}: {d} bits from the reference");
    }
    assert!(masked.len() * 10 >= frames.len() * 9, "{}", masked.len());
    assert_eq!(
        report["records"].as_u64().unwrap(),
        1 + (frames.len() + masked.len()) as u64,
        "the vPDQ entry, the frames and the views"
    );
}
