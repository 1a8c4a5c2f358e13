//! Every frame of a video file as RGB24, handed to a callback on the caller's thread
//! (blocking: no frame is dropped, unlike live ingest's latest-wins queue). Used to
//! bank a video densely (`firebreak lists add-video`) and to hash many frames for
//! false-match counts.

use std::path::Path;

use ffmpeg_next as ff;
use firebreak_hashing::{ImageView, PixelFormat};

use crate::MediaError;
use crate::convert::{Conversion, RgbConverter, fit};

/// One decoded frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Position in decoder output order, from 0.
    pub number: u64,
    /// `number / fps`, seconds.
    pub seconds: f64,
    /// The pixels (RGB24).
    pub image: ImageView<'a>,
}

/// Facts about the decoded video.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FramesInfo {
    /// Frames per second (the stream's average rate).
    pub fps: f64,
    /// Frames decoded.
    pub frames: u64,
}

/// Decodes `path` and calls `f` with every `every`th frame (1: all), converted to RGB24
/// and scaled down (aspect kept) to fit `max_size`. `f` returns false to stop early.
pub fn for_each_frame(
    path: &Path,
    every: u64,
    max_size: (u32, u32),
    mut f: impl FnMut(Frame<'_>) -> bool,
) -> Result<FramesInfo, MediaError> {
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
    let ctx = ff::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|source| MediaError::Decoder { path: p(), source })?;
    let mut decoder = ctx
        .decoder()
        .video()
        .map_err(|source| MediaError::Decoder { path: p(), source })?;
    let every = every.max(1);
    let mut converter = RgbConverter::new(Conversion::Native);
    let mut decoded = ff::frame::Video::empty();
    let mut n = 0u64;
    let mut go = true;
    let mut visit = |frame: &ff::frame::Video, go: &mut bool| -> Result<(), MediaError> {
        let number = n;
        n += 1;
        if !*go || !number.is_multiple_of(every) {
            return Ok(());
        }
        let size = fit(frame.width(), frame.height(), max_size);
        let rgb = converter
            .convert(frame, size)
            .map_err(|source| MediaError::Convert { path: p(), source })?;
        let image = ImageView::new(
            rgb.data,
            rgb.width as usize,
            rgb.height as usize,
            rgb.stride,
            PixelFormat::Rgb8,
        )
        .expect("swscale output is sized for its dimensions");
        *go = f(Frame {
            number,
            seconds: number as f64 / fps,
            image,
        });
        Ok(())
    };
    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        if decoder.send_packet(&packet).is_err() {
            continue;
        }
        while decoder.receive_frame(&mut decoded).is_ok() {
            visit(&decoded, &mut go)?;
        }
        if !go {
            break;
        }
    }
    if go {
        decoder
            .send_eof()
            .map_err(|source| MediaError::Decode { path: p(), source })?;
        while decoder.receive_frame(&mut decoded).is_ok() {
            visit(&decoded, &mut go)?;
        }
    }
    Ok(FramesInfo { fps, frames: n })
}
