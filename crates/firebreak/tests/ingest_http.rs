//! The push-ingest HTTP hook, run as a platform would use it: `firebreak run`, segments
//! of real H.264 video PUT over HTTP out of order and duplicated, a garbage stream beside
//! it, and the error statuses.

mod support;

fn serve() -> support::Daemon {
    support::start(
        "[server]\nmax_body_bytes = 1048576\n[ingest]\nsampling = \"1/s\"\nreorder_window = 4\n",
    )
}

fn clip() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.ts");
    support::encode("testsrc2=size=640x360:rate=30", 6, 60, &out);
    std::fs::read(out).unwrap()
}

fn put(d: &support::Daemon, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    d.call("PUT", path, Some(support::INGEST), body)
}

#[test]
fn pushed_segments_over_http() {
    let server = serve();
    let base = &server;
    let bytes = clip();
    let parts: Vec<&[u8]> = bytes.chunks(60_000).collect();
    assert!(parts.len() >= 4);
    // Neighbours swapped, the first of each pair sent twice.
    let mut order = Vec::new();
    for i in (0..parts.len()).step_by(2) {
        if i + 1 < parts.len() {
            order.push(i + 1);
        }
        order.push(i);
        order.push(i);
    }
    let mut results = Vec::new();
    for i in order {
        let (status, body) = put(base, &format!("/v1/streams/cam-1/segments/{i}"), parts[i]);
        assert_eq!(status, 200, "{body}");
        results.push(body["result"].as_str().unwrap().to_owned());
    }
    assert!(results.contains(&"held".to_owned()) && results.contains(&"duplicate".to_owned()));

    // A second stream of garbage beside it.
    let (status, _) = put(base, "/v1/streams/noise/segments/0", &[0x5a; 50_000]);
    assert_eq!(status, 200);

    // Bad requests.
    assert_eq!(
        put(base, "/v1/streams/cam-1/segments/99", b"").0,
        400,
        "empty body"
    );
    assert_eq!(
        put(base, "/v1/streams/cam-1/segments/x", b"abc").0,
        400,
        "bad sequence number"
    );
    assert_eq!(
        put(base, "/v1/streams/bad!id/segments/0", b"abc").0,
        400,
        "bad id"
    );
    assert_eq!(
        support::status_before_body(
            &server.base,
            "PUT",
            "/v1/streams/cam-1/segments/100",
            support::INGEST,
            2 << 20
        ),
        413,
        "oversized body"
    );

    let (status, _) = server.call("POST", "/v1/streams/cam-1/end", Some(support::INGEST), b"");
    assert_eq!(status, 200);
    let s = server.wait_state("cam-1", "ended");
    assert_eq!(s["frames"]["decoded"], 180, "{s}");
    assert_eq!(s["frames"]["sampled"], 6);
    assert_eq!(s["segments"]["duplicates"], parts.len().div_ceil(2));
    assert_eq!(s["segments"]["missing"], 0);
    assert_eq!(
        put(base, "/v1/streams/cam-1/segments/101", b"late").0,
        409,
        "after the end"
    );

    let (status, _) = server.call("POST", "/v1/streams/noise/end", Some(support::INGEST), b"");
    assert_eq!(status, 200);
    // Bytes but not one frame: failed, with the reason (a misconfigured ingest).
    let noise = server.wait_state("noise", "failed");
    assert_eq!(noise["frames"]["decoded"], 0);
    assert!(
        noise["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("no video frame could be decoded from 50000 pushed bytes"),
        "{noise}"
    );
    let all = server.get("/v1/streams", support::READ);
    assert_eq!(all["streams"].as_array().unwrap().len(), 2);
}
