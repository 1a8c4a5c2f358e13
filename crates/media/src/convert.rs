//! Pixel conversion with libswscale, shared by live ingest ([`crate::ingest`]) and vPDQ
//! ([`crate::vpdq`]): to packed RGB24, or to planar Y'CbCr 4:2:0 for detectors that
//! only need luma. One scaler per input format and size and output size, remade only
//! when one of them changes.

use ff::format::Pixel;
use ff::software::scaling::{Context as Scaler, Flags};
use ffmpeg_next as ff;

/// libswscale conversion variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// The portable C code path of libswscale, which the reference data encodes
    /// (`oracle/nosimd`): identical output on every CPU.
    Reference,
    /// libswscale's default for this CPU (SIMD where available): what the reference
    /// produces on an x86 build without forcing anything. A few bits differ.
    Native,
}

/// Input format and size, output size: when any changes, a new scaler is made.
type Key = (Pixel, u32, u32, u32, u32);

/// Converts decoded frames to RGB24 (`SWS_AREA`), keeping its scalers and output frames
/// between calls. Not `Send` (libswscale's context is not): it lives on the thread that
/// decodes.
///
/// A [`Conversion::Native`] frame that is also scaled down goes in two steps: shrunk in
/// its own pixel format first, then converted to RGB at the smaller size. libswscale's
/// one-step path from YUV to RGB with scaling runs its generic vertical scaler into RGB,
/// about three times the instructions of the two steps together (measured with
/// callgrind on a 720p keyframe to 640x360: 15.5 M against 5.3 M). The two paths
/// differ where chroma changes sharply (it is averaged before it is upsampled instead
/// of after): on real video a mean of 1.6-1.8 levels a value, frames' PDQ hashes 0-4
/// bits apart (`tests/ingest.rs`). [`Conversion::Reference`] keeps the one step its
/// data encodes.
pub(crate) struct RgbConverter {
    conversion: Conversion,
    /// The shrinking step of a two-step conversion, when one is in use.
    shrink: Option<(Scaler, Key)>,
    /// The shrunk frame (input format, output size).
    small: ff::frame::Video,
    scaler: Option<(Scaler, Key)>,
    rgb: ff::frame::Video,
    /// The scaler to studio-range YUV420P, when a frame needs one.
    planar: Option<(Scaler, Key)>,
    yuv: ff::frame::Video,
}

/// A frame as planar studio-range Y'CbCr 4:2:0, borrowed from its [`RgbConverter`] (or
/// the decoder) until the next conversion.
pub(crate) struct Planes<'a> {
    frame: &'a ff::frame::Video,
}

impl Planes<'_> {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.frame.width()
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.frame.height()
    }

    /// The three planes without row padding, one after another: Y' (`width` bytes a
    /// row), then Cb and Cr (`width.div_ceil(2)` bytes a row, `height.div_ceil(2)`
    /// rows), the layout [`crate::ingest::Pixels::Yuv420`] holds.
    pub fn packed(&self) -> Vec<u8> {
        let (w, h) = (self.width() as usize, self.height() as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut out = Vec::with_capacity(w * h + 2 * cw * ch);
        for (plane, pw, ph) in [(0, w, h), (1, cw, ch), (2, cw, ch)] {
            let stride = self.frame.stride(plane);
            let data = self.frame.data(plane);
            for y in 0..ph {
                out.extend_from_slice(&data[y * stride..y * stride + pw]);
            }
        }
        out
    }
}

/// A converted frame, borrowed from its [`RgbConverter`] until the next conversion.
pub(crate) struct Rgb<'a> {
    /// Pixel rows, `stride` bytes apart.
    pub data: &'a [u8],
    /// Bytes from one row to the next (at least `width * 3`).
    pub stride: usize,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Rgb<'_> {
    /// The pixels without row padding, `width * 3` bytes per row.
    pub fn packed(&self) -> Vec<u8> {
        let row = self.width as usize * 3;
        let mut out = Vec::with_capacity(row * self.height as usize);
        for y in 0..self.height as usize {
            out.extend_from_slice(&self.data[y * self.stride..y * self.stride + row]);
        }
        out
    }
}

