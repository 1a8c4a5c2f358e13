//! How many live 720p30 streams one core keeps up with, sampling one frame per second:
//! decodes the 60 s benchmark video on one decoder thread as fast as possible through
//! the live-stream path (demux, decode, sample, convert), in full-decode and
//! keyframe-only modes, and divides media seconds by wall seconds. A live stream
//! arrives in real time, so that ratio is the number of such streams one core sustains.
//! Run beside `ffmpeg -threads 1 -i VIDEO -f null -` (benches/ingest_capacity.sh).

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use firebreak_media::ingest::{LiveStream, Sampling, Source, StreamConfig};

fn run(mode: &str, sampling: Sampling) {
    let video = firebreak_benches::video_720p30_60s();
    let mut config = StreamConfig::new(mode);
    config.sampling = sampling;
    config.threads = 1;
    config.queue_capacity = 10_000;
    let started = Instant::now();
    let mut s = LiveStream::start(config, Source::File(video));
    assert!(s.wait(Duration::from_secs(600)));
    let wall = started.elapsed().as_secs_f64();
    let st = s.stats();
    let media = 60.0;
    println!(
        "{{\"mode\": \"{mode}\", \"decoded\": {}, \"sampled\": {}, \"wall_s\": {wall:.3}, \
         \"decoded_fps\": {:.1}, \"streams_per_core\": {:.1}}}",
        st.decoded,
        st.sampled,
        st.decoded as f64 / wall,
        media / wall
    );
}

fn main() {
    run("full-decode-1fps", Sampling::PerSecond(1.0));
    run("keyframes-only", Sampling::Keyframes);
}
