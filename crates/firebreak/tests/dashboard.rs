//! The live alert dashboard in a real headless browser: Debian's chromium driven over
//! WebDriver by chromedriver. The page loads with a token, an escalation caused by a
//! pushed stream appears without a reload (server-sent events), and acknowledging it
//! from the page works.

mod support;

use support::{INGEST, OPERATOR, READ};

use support::browser::Driver;

/// A stream id as long as platforms' ids get: the table must cut it, not widen.
const LONG: &str = "live-1-from-the-platforms-ingest-edge-eu-west-3-node-17-session-0001";

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
        let path = format!("/v1/streams/{LONG}/segments/{i}");
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
                d.call("GET", &format!("/v1/streams/{LONG}"), Some(READ), b"")
                    .1,
                d.call("GET", "/v1/escalations", Some(READ), b"").1
            )
        },
    );
    let listed = d.get("/v1/escalations", READ);
    let id = listed["escalations"][0]["id"].as_str().unwrap().to_owned();
    assert!(browser.text(&row).contains("live-1"));

    // At common laptop widths the row's actions are in view, with no horizontal scroll
    // (the evidence column is a summary that expands on demand).
    for (width, height) in [(1280, 800), (1440, 900)] {
        browser.window(width, height);
        let (vw, vh) = browser.viewport();
        assert_eq!(
            browser.eval("return document.documentElement.scrollWidth <= window.innerWidth;"),
            serde_json::Value::Bool(true),
            "horizontal scroll at {width} px"
        );
        let ack = browser
            .find(&format!("tr[data-id=\"{id}\"] button.ack"))
            .expect("an ack button on the open escalation");
        let (x, y, w, h) = browser.rect(&ack);
        assert!(
            x >= 0.0 && y >= 0.0 && x + w <= vw && y + h <= vh,
            "ack at ({x}, {y}, {w}x{h}) outside the {vw}x{vh} viewport at {width} px"
        );
    }

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

    // The evidence frame: served to the tenant's responders only, shown in the detail
    // panel blurred until clicked.
    let thumb = after["escalations"][0]["thumbnail"]
        .as_str()
        .expect("a thumbnail reference")
        .to_owned();
    let (code, ctype, jpeg) = d.get_bytes(&thumb, READ);
    assert_eq!((code, ctype.as_str()), (200, "image/jpeg"));
    let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
    assert!(img.width() <= 160 && img.width() >= 16, "{}", img.width());
    assert_eq!(d.get_bytes(&thumb, support::OTHER).0, 404);
    assert_eq!(d.call("GET", &thumb, None, b"").0, 401);
    let stream_cell = browser
        .find(&format!("tr[data-id=\"{id}\"] td"))
        .expect("a cell of the row");
    browser.click(&stream_cell);
    let natural_width = "const i = document.querySelector('#detail figure.thumb img'); \
                         return i && i.complete ? i.naturalWidth : 0;";
    let want = serde_json::Value::from(img.width());
    d.wait("the evidence frame in the detail panel", 30, || {
        (browser.eval(natural_width) == want).then_some(())
    });
    let filter =
        "return getComputedStyle(document.querySelector('#detail figure.thumb img')).filter;";
    let blurred = browser.eval(filter);
    assert!(
        blurred.as_str().is_some_and(|f| f.contains("blur(")),
        "blurred by default: {blurred}"
    );
    let reveal = browser.find("#detail figure.thumb button.reveal").unwrap();
    browser.click(&reveal);
    assert_eq!(browser.eval(filter), serde_json::Value::from("none"));
}

/// A shadow policy's decisions show in the dashboard as "would have escalated", apart
/// from the escalations (which hold only the active policy's).
#[test]
fn shadow_decisions_show_as_would_have_escalated() {
    let dir = tempfile::tempdir().unwrap();
    let prog = support::programme_with_banked_clip(dir.path());
    let shadow = dir.path().join("shadow.toml");
    std::fs::write(
        &shadow,
        "version = \"shadow-1\"\ntiers = [\"shadow-crisis\"]\ncooldown_secs = 5\n\
         [[rule]]\nname = \"any-video\"\nkind = \"video_match\"\nenter = 0.3\n\
         exit = 0.1\ntier = \"shadow-crisis\"\n",
    )
    .unwrap();
    let d = support::start_in(
        dir,
        &format!(
            "[ingest]\nsampling = \"2/s\"\n[signals]\nshadow = [{:?}]\n",
            shadow.to_str().unwrap()
        ),
    );
    let browser = Driver::start(&d);
    browser.go(&format!("{}/#token={READ}", d.base));
    d.wait("the page to connect", 30, || {
        let status = browser.find("#live-status")?;
        browser.text(&status).contains("live").then_some(())
    });
    assert!(browser.find("#shadow-list li").is_none());
    support::push_file(&d, "shadowed", &prog);
    let item = d.wait("the shadow decision in the page", 60, || {
        browser.find("#shadow-list li[data-stream=\"shadowed\"][data-tier=\"shadow-crisis\"]")
    });
    assert!(
        browser.text(&item).contains("shadow-1"),
        "{}",
        browser.text(&item)
    );
    // The escalations table holds the active policy's decision only.
    d.wait("the active policy's escalation", 60, || {
        browser.find("#escalations tbody tr[data-id][data-tier=\"crisis\"]")
    });
    assert!(
        browser
            .find("#escalations tbody tr[data-tier=\"shadow-crisis\"]")
            .is_none()
    );
}

