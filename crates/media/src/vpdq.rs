//! vPDQ hashing of a video file, matching Meta's reference `vpdq-hash-video`.
//!
//! The reference (vpdq 0.2.5, `vpdq/cpp/vpdq/cpp/hashing/` in facebook/ThreatExchange)
//! decodes every frame, numbers frames in decoder output order from 0, selects frames
//! with `frameNumber % max(1, int(secondsPerHash * fps)) == 0` where fps is the stream's
//! average frame rate (falling back to its real base rate), converts them to RGB24 with
//! libswscale (`SWS_AREA`), and hashes them with PDQ; the timestamp is
//! `(float)frameNumber / (float)fps`.
//!
//! We convert and hash only the selected frames. When frames are selected at an
//! interval, a demux-only pre-scan first ranks every packet's pts: the frame with the
//! n-th smallest pts is the decoder's n-th output frame, so the selection is known
//! before decoding, and disposable (non-reference) frames that are not selected are not
//! decoded at all (`skip_frame = NONREF` for their packets). Reference frames are always
//! decoded, so the selected frames' pixels are unchanged. If any packet lacks a pts or
//! two share one, we fall back to decoding every frame and counting outputs.

use std::collections::HashMap;
use std::path::Path;

use ffmpeg_next as ff;
use firebreak_hashing::vpdq::VpdqFeature;
use firebreak_hashing::{ImageView, PdqHasher, PixelFormat};

use crate::MediaError;
pub use crate::convert::Conversion;
use crate::convert::RgbConverter;

/// How to hash a video.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VpdqOptions {
    /// Hash one frame every this many seconds; 0 hashes every frame (the reference CLI's
    /// `-r`, default 0).
    pub seconds_per_hash: f32,
    /// Scale frames to this square size before hashing (the reference's `-s`); `None`
    /// keeps the native size.
    pub downsample: Option<u32>,
    /// Decoder threads; 0 lets FFmpeg choose.
    pub threads: usize,
    /// Which libswscale conversion to use.
    pub conversion: Conversion,
}

impl Default for VpdqOptions {
    fn default() -> Self {
        VpdqOptions {
            seconds_per_hash: 0.0,
            downsample: None,
            threads: 0,
            conversion: Conversion::Reference,
        }
    }
}

/// Video facts found while hashing.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// Frames per second used for frame selection and timestamps.
    pub fps: f64,
    /// Frames in the video stream: decoder outputs, or packets when the selection was
    /// planned by a pre-scan (the two are equal for well-formed streams; tested).
    pub frames_decoded: u64,
    /// Width of the coded video.
    pub width: u32,
    /// Height of the coded video.
    pub height: u32,
    /// Packets that failed to decode and were skipped.
    pub decode_errors: u64,
}

/// The frame selection modulus: `max(1, int(seconds_per_hash * fps))`, in f64 as the
/// reference computes it (its `-r` value is parsed as a float).
pub fn frame_modulus(seconds_per_hash: f32, fps: f64) -> u64 {
    ((seconds_per_hash as f64 * fps) as i64).max(1) as u64
}

