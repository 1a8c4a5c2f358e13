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
use crate::hasher::{Dihedral, ImageView, PdqHasher, PixelFormat};

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

/// Which part of the frame a view hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    /// The whole frame, as it is.
    Full,
    /// The frame without its detected bars (only when bars were found).
    Trimmed,
    /// The centred `percent` % of each dimension of the frame without its bars.
    Centre(u8),
}

impl Region {
    /// A short name: `full`, `trimmed`, `centre90`.
    pub fn name(&self) -> String {
        match self {
            Region::Full => "full".into(),
            Region::Trimmed => "trimmed".into(),
            Region::Centre(p) => format!("centre{p}"),
        }
    }

    /// Parses [`Region::name`]'s text.
    pub fn parse(text: &str) -> Option<Region> {
        match text {
            "full" => Some(Region::Full),
            "trimmed" => Some(Region::Trimmed),
            _ => text
                .strip_prefix("centre")
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| (10..100).contains(p))
                .map(Region::Centre),
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
    /// Hash the eight dihedral transforms of every view (mirrored and rotated copies).
    pub dihedral: bool,
}

impl ViewSpec {
    /// The whole frame only, as PDQ hashes it.
    pub fn plain() -> ViewSpec {
        ViewSpec {
            trim_bars: false,
            centres: Vec::new(),
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

/// Hashes the views `spec` asks for: the whole frame first (transform 0 is exactly
/// [`PdqHasher::hash`]'s hash but at 64x64, where the dihedral path filters), then the
/// frame without bars (if bars were found), then each centre view.
pub fn hash_views(hasher: &mut PdqHasher, img: &ImageView<'_>, spec: &ViewSpec) -> Vec<ViewHash> {
    let mut out = Vec::with_capacity(8 * (2 + spec.centres.len()));
    let mut one = |hasher: &mut PdqHasher, region: Region, view: &ImageView<'_>| {
        if spec.dihedral {
            let d = hasher.dihedral(view);
            for (t, hash) in d.hashes.iter().enumerate() {
                out.push(ViewHash {
                    region,
                    transform: t as u8,
                    hash: *hash,
                    quality: d.quality,
                });
            }
        } else {
            let p = hasher.hash(view);
            out.push(ViewHash {
                region,
                transform: 0,
                hash: p.hash,
                quality: p.quality,
            });
        }
    };
    one(hasher, Region::Full, img);
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
    if content != full {
        one(hasher, Region::Trimmed, &img.sub(content));
    }
    for &p in &spec.centres {
        one(hasher, Region::Centre(p), &img.sub(content.centre(p)));
    }
    out
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
        let spec = ViewSpec {
            trim_bars: true,
            centres: vec![60],
            dihedral: true,
        };
        let views = hash_views(&mut hasher, &img, &spec);
        assert_eq!(views.len(), 24);
        assert_eq!(views[0].hash, plain.hash);
        assert_eq!(views[0].name(), "full");
        assert_eq!(views[4].name(), "full/flipx");
        assert_eq!(views[8].name(), "trimmed");
        assert_eq!(views[16].name(), "centre60");
        // The trimmed view is the hash of the inner picture alone.
        let cropped = img.sub(inner);
        assert_eq!(views[8].hash, hasher.hash(&cropped).hash);
    }

    #[test]
    fn region_names_round_trip() {
        for r in [Region::Full, Region::Trimmed, Region::Centre(60)] {
            assert_eq!(Region::parse(&r.name()), Some(r));
        }
        assert_eq!(Region::parse("centre100"), None);
        assert_eq!(Region::parse("middle"), None);
    }
}
