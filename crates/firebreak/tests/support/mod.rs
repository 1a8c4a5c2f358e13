//! Runs `firebreak run` as a platform would: a config file, a data directory, bearer
//! tokens for each scope, and plain HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Tokens the test config accepts, by scope.
pub const INGEST: &str = "test-ingest-token";
pub const OPERATOR: &str = "test-operator-token";
pub const READ: &str = "test-read-token";
/// The HMAC tenant's secret (passed through the environment).
pub const HMAC_SECRET: &str = "test-hmac-secret";

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config every test starts from: three tokens, an HMAC tenant, the JSONL sink.
pub fn base_config(data: &Path) -> String {
    format!(
        r#"data_dir = "{data}"
worker_id = "test-worker"
[[auth.tokens]]
tenant = "platform"
token_sha256 = "{i}"
scopes = ["ingest"]
[[auth.tokens]]
tenant = "responder"
token_sha256 = "{o}"
scopes = ["operator"]
[[auth.tokens]]
tenant = "viewer"
token_sha256 = "{r}"
scopes = ["read"]
[[auth.hmac]]
tenant = "partner"
secret_env = "FIREBREAK_TEST_HMAC"
scopes = ["ingest", "read"]
"#,
        data = data.display(),
        i = sha256_hex(INGEST.as_bytes()),
        o = sha256_hex(OPERATOR.as_bytes()),
        r = sha256_hex(READ.as_bytes()),
    )
}

/// Starts the daemon with the base config plus `extra` TOML (sections appended).
pub fn start(extra: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, extra)
}

/// [`start`] in a given directory (banks prepared beforehand).
pub fn start_in(dir: tempfile::TempDir, extra: &str) -> Daemon {
    let data = dir.path().join("data");
    let config = dir.path().join("firebreak.toml");
    let listen = "[server]\nlisten = \"127.0.0.1:0\"\n";
    let extra = if extra.contains("[server]\n") {
        extra.replacen("[server]\n", listen, 1)
    } else {
        format!("{listen}{extra}")
    };
    std::fs::write(&config, format!("{}\n{extra}", base_config(&data))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["run", "--config"])
        .arg(&config)
        .env("FIREBREAK_TEST_HMAC", HMAC_SECRET)
        .env("FIREBREAK_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    // Keep reading what it prints, as a terminal would.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let Some(base) = line.trim().strip_prefix("listening on ") else {
        let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        panic!("the daemon did not start: {line:?}\n{log}");
    };
    Daemon {
        base: base.to_owned(),
        child,
        dir,
        config,
    }
}

impl Daemon {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Any request; returns status and JSON body (Null when not JSON).
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        let mut r = ureq::request(method, &format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        response(r.send_bytes(body))
    }

    pub fn get(&self, path: &str, token: &str) -> Value {
        let (status, v) = self.call("GET", path, Some(token), b"");
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Polls `f` until it returns `Some`, for up to `secs` seconds.
    pub fn wait<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a stream to reach `state`.
    pub fn wait_state(&self, id: &str, state: &str) -> Value {
        self.wait(&format!("{id} to be {state}"), 60, || {
            let (code, s) = self.call("GET", &format!("/v1/streams/{id}"), Some(READ), b"");
            (code == 200 && s["state"] == state).then_some(s)
        })
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

pub fn response(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Encodes `seconds` of lavfi `source` as MPEG-TS H.264 with a GOP of `gop` frames.
pub fn encode(source: &str, seconds: u32, gop: u32, out: &Path) {
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-t"])
        .arg(seconds.to_string())
        .arg("-i")
        .arg(source)
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g"])
        .arg(gop.to_string())
        .args(["-pix_fmt", "yuv420p", "-f", "mpegts"])
        .arg(out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg failed for {source}");
}

/// Sends a request with `Expect: 100-continue` and returns the status the server
/// answers before taking the body (an early 413 never reads an oversized body).
pub fn status_before_body(base: &str, method: &str, path: &str, token: &str, len: usize) -> u16 {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
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
    let clip = dir.join("clip.ts");
    encode("mandelbrot=size=640x360:rate=25", 10, 50, &clip);
    let prog = dir.join("programme.ts");
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=480x270:rate=25:duration=6"])
        .arg("-i")
        .arg(&clip)
        .args(["-f", "lavfi", "-i", "smptebars=size=480x270:rate=25:duration=4"])
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
pub fn programme_with_banked_clip(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let (clip, prog) = programme(dir);
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

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
