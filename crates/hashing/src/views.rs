//! Views of a frame for robust matching: the frame without its letterbox or pillarbox
//! bars, centred sub-windows, and the eight dihedral transforms (free from one DCT).
//!
//! An edited copy of a video (cropped, mirrored, letterboxed, shown inside another
//! video, captioned) hashes far from its original as a whole frame, but one of a few
//! views of the copy hashes close to one of a few views of the original: a copy cropped
//! by 5 % per side looks like the original's centre 90 % view; a picture-in-picture
//! copy's centre 60 % looks like the original; a mirrored copy's `flipx` transform
//! looks like the original; a pillarboxed copy without its bars looks like the
//! original. Every view is a crop of the caller's pixels (no copy) hashed with PDQ, so
//! each costs in proportion to its area; the dihedral transforms cost nothing extra.

use crate::hash::Hash256;
use crate::hasher::{Dihedral, ImageView, LumaView, PdqHasher, PixelFormat};
use crate::jarosz::LumaRows;

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left column.
    pub x: usize,
    /// Top row.
    pub y: usize,
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
}

impl Rect {
    /// The centred sub-rectangle keeping `percent` of each dimension.
    pub fn centre(&self, percent: u8) -> Rect {
        let p = usize::from(percent.min(100));
        let w = (self.w * p / 100).max(1);
        let h = (self.h * p / 100).max(1);
        Rect {
            x: self.x + (self.w - w) / 2,
            y: self.y + (self.h - h) / 2,
            w,
            h,
        }
    }
}

impl Rect {
    /// The sub-rectangle keeping `percent` of each dimension, anchored at `corner`.
    pub fn corner(&self, corner: Corner, percent: u8) -> Rect {
        let p = usize::from(percent.min(100));
        let w = (self.w * p / 100).max(1);
        let h = (self.h * p / 100).max(1);
        let (right, bottom) = match corner {
            Corner::TopLeft => (false, false),
            Corner::TopRight => (true, false),
            Corner::BottomLeft => (false, true),
            Corner::BottomRight => (true, true),
        };
        Rect {
            x: if right { self.x + self.w - w } else { self.x },
            y: if bottom { self.y + self.h - h } else { self.y },
            w,
            h,
        }
    }
}

/// A corner of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Corner {
    /// Top left (`tl`).
    TopLeft,
    /// Top right (`tr`).
    TopRight,
    /// Bottom left (`bl`).
    BottomLeft,
    /// Bottom right (`br`).
    BottomRight,
}

impl Corner {
    /// The four, in name order.
    pub const ALL: [Corner; 4] = [
        Corner::TopLeft,
        Corner::TopRight,
        Corner::BottomLeft,
        Corner::BottomRight,
    ];

    /// `tl`, `tr`, `bl`, `br`.
    pub fn name(self) -> &'static str {
        match self {
            Corner::TopLeft => "tl",
            Corner::TopRight => "tr",
            Corner::BottomLeft => "bl",
            Corner::BottomRight => "br",
        }
    }
}

/// Which part of the frame a view hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    /// The whole frame, as it is.
    Full,
    /// The frame without its detected bars (only when bars were found).
    Trimmed,
    /// The centred `percent` % of each dimension of the frame without its bars.
    Centre(u8),
    /// `percent` % of each dimension of the frame without its bars, anchored at a
    /// corner (the picture an off-centre crop keeps).
    Corner(Corner, u8),
    /// The frame without its bars (`base` 100) or its centre `base` %, with the block
    /// of `percent` % of each dimension at `corner` masked: those cells of PDQ's 64x64
    /// downsample are set to the mean of the others before the DCT, so whatever a copy
    /// puts there (a logo, a channel bug, a corner inset) does not move the hash.
    Masked {
        /// 100 for the frame without bars, else the centre view's percent.
        base: u8,
        /// The masked corner.
        corner: Corner,
        /// The masked block's share of each dimension, percent.
        percent: u8,
    },
}

impl Region {
    /// A short name: `full`, `trimmed`, `centre90`, `tl85`.
    pub fn name(&self) -> String {
        match self {
            Region::Full => "full".into(),
            Region::Trimmed => "trimmed".into(),
            Region::Centre(p) => format!("centre{p}"),
            Region::Corner(c, p) => format!("{}{p}", c.name()),
            Region::Masked {
                base,
                corner,
                percent,
            } => {
                let base = if *base == 100 {
                    String::new()
                } else {
                    format!("centre{base}")
                };
                format!("{base}no{}{percent}", corner.name())
            }
        }
    }

