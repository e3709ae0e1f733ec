//! Resize: a port of Pillow's resampling (`Image.resize`: the convolution filters of
//! `Resample.c` and the nearest-neighbour `ImagingScaleAffine`), bit-exact with torchvision on
//! PIL images, and torchvision's rule for an int size (shorter side, optional `max_size`).

use super::{expect_image, DataError, Transform, Value};
use crate::recipe::{Interpolation, SizeSpec};
use image::RgbImage;
use rand_chacha::ChaCha8Rng;

pub(crate) const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One of Pillow's convolution filters (`Resample.c`): the kernel and its support at scale 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Box,
    Bilinear,
    Hamming,
    Bicubic,
    Lanczos,
}

impl Filter {
    /// The convolution filter of an interpolation mode; `None` for nearest, which Pillow
    /// samples instead (`nearest`).
    pub fn of(interpolation: Interpolation) -> Option<Filter> {
        match interpolation {
            Interpolation::Nearest => None,
            Interpolation::Bilinear => Some(Filter::Bilinear),
            Interpolation::Bicubic => Some(Filter::Bicubic),
            Interpolation::Box => Some(Filter::Box),
            Interpolation::Hamming => Some(Filter::Hamming),
            Interpolation::Lanczos => Some(Filter::Lanczos),
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    /// The kernel, written as Pillow writes it (same operations in the same order, so the
    /// same doubles).
    #[inline]
    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow's constants are C floats (`0.54f`, `0.46f`) promoted to double.
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

#[inline]
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter.
pub(crate) fn coeffs(in_size: usize, out_size: usize) -> (usize, Vec<(usize, usize)>, Vec<i32>) {
    filter_coeffs(in_size, out_size, Filter::Bilinear)
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel, the first input
/// index, the tap count and the 22-bit fixed-point weights (`ksize` per pixel, rounded half
/// away from zero).
pub(crate) fn filter_coeffs(
    in_size: usize,
    out_size: usize,
    filter: Filter,
) -> (usize, Vec<(usize, usize)>, Vec<i32>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = (support.ceil() as usize) * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let ss = 1.0 / filterscale;
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize; // C cast truncates
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..n {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let f = w * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if w < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, n));
    }
    (ksize, bounds, kk)
}

#[inline]
pub(crate) fn clip8(v: i32) -> u8 {
    if v >= (1 << (PRECISION_BITS + 8)) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pillow `Image.resize((w, h), BILINEAR)` on an RGB image.
pub fn resize_bilinear(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    resample(img, out_w, out_h, Filter::Bilinear)
}

/// Pillow `Image.resize((w, h), resample)` on an RGB image, for any interpolation mode
/// (torchvision's `F.resize` on a PIL image). Sizes of 0 are taken as 1.
pub fn resize_with(img: &RgbImage, out_w: u32, out_h: u32, interp: Interpolation) -> RgbImage {
    let (out_w, out_h) = (out_w.max(1), out_h.max(1));
    match Filter::of(interp) {
        Some(f) => resample(img, out_w, out_h, f),
        None => resize_nearest(img, out_w, out_h),
    }
}

/// Pillow's `NEAREST` resize: `ImagingScaleAffine` with the matrix `[in/out, 0, 0; 0, in/out,
/// 0]`: the source coordinate starts at half a step and accumulates one step per output pixel
/// (in doubles, as Pillow does), truncated; one outside the image gives black.
pub fn resize_nearest(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    if ow == in_w && oh == in_h {
        return img.clone();
    }
    let table = |in_size: usize, out_size: usize| -> Vec<Option<usize>> {
        // box is a C float: (double)(float(in) - 0.0f) / out
        let a = (in_size as f32) as f64 / out_size as f64;
        let mut o = a * 0.5;
        (0..out_size)
            .map(|_| {
                // COORD(v): -1 below zero, else (int)v
                let i = if o < 0.0 { -1 } else { o as i64 };
                o += a;
                (0..in_size as i64).contains(&i).then_some(i as usize)
            })
            .collect()
    };
    let xs = table(in_w, ow);
    let ys = table(in_h, oh);
    let src = img.as_raw();
    let mut out = vec![0u8; ow * oh * 3];
    for (drow, y) in out.chunks_exact_mut(ow * 3).zip(&ys) {
        let Some(y) = *y else { continue };
        let srow = &src[y * in_w * 3..(y + 1) * in_w * 3];
        for (d, x) in drow.chunks_exact_mut(3).zip(&xs) {
            if let Some(x) = *x {
                d.copy_from_slice(&srow[x * 3..x * 3 + 3]);
            }
        }
    }
    RgbImage::from_raw(out_w, out_h, out).unwrap_or_default()
}

/// Fixed-point coefficients of one axis: `(ksize, (first index, taps) per output, weights)`.
type Coeffs = (usize, Vec<(usize, usize)>, Vec<i32>);

/// Pillow's `ImagingResampleHorizontal_8bpc` on `rows` rows of `src` (width `in_w`) starting
/// at row `row0`.
fn horizontal_pass(src: &[u8], in_w: usize, row0: usize, rows: usize, c: &Coeffs) -> Vec<u8> {
    let (ksize, bounds, kk) = c;
    let ow = bounds.len();
    let mut out = vec![0u8; rows * ow * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    for y in 0..rows {
        let srow = &src[(y + row0) * in_w * 3..(y + row0 + 1) * in_w * 3];
        let drow = &mut out[y * ow * 3..(y + 1) * ow * 3];
        for (xx, d) in drow.chunks_exact_mut(3).enumerate() {
            let (xmin, n) = bounds[xx];
            let k = &kk[xx * ksize..xx * ksize + n];
            let (mut s0, mut s1, mut s2) = (half, half, half);
            let px = &srow[xmin * 3..(xmin + n) * 3];
            for (p, &w) in px.chunks_exact(3).zip(k) {
                s0 = s0.wrapping_add(p[0] as i32 * w);
                s1 = s1.wrapping_add(p[1] as i32 * w);
                s2 = s2.wrapping_add(p[2] as i32 * w);
            }
            d[0] = clip8(s0);
            d[1] = clip8(s1);
            d[2] = clip8(s2);
        }
    }
    out
}

/// Pillow's `ImagingResampleVertical_8bpc` on `src` (width `w`), whose first row is source
/// row `row0`.
fn vertical_pass(src: &[u8], w: usize, row0: usize, c: &Coeffs) -> Vec<u8> {
    let (ksize, bounds, kk) = c;
    let oh = bounds.len();
    let stride = w * 3;
    let mut out = vec![0u8; oh * stride];
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut acc = vec![half; stride];
    for (yy, drow) in out.chunks_exact_mut(stride.max(1)).enumerate().take(oh) {
        let (ymin, n) = bounds[yy];
        let ymin = ymin - row0;
        let k = &kk[yy * ksize..yy * ksize + n];
        // accumulate row by row for cache-friendly access (same sums as Pillow's order)
        acc.fill(half);
        for (i, &wt) in k.iter().enumerate() {
            let srow = &src[(ymin + i) * stride..(ymin + i + 1) * stride];
            for (a, &s) in acc.iter_mut().zip(srow) {
                *a = a.wrapping_add(s as i32 * wt);
            }
        }
        for (d, &a) in drow.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    out
}

/// Pillow's `ImagingResample` (8 bits per channel): two passes, each rounded to uint8, in the
/// order Pillow 13 picks (`vertical_first`); a pass whose size does not change is skipped.
pub fn resample(img: &RgbImage, out_w: u32, out_h: u32, filter: Filter) -> RgbImage {
    let vfirst = vertical_first(img.width(), img.height(), out_w, out_h);
    resample_in_order(img, out_w, out_h, filter, vfirst)
}

/// `resample` with the order of the passes given: horizontal then vertical (over only the rows
/// the vertical pass reads), or vertical then horizontal. The passes round to uint8 in
/// between, so the order shows in the last bit.
pub fn resample_in_order(
    img: &RgbImage,
    out_w: u32,
    out_h: u32,
    filter: Filter,
    vertical_first: bool,
) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    if ow == in_w && oh == in_h {
        return img.clone();
    }
    let src = img.as_raw();
    let need_h = ow != in_w;
    let need_v = oh != in_h;
    let out = if !need_v {
        horizontal_pass(src, in_w, 0, in_h, &filter_coeffs(in_w, ow, filter))
    } else if !need_h {
        vertical_pass(src, in_w, 0, &filter_coeffs(in_h, oh, filter))
    } else if vertical_first {
        let tmp = vertical_pass(src, in_w, 0, &filter_coeffs(in_h, oh, filter));
        horizontal_pass(&tmp, in_w, 0, oh, &filter_coeffs(in_w, ow, filter))
    } else {
        let cv = filter_coeffs(in_h, oh, filter);
        let first = cv.1[0].0;
        let last = cv.1[oh - 1].0 + cv.1[oh - 1].1;
        let tmp = horizontal_pass(
            src,
            in_w,
            first,
            last - first,
            &filter_coeffs(in_w, ow, filter),
        );
        vertical_pass(&tmp, ow, first, &cv)
    };
    RgbImage::from_raw(out_w, out_h, out).unwrap_or_default()
}

/// Whether Pillow 13 runs the vertical pass first: when the height shrinks by more than twice
/// as many pixels as the width does (`in_h - out_h > 2 * (in_w - out_w)`, the width may grow).
/// Earlier Pillow always ran the horizontal pass first. Found by comparing both orders with
/// Pillow 13.0.0 over some thousands of sizes (every size where the orders differ agrees).
pub fn vertical_first(in_w: u32, in_h: u32, out_w: u32, out_h: u32) -> bool {
    let (in_w, in_h, out_w, out_h) = (in_w as i64, in_h as i64, out_w as i64, out_h as i64);
    out_h < in_h && in_h - out_h > 2 * (in_w - out_w)
}

/// torchvision's output size (`_compute_resized_output_size`): `(h, w)` as given, or for an int
/// the shorter side becomes `s` and the longer `int(s * long / short)`; with `max_size`, a
/// longer side above it becomes `max_size` and the shorter `int(max_size * short' / long')`
/// (of the sizes just computed). Returns `(w, h)`.
pub fn output_size(in_w: u32, in_h: u32, size: SizeSpec, max_size: Option<u32>) -> (u32, u32) {
    match size {
        SizeSpec::HeightWidth([h, w]) => (w, h),
        SizeSpec::Square(s) => {
            let (short, long) = if in_w <= in_h {
                (in_w, in_h)
            } else {
                (in_h, in_w)
            };
            let (mut new_short, mut new_long) = (
                s,
                ((s as f64) * (long as f64) / (short.max(1) as f64)) as u32,
            );
            if let Some(m) = max_size {
                if new_long > m {
                    new_short = ((m as f64) * (new_short as f64) / (new_long as f64)) as u32;
                    new_long = m;
                }
            }
            if in_w <= in_h {
                (new_short, new_long)
            } else {
                (new_long, new_short)
            }
        }
    }
}

/// `resize`: `size = int` (shorter side, capped by `max_size`) or `[h, w]`, with any of
/// Pillow's filters (`antialias` is irrelevant: Pillow always antialiases when downscaling).
#[derive(Debug, Clone)]
pub struct Resize {
    pub size: SizeSpec,
    pub interpolation: Interpolation,
    pub max_size: Option<u32>,
}

impl Resize {
    pub fn new(
        size: SizeSpec,
        interpolation: Interpolation,
        max_size: Option<u32>,
    ) -> Result<Self, DataError> {
        super::hw("resize", size)?;
        if let Some(m) = max_size {
            match size {
                SizeSpec::HeightWidth(_) => {
                    return Err(DataError::transform(
                        "resize",
                        "max_size is only allowed with an int size (the shorter side), not [h, w]",
                    ))
                }
                SizeSpec::Square(s) if m <= s => {
                    return Err(DataError::transform(
                        "resize",
                        format!("max_size = {m} must be greater than size = {s}"),
                    ))
                }
                SizeSpec::Square(_) => {}
            }
        }
        Ok(Resize {
            size,
            interpolation,
            max_size,
        })
    }
}

impl Transform for Resize {
    fn name(&self) -> &'static str {
        "resize"
    }
    fn apply(&self, x: Value, _rng: &mut ChaCha8Rng) -> Result<Value, DataError> {
        let img = expect_image("resize", x)?;
        let (w, h) = output_size(img.width(), img.height(), self.size, self.max_size);
        if (w, h) == img.dimensions() {
            return Ok(Value::Image(img));
        }
        Ok(Value::Image(resize_with(&img, w, h, self.interpolation)))
    }
}
