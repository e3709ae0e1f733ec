//! LayerNorm over the last dimension as a Candle custom op with its own backward (input,
//! weight and bias gradients in one parallel pass). Candle's `LayerNorm` has no backward on
//! contiguous input; composing it from basic ops works but costs many passes. On CUDA the
//! kernels of `kernels/cuda/layernorm.cu` (the `gpu_*` launch functions below) run it, and
//! LayerNorm over the channels of NCHW input ([`layer_norm_channels`]), on input of any of
//! f32 / bf16 / f16 with f32 parameters and statistics.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::simd::simd_fn;

use super::gpu::{self, Arg, Buffer, Grid, Launcher};
#[cfg(feature = "cuda")]
use {super::gpu::cuda, candle_core::CudaStorage};

const ROWS_PER_TASK: usize = 64;

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, "layer_norm")
}

#[inline(always)]
fn stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

simd_fn! {
    /// LayerNorm of the rows (`w.len()` long) of `xi` into `yo`.
    fn forward_rows(yo: &mut [f32], xi: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let c = w.len();
        for (yr, xr) in yo.chunks_exact_mut(c).zip(xi.chunks_exact(c)) {
            let (mean, rstd) = stats(xr, eps);
            for i in 0..c {
                yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
            }
        }
    }
}

simd_fn! {
    /// Input gradient of the rows of `xi` into `go` (`gi`: the output gradient), adding the
    /// rows' weight and bias gradients to `gw` and `gb` (`xhat`: scratch of one row).
    fn backward_rows(
        go: &mut [f32],
        xi: &[f32],
        gi: &[f32],
        w: &[f32],
        eps: f32,
        gw: &mut [f32],
        gb: &mut [f32],
        xhat: &mut [f32],
    ) {
        let c = w.len();
        for ((gr, xr), gyr) in go
            .chunks_exact_mut(c)
            .zip(xi.chunks_exact(c))
            .zip(gi.chunks_exact(c))
        {
            let (mean, rstd) = stats(xr, eps);
            let (mut m1, mut m2) = (0f32, 0f32);
            for i in 0..c {
                xhat[i] = (xr[i] - mean) * rstd;
                let gh = gyr[i] * w[i];
                m1 += gh;
                m2 += gh * xhat[i];
                gw[i] += gyr[i] * xhat[i];
                gb[i] += gyr[i];
            }
            let (m1, m2) = (m1 / c as f32, m2 / c as f32);
            for i in 0..c {
                gr[i] = rstd * (gyr[i] * w[i] - m1 - xhat[i] * m2);
            }
        }
    }
}

/// `(x, weight, bias) -> y`.
struct LnFwd {
    eps: f32,
}

/// `(x, weight, grad_y) -> [grad_x | grad_w | grad_b]` packed in one flat tensor.
struct LnBwd {
    eps: f32,
}

/// CUDA backward: `(x (T), weight (f32), grad_y (T)) -> grad_x (T)`, and `[grad_w | grad_b]`
/// (f32) written into `side` (a side output, see `gpu::cuda::TensorBuf`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct LnBwdCuda {
    eps: f32,
    side: Tensor,
}

/// LayerNorm over the channels of NCHW input, CUDA only: `(x, weight, bias) -> y`.
struct LnChanFwd {
    eps: f32,
}

/// Its backward, as [`LnBwdCuda`].
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct LnChanBwdCuda {
    eps: f32,
    side: Tensor,
}

/// The parameter gradients of a CUDA LayerNorm backward: a fresh `[gw | gb]` side output.
fn param_grads(x: &Tensor, c: usize) -> Result<Tensor> {
    Tensor::zeros(2 * c, DType::F32, x.device())
}

impl CustomOp3 for LnFwd {
    fn name(&self) -> &'static str {
        "layer-norm-last"
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
        let what = "layer_norm";
        let (gpu, dt) = cuda::launcher(&[s1], what)?;
        cuda::require_f32(s2, what)?;
        cuda::require_f32(s3, what)?;
        let (x, w, b) = (
            cuda::input(s1, l1, what)?,
            cuda::input(s2, l2, what)?,
            cuda::input(s3, l3, what)?,
        );
        let c = l2.shape().elem_count();
        if l3.shape().elem_count() != c {
            candle_core::bail!("layer_norm: bias size does not match the weight's {c}")
        }
        let y = gpu_forward(&gpu, dt, &x, &w, &b, l1.shape().elem_count(), c, self.eps)?;
        Ok((y.into_storage(gpu.dev)?, l1.shape().clone()))
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
        let x = slice(s1, l1)?;
        let w = slice(s2, l2)?;
        let b = slice(s3, l3)?;
        let c = w.len();
        if c == 0 || x.len() % c != 0 || b.len() != c {
            candle_core::bail!("layer_norm: last dim does not match weight {c}")
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(c * ROWS_PER_TASK)
            .zip(x.par_chunks(c * ROWS_PER_TASK))
            .for_each(|(yo, xi)| forward_rows(yo, xi, w, b, self.eps));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.dim(0)?;
        let n = x.elem_count();
        if x.device().is_cuda() {
            let side = param_grads(x, c)?;
            let op = LnBwdCuda {
                eps: self.eps,
                side: side.clone(),
            };
            let gx = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
            return Ok((
                Some(gx),
                Some(side.narrow(0, 0, c)?),
                Some(side.narrow(0, c, c)?),
            ));
        }
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LnBwd { eps: self.eps })?;
        let (gx, small) = super::split_packed(&packed, n, &[c, c])?;
        let [gw, gb] = <[Tensor; 2]>::try_from(small).expect("two parts");
        Ok((Some(gx.reshape(x.shape())?), Some(gw), Some(gb)))
    }
}

