//! Jarosz tent-filter downsampling to 64x64, bit-exact with the reference.
//!
//! The reference (`pdq/cpp/downscaling/downscaling.cpp` in facebook/ThreatExchange) runs,
//! twice, a box filter along every row and then along every column, each a running f32
//! sum (add the entering sample, then subtract the leaving one, then divide by the
//! count as f32), and finally picks 64x64 samples at `int(((i + 0.5) * n) / 64)`.
//! The running sums are sequential, so rounding drift is part of the result and must be
//! reproduced operation for operation.
//!
//! What we do differently, without changing a single rounding:
//! - Rows are filtered 16 at a time: a strip of 16 rows is interleaved so that lane `l`
//!   of each step belongs to row `l`. Every lane performs exactly the reference's
//!   sequence of operations for its row, but the 16 independent dependency chains run
//!   side by side in SIMD registers instead of one after another.
//! - Columns are filtered a whole row at a time (lane = column), which is contiguous.
//! - Luma is computed straight into the first row strip (no full-size luma buffer).
//! - The second pass only keeps the 64 columns and then the 64 rows that the decimation
//!   samples: the filters are separable, so restricting to them changes nothing.

/// Lines filtered side by side.
pub(crate) const LANES: usize = 16;

type Lanes = [f32; LANES];

/// The reference's `computeJaroszFilterWindowSize(old, new)`.
pub(crate) fn window_size(old: usize, new: usize) -> usize {
    old.div_ceil(2 * new)
}

/// The four phase lengths of the reference's `box1DFloat` for a line of `len` samples
/// and a window of `w`: warm-up reads, growing-window writes, full-window writes,
/// shrinking-window writes.
fn phases(len: usize, w: usize) -> [usize; 4] {
    let half = (w + 2) / 2;
    [half - 1, w - half + 1, len - w, half - 1]
}

/// The decimation's sample index for output `o` of 64 along a dimension of `n`.
pub(crate) fn sample_index(o: usize, n: usize) -> usize {
    (((o as f64 + 0.5) * n as f64) / 64.0) as usize
}

/// Box filter along `LANES` interleaved lines at once (`inp[i][l]` is sample `i` of line `l`).
/// With `keep`, only outputs `i` where `keep[i]` are written (the sums still run over
/// every sample, so kept outputs are unchanged).
fn box_lanes(inp: &[Lanes], out: &mut [Lanes], w: usize, keep: Option<&[bool]>) {
    let wanted = |i: usize| keep.is_none_or(|k| k[i]);
    let len = inp.len();
    let [n1, n2, n3, n4] = phases(len, w);
    let mut sum: Lanes = [0.0; LANES];
    let mut cnt = 0usize;
    let (mut ri, mut li, mut oi) = (0usize, 0usize, 0usize);
    for _ in 0..n1 {
        add(&mut sum, &inp[ri]);
        cnt += 1;
        ri += 1;
    }
    for _ in 0..n2 {
        add(&mut sum, &inp[ri]);
        cnt += 1;
        if wanted(oi) {
            div(&sum, cnt as f32, &mut out[oi]);
        }
        ri += 1;
        oi += 1;
    }
    let c = cnt as f32;
    for _ in 0..n3 {
        add(&mut sum, &inp[ri]);
        sub(&mut sum, &inp[li]);
        if wanted(oi) {
            div(&sum, c, &mut out[oi]);
        }
        ri += 1;
        li += 1;
        oi += 1;
    }
    for _ in 0..n4 {
        sub(&mut sum, &inp[li]);
        cnt -= 1;
        if wanted(oi) {
            div(&sum, cnt as f32, &mut out[oi]);
        }
        li += 1;
        oi += 1;
    }
}

#[inline(always)]
fn add(sum: &mut Lanes, x: &Lanes) {
    for l in 0..LANES {
        sum[l] += x[l];
    }
}

#[inline(always)]
fn sub(sum: &mut Lanes, x: &Lanes) {
    for l in 0..LANES {
        sum[l] -= x[l];
    }
}

#[inline(always)]
fn div(sum: &Lanes, c: f32, out: &mut Lanes) {
    for l in 0..LANES {
        out[l] = sum[l] / c;
    }
}