    /// Parses [`Region::name`]'s text (percentages 10 to 99; a masked corner 10 to 60).
    pub fn parse(text: &str) -> Option<Region> {
        let percent = |p: &str| p.parse::<u8>().ok().filter(|p| (10..100).contains(p));
        let corner = |t: &str| -> Option<(Corner, u8)> {
            let c = Corner::ALL.into_iter().find(|c| t.starts_with(c.name()))?;
            percent(&t[2..]).map(|p| (c, p))
        };
        match text {
            "full" => Some(Region::Full),
            "trimmed" => Some(Region::Trimmed),
            _ => {
                if let Some((head, masked)) = text.split_once("no") {
                    let base = match head {
                        "" => 100,
                        _ => percent(head.strip_prefix("centre")?)?,
                    };
                    let (corner, percent) = corner(masked).filter(|(_, p)| *p <= MAX_MASK)?;
                    return Some(Region::Masked {
                        base,
                        corner,
                        percent,
                    });
                }
                if let Some(p) = text.strip_prefix("centre") {
                    return percent(p).map(Region::Centre);
                }
                corner(text).map(|(c, p)| Region::Corner(c, p))
            }
        }
    }

    /// This region's rectangle in a frame whose content (bars trimmed) is `content`
    /// (`None` for the whole frame and the trimmed frame, which are not sub-views of
    /// the content).
    fn rect(&self, content: Rect) -> Option<Rect> {
        match *self {
            Region::Full | Region::Trimmed | Region::Masked { .. } => None,
            Region::Centre(p) => Some(content.centre(p)),
            Region::Corner(c, p) => Some(content.corner(c, p)),
        }
    }
}

/// The largest masked corner, percent of each dimension.
pub const MAX_MASK: u8 = 60;

/// The cells of PDQ's 64x64 downsample a masked `corner` of `percent` % covers:
/// (rows, columns), rounded outwards.
fn mask_cells(corner: Corner, percent: u8) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let n = (64 * usize::from(percent.min(100))).div_ceil(100);
    let (right, bottom) = match corner {
        Corner::TopLeft => (false, false),
        Corner::TopRight => (true, false),
        Corner::BottomLeft => (false, true),
        Corner::BottomRight => (true, true),
    };
    let span = |far: bool| if far { 64 - n..64 } else { 0..n };
    (span(bottom), span(right))
}

/// The eight dihedral hashes of the hasher's last 64x64 downsample with `corner`'s
/// block of `percent` % masked (set to the mean of the other cells, summed in order).
fn masked_last(hasher: &PdqHasher, corner: Corner, percent: u8) -> Dihedral {
    let (rows, cols) = mask_cells(corner, percent);
    let mut buf = *hasher.last_downsample();
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (i, row) in buf.chunks_exact(64).enumerate() {
        for (j, v) in row.iter().enumerate() {
            if !(rows.contains(&i) && cols.contains(&j)) {
                sum += f64::from(*v);
                n += 1;
            }
        }
    }
    let mean = (sum / n.max(1) as f64) as f32;
    for i in rows {
        buf[i * 64 + cols.start..i * 64 + cols.end].fill(mean);
    }
    crate::hasher::dihedral_of_buffer(&buf)
}

/// What to hash of each frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSpec {
    /// Find and drop letterbox/pillarbox bars: adds the [`Region::Trimmed`] view when
    /// bars are found, and centre views are taken inside the bars.
    pub trim_bars: bool,
    /// Centre views, by percent of each dimension (for example 90, 80, 60).
    pub centres: Vec<u8>,
    /// Corner views (for example top left 85 %).
    pub corners: Vec<(Corner, u8)>,
    /// Hash the eight dihedral transforms of the whole frame (mirrored and rotated
    /// copies), and the mirror image of each masked view; other sub-views are hashed
    /// as they are.
    pub dihedral: bool,
    /// Masked views: (base, corner, percent) as in [`Region::Masked`].
    pub masks: Vec<(u8, Corner, u8)>,
}

impl ViewSpec {
    /// The whole frame only, as PDQ hashes it.
    pub fn plain() -> ViewSpec {
        ViewSpec {
            trim_bars: false,
            centres: Vec::new(),
            corners: Vec::new(),
            dihedral: false,
            masks: Vec::new(),
        }
    }
}

/// The dihedral transform that mirrors a picture left to right (the reference calls it
/// `flipy`: a flip about the vertical axis).
pub const MIRROR: u8 = 5;

/// One view's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewHash {
    /// The region.
    pub region: Region,
    /// The dihedral transform, an index into [`Dihedral::NAMES`] (0 = as it is).
    pub transform: u8,
    /// The hash.
    pub hash: Hash256,
    /// PDQ quality of the region.
    pub quality: u8,
}

impl ViewHash {
    /// `full`, `trimmed/flipx`, `centre60`...
    pub fn name(&self) -> String {
        if self.transform == 0 {
            self.region.name()
        } else {
            format!(
                "{}/{}",
                self.region.name(),
                Dihedral::NAMES[usize::from(self.transform)]
            )
        }
    }
}

