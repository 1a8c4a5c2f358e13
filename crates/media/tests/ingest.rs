//! Live ingest on real encoded video (made with the ffmpeg CLI), decoded by FFmpeg:
//! sampling modes, pushed segments (in order, reordered, duplicated, corrupted), bad
//! input, backpressure, RTMP and SRT pulls, and bounded cancellation.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use firebreak_media::ingest::{
    Backoff, FeedItem, Intake, LiveStream, Pixels, SampledFrame, Sampling, Sequencer, Source,
    StreamConfig, StreamState, StreamStats, segment_channel,
};

/// 6 s of 1280x720 testsrc2 at 30 fps, H.264 with a 2 s GOP, as MPEG-TS.
fn clip(dir: &Path) -> PathBuf {
    let out = dir.join("clip.ts");
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30:duration=6",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
        ])
        .args(["-pix_fmt", "yuv420p", "-f", "mpegts"])
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg CLI");
    out
}

fn config(id: &str, sampling: Sampling) -> StreamConfig {
    let mut c = StreamConfig::new(id);
    c.sampling = sampling;
    c.queue_capacity = 1000;
    c
}

fn drain(s: &LiveStream) -> Vec<SampledFrame> {
    let mut out = Vec::new();
    while let Some(f) = s.frames().pop(Duration::ZERO) {
        out.push(f);
    }
    out
}

fn run_to_end(
    config: StreamConfig,
    source: Source,
) -> (Vec<SampledFrame>, firebreak_media::ingest::StreamStats) {
    let mut s = LiveStream::start(config, source);
    assert!(s.wait(Duration::from_secs(120)), "stream did not finish");
    let frames = drain(&s);
    let stats = s.stats();
    (frames, stats)
}