/// A proposed policy for the tuning panel: the banked clip's video match raises
/// another tier, so the dry-run adds its escalations and removes the active policy's.
const PROPOSAL: &str = "version = \"proposal-1\"\ntiers = [\"proposed-crisis\"]\n\
cooldown_secs = 5\n[[rule]]\nname = \"any-video\"\nkind = \"video_match\"\nenter = 0.3\n\
exit = 0.1\ntier = \"proposed-crisis\"\n";

/// The tuning panel. From a stream's risk timeline, "Label range" fills the label form
/// with the stream and the timeline's range, and the label added from the page is
/// stored (as `GET /v1/signals/labels` answers) and listed. A dry-run from the page of
/// a whole proposed policy shows, per stream, as many added and removed escalations as
/// the API answers for the same request; applying it from the page makes the next
/// policy version, which records that dry-run.
#[test]
fn an_operator_labels_a_stream_dry_runs_a_change_and_applies_it_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let prog = support::programme_with_banked_clip(dir.path());
    let d = support::start_in(dir, "[ingest]\nsampling = \"2/s\"\n");
    support::push_file(&d, "prog", &prog);
    d.wait("the escalation", 60, || {
        let v = d.get("/v1/escalations", READ);
        (!v["escalations"].as_array()?.is_empty()).then_some(())
    });
    let browser = Driver::start(&d);
    browser.go(&format!("{}/#token={}", d.base, support::ADMIN));
    d.wait("the page to connect", 30, || {
        let status = browser.find("#live-status")?;
        browser.text(&status).contains("live").then_some(())
    });

    // Label the stream from its timeline.
    let cell = d.wait("the escalation row", 30, || {
        browser.find("#escalations tbody tr[data-id] td")
    });
    browser.click(&cell);
    d.wait("the timeline's points", 30, || {
        browser.find("#timeline-chart svg path")
    });
    let label_button = browser.find("#timeline-label").unwrap();
    browser.click(&label_button);
    let value = |css: &str| browser.eval(&format!("return document.querySelector('{css}').value;"));
    assert_eq!(value("#label-stream"), "prog");
    browser.choose("#label-verdict", "crisis");
    let note = browser.find("#label-note").unwrap();
    browser.type_into(&note, "known clip, checked");
    browser.click(&browser.find("#label-add").unwrap());
    let item = d.wait("the label in the list", 30, || {
        browser.find("#labels-list li[data-stream=\"prog\"][data-verdict=\"crisis\"]")
    });
    assert!(browser.text(&item).contains("known clip, checked"));
    let labels = d.get("/v1/signals/labels", support::OPERATOR);
    let stored = labels["labels"].as_array().unwrap();
    assert_eq!(stored.len(), 1, "{labels}");
    assert_eq!(stored[0]["stream"], "prog");
    assert_eq!(stored[0]["tenant"], "platform");
    assert_eq!(stored[0]["verdict"], "crisis");
    // The range is the timeline's, to the second (the form shows local time to the
    // second).
    let timeline = d.get("/v1/streams/prog/timeline", READ);
    let points = timeline["points"].as_array().unwrap();
    let first = points.first().unwrap()["wall_ms"].as_u64().unwrap();
    let last = points.last().unwrap()["wall_ms"].as_u64().unwrap();
    let start = stored[0]["start_ms"].as_u64().unwrap();
    let end = stored[0]["end_ms"].as_u64().unwrap();
    assert!(start <= first && first - start < 1000, "{start} {first}");
    assert!(
        end <= last + 1000 && last + 1000 - end < 1000,
        "{end} {last}"
    );

    // Dry-run a whole proposed policy from the page.
    browser.choose("#dryrun-mode", "toml");
    let toml = browser.find("#dryrun-toml").unwrap();
    browser.type_into(&toml, PROPOSAL);
    let hours = browser.find("#dryrun-hours").unwrap();
    browser.type_into(&hours, "1");
    browser.click(&browser.find("#dryrun-run").unwrap());
    d.wait("the dry-run's result", 60, || {
        browser.find("#dryrun-result[data-id] #dryrun-summary")
    });
    let shown = browser.eval(
        "return Array.from(document.querySelectorAll('#dryrun-streams tbody tr')).map(\
         r => [r.dataset.stream, Number(r.dataset.added), Number(r.dataset.removed)]);",
    );
    let request = serde_json::json!({"toml": PROPOSAL, "hours": 1}).to_string();
    let (status, api) = d.call(
        "POST",
        "/v1/policy/dry-run",
        Some(support::OPERATOR),
        request.as_bytes(),
    );
    assert_eq!(status, 200, "{api}");
    let want: Vec<serde_json::Value> = api["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            serde_json::json!([
                s["stream"],
                s["added"].as_array().unwrap().len(),
                s["removed"].as_array().unwrap().len()
            ])
        })
        .collect();
    assert_eq!(shown, serde_json::Value::Array(want.clone()), "{api}");
    assert!(
        want.iter()
            .any(|w| w[0] == "prog" && w[1].as_u64() > Some(0) && w[2].as_u64() > Some(0)),
        "the proposal adds and removes escalations of prog: {api}"
    );

    // Apply it from the page, on that dry-run.
    let id = browser.eval("return document.getElementById('dryrun-result').dataset.id;");
    browser.click(&browser.find("#dryrun-apply").unwrap());
    d.wait("the change applied", 30, || {
        browser.find("#dryrun-applied[data-ok=\"true\"]")
    });
    let policy = d.get("/v1/policy", READ);
    assert!(
        policy["version"]
            .as_str()
            .unwrap()
            .starts_with("proposal-1"),
        "{policy}"
    );
    let latest = support::latest_policy_version(&d);
    assert_eq!(latest["source"], "policy.update", "{latest}");
    assert_eq!(latest["dry_run"]["id"], id, "{latest}");
}
