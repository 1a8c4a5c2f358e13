//! Live vPDQ window on a real stream: a banked clip, re-encoded at another size and
//! bitrate, spliced between unrelated videos with the ffmpeg CLI, decoded with FFmpeg
//! and sampled twice a second. The window must detect the clip a few media seconds after
//! its first frame, and nothing in the unrelated parts may match.

use std::path::PathBuf;
use std::process::Command;

use firebreak_matching::bank::{Bank, ImportPolicy};
use firebreak_matching::lists::{Record, Signal};
use firebreak_matching::matcher::{MatchConfig, Matcher};
use firebreak_matching::window::{VpdqWindow, WindowConfig, WindowEvent};
use firebreak_media::vpdq::{Conversion, VpdqOptions, hash_file};

fn conformance(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/vpdq")
        .join(rel)
}

/// Media time at which the clip starts in the spliced stream, and its length.
const CLIP_START: f64 = 8.0;
const CLIP_LEN: f64 = 14.0;

#[test]
fn spliced_clip_is_detected_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let spliced = dir.path().join("spliced.mp4");
    // Unrelated 8 s, then 14 s of the banked clip (from 3 s in), then unrelated 4.3 s;
    // everything scaled to 360x540 (the clip is 480x720) and encoded at 250 kbit/s.
    let filter = format!(
        "[0:v]trim=duration={CLIP_START},setpts=PTS-STARTPTS,scale=360:540,setsar=1,fps=30[a];\
         [1:v]trim=start=3:duration={CLIP_LEN},setpts=PTS-STARTPTS,scale=360:540,setsar=1,fps=30[b];\
         [2:v]setpts=PTS-STARTPTS,scale=360:540,setsar=1,fps=30[c];\
         [a][b][c]concat=n=3:v=1:a=0[out]"
    );
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .arg("-i")
        .arg(conformance("videos/pattern-longer-no-bar.mp4"))
        .arg("-i")
        .arg(conformance("videos/chair-orig-22-sd-bar.mp4"))
        .arg("-i")
        .arg(conformance("videos/doorknob-hd-no-bar.mp4"))
        .args(["-filter_complex", &filter, "-map", "[out]", "-an"])
        .args([
            "-c:v", "libx264", "-b:v", "250k", "-preset", "veryfast", "-g", "60",
        ])
        .arg(&spliced)
        .status()
        .expect("ffmpeg CLI (apt package ffmpeg)");
    assert!(status.success());

    // The bank holds the reference hashes of the original clip (every frame).
    let text = std::fs::read_to_string(conformance("expected/chair-orig-22-sd-bar.txt")).unwrap();
    let mut bank = Bank::new("crisis", false);
    let report = bank.import(
        vec![Record {
            line: 1,
            id: Some("chair".into()),
            signal: Signal::Vpdq(firebreak_hashing::vpdq::parse(&text).unwrap()),
            labels: vec![],
            delete: false,
        }],
        vec![],
        ImportPolicy::default(),
    );
    assert_eq!(report.added, 1);
    let matcher = Matcher::new([&bank], MatchConfig::default(), 1);

    let opts = VpdqOptions {
        seconds_per_hash: 0.5,
        conversion: Conversion::Native,
        ..VpdqOptions::default()
    };
    let (frames, _) = hash_file(&spliced, &opts).unwrap();
    assert!(frames.len() >= 50, "{} sampled frames", frames.len());

    let mut window = VpdqWindow::new(WindowConfig {
        window_secs: 10.0,
        enter_percent: 50.0,
        exit_percent: 25.0,
        min_frames: 4,
        ..WindowConfig::default()
    });
    let mut events = Vec::new();
    let mut clip_frames_matched = 0;
    for f in &frames {
        let hits = matcher.frame_video_hits(&f.pdq.hash);
        let t = f.timestamp;
        let in_clip = (CLIP_START..CLIP_START + CLIP_LEN).contains(&t);
        if !in_clip && f.pdq.quality >= 50 {
            assert!(
                hits.is_empty(),
                "unrelated frame at {t:.2}s matched the clip"
            );
        }
        if in_clip && !hits.is_empty() {
            clip_frames_matched += 1;
        }
        events.extend(window.push(t, f.pdq.hash, f.pdq.quality, |_| {
            hits.iter().map(|&(video, _)| video).collect()
        }));
    }
    assert!(
        clip_frames_matched as f64 >= 0.8 * CLIP_LEN * 2.0,
        "{clip_frames_matched} clip frames matched"
    );

    let entered: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            WindowEvent::Entered { at, .. } => Some(*at),
            _ => None,
        })
        .collect();
    assert_eq!(entered.len(), 1, "one detection, no flapping: {events:?}");
    let delay = entered[0] - CLIP_START;
    eprintln!("detected {delay:.2} media seconds after the clip's first frame");
    // Half of a 10 s window: about 5 s; allow for unmatched clip frames.
    assert!((3.0..=7.0).contains(&delay), "detection delay {delay:.2}s");
    let left: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            WindowEvent::Left { at, .. } => Some(*at),
            _ => None,
        })
        .collect();
    // The detection ends once the window is mostly past the clip (the stream may end
    // before: the tail is only 4.3 s).
    assert!(left.iter().all(|&t| t > CLIP_START + CLIP_LEN), "{left:?}");
}
