//! Memory under stream churn (issue 15): streams come and go as on a platform's ingest,
//! each a short 720p clip pushed whole and ended, round after round with new ids. An
//! ended stream releases its decoder, frames and the hasher's image-sized buffers at
//! once (keeping only its policy state, forgotten an hour after the end). Before that
//! fix an ended stream kept about 39 MB (measured with 60 s streams); the bound here is
//! 6 MiB per ended stream after two warm-up rounds. Not flat yet: this test measured
//! about 2.5 MiB more resident memory per ended stream (the size of the clip pushed,
//! steady over 14 rounds, with or without glibc's dynamic mmap threshold; not thread
//! stacks: the thread count stays put) — issue 15 stays open for it.

mod support;

/// Streams per round and rounds.
const PER_ROUND: usize = 4;
const ROUNDS: usize = 10;

#[test]
fn an_ended_stream_keeps_less_than_6_mib_of_resident_memory() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.ts");
    support::encode("testsrc2=size=1280x720:rate=25", 3, 25, &clip);
    let d = support::start(
        "[server]\ntenant_requests_per_sec = 5000\ntenant_request_burst = 5000\n\
         [ingest]\nsampling = \"2/s\"\n",
    );
    let mut rss = Vec::new();
    for round in 0..ROUNDS {
        let ids: Vec<String> = (0..PER_ROUND).map(|i| format!("r{round}-s{i}")).collect();
        for id in &ids {
            support::push_file(&d, id, &clip);
            let (status, v) = d.call(
                "POST",
                &format!("/v1/streams/{id}/end"),
                Some(support::INGEST),
                b"",
            );
            assert_eq!(status, 200, "{v}");
        }
        for id in &ids {
            let s = d.wait_state(id, "ended");
            assert!(s["frames_sampled"].as_u64() >= Some(5), "{s}");
        }
        rss.push(support::rss_kib(&d));
    }
    eprintln!("RSS after each round of {PER_ROUND} streams (KiB): {rss:?}");
    // Rounds 0 and 1 warm up; the later rounds may add at most 6 MiB per stream
    // ended, where one kept decoder with its 720p frames is several times that.
    let (warm, last) = (rss[1], rss[ROUNDS - 1]);
    let streams = (PER_ROUND * (ROUNDS - 2)) as u64;
    assert!(
        last < warm + streams * 6 * 1024,
        "RSS grew from {warm} KiB to {last} KiB over {streams} streams: {rss:?}"
    );
    // Every stream is listed as ended (a small summary), none still holds a slot.
    let listed = d.get("/v1/streams", support::READ);
    let ended = listed["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "ended")
        .count();
    assert_eq!(ended, PER_ROUND * ROUNDS, "{listed}");
}