/// Interleaves rows `r0..r0 + n` of a `width`-wide row-major image into lanes:
/// `out[c][l] = img[(r0 + l) * width + c]`. Works in 4x4 blocks so that loads and stores
/// are 4 floats wide (the compiler turns the block into register shuffles).
fn rows_to_lanes(img: &[f32], width: usize, r0: usize, n: usize, out: &mut [Lanes]) {
    let full = width / 4 * 4;
    let mut l = 0;
    while l + 4 <= n {
        let rows: [&[f32]; 4] =
            std::array::from_fn(|k| &img[(r0 + l + k) * width..(r0 + l + k + 1) * width]);
        for c in (0..full).step_by(4) {
            let a: [[f32; 4]; 4] = std::array::from_fn(|k| rows[k][c..c + 4].try_into().unwrap());
            for (j, cell) in out[c..c + 4].iter_mut().enumerate() {
                let dst: &mut [f32; 4] = (&mut cell[l..l + 4]).try_into().unwrap();
                *dst = [a[0][j], a[1][j], a[2][j], a[3][j]];
            }
        }
        for c in full..width {
            for (k, row) in rows.iter().enumerate() {
                out[c][l + k] = row[c];
            }
        }
        l += 4;
    }
    for l in l..n {
        let row = &img[(r0 + l) * width..(r0 + l + 1) * width];
        for (cell, &v) in out.iter_mut().zip(row) {
            cell[l] = v;
        }
    }
}

/// The inverse of [`rows_to_lanes`]: `img[(r0 + l) * width + c] = lanes[c][l]`.
fn lanes_to_rows(lanes: &[Lanes], width: usize, r0: usize, n: usize, img: &mut [f32]) {
    let full = width / 4 * 4;
    let mut l = 0;
    while l + 4 <= n {
        let (_, rest) = img.split_at_mut((r0 + l) * width);
        let (r_a, rest) = rest.split_at_mut(width);
        let (r_b, rest) = rest.split_at_mut(width);
        let (r_c, rest) = rest.split_at_mut(width);
        let r_d = &mut rest[..width];
        let mut rows = [r_a, r_b, r_c, r_d];
        for c in (0..full).step_by(4) {
            let a: [[f32; 4]; 4] =
                std::array::from_fn(|j| lanes[c + j][l..l + 4].try_into().unwrap());
            for (k, row) in rows.iter_mut().enumerate() {
                let dst: &mut [f32; 4] = (&mut row[c..c + 4]).try_into().unwrap();
                *dst = [a[0][k], a[1][k], a[2][k], a[3][k]];
            }
        }
        for c in full..width {
            for (k, row) in rows.iter_mut().enumerate() {
                row[c] = lanes[c][l + k];
            }
        }
        l += 4;
    }
    for l in l..n {
        let row = &mut img[(r0 + l) * width..(r0 + l + 1) * width];
        for (d, cell) in row.iter_mut().zip(lanes) {
            *d = cell[l];
        }
    }
}

/// Box filter down every column of a `rows x cols` row-major image, one row of all
/// columns at a time. Same per-column operations as the reference's `boxAlongColsFloat`.
fn box_cols(inp: &[f32], out: &mut [f32], sum: &mut Vec<f32>, rows: usize, cols: usize, w: usize) {
    box_cols_keep(inp, out, sum, rows, cols, w, None);
}

/// [`box_cols`] writing only the output rows `r` where `keep[r]` (the sums still run
/// over every row).
fn box_cols_keep(
    inp: &[f32],
    out: &mut [f32],
    sum: &mut Vec<f32>,
    rows: usize,
    cols: usize,
    w: usize,
    keep: Option<&[bool]>,
) {
    let wanted = |i: usize| keep.is_none_or(|k| k[i]);
    let [n1, n2, n3, n4] = phases(rows, w);
    sum.clear();
    sum.resize(cols, 0.0);
    let row = |r: usize| &inp[r * cols..(r + 1) * cols];
    let (mut ri, mut li, mut oi) = (0usize, 0usize, 0usize);
    let mut cnt = 0usize;
    for _ in 0..n1 {
        sum.iter_mut().zip(row(ri)).for_each(|(s, x)| *s += x);
        cnt += 1;
        ri += 1;
    }
    for _ in 0..n2 {
        cnt += 1;
        let c = cnt as f32;
        if wanted(oi) {
            let o = &mut out[oi * cols..(oi + 1) * cols];
            for ((s, x), o) in sum.iter_mut().zip(row(ri)).zip(o) {
                *s += x;
                *o = *s / c;
            }
        } else {
            sum.iter_mut().zip(row(ri)).for_each(|(s, x)| *s += x);
        }
        ri += 1;
        oi += 1;
    }
    let c = cnt as f32;
    for _ in 0..n3 {
        if wanted(oi) {
            let o = &mut out[oi * cols..(oi + 1) * cols];
            for (((s, x), y), o) in sum.iter_mut().zip(row(ri)).zip(row(li)).zip(o) {
                *s += x;
                *s -= y;
                *o = *s / c;
            }
        } else {
            for ((s, x), y) in sum.iter_mut().zip(row(ri)).zip(row(li)) {
                *s += x;
                *s -= y;
            }
        }
        ri += 1;
        li += 1;
        oi += 1;
    }
    for _ in 0..n4 {
        cnt -= 1;
        let c = cnt as f32;
        if wanted(oi) {
            let o = &mut out[oi * cols..(oi + 1) * cols];
            for ((s, y), o) in sum.iter_mut().zip(row(li)).zip(o) {
                *s -= y;
                *o = *s / c;
            }
        } else {
            sum.iter_mut().zip(row(li)).for_each(|(s, y)| *s -= y);
        }
        li += 1;
        oi += 1;
    }
}

