//! BatchNorm's CPU path for small planes (under [`SMALL_PLANE`] pixels, the late stages of
//! MobileNet and ResNet at 64 px): a channel's planes are then too short for the per-channel
//! loops of the parent module to vectorise (at 2x2 pixels every value went through their
//! scalar remainder), so the statistics, the forward and the backward go image by image over
//! each image's contiguous `C*HW` values, with per-channel numbers repeated over the planes.
//! Sums go [`IMAGES_PER_PART`] images at a time, a fixed order whatever the thread count.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Result, Shape};
use rayon::prelude::*;

use super::super::simd::simd_fn;
use super::{with_mask, written_in_full, BnAct, BwdParams};

simd_fn! {
    /// `acc += (x - mean)^2` (with a mean per value) or `acc += x`, over one image's `C*HW`
    /// values.
    fn small_plane_accumulate(acc: &mut [f32], x: &[f32], mean: Option<&[f32]>) {
        let e = acc.len();
        let x = &x[..e];
        if let Some(mean) = mean {
            let mean = &mean[..e];
            for i in 0..e {
                acc[i] += (x[i] - mean[i]) * (x[i] - mean[i]);
            }
        } else {
            for i in 0..e {
                acc[i] += x[i];
            }
        }
    }
}

/// Per channel, the f64 sum over its planes of `f(x)`, image-major for small planes: parts of
/// `IMAGES_PER_PART` images into per-value f32 accumulators, each part's planes summed in f64,
/// the parts added in order.
fn small_plane_channel_sums(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: Option<&[f32]>,
) -> Vec<f64> {
    let e = c * hw;
    let parts: Vec<Vec<f64>> = (0..n.div_ceil(IMAGES_PER_PART))
        .into_par_iter()
        .map(|part| {
            let mut acc = vec![0f32; e];
            for b in part * IMAGES_PER_PART..((part + 1) * IMAGES_PER_PART).min(n) {
                small_plane_accumulate(&mut acc, &x[b * e..(b + 1) * e], mean);
            }
            acc.chunks_exact(hw.max(1))
                .map(|p| p.iter().map(|&v| v as f64).sum())
                .collect()
        })
        .collect();
    let mut sums = vec![0f64; c];
    for part in &parts {
        for (s, &v) in sums.iter_mut().zip(part) {
            *s += v;
        }
    }
    sums
}

/// `channel_stats` for planes under [`SMALL_PLANE`] pixels: the same two passes (mean, then
/// squared deviations), image by image over contiguous values.
pub(super) fn stats(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<(f32, f32)> {
    let m = (n * hw) as f64;
    let mean: Vec<f32> = small_plane_channel_sums(x, n, c, hw, None)
        .iter()
        .map(|&s| (s / m) as f32)
        .collect();
    let mean_v: Vec<f32> = mean
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, hw))
        .collect();
    let var = small_plane_channel_sums(x, n, c, hw, Some(&mean_v));
    mean.iter()
        .zip(&var)
        .map(|(&mu, &v)| (mu, (v / m) as f32))
        .collect()
}

/// `yo = f(xp * scale + shift)`, with a scale and shift per value.
#[inline(always)]
fn norm_values(yo: &mut [f32], xp: &[f32], scale: &[f32], shift: &[f32], f: impl Fn(f32) -> f32) {
    let e = yo.len();
    let (xp, scale, shift) = (&xp[..e], &scale[..e], &shift[..e]);
    for i in 0..e {
        yo[i] = f(xp[i] * scale[i] + shift[i]);
    }
}

simd_fn! {
    /// `norm_plane_act` with a scale and shift per value (an image's channels, each repeated
    /// over its plane).
    pub(super) fn norm_values_act(yo: &mut [f32], xp: &[f32], scale: &[f32], shift: &[f32], act: BnAct) {
        match act {
            BnAct::None => norm_values(yo, xp, scale, shift, |v| v),
            BnAct::Relu => norm_values(yo, xp, scale, shift, |v| v.max(0.0)),
            BnAct::Relu6 => norm_values(yo, xp, scale, shift, |v| v.clamp(0.0, 6.0)),
        }
    }
}

/// Planes of fewer pixels than this run image by image ([`backward`], [`stats`], [`norm_values_act`]):
/// a channel's planes are then too short for the per-channel loops to vectorise (at 2x2
/// pixels every value went through the scalar remainder).
pub(super) const SMALL_PLANE: usize = 64;
/// Images per partial sum of [`bwd_small_planes`] (fixed, so the sums do not depend on the
/// thread count).
const IMAGES_PER_PART: usize = 8;

simd_fn! {
    /// Over one image's `C*HW` values: `ag += g'`, `agx += g' * (x - mean)`, `g'` the gradient
    /// masked by `act`, `mean` the channel's mean repeated over its plane.
    fn small_plane_sums(
        x: &[f32],
        g: &[f32],
        y: &[f32],
        mean: &[f32],
        ag: &mut [f32],
        agx: &mut [f32],
        act: BnAct,
    ) {
        with_mask!(act, |pass| small_sums_with(x, g, y, mean, ag, agx, pass))
    }
}