#[test]
fn file_sampling_modes() {
    let dir = tempfile::tempdir().unwrap();
    let file = clip(dir.path());
    let (frames, st) = run_to_end(config("every", Sampling::Every), Source::File(file.clone()));
    assert_eq!(st.state, StreamState::Ended, "{st:?}");
    assert_eq!((st.decoded, st.sampled, frames.len()), (180, 180, 180));
    assert_eq!(st.lag_ms, None, "a file has no live edge");
    for w in frames.windows(2) {
        assert!(
            (w[1].pts - w[0].pts - 1.0 / 30.0).abs() < 1e-3,
            "pts steps of 1/30 s: {} -> {}",
            w[0].pts,
            w[1].pts
        );
        assert_eq!(w[1].index, w[0].index + 1);
    }
    assert_eq!(
        (frames[0].width, frames[0].height, frames[0].rgb().len()),
        (1280, 720, 1280 * 720 * 3)
    );

    let (frames, st) = run_to_end(
        config("1fps", Sampling::PerSecond(1.0)),
        Source::File(file.clone()),
    );
    assert_eq!(st.decoded, 180);
    let pts: Vec<f64> = frames
        .iter()
        .map(|f| (f.pts * 1000.0).round() / 1000.0)
        .collect();
    assert_eq!(pts.len(), 6, "{pts:?}");
    for (i, p) in pts.iter().enumerate() {
        assert!((p - pts[0] - i as f64).abs() < 0.04, "{pts:?}");
    }

    let mut c = config("keys", Sampling::Keyframes);
    c.max_output = (640, 360);
    let (frames, st) = run_to_end(c, Source::File(file.clone()));
    assert_eq!(
        (st.decoded, st.sampled),
        (3, 3),
        "only the keyframes are decoded"
    );
    assert!(
        frames
            .iter()
            .all(|f| f.keyframe && f.width == 640 && f.height == 360)
    );

    // The shrunk keyframes against the ffmpeg CLI's own area downscale of the same
    // keyframes (one step: YUV to RGB with scaling). Firebreak shrinks the YUV frame
    // first, then converts it (a third of the instructions): chroma is then averaged
    // before it is upsampled, so testsrc2's sharp colour edges bleed by up to ~230
    // levels on a few pixels (measured: mean 1.6-1.8 levels a value), and the frames'
    // PDQ hashes stay 0-4 bits from the CLI's (bounds below: 2.5 levels, 8 bits, far
    // under the matching threshold of 31).
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-skip_frame", "nokey", "-i"])
        .arg(&file)
        .args(["-vf", "scale=640:360:flags=area,format=rgb24"])
        .args(["-fps_mode", "passthrough", "-f", "rawvideo", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = 640 * 360 * 3;
    assert_eq!(out.stdout.len(), frames.len() * size, "the CLI's keyframes");
    for (i, (f, want)) in frames.iter().zip(out.stdout.chunks_exact(size)).enumerate() {
        assert_eq!(f.rgb().len(), size);
        let total: u64 = f
            .rgb()
            .iter()
            .zip(want)
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        let mean = total as f64 / size as f64;
        let pdq = |px: &[u8]| {
            let img = firebreak_hashing::ImageView::packed(
                px,
                640,
                360,
                firebreak_hashing::PixelFormat::Rgb8,
            )
            .unwrap();
            firebreak_hashing::PdqHasher::new().hash(&img).hash
        };
        assert!(mean < 2.5, "keyframe {i}: mean difference {mean:.3}");
        let bits = pdq(&f.rgb()).distance(&pdq(want));
        assert!(
            bits <= 8,
            "keyframe {i}: PDQ {bits} bits from the CLI's frame"
        );
    }
}

/// A stream told not to make RGB hands the decoder's own planes on: the keyframes'
/// Y'CbCr equals the ffmpeg CLI's decode of the same keyframes byte for byte (H.264
/// decoding is exact), at full size and shrunk to 640x360 (the CLI's own area
/// downscale in YUV). PDQ from the Y' plane lands within 8 bits of PDQ of the CLI's
/// RGB frames (measured: 0-2 bits at 720p, 0-4 at 640x360), the RGB a thumbnail is
/// made from within 3 levels on average of the CLI's (measured: 0.6 at 720p, 2.1-2.3
/// at 640x360, where the CLI converts before it shrinks), and the flag is read frame
/// by frame.
#[test]
fn frames_sampled_without_rgb_carry_the_decoders_planes() {
    let dir = tempfile::tempdir().unwrap();
    let file = clip(dir.path());
    let cli = |vf: &str| {
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-skip_frame", "nokey", "-i"])
            .arg(&file)
            .args(["-vf", vf, "-fps_mode", "passthrough", "-f", "rawvideo", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let pdq =
        |img: firebreak_hashing::ImageView<'_>| firebreak_hashing::PdqHasher::new().hash(&img);
    for (w, h) in [(1280usize, 720usize), (640, 360)] {
        let mut c = config("planes", Sampling::Keyframes);
        c.max_output = (w as u32, h as u32);
        c.rgb.store(false, std::sync::atomic::Ordering::Relaxed);
        let (frames, st) = run_to_end(c, Source::File(file.clone()));
        assert_eq!((st.sampled, frames.len()), (3, 3), "{st:?}");
        let planes = cli(&format!("scale={w}:{h}:flags=area,format=yuv420p"));
        let rgbs = cli(&format!("scale={w}:{h}:flags=area,format=rgb24"));
        let yuv_size = w * h * 3 / 2;
        assert_eq!(planes.len(), 3 * yuv_size, "the CLI's keyframes");
        assert_eq!(rgbs.len(), 3 * w * h * 3, "the CLI's keyframes");
        for (i, f) in frames.iter().enumerate() {
            let Pixels::Yuv420(got) = &f.pixels else {
                panic!("keyframe {i} was converted to RGB");
            };
            let want = &planes[i * yuv_size..(i + 1) * yuv_size];
            assert_eq!(got.len(), yuv_size);
            assert!(
                **got == *want,
                "keyframe {i} at {w}x{h}: planes differ from the CLI's"
            );
            let img = f.image().unwrap();
            assert_eq!(
                (img.width(), img.height()),
                (w, h),
                "PDQ takes the Y' plane"
            );
            let rgb_want = &rgbs[i * w * h * 3..(i + 1) * w * h * 3];
            let cli_rgb = firebreak_hashing::ImageView::packed(
                rgb_want,
                w,
                h,
                firebreak_hashing::PixelFormat::Rgb8,
            )
            .unwrap();
            let bits = pdq(img).hash.distance(&pdq(cli_rgb).hash);
            assert!(
                bits <= 8,
                "keyframe {i} at {w}x{h}: PDQ {bits} bits from the CLI's RGB"
            );
            let rgb = f.rgb();
            assert_eq!(rgb.len(), w * h * 3);
            let total: u64 = rgb
                .iter()
                .zip(rgb_want)
                .map(|(a, b)| u64::from(a.abs_diff(*b)))
                .sum();
            let mean = total as f64 / rgb.len() as f64;
            assert!(
                mean < 3.0,
                "keyframe {i}: thumbnail RGB {mean:.2} levels from the CLI's"
            );
        }
    }
    // The flag is read for every frame. The clip pushed in two halves, the flag turned
    // on between them: the first frame was decoded before (planes), the last only
    // after the second half arrived (RGB).
    let bytes = std::fs::read(&file).unwrap();
    let (first_half, second_half) = bytes.split_at(bytes.len() / 2);
    let c = config("switch", Sampling::Every);
    c.rgb.store(false, std::sync::atomic::Ordering::Relaxed);
    let flag = c.rgb.clone();
    let (feed, reader) = segment_channel(4);
    let mut s = LiveStream::start(c, Source::Segments(reader));
    feed.send(FeedItem::Bytes(first_half.to_vec())).unwrap();
    let first = s
        .frames()
        .pop(Duration::from_secs(60))
        .expect("a first frame");
    assert!(matches!(first.pixels, Pixels::Yuv420(_)));
    flag.store(true, std::sync::atomic::Ordering::Relaxed);
    feed.send(FeedItem::Bytes(second_half.to_vec())).unwrap();
    drop(feed);
    assert!(s.wait(Duration::from_secs(60)), "stream did not finish");
    let rest = drain(&s);
    let last = rest.last().expect("frames after the switch");
    assert_eq!(last.index, 179, "every frame reached the queue");
    assert!(matches!(last.pixels, Pixels::Rgb24(_)));
}

/// Per-second sampling skips decoding the frames nothing refers to (B-frames here) when
/// they come before the next sampling time, and samples exactly the frames, with the
/// same pixels, that decoding everything would: for each half second, the first frame
/// at or after it (the sampling rule, applied to the full decode).
#[test]
fn per_second_sampling_skips_unreferenced_frames_with_the_same_samples() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bframes.ts");
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=25:duration=4")
        .args(["-c:v", "libx264", "-preset", "veryfast", "-bf", "2"])
        .args(["-x264-params", "b-pyramid=none:b-adapt=0", "-g", "25"])
        .args(["-pix_fmt", "yuv420p", "-f", "mpegts"])
        .arg(&file)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg CLI");
    // ffprobe's picture types: B-frames are not references without a B-pyramid.
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-show_entries"])
        .args(["frame=pict_type", "-of", "json"])
        .arg(&file)
        .output()
        .unwrap();
    let probe: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let types: Vec<&str> = probe["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["pict_type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 100);
    let references = types.iter().filter(|t| **t != "B").count();
    assert!(references < 50, "{types:?}");

    let (all, st) = run_to_end(config("all", Sampling::Every), Source::File(file.clone()));
    assert_eq!(st.decoded, 100);
    let mut want = Vec::new();
    for k in 0..8 {
        let at = f64::from(k) * 0.5;
        let first = all.iter().find(|f| f.pts + 1e-6 >= at).unwrap();
        if want
            .last()
            .is_none_or(|w: &&SampledFrame| w.index != first.index)
        {
            want.push(first);
        }
    }
    let (sampled, st) = run_to_end(config("2/s", Sampling::PerSecond(2.0)), Source::File(file));
    assert_eq!(st.state, StreamState::Ended, "{st:?}");
    assert_eq!(sampled.len(), want.len());
    for (got, want) in sampled.iter().zip(&want) {
        assert_eq!((got.pts * 1e3).round(), (want.pts * 1e3).round());
        assert!(got.rgb() == want.rgb(), "frame at {} differs", got.pts);
    }
    assert!(
        st.decoded >= references as u64 && st.decoded < 100,
        "decoded {} of 100 frames ({references} references)",
        st.decoded
    );
}

/// The clip's bytes cut at arbitrary offsets (not at keyframes), so GOPs span segments.
fn cut(file: &Path, size: usize) -> Vec<Vec<u8>> {
    std::fs::read(file)
        .unwrap()
        .chunks(size)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Pushes segments in the given order through a sequencer into a stream.
fn push(
    order: &[(u64, Vec<u8>)],
    first: u64,
    window: u64,
) -> (
    Vec<SampledFrame>,
    firebreak_media::ingest::StreamStats,
    firebreak_media::ingest::SequencerStats,
) {
    let (feed, reader) = segment_channel(1024);
    let mut s = LiveStream::start(config("pushed", Sampling::Every), Source::Segments(reader));
    let mut seq = Sequencer::starting_at(first, window);
    for (n, bytes) in order {
        if let Intake::Released { segments, .. } = seq.push(*n, bytes.clone()) {
            for (_, b) in segments {
                feed.send(FeedItem::Bytes(b)).unwrap();
            }
        }
    }
    for (_, b, _) in seq.finish() {
        feed.send(FeedItem::Bytes(b)).unwrap();
    }
    drop(feed);
    assert!(s.wait(Duration::from_secs(120)));
    let frames = drain(&s);
    (frames, s.stats(), seq.stats())
}

#[test]
fn pushed_segments_in_order_reordered_and_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let parts = cut(&clip(dir.path()), 150_000);
    assert!(parts.len() >= 4, "{} parts", parts.len());
    let in_order: Vec<(u64, Vec<u8>)> = parts
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, b)| (100 + i as u64, b))
        .collect();
    let (frames, st, _) = push(&in_order, 100, 4);
    assert_eq!(st.state, StreamState::Ended);
    assert_eq!(
        frames.len(),
        180,
        "a GOP split across segments decodes whole"
    );
    for w in frames.windows(2) {
        assert!(
            (w[1].pts - w[0].pts - 1.0 / 30.0).abs() < 1e-3,
            "continuous pts across segments"
        );
    }

    // Swap neighbours and send some twice: the sequencer restores the order.
    let mut shuffled = Vec::new();
    for pair in in_order.chunks(2) {
        shuffled.extend(pair.iter().rev().cloned());
        shuffled.push(pair[0].clone());
    }
    let (frames, _, seq) = push(&shuffled, 100, 4);
    assert_eq!(frames.len(), 180);
    assert_eq!(seq.duplicates, in_order.len().div_ceil(2) as u64);
    assert!(seq.reordered > 0);
    assert_eq!(seq.missing, 0);
}

#[test]
fn corrupt_segment_recovers_at_the_next_keyframe() {
    let dir = tempfile::tempdir().unwrap();
    let mut parts = cut(&clip(dir.path()), 150_000);
    // Garble the middle of the second segment.
    let mid = parts[1].len() / 2;
    for b in &mut parts[1][mid - 20_000..mid + 20_000] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    let order: Vec<(u64, Vec<u8>)> = parts
        .into_iter()
        .enumerate()
        .map(|(i, b)| (i as u64, b))
        .collect();
    let (frames, st, _) = push(&order, 0, 4);
    assert_eq!(st.state, StreamState::Ended);
    assert!(frames.len() < 180, "some frames are lost to the damage");
    let last = frames.last().unwrap().pts - frames[0].pts;
    assert!(
        last > 5.9,
        "decoding continues to the end after the damage (last pts {last})"
    );
}

#[test]
fn bad_input_is_an_error_on_that_stream_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = clip(dir.path());
    // A healthy stream runs beside the broken ones.
    let healthy = LiveStream::start(
        config("healthy", Sampling::Every),
        Source::File(file.clone()),
    );

    let (feed, reader) = segment_channel(16);
    let noise = LiveStream::start(config("noise", Sampling::Every), Source::Segments(reader));
    let mut x = 12345u64;
    for _ in 0..8 {
        let bytes: Vec<u8> = (0..65536)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect();
        feed.send(FeedItem::Bytes(bytes)).unwrap();
    }
    drop(feed);

    let text = dir.path().join("not-video.mp4");
    std::fs::write(&text, "this is not a video").unwrap();
    let not_video = LiveStream::start(config("text", Sampling::Every), Source::File(text));

    let mut small = config("too-big", Sampling::Every);
    small.max_input = (640, 480);
    let too_big = LiveStream::start(small, Source::File(file));

    let (_, empty_reader) = segment_channel(1);
    let empty = LiveStream::start(
        config("empty", Sampling::Every),
        Source::Segments(empty_reader),
    );

    for mut s in [noise, not_video, too_big, empty] {
        assert!(s.wait(Duration::from_secs(60)), "{} did not finish", s.id());
        let st = s.stats();
        assert_eq!(st.decoded, 0, "{}", s.id());
        match s.id() {
            "too-big" => {
                assert_eq!(st.state, StreamState::Failed);
                assert!(
                    st.error.as_deref().unwrap().contains("above the maximum"),
                    "{st:?}"
                );
            }
            "text" => {
                assert_eq!(st.state, StreamState::Failed);
                assert!(st.error.is_some());
            }
            _ => assert!(
                matches!(st.state, StreamState::Ended | StreamState::Failed),
                "{st:?}"
            ),
        }
    }
    let mut healthy = healthy;
    assert!(healthy.wait(Duration::from_secs(60)));
    assert_eq!(healthy.stats().decoded, 180);
}

#[test]
fn slow_detectors_drop_latest_wins_then_degrade_to_keyframes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config("slow", Sampling::Every);
    c.queue_capacity = 4;
    c.degrade_after = 10;
    let mut s = LiveStream::start(c, Source::File(clip(dir.path())));
    assert!(s.wait(Duration::from_secs(60)));
    let st = s.stats();
    let queued = drain(&s);
    assert_eq!(queued.len(), 4, "the queue stays bounded");
    assert_eq!(st.sampled, st.dropped_queue_full + 4);
    assert_eq!(st.degraded, 1);
    assert!(
        st.decoded < 180,
        "after degrading, only keyframes are decoded ({})",
        st.decoded
    );
    // The newest frames win: the queue holds the last four sampled, the final one being
    // the last keyframe (4 s).
    let indices: Vec<u64> = queued.iter().map(|f| f.index).collect();
    assert_eq!(indices, (st.sampled - 4..st.sampled).collect::<Vec<_>>());
    assert!(queued.last().unwrap().keyframe && queued.last().unwrap().pts > 3.9);
}