impl RgbConverter {
    /// A converter with no scaler yet.
    pub fn new(conversion: Conversion) -> Self {
        RgbConverter {
            conversion,
            shrink: None,
            small: ff::frame::Video::empty(),
            scaler: None,
            rgb: ff::frame::Video::empty(),
            planar: None,
            yuv: ff::frame::Video::empty(),
        }
    }

    /// `frame` as studio-range YUV420P of `width x height` pixels (`SWS_AREA`): the
    /// decoder's own frame when it is that already, else converted (a full-range
    /// `yuvj420p` frame is mapped to studio range, other formats and sizes scaled).
    pub fn planes<'a>(
        &'a mut self,
        frame: &'a ff::frame::Video,
        (width, height): (u32, u32),
    ) -> Result<Planes<'a>, ff::Error> {
        let fmt = frame.format();
        if fmt == Pixel::YUV420P && (width, height) == (frame.width(), frame.height()) {
            return Ok(Planes { frame });
        }
        let key = (fmt, frame.width(), frame.height(), width, height);
        if self.planar.as_ref().map(|(_, k)| *k) != Some(key) {
            let scaler = Scaler::get(
                fmt,
                key.1,
                key.2,
                Pixel::YUV420P,
                width,
                height,
                Flags::AREA,
            )?;
            self.planar = Some((scaler, key));
            self.yuv = ff::frame::Video::empty();
        }
        let (scaler, _) = self.planar.as_mut().expect("set above");
        scaler.run(frame, &mut self.yuv)?;
        Ok(Planes { frame: &self.yuv })
    }

    /// Converts `frame` to RGB24 of `width x height` pixels.
    pub fn convert(
        &mut self,
        frame: &ff::frame::Video,
        (width, height): (u32, u32),
    ) -> Result<Rgb<'_>, ff::Error> {
        let fmt = frame.format();
        let key = (fmt, frame.width(), frame.height(), width, height);
        let two_step = self.conversion == Conversion::Native
            && (width, height) != (frame.width(), frame.height())
            && fmt != Pixel::RGB24
            && ff::software::scaling::support::output(fmt);
        let input = if two_step {
            if self.shrink.as_ref().map(|(_, k)| *k) != Some(key) {
                let shrink = Scaler::get(fmt, key.1, key.2, fmt, width, height, Flags::AREA)?;
                self.shrink = Some((shrink, key));
                self.small = ff::frame::Video::empty();
            }
            let (shrink, _) = self.shrink.as_mut().expect("set above");
            shrink.run(frame, &mut self.small)?;
            &self.small
        } else {
            frame
        };
        let key = (fmt, input.width(), input.height(), width, height);
        if self.scaler.as_ref().map(|(_, k)| *k) != Some(key) {
            self.scaler = Some((new_scaler(key, self.conversion)?, key));
            // A new size needs a new output frame too.
            self.rgb = ff::frame::Video::empty();
        }
        let (scaler, _) = self.scaler.as_mut().expect("set above");
        scaler.run(input, &mut self.rgb)?;
        Ok(Rgb {
            data: self.rgb.data(0),
            stride: self.rgb.stride(0),
            width: self.rgb.width(),
            height: self.rgb.height(),
        })
    }
}

/// Fits `w x h` into `max`, keeping the aspect ratio, never upscaling; even sizes.
pub(crate) fn fit(w: u32, h: u32, (mw, mh): (u32, u32)) -> (u32, u32) {
    if w <= mw && h <= mh {
        return (w, h);
    }
    let scale = (f64::from(mw) / f64::from(w)).min(f64::from(mh) / f64::from(h));
    let even = |v: f64| ((v.round() as u32) & !1).max(2);
    (even(f64::from(w) * scale), even(f64::from(h) * scale))
}

