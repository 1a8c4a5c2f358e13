//! PDQ hashing from pixel buffers: luma, downsampling, quality, DCT, median threshold,
//! and the eight dihedral hashes, in the reference's f32 operation order.
//!
//! Arithmetic follows Meta's `pdq/cpp/hashing/pdqhashing.cpp` (facebook/ThreatExchange):
//! every float operation a hash bit depends on is performed in the same order and
//! precision, and nothing uses fused multiply-add, so results are bit-identical even for
//! constant images whose bits come from rounding noise.

use std::sync::OnceLock;

use crate::hash::{Hash256, PdqHash};
use crate::jarosz::{self, LumaRows, Scratch};

/// Smallest width and height the reference hashes; smaller inputs give the zero hash.
pub const MIN_HASHABLE_DIM: usize = 5;

// The reference stores these as `const float` initialised from double literals.
const LUMA_R: f32 = 0.299_f64 as f32;
const LUMA_G: f32 = 0.587_f64 as f32;
const LUMA_B: f32 = 0.114_f64 as f32;

/// `coefficient * value` for every 8-bit value: the same f32 products the reference
/// computes per pixel, looked up instead of multiplied.
fn luma_tables() -> &'static [[f32; 256]; 3] {
    static T: OnceLock<[[f32; 256]; 3]> = OnceLock::new();
    T.get_or_init(|| {
        let row = |c: f32| std::array::from_fn(|v| c * v as f32);
        [row(LUMA_R), row(LUMA_G), row(LUMA_B)]
    })
}

/// The luma of every studio-range Y' value ([`PixelFormat::StudioY8`]).
fn studio_table() -> &'static [f32; 256] {
    static T: OnceLock<[f32; 256]> = OnceLock::new();
    T.get_or_init(|| std::array::from_fn(|v| studio_luma(v as u8)))
}

/// `(y - 16) * 255 / 219`, clamped to 0..=255.
pub(crate) fn studio_luma(y: u8) -> f32 {
    ((f32::from(y) - 16.0) * (255.0 / 219.0)).clamp(0.0, 255.0)
}

/// Pixel layout of an [`ImageView`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 8-bit R, G, B.
    Rgb8,
    /// Packed 8-bit R, G, B, A (alpha ignored, as the reference drops it).
    Rgba8,
    /// 8-bit grey; luma is the grey value.
    Grey8,
    /// 8-bit Y' in studio range (16 black, 235 white): the Y plane of decoded video.
    /// Luma is `(y - 16) * 255 / 219`, clamped to 0..=255. That is the reference's RGB
    /// luma (0.299 R + 0.587 G + 0.114 B) of the RGB a BT.601 converter makes of the
    /// frame, because those are BT.601's own luma weights (the chroma terms cancel),
    /// short of that RGB's rounding to 8 bits and its clipping of out-of-gamut colours:
    /// live video can be hashed without converting it to RGB at all.
    StudioY8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Rgba8 => 4,
            PixelFormat::Grey8 | PixelFormat::StudioY8 => 1,
        }
    }
}

/// Why a buffer cannot be hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// The row stride is shorter than a row.
    Stride {
        /// Given stride in bytes (or floats, for luma).
        stride: usize,
        /// Image width in pixels.
        width: usize,
        /// Bytes per pixel.
        bpp: usize,
    },
    /// The buffer is too small for the stated dimensions.
    Short {
        /// Buffer length.
        len: usize,
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// Row stride.
        stride: usize,
        /// Elements needed.
        needed: usize,
    },
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageError::Stride { stride, width, bpp } => write!(
                f,
                "row stride {stride} is less than width {width} x {bpp} bytes per pixel"
            ),
            ImageError::Short {
                len,
                width,
                height,
                stride,
                needed,
            } => write!(
                f,
                "buffer has {len} elements, {width}x{height} with stride {stride} needs {needed}"
            ),
        }
    }
}

impl std::error::Error for ImageError {}

/// A borrowed 8-bit image: `height` rows of `stride` bytes, each starting with `width`
/// pixels in `format`.
#[derive(Clone, Copy, Debug)]
pub struct ImageView<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
    stride: usize,
    format: PixelFormat,
}

fn check_dims(
    len: usize,
    width: usize,
    height: usize,
    stride: usize,
    bpp: usize,
) -> Result<(), ImageError> {
    if stride < width * bpp {
        return Err(ImageError::Stride { stride, width, bpp });
    }
    let needed = if height == 0 {
        0
    } else {
        (height - 1) * stride + width * bpp
    };
    if len < needed {
        return Err(ImageError::Short {
            len,
            width,
            height,
            stride,
            needed,
        });
    }
    Ok(())
}

