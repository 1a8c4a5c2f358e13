//! Runs `firebreak run` as a platform would: a config file, a data directory, bearer
//! tokens for each scope, and plain HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Tokens the test config accepts, by scope.
/// An ingest-scope bearer token.
pub const INGEST: &str = "test-ingest-token";
/// An admin-scope bearer token (tenant `ops`): policy changes, every tenant's things.
pub const ADMIN: &str = "test-admin-token";
/// A second platform's token (tenant `other`, scopes ingest and operator).
pub const OTHER: &str = "test-other-token";
/// An operator-scope bearer token.
pub const OPERATOR: &str = "test-operator-token";
/// A read-scope bearer token.
pub const READ: &str = "test-read-token";
/// The HMAC tenant's secret (passed through the environment).
pub const HMAC_SECRET: &str = "test-hmac-secret";

/// A running `firebreak run`; killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its directory: config, data, stderr log.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// `http://127.0.0.1:PORT/metrics` of the internal metrics listener, when the config
    /// sets `server.metrics_listen`.
    pub metrics_url: Option<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test credentials: (tenant, token, scopes). [`INGEST`], [`OPERATOR`] and
/// [`READ`] belong to tenant `platform` (one platform's ingest fleet, responders and
/// viewers), [`ADMIN`] to `ops`, [`OTHER`] to a second platform.
const TOKENS: [(&str, &str, &str); 5] = [
    ("platform", INGEST, r#"["ingest"]"#),
    ("platform", OPERATOR, r#"["operator"]"#),
    ("platform", READ, r#"["read"]"#),
    ("ops", ADMIN, r#"["admin"]"#),
    ("other", OTHER, r#"["ingest", "operator"]"#),
];

/// The `[[auth.tokens]]` sections for [`TOKENS`].
pub fn tokens_config() -> String {
    TOKENS
        .iter()
        .map(|(tenant, token, scopes)| {
            format!(
                "[[auth.tokens]]\ntenant = \"{tenant}\"\ntoken_sha256 = \"{}\"\nscopes = {scopes}\n",
                crate::sha256_hex(token.as_bytes())
            )
        })
        .collect()
}

/// The config every test starts from: three tokens, an HMAC tenant, the JSONL sink.
pub fn base_config(data: &Path) -> String {
    format!(
        r#"data_dir = "{data}"
worker_id = "test-worker"
{tokens}[[auth.hmac]]
tenant = "partner"
secret_env = "FIREBREAK_TEST_HMAC"
scopes = ["ingest", "read"]
"#,
        data = data.display(),
        tokens = tokens_config(),
    )
}

/// Starts the daemon binary `bin` with the base config plus `extra` TOML (sections
/// appended).
pub fn start(bin: &Path, extra: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    start_in(bin, dir, extra)
}

/// [`start`] in a given directory (banks prepared beforehand).
pub fn start_in(bin: &Path, dir: tempfile::TempDir, extra: &str) -> Daemon {
    start_named(bin, dir, "test-worker", extra)
}

/// [`start_in`] with worker id `worker_id` (several workers of one fleet).
pub fn start_named(bin: &Path, dir: tempfile::TempDir, worker_id: &str, extra: &str) -> Daemon {
    start_command(bin, dir, "run", worker_id, extra)
}

/// [`start_named`] for subcommand `command` of the binary (`run`, `coordinator`).
pub fn start_command(
    bin: &Path,
    dir: tempfile::TempDir,
    command: &str,
    worker_id: &str,
    extra: &str,
) -> Daemon {
    start_command_env(bin, dir, command, worker_id, extra, &[])
}

/// [`start_command`] with extra environment variables for the daemon.
pub fn start_command_env(
    bin: &Path,
    dir: tempfile::TempDir,
    command: &str,
    worker_id: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> Daemon {
    let data = dir.path().join("data");
    let config = dir.path().join("firebreak.toml");
    let listen = "[server]\nlisten = \"127.0.0.1:0\"\n";
    let extra = if extra.contains("[server]\n") {
        extra.replacen("[server]\n", listen, 1)
    } else {
        format!("{listen}{extra}")
    };
    let base = base_config(&data).replacen(
        "worker_id = \"test-worker\"",
        &format!("worker_id = \"{worker_id}\""),
        1,
    );
    std::fs::write(&config, format!("{base}\n{extra}")).unwrap();
    let mut child = Command::new(bin)
        .args([command, "--config"])
        .arg(&config)
        .env("FIREBREAK_TEST_HMAC", HMAC_SECRET)
        .envs(env.iter().copied())
        // `FIREBREAK_TEST_LOG` (a tracing filter) to debug a test; info by default.
        .env(
            "FIREBREAK_LOG",
            std::env::var("FIREBREAK_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let mut metrics_url = None;
    if extra.contains("metrics_listen") {
        let mut next = String::new();
        while stdout.read_line(&mut next).unwrap_or(0) > 0 {
            if let Some(url) = next.trim().strip_prefix("metrics: ") {
                metrics_url = Some(url.to_owned());
                break;
            }
            next.clear();
        }
    }
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
        metrics_url,
    }
}

impl Daemon {
    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `/metrics` of the main listener, scraped with the read token.
    /// Its metrics: from the internal listener when it has one (no credential, no
    /// request limit), else from the API with [`READ`].
    pub fn metrics(&self) -> String {
        let r = match &self.metrics_url {
            Some(url) => ureq::get(url),
            None => ureq::get(&format!("{}/metrics", self.base))
                .set("Authorization", &format!("Bearer {READ}")),
        };
        r.call().unwrap().into_string().unwrap()
    }

    /// What it logged so far.
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

    /// GET with a token; returns status, content type and the raw body.
    pub fn get_bytes(&self, path: &str, token: &str) -> (u16, String, Vec<u8>) {
        use std::io::Read;
        let r = ureq::get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"))
            .call();
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("GET {path}: {e}"),
        };
        let (status, ctype) = (resp.status(), resp.content_type().to_owned());
        let mut body = Vec::new();
        resp.into_reader()
            .take(16 << 20)
            .read_to_end(&mut body)
            .expect("body");
        (status, ctype, body)
    }

    /// GET with a token; asserts 200 and returns the JSON body.
    pub fn get(&self, path: &str, token: &str) -> Value {
        let (status, v) = self.call("GET", path, Some(token), b"");
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Polls `f` until it returns `Some`, for up to `secs` seconds; a timeout shows
    /// the daemon's log.
    pub fn wait<T>(&self, what: &str, secs: u64, f: impl FnMut() -> Option<T>) -> T {
        self.wait_with(what, secs, f, String::new)
    }

    /// [`Daemon::wait`], showing `diagnose()` beside the log on a timeout.
    pub fn wait_with<T>(
        &self,
        what: &str,
        secs: u64,
        mut f: impl FnMut() -> Option<T>,
        diagnose: impl Fn() -> String,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if started.elapsed() >= Duration::from_secs(secs) {
                panic!(
                    "timed out waiting for {what}\n{}\n{}",
                    diagnose(),
                    self.stderr()
                );
            }
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

    /// Stops it (SIGTERM; asserts a clean exit) and starts `bin` again on the same
    /// directory (data, banks) with the base config plus `extra`: a restart.
    pub fn restart(mut self, bin: &Path, extra: &str) -> Daemon {
        let status = self.terminate();
        assert!(status.success(), "exit {status:?}\n{}", self.stderr());
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        drop(self);
        start_in(bin, dir, extra)
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

/// Status and JSON body (Null when not JSON) of a ureq response.
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