/// Bars narrower than this fraction of the dimension are not trimmed.
const MIN_BAR: f64 = 0.02;
/// What is left after trimming must be at least this fraction of each dimension.
const MIN_CONTENT: f64 = 0.4;
/// A row or column is part of a bar when its luma spread stays within this.
const BAR_SPREAD: i32 = 12;
/// ... and its mean differs from the bar's first line by at most this.
const BAR_DRIFT: i32 = 10;

/// The frame without its letterbox and pillarbox bars: rows and columns at the edges
/// whose luma is (nearly) uniform, and uniform the same way as the outermost line,
/// trimmed by the same amount on both sides of an axis (the narrower side's). The
/// whole frame when no bars are found or too little would be left (a uniform frame has
/// no content to trim to).
pub fn content_rect(img: &ImageView<'_>) -> Rect {
    let (w, h) = (img.width(), img.height());
    let full = Rect { x: 0, y: 0, w, h };
    if w < 16 || h < 16 {
        return full;
    }
    let luma = |x: usize, y: usize| -> i32 { img.luma8(x, y) };
    // A line's (min, max, mean) over `n` samples of `at(i)`.
    let stats = |n: usize, at: &dyn Fn(usize) -> i32| -> (i32, i32, i32) {
        let step = (n / 64).max(1);
        let (mut lo, mut hi, mut sum, mut k) = (255, 0, 0i64, 0i64);
        let mut i = 0;
        while i < n {
            let v = at(i);
            lo = lo.min(v);
            hi = hi.max(v);
            sum += i64::from(v);
            k += 1;
            i += step;
        }
        (lo, hi, (sum / k.max(1)) as i32)
    };
    // How many lines from one edge are bar lines.
    let scan = |count: usize, line: &dyn Fn(usize) -> (i32, i32, i32)| -> usize {
        let (lo, hi, first) = line(0);
        if hi - lo > BAR_SPREAD {
            return 0;
        }
        let mut n = 1;
        while n < count {
            let (lo, hi, mean) = line(n);
            if hi - lo > BAR_SPREAD || (mean - first).abs() > BAR_DRIFT {
                break;
            }
            n += 1;
        }
        n
    };
    let row = |y: usize| stats(w, &|x| luma(x, y));
    let col = |x: usize| stats(h, &|y| luma(x, y));
    let top = scan(h, &|i| row(i));
    let bottom = scan(h, &|i| row(h - 1 - i));
    let left = scan(w, &|i| col(i));
    let right = scan(w, &|i| col(w - 1 - i));
    // Letterbox and pillarbox bars are centred: the same width is trimmed from both
    // sides (the narrower side's), so a caption band or a logo over one bar never
    // trims one side alone.
    let keep = |a: usize, b: usize, n: usize| -> (usize, usize) {
        let min = (n as f64 * MIN_BAR).ceil() as usize;
        let t = a.min(b);
        if t < min || 2 * t >= n || ((n - 2 * t) as f64) < n as f64 * MIN_CONTENT {
            (0, 0)
        } else {
            (t, t)
        }
    };
    let (top, bottom) = keep(top, bottom, h);
    let (left, right) = keep(left, right, w);
    Rect {
        x: left,
        y: top,
        w: w - left - right,
        h: h - top - bottom,
    }
}

/// Frames at least this wide and tall have their sub-views hashed from a
/// half-resolution copy of their luma (PDQ reduces every view to 64x64 anyway; this
/// quarters their cost).
pub const HALF_RES_MIN: usize = 256;