impl<'a> ImageView<'a> {
    /// Wraps a buffer, checking that it is large enough.
    pub fn new(
        data: &'a [u8],
        width: usize,
        height: usize,
        stride: usize,
        format: PixelFormat,
    ) -> Result<Self, ImageError> {
        check_dims(data.len(), width, height, stride, format.bytes_per_pixel())?;
        Ok(ImageView {
            data,
            width,
            height,
            stride,
            format,
        })
    }

    /// A tightly packed buffer (`stride = width * bytes_per_pixel`).
    pub fn packed(
        data: &'a [u8],
        width: usize,
        height: usize,
        format: PixelFormat,
    ) -> Result<Self, ImageError> {
        Self::new(
            data,
            width,
            height,
            width * format.bytes_per_pixel(),
            format,
        )
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixels inside `r` (clamped to the image), without copying.
    pub fn sub(&self, r: crate::views::Rect) -> ImageView<'a> {
        let x = r.x.min(self.width);
        let y = r.y.min(self.height);
        let w = r.w.min(self.width - x);
        let h = r.h.min(self.height - y);
        let bpp = self.format.bytes_per_pixel();
        let start = (y * self.stride + x * bpp).min(self.data.len());
        ImageView {
            data: &self.data[start..],
            width: w,
            height: h,
            stride: self.stride,
            format: self.format,
        }
    }

    /// Integer-approximated luma of pixel (`x`, `y`), 0..=255.
    pub(crate) fn luma8(&self, x: usize, y: usize) -> i32 {
        let bpp = self.format.bytes_per_pixel();
        let i = y * self.stride + x * bpp;
        crate::views::luma8(self.format, &self.data[i..i + bpp])
    }
}

impl LumaRows for ImageView<'_> {
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    fn luma_row(&self, r: usize, out: &mut [f32]) {
        let bpp = self.format.bytes_per_pixel();
        let row = &self.data[r * self.stride..r * self.stride + self.width * bpp];
        match self.format {
            PixelFormat::Grey8 => {
                for (o, &p) in out.iter_mut().zip(row) {
                    *o = p as f32;
                }
            }
            PixelFormat::StudioY8 => {
                let t = studio_table();
                for (o, &p) in out.iter_mut().zip(row) {
                    *o = t[usize::from(p)];
                }
            }
            PixelFormat::Rgb8 | PixelFormat::Rgba8 => {
                let t = luma_tables();
                for (o, px) in out.iter_mut().zip(row.chunks_exact(bpp)) {
                    *o = (t[0][px[0] as usize] + t[1][px[1] as usize]) + t[2][px[2] as usize];
                }
            }
        }
    }
}

/// A borrowed f32 luma image (`height` rows of `stride` floats).
#[derive(Clone, Copy, Debug)]
pub struct LumaView<'a> {
    data: &'a [f32],
    width: usize,
    height: usize,
    stride: usize,
}

impl<'a> LumaView<'a> {
    /// Wraps a luma buffer, checking that it is large enough.
    pub fn new(
        data: &'a [f32],
        width: usize,
        height: usize,
        stride: usize,
    ) -> Result<Self, ImageError> {
        check_dims(data.len(), width, height, stride, 1)?;
        Ok(LumaView {
            data,
            width,
            height,
            stride,
        })
    }
}

impl LumaRows for LumaView<'_> {
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    fn luma_row(&self, r: usize, out: &mut [f32]) {
        out[..self.width]
            .copy_from_slice(&self.data[r * self.stride..r * self.stride + self.width]);
    }
}

/// The eight dihedral hashes of one image, in the reference's `--pdqdih` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dihedral {
    /// `[original, rot90, rot180, rot270, flipx, flipy, flipplus1, flipminus1]`.
    pub hashes: [Hash256; 8],
    /// Quality of the image (the same for all eight).
    pub quality: u8,
}

impl Dihedral {
    /// Names of the eight transforms, in order.
    pub const NAMES: [&'static str; 8] = [
        "original",
        "rot90",
        "rot180",
        "rot270",
        "flipx",
        "flipy",
        "flipplus1",
        "flipminus1",
    ];
}

/// The 16x64 DCT matrix, built in f64 and stored as f32 exactly as the reference does
/// (rows are frequencies 1..=16; the DC term is skipped).
fn dct_matrix() -> &'static [[f32; 64]; 16] {
    static D: OnceLock<[[f32; 64]; 16]> = OnceLock::new();
    D.get_or_init(|| {
        let scale = (2.0f64 / 64.0).sqrt() as f32;
        std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                let arg = (std::f64::consts::PI / 2.0 / 64.0) * (i + 1) as f64 * (2 * j + 1) as f64;
                (scale as f64 * arg.cos()) as f32
            })
        })
    })
}

