//! A headless browser for dashboard tests: Debian's chromium driven over WebDriver by
//! chromedriver (loopback only).

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Driver {
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
    super::response(ureq::post(url).send_json(body)).1
}

impl Driver {
    pub fn start(d: &super::Daemon) -> Driver {
        let port = super::free_port();
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

    pub fn url(&self, tail: &str) -> String {
        format!("{}/session/{}{tail}", self.base, self.session)
    }

    pub fn go(&self, url: &str) {
        post(&self.url("/url"), json!({"url": url}));
    }

    pub fn find(&self, css: &str) -> Option<String> {
        let v = post(
            &self.url("/element"),
            json!({"using": "css selector", "value": css}),
        );
        v["value"][ELEMENT].as_str().map(str::to_owned)
    }

    pub fn text(&self, element: &str) -> String {
        let r = ureq::get(&self.url(&format!("/element/{element}/text")))
            .call()
            .unwrap();
        let v: Value = r.into_json().unwrap();
        v["value"].as_str().unwrap_or_default().to_owned()
    }

    pub fn click(&self, element: &str) {
        post(&self.url(&format!("/element/{element}/click")), json!({}));
    }
}

impl Driver {
    /// Sets the window's outer size.
    pub fn window(&self, width: u32, height: u32) {
        post(
            &self.url("/window/rect"),
            json!({"width": width, "height": height}),
        );
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub fn eval(&self, script: &str) -> Value {
        post(
            &self.url("/execute/sync"),
            json!({"script": script, "args": []}),
        )["value"]
            .take()
    }

    /// Replaces the text of an input or textarea with `text`, typed as a user would
    /// (WebDriver "Element Clear", then "Element Send Keys").
    pub fn type_into(&self, element: &str, text: &str) {
        post(&self.url(&format!("/element/{element}/clear")), json!({}));
        post(
            &self.url(&format!("/element/{element}/value")),
            json!({"text": text}),
        );
    }

    /// Chooses the option with value `value` of a `<select>` by clicking it.
    pub fn choose(&self, select: &str, value: &str) {
        let option = self
            .find(&format!("{select} option[value=\"{value}\"]"))
            .unwrap_or_else(|| panic!("no option {value:?} in {select}"));
        self.click(&option);
    }

    /// The page's viewport size (`innerWidth`, `innerHeight`).
    pub fn viewport(&self) -> (f64, f64) {
        let v = self.eval("return [window.innerWidth, window.innerHeight];");
        (v[0].as_f64().unwrap_or(0.0), v[1].as_f64().unwrap_or(0.0))
    }

    /// An element's rectangle in CSS pixels: (x, y, width, height).
    pub fn rect(&self, element: &str) -> (f64, f64, f64, f64) {
        let r = ureq::get(&self.url(&format!("/element/{element}/rect")))
            .call()
            .unwrap();
        let v: Value = r.into_json().unwrap();
        let f = |k: &str| v["value"][k].as_f64().unwrap_or(f64::NAN);
        (f("x"), f("y"), f("width"), f("height"))
    }
}