/// The whole clip pushed at once to a stream with a 2-frame queue.
fn burst(max_lag: Duration) -> LiveStream {
    let dir = tempfile::tempdir().unwrap();
    let parts = cut(&clip(dir.path()), 150_000);
    let (feed, reader) = segment_channel(1024);
    let mut c = config("burst", Sampling::Every);
    c.queue_capacity = 2;
    c.degrade_after = u64::MAX;
    c.max_lag = max_lag;
    let s = LiveStream::start(c, Source::Segments(reader));
    for p in parts {
        feed.send(FeedItem::Bytes(p)).unwrap();
    }
    s
}

#[test]
fn a_pushed_burst_is_analysed_in_full_while_within_the_lag_budget() {
    let mut s = burst(Duration::from_secs(600));
    // Detectors slower than the decoder: a frame every 20 ms.
    let mut taken = Vec::new();
    while taken.len() < 180 {
        if let Some(f) = s.frames().pop(Duration::from_secs(60)) {
            taken.push(f.index);
            std::thread::sleep(Duration::from_millis(20));
        } else {
            break;
        }
    }
    assert!(s.wait(Duration::from_secs(60)));
    let st = s.stats();
    // 6 s at 30 fps, every frame sampled; none dropped, in order.
    assert_eq!(st.dropped_queue_full, 0);
    assert_eq!(taken, (0..180).collect::<Vec<_>>());
}

