//! BatchNorm over the channels of NCHW input as a Candle custom op with its own backward
//! (input, weight, bias): train mode with the batch statistics, eval mode with the running
//! ones. Statistics are two passes parallel over channels, the element-wise parts one pass
//! parallel over the N*C planes; planes of a few pixels go image by image instead
//! (`small_planes`). On CUDA the kernels of
//! `kernels/cuda/batchnorm.cu` (the `gpu_*` launch functions below) run train and eval mode,
//! forward and backward, on input of any of f32 / bf16 / f16 with f32 parameters and
//! statistics.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::simd::simd_fn;

mod small_planes;

use super::gpu::{self, Arg, Buffer, Grid, Launcher};
#[cfg(feature = "cuda")]
use {super::gpu::cuda, candle_core::CudaStorage};

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, "batch_norm")
}

fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    match *l.dims() {
        [n, c, h, w] => Ok((n, c, h * w)),
        ref d => candle_core::bail!("batch_norm: expected NCHW input, got {d:?}"),
    }
}

/// Sum of `f(v)` over `xs` in eight independent lanes (so it vectorises); f32 within a plane.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let ch = xs.chunks_exact(8);
    let rem = ch.remainder();
    for c in ch {
        for i in 0..8 {
            acc[i] += f(c[i]);
        }
    }
    let mut s: f32 = rem.iter().map(|&v| f(v)).sum();
    for v in acc {
        s += v;
    }
    s
}

/// Per-channel (mean, biased variance) of NCHW data, parallel over channels: two passes
/// (mean, then squared deviations), f32 within a plane and f64 across planes.
fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<(f32, f32)> {
    if hw < small_planes::SMALL_PLANE {
        return small_planes::stats(x, n, c, hw);
    }
    (0..c)
        .into_par_iter()
        .map(|ci| channel_mean_var(x, n, c, hw, ci))
        .collect()
}

simd_fn! {
    /// Channel `ci`'s (mean, biased variance), as [`channel_stats`].
    fn channel_mean_var(x: &[f32], n: usize, c: usize, hw: usize, ci: usize) -> (f32, f32) {
        let m = (n * hw) as f64;
        let plane = |b: usize| &x[(b * c + ci) * hw..(b * c + ci + 1) * hw];
        let s: f64 = (0..n).map(|b| lane_sum(plane(b), |v| v) as f64).sum();
        let mean = (s / m) as f32;
        let v: f64 = (0..n)
            .map(|b| lane_sum(plane(b), |v| (v - mean) * (v - mean)) as f64)
            .sum();
        (mean, (v / m) as f32)
    }
}

/// Activation fused into the BatchNorm: applied to its output in the same pass, its mask
/// applied to the gradient inside the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnAct {
    None,
    /// max(y, 0)
    Relu,
    /// min(max(y, 0), 6)
    Relu6,
}

impl BnAct {
    /// The activation as Candle ops (reference path).
    pub fn apply_tensor(self, y: Tensor) -> Result<Tensor> {
        match self {
            BnAct::None => Ok(y),
            BnAct::Relu => y.relu(),
            BnAct::Relu6 => y.relu()?.minimum(6f64),
        }
    }
}

/// A channel's BatchNorm as `x * scale + shift`, from its `(mean, var)`, weight and bias.
#[inline(always)]
fn scale_shift((mean, var): (f32, f32), w: f32, b: f32, eps: f32) -> (f32, f32) {
    let scale = w / (var + eps).sqrt();
    (scale, b - mean * scale)
}

/// `yo = f(xp * scale + shift)`.
#[inline(always)]
fn norm_plane(yo: &mut [f32], xp: &[f32], scale: f32, shift: f32, f: impl Fn(f32) -> f32) {
    for (o, &v) in yo.iter_mut().zip(xp) {
        *o = f(v * scale + shift);
    }
}

simd_fn! {
    /// `yo = act(xp * scale + shift)`, one loop per activation so each vectorises.
    fn norm_plane_act(yo: &mut [f32], xp: &[f32], scale: f32, shift: f32, act: BnAct) {
        match act {
            BnAct::None => norm_plane(yo, xp, scale, shift, |v| v),
            BnAct::Relu => norm_plane(yo, xp, scale, shift, |v| v.max(0.0)),
            BnAct::Relu6 => norm_plane(yo, xp, scale, shift, |v| v.clamp(0.0, 6.0)),
        }
    }
}

simd_fn! {
    /// `yo = relu(xp * scale + shift + rp)`.
    fn norm_plane_add_relu(yo: &mut [f32], xp: &[f32], rp: &[f32], scale: f32, shift: f32) {
        for ((o, &v), &u) in yo.iter_mut().zip(xp).zip(rp) {
            *o = (v * scale + shift + u).max(0.0);
        }
    }
}

/// `x -> (2, C)`: batch mean and biased variance per channel (no backward).
struct BnStats;

/// `(x, weight, bias) -> act(y)` with the statistics given: the batch's, computed once before
/// (train mode: their gradient flows into the input's), or the running ones (eval mode:
/// constants, so the input gradient is only the scaled output gradient).
struct BnFwd {
    eps: f32,
    act: BnAct,
    stats: Vec<(f32, f32)>,
    train: bool,
}

