//! Test clips encoded with the ffmpeg CLI (an independent encoder: the code under test
//! decodes with libavcodec through `ffmpeg-next`, never encodes).

use std::path::Path;
use std::process::Command;

/// Encodes `seconds` of lavfi `source` as MPEG-TS H.264 with a GOP of `gop` frames.
pub fn encode(source: &str, seconds: u32, gop: u32, out: &Path) {
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-t"])
        .arg(seconds.to_string())
        .arg("-i")
        .arg(source)
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g"])
        .arg(gop.to_string())
        .args(["-pix_fmt", "yuv420p", "-f", "mpegts"])
        .arg(out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg failed for {source}");
}
