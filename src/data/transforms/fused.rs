//! The usual training pipeline in fewer passes over the pixels, with the same results as the
//! step-by-step transforms (bit for bit, same random draws in the same order):
//! RandomResizedCrop, then any of HorizontalFlip / ColorJitter (without hue) in recipe order,
//! ToTensor, and an optional Normalize.
//!
//! - the crop is read in place from the decoded image (no copy) and resampled with Pillow's
//!   bilinear filter in its two passes, in Pillow 13's order (`resize::vertical_first`); the
//!   horizontal pass writes its row mirrored when the flip applies (mirroring commutes with the
//!   per-pixel colour operations and the vertical pass), and the last pass writes channel
//!   planes;
//! - ColorJitter's brightness and contrast are 256-entry tables (as Pillow computes them) that
//!   compose; they are applied lazily, folded into the next pass that has to touch the pixels
//!   (a saturation pass, the grey mean that contrast needs, or the final pass);
//! - the final pass maps each byte through one table per channel that holds
//!   `(table(v) / 255 - mean) / std` in f32, i.e. ToTensor and Normalize exactly as computed
//!   one after the other.
//!
//! Scratch buffers live per thread, so a worker allocates only the output tensor per image.

use super::color_jitter::ColorJitter;
use super::random_resized_crop::RandomResizedCrop;
use super::resize::{clip8, coeffs, vertical_first, PRECISION_BITS};
use super::ImageTensor;
use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;

/// One step between the crop and `to_tensor`.
#[derive(Debug, Clone)]
pub enum FusedOp {
    Flip(f64),
    Jitter(ColorJitter),
}