/// `(x, grad_y, y) -> [grad_x | grad_w | grad_b]` packed flat; `w`: the weight values.
struct BnBwd {
    eps: f32,
    act: BnAct,
    stats: Vec<(f32, f32)>,
    w: Vec<f32>,
    train: bool,
}

/// `(x, residual, [w | b]) -> relu(y + residual)` with the statistics given (train or eval
/// mode, as [`BnFwd`]): a ResNet block's last BatchNorm, its shortcut add and ReLU in one
/// pass, so the BatchNorm's own output is never kept. The same values bit for bit as
/// [`BnFwd`] (no activation) followed by `eltwise::add_relu`, backward too.
struct BnAddRelu {
    eps: f32,
    stats: Vec<(f32, f32)>,
    train: bool,
}

/// CUDA: `(x (T), [w | b] (f32), [mean | var] (f32)) -> act(y) (T)`; train mode with the
/// batch statistics (their gradient flows into the input's), eval mode with the running ones.
struct BnCuda {
    eps: f32,
    act: BnAct,
    train: bool,
}

/// CUDA backward: `(x, grad_y, [w | b | mean | var]) -> grad_x`, and `[gw | gb]` (f32)
/// written into `side` (a side output, see `gpu::cuda::TensorBuf`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct BnBwdCuda {
    eps: f32,
    act: BnAct,
    train: bool,
    side: Tensor,
}

impl BnAct {
    /// The kernels' `act` argument.
    fn code(self) -> i32 {
        match self {
            BnAct::None => 0,
            BnAct::Relu => 1,
            BnAct::Relu6 => 2,
        }
    }
}