#[test]
fn a_pushed_burst_sheds_frames_once_past_the_lag_budget() {
    let mut s = burst(Duration::ZERO);
    // Nothing is taken until the decoder is done: everything but the last two gives way.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while s.stats().sampled < 180 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = s.stats();
    assert_eq!(st.sampled, 180);
    assert_eq!(st.dropped_queue_full, 178);
    let queued: Vec<u64> = drain(&s).iter().map(|f| f.index).collect();
    assert_eq!(queued, vec![178, 179]);
    assert!(s.wait(Duration::from_secs(60)));
}

use firebreak_testkit::net::free_port;

/// A live source served by the ffmpeg CLI, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(output: &[&str]) -> Server {
    Server(
        Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=640x360:rate=30",
            ])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-g",
                "30",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(output)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn pull_until_frames(url: String, frames: u64) -> LiveStream {
    let mut c = config("pull", Sampling::Every);
    c.reconnect = Backoff::new(Duration::from_millis(200), Duration::from_secs(1), 50);
    let s = LiveStream::start(c, Source::Url(url));
    let started = std::time::Instant::now();
    while s.stats().decoded < frames {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no frames: {:?}",
            s.stats()
        );
        let _ = s.frames().pop(Duration::from_millis(50));
    }
    s
}

#[test]
fn rtmp_pull_goes_live_and_stops_promptly() {
    let port = free_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/stream");
    let _server = serve(&["-f", "flv", "-listen", "1", &url]);
    let s = pull_until_frames(url, 30);
    assert_eq!(s.stats().state, StreamState::Live);
    assert!(s.stop(Duration::from_secs(10)), "stop is bounded");
}

