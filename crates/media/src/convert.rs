//! Pixel conversion to packed RGB24 with libswscale, shared by live ingest
//! ([`crate::ingest`]) and vPDQ ([`crate::vpdq`]): one scaler per input format and size
//! and output size, remade only when one of them changes.

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

/// Converts decoded frames to RGB24 (`SWS_AREA`), keeping its scaler and output frame
/// between calls. Not `Send` (libswscale's context is not): it lives on the thread that
/// decodes.
pub(crate) struct RgbConverter {
    conversion: Conversion,
    scaler: Option<(Scaler, Key)>,
    rgb: ff::frame::Video,
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
            scaler: None,
            rgb: ff::frame::Video::empty(),
        }
    }

    /// Converts `frame` to RGB24 of `width x height` pixels.
    pub fn convert(
        &mut self,
        frame: &ff::frame::Video,
        (width, height): (u32, u32),
    ) -> Result<Rgb<'_>, ff::Error> {
        let key = (frame.format(), frame.width(), frame.height(), width, height);
        if self.scaler.as_ref().map(|(_, k)| *k) != Some(key) {
            self.scaler = Some((new_scaler(key, self.conversion)?, key));
            // A new size needs a new output frame too.
            self.rgb = ff::frame::Video::empty();
        }
        let (scaler, _) = self.scaler.as_mut().expect("set above");
        scaler.run(frame, &mut self.rgb)?;
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
}