impl CustomOp1 for BnStats {
    fn name(&self) -> &'static str {
        "batch-norm-stats"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (gpu, dt) = cuda::launcher(&[s], "batch_norm")?;
        let x = cuda::input(s, l, "batch_norm")?;
        let (st, c) = gpu_stats(&gpu, dt, &x, l.dims())?;
        Ok((st.into_storage(gpu.dev)?, Shape::from((2, c))))
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = dims(l)?;
        let st = channel_stats(slice(s, l)?, n, c, hw);
        let mut out: Vec<f32> = st.iter().map(|s| s.0).collect();
        out.extend(st.iter().map(|s| s.1));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

impl CustomOp3 for BnFwd {
    fn name(&self) -> &'static str {
        if self.train {
            "batch-norm-train"
        } else {
            "batch-norm-eval"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, hw) = dims(l1)?;
        let x = slice(s1, l1)?;
        let w = slice(s2, l2)?;
        let b = slice(s3, l3)?;
        if w.len() != c || b.len() != c || self.stats.len() != c {
            candle_core::bail!("batch_norm: weight/bias size does not match {c} channels")
        }
        let st = &self.stats;
        let act = self.act;
        let mut y = vec![0f32; x.len()];
        if hw < small_planes::SMALL_PLANE {
            // image by image, the channels' scale and shift repeated over their planes
            let ss: Vec<(f32, f32)> = (0..c)
                .map(|ci| scale_shift(st[ci], w[ci], b[ci], self.eps))
                .collect();
            let rep = |f: &dyn Fn(&(f32, f32)) -> f32| -> Vec<f32> {
                ss.iter()
                    .flat_map(|v| std::iter::repeat_n(f(v), hw))
                    .collect()
            };
            let (scale, shift) = (rep(&|v| v.0), rep(&|v| v.1));
            let e = c * hw;
            y.par_chunks_mut(e.max(1)).enumerate().for_each(|(b, yo)| {
                small_planes::norm_values_act(yo, &x[b * e..(b + 1) * e], &scale, &shift, act);
            });
            return Ok((CpuStorage::F32(y), l1.shape().clone()));
        }
        y.par_chunks_mut(hw.max(1)).enumerate().for_each(|(p, yo)| {
            let ci = p % c;
            let (scale, shift) = scale_shift(st[ci], w[ci], b[ci], self.eps);
            let xp = &x[p * hw..(p + 1) * hw];
            norm_plane_act(yo, xp, scale, shift, act);
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.dim(0)?;
        let n = x.elem_count();
        let op = BnBwd {
            eps: self.eps,
            act: self.act,
            stats: self.stats.clone(),
            w: w.flatten_all()?.to_vec1::<f32>()?,
            train: self.train,
        };
        let packed = x.apply_op3_no_bwd(&grad.contiguous()?, &res.contiguous()?, &op)?;
        let (gx, small) = super::split_packed(&packed, n, &[c, c])?;
        let [gw, gb] = <[Tensor; 2]>::try_from(small).expect("two parts");
        Ok((Some(gx.reshape(x.shape())?), Some(gw), Some(gb)))
    }
}

impl CustomOp3 for BnAddRelu {
    fn name(&self) -> &'static str {
        "batch-norm-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, hw) = dims(l1)?;
        let x = slice(s1, l1)?;
        let r = slice(s2, l2)?;
        let wb = slice(s3, l3)?;
        if r.len() != x.len() || wb.len() != 2 * c || self.stats.len() != c {
            candle_core::bail!("batch_norm_add_relu: shapes do not match {c} channels")
        }
        let (w, b) = wb.split_at(c);
        let st = &self.stats;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(hw.max(1)).enumerate().for_each(|(p, yo)| {
            let ci = p % c;
            let (scale, shift) = scale_shift(st[ci], w[ci], b[ci], self.eps);
            let (xp, rp) = (&x[p * hw..(p + 1) * hw], &r[p * hw..(p + 1) * hw]);
            norm_plane_add_relu(yo, xp, rp, scale, shift);
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _residual: &Tensor,
        wb: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = wb.elem_count() / 2;
        let n = x.elem_count();
        // the ReLU's mask, shared by the shortcut, then the BatchNorm's backward
        let g = super::eltwise::relu_mask(grad, &res.contiguous()?)?;
        let op = BnBwd {
            eps: self.eps,
            act: BnAct::None,
            stats: self.stats.clone(),
            w: wb.narrow(0, 0, c)?.to_vec1::<f32>()?,
            train: self.train,
        };
        let packed = x.apply_op3_no_bwd(&g, &res.contiguous()?, &op)?;
        let (gx, mut small) = super::split_packed(&packed, n, &[2 * c])?;
        Ok((Some(gx.reshape(x.shape())?), Some(g), small.pop()))
    }
}

impl CustomOp3 for BnBwd {
    fn name(&self) -> &'static str {
        "batch-norm-train-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = dims(l1)?;
        let x = slice(s1, l1)?;
        let g = slice(s2, l2)?;
        let y = slice(s3, l3)?;
        let (w, st, act) = (&self.w, &self.stats, self.act);
        if g.len() != x.len() || y.len() != x.len() || w.len() != c || st.len() != c {
            candle_core::bail!("batch_norm backward: shape mismatch")
        }
        let p = BwdParams {
            w,
            st,
            eps: self.eps,
            train: self.train,
        };
        bwd_passes(x, g, y, &p, n, c, hw, act)
    }
}

/// What a backward pass knows of the forward: weight, statistics, eps, and whether the
/// statistics were the batch's (train) or constants (eval).
struct BwdParams<'a> {
    w: &'a [f32],
    st: &'a [(f32, f32)],
    eps: f32,
    train: bool,
}

/// The activation's mask as a closure of its own per activation (whether a gradient passes,
/// from the output value), bound to `$pass` in `$body`: each arm is compiled, and vectorised,
/// apart.
macro_rules! with_mask {
    ($act:expr, |$pass:ident| $body:expr) => {
        match $act {
            BnAct::None => {
                let $pass = |_: f32| true;
                $body
            }
            BnAct::Relu => {
                let $pass = |v: f32| v > 0.0;
                $body
            }
            BnAct::Relu6 => {
                let $pass = |v: f32| v > 0.0 && v < 6.0;
                $body
            }
        }
    };
}
use with_mask;

simd_fn! {
    /// Channel `ci`'s `(sum(g'), sum(g' * xhat))` for the masked gradient `g'`: f32 in eight
    /// lanes within a plane, f64 across planes.
    fn masked_sums(
        x: &[f32],
        g: &[f32],
        y: &[f32],
        n: usize,
        c: usize,
        hw: usize,
        ci: usize,
        mean: f32,
        rstd: f32,
        act: BnAct,
    ) -> (f32, f32) {
        with_mask!(act, |pass| sums_with(x, g, y, n, c, hw, ci, mean, rstd, pass))
    }
}

/// [`masked_sums`] with the mask `pass` (of the output value).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sums_with(
    x: &[f32],
    g: &[f32],
    y: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    ci: usize,
    mean: f32,
    rstd: f32,
    pass: impl Fn(f32) -> bool,
) -> (f32, f32) {
    let masked = |gv: f32, yv: f32| if pass(yv) { gv } else { 0.0 };
    let (mut sg, mut sgx) = (0f64, 0f64);
    for b in 0..n {
        let o = (b * c + ci) * hw;
        let (xp, gp, yp) = (&x[o..o + hw], &g[o..o + hw], &y[o..o + hw]);
        let (mut ag, mut agx) = ([0f32; 8], [0f32; 8]);
        let (xc, gc, yc) = (xp.chunks_exact(8), gp.chunks_exact(8), yp.chunks_exact(8));
        let (xr, gr, yr) = (xc.remainder(), gc.remainder(), yc.remainder());
        for ((xv, gv), yv) in xc.zip(gc).zip(yc) {
            for i in 0..8 {
                let m = masked(gv[i], yv[i]);
                ag[i] += m;
                agx[i] += m * (xv[i] - mean);
            }
        }
        let (mut pg, mut pgx) = (0f32, 0f32);
        for ((&xv, &gv), &yv) in xr.iter().zip(gr).zip(yr) {
            let m = masked(gv, yv);
            pg += m;
            pgx += m * (xv - mean);
        }
        for i in 0..8 {
            pg += ag[i];
            pgx += agx[i];
        }
        sg += pg as f64;
        sgx += (pgx * rstd) as f64;
    }
    (sg as f32, sgx as f32)
}

