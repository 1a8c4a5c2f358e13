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
}

impl Region {
    /// A short name: `full`, `trimmed`, `centre90`, `tl85`.
    pub fn name(&self) -> String {
        match self {
            Region::Full => "full".into(),
            Region::Trimmed => "trimmed".into(),
            Region::Centre(p) => format!("centre{p}"),
            Region::Corner(c, p) => format!("{}{p}", c.name()),
        }
    }

    /// Parses [`Region::name`]'s text (percentages 10 to 99).
    pub fn parse(text: &str) -> Option<Region> {
        let percent = |p: &str| p.parse::<u8>().ok().filter(|p| (10..100).contains(p));
        match text {
            "full" => Some(Region::Full),
            "trimmed" => Some(Region::Trimmed),
            _ => {
                if let Some(p) = text.strip_prefix("centre") {
                    return percent(p).map(Region::Centre);
                }
                let c = Corner::ALL
                    .into_iter()
                    .find(|c| text.starts_with(c.name()))?;
                percent(&text[2..]).map(|p| Region::Corner(c, p))
            }
        }
    }

    /// This region's rectangle in a frame whose content (bars trimmed) is `content`
    /// (`None` for the whole frame and the trimmed frame, which are not sub-views of
    /// the content).
    fn rect(&self, content: Rect) -> Option<Rect> {
        match *self {
            Region::Full | Region::Trimmed => None,
            Region::Centre(p) => Some(content.centre(p)),
            Region::Corner(c, p) => Some(content.corner(c, p)),
        }
    }
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
    /// copies); sub-views are hashed as they are.
    pub dihedral: bool,
}

impl ViewSpec {
    /// The whole frame only, as PDQ hashes it.
    pub fn plain() -> ViewSpec {
        ViewSpec {
            trim_bars: false,
            centres: Vec::new(),
            corners: Vec::new(),
            dihedral: false,
        }
    }
}

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
/// bars were found), then each centre view.
///
/// Cost (the detector's budget per sampled frame): the whole frame's luma is computed
/// once; sub-views are hashed as they are (no dihedral transforms: a mirrored copy is
/// caught by the whole frame's) and, for frames of at least [`HALF_RES_MIN`] pixels
/// each way, from a half-resolution copy of that luma (2x2 means), on the bank and the
/// query side alike, so they cost about a quarter of their area.
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
    let mut regions: Vec<(Region, Rect)> =
        Vec::with_capacity(1 + spec.centres.len() + spec.corners.len());
    if content != full {
        regions.push((Region::Trimmed, content));
    }
    let sub = spec
        .centres
        .iter()
        .map(|&p| Region::Centre(p))
        .chain(spec.corners.iter().map(|&(c, p)| Region::Corner(c, p)));
    for region in sub {
        if let Some(r) = region.rect(content) {
            regions.push((region, r));
        }
    }
    let mut out = Vec::with_capacity(8 + regions.len());
    if regions.is_empty() {
        if spec.dihedral {
            push_dihedral(&mut out, &hasher.dihedral(img));
        } else {
            push_plain(&mut out, Region::Full, hasher.hash(img));
        }
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
    let half = w >= HALF_RES_MIN && h >= HALF_RES_MIN;
    let (src, sw, sh, scale) = if half {
        let (w2, h2) = (w / 2, h / 2);
        half_luma(&luma, w, w2, h2, &mut half_buf);
        (&half_buf, w2, h2, 2)
    } else {
        (&luma, w, h, 1)
    };
    for (region, r) in regions {
        let (x, y) = (r.x / scale, r.y / scale);
        let (rw, rh) = ((r.w / scale).min(sw - x), (r.h / scale).min(sh - y));
        // An empty view (a degenerate rectangle) hashes like any image too small.
        let p = match LumaView::new(&src[(y * sw + x).min(src.len())..], rw, rh, sw) {
            Ok(view) => hasher.hash_luma(&view),
            Err(_) => crate::hash::PdqHash {
                hash: Hash256::ZERO,
                quality: 0,
            },
        };
        push_plain(&mut out, region, p);
    }
    hasher.views_luma = (luma, half_buf);
    out
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
}
