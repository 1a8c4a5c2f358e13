//! The daemon harness (`firebreak_testkit::daemon`) bound to this crate's binary, and
//! programmes with a banked clip.
#![allow(dead_code, unused_imports)]

pub mod browser;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use firebreak_testkit::daemon::{
    ADMIN, Daemon, HMAC_SECRET, INGEST, OPERATOR, OTHER, READ, base_config, response,
    status_before_body,
};
pub use firebreak_testkit::media::encode;
pub use firebreak_testkit::net::free_port;
pub use firebreak_testkit::sha256_hex;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_firebreak"))
}

/// Starts `firebreak run` with the base config plus `extra` TOML.
pub fn start(extra: &str) -> Daemon {
    firebreak_testkit::daemon::start(bin(), extra)
}

/// [`start`] in a given directory (banks prepared beforehand).
pub fn start_in(dir: tempfile::TempDir, extra: &str) -> Daemon {
    firebreak_testkit::daemon::start_in(bin(), dir, extra)
}

/// Stops `d` (SIGTERM) and starts it again on its data directory with `extra`.
pub fn restart(d: Daemon, extra: &str) -> Daemon {
    d.restart(bin(), extra)
}

pub fn firebreak(args: &[&str], data: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

/// A programme: 6 s of unrelated video, the clip rescaled and re-encoded, 4 s more.
pub fn programme(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    programme_with_tail(dir, 4)
}

/// [`programme`] with `tail` seconds of colour bars after the clip.
pub fn programme_with_tail(dir: &Path, tail: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let clip = dir.join("clip.ts");
    encode("mandelbrot=size=640x360:rate=25", 10, 50, &clip);
    let prog = dir.join("programme.ts");
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=480x270:rate=25:duration=6"])
        .arg("-i")
        .arg(&clip)
        .args(["-f", "lavfi", "-i"])
        .arg(format!("smptebars=size=480x270:rate=25:duration={tail}"))
        .args([
            "-filter_complex",
            "[1:v]scale=480:270,setsar=1[c];[0:v]setsar=1[a];[2:v]setsar=1[b];[a][c][b]concat=n=3:v=1[v]",
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "400k",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "mpegts",
        ])
        .arg(&prog)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    (clip, prog)
}

/// [`programme`], with the clip's vPDQ hashes imported into bank `crisis` (entry
/// `known-clip`) in `dir/data`. Returns the programme.
/// Pushes `file` as stream `id` (segments of 64 KiB with the ingest token), each
/// answered 200.
pub fn push_file(d: &Daemon, id: &str, file: &Path) {
    let bytes = std::fs::read(file).unwrap();
    for (i, part) in bytes.chunks(64 * 1024).enumerate() {
        let (status, body) = d.call(
            "PUT",
            &format!("/v1/streams/{id}/segments/{i}"),
            Some(INGEST),
            part,
        );
        assert_eq!(status, 200, "{id}/{i}: {body}");
    }
}

pub fn programme_with_banked_clip(dir: &Path) -> PathBuf {
    programme_with_banked_clip_and_tail(dir, 4)
}

/// [`programme_with_banked_clip`] with `tail` seconds of colour bars after the clip.
pub fn programme_with_banked_clip_and_tail(dir: &Path, tail: u32) -> PathBuf {
    let data = dir.join("data");
    let (clip, prog) = programme_with_tail(dir, tail);
    let hashes = firebreak(&["hash", "vpdq", "-r", "1", clip.to_str().unwrap()], &data);
    assert!(hashes.status.success());
    let vpdq_file = dir.join("clip.vpdq");
    std::fs::write(&vpdq_file, &hashes.stdout).unwrap();
    let import = firebreak(
        &[
            "lists",
            "import",
            vpdq_file.to_str().unwrap(),
            "--format",
            "vpdq",
            "--bank",
            "crisis",
            "--id",
            "known-clip",
        ],
        &data,
    );
    assert!(import.status.success(), "{import:?}");
    prog
}

/// Polls `f` (every 100 ms) for up to `secs` seconds; on a timeout panics with the
/// last 4000 bytes of each daemon's log in `logs` (tests with several processes).
pub fn wait_all<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>, logs: &[&Daemon]) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if started.elapsed() > std::time::Duration::from_secs(secs) {
            let tail: Vec<String> = logs
                .iter()
                .map(|d| {
                    let s = d.stderr();
                    let mut n = s.len().saturating_sub(4000);
                    while !s.is_char_boundary(n) {
                        n += 1;
                    }
                    format!("--- {} ---\n{}", d.base, &s[n..])
                })
                .collect();
            panic!(
                "timed out after {secs} s waiting for {what}\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `firebreak_shared_records_total{topic="banks"}` of a worker: bank records (entries
/// and tombstones) it applied from the fleet's bank topic.
pub fn bank_records_applied(d: &Daemon) -> u64 {
    d.metrics()
        .lines()
        .find_map(|l| l.strip_prefix("firebreak_shared_records_total{topic=\"banks\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The daemon's resident memory in KiB (from `/proc`).
pub fn rss_kib(d: &Daemon) -> u64 {
    proc_status_kib(d, "VmRSS:")
}

/// The daemon's peak resident memory in KiB (from `/proc`).
pub fn peak_rss_kib(d: &Daemon) -> u64 {
    proc_status_kib(d, "VmHWM:")
}

fn proc_status_kib(d: &Daemon, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
}

/// The newest stored policy version (`GET /v1/policy/versions`, as admin).
pub fn latest_policy_version(d: &Daemon) -> serde_json::Value {
    let versions = d.get("/v1/policy/versions", ADMIN);
    versions["versions"]
        .as_array()
        .and_then(|v| v.last())
        .cloned()
        .unwrap_or_else(|| panic!("no policy version in {versions}"))
}