simd_fn! {
    /// `d = a * g' + bx * x + c0` over one plane, `g'` the gradient masked by `act`.
    fn input_grad_plane(
        go: &mut [MaybeUninit<f32>],
        xp: &[f32],
        gp: &[f32],
        yp: &[f32],
        a: f32,
        bx: f32,
        c0: f32,
        act: BnAct,
    ) {
        with_mask!(act, |pass| grad_plane_with(go, xp, gp, yp, a, bx, c0, pass))
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn grad_plane_with(
    go: &mut [MaybeUninit<f32>],
    xp: &[f32],
    gp: &[f32],
    yp: &[f32],
    a: f32,
    bx: f32,
    c0: f32,
    pass: impl Fn(f32) -> bool,
) {
    for ((d, &xv), (&gv, &yv)) in go.iter_mut().zip(xp).zip(gp.iter().zip(yp)) {
        let m = if pass(yv) { gv } else { 0.0 };
        d.write(a * m + bx * xv + c0);
    }
}

/// BatchNorm backward with the mask of the activation `act` (from the output `y`): per channel
/// `sum(g)`, `sum(g * xhat)`, then the input gradient; returns `[gx | gw | gb]`.
#[allow(clippy::too_many_arguments)]
fn bwd_passes(
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
    if hw < small_planes::SMALL_PLANE {
        return small_planes::backward(x, g, y, p, n, c, hw, act);
    }
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ci| {
            let (mean, var) = st[ci];
            let rstd = 1.0 / (var + eps).sqrt();
            masked_sums(x, g, y, n, c, hw, ci, mean, rstd, act)
        })
        .collect();
    let total = x.len();
    let m = (n * hw) as f32;
    let out = written_in_full(total + 2 * c, |out| {
        let (gx, rest) = out.split_at_mut(total);
        gx.par_chunks_mut(hw.max(1))
            .enumerate()
            .for_each(|(p, go)| {
                let ci = p % c;
                let (mean, var) = st[ci];
                let rstd = 1.0 / (var + eps).sqrt();
                let (sg, sgx) = sums[ci];
                let k = w[ci] * rstd / m;
                // train: gx = k * (m * g' - sg - (x - mean) * rstd * sgx) = a * g' + b * x + c0;
                // eval (constant statistics): gx = w * rstd * g'
                let (a, bx, c0) = if train {
                    (k * m, -k * rstd * sgx, -k * sg + k * rstd * sgx * mean)
                } else {
                    (w[ci] * rstd, 0.0, 0.0)
                };
                let o = p * hw;
                input_grad_plane(
                    go,
                    &x[o..o + hw],
                    &g[o..o + hw],
                    &y[o..o + hw],
                    a,
                    bx,
                    c0,
                    act,
                );
            });
        for (ci, &(sg, sgx)) in sums.iter().enumerate() {
            rest[ci].write(sgx);
            rest[c + ci].write(sg);
        }
    });
    Ok((CpuStorage::F32(out), Shape::from(total + 2 * c)))
}

/// A buffer of `len` values, every one written by `fill`, with no zero fill first (the
/// backward writes all of its output, and the fill was a whole extra pass over memory).
/// `fill` must write each of the `len` values: the backward splits them into chunks that
/// cover the slice and writes every chunk whole.
fn written_in_full(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: `fill` initialised the first `len` values (see above); the capacity is `len`.
    unsafe { v.set_len(len) };
    v
}

impl CustomOp3 for BnCuda {
    fn name(&self) -> &'static str {
        "batch-norm-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("batch-norm-cuda: CUDA only (the CPU runs batch-norm-train)")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let what = "batch_norm";
        let (gpu, dt) = cuda::launcher(&[s1], what)?;
        cuda::require_f32(s2, what)?;
        cuda::require_f32(s3, what)?;
        let (x, wb, st) = (
            cuda::input(s1, l1, what)?,
            cuda::input(s2, l2, what)?,
            cuda::input(s3, l3, what)?,
        );
        let y = gpu_forward(&gpu, dt, &x, l1.dims(), &wb, &st, self.eps, self.act)?;
        Ok((y.into_storage(gpu.dev)?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        st: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let side = Tensor::zeros(wb.elem_count(), DType::F32, x.device())?;
        let p = Tensor::cat(&[&wb.detach(), &st.detach()], 0)?;
        let op = BnBwdCuda {
            eps: self.eps,
            act: self.act,
            train: self.train,
            side: side.clone(),
        };
        let gx = x.apply_op3_no_bwd(&grad.contiguous()?, &p, &op)?;
        Ok((Some(gx), Some(side), None))
    }
}

impl CustomOp3 for BnBwdCuda {
    fn name(&self) -> &'static str {
        "batch-norm-cuda-bwd"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("batch-norm-cuda-bwd: CUDA only")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let what = "batch_norm backward";
        let (gpu, dt) = cuda::launcher(&[s1, s2], what)?;
        cuda::require_f32(s3, what)?;
        if l1.shape() != l2.shape() {
            candle_core::bail!("{what}: gradient shape mismatch")
        }
        let (x, g, p) = (
            cuda::input(s1, l1, what)?,
            cuda::input(s2, l2, what)?,
            cuda::input(s3, l3, what)?,
        );
        let side = cuda::TensorBuf::of(&self.side, what)?;
        let (eps, act, train) = (self.eps, self.act, self.train);
        let gx = gpu_backward(&gpu, dt, &x, l1.dims(), &g, &p, eps, act, train, &side.buf)?;
        Ok((gx.into_storage(gpu.dev)?, l1.shape().clone()))
    }
}

// ---- GPU: the kernels of kernels/cuda/batchnorm.cu, launched through a gpu::Launcher ----

fn kernel(name: &str, dt: DType) -> Result<String> {
    Ok(format!("{name}_{}", gpu::suffix(dt)?))
}

fn nchw(d: &[usize], what: &str) -> Result<(usize, usize, usize)> {
    match *d {
        [n, c, h, w] => {
            gpu::count(what, n * c * h * w)?;
            Ok((n, c, h * w))
        }
        _ => candle_core::bail!("{what}: expected NCHW input, got {d:?}"),
    }
}

/// `out[j] = scale * sum_s parts[s * m + j]`.
fn sum_parts<L: Launcher>(
    l: &L,
    parts: &L::Buf,
    out: u64,
    m: usize,
    s: usize,
    scale: f32,
) -> Result<()> {
    let args = [
        Arg::Ptr(parts.addr()),
        Arg::Ptr(out),
        gpu::int("batch_norm", m)?,
        gpu::int("batch_norm", s)?,
        Arg::F32(scale),
    ];
    l.launch(&gpu::BATCHNORM, "bn_sum_parts", Grid::items(m), &args)
}

/// Batch statistics on the GPU: `[mean | biased var]` (`2 C` f32) of NCHW `x`, and `C`.
pub fn gpu_stats<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    x_dims: &[usize],
) -> Result<(L::Buf, usize)> {
    let what = "batch_norm";
    let (n, c, hw) = nchw(x_dims, what)?;
    let m = n * hw;
    let s = gpu::slices(m, c);
    let out = l.alloc(DType::F32, 2 * c)?;
    let parts = l.alloc(DType::F32, s * c)?;
    let kernel = kernel("bn_stat_parts", dt)?;
    let (ni, ci, hwi) = (gpu::int(what, n)?, gpu::int(what, c)?, gpu::int(what, hw)?);
    let grid = Grid::blocks(c, s);
    let mean = out.addr();
    let var = out.addr() + (4 * c) as u64;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(0),
        Arg::Ptr(parts.addr()),
        ni,
        ci,
        hwi,
    ];
    l.launch(&gpu::BATCHNORM, &kernel, grid, &args)?;
    sum_parts(l, &parts, mean, c, s, 1.0 / m as f32)?;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(mean),
        Arg::Ptr(parts.addr()),
        ni,
        ci,
        hwi,
    ];
    l.launch(&gpu::BATCHNORM, &kernel, grid, &args)?;
    sum_parts(l, &parts, var, c, s, 1.0 / m as f32)?;
    Ok((out, c))
}