#[test]
fn srt_pull_goes_live() {
    let port = free_port();
    let _server = serve(&[
        "-f",
        "mpegts",
        &format!("srt://127.0.0.1:{port}?mode=listener"),
    ]);
    let s = pull_until_frames(format!("srt://127.0.0.1:{port}?mode=caller"), 30);
    assert_eq!(s.stats().state, StreamState::Live);
    assert!(s.stop(Duration::from_secs(10)));
}

#[test]
fn stop_interrupts_a_blocked_read() {
    // A server that accepts and then says nothing: the open blocks in FFmpeg.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, accepted_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let hold = std::thread::spawn(move || {
        let conn = listener.accept();
        accepted_tx.send(()).unwrap();
        // Hold the connection open, silent, until the test is done.
        let _ = release_rx.recv();
        drop(conn);
    });
    let mut c = config("silent", Sampling::Every);
    c.read_timeout = Duration::from_secs(600);
    let s = LiveStream::start(c, Source::Url(format!("http://127.0.0.1:{port}/live.ts")));
    // The connection is accepted: FFmpeg now waits for a response that never comes.
    accepted_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(s.stats().state, StreamState::Starting);
    assert!(
        s.stop(Duration::from_secs(5)),
        "cancellation interrupts the blocked read"
    );
    release_tx.send(()).unwrap();
    hold.join().unwrap();
}

/// A directory served over HTTP by Python's http.server, stopped on drop.
fn http_server(dir: &Path) -> (Server, u16) {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it accepts connections.
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (Server(child), port)
}