impl CustomOp3 for LnBwd {
    fn name(&self) -> &'static str {
        "layer-norm-last-bwd"
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
        let x = slice(s1, l1)?;
        let w = slice(s2, l2)?;
        let g = slice(s3, l3)?;
        let c = w.len();
        if c == 0 || x.len() % c != 0 || g.len() != x.len() {
            candle_core::bail!("layer_norm backward: shape mismatch")
        }
        let n = x.len();
        let mut out = vec![0f32; n + 2 * c];
        let (gx, rest) = out.split_at_mut(n);
        let (gw_sum, gb_sum) = gx
            .par_chunks_mut(c * ROWS_PER_TASK)
            .zip(
                x.par_chunks(c * ROWS_PER_TASK)
                    .zip(g.par_chunks(c * ROWS_PER_TASK)),
            )
            .map(|(go, (xi, gi))| {
                let mut gw = vec![0f32; c];
                let mut gb = vec![0f32; c];
                let mut xhat = vec![0f32; c];
                backward_rows(go, xi, gi, w, self.eps, &mut gw, &mut gb, &mut xhat);
                (gw, gb)
            })
            .collect::<Vec<_>>()
            .into_iter()
            // added in task order: the same sums whatever the threads do (see `sum_in_order`)
            .fold((vec![0f32; c], vec![0f32; c]), |(mut a, mut b), (x, y)| {
                a.iter_mut().zip(&x).for_each(|(p, q)| *p += q);
                b.iter_mut().zip(&y).for_each(|(p, q)| *p += q);
                (a, b)
            });
        rest[..c].copy_from_slice(&gw_sum);
        rest[c..].copy_from_slice(&gb_sum);
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * c)))
    }
}

impl CustomOp3 for LnBwdCuda {
    fn name(&self) -> &'static str {
        "layer-norm-last-bwd-cuda"
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
        candle_core::bail!("layer-norm-last-bwd-cuda: CUDA only")
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
        let what = "layer_norm backward";
        let (gpu, dt) = cuda::launcher(&[s1, s3], what)?;
        cuda::require_f32(s2, what)?;
        if l1.shape() != l3.shape() {
            candle_core::bail!("{what}: gradient shape mismatch")
        }
        let (x, w, g) = (
            cuda::input(s1, l1, what)?,
            cuda::input(s2, l2, what)?,
            cuda::input(s3, l3, what)?,
        );
        let side = cuda::TensorBuf::of(&self.side, what)?;
        let n = l1.shape().elem_count();
        let c = l2.shape().elem_count();
        let gx = gpu_backward(&gpu, dt, &x, &w, &g, n, c, self.eps, &side.buf)?;
        Ok((gx.into_storage(gpu.dev)?, l1.shape().clone()))
    }
}

impl CustomOp3 for LnChanFwd {
    fn name(&self) -> &'static str {
        "layer-norm-channels"
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
        candle_core::bail!("layer-norm-channels: CUDA only (the CPU runs the channels-last kernel)")
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
        let what = "layer_norm (channels)";
        let (gpu, dt) = cuda::launcher(&[s1], what)?;
        cuda::require_f32(s2, what)?;
        cuda::require_f32(s3, what)?;
        let (x, w, b) = (
            cuda::input(s1, l1, what)?,
            cuda::input(s2, l2, what)?,
            cuda::input(s3, l3, what)?,
        );
        let y = gpu_channels_forward(&gpu, dt, &x, l1.dims(), &w, &b, self.eps)?;
        Ok((y.into_storage(gpu.dev)?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.dim(0)?;
        let side = param_grads(x, c)?;
        let op = LnChanBwdCuda {
            eps: self.eps,
            side: side.clone(),
        };
        let gx = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
        Ok((
            Some(gx),
            Some(side.narrow(0, 0, c)?),
            Some(side.narrow(0, c, c)?),
        ))
    }
}

impl CustomOp3 for LnChanBwdCuda {
    fn name(&self) -> &'static str {
        "layer-norm-channels-bwd-cuda"
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
        candle_core::bail!("layer-norm-channels-bwd-cuda: CUDA only")
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
        let what = "layer_norm (channels) backward";
        let (gpu, dt) = cuda::launcher(&[s1, s3], what)?;
        cuda::require_f32(s2, what)?;
        if l1.shape() != l3.shape() {
            candle_core::bail!("{what}: gradient shape mismatch")
        }
        let (x, w, g) = (
            cuda::input(s1, l1, what)?,
            cuda::input(s2, l2, what)?,
            cuda::input(s3, l3, what)?,
        );
        let side = cuda::TensorBuf::of(&self.side, what)?;
        let gx = gpu_channels_backward(&gpu, dt, &x, l1.dims(), &w, &g, self.eps, &side.buf)?;
        Ok((gx.into_storage(gpu.dev)?, l1.shape().clone()))
    }
}

