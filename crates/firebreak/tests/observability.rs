//! Observability against the real tools: a Prometheus server (Debian's `prometheus`)
//! scrapes the daemon's `/metrics` and a metric is queried back through its HTTP API;
//! every metric name the shipped Grafana dashboard and alert rules use is one the code
//! defines.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::INGEST;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_the_daemon() {
    // Scraped on the internal metrics listener, which needs no credentials.
    let d = support::start(
        "[server]\nmetrics_listen = \"127.0.0.1:0\"\n[ingest]\nsampling = \"2/s\"\n",
    );
    // Some frames, so the counters move.
    let clip = d.dir.path().join("clip.ts");
    support::encode("testsrc2=size=320x240:rate=25", 4, 25, &clip);
    let bytes = std::fs::read(&clip).unwrap();
    assert_eq!(
        d.call("PUT", "/v1/streams/cam/segments/0", Some(INGEST), &bytes)
            .0,
        200
    );
    assert_eq!(
        d.call("POST", "/v1/streams/cam/end", Some(INGEST), b"").0,
        200
    );
    d.wait_state("cam", "ended");

    let dir = tempfile::tempdir().unwrap();
    let metrics_url = d
        .metrics_url
        .clone()
        .expect("the metrics listener's address");
    let target = metrics_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: firebreak\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = support::free_port();
    let prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .expect("prometheus (apt package `prometheus`; scripts/setup.sh installs it)"),
    );
    let query = |q: &str| -> Option<Value> {
        let r = ureq::get(&format!("http://127.0.0.1:{port}/api/v1/query"))
            .query("query", q)
            .call()
            .ok()?;
        let v: Value = r.into_json().ok()?;
        let first = v["data"]["result"].as_array()?.first()?.clone();
        Some(first)
    };
    let sampled = d.wait("prometheus to scrape the frame counter", 60, || {
        query("firebreak_frames_sampled_total{job=\"firebreak\"}")
    });
    let value: f64 = sampled["value"][1].as_str().unwrap().parse().unwrap();
    assert!(value >= 8.0, "4 s at 2 frames/s: {sampled}");
    let up = query("up{job=\"firebreak\"}").unwrap();
    assert_eq!(up["value"][1], "1");
    let ended = d.wait("the stream-state gauge", 30, || {
        query("firebreak_streams{state=\"ended\"} == 1")
    });
    assert_eq!(ended["metric"]["state"], "ended");
    drop(prom);
}

/// `firebreak_*` names in a text, without histogram suffixes.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("firebreak_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        out.insert(base);
    }
    out
}

#[test]
fn dashboards_and_alerts_use_only_defined_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let defined: BTreeSet<String> = names(&read("crates/firebreak/src/metrics.rs"))
        .into_iter()
        .chain(names(&read("crates/delivery/src/lib.rs")))
        .collect();
    let mut used = names(&read("deploy/grafana/firebreak.json"));
    used.extend(names(&read("deploy/prometheus/alerts.yml")));
    assert!(used.len() >= 10, "{used:?}");
    let unknown: Vec<&String> = used.difference(&defined).collect();
    assert!(
        unknown.is_empty(),
        "undefined metrics used in deploy/: {unknown:?}"
    );
    // And the running daemon exports the plain (unlabelled) ones.
    let d = support::start("");
    let text = d.metrics();
    for name in [
        "firebreak_frames_sampled_total",
        "firebreak_outbox_depth",
        "firebreak_end_to_end_seconds",
        "firebreak_stage_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
    }
}