#[inline(always)]
fn small_sums_with(
    x: &[f32],
    g: &[f32],
    y: &[f32],
    mean: &[f32],
    ag: &mut [f32],
    agx: &mut [f32],
    pass: impl Fn(f32) -> bool,
) {
    let e = ag.len();
    let (x, g, y, mean, agx) = (&x[..e], &g[..e], &y[..e], &mean[..e], &mut agx[..e]);
    for i in 0..e {
        let m = if pass(y[i]) { g[i] } else { 0.0 };
        ag[i] += m;
        agx[i] += m * (x[i] - mean[i]);
    }
}

simd_fn! {
    /// `d = a * g' + bx * x + c0` over one image's `C*HW` values, the coefficients repeated over
    /// each channel's plane.
    #[allow(clippy::too_many_arguments)]
    fn small_plane_grad(
        d: &mut [MaybeUninit<f32>],
        x: &[f32],
        g: &[f32],
        y: &[f32],
        a: &[f32],
        bx: &[f32],
        c0: &[f32],
        act: BnAct,
    ) {
        with_mask!(act, |pass| small_grad_with(d, x, g, y, a, bx, c0, pass))
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn small_grad_with(
    d: &mut [MaybeUninit<f32>],
    x: &[f32],
    g: &[f32],
    y: &[f32],
    a: &[f32],
    bx: &[f32],
    c0: &[f32],
    pass: impl Fn(f32) -> bool,
) {
    let e = d.len();
    let (x, g, y, a, bx, c0) = (&x[..e], &g[..e], &y[..e], &a[..e], &bx[..e], &c0[..e]);
    for i in 0..e {
        let m = if pass(y[i]) { g[i] } else { 0.0 };
        d[i].write(a[i] * m + bx[i] * x[i] + c0[i]);
    }
}

/// `bwd_passes` for small planes, image-major so that every loop runs over an image's
/// contiguous `C*HW` values: the sums go `IMAGES_PER_PART` images at a time into per-value
/// f32 accumulators, each part's planes then summed per channel in f64 and the parts added in
/// order; the input gradient is one pass per image with the per-channel coefficients repeated
/// over the planes (the same formula as `input_grad_plane`).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    x: &[f32],
    g: &[f32],
    y: &[f32],
    p: &BwdParams,
    n: usize,
    c: usize,
    hw: usize,
    act: BnAct,
) -> Result<(CpuStorage, Shape)> {
    let (w, st, eps, train) = (p.w, p.st, p.eps, p.train);
    let e = c * hw;
    let per_value = |f: &dyn Fn(usize) -> f32| -> Vec<f32> {
        (0..c)
            .flat_map(|ci| std::iter::repeat_n(f(ci), hw))
            .collect()
    };
    let mean = per_value(&|ci| st[ci].0);
    let parts: Vec<Vec<(f64, f64)>> = (0..n.div_ceil(IMAGES_PER_PART))
        .into_par_iter()
        .map(|part| {
            let (mut ag, mut agx) = (vec![0f32; e], vec![0f32; e]);
            for b in part * IMAGES_PER_PART..((part + 1) * IMAGES_PER_PART).min(n) {
                let o = b * e;
                let (xb, gb, yb) = (&x[o..o + e], &g[o..o + e], &y[o..o + e]);
                small_plane_sums(xb, gb, yb, &mean, &mut ag, &mut agx, act);
            }
            ag.chunks_exact(hw)
                .zip(agx.chunks_exact(hw))
                .map(|(pg, pgx)| {
                    let sg: f64 = pg.iter().map(|&v| v as f64).sum();
                    let sgx: f64 = pgx.iter().map(|&v| v as f64).sum();
                    (sg, sgx)
                })
                .collect()
        })
        .collect();
    let mut sums = vec![(0f64, 0f64); c];
    for part in &parts {
        for (s, &(pg, pgx)) in sums.iter_mut().zip(part) {
            s.0 += pg;
            s.1 += pgx;
        }
    }
    let rstd: Vec<f32> = st
        .iter()
        .map(|&(_, var)| 1.0 / (var + eps).sqrt())
        .collect();
    let sums: Vec<(f32, f32)> = sums
        .iter()
        .zip(&rstd)
        .map(|(&(sg, sgx), &r)| (sg as f32, (sgx * r as f64) as f32))
        .collect();
    let m = (n * hw) as f32;
    let coef: Vec<(f32, f32, f32)> = (0..c)
        .map(|ci| {
            let (mean, _) = st[ci];
            let (sg, sgx) = sums[ci];
            let rstd = rstd[ci];
            let k = w[ci] * rstd / m;
            if train {
                (k * m, -k * rstd * sgx, -k * sg + k * rstd * sgx * mean)
            } else {
                (w[ci] * rstd, 0.0, 0.0)
            }
        })
        .collect();
    let (a, bx, c0) = (
        per_value(&|ci| coef[ci].0),
        per_value(&|ci| coef[ci].1),
        per_value(&|ci| coef[ci].2),
    );
    let total = x.len();
    let out = written_in_full(total + 2 * c, |out| {
        let (gx, rest) = out.split_at_mut(total);
        gx.par_chunks_mut(e.max(1)).enumerate().for_each(|(b, d)| {
            let o = b * e;
            let (xb, gb, yb) = (&x[o..o + e], &g[o..o + e], &y[o..o + e]);
            small_plane_grad(d, xb, gb, yb, &a, &bx, &c0, act);
        });
        for (ci, &(sg, sgx)) in sums.iter().enumerate() {
            rest[ci].write(sgx);
            rest[c + ci].write(sg);
        }
    });
    Ok((CpuStorage::F32(out), Shape::from(total + 2 * c)))
}