/// Forward on the GPU: `act(w * (x - mean) / sqrt(var + eps) + b)` with `wb` = `[w | b]`
/// and `stats` = `[mean | var]` (f32).
#[allow(clippy::too_many_arguments)]
pub fn gpu_forward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    x_dims: &[usize],
    wb: &L::Buf,
    stats: &L::Buf,
    eps: f32,
    act: BnAct,
) -> Result<L::Buf> {
    let what = "batch_norm";
    let (n, c, hw) = nchw(x_dims, what)?;
    let y = l.alloc(dt, n * c * hw)?;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(wb.addr()),
        Arg::Ptr(stats.addr()),
        Arg::Ptr(y.addr()),
        gpu::int(what, n)?,
        gpu::int(what, c)?,
        gpu::int(what, hw)?,
        Arg::F32(eps),
        Arg::I32(act.code()),
    ];
    l.launch(
        &gpu::BATCHNORM,
        &kernel("bn_fwd", dt)?,
        Grid::items(n * c * hw),
        &args,
    )?;
    Ok(y)
}

/// Backward on the GPU, with `p` = `[w | b | mean | var]` (`4 C` f32): returns the input gradient
/// and writes `[gw | gb]` (`2 C` f32) into `gwb`. `train`: the statistics are the batch's,
/// so the gradient flows through them too.
#[allow(clippy::too_many_arguments)]
pub fn gpu_backward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    x_dims: &[usize],
    g: &L::Buf,
    p: &L::Buf,
    eps: f32,
    act: BnAct,
    train: bool,
    gwb: &L::Buf,
) -> Result<L::Buf> {
    let what = "batch_norm backward";
    let (n, c, hw) = nchw(x_dims, what)?;
    let (ni, ci, hwi) = (gpu::int(what, n)?, gpu::int(what, c)?, gpu::int(what, hw)?);
    let s = gpu::slices(n * hw, c);
    let parts = l.alloc(DType::F32, s * 2 * c)?;
    let (wb, stat) = (Arg::Ptr(p.addr()), Arg::Ptr(p.addr() + (8 * c) as u64));
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(g.addr()),
        wb,
        stat,
        Arg::Ptr(parts.addr()),
        ni,
        ci,
        hwi,
        Arg::F32(eps),
        Arg::I32(act.code()),
    ];
    l.launch(
        &gpu::BATCHNORM,
        &kernel("bn_bwd_parts", dt)?,
        Grid::blocks(c, s),
        &args,
    )?;
    sum_parts(l, &parts, gwb.addr(), 2 * c, s, 1.0)?;
    let gx = l.alloc(dt, n * c * hw)?;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(g.addr()),
        wb,
        stat,
        Arg::Ptr(gwb.addr()),
        Arg::Ptr(gx.addr()),
        ni,
        ci,
        hwi,
        Arg::F32(eps),
        Arg::I32(act.code()),
        Arg::I32(train as i32),
    ];
    l.launch(
        &gpu::BATCHNORM,
        &kernel("bn_bwd_input", dt)?,
        Grid::items(n * c * hw),
        &args,
    )?;
    Ok(gx)
}