// ---- GPU: the kernels of kernels/cuda/layernorm.cu, launched through a gpu::Launcher ----

fn kernel(name: &str, dt: DType) -> Result<String> {
    Ok(format!("{name}_{}", gpu::suffix(dt)?))
}

fn rows_of(n: usize, c: usize, what: &str) -> Result<usize> {
    if c == 0 || !n.is_multiple_of(c) {
        candle_core::bail!("{what}: last dim does not match weight {c}")
    }
    Ok(n / c)
}

/// Forward over the last dimension on the GPU: `x` (`n` values, rows of `c`, dtype `dt`),
/// `w`, `b` f32.
#[allow(clippy::too_many_arguments)]
pub fn gpu_forward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    w: &L::Buf,
    b: &L::Buf,
    n: usize,
    c: usize,
    eps: f32,
) -> Result<L::Buf> {
    let what = "layer_norm";
    let rows = rows_of(n, c, what)?;
    gpu::count(what, n)?;
    let y = l.alloc(dt, n)?;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(w.addr()),
        Arg::Ptr(b.addr()),
        Arg::Ptr(y.addr()),
        Arg::U32(gpu::count(what, rows)?),
        gpu::int(what, c)?,
        Arg::F32(eps),
    ];
    // one warp per row
    l.launch(
        &gpu::LAYERNORM,
        &kernel("ln_fwd", dt)?,
        Grid::items(rows * 32),
        &args,
    )?;
    Ok(y)
}

/// Backward over the last dimension on the GPU: returns the input gradient and writes
/// `[gw | gb]` (`2 c` f32) into `gwb`.
#[allow(clippy::too_many_arguments)]
pub fn gpu_backward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    w: &L::Buf,
    g: &L::Buf,
    n: usize,
    c: usize,
    eps: f32,
    gwb: &L::Buf,
) -> Result<L::Buf> {
    let what = "layer_norm backward";
    let rows = rows_of(n, c, what)?;
    gpu::count(what, n)?;
    let gx = l.alloc(dt, n)?;
    let stats = l.alloc(DType::F32, 2 * rows)?;
    let (r, ci) = (Arg::U32(gpu::count(what, rows)?), gpu::int(what, c)?);
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(w.addr()),
        Arg::Ptr(g.addr()),
        Arg::Ptr(gx.addr()),
        Arg::Ptr(stats.addr()),
        r,
        ci,
        Arg::F32(eps),
    ];
    l.launch(
        &gpu::LAYERNORM,
        &kernel("ln_bwd", dt)?,
        Grid::items(rows * 32),
        &args,
    )?;
    let s = gpu::slices(rows * 32, c.div_ceil(32));
    let parts = l.alloc(DType::F32, s * 2 * c)?;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(g.addr()),
        Arg::Ptr(stats.addr()),
        Arg::Ptr(parts.addr()),
        r,
        ci,
    ];
    l.launch(
        &gpu::LAYERNORM,
        &kernel("ln_params_parts", dt)?,
        Grid::columns(c, s),
        &args,
    )?;
    sum_parts(l, &parts, gwb, 2 * c, s)?;
    Ok(gx)
}

fn sum_parts<L: Launcher>(l: &L, parts: &L::Buf, out: &L::Buf, m: usize, s: usize) -> Result<()> {
    let what = "layer_norm backward";
    let args = [
        Arg::Ptr(parts.addr()),
        Arg::Ptr(out.addr()),
        gpu::int(what, m)?,
        gpu::int(what, s)?,
    ];
    l.launch(&gpu::LAYERNORM, "ln_sum_parts", Grid::items(m), &args)
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

/// Forward over the channels of NCHW `x` on the GPU (`w`, `b` f32, `C` each).
pub fn gpu_channels_forward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    x_dims: &[usize],
    w: &L::Buf,
    b: &L::Buf,
    eps: f32,
) -> Result<L::Buf> {
    let what = "layer_norm (channels)";
    let (n, c, hw) = nchw(x_dims, what)?;
    let y = l.alloc(dt, n * c * hw)?;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(w.addr()),
        Arg::Ptr(b.addr()),
        Arg::Ptr(y.addr()),
        gpu::int(what, n)?,
        gpu::int(what, c)?,
        gpu::int(what, hw)?,
        Arg::F32(eps),
    ];
    l.launch(
        &gpu::LAYERNORM,
        &kernel("lnc_fwd", dt)?,
        Grid::items(n * hw),
        &args,
    )?;
    Ok(y)
}

