//! Frame to input tensor, exactly as `models/README.md` specifies: Pillow's BILINEAR
//! resize (so tensors match the Python reference bit for bit), crop or letterbox, channel
//! order, normalisation, layout.
//!
//! The resampler follows Pillow's published algorithm (`libImaging/Resample.c`): a
//! separable convolution with the triangle filter, its support widened by the scale
//! factor when shrinking; weights normalised in double precision, converted to 22-bit
//! fixed point; a horizontal pass then a vertical pass, each rounded and clipped to 8
//! bits. An unchanged dimension is copied without filtering.

use crate::manifest::{Color, Layout, Manifest, Resize};

/// An 8-bit RGB image, `width * 3` bytes per row.
#[derive(Debug, Clone, Copy)]
pub struct RgbImage<'a> {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Pixels.
    pub data: &'a [u8],
}

/// Where the source image ended up in the model input (for mapping boxes back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Size the source was scaled to.
    pub scaled: (u32, u32),
    /// Offset of the scaled image in the input (negative when cropped).
    pub offset: (i64, i64),
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Fixed-point weights: per output pixel, (first source index, weights).
fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i32>)> {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filterscale = scale.max(1.0);
    let support = filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (f64::from(xx) + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) as usize;
            let weights: Vec<f64> = (xmin..xmax)
                .map(|x| triangle((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    let v = w * f64::from(1u32 << PRECISION_BITS);
                    if v < 0.0 {
                        (-0.5 + v) as i32
                    } else {
                        (0.5 + v) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS) << 8 {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

fn horizontal(src: &[u8], sw: u32, sh: u32, ow: u32) -> Vec<u8> {
    if ow == sw {
        return src.to_vec();
    }
    let coeffs = coefficients(sw, ow);
    let (sw, sh, w) = (sw as usize, sh as usize, ow as usize);
    let mut out = vec![0u8; w * sh * 3];
    for y in 0..sh {
        let row = &src[y * sw * 3..(y + 1) * sw * 3];
        for (x, (start, k)) in coeffs.iter().enumerate() {
            for c in 0..3 {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &kw) in k.iter().enumerate() {
                    acc += i64::from(row[(start + i) * 3 + c]) * i64::from(kw);
                }
                out[(y * w + x) * 3 + c] = clip8(acc);
            }
        }
    }
    out
}

fn vertical(src: &[u8], w: u32, sh: u32, oh: u32) -> Vec<u8> {
    if oh == sh {
        return src.to_vec();
    }
    let coeffs = coefficients(sh, oh);
    let w = w as usize;
    let mut out = vec![0u8; w * oh as usize * 3];
    for (y, (start, k)) in coeffs.iter().enumerate() {
        for x in 0..w * 3 {
            let mut acc: i64 = 1 << (PRECISION_BITS - 1);
            for (i, &kw) in k.iter().enumerate() {
                acc += i64::from(src[(start + i) * w * 3 + x]) * i64::from(kw);
            }
            out[y * w * 3 + x] = clip8(acc);
        }
    }
    out
}

/// Pillow's BILINEAR resize on an RGB image, horizontal pass first (Pillow's
/// `ImagingResampleInner`). This reproduces Pillow's classic output exactly; the Pillow
/// 13.0 that made the reference data sometimes rounds differently between passes (by one
/// level, on some pixels of some size combinations; no simple rule found), so tests
/// compare model outputs with a tolerance and exact outputs on stored input tensors.
pub fn resize_bilinear(src: &RgbImage<'_>, width: u32, height: u32) -> Vec<u8> {
    let h = horizontal(src.data, src.width, src.height, width);
    vertical(&h, width, src.height, height)
}

/// Builds the model input for `frame`: the tensor values in layout order, and where the
/// frame was placed.
pub fn to_tensor(manifest: &Manifest, frame: &RgbImage<'_>) -> (Vec<f32>, Placement) {
    let (pixels, placement) = geometry(manifest, frame);
    (normalise(manifest, &pixels), placement)
}

/// What the geometric step depends on: models with equal keys share one resized image
/// of a frame (see `ClassifierSet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GeometryKey {
    size: (u32, u32),
    resize: Resize,
    resize_to: Option<[u32; 2]>,
    pad_value: Option<u8>,
}

impl GeometryKey {
    /// The key of a manifest's input.
    pub fn of(manifest: &Manifest) -> GeometryKey {
        let input = &manifest.input;
        GeometryKey {
            size: manifest.input_size(),
            resize: input.resize,
            resize_to: match input.resize {
                Resize::ResizeThenCenterCrop => input.resize_to,
                _ => None,
            },
            pad_value: matches!(input.resize, Resize::Letterbox).then_some(input.pad_value),
        }
    }
}

/// The geometric step: the frame resized (and cropped or padded) to the model's input
/// size as an 8-bit RGB image, with where the frame landed in it.
pub fn geometry(manifest: &Manifest, frame: &RgbImage<'_>) -> (Vec<u8>, Placement) {
    let (w, h) = manifest.input_size();
    let (fw, fh) = (frame.width, frame.height);
    let input = &manifest.input;
    match input.resize {
        Resize::Stretch => (
            resize_bilinear(frame, w, h),
            Placement {
                scaled: (w, h),
                offset: (0, 0),
            },
        ),
        Resize::ResizeThenCenterCrop => {
            let [rw, rh] = input.resize_to.expect("validated: crop has resize_to");
            let big = resize_bilinear(frame, rw, rh);
            let (left, top) = ((rw - w) / 2, (rh - h) / 2);
            let mut out = Vec::with_capacity((w * h * 3) as usize);
            for y in top..top + h {
                let at = ((y * rw + left) * 3) as usize;
                out.extend_from_slice(&big[at..at + (w * 3) as usize]);
            }
            (
                out,
                Placement {
                    scaled: (rw, rh),
                    offset: (-i64::from(left), -i64::from(top)),
                },
            )
        }
        Resize::Letterbox => {
            let (nw, nh) = if u64::from(fw) * u64::from(h) >= u64::from(fh) * u64::from(w) {
                (
                    w,
                    ((2 * u64::from(fh) * u64::from(w) + u64::from(fw)) / (2 * u64::from(fw)))
                        .max(1) as u32,
                )
            } else {
                (
                    ((2 * u64::from(fw) * u64::from(h) + u64::from(fh)) / (2 * u64::from(fh)))
                        .max(1) as u32,
                    h,
                )
            };
            let small = resize_bilinear(frame, nw, nh);
            let (left, top) = ((w - nw) / 2, (h - nh) / 2);
            let mut out = vec![input.pad_value; (w * h * 3) as usize];
            for y in 0..nh {
                let dst = (((y + top) * w + left) * 3) as usize;
                let src = (y * nw * 3) as usize;
                out[dst..dst + (nw * 3) as usize]
                    .copy_from_slice(&small[src..src + (nw * 3) as usize]);
            }
            (
                out,
                Placement {
                    scaled: (nw, nh),
                    offset: (i64::from(left), i64::from(top)),
                },
            )
        }
    }
}

/// The per-model step: colour order, scale, mean and std, and layout, from the output
/// of [`geometry`].
pub fn normalise(manifest: &Manifest, pixels: &[u8]) -> Vec<f32> {
    let (w, h) = manifest.input_size();
    let input = &manifest.input;
    let order: [usize; 3] = match input.color {
        Color::Rgb => [0, 1, 2],
        Color::Bgr => [2, 1, 0],
    };
    let (wu, hu) = (w as usize, h as usize);
    let mut tensor = vec![0f32; wu * hu * 3];
    for y in 0..hu {
        for x in 0..wu {
            for (c, &src_c) in order.iter().enumerate() {
                let p = f32::from(pixels[(y * wu + x) * 3 + src_c]);
                let v = ((p * input.scale) - input.mean[c]) / input.std[c];
                let at = match input.layout {
                    Layout::Nchw => c * hu * wu + y * wu + x,
                    Layout::Nhwc => (y * wu + x) * 3 + c,
                };
                tensor[at] = v;
            }
        }
    }
    tensor
}