/// Anything that can produce f32 luma one row at a time.
pub(crate) trait LumaRows {
    fn width(&self) -> usize;
    fn height(&self) -> usize;
    /// Writes the luma of row `r` into `out[..width]`.
    fn luma_row(&self, r: usize, out: &mut [f32]);
}

/// Reusable buffers, so hashing a stream of frames allocates nothing after the first.
#[derive(Default, Debug)]
pub(crate) struct Scratch {
    strip_in: Vec<Lanes>,
    strip_out: Vec<Lanes>,
    row: Vec<f32>,
    full_a: Vec<f32>,
    full_b: Vec<f32>,
    narrow_a: Vec<f32>,
    narrow_b: Vec<f32>,
    sums: Vec<f32>,
    keep: Vec<bool>,
}

/// Filters and decimates `src` to 64x64 exactly as the reference's Jarosz filter with two
/// passes followed by `decimateFloat`. `src` must be at least 1x1.
pub(crate) fn downsample_64(src: &impl LumaRows, s: &mut Scratch, out: &mut [f32; 4096]) {
    let (w, h) = (src.width(), src.height());
    let win_x = window_size(w, 64);
    let win_y = window_size(h, 64);
    let cols: [usize; 64] = std::array::from_fn(|j| sample_index(j, w));
    let rows: [usize; 64] = std::array::from_fn(|i| sample_index(i, h));

    // Every buffer is sliced to this image's size and only grown, never shrunk and
    // regrown: regrowing zero-fills (a 720p frame's two full-size buffers are 7 MB of
    // memset, and a stream alternates between the whole frame and smaller views).
    // Nothing is read before this call writes it.
    let strip_in = grown(&mut s.strip_in, w);
    let strip_out = grown(&mut s.strip_out, w);
    let row = grown(&mut s.row, w * LANES);
    let full_a = grown(&mut s.full_a, w * h);
    let full_b = grown(&mut s.full_b, w * h);

    // Pass 1, along rows: luma straight into the interleaved strip, filter, write out rows.
    for r0 in (0..h).step_by(LANES) {
        let n = LANES.min(h - r0);
        for l in 0..n {
            src.luma_row(r0 + l, &mut row[l * w..(l + 1) * w]);
        }
        rows_to_lanes(row, w, 0, n, strip_in);
        box_lanes(strip_in, strip_out, win_x, None);
        lanes_to_rows(strip_out, w, r0, n, full_a);
    }
    // Pass 1, along columns.
    box_cols(full_a, full_b, &mut s.sums, h, w, win_y);

    // Pass 2, along rows, keeping only the 64 sampled columns.
    let keep = grown(&mut s.keep, w);
    keep.fill(false);
    for &c in &cols {
        keep[c] = true;
    }
    let narrow_a = grown(&mut s.narrow_a, h * 64);
    let narrow_b = grown(&mut s.narrow_b, h * 64);
    for r0 in (0..h).step_by(LANES) {
        let n = LANES.min(h - r0);
        rows_to_lanes(full_b, w, r0, n, strip_in);
        box_lanes(strip_in, strip_out, win_x, Some(keep));
        for l in 0..n {
            let dst = &mut narrow_a[(r0 + l) * 64..(r0 + l + 1) * 64];
            for (d, &c) in dst.iter_mut().zip(&cols) {
                *d = strip_out[c][l];
            }
        }
    }
    // Pass 2, along the 64 kept columns, then keep the 64 sampled rows.
    box_cols(narrow_a, narrow_b, &mut s.sums, h, 64, win_y);
    for (i, &r) in rows.iter().enumerate() {
        out[i * 64..(i + 1) * 64].copy_from_slice(&narrow_b[r * 64..(r + 1) * 64]);
    }
}

