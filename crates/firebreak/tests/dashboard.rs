//! The live alert dashboard in a real headless browser: Debian's chromium driven over
//! WebDriver by chromedriver. The page loads with a token, an escalation caused by a
//! pushed stream appears without a reload (server-sent events), and acknowledging it
//! from the page works.

mod support;

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use support::{INGEST, OPERATOR, READ};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    base: String,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(url: &str, body: Value) -> Value {
    support::response(ureq::post(url).send_json(body)).1
}

impl Driver {
    fn start(d: &support::Daemon) -> Driver {
        let port = support::free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt package chromium-driver; scripts/setup.sh installs it)");
        let base = format!("http://127.0.0.1:{port}");
        d.wait("chromedriver", 30, || {
            let r = ureq::get(&format!("{base}/status")).call().ok()?;
            let v: Value = r.into_json().ok()?;
            (v["value"]["ready"] == true).then_some(())
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            },
        }}});
        let session = post(&format!("{base}/session"), caps);
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_owned();
        Driver {
            child,
            base,
            session: id,
        }
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/session/{}{tail}", self.base, self.session)
    }

    fn go(&self, url: &str) {
        post(&self.url("/url"), json!({"url": url}));
    }

    fn find(&self, css: &str) -> Option<String> {
        let v = post(
            &self.url("/element"),
            json!({"using": "css selector", "value": css}),
        );
        v["value"][ELEMENT].as_str().map(str::to_owned)
    }

    fn text(&self, element: &str) -> String {
        let r = ureq::get(&self.url(&format!("/element/{element}/text")))
            .call()
            .unwrap();
        let v: Value = r.into_json().unwrap();
        v["value"].as_str().unwrap_or_default().to_owned()
    }

    fn click(&self, element: &str) {
        post(&self.url(&format!("/element/{element}/click")), json!({}));
    }
}

#[test]
fn a_new_escalation_appears_live_and_is_acknowledged_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let prog = support::programme_with_banked_clip(dir.path());
    let d = support::start_in(dir, "[ingest]\nsampling = \"2/s\"\n");
    let browser = Driver::start(&d);
    browser.go(&format!("{}/#token={OPERATOR}", d.base));
    // Connected to the live feed, nothing open yet.
    d.wait("the page to connect", 30, || {
        let status = browser.find("#live-status")?;
        browser.text(&status).contains("live").then_some(())
    });
    assert!(browser.find("#escalations tbody tr[data-id]").is_none());

    // A stream with the known clip, pushed while the page is open.
    let bytes = std::fs::read(&prog).unwrap();
    for (i, part) in bytes.chunks(64 * 1024).enumerate() {
        let path = format!("/v1/streams/live-1/segments/{i}");
        assert_eq!(d.call("PUT", &path, Some(INGEST), part).0, 200);
    }
    // On a timeout the stream's counters and the escalation list are shown beside the
    // log, to tell a daemon that did not escalate from a page that did not render.
    let row = d.wait_with(
        "the escalation row, without a reload",
        60,
        || browser.find("#escalations tbody tr[data-id][data-tier=\"crisis\"]"),
        || {
            format!(
                "stream: {}\nescalations: {}",
                d.call("GET", "/v1/streams/live-1", Some(READ), b"").1,
                d.call("GET", "/v1/escalations", Some(READ), b"").1
            )
        },
    );
    let listed = d.get("/v1/escalations", READ);
    let id = listed["escalations"][0]["id"].as_str().unwrap().to_owned();
    assert!(browser.text(&row).contains("live-1"));

    // Acknowledge from the page.
    let ack = browser
        .find(&format!("tr[data-id=\"{id}\"] button.ack"))
        .expect("an ack button on the open escalation");
    browser.click(&ack);
    d.wait("the row to show acknowledged", 30, || {
        browser.find(&format!(
            "tr[data-id=\"{id}\"][data-state=\"acknowledged\"]"
        ))
    });
    let after = d.get("/v1/escalations", READ);
    assert_eq!(after["escalations"][0]["state"], "acknowledged");
    assert_eq!(after["escalations"][0]["acknowledged"]["by"], "platform");
}