#[test]
fn hls_live_over_http_grows_while_read_then_ends() {
    let dir = tempfile::tempdir().unwrap();
    // A live HLS stream written in real time: 8 s, 1 s segments, the playlist growing.
    let writer = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30:duration=8",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "0",
            "-hls_flags",
            "independent_segments",
        ])
        .arg(dir.path().join("live.m3u8"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _writer = Server(writer);
    let (_http, port) = http_server(dir.path());
    // Wait for the first playlist to exist (the writer creates it after one segment).
    let started = std::time::Instant::now();
    while !dir.path().join("live.m3u8").exists() {
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("http://127.0.0.1:{port}/live.m3u8");
    let mut c = config("hls", Sampling::Every);
    c.queue_capacity = 1000;
    let mut s = LiveStream::start(
        c,
        Source::Hls(firebreak_media::ingest::hls::HlsConfig::new(url)),
    );
    // It goes live while the writer is still writing.
    let t = std::time::Instant::now();
    while s.stats().state != StreamState::Live {
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", s.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.wait(Duration::from_secs(60)), "ends with #EXT-X-ENDLIST");
    let st = s.stats();
    let hls = s.hls_counters().unwrap();
    let frames = drain(&s);
    assert_eq!(st.state, StreamState::Ended, "{st:?}");
    assert!(
        hls.reloads.load(std::sync::atomic::Ordering::Relaxed) >= 3,
        "the playlist was polled as it grew"
    );
    // Started near the live edge, then every frame to the end, with continuous pts.
    assert!(frames.len() >= 150, "{} frames", frames.len());
    for w in frames.windows(2) {
        assert!(
            (w[1].pts - w[0].pts - 1.0 / 30.0).abs() < 1e-3,
            "{} -> {}",
            w[0].pts,
            w[1].pts
        );
    }
    assert!(frames.last().unwrap().pts > 7.9);
}

#[test]
fn hls_vod_with_a_missing_segment_and_a_bad_playlist() {
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30:duration=6",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "0",
            "-hls_playlist_type",
            "vod",
        ])
        .arg(dir.path().join("vod.m3u8"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::fs::remove_file(dir.path().join("vod2.ts")).unwrap();
    let mut hls =
        firebreak_media::ingest::hls::HlsConfig::new(dir.path().join("vod.m3u8").to_string_lossy());
    hls.retry = (Duration::from_millis(10), Duration::from_millis(20), 2);
    let mut s = LiveStream::start(config("vod", Sampling::Every), Source::Hls(hls));
    assert!(s.wait(Duration::from_secs(60)));
    let st = s.stats();
    let counters = s.hls_counters().unwrap();
    assert_eq!(st.state, StreamState::Ended);
    assert_eq!(
        counters.missing.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        counters
            .segment_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        3,
        "first try and two retries"
    );
    assert_eq!(st.decoded, 150, "every frame but the missing second");

    let bad = dir.path().join("bad.m3u8");
    std::fs::write(&bad, "<html>not found</html>").unwrap();
    let mut hls = firebreak_media::ingest::hls::HlsConfig::new(bad.to_string_lossy());
    hls.retry = (Duration::from_millis(10), Duration::from_millis(20), 0);
    hls.max_reload_failures = 2;
    let mut s = LiveStream::start(config("bad", Sampling::Every), Source::Hls(hls));
    assert!(s.wait(Duration::from_secs(60)));
    let st = s.stats();
    assert_eq!(st.decoded, 0);
    assert!(
        st.error
            .as_deref()
            .unwrap_or("")
            .contains("not an HLS playlist"),
        "{st:?}"
    );
}

#[test]
fn lifecycle_live_stalled_live_ended() {
    let dir = tempfile::tempdir().unwrap();
    let parts = cut(&clip(dir.path()), 150_000);
    let (feed, reader) = segment_channel(64);
    let mut c = config("lifecycle", Sampling::Every);
    c.stall_after = Duration::from_millis(300);
    let mut s = LiveStream::start(c, Source::Segments(reader));
    assert_eq!(s.stats().state, StreamState::Starting);
    let half = parts.len() / 2;
    for p in &parts[..half] {
        feed.send(FeedItem::Bytes(p.clone())).unwrap();
    }
    let wait_for = |s: &LiveStream, want: StreamState| {
        let t = std::time::Instant::now();
        while s.stats().state != want {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "never {want:?}: {:?}",
                s.stats()
            );
            let _ = s.frames().pop(Duration::from_millis(10));
        }
    };
    wait_for(&s, StreamState::Live);
    // The platform stops sending: no frame for 300 ms -> stalled.
    wait_for(&s, StreamState::Stalled);
    let before = s.stats().decoded;
    for p in &parts[half..] {
        feed.send(FeedItem::Bytes(p.clone())).unwrap();
    }
    wait_for(&s, StreamState::Live);
    drop(feed);
    assert!(s.wait(Duration::from_secs(60)));
    let st = s.stats();
    assert_eq!(st.state, StreamState::Ended);
    assert!(st.decoded > before);
    assert_eq!(st.decoded, 180);
    // Segment sources report how long their bytes waited before being decoded.
    assert!(st.lag_ms.is_some_and(|l| l < 60_000), "{st:?}");
}

#[test]
fn fmp4_init_segment_then_media_segments() {
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30:duration=4",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "0",
            "-hls_segment_type",
            "fmp4",
        ])
        .args(["-hls_fmp4_init_filename", "init.mp4"])
        .arg(dir.path().join("v.m3u8"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut segments = vec![std::fs::read(dir.path().join("init.mp4")).unwrap()];
    for i in 0.. {
        match std::fs::read(dir.path().join(format!("v{i}.m4s"))) {
            Ok(b) => segments.push(b),
            Err(_) => break,
        }
    }
    assert!(segments.len() >= 4);
    let order: Vec<(u64, Vec<u8>)> = segments
        .into_iter()
        .enumerate()
        .map(|(i, b)| (i as u64, b))
        .collect();
    let (frames, st, _) = push(&order, 0, 4);
    assert_eq!(st.state, StreamState::Ended, "{st:?}");
    assert_eq!(frames.len(), 120);
}

#[test]
fn rtmp_source_restarts_and_the_stream_reconnects() {
    let port = free_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/stream");
    let server = serve(&["-f", "flv", "-listen", "1", &url]);
    let mut c = config("reconnect", Sampling::Every);
    c.reconnect = Backoff::new(Duration::from_millis(100), Duration::from_millis(500), 100);
    c.read_timeout = Duration::from_secs(2);
    let s = LiveStream::start(c, Source::Url(url.clone()));
    let wait_decoded = |s: &LiveStream, n: u64| {
        let t = std::time::Instant::now();
        while s.stats().decoded < n {
            assert!(t.elapsed() < Duration::from_secs(60), "{:?}", s.stats());
            let _ = s.frames().pop(Duration::from_millis(20));
        }
    };
    wait_decoded(&s, 30);
    drop(server); // the source goes away
    let t = std::time::Instant::now();
    while s.stats().reconnects == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no reconnect attempt: {:?}",
            s.stats()
        );
        let _ = s.frames().pop(Duration::from_millis(20));
    }
    let before = s.stats().decoded;
    let _server = serve(&["-f", "flv", "-listen", "1", &url]); // and comes back
    wait_decoded(&s, before + 30);
    let st = s.stats();
    assert_eq!(st.state, StreamState::Live);
    assert!(st.reconnects >= 1);
    assert!(s.stop(Duration::from_secs(10)));
}