/// The same filter with its passes in another order: both column passes first (a whole
/// row at a time, no transposes; the second keeps only the 64 sampled rows), then both
/// row passes on those 64 rows only. Box filters are linear and each acts on rows or
/// columns independently, so in exact arithmetic this is [`downsample_64`]; in f32 the
/// roundings differ (by at most a few thousandths of a level, the property test below),
/// so a hash bit can differ where a coefficient sits at the median. About a third of
/// the work at 720p. For live frames, whose luma is itself some roundings away from
/// any file's; conformance keeps the reference order.
pub(crate) fn downsample_64_columns_first(
    src: &impl LumaRows,
    s: &mut Scratch,
    out: &mut [f32; 4096],
) {
    let (w, h) = (src.width(), src.height());
    let win_x = window_size(w, 64);
    let win_y = window_size(h, 64);
    let cols: [usize; 64] = std::array::from_fn(|j| sample_index(j, w));
    let rows: [usize; 64] = std::array::from_fn(|i| sample_index(i, h));

    let full_a = grown(&mut s.full_a, w * h);
    for (r, row) in full_a.chunks_exact_mut(w).enumerate() {
        src.luma_row(r, row);
    }
    let full_b = grown(&mut s.full_b, w * h);
    // Both column passes; the second writes only the sampled rows.
    box_cols(full_a, full_b, &mut s.sums, h, w, win_y);
    let keep = grown(&mut s.keep, h.max(w));
    keep.fill(false);
    for &r in &rows {
        keep[r] = true;
    }
    box_cols_keep(full_b, full_a, &mut s.sums, h, w, win_y, Some(&keep[..h]));
    let narrow = grown(&mut s.narrow_a, 64 * w);
    for (i, &r) in rows.iter().enumerate() {
        narrow[i * w..(i + 1) * w].copy_from_slice(&full_a[r * w..(r + 1) * w]);
    }
    // Both row passes on the 64 rows, 16 at a time; the second keeps the sampled columns.
    keep.fill(false);
    for &c in &cols {
        keep[c] = true;
    }
    let strip_in = grown(&mut s.strip_in, w);
    let strip_out = grown(&mut s.strip_out, w);
    for r0 in (0..64).step_by(LANES) {
        rows_to_lanes(narrow, w, r0, LANES, strip_in);
        box_lanes(strip_in, strip_out, win_x, None);
        box_lanes(strip_out, strip_in, win_x, Some(&keep[..w]));
        for l in 0..LANES {
            for (j, &c) in cols.iter().enumerate() {
                out[(r0 + l) * 64 + j] = strip_in[c][l];
            }
        }
    }
}

/// The first `len` elements of `v`, grown (default-filled) if it is shorter; the elements
/// already there keep whatever they held.
fn grown<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

#[cfg(test)]
pub(crate) mod reference {
    //! A literal, slow transcription of the reference algorithm (strided 1-D box filter
    //! over full buffers, then decimation), used to check the fast path bit for bit.

    use super::{phases, sample_index, window_size};

    fn box1d(inp: &[f32], out: &mut [f32], start: usize, len: usize, stride: usize, w: usize) {
        let [n1, n2, n3, n4] = phases(len, w);
        let mut sum = 0.0f32;
        let mut cnt = 0i32;
        let (mut ri, mut li, mut oi) = (start, start, start);
        for _ in 0..n1 {
            sum += inp[ri];
            cnt += 1;
            ri += stride;
        }
        for _ in 0..n2 {
            sum += inp[ri];
            cnt += 1;
            out[oi] = sum / cnt as f32;
            ri += stride;
            oi += stride;
        }
        for _ in 0..n3 {
            sum += inp[ri];
            sum -= inp[li];
            out[oi] = sum / cnt as f32;
            ri += stride;
            li += stride;
            oi += stride;
        }
        for _ in 0..n4 {
            sum -= inp[li];
            cnt -= 1;
            out[oi] = sum / cnt as f32;
            li += stride;
            oi += stride;
        }
    }