#[derive(Debug, Clone)]
pub struct FusedPipeline {
    pub crop: RandomResizedCrop,
    pub ops: Vec<FusedOp>,
    /// `(mean, std)` of a trailing Normalize.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

#[derive(Default)]
struct Scratch {
    tmp: Vec<u8>,
    /// The horizontal pass's output when the vertical pass runs first.
    tmp2: Vec<u8>,
    acc: Vec<i32>,
    planes: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A colour operation in the order drawn.
#[derive(Debug, Clone, Copy)]
enum Color {
    Brightness(f64),
    Contrast(f64),
    Saturation(f64),
}

#[inline(always)]
fn luma3(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

impl FusedPipeline {
    /// `(channels, height, width)` of every output.
    pub fn output_shape(&self) -> (usize, usize, usize) {
        (3, self.crop.size.0 as usize, self.crop.size.1 as usize)
    }

    /// Runs the pipeline on `img` drawing from `rng` exactly as the step-by-step transforms do.
    pub fn apply(&self, img: &RgbImage, rng: &mut ChaCha8Rng) -> ImageTensor {
        let (c, h, w) = self.output_shape();
        let mut data = vec![0f32; c * h * w];
        self.apply_into(img, rng, &mut data);
        ImageTensor { c, h, w, data }
    }

    /// `apply` writing the CHW result into `out` (of `output_shape`'s size, e.g. a slice of
    /// the batch).
    pub fn apply_into(&self, img: &RgbImage, rng: &mut ChaCha8Rng, out: &mut [f32]) {
        let (i, j, h, w) = self.crop.params(img.width(), img.height(), rng);
        let mut flip = false;
        let mut colors: Vec<Color> = Vec::new();
        for op in &self.ops {
            match op {
                FusedOp::Flip(p) => {
                    if rng.random::<f64>() < *p {
                        flip = !flip;
                    }
                }
                FusedOp::Jitter(cj) => {
                    let (order, [b, c, s, _]) = cj.draw(rng);
                    for o in order {
                        match (o, b, c, s) {
                            (0, Some(f), _, _) => colors.push(Color::Brightness(f)),
                            (1, _, Some(f), _) => colors.push(Color::Contrast(f)),
                            (2, _, _, Some(f)) => colors.push(Color::Saturation(f)),
                            _ => {}
                        }
                    }
                }
            }
        }
        let (oh, ow) = (self.crop.size.0 as usize, self.crop.size.1 as usize);
        let (iw, ih) = (img.width() as i64, img.height() as i64);
        let (h, w) = (h.max(1), w.max(1));
        let inside = i >= 0 && j >= 0 && i + h <= ih && j + w <= iw;
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            if inside {
                resample(
                    img, i as usize, j as usize, h as usize, w as usize, ow, oh, flip, s,
                );
            } else {
                // never drawn by `params`; kept for safety with the plain crop
                let crop = super::center_crop::crop_fill(img, i, j, h as u32, w as u32, 0);
                resample(&crop, 0, 0, h as usize, w as usize, ow, oh, flip, s);
            }
            let n = ow * oh;
            let planes = &mut s.planes[..3 * n];
            // brightness and contrast blend every byte with a constant: kept as (constant,
            // factor) pairs and applied in the next pass that touches the pixels
            let mut pending: Vec<(f32, f32)> = Vec::new();
            for c in colors {
                match c {
                    Color::Brightness(f) => pending.push((0.0, f as f32)),
                    Color::Contrast(f) => {
                        blend_planes(planes, &pending);
                        pending.clear();
                        let mean = grey_mean(planes, n);
                        pending.push((mean as f32, f as f32));
                    }
                    Color::Saturation(f) => {
                        blend_planes(planes, &pending);
                        pending.clear();
                        saturate(planes, n, f as f32);
                    }
                }
            }
            let out = &mut out[..3 * n];
            for c in 0..3 {
                let (m, sd) = match self.normalize {
                    Some((mean, std)) => (Some(mean[c]), std[c]),
                    None => (None, 1.0),
                };
                finish(
                    &planes[c * n..(c + 1) * n],
                    &mut out[c * n..(c + 1) * n],
                    &pending,
                    m,
                    sd,
                );
            }
        })
    }
}

/// Defines `$name`, which runs the `#[inline(always)]` function `$generic` compiled for AVX2
/// when the CPU has it (checked at run time: the binary stays portable), else as built.
macro_rules! dispatch {
    ($name:ident, $generic:ident, ($($arg:ident : $ty:ty),*) $(-> $ret:ty)?) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

/// Pillow's `ImagingBlend` of a byte `x` (held as f32) with the constant `d`, factor `a`.
#[inline(always)]
#[allow(clippy::manual_clamp)]
fn blend(x: f32, (d, a): (f32, f32)) -> f32 {
    // `trunc_u8(..) as f32`, kept in f32 lanes; max/min rather than `clamp` so that a NaN
    // (an infinite factor times 0) becomes 0 as in Pillow
    (d + a * (x - d)).max(0.0).min(255.0).trunc()
}

const CHUNK: usize = 64;

/// The pending blends applied to every byte, in place.
#[inline(always)]
fn blend_planes_generic(planes: &mut [u8], blends: &[(f32, f32)]) {
    let mut buf = [0f32; CHUNK];
    for p in planes.chunks_mut(CHUNK) {
        let buf = &mut buf[..p.len()];
        for (b, &v) in buf.iter_mut().zip(p.iter()) {
            *b = v as f32;
        }
        for &bl in blends {
            for b in buf.iter_mut() {
                *b = blend(*b, bl);
            }
        }
        for (v, &b) in p.iter_mut().zip(buf.iter()) {
            // SAFETY: `blend` leaves whole numbers within [0, 255].
            *v = unsafe { b.to_int_unchecked::<i32>() } as u8;
        }
    }
}
dispatch!(blend_planes_avx2, blend_planes_generic, (planes: &mut [u8], blends: &[(f32, f32)]));

fn blend_planes(planes: &mut [u8], blends: &[(f32, f32)]) {
    if !blends.is_empty() {
        blend_planes_avx2(planes, blends);
    }
}

/// The last pass: pending blends, then ToTensor (`v / 255`) and Normalize (`(x - m) / s`)
/// with the same f32 operations in the same order as the separate transforms.
#[inline(always)]
fn finish_generic(plane: &[u8], out: &mut [f32], blends: &[(f32, f32)], m: Option<f32>, s: f32) {
    let mut buf = [0f32; CHUNK];
    for (p, o) in plane.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
        let buf = &mut buf[..p.len()];
        for (b, &v) in buf.iter_mut().zip(p) {
            *b = v as f32;
        }
        for &bl in blends {
            for b in buf.iter_mut() {
                *b = blend(*b, bl);
            }
        }
        match m {
            Some(m) => {
                for (o, &b) in o.iter_mut().zip(buf.iter()) {
                    *o = (b / 255.0 - m) / s;
                }
            }
            None => {
                for (o, &b) in o.iter_mut().zip(buf.iter()) {
                    *o = b / 255.0;
                }
            }
        }
    }
}
dispatch!(
    finish,
    finish_generic,
    (plane: &[u8], out: &mut [f32], blends: &[(f32, f32)], m: Option<f32>, s: f32)
);

/// Mean grey level (Pillow's `ImageStat` mean of the L image, rounded).
#[inline(always)]
fn grey_mean_generic(planes: &[u8], n: usize) -> u8 {
    let (r, rest) = planes.split_at(n);
    let (g, b) = rest.split_at(n);
    let mut sum = 0u64;
    // u32 partial sums (at most 4096 * 255 each) keep the loop in 32-bit lanes
    for ((r, g), b) in r.chunks(4096).zip(g.chunks(4096)).zip(b.chunks(4096)) {
        let mut part = 0u32;
        for ((&r, &g), &b) in r.iter().zip(g).zip(b) {
            part += luma3(r, g, b) as u32;
        }
        sum += part as u64;
    }
    (sum as f64 / n.max(1) as f64 + 0.5) as u8
}
dispatch!(grey_mean, grey_mean_generic, (planes: &[u8], n: usize) -> u8);

/// `t as u8` (truncate, saturate at 0 and 255) in a form that vectorises: clamp, then convert.
#[inline(always)]
#[allow(clippy::manual_clamp)]
fn trunc_u8(t: f32) -> u8 {
    // not `clamp`, which keeps a NaN
    let t = t.max(0.0).min(255.0);
    // SAFETY: `t` is finite (a NaN becomes 0 in `max`) and within [0, 255].
    unsafe { t.to_int_unchecked::<i32>() as u8 }
}

/// Pillow's saturation (blend with the pixel's grey level, `ImagingBlend` in f32), in place.
/// `(l + a * (v - l)) as u8` is Pillow's result: Rust's float-to-int cast truncates and
/// saturates, which is Pillow's truncation when interpolating and its clipping otherwise.
#[inline(always)]
fn saturate_generic(planes: &mut [u8], n: usize, a: f32) {
    let (r, rest) = planes.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let l = luma3(*r, *g, *b) as f32;
        *r = trunc_u8(l + a * (*r as f32 - l));
        *g = trunc_u8(l + a * (*g as f32 - l));
        *b = trunc_u8(l + a * (*b as f32 - l));
    }
}
dispatch!(saturate, saturate_generic, (planes: &mut [u8], n: usize, a: f32));