#[test]
fn unsupported_codec_fails_the_stream_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mkv = dir.path().join("a.mkv");
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x64:rate=5:duration=1",
        ])
        .args(["-c:v", "mpeg4", "-f", "matroska"])
        .arg(&mkv)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // Rename the codec to one no FFmpeg build knows (same length, so the file stays valid).
    let mut bytes = std::fs::read(&mkv).unwrap();
    let at = bytes
        .windows(15)
        .position(|w| w == b"V_MPEG4/ISO/ASP")
        .expect("codec id in the file");
    bytes[at..at + 15].copy_from_slice(b"V_FIREBREAKTEST");
    let unknown = dir.path().join("unknown.mkv");
    std::fs::write(&unknown, bytes).unwrap();
    let (frames, st) = run_to_end(
        config("unknown-codec", Sampling::Every),
        Source::File(unknown),
    );
    assert!(frames.is_empty());
    assert_eq!(st.state, StreamState::Failed);
    assert!(
        st.error.as_deref().unwrap().contains("unsupported codec"),
        "{st:?}"
    );
}

#[test]
fn discontinuity_restarts_the_demuxer_with_continuous_media_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = std::fs::read(clip(dir.path())).unwrap();
    // A second, different stream (another size and content) after the discontinuity.
    let b_path = dir.path().join("b.ts");
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "mandelbrot=size=320x240:rate=25",
        ])
        .args([
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "mpegts",
        ])
        .arg(&b_path)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let b = std::fs::read(&b_path).unwrap();
    let (feed, reader) = segment_channel(16);
    let mut s = LiveStream::start(config("disc", Sampling::Every), Source::Segments(reader));
    feed.send(FeedItem::Bytes(a)).unwrap();
    feed.send(FeedItem::Discontinuity).unwrap();
    feed.send(FeedItem::Bytes(b)).unwrap();
    drop(feed);
    assert!(s.wait(Duration::from_secs(60)));
    let st = s.stats();
    let frames = drain(&s);
    assert_eq!(st.state, StreamState::Ended);
    assert_eq!(st.discontinuities, 1);
    assert_eq!(st.decoded, 180 + 50);
    assert_eq!((frames[0].width, frames.last().unwrap().width), (1280, 320));
    assert!(
        frames.windows(2).all(|w| w[1].pts > w[0].pts),
        "media time keeps increasing"
    );
}

/// `seconds` of 25 fps testsrc2 at `size`, H.264 with a 1 s GOP in MPEG-TS, its
/// timestamps offset by `offset` seconds.
fn clip_at(dir: &Path, name: &str, size: &str, seconds: u32, offset: u32) -> Vec<u8> {
    let out = dir.join(name);
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=25:duration={seconds}"))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-pix_fmt", "yuv420p", "-output_ts_offset"])
        .arg(offset.to_string())
        .args(["-f", "mpegts"])
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg CLI");
    std::fs::read(out).unwrap()
}