/// The transpose of [`dct_matrix`] (64x16), for the second product.
fn dct_matrix_t() -> &'static [[f32; 16]; 64] {
    static DT: OnceLock<[[f32; 16]; 64]> = OnceLock::new();
    DT.get_or_init(|| {
        let d = dct_matrix();
        std::array::from_fn(|k| std::array::from_fn(|j| d[j][k]))
    })
}

/// Computes PDQ hashes, reusing its buffers between calls. One per thread.
#[derive(Debug)]
pub struct PdqHasher {
    /// Filter the columns first ([`PdqHasher::live`]) instead of the reference's order.
    columns_first: bool,
    scratch: Scratch,
    buf64: Box<[f32; 4096]>,
    /// A frame's luma and its half-resolution copy, for `views::hash_views`.
    pub(crate) views_luma: (Vec<f32>, Vec<f32>),
}

impl Default for PdqHasher {
    fn default() -> Self {
        PdqHasher {
            columns_first: false,
            scratch: Scratch::default(),
            buf64: Box::new([0.0; 4096]),
            views_luma: Default::default(),
        }
    }
}

impl PdqHasher {
    /// A hasher with empty buffers (they grow to the largest frame seen).
    pub fn new() -> Self {
        Self::default()
    }

    /// A hasher for live frames: the Jarosz filter's passes run columns first, then
    /// rows on the 64 sampled rows only (about a third of the filter's work at 720p).
    /// The result is the reference's up to f32 rounding (within 0.002 of a level in
    /// the 64x64 downsample), so a hash can differ from [`PdqHasher::new`]'s by a bit
    /// where a coefficient sits at the median; conformance and banks use `new`.
    pub fn live() -> Self {
        PdqHasher {
            columns_first: true,
            ..Self::default()
        }
    }

    /// Hashes an 8-bit image.
    pub fn hash(&mut self, img: &ImageView<'_>) -> PdqHash {
        self.hash_rows(img)
    }

    /// Hashes an f32 luma image (values on the 0..255 scale).
    pub fn hash_luma(&mut self, img: &LumaView<'_>) -> PdqHash {
        self.hash_rows(img)
    }

    /// The eight dihedral hashes of an 8-bit image.
    pub fn dihedral(&mut self, img: &ImageView<'_>) -> Dihedral {
        self.dihedral_rows(img)
    }

    /// The eight dihedral hashes of an f32 luma image.
    pub fn dihedral_luma(&mut self, img: &LumaView<'_>) -> Dihedral {
        self.dihedral_rows(img)
    }

    /// The 16x16 DCT output the hash is thresholded from, with the quality (for debugging
    /// against the reference's `pdqFloat256FromFloatLuma`). `None` below the minimum size.
    pub fn float256(&mut self, img: &ImageView<'_>) -> Option<([[f32; 16]; 16], u8)> {
        if img.width < MIN_HASHABLE_DIM || img.height < MIN_HASHABLE_DIM {
            return None;
        }
        self.downsample(img, true);
        Some((dct(&self.buf64), quality(&self.buf64)))
    }

    /// The 64x64 downsample of the last image hashed (zeros before the first, and
    /// after an image too small to hash).
    pub(crate) fn last_downsample(&self) -> &[f32; 4096] {
        &self.buf64
    }

    /// Forgets the last downsample (an image too small to hash was met).
    pub(crate) fn clear_downsample(&mut self) {
        self.buf64.fill(0.0);
    }

    fn downsample(&mut self, src: &impl LumaRows, allow_skip: bool) {
        let (w, h) = (src.width(), src.height());
        if allow_skip && w == 64 && h == 64 {
            for r in 0..64 {
                src.luma_row(r, &mut self.buf64[r * 64..(r + 1) * 64]);
            }
        } else if self.columns_first {
            jarosz::downsample_64_columns_first(src, &mut self.scratch, &mut self.buf64);
        } else {
            jarosz::downsample_64(src, &mut self.scratch, &mut self.buf64);
        }
    }

    fn hash_rows(&mut self, src: &impl LumaRows) -> PdqHash {
        if src.width() < MIN_HASHABLE_DIM || src.height() < MIN_HASHABLE_DIM {
            self.clear_downsample();
            return PdqHash {
                hash: Hash256::ZERO,
                quality: 0,
            };
        }
        self.downsample(src, true);
        let q = quality(&self.buf64);
        let b = dct(&self.buf64);
        PdqHash {
            hash: threshold(&b),
            quality: q,
        }
    }