/// Backward over the channels on the GPU: returns the input gradient and writes `[gw | gb]`
/// (`2 C` f32) into `gwb`.
#[allow(clippy::too_many_arguments)]
pub fn gpu_channels_backward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    x_dims: &[usize],
    w: &L::Buf,
    g: &L::Buf,
    eps: f32,
    gwb: &L::Buf,
) -> Result<L::Buf> {
    let what = "layer_norm (channels) backward";
    let (n, c, hw) = nchw(x_dims, what)?;
    let gx = l.alloc(dt, n * c * hw)?;
    let stats = l.alloc(DType::F32, 2 * n * hw)?;
    let (ni, ci, hwi) = (gpu::int(what, n)?, gpu::int(what, c)?, gpu::int(what, hw)?);
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(w.addr()),
        Arg::Ptr(g.addr()),
        Arg::Ptr(gx.addr()),
        Arg::Ptr(stats.addr()),
        ni,
        ci,
        hwi,
        Arg::F32(eps),
    ];
    l.launch(
        &gpu::LAYERNORM,
        &kernel("lnc_bwd", dt)?,
        Grid::items(n * hw),
        &args,
    )?;
    let s = gpu::slices(n * hw, c);
    let parts = l.alloc(DType::F32, s * 2 * c)?;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(g.addr()),
        Arg::Ptr(stats.addr()),
        Arg::Ptr(parts.addr()),
        ni,
        ci,
        hwi,
    ];
    l.launch(
        &gpu::LAYERNORM,
        &kernel("lnc_params_parts", dt)?,
        Grid::blocks(c, s),
        &args,
    )?;
    sum_parts(l, &parts, gwb, 2 * c, s)?;
    Ok(gx)
}

/// LayerNorm over the last dimension with affine `weight` / `bias`, differentiable in all
/// three. CPU f32 runs the fused op; CUDA its kernels (input in f32, bf16 or f16, f32
/// parameters, output in the input's dtype); otherwise it is composed from Candle ops.
pub fn layer_norm_last(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    super::require_non_empty("layer_norm", x)?;
    if gpu::runs_on_gpu(x) && weight.dtype() == DType::F32 && bias.dtype() == DType::F32 {
        return x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LnFwd { eps: eps as f32 },
        );
    }
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && !super::reference_mode() {
        return x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LnFwd { eps: eps as f32 },
        );
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// LayerNorm over the channels of NCHW `x` (timm's LayerNorm2d) on the GPU's kernels, when
/// [`gpu::runs_on_gpu`] and the parameters are f32; `None` otherwise (the caller composes it).
pub fn layer_norm_channels(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    super::require_non_empty("layer_norm", x)?;
    if !(gpu::runs_on_gpu(x) && weight.dtype() == DType::F32 && bias.dtype() == DType::F32) {
        return Ok(None);
    }
    let y = x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LnChanFwd { eps: eps as f32 },
    )?;
    Ok(Some(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(w)?
            .broadcast_add(b)
    }

    #[test]
    fn matches_composed_layer_norm_and_gradients() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(7);
        let dev = Device::Cpu;
        for dims in [vec![2usize, 5, 7, 13], vec![130, 8], vec![3, 1]] {
            let c = *dims.last().unwrap_or(&1);
            let x = rng.var(0.5f32, 2.0, dims.as_slice(), &dev)?;
            let w = rng.var(1f32, 0.3, c, &dev)?;
            let b = rng.var(0f32, 0.3, c, &dev)?;
            let r = rng.randn(0f32, 1.0, dims.as_slice(), &dev)?;
            let ya = layer_norm_last(&x, &w, &b, 1e-6)?;
            let yb = reference(&x, &w, &b, 1e-6)?;
            let d = (&ya - &yb)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "{dims:?} forward {d}");
            let ga = (ya * &r)?.sum_all()?.backward()?;
            let gb = (yb * &r)?.sum_all()?.backward()?;
            for v in [&x, &w, &b] {
                let (p, q) = (ga.get(v).unwrap(), gb.get(v).unwrap());
                let s = q.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                let d = (p - q)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-4 * s, "{dims:?} grad {d}");
            }
        }
        Ok(())
    }
}