/// Hashes a video file.
pub fn hash_file(
    path: &Path,
    opts: &VpdqOptions,
) -> Result<(Vec<VpdqFeature>, VideoInfo), MediaError> {
    crate::init();
    let p = || path.to_path_buf();
    let mut input =
        ff::format::input(path).map_err(|source| MediaError::Open { path: p(), source })?;
    let stream = input
        .streams()
        .find(|s| s.parameters().medium() == ff::media::Type::Video)
        .ok_or_else(|| MediaError::NoVideo { path: p() })?;
    let index = stream.index();
    let rate = {
        let avg = stream.avg_frame_rate();
        if avg.numerator() != 0 && avg.denominator() != 0 {
            avg
        } else {
            stream.rate()
        }
    };
    if rate.numerator() == 0 || rate.denominator() == 0 {
        return Err(MediaError::NoFrameRate { path: p() });
    }
    let fps = rate.numerator() as f64 / rate.denominator() as f64;
    let mut ctx = ff::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|source| MediaError::Decoder { path: p(), source })?;
    ctx.set_threading(ff::threading::Config {
        kind: ff::threading::Type::Frame,
        count: opts.threads,
        ..Default::default()
    });
    let mut decoder = ctx
        .decoder()
        .video()
        .map_err(|source| MediaError::Decoder { path: p(), source })?;

    let modulus = frame_modulus(opts.seconds_per_hash, fps);
    let (selected, planned_frames) = if modulus > 1 {
        prescan(path, index, modulus)
            .map(|p| (p.selected, p.frames))
            .unzip()
    } else {
        (None, None)
    };
    let mut state = Selector {
        modulus,
        fps,
        next_frame: 0,
        selected,
        downsample: opts.downsample,
        converter: RgbConverter::new(opts.conversion),
        hasher: PdqHasher::new(),
        features: Vec::new(),
    };
    let mut decoded = ff::frame::Video::empty();
    let mut decode_errors = 0u64;
    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        if let Some(selected) = &state.selected {
            let wanted = packet.pts().is_some_and(|pts| selected.contains_key(&pts));
            decoder.skip_frame(if wanted {
                ff::Discard::Default
            } else {
                ff::Discard::NonReference
            });
        }
        if let Err(e) = decoder.send_packet(&packet) {
            tracing::debug!(error = %e, "packet rejected by decoder");
            decode_errors += 1;
            continue;
        }
        while decoder.receive_frame(&mut decoded).is_ok() {
            state
                .frame(&decoded)
                .map_err(|source| MediaError::Convert { path: p(), source })?;
        }
    }
    decoder
        .send_eof()
        .map_err(|source| MediaError::Decode { path: p(), source })?;
    while decoder.receive_frame(&mut decoded).is_ok() {
        state
            .frame(&decoded)
            .map_err(|source| MediaError::Convert { path: p(), source })?;
    }
    let info = VideoInfo {
        fps,
        frames_decoded: planned_frames.unwrap_or(state.next_frame),
        width: decoder.width(),
        height: decoder.height(),
        decode_errors,
    };
    Ok((state.features, info))
}

/// Which frames a pre-scan selected.
struct Plan {
    /// pts of each selected frame -> its frame number (rank in presentation order).
    selected: HashMap<i64, u64>,
    /// Number of frames (packets) in the stream.
    frames: u64,
}

/// Demuxes (without decoding; a second open of the file, cheap next to decoding) the
/// video stream and ranks its packets by pts. `None` when
/// the ranking cannot be trusted to equal the decoder's output order.
fn prescan(path: &Path, index: usize, modulus: u64) -> Option<Plan> {
    let mut input = ff::format::input(path).ok()?;
    let mut pts = Vec::new();
    for (s, packet) in input.packets() {
        if s.index() == index {
            pts.push(packet.pts()?);
        }
    }
    pts.sort_unstable();
    if pts.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let selected = pts
        .iter()
        .enumerate()
        .filter(|(n, _)| (*n as u64).is_multiple_of(modulus))
        .map(|(n, &p)| (p, n as u64))
        .collect();
    Some(Plan {
        selected,
        frames: pts.len() as u64,
    })
}

struct Selector {
    modulus: u64,
    fps: f64,
    next_frame: u64,
    /// With a pre-scan plan: pts of each selected frame -> its frame number.
    selected: Option<HashMap<i64, u64>>,
    downsample: Option<u32>,
    converter: RgbConverter,
    hasher: PdqHasher,
    features: Vec<VpdqFeature>,
}

impl Selector {
    fn frame(&mut self, frame: &ff::frame::Video) -> Result<(), ff::Error> {
        let n = match &self.selected {
            Some(selected) => match frame.pts().and_then(|pts| selected.get(&pts)) {
                Some(&n) => n,
                None => return Ok(()),
            },
            None => {
                let n = self.next_frame;
                self.next_frame += 1;
                if !n.is_multiple_of(self.modulus) {
                    return Ok(());
                }
                n
            }
        };
        let size = match self.downsample {
            Some(s) => (s, s),
            None => (frame.width(), frame.height()),
        };
        let rgb = self.converter.convert(frame, size)?;
        let view = ImageView::new(
            rgb.data,
            rgb.width as usize,
            rgb.height as usize,
            rgb.stride,
            PixelFormat::Rgb8,
        )
        .expect("swscale output is sized for its dimensions");
        let pdq = self.hasher.hash(&view);
        self.features.push(VpdqFeature {
            pdq,
            frame_number: n,
            timestamp: VpdqFeature::reference_timestamp(n, self.fps),
        });
        Ok(())
    }
}