/// Eval-mode BatchNorm of NCHW `x` with the running statistics, followed by `act`, in one
/// pass (differentiable in `x`, `weight`, `bias`): on the CPU for f32 input, on the GPU's
/// kernels when [`gpu::runs_on_gpu`]; parameters f32. `None` otherwise, and in reference
/// mode (the caller composes it from Candle ops).
pub fn batch_norm_eval_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
    act: BnAct,
) -> Result<Option<Tensor>> {
    let params = [weight, bias, running_mean, running_var];
    if params.iter().any(|p| p.dtype() != DType::F32) {
        return Ok(None);
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 && !super::reference_mode() {
        // one pass, y = act(x * scale + shift) per plane (Candle ops took three or four)
        super::require_non_empty("batch_norm", x)?;
        let mean = running_mean.detach().flatten_all()?.to_vec1::<f32>()?;
        let var = running_var.detach().flatten_all()?.to_vec1::<f32>()?;
        let op = BnFwd {
            eps: eps as f32,
            act,
            stats: mean.into_iter().zip(var).collect(),
            train: false,
        };
        let y = x
            .contiguous()?
            .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
        return Ok(Some(y));
    }
    if !gpu::runs_on_gpu(x) {
        return Ok(None);
    }
    super::require_non_empty("batch_norm", x)?;
    let wb = Tensor::cat(&[weight.flatten_all()?, bias.flatten_all()?], 0)?;
    let st = Tensor::cat(
        &[
            running_mean.detach().flatten_all()?,
            running_var.detach().flatten_all()?,
        ],
        0,
    )?;
    let op = BnCuda {
        eps: eps as f32,
        act,
        train: false,
    };
    Ok(Some(x.contiguous()?.apply_op3(&wb, &st, op)?))
}

/// Train-mode BatchNorm of NCHW `x`: returns the normalised output (differentiable in `x`,
/// `weight`, `bias`) and the detached batch `(mean, biased variance)`, each `(C,)`.
/// CPU f32 runs the fused op; otherwise it is composed from Candle ops.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    batch_norm_train_act(x, weight, bias, eps, BnAct::None)
}

/// [`batch_norm_train`] followed by the activation `act`, fused into the same passes (forward
/// and backward) on CPU f32.
pub fn batch_norm_train_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    act: BnAct,
) -> Result<(Tensor, Tensor, Tensor)> {
    super::require_non_empty("batch_norm", x)?;
    let c = weight.dim(0)?;
    if gpu::runs_on_gpu(x) && weight.dtype() == DType::F32 && bias.dtype() == DType::F32 {
        let x = x.contiguous()?;
        let st = x.detach().apply_op1_no_bwd(&BnStats)?;
        let wb = Tensor::cat(&[weight.flatten_all()?, bias.flatten_all()?], 0)?;
        let op = BnCuda {
            eps: eps as f32,
            act,
            train: true,
        };
        let y = x.apply_op3(&wb, &st.flatten_all()?, op)?;
        return Ok((y, st.get(0)?, st.get(1)?));
    }
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && !super::reference_mode() {
        let x = x.contiguous()?;
        let st = x.detach().apply_op1_no_bwd(&BnStats)?;
        let v = st.to_vec2::<f32>()?;
        let stats = v[0].iter().copied().zip(v[1].iter().copied()).collect();
        let y = x.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            BnFwd {
                eps: eps as f32,
                act,
                stats,
                train: true,
            },
        )?;
        return Ok((y, st.get(0)?, st.get(1)?));
    }
    let shape = (1, c, 1, 1);
    let mean = x.mean_keepdim((0, 2, 3))?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
    let inv = (var.clone() + eps)?.sqrt()?.recip()?;
    let y = xc
        .broadcast_mul(&(inv * weight.reshape(shape)?)?)?
        .broadcast_add(&bias.reshape(shape)?)?;
    Ok((
        act.apply_tensor(y)?,
        mean.detach().flatten_all()?,
        var.detach().flatten_all()?,
    ))
}

