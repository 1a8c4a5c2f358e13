//! Shared helpers for Firebreak's benchmarks: deterministic test frames and generated
//! test video.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A deterministic, photo-like RGB8 frame (gradients, blobs and fine texture), so that
/// every stage does realistic work and results are reproducible.
pub fn synthetic_rgb(width: usize, height: usize, seed: u32) -> Vec<u8> {
    let mut px = Vec::with_capacity(width * height * 3);
    let s = seed as f32 * 0.37;
    for y in 0..height {
        for x in 0..width {
            let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
            let base = 0.5 + 0.3 * (6.0 * fx + s).sin() * (4.0 * fy - s).cos();
            let blob = (-((fx - 0.3).powi(2) + (fy - 0.6).powi(2)) * 20.0).exp();
            let tex = (((x * 7 + y * 13) as u32).wrapping_mul(2_654_435_761) >> 27) as f32 / 32.0;
            let v = |k: f32| ((base + k * blob + 0.05 * tex).clamp(0.0, 1.0) * 255.0) as u8;
            px.extend_from_slice(&[v(0.4), v(0.1), v(-0.3)]);
        }
    }
    px
}

/// Where generated benchmark media lives (inside the target directory, reused).
pub fn media_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/firebreak/target"));
    let dir = target.join("bench-media");
    std::fs::create_dir_all(&dir).expect("create bench media dir");
    dir
}

/// A 60 s 1280x720 30 fps H.264 video (testsrc2, 2 s GOP), generated once with the
/// ffmpeg CLI.
pub fn video_720p30_60s() -> PathBuf {
    let path = media_dir().join("testsrc2-720p30-60s.mp4");
    if !path.exists() {
        generate(&path);
    }
    path
}

fn generate(path: &Path) {
    let tmp = path.with_extension("tmp.mp4");
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("testsrc2=size=1280x720:rate=30:duration=60")
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p",
        ])
        .arg(&tmp)
        .status()
        .expect("run ffmpeg");
    assert!(
        status.success(),
        "ffmpeg failed to generate {}",
        path.display()
    );
    std::fs::rename(&tmp, path).expect("move generated video");
}