/// Pillow's `clip8` (`resize::clip8`) without branches: an arithmetic shift then a clamp give
/// 0 for every sum <= 0 and 255 from `255 << PRECISION_BITS` up.
#[inline(always)]
fn clip8_fast(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's bilinear resize of the `h x w` window at (`top`, `left`) of `img` to `ow x oh`
/// (both passes always run: a pass between equal sizes is the identity in Pillow's
/// fixed-point arithmetic), in Pillow 13's order of the passes (`vertical_first`), mirrored
/// when `flip`, into `s.planes` as three channel planes.
#[allow(clippy::too_many_arguments)]
fn resample(
    img: &RgbImage,
    top: usize,
    left: usize,
    h: usize,
    w: usize,
    ow: usize,
    oh: usize,
    flip: bool,
    s: &mut Scratch,
) {
    let (ksize_v, bounds_v, kk_v) = coeffs(h, oh);
    let (kh, bounds_h, kk_h) = coeffs(w, ow);
    // vertical first only matters when both passes change the size
    let vfirst = ow != w && vertical_first(w as u32, h as u32, ow as u32, oh as u32);
    let first = if vfirst { 0 } else { bounds_v[0].0 };
    let last = bounds_v[oh - 1].0 + bounds_v[oh - 1].1;
    let rows = last - first;
    let stride = ow * 3;
    s.planes.resize(3 * ow * oh, 0);
    // Per output pixel in output order (mirrored when flipping): the first of `kh_eff` input
    // pixels and their weights, `kh_eff` being the most taps any output pixel has (2 when
    // upsampling, where Pillow's `ksize` is 3). Windows near the right edge start earlier with
    // leading zero weights, so every pixel reads exactly `kh_eff` inputs (zero weights add
    // exactly nothing).
    let kh_eff = bounds_h.iter().map(|b| b.1).max().unwrap_or(1).clamp(1, w);
    let mut starts = Vec::with_capacity(ow);
    let mut wts = vec![0i32; ow * kh_eff];
    for x in 0..ow {
        let xx = if flip { ow - 1 - x } else { x };
        let (xmin, n) = bounds_h[xx];
        let st = xmin.min(w - kh_eff);
        starts.push(st);
        for t in 0..n {
            wts[x * kh_eff + xmin - st + t] = kk_h[xx * kh + t];
        }
    }
    let src = img.as_raw();
    let iw = img.width() as usize;
    let hpass = |src: &[u8], iw: usize, rows: usize, tmp: &mut [u8]| match kh_eff {
        2 => hpass_k::<2>(src, iw, rows, w, &starts, &wts, tmp, stride),
        3 => hpass_k::<3>(src, iw, rows, w, &starts, &wts, tmp, stride),
        4 => hpass_k::<4>(src, iw, rows, w, &starts, &wts, tmp, stride),
        5 => hpass_k::<5>(src, iw, rows, w, &starts, &wts, tmp, stride),
        _ => hpass_any(src, iw, rows, w, kh_eff, &starts, &wts, tmp, stride),
    };
    if vfirst {
        // the window's columns resampled vertically (interleaved, `w` wide), then the
        // horizontal pass over those `oh` rows, then split into planes
        let base = top * iw + left;
        s.tmp.resize(oh * w * 3, 0);
        s.acc.resize(w * 3, 0);
        s.tmp2.resize(oh * stride, 0);
        vpass_window(
            &src[base * 3..],
            iw,
            w,
            &mut s.acc,
            &mut s.tmp,
            &bounds_v,
            &kk_v,
            ksize_v,
        );
        hpass(&s.tmp, w, oh, &mut s.tmp2);
        let n = ow * oh;
        let (pr, rest) = s.planes.split_at_mut(n);
        let (pg, pb) = rest.split_at_mut(n);
        for (((px, r), g), b) in s.tmp2.chunks_exact(3).zip(pr).zip(pg).zip(pb) {
            *r = px[0];
            *g = px[1];
            *b = px[2];
        }
        return;
    }
    s.tmp.resize(rows * stride, 0);
    s.acc.resize(stride, 0);
    let base = (top + first) * iw + left;
    hpass(&src[base * 3..], iw, rows, &mut s.tmp);
    vpass(
        &s.tmp,
        &mut s.acc,
        &mut s.planes,
        &bounds_v,
        &kk_v,
        ksize_v,
        first,
        ow,
        oh,
    );
}

/// The vertical pass over the `w` columns of a window of an image `iw` pixels wide (`src`
/// starts at the window's top-left pixel), written interleaved (`w * 3` bytes a row).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn vpass_window_generic(
    src: &[u8],
    iw: usize,
    w: usize,
    acc: &mut [i32],
    out: &mut [u8],
    bounds_v: &[(usize, usize)],
    kk_v: &[i32],
    ksize_v: usize,
) {
    let half = 1i32 << (PRECISION_BITS - 1);
    let width = w * 3;
    let acc = &mut acc[..width];
    for (yy, drow) in out.chunks_exact_mut(width).enumerate() {
        let (ymin, cnt) = bounds_v[yy];
        let k = &kk_v[yy * ksize_v..yy * ksize_v + cnt];
        acc.fill(half);
        for (t, &wt) in k.iter().enumerate() {
            let r = (ymin + t) * iw * 3;
            for (a, &v) in acc.iter_mut().zip(&src[r..r + width]) {
                *a = a.wrapping_add(v as i32 * wt);
            }
        }
        for (d, &a) in drow.iter_mut().zip(acc.iter()) {
            *d = clip8_fast(a);
        }
    }
}
dispatch!(
    vpass_window,
    vpass_window_generic,
    (
        src: &[u8],
        iw: usize,
        w: usize,
        acc: &mut [i32],
        out: &mut [u8],
        bounds_v: &[(usize, usize)],
        kk_v: &[i32],
        ksize_v: usize
    )
);