/// `relu(batch_norm(x) + residual)` on CPU f32 in one op (see [`BnAddRelu`]): train mode
/// (`running` `None`) with the batch statistics, returned as with [`batch_norm_train`], or
/// eval mode with the running `(mean, var)` (the returned statistics are then those). `None`
/// where the op does not apply (other devices or dtypes, shapes that differ, reference mode):
/// the caller composes it.
pub fn batch_norm_add_relu(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    running: Option<(&Tensor, &Tensor)>,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if ![x, residual, weight, bias].into_iter().all(f32_cpu)
        || x.shape() != residual.shape()
        || x.rank() != 4
        || super::reference_mode()
    {
        return Ok(None);
    }
    super::require_non_empty("batch_norm", x)?;
    let x = x.contiguous()?;
    let (st, train) = match running {
        None => (x.detach().apply_op1_no_bwd(&BnStats)?, true),
        Some((mean, var)) => (
            Tensor::stack(
                &[mean.detach().flatten_all()?, var.detach().flatten_all()?],
                0,
            )?
            .to_dtype(DType::F32)?,
            false,
        ),
    };
    let v = st.to_vec2::<f32>()?;
    let wb = Tensor::cat(&[weight.flatten_all()?, bias.flatten_all()?], 0)?;
    let op = BnAddRelu {
        eps: eps as f32,
        stats: v[0].iter().copied().zip(v[1].iter().copied()).collect(),
        train,
    };
    let y = x.apply_op3(&residual.contiguous()?, &wb, op)?;
    Ok(Some((y, st.get(0)?, st.get(1)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::init::TensorRng;
    use candle_core::{DType, Device, Var};

    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
        let c = w.dim(0)?;
        let mean = x.mean_keepdim((0, 2, 3))?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
        xc.broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(&w.reshape((1, c, 1, 1))?)?
            .broadcast_add(&b.reshape((1, c, 1, 1))?)
    }

    /// Checks the fused op's output and gradients for `x`, `w`, `b` against the composed ops
    /// run in f64. The gradients' f32 rounding error grows with |w| / sqrt(var + eps) (with two
    /// values per channel that close, the input gradient is a difference of nearly equal terms),
    /// so the tolerance scales with that conditioning number.
    fn check(x: &Var, w: &Var, b: &Var, act: BnAct, rng: &mut TensorRng) -> Result<()> {
        let d = x.dims().to_vec();
        let (ya, mean, var) = batch_norm_train_act(x, w, b, 1e-5, act)?;
        let vars64 = [x, w, b].map(|v| Var::from_tensor(&v.to_dtype(DType::F64).unwrap()).unwrap());
        let y64 = act.apply_tensor(reference(&vars64[0], &vars64[1], &vars64[2], 1e-5)?)?;
        let diff = (&ya - y64.to_dtype(DType::F32)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-4, "{act:?} {d:?} forward {diff}");
        let want_mean = x.mean((0, 2, 3))?;
        let dm = (mean - want_mean)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(dm < 1e-5, "mean {dm}");
        assert_eq!(var.dims(), &[d[1]]);
        let cond = ((var + 1e-5)?.sqrt()?.recip()? * w.abs()?)?
            .max_all()?
            .to_scalar::<f32>()?;
        let r = rng.randn(0f32, 1.0, d.as_slice(), x.device())?;
        let ga = (ya * &r)?.sum_all()?.backward()?;
        let g64 = (y64 * r.to_dtype(DType::F64)?)?.sum_all()?.backward()?;
        for (v, v64) in [x, w, b].into_iter().zip(&vars64) {
            let p = ga.get(v).expect("fused gradient");
            let q = g64
                .get(v64)
                .expect("reference gradient")
                .to_dtype(DType::F32)?;
            let s = q.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0).max(cond);
            let diff = (p - q)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4 * s, "{act:?} {d:?} grad {diff} (scale {s})");
        }
        Ok(())
    }

    /// The fused BatchNorm + shortcut + ReLU is the BatchNorm followed by `add_relu`, bit for
    /// bit: output, statistics and every gradient, in train and eval mode.
    #[test]
    fn add_relu_fused_is_the_composed_pair_bit_for_bit() -> Result<()> {
        let mut rng = TensorRng::new(31);
        let dev = Device::Cpu;
        let bits = crate::kernels::f32_bits;
        for (n, c, h, w) in [
            (2usize, 3usize, 5usize, 7usize),
            (4, 17, 3, 3),
            (2, 1, 1, 1),
        ] {
            let x = rng.var(0.5f32, 2.0, (n, c, h, w), &dev)?;
            let r = rng.var(0f32, 1.0, (n, c, h, w), &dev)?;
            let wt = rng.var(1f32, 0.5, c, &dev)?;
            let b = rng.var(0f32, 0.5, c, &dev)?;
            let rm = rng.randn(0f32, 0.3, c, &dev)?;
            let rv = (rng.randn(0f32, 0.3, c, &dev)?.abs()? + 0.5)?;
            for train in [true, false] {
                let running = (!train).then_some((&rm, &rv));
                let (fused, fm, fv) = batch_norm_add_relu(&x, &r, &wt, &b, 1e-5, running)?
                    .expect("the CPU f32 op applies");
                let bn = if train {
                    let (y, m, v) = batch_norm_train(&x, &wt, &b, 1e-5)?;
                    assert_eq!(bits(&fm)?, bits(&m)?, "mean");
                    assert_eq!(bits(&fv)?, bits(&v)?, "variance");
                    y
                } else {
                    batch_norm_eval_act(&x, &wt, &b, &rm, &rv, 1e-5, BnAct::None)?.expect("eval op")
                };
                let composed = crate::kernels::add_relu(&bn, &r)?;
                let what = format!("{n}x{c}x{h}x{w}, train {train}");
                crate::kernels::assert_same_bits(&fused, &composed, &[&x, &r, &wt, &b], &what)?;
            }
        }
        Ok(())
    }

    #[test]
    fn matches_composed_batch_norm_and_gradients() -> Result<()> {
        let mut rng = TensorRng::new(12);
        let dev = Device::Cpu;
        // planes under SMALL_PLANE pixels run image by image (with 19 images: three partial
        // sums, the last short), larger ones channel by channel
        for d in [
            [4usize, 3, 5, 7],
            [2, 8, 1, 1],
            [3, 2, 4, 4],
            [19, 5, 2, 3],
            [3, 4, 9, 8],
        ] {
            let x = rng.var(0.3f32, 2.0, &d, &dev)?;
            let w = rng.var(1f32, 0.3, d[1], &dev)?;
            let b = rng.var(0f32, 0.3, d[1], &dev)?;
            check(&x, &w, &b, BnAct::None, &mut rng)?;
        }
        Ok(())
    }

    #[test]
    fn fused_activation_matches_composed_ops_and_gradients() -> Result<()> {
        let mut rng = TensorRng::new(13);
        let dev = Device::Cpu;
        for act in [BnAct::Relu, BnAct::Relu6] {
            for d in [
                [4usize, 3, 5, 7],
                [2, 8, 1, 3],
                [3, 5, 4, 4],
                [17, 6, 2, 2],
                [2, 3, 8, 9],
            ] {
                let x = rng.var(0.3f32, 2.0, &d, &dev)?;
                // weights large enough that some outputs pass 6 and some fall below 0
                let w = rng.var(3f32, 1.0, d[1], &dev)?;
                let b = rng.var(1f32, 1.0, d[1], &dev)?;
                check(&x, &w, &b, act, &mut rng)?;
            }
        }
        Ok(())
    }

    /// Eval mode: the one-pass op against Candle's composed ops in f64 (the reference path of
    /// `BatchNorm2d`), output and the gradients of input, weight and bias, for every activation.
    #[test]
    fn eval_mode_matches_composed_ops_and_gradients() -> Result<()> {
        let mut rng = TensorRng::new(14);
        let dev = Device::Cpu;
        for act in [BnAct::None, BnAct::Relu, BnAct::Relu6] {
            for d in [[4usize, 3, 5, 7], [2, 8, 1, 1], [3, 5, 4, 4], [2, 3, 8, 9]] {
                let x = rng.var(0.3f32, 2.0, &d, &dev)?;
                let w = rng.var(3f32, 1.0, d[1], &dev)?;
                let b = rng.var(1f32, 1.0, d[1], &dev)?;
                let rm = rng.randn(0.2f32, 0.5, d[1], &dev)?;
                let rv = rng.randn(0f32, 1.0, d[1], &dev)?.abs()?;
                let y = batch_norm_eval_act(&x, &w, &b, &rm, &rv, 1e-5, act)?
                    .expect("the CPU runs eval mode in one pass");
                let vars64 = [&x, &w, &b]
                    .map(|v| Var::from_tensor(&v.to_dtype(DType::F64).unwrap()).unwrap());
                let c = d[1];
                let scale = (rv.to_dtype(DType::F64)? + 1e-5)?.sqrt()?.recip()?;
                let y64 = act.apply_tensor(
                    vars64[0]
                        .broadcast_sub(&rm.to_dtype(DType::F64)?.reshape((1, c, 1, 1))?)?
                        .broadcast_mul(&(scale * vars64[1].as_tensor())?.reshape((1, c, 1, 1))?)?
                        .broadcast_add(&vars64[2].reshape((1, c, 1, 1))?)?,
                )?;
                let diff = (&y - y64.to_dtype(DType::F32)?)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?;
                assert!(diff < 1e-4, "{act:?} {d:?} forward {diff}");
                let r = rng.randn(0f32, 1.0, d.as_slice(), &dev)?;
                let g = (y * &r)?.sum_all()?.backward()?;
                let g64 = (y64 * r.to_dtype(DType::F64)?)?.sum_all()?.backward()?;
                for (v, v64) in [&x, &w, &b].into_iter().zip(&vars64) {
                    let p = g.get(v).expect("eval-mode gradient");
                    let q = g64.get(v64).expect("reference").to_dtype(DType::F32)?;
                    let s = q.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                    let diff = (p - q)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(diff < 1e-4 * s, "{act:?} {d:?} grad {diff} (scale {s})");
                }
            }
        }
        Ok(())
    }
}