/// Creates the RGB24 scaler. For [`Conversion::Reference`], libswscale is initialised
/// with FFmpeg's CPU flags forced to 0, so it picks its portable C converters (what the
/// reference data was produced with) instead of the x86 SIMD ones, which round
/// differently. Those flags are process-global, so every scaler creation holds one lock;
/// a decoder that FFmpeg initialises on another thread inside that window at worst picks
/// C code too, which is slower but decodes the same pixels (H.264 decoding is exact).
fn new_scaler((fmt, w, h, dw, dh): Key, conversion: Conversion) -> Result<Scaler, ff::Error> {
    static CPU_FLAGS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = CPU_FLAGS.lock().unwrap_or_else(|e| e.into_inner());
    match conversion {
        Conversion::Native => Scaler::get(fmt, w, h, Pixel::RGB24, dw, dh, Flags::AREA),
        Conversion::Reference => {
            // SAFETY: av_force_cpu_flags only stores an integer that FFmpeg reads when it
            // initialises function tables; -1 restores detection.
            #[allow(unsafe_code)]
            unsafe {
                ff::ffi::av_force_cpu_flags(0)
            };
            let scaler = Scaler::get(fmt, w, h, Pixel::RGB24, dw, dh, Flags::AREA);
            #[allow(unsafe_code)]
            unsafe {
                ff::ffi::av_force_cpu_flags(-1)
            };
            scaler
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit(640, 360, (1280, 720)), (640, 360));
        assert_eq!(fit(1920, 1080, (1280, 720)), (1280, 720));
        assert_eq!(fit(1080, 1920, (1280, 720)), (404, 720));
    }

    /// A synthetic YUV420P frame converts to the RGB the BT.601 limited-range formula
    /// gives (grey 128 -> about 130 in each channel), packed without padding, at the
    /// asked size; a new size makes a new scaler and output frame.
    #[test]
    fn converts_to_packed_rgb_at_the_asked_size() {
        crate::init();
        let mut frame = ff::frame::Video::new(Pixel::YUV420P, 34, 20);
        for plane in 0..3 {
            frame.data_mut(plane).fill(128);
        }
        let mut c = RgbConverter::new(Conversion::Native);
        let rgb = c.convert(&frame, (34, 20)).unwrap();
        assert_eq!((rgb.width, rgb.height), (34, 20));
        assert!(rgb.stride >= 34 * 3);
        let packed = rgb.packed();
        assert_eq!(packed.len(), 34 * 20 * 3);
        // Y=128 limited range: (128-16)*255/219 = 130.4; U=V=128 add nothing.
        assert!(
            packed.iter().all(|&p| (129..=131).contains(&p)),
            "{:?}",
            &packed[..6]
        );
        let small = c.convert(&frame, (16, 10)).unwrap();
        assert_eq!(
            (small.width, small.height, small.packed().len()),
            (16, 10, 480)
        );
    }

    /// A YUV420P frame of coloured stripes scaled down by the native conversion goes in
    /// two steps (shrunk in YUV, then converted), and its pixels are within two levels
    /// of libswscale's one-step conversion of the same frame; the reference conversion
    /// stays one step.
    #[test]
    fn a_native_downscale_shrinks_first_and_matches_one_step() {
        crate::init();
        let (w, h) = (128u32, 72u32);
        let mut frame = ff::frame::Video::new(Pixel::YUV420P, w, h);
        for plane in 0..3 {
            let (pw, ph) = if plane == 0 { (w, h) } else { (w / 2, h / 2) };
            let stride = frame.stride(plane);
            let data = frame.data_mut(plane);
            for y in 0..ph as usize {
                for x in 0..pw as usize {
                    // Stripes 16 luma pixels wide: every 2x2 block of the shrink is
                    // uniform, so both paths see the same colours.
                    let band = x * if plane == 0 { 1 } else { 2 } / 16;
                    data[y * stride + x] = [40u8, 90, 160, 220, 128, 60, 200, 110][band % 8]
                        .wrapping_add((plane as u8) * 37);
                }
            }
        }
        let out = (64, 36);
        let mut one = Scaler::get(Pixel::YUV420P, w, h, Pixel::RGB24, 64, 36, Flags::AREA).unwrap();
        let mut want = ff::frame::Video::empty();
        one.run(&frame, &mut want).unwrap();
        let want = Rgb {
            data: want.data(0),
            stride: want.stride(0),
            width: 64,
            height: 36,
        }
        .packed();

        let mut c = RgbConverter::new(Conversion::Native);
        let got = c.convert(&frame, out).unwrap().packed();
        assert!(c.shrink.is_some(), "the native downscale went in one step");
        assert_eq!(got.len(), want.len());
        let worst = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max();
        assert!(worst <= Some(2), "largest difference {worst:?}");

        let mut r = RgbConverter::new(Conversion::Reference);
        r.convert(&frame, out).unwrap();
        assert!(
            r.shrink.is_none(),
            "the reference conversion went in two steps"
        );
    }

    /// A YUV420P frame at its own size is handed on as it is (no scaler); a full-range
    /// `yuvj420p` frame is mapped to studio range (0 -> 16, 255 -> 235 in Y', as
    /// BT.601 defines the two ranges); a smaller size is an area downscale.
    #[test]
    fn planes_are_the_decoders_own_or_converted_to_studio_yuv420p() {
        crate::init();
        let (w, h) = (34u32, 20u32);
        let mut frame = ff::frame::Video::new(Pixel::YUV420P, w, h);
        for plane in 0..3 {
            let stride = frame.stride(plane);
            for (i, v) in frame.data_mut(plane).iter_mut().enumerate() {
                *v = ((i % stride) * 7 + (i / stride) * 3 + plane * 50) as u8;
            }
        }
        let mut c = RgbConverter::new(Conversion::Native);
        let got = c.planes(&frame, (w, h)).unwrap().packed();
        assert!(c.planar.is_none(), "a scaler for a frame already in shape");
        let mut want = Vec::new();
        for (plane, pw, ph) in [(0, 34, 20), (1, 17, 10), (2, 17, 10)] {
            let stride = frame.stride(plane);
            for y in 0..ph {
                want.extend_from_slice(&frame.data(plane)[y * stride..y * stride + pw]);
            }
        }
        assert_eq!(got, want);

        let mut full = ff::frame::Video::new(Pixel::YUVJ420P, w, h);
        for plane in 0..3 {
            full.data_mut(plane).fill(128);
        }
        let stride = full.stride(0);
        for (i, v) in full.data_mut(0).iter_mut().enumerate() {
            *v = if (i % stride) < 17 { 0 } else { 255 };
        }
        let got = c.planes(&full, (w, h)).unwrap().packed();
        let (black, white) = (got[0], got[33]);
        assert!(
            black.abs_diff(16) <= 1 && white.abs_diff(235) <= 1,
            "{black} {white}"
        );

        let small = c.planes(&frame, (16, 10)).unwrap();
        assert_eq!(
            (small.width(), small.height(), small.packed().len()),
            (16, 10, 240)
        );
    }

    /// The pure-Rust BT.601 conversion (thumbnails, colour models on planes) against
    /// libswscale's own conversion of the same frame: uniform 2x2 blocks, so chroma
    /// upsampling cannot differ, within 3 levels (the two round their fixed-point
    /// products differently; random chroma reaches the gamut's edges).
    #[test]
    fn the_rust_rgb_conversion_matches_libswscale_on_uniform_blocks() {
        crate::init();
        let (w, h) = (64u32, 36u32);
        let mut frame = ff::frame::Video::new(Pixel::YUV420P, w, h);
        let mut seed = 12345u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 16) as u8
        };
        let (cw, ch) = (32usize, 18usize);
        let chroma: Vec<[u8; 2]> = (0..cw * ch).map(|_| [next(), next()]).collect();
        let luma: Vec<u8> = (0..cw * ch).map(|_| 16 + next() % 220).collect();
        for plane in 0..3 {
            let stride = frame.stride(plane);
            let data = frame.data_mut(plane);
            let (pw, ph) = if plane == 0 { (64, 36) } else { (cw, ch) };
            for y in 0..ph {
                for x in 0..pw {
                    data[y * stride + x] = match plane {
                        0 => luma[(y / 2) * cw + x / 2],
                        p => chroma[y * cw + x][p - 1],
                    };
                }
            }
        }
        let mut c = RgbConverter::new(Conversion::Native);
        let want = c.convert(&frame, (w, h)).unwrap().packed();
        let planes = c.planes(&frame, (w, h)).unwrap().packed();
        let got = crate::ingest::yuv420_to_rgb24(&planes, w, h).unwrap();
        assert_eq!(got.len(), want.len());
        let worst = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max();
        assert!(worst <= Some(3), "largest difference {worst:?}");
        assert_eq!(crate::ingest::yuv420_to_rgb24(&planes[1..], w, h), None);
    }
}