    fn dihedral_rows(&mut self, src: &impl LumaRows) -> Dihedral {
        if src.width() < MIN_HASHABLE_DIM || src.height() < MIN_HASHABLE_DIM {
            self.clear_downsample();
            return Dihedral {
                hashes: [Hash256::ZERO; 8],
                quality: 0,
            };
        }
        // The reference's dihedral path never skips the filter, even at 64x64.
        self.downsample(src, false);
        let q = quality(&self.buf64);
        let b = dct(&self.buf64);
        Dihedral {
            hashes: dihedral_from_dct(&b),
            quality: q,
        }
    }
}

/// The eight dihedral hashes and the quality of a 64x64 downsample.
pub(crate) fn dihedral_of_buffer(buf: &[f32; 4096]) -> Dihedral {
    Dihedral {
        hashes: dihedral_from_dct(&dct(buf)),
        quality: quality(buf),
    }
}

/// The reference's image-domain quality: summed truncated gradients / 90, capped at 100.
fn quality(a: &[f32; 4096]) -> u8 {
    let mut sum: i32 = 0;
    let grad = |u: f32, v: f32| (((u - v) * 100.0) / 255.0) as i32;
    for i in 0..63 {
        for j in 0..64 {
            sum += grad(a[i * 64 + j], a[(i + 1) * 64 + j]).abs();
        }
    }
    for i in 0..64 {
        for j in 0..63 {
            sum += grad(a[i * 64 + j], a[i * 64 + j + 1]).abs();
        }
    }
    (sum / 90).min(100) as u8
}

/// `B = D A D^T` with f32 accumulators summing over k in ascending order, as the reference.
/// Vectorised across the output column; each output still sees the same operation order.
fn dct(a: &[f32; 4096]) -> [[f32; 16]; 16] {
    let d = dct_matrix();
    let mut t = [[0.0f32; 64]; 16];
    for (ti, di) in t.iter_mut().zip(d) {
        for (k, &dik) in di.iter().enumerate() {
            let ak: &[f32; 64] = a[k * 64..(k + 1) * 64].try_into().unwrap();
            for j in 0..64 {
                ti[j] += dik * ak[j];
            }
        }
    }
    let dt = dct_matrix_t();
    let mut b = [[0.0f32; 16]; 16];
    for (bi, ti) in b.iter_mut().zip(&t) {
        for (k, &tik) in ti.iter().enumerate() {
            for j in 0..16 {
                bi[j] += tik * dt[k][j];
            }
        }
    }
    b
}

/// Sets bit `16 i + j` where `B[i][j]` is strictly above the lower median (the 128th
/// smallest of the 256 values, what the reference's Torben median returns).
fn threshold(b: &[[f32; 16]; 16]) -> Hash256 {
    let mut vals: [f32; 256] = std::array::from_fn(|k| b[k / 16][k % 16]);
    let (_, median, _) = vals.select_nth_unstable_by(127, |x, y| x.total_cmp(y));
    let median = *median;
    let mut h = Hash256::ZERO;
    for (k, v) in b.iter().flatten().enumerate() {
        if *v > median {
            h.set_bit(k);
        }
    }
    h
}