/// Hashes the views `spec` asks for: the whole frame first, exactly as
/// [`PdqHasher::hash`] (with `dihedral`, its eight transforms, transform 0 exactly the
/// hash but at 64x64, where the dihedral path filters), then the frame without bars (if
/// bars were found), then each centre and corner view; each masked view follows its
/// base (the whole frame's when no bars were found, else the trimmed view's, or its
/// centre view's), as it is and, with `dihedral`, mirrored.
///
/// Cost (the detector's budget per sampled frame): the whole frame's luma is computed
/// once; sub-views are hashed as they are (no dihedral transforms: a mirrored copy is
/// caught by the whole frame's) and, for frames of at least [`HALF_RES_MIN`] pixels
/// each way, from a half-resolution copy of that luma (2x2 means), on the bank and the
/// query side alike, so they cost about a quarter of their area. A masked view costs a
/// DCT of its base's downsample (no pass over the pixels).
pub fn hash_views(hasher: &mut PdqHasher, img: &ImageView<'_>, spec: &ViewSpec) -> Vec<ViewHash> {
    let full = Rect {
        x: 0,
        y: 0,
        w: img.width(),
        h: img.height(),
    };
    let content = if spec.trim_bars {
        content_rect(img)
    } else {
        full
    };
    // (region, rectangle, listed): centre views a mask needs as its base are hashed
    // but only listed when asked for.
    let mut regions: Vec<(Region, Rect, bool)> =
        Vec::with_capacity(2 + spec.centres.len() + spec.corners.len());
    if content != full {
        regions.push((Region::Trimmed, content, true));
    }
    let sub = spec
        .centres
        .iter()
        .map(|&p| Region::Centre(p))
        .chain(spec.corners.iter().map(|&(c, p)| Region::Corner(c, p)));
    for region in sub {
        if let Some(r) = region.rect(content) {
            regions.push((region, r, true));
        }
    }
    for &(base, _, _) in &spec.masks {
        if base != 100 && !regions.iter().any(|(r, _, _)| *r == Region::Centre(base)) {
            regions.push((Region::Centre(base), content.centre(base), false));
        }
    }
    let mut out = Vec::with_capacity(8 + regions.len() + 2 * spec.masks.len());
    if regions.is_empty() {
        if spec.dihedral {
            push_dihedral(&mut out, &hasher.dihedral(img));
        } else {
            push_plain(&mut out, Region::Full, hasher.hash(img));
        }
        push_masked(&mut out, hasher, spec, 100);
        return out;
    }
    // The luma once, for the whole frame and every sub-view (in buffers the hasher
    // keeps between frames).
    let (w, h) = (img.width(), img.height());
    let (mut luma, mut half_buf) = std::mem::take(&mut hasher.views_luma);
    luma.resize(w * h, 0.0);
    for (r, row) in luma.chunks_exact_mut(w).enumerate() {
        img.luma_row(r, row);
    }
    let lv = LumaView::new(&luma, w, h, w).expect("a buffer of the frame's size");
    if spec.dihedral {
        push_dihedral(&mut out, &hasher.dihedral_luma(&lv));
    } else {
        push_plain(&mut out, Region::Full, hasher.hash_luma(&lv));
    }
    if content == full {
        push_masked(&mut out, hasher, spec, 100);
    }
    let half = w >= HALF_RES_MIN && h >= HALF_RES_MIN;
    let (src, sw, sh, scale) = if half {
        let (w2, h2) = (w / 2, h / 2);
        half_luma(&luma, w, w2, h2, &mut half_buf);
        (&half_buf, w2, h2, 2)
    } else {
        (&luma, w, h, 1)
    };
    for (region, r, listed) in regions {
        let (x, y) = (r.x / scale, r.y / scale);
        let (rw, rh) = ((r.w / scale).min(sw - x), (r.h / scale).min(sh - y));
        // An empty view (a degenerate rectangle) hashes like any image too small.
        let p = match LumaView::new(&src[(y * sw + x).min(src.len())..], rw, rh, sw) {
            Ok(view) => hasher.hash_luma(&view),
            Err(_) => {
                hasher.clear_downsample();
                crate::hash::PdqHash {
                    hash: Hash256::ZERO,
                    quality: 0,
                }
            }
        };
        if listed {
            push_plain(&mut out, region, p);
        }
        match region {
            Region::Trimmed => push_masked(&mut out, hasher, spec, 100),
            Region::Centre(c) => push_masked(&mut out, hasher, spec, c),
            _ => {}
        }
    }
    hasher.views_luma = (luma, half_buf);
    out
}

/// The masked views of base `base`, from the hasher's last downsample (that base's):
/// each as it is and, with `spec.dihedral`, mirrored.
fn push_masked(out: &mut Vec<ViewHash>, hasher: &PdqHasher, spec: &ViewSpec, base: u8) {
    for &(b, corner, percent) in &spec.masks {
        if b != base {
            continue;
        }
        let region = Region::Masked {
            base,
            corner,
            percent,
        };
        let d = masked_last(hasher, corner, percent);
        for t in [0, MIRROR] {
            if t == 0 || spec.dihedral {
                out.push(ViewHash {
                    region,
                    transform: t,
                    hash: d.hashes[usize::from(t)],
                    quality: d.quality,
                });
            }
        }
    }
}

fn push_dihedral(out: &mut Vec<ViewHash>, d: &Dihedral) {
    for (t, hash) in d.hashes.iter().enumerate() {
        out.push(ViewHash {
            region: Region::Full,
            transform: t as u8,
            hash: *hash,
            quality: d.quality,
        });
    }
}

fn push_plain(out: &mut Vec<ViewHash>, region: Region, p: crate::hash::PdqHash) {
    out.push(ViewHash {
        region,
        transform: 0,
        hash: p.hash,
        quality: p.quality,
    });
}

/// `luma` (`w` wide) averaged over 2x2 blocks into `out`: `w2 x h2` values.
fn half_luma(luma: &[f32], w: usize, w2: usize, h2: usize, out: &mut Vec<f32>) {
    out.resize(w2 * h2, 0.0);
    for (y, row) in out.chunks_exact_mut(w2).enumerate() {
        let a = &luma[2 * y * w..2 * y * w + 2 * w2];
        let b = &luma[(2 * y + 1) * w..(2 * y + 1) * w + 2 * w2];
        for ((o, pa), pb) in row.iter_mut().zip(a.chunks_exact(2)).zip(b.chunks_exact(2)) {
            *o = (pa[0] + pa[1] + pb[0] + pb[1]) * 0.25;
        }
    }
}