#[allow(clippy::too_many_arguments)]
fn hpass_k<const K: usize>(
    src: &[u8],
    iw: usize,
    rows: usize,
    w: usize,
    starts: &[usize],
    wts: &[i32],
    tmp: &mut [u8],
    stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { hpass_simd::<K>(src, iw, rows, starts, wts, tmp, stride) };
    }
    hpass_k_scalar::<K>(src, iw, rows, w, starts, wts, tmp, stride)
}

/// `hpass_k` without SIMD (CPUs without AVX2).
#[allow(clippy::too_many_arguments)]
fn hpass_k_scalar<const K: usize>(
    src: &[u8],
    iw: usize,
    rows: usize,
    w: usize,
    starts: &[usize],
    wts: &[i32],
    tmp: &mut [u8],
    stride: usize,
) {
    {
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        fn generic<const K: usize>(
            src: &[u8],
            iw: usize,
            rows: usize,
            w: usize,
            starts: &[usize],
            wts: &[i32],
            tmp: &mut [u8],
            stride: usize,
        ) {
            debug_assert!(rows == 0 || (rows - 1) * iw * 3 + w * 3 <= src.len());
            let half = 1i32 << (PRECISION_BITS - 1);
            for y in 0..rows {
                // the row and whatever follows it in the image: a pixel is read as 4 bytes (its
                // RGB and one byte of the next pixel, weighted but never stored), which the
                // compiler turns into one 4-lane multiply-add per tap
                let rest = &src[y * iw * 3..];
                let drow = &mut tmp[y * stride..(y + 1) * stride];
                for ((d, &st), k) in drow
                    .chunks_exact_mut(3)
                    .zip(starts)
                    .zip(wts.chunks_exact(K))
                {
                    let mut acc = [half; 4];
                    if st * 3 + 3 * K < rest.len() {
                        let px = &rest[st * 3..st * 3 + 3 * K + 1];
                        for t in 0..K {
                            for c in 0..4 {
                                acc[c] = acc[c].wrapping_add(px[3 * t + c] as i32 * k[t]);
                            }
                        }
                    } else {
                        // the image's last pixel: no byte after it
                        let px = &rest[st * 3..st * 3 + 3 * K];
                        for t in 0..K {
                            for c in 0..3 {
                                acc[c] = acc[c].wrapping_add(px[3 * t + c] as i32 * k[t]);
                            }
                        }
                    }
                    d[0] = clip8_fast(acc[0]);
                    d[1] = clip8_fast(acc[1]);
                    d[2] = clip8_fast(acc[2]);
                }
            }
        }
        generic::<K>(src, iw, rows, w, starts, wts, tmp, stride)
    }
}