    pub(crate) fn downsample_64(luma: &[f32], w: usize, h: usize) -> Vec<f32> {
        let mut a = luma.to_vec();
        let mut b = vec![0.0f32; w * h];
        let (wx, wy) = (window_size(w, 64), window_size(h, 64));
        for _ in 0..2 {
            for r in 0..h {
                box1d(&a, &mut b, r * w, w, 1, wx);
            }
            for c in 0..w {
                box1d(&b, &mut a, c, h, w, wy);
            }
        }
        let mut out = vec![0.0f32; 4096];
        for i in 0..64 {
            for j in 0..64 {
                out[i * 64 + j] = a[sample_index(i, h) * w + sample_index(j, w)];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Luma<'a>(&'a [f32], usize, usize);
    impl LumaRows for Luma<'_> {
        fn width(&self) -> usize {
            self.1
        }
        fn height(&self) -> usize {
            self.2
        }
        fn luma_row(&self, r: usize, out: &mut [f32]) {
            out[..self.1].copy_from_slice(&self.0[r * self.1..(r + 1) * self.1]);
        }
    }

    #[test]
    fn window_sizes_follow_reference_formula() {
        assert_eq!(window_size(64, 64), 1);
        assert_eq!(window_size(128, 64), 1);
        assert_eq!(window_size(129, 64), 2);
        assert_eq!(window_size(1280, 64), 10);
        assert_eq!(window_size(1281, 64), 11);
    }

    /// `n` luma values from xorshift64 state `x` (odd), with fractions.
    fn noise(x: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                (*x % 256) as f32 * 0.999 + (*x % 7) as f32
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The strip/lane implementation equals the literal transcription bit for bit.
        #[test]
        fn fast_path_is_bit_exact(w in 1usize..300, h in 1usize..300, seed in any::<u64>()) {
            let luma = noise(&mut (seed | 1), w * h);
            let mut out = [0.0f32; 4096];
            downsample_64(&Luma(&luma, w, h), &mut Scratch::default(), &mut out);
            let want = reference::downsample_64(&luma, w, h);
            for k in 0..4096 {
                prop_assert_eq!(out[k].to_bits(), want[k].to_bits(), "index {}", k);
            }
        }

        /// One scratch reused across images of other sizes (larger, smaller, larger
        /// again, as a stream's whole frames and sub-views alternate) leaves nothing of
        /// one image in the next: each result equals the transcription bit for bit.
        #[test]
        fn a_reused_scratch_is_bit_exact(
            sizes in proptest::collection::vec((1usize..200, 1usize..200), 3..6),
            seed in any::<u64>(),
        ) {
            let mut s = Scratch::default();
            let mut x = seed | 1;
            for (n, &(w, h)) in sizes.iter().enumerate() {
                let luma = noise(&mut x, w * h);
                let mut out = [0.0f32; 4096];
                downsample_64(&Luma(&luma, w, h), &mut s, &mut out);
                let want = reference::downsample_64(&luma, w, h);
                for k in 0..4096 {
                    prop_assert_eq!(out[k].to_bits(), want[k].to_bits(), "image {} index {}", n, k);
                }
            }
        }

        /// The columns-first order is the transcription's result up to f32 rounding:
        /// within 0.002 of a level (values are 0-262) on images of any size, with one
        /// scratch shared with the reference order in between (each stays as it is).
        #[test]
        fn columns_first_is_within_rounding_of_the_reference(
            sizes in proptest::collection::vec((1usize..300, 1usize..300), 2..5),
            seed in any::<u64>(),
        ) {
            let mut s = Scratch::default();
            let mut x = seed | 1;
            for (n, &(w, h)) in sizes.iter().enumerate() {
                let luma = noise(&mut x, w * h);
                let want = reference::downsample_64(&luma, w, h);
                let mut out = [0.0f32; 4096];
                downsample_64_columns_first(&Luma(&luma, w, h), &mut s, &mut out);
                for k in 0..4096 {
                    let d = (out[k] - want[k]).abs();
                    prop_assert!(d <= 0.002, "image {} ({}x{}) index {}: {} from {}", n, w, h, k, out[k], want[k]);
                }
                downsample_64(&Luma(&luma, w, h), &mut s, &mut out);
                for k in 0..4096 {
                    prop_assert_eq!(out[k].to_bits(), want[k].to_bits(), "image {} index {}", n, k);
                }
            }
        }
    }
}