/// Luma on the 0..=255 scale, integer-approximated (for bar detection only).
pub(crate) fn luma8(format: PixelFormat, px: &[u8]) -> i32 {
    match format {
        PixelFormat::Grey8 => i32::from(px[0]),
        PixelFormat::StudioY8 => ((i32::from(px[0]) - 16) * 255 / 219).clamp(0, 255),
        PixelFormat::Rgb8 | PixelFormat::Rgba8 => {
            (77 * i32::from(px[0]) + 150 * i32::from(px[1]) + 29 * i32::from(px[2])) >> 8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bars trimmed, the centre 60 % and the dihedral transforms.
    fn every_view() -> ViewSpec {
        ViewSpec {
            trim_bars: true,
            centres: vec![60],
            corners: Vec::new(),
            dihedral: true,
            masks: Vec::new(),
        }
    }

    /// A w x h RGB image: smooth content inside, `bar` value in the margins.
    fn framed(w: usize, h: usize, inner: Rect, bar: u8) -> Vec<u8> {
        let mut v = vec![bar; w * h * 3];
        for y in inner.y..inner.y + inner.h {
            for x in inner.x..inner.x + inner.w {
                let val = ((x * 7 + y * 13) % 200 + 30) as u8;
                let i = (y * w + x) * 3;
                v[i..i + 3].copy_from_slice(&[val, val / 2, 255 - val]);
            }
        }
        v
    }

    #[test]
    fn pillarbox_bars_are_found_on_both_sides() {
        let inner = Rect {
            x: 40,
            y: 0,
            w: 160,
            h: 120,
        };
        let px = framed(240, 120, inner, 0);
        let img = ImageView::packed(&px, 240, 120, PixelFormat::Rgb8).unwrap();
        assert_eq!(content_rect(&img), inner);
    }

    #[test]
    fn letterbox_bars_of_any_solid_colour_are_found() {
        let inner = Rect {
            x: 0,
            y: 20,
            w: 160,
            h: 80,
        };
        let px = framed(160, 120, inner, 200);
        let img = ImageView::packed(&px, 160, 120, PixelFormat::Rgb8).unwrap();
        assert_eq!(content_rect(&img), inner);
    }

    #[test]
    fn a_band_on_one_side_only_is_not_trimmed() {
        // A caption band along the bottom: uniform rows, but none at the top.
        let inner = Rect {
            x: 0,
            y: 0,
            w: 160,
            h: 100,
        };
        let px = framed(160, 120, inner, 0);
        let img = ImageView::packed(&px, 160, 120, PixelFormat::Rgb8).unwrap();
        assert_eq!(
            content_rect(&img),
            Rect {
                x: 0,
                y: 0,
                w: 160,
                h: 120
            }
        );
    }

    #[test]
    fn unequal_bars_are_trimmed_by_the_narrower() {
        let inner = Rect {
            x: 30,
            y: 0,
            w: 150,
            h: 120,
        };
        let px = framed(200, 120, inner, 0);
        let img = ImageView::packed(&px, 200, 120, PixelFormat::Rgb8).unwrap();
        assert_eq!(
            content_rect(&img),
            Rect {
                x: 20,
                y: 0,
                w: 160,
                h: 120
            }
        );
    }

    #[test]
    fn a_uniform_frame_is_not_trimmed() {
        let px = vec![3u8; 160 * 120 * 3];
        let img = ImageView::packed(&px, 160, 120, PixelFormat::Rgb8).unwrap();
        let full = Rect {
            x: 0,
            y: 0,
            w: 160,
            h: 120,
        };
        assert_eq!(content_rect(&img), full);
    }

    #[test]
    fn centre_rect_keeps_the_percentage_centred() {
        let r = Rect {
            x: 10,
            y: 0,
            w: 200,
            h: 100,
        };
        assert_eq!(
            r.centre(60),
            Rect {
                x: 50,
                y: 20,
                w: 120,
                h: 60
            }
        );
    }

    #[test]
    fn full_view_equals_the_plain_hash_and_views_are_listed_in_order() {
        let inner = Rect {
            x: 40,
            y: 0,
            w: 160,
            h: 120,
        };
        let px = framed(240, 120, inner, 0);
        let img = ImageView::packed(&px, 240, 120, PixelFormat::Rgb8).unwrap();
        let mut hasher = PdqHasher::new();
        let plain = hasher.hash(&img);
        let spec = every_view();
        let views = hash_views(&mut hasher, &img, &spec);
        // Eight transforms of the whole frame, then each sub-view as it is.
        assert_eq!(views.len(), 10);
        assert_eq!(views[0].hash, plain.hash);
        assert_eq!(views[0].name(), "full");
        assert_eq!(views[4].name(), "full/flipx");
        assert_eq!(views[8].name(), "trimmed");
        assert_eq!(views[9].name(), "centre60");
        // Below 256 px the trimmed view is the hash of the inner picture alone, and
        // the centre view that of the inner picture's centre.
        let cropped = img.sub(inner);
        assert_eq!(views[8].hash, hasher.hash(&cropped).hash);
        assert_eq!(views[9].hash, hasher.hash(&img.sub(inner.centre(60))).hash);
    }

    /// A 640x480 frame with pillarbox bars and smooth content.
    fn large_pillarboxed() -> (Vec<u8>, Rect) {
        let inner = Rect {
            x: 80,
            y: 0,
            w: 480,
            h: 480,
        };
        let mut px = vec![0u8; 640 * 480 * 3];
        for y in 0..480 {
            for x in 80..560 {
                let (fx, fy) = (x as f64, y as f64);
                let v =
                    128.0 + 60.0 * (fx / 37.0).sin() * (fy / 23.0).cos() + 50.0 * (fy / 91.0).sin();
                let i = (y * 640 + x) * 3;
                px[i..i + 3].copy_from_slice(&[v as u8, (v * 0.8) as u8, (255.0 - v) as u8]);
            }
        }
        (px, inner)
    }

    #[test]
    fn the_whole_frame_is_hashed_exactly_when_sub_views_share_its_luma() {
        let (px, _) = large_pillarboxed();
        let img = ImageView::packed(&px, 640, 480, PixelFormat::Rgb8).unwrap();
        let mut hasher = PdqHasher::new();
        let dihedral = hasher.dihedral(&img);
        let plain = hasher.hash(&img);
        let spec = every_view();
        let views = hash_views(&mut hasher, &img, &spec);
        assert_eq!(views.len(), 10);
        for (t, want) in dihedral.hashes.iter().enumerate() {
            assert_eq!(views[t].hash, *want, "transform {t}");
            assert_eq!(views[t].quality, dihedral.quality);
        }
        let spec = ViewSpec {
            dihedral: false,
            ..spec
        };
        let views = hash_views(&mut hasher, &img, &spec);
        assert_eq!(views.len(), 3);
        assert_eq!(views[0].hash, plain.hash);
        assert_eq!(views[0].quality, plain.quality);
    }

    #[test]
    fn half_resolution_views_stay_near_full_resolution_hashes() {
        // The trimmed and centre views of a 640x480 frame come from half-resolution
        // luma: they must stay well inside the match distance (31) of the exact hashes
        // of the same pictures.
        let (px, inner) = large_pillarboxed();
        let img = ImageView::packed(&px, 640, 480, PixelFormat::Rgb8).unwrap();
        let mut hasher = PdqHasher::new();
        let spec = ViewSpec {
            dihedral: false,
            ..every_view()
        };
        let views = hash_views(&mut hasher, &img, &spec);
        assert_eq!(views[1].region, Region::Trimmed);
        let exact = hasher.hash(&img.sub(inner)).hash;
        let d = views[1].hash.distance(&exact);
        assert!(d <= 16, "trimmed: {d} bits from the exact hash");
        assert_eq!(views[2].region, Region::Centre(60));
        let exact = hasher.hash(&img.sub(inner.centre(60))).hash;
        let d = views[2].hash.distance(&exact);
        assert!(d <= 16, "centre: {d} bits from the exact hash");
    }

    #[test]
    fn region_names_round_trip() {
        for r in [
            Region::Full,
            Region::Trimmed,
            Region::Centre(60),
            Region::Corner(Corner::TopLeft, 85),
            Region::Corner(Corner::BottomRight, 40),
        ] {
            assert_eq!(Region::parse(&r.name()), Some(r));
        }
        assert_eq!(
            Region::parse("tr85"),
            Some(Region::Corner(Corner::TopRight, 85))
        );
        assert_eq!(
            Region::parse("bl10"),
            Some(Region::Corner(Corner::BottomLeft, 10))
        );
        assert_eq!(Region::parse("centre100"), None);
        assert_eq!(Region::parse("br100"), None);
        assert_eq!(Region::parse("br"), None);
        assert_eq!(Region::parse("middle"), None);
    }

    #[test]
    fn corner_rects_keep_the_percentage_at_their_corner() {
        let r = Rect {
            x: 10,
            y: 20,
            w: 200,
            h: 100,
        };
        let at = |c| {
            let q = r.corner(c, 85);
            (q.x, q.y, q.w, q.h)
        };
        assert_eq!(at(Corner::TopLeft), (10, 20, 170, 85));
        assert_eq!(at(Corner::TopRight), (40, 20, 170, 85));
        assert_eq!(at(Corner::BottomLeft), (10, 35, 170, 85));
        assert_eq!(at(Corner::BottomRight), (40, 35, 170, 85));
    }

    #[test]
    fn a_corner_view_is_the_hash_of_that_corner() {
        // Below 256 px sub-views are hashed at full resolution: exactly the hash of the
        // sub-image.
        let inner = Rect {
            x: 0,
            y: 0,
            w: 240,
            h: 120,
        };
        let px = framed(240, 120, inner, 0);
        let img = ImageView::packed(&px, 240, 120, PixelFormat::Rgb8).unwrap();
        let mut hasher = PdqHasher::new();
        let spec = ViewSpec {
            corners: vec![(Corner::TopLeft, 85), (Corner::BottomRight, 85)],
            ..ViewSpec::plain()
        };
        let views = hash_views(&mut hasher, &img, &spec);
        assert_eq!(views.len(), 3);
        assert_eq!(views[1].name(), "tl85");
        assert_eq!(views[2].name(), "br85");
        for (v, c) in views[1..]
            .iter()
            .zip([Corner::TopLeft, Corner::BottomRight])
        {
            assert_eq!(v.hash, hasher.hash(&img.sub(inner.corner(c, 85))).hash);
        }
    }

    /// A 640x360 RGB frame of smooth, detailed content (seeded).
    fn textured(seed: u64) -> Vec<u8> {
        let (w, h) = (640usize, 360usize);
        let mut px = vec![0u8; w * h * 3];
        let k = seed as f64;
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f64, y as f64);
                let v = 128.0
                    + 50.0 * (fx / (23.0 + k) + k).sin() * (fy / 31.0).cos()
                    + 40.0 * ((fx + 2.0 * fy) / (67.0 + 3.0 * k)).sin()
                    + 30.0 * (fy / 13.0 + fx / 97.0).cos();
                let i = (y * w + x) * 3;
                px[i..i + 3].copy_from_slice(&[v as u8, (v * 0.7) as u8, (250.0 - v) as u8]);
            }
        }
        px
    }

    /// An opaque red box over x 68-98 %, y 3-36 % (the robustness set's logo).
    fn with_logo(mut px: Vec<u8>, w: usize, h: usize) -> Vec<u8> {
        for y in h * 3 / 100..h * 36 / 100 {
            for x in w * 68 / 100..w * 98 / 100 {
                let i = (y * w + x) * 3;
                px[i..i + 3].copy_from_slice(&[0xc0, 0x20, 0x20]);
            }
        }
        px
    }

    fn mirrored(px: &[u8], w: usize, h: usize) -> Vec<u8> {
        let mut out = vec![0u8; px.len()];
        for y in 0..h {
            for x in 0..w {
                let (i, j) = ((y * w + x) * 3, (y * w + (w - 1 - x)) * 3);
                out[j..j + 3].copy_from_slice(&px[i..i + 3]);
            }
        }
        out
    }

    fn masked_spec(dihedral: bool) -> ViewSpec {
        ViewSpec {
            dihedral,
            masks: Corner::ALL.iter().map(|&c| (100, c, 40)).collect(),
            ..ViewSpec::plain()
        }
    }

    fn find(views: &[ViewHash], name: &str) -> Hash256 {
        views
            .iter()
            .find(|v| v.name() == name)
            .unwrap_or_else(|| panic!("no view {name}"))
            .hash
    }

    #[test]
    fn masked_region_names_round_trip() {
        for r in [
            Region::Masked {
                base: 100,
                corner: Corner::TopRight,
                percent: 40,
            },
            Region::Masked {
                base: 90,
                corner: Corner::BottomLeft,
                percent: 35,
            },
        ] {
            assert_eq!(Region::parse(&r.name()), Some(r));
        }
        assert_eq!(
            Region::parse("notr40"),
            Some(Region::Masked {
                base: 100,
                corner: Corner::TopRight,
                percent: 40
            })
        );
        assert_eq!(
            Region::parse("centre90notl45"),
            Some(Region::Masked {
                base: 90,
                corner: Corner::TopLeft,
                percent: 45
            })
        );
        for bad in [
            "notr61",
            "notr",
            "nomid40",
            "centre100notr40",
            "middlenotr40",
            "no",
        ] {
            assert_eq!(Region::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn mask_cells_cover_the_corner_rounded_outwards() {
        assert_eq!(mask_cells(Corner::TopLeft, 40), (0..26, 0..26));
        assert_eq!(mask_cells(Corner::TopRight, 40), (0..26, 38..64));
        assert_eq!(mask_cells(Corner::BottomLeft, 50), (32..64, 0..32));
        assert_eq!(mask_cells(Corner::BottomRight, 10), (57..64, 57..64));
    }

    #[test]
    fn a_masked_view_is_the_dct_of_the_downsample_with_the_corner_at_the_others_mean() {
        // An independent computation: the plain hash of a 64x64 luma image equals the
        // hash of its downsample (no filter at 64x64); masking the image's corner with
        // the mean of the rest must give the masked view's hash exactly.
        let (w, h) = (64usize, 64usize);
        let luma: Vec<f32> = (0..w * h)
            .map(|i| ((i % w) as f32 * 3.7 + (i / w) as f32 * 1.3).sin() * 90.0 + 128.0)
            .collect();
        let mut hasher = PdqHasher::new();
        let lv = LumaView::new(&luma, w, h, w).unwrap();
        let _ = hasher.hash_luma(&lv);
        let view = masked_last(&hasher, Corner::BottomRight, 40);
        let (rows, cols) = (38..64, 38..64);
        let inside = |i: usize| rows.contains(&(i / w)) && cols.contains(&(i % w));
        let rest: Vec<f64> = (0..w * h)
            .filter(|&i| !inside(i))
            .map(|i| f64::from(luma[i]))
            .collect();
        let mean = (rest.iter().sum::<f64>() / rest.len() as f64) as f32;
        let masked: Vec<f32> = (0..w * h)
            .map(|i| if inside(i) { mean } else { luma[i] })
            .collect();
        let want = hasher.hash_luma(&LumaView::new(&masked, w, h, w).unwrap());
        assert_eq!(view.hashes[0], want.hash);
        assert_eq!(view.quality, want.quality);
    }

    #[test]
    fn the_mirror_transform_is_the_hash_of_the_left_right_mirror_image() {
        let (w, h) = (640, 360);
        let px = textured(1);
        let mut hasher = PdqHasher::new();
        let img = ImageView::packed(&px, w, h, PixelFormat::Rgb8).unwrap();
        let d = hasher.dihedral(&img);
        let m = mirrored(&px, w, h);
        let mirror = hasher.hash(&ImageView::packed(&m, w, h, PixelFormat::Rgb8).unwrap());
        let dist = d.hashes[usize::from(MIRROR)].distance(&mirror.hash);
        assert!(dist <= 8, "{dist} bits");
        assert_eq!(Dihedral::NAMES[usize::from(MIRROR)], "flipy");
    }

    #[test]
    fn a_corner_logo_moves_the_whole_frame_but_not_the_view_that_masks_its_corner() {
        let (w, h) = (640, 360);
        let px = textured(2);
        let logo = with_logo(px.clone(), w, h);
        let mut hasher = PdqHasher::new();
        let spec = masked_spec(false);
        let hash = |hasher: &mut PdqHasher, px: &[u8]| {
            hash_views(
                hasher,
                &ImageView::packed(px, w, h, PixelFormat::Rgb8).unwrap(),
                &spec,
            )
        };
        let (a, b) = (hash(&mut hasher, &px), hash(&mut hasher, &logo));
        let names: Vec<String> = a.iter().map(ViewHash::name).collect();
        assert_eq!(names, ["full", "notl40", "notr40", "nobl40", "nobr40"]);
        let d = |n: &str| find(&a, n).distance(&find(&b, n));
        assert!(d("full") > 31, "full: {}", d("full"));
        assert!(d("notr40") <= 10, "notr40: {}", d("notr40"));
        for other in ["notl40", "nobl40", "nobr40"] {
            assert!(d(other) > 31, "{other}: {}", d(other));
        }
    }

    #[test]
    fn a_mirrored_copy_with_a_logo_matches_through_the_mirrored_masked_view() {
        // The copy is mirrored, then a logo goes over its top right: mirrored back, the
        // logo sits over the original's top left.
        let (w, h) = (640, 360);
        let px = textured(3);
        let copy = with_logo(mirrored(&px, w, h), w, h);
        let mut hasher = PdqHasher::new();
        let views = |hasher: &mut PdqHasher, px: &[u8], dihedral| {
            hash_views(
                hasher,
                &ImageView::packed(px, w, h, PixelFormat::Rgb8).unwrap(),
                &masked_spec(dihedral),
            )
        };
        let bank = views(&mut hasher, &px, false);
        let query = views(&mut hasher, &copy, true);
        assert_eq!(query.len(), 8 + 8);
        let d = find(&query, "notr40/flipy").distance(&find(&bank, "notl40"));
        assert!(d <= 12, "{d} bits");
        let whole = find(&query, "full/flipy").distance(&find(&bank, "full"));
        assert!(whole > 31, "{whole} bits");
    }

    #[test]
    fn a_masked_centre_view_hashes_its_base_even_when_the_centre_is_not_listed() {
        let (w, h) = (640, 360);
        let px = textured(4);
        let img = ImageView::packed(&px, w, h, PixelFormat::Rgb8).unwrap();
        let mut hasher = PdqHasher::new();
        let spec = ViewSpec {
            masks: vec![(90, Corner::TopRight, 40)],
            ..ViewSpec::plain()
        };
        let views = hash_views(&mut hasher, &img, &spec);
        let names: Vec<String> = views.iter().map(ViewHash::name).collect();
        assert_eq!(names, ["full", "centre90notr40"]);
        // The same as when the centre is listed too.
        let listed = hash_views(
            &mut hasher,
            &img,
            &ViewSpec {
                centres: vec![90],
                ..spec
            },
        );
        assert_eq!(listed[1].name(), "centre90");
        assert_eq!(listed[2].hash, views[1].hash);
    }
}
