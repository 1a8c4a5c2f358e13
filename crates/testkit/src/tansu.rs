//! A local Kafka-protocol broker for tests and demos: tansu, installed (pinned by
//! sha256) and started by `scripts/tansu.sh` in this repository. Not used by the
//! monitor itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::net::CutProxy;

/// A running broker with in-memory storage; stopped when dropped.
#[derive(Debug)]
pub struct TansuBroker {
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub bootstrap: String,
}

fn script() -> PathBuf {
    crate::repo_root().join("scripts/tansu.sh")
}

fn run(args: &[&str], dir: Option<&Path>) -> Result<(), String> {
    let mut cmd = Command::new(script());
    cmd.args(args);
    if let Some(d) = dir {
        cmd.arg(d);
    }
    let out = cmd.output().map_err(|e| format!("scripts/tansu.sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scripts/tansu.sh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl TansuBroker {
    /// Installs tansu if needed.
    pub fn install() -> Result<(), String> {
        run(&["install"], None)
    }

    /// Starts a broker on `port` (0 = a free one) and waits until it accepts
    /// connections.
    pub fn start_on(port: u16) -> Result<TansuBroker, String> {
        Self::start_advertising(port, None)
    }

    /// Starts a broker on `port` (0 = a free one) whose metadata sends clients to
    /// `127.0.0.1:advertised` when given (a proxy in front of it), and waits until it
    /// accepts connections. `bootstrap` is the broker's own address.
    pub fn start_advertising(port: u16, advertised: Option<u16>) -> Result<TansuBroker, String> {
        Self::install()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir_arg = dir.path().to_string_lossy().into_owned();
        let mut args = vec!["start".to_owned(), port.to_string(), dir_arg];
        args.extend(advertised.map(|p| p.to_string()));
        run(&args.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
        let port = std::fs::read_to_string(dir.path().join("tansu.port"))
            .map_err(|e| format!("tansu.port: {e}"))?;
        Ok(TansuBroker {
            bootstrap: format!("127.0.0.1:{}", port.trim()),
            dir,
        })
    }

    /// Starts a broker on a free port.
    pub fn start() -> Result<TansuBroker, String> {
        Self::start_on(0)
    }

    /// Starts a broker that clients reach only through a [`CutProxy`] (its metadata
    /// advertises the proxy): cutting the proxy makes the broker unreachable while it
    /// keeps its state (its storage is memory). Returns the broker and the proxy; the
    /// clients' bootstrap address is `proxy.listen`.
    pub fn start_behind_proxy() -> Result<(TansuBroker, CutProxy), String> {
        let port = crate::net::free_port();
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let proxy = CutProxy::start(([127, 0, 0, 1], 0).into(), target)
            .map_err(|e| format!("proxy: {e}"))?;
        let broker = Self::start_advertising(port, Some(proxy.listen.port()))?;
        Ok((broker, proxy))
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        let _ = run(&["stop"], Some(self.dir.path()));
    }
}