/// The eight dihedral hashes from one DCT output: each is a transpose and/or sign pattern
/// of the coefficients (odd/even frequencies flip sign under reflection), thresholded
/// against its own median.
fn dihedral_from_dct(b: &[[f32; 16]; 16]) -> [Hash256; 8] {
    let odd = |x: usize| x % 2 == 1;
    let variant = |transpose: bool, keep: &dyn Fn(usize, usize) -> bool| {
        let mut out = [[0.0f32; 16]; 16];
        for i in 0..16 {
            for j in 0..16 {
                let v = if keep(i, j) { b[i][j] } else { -b[i][j] };
                if transpose {
                    out[j][i] = v;
                } else {
                    out[i][j] = v;
                }
            }
        }
        threshold(&out)
    };
    [
        variant(false, &|_, _| true),
        variant(true, &|_, j| odd(j)),
        variant(false, &|i, j| !odd(i + j)),
        variant(true, &|i, _| odd(i)),
        variant(false, &|i, _| odd(i)),
        variant(false, &|_, j| odd(j)),
        variant(true, &|_, _| true),
        variant(true, &|i, j| !odd(i + j)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_images_hash_to_zero_with_quality_zero() {
        let px = vec![200u8; 100 * 4 * 3];
        let img = ImageView::packed(&px, 100, 4, PixelFormat::Rgb8).unwrap();
        let mut h = PdqHasher::new();
        assert_eq!(
            h.hash(&img),
            PdqHash {
                hash: Hash256::ZERO,
                quality: 0
            }
        );
        assert_eq!(h.dihedral(&img).hashes, [Hash256::ZERO; 8]);
    }

    #[test]
    fn short_buffers_are_rejected() {
        let px = vec![0u8; 10];
        assert!(matches!(
            ImageView::packed(&px, 4, 4, PixelFormat::Grey8),
            Err(ImageError::Short { needed: 16, .. })
        ));
        assert!(matches!(
            ImageView::new(&px, 4, 1, 3, PixelFormat::Grey8),
            Err(ImageError::Stride { .. })
        ));
    }

    /// A small deterministic generator (xorshift), so the tests need no crate.
    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn studio_black_and_white_hash_exactly_as_grey_black_and_white() {
        // Studio range maps 16 (and anything below) to 0 and 235 (and above) to 255, so
        // a two-level picture drawn with those values is the grey picture of 0 and 255.
        let (w, h) = (96, 80);
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let mut studio = Vec::with_capacity(w * h);
        let mut grey = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let r = xorshift(&mut seed);
                // Blocks of 8x8 pixels, so the picture has structure at PDQ's scale.
                let white = ((x / 8) * 7 + (y / 8) * 13 + (r as usize & 1)).is_multiple_of(3);
                let pick = (r >> 8) as usize % 3;
                studio.push(if white {
                    [235, 240, 255][pick]
                } else {
                    [0, 9, 16][pick]
                });
                grey.push(if white { 255 } else { 0 });
            }
        }
        let s = ImageView::packed(&studio, w, h, PixelFormat::StudioY8).unwrap();
        let g = ImageView::packed(&grey, w, h, PixelFormat::Grey8).unwrap();
        let mut hasher = PdqHasher::new();
        let want = hasher.hash(&g);
        assert!(want.quality > 0 && want.hash != Hash256::ZERO);
        assert_eq!(hasher.hash(&s), want);
        assert_eq!(hasher.dihedral(&s).hashes, hasher.dihedral(&g).hashes);
    }

    #[test]
    fn a_studio_plane_hashes_close_to_the_bt601_rgb_made_from_it() {
        // Y'CbCr 4:4:4 with smooth structure and noise, made into RGB with BT.601's
        // studio-range equations as published (ITU-R BT.601; the 1.164/1.596/0.392/
        // 0.813/2.017 form), rounded to 8 bits. Luma and chroma stay within the RGB
        // gamut: clipping would change luma itself.
        let (w, h) = (160, 120);
        let mut seed = 0x2545_f491_4f6c_dd1d;
        let mut y_plane = Vec::with_capacity(w * h);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f64, y as f64);
                let noise = (xorshift(&mut seed) % 21) as f64 - 10.0;
                let luma = 126.0
                    + 45.0 * (fx / 13.0).sin() * (fy / 17.0).cos()
                    + 25.0 * ((fx + 2.0 * fy) / 29.0).sin()
                    + noise;
                let yv = luma.round().clamp(16.0, 235.0);
                let cb = 128.0 + 15.0 * (fx / 31.0).cos();
                let cr = 128.0 + 15.0 * (fy / 23.0).sin();
                let c = |v: f64| v.round().clamp(0.0, 255.0) as u8;
                let yy = 1.164 * (yv - 16.0);
                rgb.extend([
                    c(yy + 1.596 * (cr - 128.0)),
                    c(yy - 0.392 * (cb - 128.0) - 0.813 * (cr - 128.0)),
                    c(yy + 2.017 * (cb - 128.0)),
                ]);
                y_plane.push(yv as u8);
            }
        }
        let mut hasher = PdqHasher::new();
        let from_y =
            hasher.hash(&ImageView::packed(&y_plane, w, h, PixelFormat::StudioY8).unwrap());
        let from_rgb = hasher.hash(&ImageView::packed(&rgb, w, h, PixelFormat::Rgb8).unwrap());
        let d = from_y.hash.distance(&from_rgb.hash);
        // Measured: 4 bits, from the RGB's rounding to 8 bits alone (the picture's
        // noise leaves many coefficients near the median).
        assert!(d <= 6, "{d} bits apart");
        assert!(from_y.quality.abs_diff(from_rgb.quality) <= 2);
    }

    #[test]
    fn threshold_sets_half_the_bits_for_distinct_values() {
        let b: [[f32; 16]; 16] =
            std::array::from_fn(|i| std::array::from_fn(|j| (i * 16 + j) as f32));
        let h = threshold(&b);
        assert_eq!(h.count_ones(), 128);
        assert!(h.bit(255) && !h.bit(127) && h.bit(128));
    }
}