/// Pushes `bytes` as one segment (no discontinuity) and runs the stream to its end.
fn push_one(config: StreamConfig, bytes: Vec<u8>) -> (Vec<SampledFrame>, StreamStats) {
    let (feed, reader) = segment_channel(4);
    let mut s = LiveStream::start(config, Source::Segments(reader));
    feed.send(FeedItem::Bytes(bytes)).unwrap();
    drop(feed);
    assert!(s.wait(Duration::from_secs(60)), "stream did not finish");
    let frames = drain(&s);
    (frames, s.stats())
}

/// Two clips back to back in one byte stream, the first with timestamps 1000 s ahead:
/// the stream's timestamps jump 1000 s backwards after 2 s. Sampling once waited for
/// media time to pass 1002 s again (no sample from the second clip); now the jump is a
/// counted discontinuity, media time continues one frame on, and 2 samples/s go on.
#[test]
fn a_timestamp_jump_keeps_sampling_at_the_configured_rate() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = clip_at(dir.path(), "ahead.ts", "320x240", 2, 1000);
    bytes.extend(clip_at(dir.path(), "normal.ts", "320x240", 2, 0));
    let (frames, st) = push_one(config("jump", Sampling::PerSecond(2.0)), bytes);
    assert_eq!(st.state, StreamState::Ended, "{st:?}");
    assert_eq!(st.decoded, 100);
    assert_eq!((st.pts_jumps, st.discontinuities), (1, 1), "{st:?}");
    // 4 s of media at 2/s: frames at 0, 0.52, 1.0, 1.52 of the first clip, then (its
    // first frame one 0.04 s step after the last, at 2.0) 2.0, 2.52, 3.0, 3.52.
    let pts: Vec<f64> = frames
        .iter()
        .map(|f| (f.pts * 100.0).round() / 100.0)
        .collect();
    assert_eq!(pts, vec![0.0, 0.52, 1.0, 1.52, 2.0, 2.52, 3.0, 3.52]);
    assert_eq!(st.sampled, 8);
}

/// A forward jump of 1000 s is one discontinuity too: media time goes on from the last
/// frame instead of leaping (which would empty every media-time window at once).
#[test]
fn a_far_forward_timestamp_jump_continues_media_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = clip_at(dir.path(), "first.ts", "320x240", 2, 0);
    bytes.extend(clip_at(dir.path(), "later.ts", "320x240", 2, 1000));
    let (frames, st) = push_one(config("leap", Sampling::PerSecond(2.0)), bytes);
    assert_eq!(st.state, StreamState::Ended, "{st:?}");
    assert_eq!((st.decoded, st.pts_jumps, st.discontinuities), (100, 1, 1));
    let pts: Vec<f64> = frames
        .iter()
        .map(|f| (f.pts * 100.0).round() / 100.0)
        .collect();
    assert_eq!(pts, vec![0.0, 0.52, 1.0, 1.52, 2.0, 2.52, 3.0, 3.52]);
}

/// A stream whose declared size is above the maximum (640x480 against 320x240) is
/// refused before its decoder opens: failed, with the sizes in the reason, and not one
/// frame decoded.
#[test]
fn an_oversized_stream_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = clip_at(dir.path(), "big.ts", "640x480", 2, 0);
    let mut c = config("big", Sampling::Every);
    c.max_input = (320, 240);
    let (frames, st) = push_one(c, bytes);
    assert!(frames.is_empty());
    assert_eq!(st.state, StreamState::Failed, "{st:?}");
    assert_eq!((st.decoded, st.sampled), (0, 0));
    assert!(
        st.error
            .as_deref()
            .unwrap()
            .contains("resolution 640x480 above the maximum 320x240"),
        "{st:?}"
    );
}

/// A stream that starts within the maximum and grows past it mid-stream (a new
/// sequence header in the same byte stream): the decoder, opened with the maximum as
/// its pixel cap, allocates no frame of the larger size (the first one was once decoded
/// before the check refused it), and the stream fails with the new size as the reason.
#[test]
fn a_stream_growing_past_the_maximum_fails_without_an_oversized_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = clip_at(dir.path(), "small.ts", "320x240", 2, 0);
    bytes.extend(clip_at(dir.path(), "grown.ts", "640x480", 2, 2));
    let mut c = config("grows", Sampling::Every);
    c.max_input = (320, 240);
    let (frames, st) = push_one(c, bytes);
    assert_eq!(frames.len(), 50, "{st:?}");
    assert!(frames.iter().all(|f| (f.width, f.height) == (320, 240)));
    assert_eq!((st.decoded, st.decode_errors), (50, 1), "{st:?}");
    assert_eq!(st.state, StreamState::Failed, "{st:?}");
    assert_eq!(
        st.error.as_deref(),
        Some("resolution 640x480 above the maximum 320x240")
    );
}