/// `hpass_k` with one 4-lane multiply-add per tap: a pixel is read as 4 bytes (its RGB and
/// one byte of the next pixel, whose lane is never stored), the fixed-point sum is shifted
/// and clamped to [0, 255] by the saturating packs (Pillow's `clip8`: the shifted sums lie
/// within [-512, 511]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn hpass_simd<const K: usize>(
    src: &[u8],
    iw: usize,
    rows: usize,
    starts: &[usize],
    wts: &[i32],
    tmp: &mut [u8],
    stride: usize,
) {
    use std::arch::x86_64::*;
    const _: () = assert!(PRECISION_BITS == 22);
    let half = 1i32 << (PRECISION_BITS - 1);
    let vhalf = _mm_set1_epi32(half);
    for y in 0..rows {
        let rest = &src[y * iw * 3..];
        let drow = &mut tmp[y * stride..(y + 1) * stride];
        for ((d, &st), k) in drow
            .chunks_exact_mut(3)
            .zip(starts)
            .zip(wts.chunks_exact(K))
        {
            if st * 3 + 3 * K < rest.len() {
                let px = &rest[st * 3..st * 3 + 3 * K + 1];
                let mut acc = vhalf;
                for t in 0..K {
                    let b = [px[3 * t], px[3 * t + 1], px[3 * t + 2], px[3 * t + 3]];
                    let v = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(i32::from_le_bytes(b)));
                    acc = _mm_add_epi32(acc, _mm_mullo_epi32(v, _mm_set1_epi32(k[t])));
                }
                let r = _mm_srai_epi32::<22>(acc);
                let r = _mm_packus_epi16(_mm_packs_epi32(r, r), _mm_setzero_si128());
                let out = _mm_cvtsi128_si32(r).to_le_bytes();
                d.copy_from_slice(&out[..3]);
            } else {
                // the image's last pixel: no byte after it
                let px = &rest[st * 3..st * 3 + 3 * K];
                let mut acc = [half; 3];
                for t in 0..K {
                    for c in 0..3 {
                        acc[c] = acc[c].wrapping_add(px[3 * t + c] as i32 * k[t]);
                    }
                }
                for c in 0..3 {
                    d[c] = clip8_fast(acc[c]);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn hpass_any(
    src: &[u8],
    iw: usize,
    rows: usize,
    w: usize,
    k: usize,
    starts: &[usize],
    wts: &[i32],
    tmp: &mut [u8],
    stride: usize,
) {
    let half = 1i32 << (PRECISION_BITS - 1);
    for y in 0..rows {
        let srow = &src[y * iw * 3..y * iw * 3 + w * 3];
        let drow = &mut tmp[y * stride..(y + 1) * stride];
        for ((d, &st), kw) in drow
            .chunks_exact_mut(3)
            .zip(starts)
            .zip(wts.chunks_exact(k))
        {
            let px = &srow[st * 3..(st + k) * 3];
            let (mut s0, mut s1, mut s2) = (half, half, half);
            for (p, &wt) in px.chunks_exact(3).zip(kw) {
                s0 = s0.wrapping_add(p[0] as i32 * wt);
                s1 = s1.wrapping_add(p[1] as i32 * wt);
                s2 = s2.wrapping_add(p[2] as i32 * wt);
            }
            d[0] = clip8(s0);
            d[1] = clip8(s1);
            d[2] = clip8(s2);
        }
    }
}

/// The vertical pass over the horizontally resampled rows, written as channel planes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn vpass_generic(
    tmp: &[u8],
    acc: &mut [i32],
    planes: &mut [u8],
    bounds_v: &[(usize, usize)],
    kk_v: &[i32],
    ksize_v: usize,
    first: usize,
    ow: usize,
    oh: usize,
) {
    let half = 1i32 << (PRECISION_BITS - 1);
    let stride = ow * 3;
    let n = ow * oh;
    let (pr, rest) = planes.split_at_mut(n);
    let (pg, pb) = rest.split_at_mut(n);
    let acc = &mut acc[..stride];
    for yy in 0..oh {
        let (ymin, cnt) = bounds_v[yy];
        let ymin = ymin - first;
        let k = &kk_v[yy * ksize_v..yy * ksize_v + cnt];
        acc.fill(half);
        for (t, &wt) in k.iter().enumerate() {
            let srow = &tmp[(ymin + t) * stride..(ymin + t + 1) * stride];
            for (a, &v) in acc.iter_mut().zip(srow) {
                *a = a.wrapping_add(v as i32 * wt);
            }
        }
        let o = yy * ow;
        for (((a, r), g), b) in acc
            .chunks_exact(3)
            .zip(&mut pr[o..o + ow])
            .zip(&mut pg[o..o + ow])
            .zip(&mut pb[o..o + ow])
        {
            *r = clip8_fast(a[0]);
            *g = clip8_fast(a[1]);
            *b = clip8_fast(a[2]);
        }
    }
}
dispatch!(
    vpass,
    vpass_generic,
    (
        tmp: &[u8],
        acc: &mut [i32],
        planes: &mut [u8],
        bounds_v: &[(usize, usize)],
        kk_v: &[i32],
        ksize_v: usize,
        first: usize,
        ow: usize,
        oh: usize
    )
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::transforms::enhance::{blend_px, blend_table};

    #[test]
    fn clip8_fast_is_pillows_clip8() {
        let edges = [
            0,
            1,
            1 << 22,
            (255 << 22) - 1,
            255 << 22,
            (1 << 30) - 1,
            1 << 30,
        ];
        for &e in &edges {
            for d in -3i32..=3 {
                for v in [e + d, -(e + d), i32::MAX - d.abs(), i32::MIN + d.abs()] {
                    assert_eq!(clip8_fast(v), clip8(v), "{v}");
                }
            }
        }
        for v in (-(1i64 << 24)..(1i64 << 31))
            .step_by(4099)
            .map(|v| v as i32)
        {
            assert_eq!(clip8_fast(v), clip8(v), "{v}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn simd_horizontal_pass_matches_the_scalar_one() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        use rand::{Rng, SeedableRng};
        let mut r = ChaCha8Rng::seed_from_u64(3);
        for (w, ow) in [(5usize, 9usize), (9, 5), (40, 17), (17, 40), (3, 3)] {
            for k in [2usize, 3, 4, 5] {
                if k > w {
                    continue;
                }
                let (iw, rows) = (w + 2, 4);
                // the window ends at the image's last byte in the last row
                let src: Vec<u8> = (0..(rows - 1) * iw * 3 + w * 3)
                    .map(|_| r.random())
                    .collect();
                let starts: Vec<usize> = (0..ow).map(|_| r.random_range(0..=w - k)).collect();
                let wts: Vec<i32> = (0..ow * k).map(|_| r.random_range(0..1 << 22)).collect();
                let (mut a, mut b) = (vec![0u8; rows * ow * 3], vec![0u8; rows * ow * 3]);
                let stride = ow * 3;
                macro_rules! both {
                    ($k:literal) => {{
                        unsafe { hpass_simd::<$k>(&src, iw, rows, &starts, &wts, &mut a, stride) };
                        hpass_k_scalar::<$k>(&src, iw, rows, w, &starts, &wts, &mut b, stride);
                    }};
                }
                match k {
                    2 => both!(2),
                    3 => both!(3),
                    4 => both!(4),
                    _ => both!(5),
                }
                assert_eq!(a, b, "w {w}, ow {ow}, k {k}");
            }
        }
    }

    #[test]
    fn scalar_colour_passes_match_the_dispatched_ones() {
        let n = 300;
        let planes: Vec<u8> = (0..3 * n).map(|i| (i * 37 % 256) as u8).collect();
        let blends = [(0.0f32, 1.3f32), (120.0, 0.7)];
        let (mut a, mut b) = (planes.clone(), planes.clone());
        blend_planes(&mut a, &blends);
        blend_planes_generic(&mut b, &blends);
        assert_eq!(a, b);
        saturate(&mut a, n, 1.7);
        saturate_generic(&mut b, n, 1.7);
        assert_eq!(a, b);
        assert_eq!(grey_mean(&a, n), grey_mean_generic(&b, n));
        let (mut fa, mut fb) = (vec![0f32; n], vec![0f32; n]);
        finish(&a[..n], &mut fa, &blends, Some(0.485), 0.229);
        finish_generic(&b[..n], &mut fb, &blends, Some(0.485), 0.229);
        assert_eq!(fa, fb);
    }

    #[test]
    fn blend_is_pillows_blend() {
        for f in [0.0, 0.3, 0.6, 1.0, 1.4, 2.7, 7.0] {
            for d in [0u8, 1, 77, 128, 254, 255] {
                let t = blend_table(d, f);
                for v in 0..=255u8 {
                    let a = f as f32;
                    assert_eq!(blend(v as f32, (d as f32, a)) as u8, t[v as usize]);
                    let interp = (0.0..=1.0).contains(&a);
                    assert_eq!(
                        trunc_u8(d as f32 + a * (v as f32 - d as f32)),
                        blend_px(d, v, a, interp)
                    );
                }
            }
        }
    }
}
