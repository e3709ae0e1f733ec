//! 2-D max-pool and avg-pool as Candle custom ops with backward for any kernel, stride and
//! padding (PyTorch semantics: floor mode; max-pool pads with -inf and routes the gradient to the
//! first maximum; avg-pool counts padding in the divisor, `count_include_pad=True`), their CUDA
//! kernels (`kernels/cuda/pool.cu`, the `gpu_*` launch functions below), and a
//! device-independent fallback built from Candle ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gpu::{self, Arg, Buffer, Grid, Launcher};
#[cfg(feature = "cuda")]
use {super::gpu::cuda, candle_core::CudaStorage};

/// Geometry of one pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolParams {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl PoolParams {
    /// Square kernel `k`, stride `s`, padding `p`.
    pub fn square(k: usize, s: usize, p: usize) -> Self {
        Self {
            kernel: (k, k),
            stride: (s, s),
            padding: (p, p),
        }
    }

    fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let (kh, kw) = self.kernel;
        let (sh, sw) = self.stride;
        let (ph, pw) = self.padding;
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            candle_core::bail!("pool2d: kernel and stride must be positive")
        }
        if 2 * ph > kh || 2 * pw > kw {
            candle_core::bail!("pool2d: padding must be at most half the kernel size")
        }
        if h + 2 * ph < kh || w + 2 * pw < kw {
            candle_core::bail!("pool2d: kernel {kh}x{kw} larger than padded input {h}x{w}")
        }
        Ok(((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1))
    }

    /// Clipped input window `[y0, y1) x [x0, x1)` of output `(oy, ox)`.
    #[inline]
    fn window(&self, oy: usize, ox: usize, h: usize, w: usize) -> (usize, usize, usize, usize) {
        let ys = (oy * self.stride.0) as isize - self.padding.0 as isize;
        let xs = (ox * self.stride.1) as isize - self.padding.1 as isize;
        let y0 = ys.max(0) as usize;
        let x0 = xs.max(0) as usize;
        let y1 = ((ys + self.kernel.0 as isize).max(0) as usize).min(h);
        let x1 = ((xs + self.kernel.1 as isize).max(0) as usize).min(w);
        (y0, y1, x0, x1)
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("pool2d: tensor must be contiguous"),
    }
}

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    match *l.dims() {
        [n, c, h, w] => Ok((n, c, h, w)),
        ref d => candle_core::bail!("pool2d: expected a 4-D tensor, got {d:?}"),
    }
}

/// Index (in the plane) of the first maximum of the window, `None` for an empty window. A NaN
/// wins (the first one), as in PyTorch; the scan itself only compares and remembers whether it
/// saw one, so it stays branch-light.
#[inline]
fn argmax(plane: &[f32], w: usize, win: (usize, usize, usize, usize)) -> Option<usize> {
    let (y0, y1, x0, x1) = win;
    if y0 >= y1 || x0 >= x1 {
        return None;
    }
    let (mut best, mut best_v, mut nan) = (y0 * w + x0, plane[y0 * w + x0], false);
    for y in y0..y1 {
        for (i, &v) in plane[y * w + x0..y * w + x1].iter().enumerate() {
            nan |= v.is_nan();
            if v > best_v {
                (best, best_v) = (y * w + x0 + i, v);
            }
        }
    }
    if nan {
        return (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| y * w + x))
            .find(|&i| plane[i].is_nan());
    }
    Some(best)
}

struct MaxPoolFwd(PoolParams);
struct MaxPoolBwd(PoolParams);
struct AvgPoolFwd(PoolParams);
/// `.1`: the input's spatial size.
struct AvgPoolBwd(PoolParams, (usize, usize));

impl CustomOp1 for MaxPoolFwd {
    fn name(&self) -> &'static str {
        "max-pool2d"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (gpu, dt) = cuda::launcher(&[s], "max_pool2d")?;
        let x = cuda::input(s, l, "max_pool2d")?;
        let (y, shape) = gpu_max_forward(&gpu, dt, &x, l.dims(), self.0)?;
        Ok((y.into_storage(gpu.dev)?, shape))
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l)?;
        let (oh, ow) = self.0.out_hw(h, w)?;
        let x = f32_slice(s, l)?;
        let mut y = vec![0f32; n * c * oh * ow];
        y.par_chunks_mut((oh * ow).max(1))
            .enumerate()
            .for_each(|(p, out)| {
                let plane = &x[p * h * w..(p + 1) * h * w];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let win = self.0.window(oy, ox, h, w);
                        out[oy * ow + ox] = match argmax(plane, w, win) {
                            Some(i) => plane[i],
                            None => f32::NEG_INFINITY,
                        };
                    }
                }
            });
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(&grad, &MaxPoolBwd(self.0))?))
    }
}

impl CustomOp2 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "max-pool2d-bwd"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let what = "max_pool2d backward";
        let (gpu, dt) = cuda::launcher(&[s1, s2], what)?;
        let x = cuda::input(s1, l1, what)?;
        let gy = cuda::input(s2, l2, what)?;
        let (gx, shape) = gpu_max_backward(&gpu, dt, &x, l1.dims(), &gy, l2.dims(), self.0)?;
        Ok((gx.into_storage(gpu.dev)?, shape))
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l1)?;
        let (oh, ow) = self.0.out_hw(h, w)?;
        if l2.dims() != [n, c, oh, ow] {
            candle_core::bail!(
                "max-pool2d backward: gradient shape {:?} mismatch",
                l2.dims()
            )
        }
        let x = f32_slice(s1, l1)?;
        let gy = f32_slice(s2, l2)?;
        let mut gx = vec![0f32; n * c * h * w];
        gx.par_chunks_mut((h * w).max(1))
            .enumerate()
            .for_each(|(p, gin)| {
                let plane = &x[p * h * w..(p + 1) * h * w];
                let go = &gy[p * oh * ow..(p + 1) * oh * ow];
                for oy in 0..oh {
                    for ox in 0..ow {
                        if let Some(i) = argmax(plane, w, self.0.window(oy, ox, h, w)) {
                            gin[i] += go[oy * ow + ox];
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(gx), Shape::from((n, c, h, w))))
    }
}

impl CustomOp1 for AvgPoolFwd {
    fn name(&self) -> &'static str {
        "avg-pool2d"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (gpu, dt) = cuda::launcher(&[s], "avg_pool2d")?;
        let x = cuda::input(s, l, "avg_pool2d")?;
        let (y, shape) = gpu_avg_forward(&gpu, dt, &x, l.dims(), self.0)?;
        Ok((y.into_storage(gpu.dev)?, shape))
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l)?;
        let (oh, ow) = self.0.out_hw(h, w)?;
        let x = f32_slice(s, l)?;
        let div = 1.0 / (self.0.kernel.0 * self.0.kernel.1) as f32;
        let mut y = vec![0f32; n * c * oh * ow];
        y.par_chunks_mut((oh * ow).max(1))
            .enumerate()
            .for_each(|(p, out)| {
                let plane = &x[p * h * w..(p + 1) * h * w];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (y0, y1, x0, x1) = self.0.window(oy, ox, h, w);
                        let mut s = 0f32;
                        for yy in y0..y1 {
                            s += plane[yy * w + x0..yy * w + x1].iter().sum::<f32>();
                        }
                        out[oy * ow + ox] = s * div;
                    }
                }
            });
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let grad = grad.contiguous()?;
        Ok(Some(grad.apply_op1_no_bwd(&AvgPoolBwd(self.0, (h, w)))?))
    }
}

impl CustomOp1 for AvgPoolBwd {
    fn name(&self) -> &'static str {
        "avg-pool2d-bwd"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (gpu, dt) = cuda::launcher(&[s], "avg_pool2d backward")?;
        let gy = cuda::input(s, l, "avg_pool2d backward")?;
        let (gx, shape) = gpu_avg_backward(&gpu, dt, &gy, l.dims(), self.1, self.0)?;
        Ok((gx.into_storage(gpu.dev)?, shape))
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, oh, ow) = dims4(l)?;
        let (h, w) = self.1;
        if self.0.out_hw(h, w)? != (oh, ow) {
            candle_core::bail!(
                "avg-pool2d backward: gradient shape {:?} mismatch",
                l.dims()
            )
        }
        let gy = f32_slice(s, l)?;
        let div = 1.0 / (self.0.kernel.0 * self.0.kernel.1) as f32;
        let mut gx = vec![0f32; n * c * h * w];
        gx.par_chunks_mut((h * w).max(1))
            .enumerate()
            .for_each(|(p, gin)| {
                let go = &gy[p * oh * ow..(p + 1) * oh * ow];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let g = go[oy * ow + ox] * div;
                        let (y0, y1, x0, x1) = self.0.window(oy, ox, h, w);
                        for yy in y0..y1 {
                            for v in &mut gin[yy * w + x0..yy * w + x1] {
                                *v += g;
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(gx), Shape::from((n, c, h, w))))
    }
}

// ---- GPU: the kernels of kernels/cuda/pool.cu, launched through a gpu::Launcher ----

fn dims4_of(d: &[usize], what: &str) -> Result<(usize, usize, usize, usize)> {
    match *d {
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => candle_core::bail!("{what}: expected a 4-D tensor, got {d:?}"),
    }
}

/// `planes, H, W, KH, KW, SH, SW, PH, PW, OH, OW`, checking the sizes fit the kernels.
fn gpu_args(p: PoolParams, planes: usize, h: usize, w: usize) -> Result<Vec<Arg>> {
    let (oh, ow) = p.out_hw(h, w)?;
    let what = "pool2d";
    gpu::count(what, planes * h * w)?;
    gpu::count(what, planes * oh * ow)?;
    let mut a = vec![Arg::U32(gpu::count(what, planes)?)];
    for v in [
        h,
        w,
        p.kernel.0,
        p.kernel.1,
        p.stride.0,
        p.stride.1,
        p.padding.0,
        p.padding.1,
        oh,
        ow,
    ] {
        a.push(gpu::int(what, v)?);
    }
    Ok(a)
}

fn kernel(name: &str, dt: DType) -> Result<String> {
    Ok(format!("{name}_{}", gpu::suffix(dt)?))
}

fn gpu_forward<L: Launcher>(
    l: &L,
    name: &str,
    dt: DType,
    x: &L::Buf,
    x_dims: &[usize],
    p: PoolParams,
) -> Result<(L::Buf, Shape)> {
    let (n, c, h, w) = dims4_of(x_dims, name)?;
    let (oh, ow) = p.out_hw(h, w)?;
    let total = n * c * oh * ow;
    let y = l.alloc(dt, total)?;
    let mut args = vec![Arg::Ptr(x.addr()), Arg::Ptr(y.addr())];
    args.extend(gpu_args(p, n * c, h, w)?);
    l.launch(&gpu::POOL, &kernel(name, dt)?, Grid::items(total), &args)?;
    Ok((y, Shape::from((n, c, oh, ow))))
}

/// Max-pool forward on the GPU: `x` `(N, C, H, W)` of dtype `dt`.
pub fn gpu_max_forward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    x_dims: &[usize],
    p: PoolParams,
) -> Result<(L::Buf, Shape)> {
    gpu_forward(l, "max_pool_fwd", dt, x, x_dims, p)
}

/// Avg-pool forward on the GPU.
pub fn gpu_avg_forward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    x_dims: &[usize],
    p: PoolParams,
) -> Result<(L::Buf, Shape)> {
    gpu_forward(l, "avg_pool_fwd", dt, x, x_dims, p)
}

/// Max-pool input gradient on the GPU from the input `x` and the output gradient `gy`.
pub fn gpu_max_backward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    x_dims: &[usize],
    gy: &L::Buf,
    gy_dims: &[usize],
    p: PoolParams,
) -> Result<(L::Buf, Shape)> {
    let (n, c, h, w) = dims4_of(x_dims, "max_pool2d backward")?;
    let (oh, ow) = p.out_hw(h, w)?;
    if gy_dims != [n, c, oh, ow] {
        candle_core::bail!("max-pool2d backward: gradient shape {gy_dims:?} mismatch")
    }
    let total = n * c * h * w;
    let gx = l.alloc(dt, total)?;
    let mut args = vec![Arg::Ptr(x.addr()), Arg::Ptr(gy.addr()), Arg::Ptr(gx.addr())];
    args.extend(gpu_args(p, n * c, h, w)?);
    l.launch(
        &gpu::POOL,
        &kernel("max_pool_bwd", dt)?,
        Grid::items(total),
        &args,
    )?;
    Ok((gx, Shape::from((n, c, h, w))))
}

/// Avg-pool input gradient on the GPU from the output gradient; `hw` is the input's size.
pub fn gpu_avg_backward<L: Launcher>(
    l: &L,
    dt: DType,
    gy: &L::Buf,
    gy_dims: &[usize],
    hw: (usize, usize),
    p: PoolParams,
) -> Result<(L::Buf, Shape)> {
    let (n, c, oh, ow) = dims4_of(gy_dims, "avg_pool2d backward")?;
    let (h, w) = hw;
    if p.out_hw(h, w)? != (oh, ow) {
        candle_core::bail!("avg-pool2d backward: gradient shape {gy_dims:?} mismatch")
    }
    let total = n * c * h * w;
    let gx = l.alloc(dt, total)?;
    let mut args = vec![Arg::Ptr(gy.addr()), Arg::Ptr(gx.addr())];
    args.extend(gpu_args(p, n * c, h, w)?);
    l.launch(
        &gpu::POOL,
        &kernel("avg_pool_bwd", dt)?,
        Grid::items(total),
        &args,
    )?;
    Ok((gx, Shape::from((n, c, h, w))))
}

fn run_f32(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let dt = x.dtype();
    if dt == candle_core::DType::F32 {
        f(&x.contiguous()?)
    } else {
        f(&x.to_dtype(candle_core::DType::F32)?.contiguous()?)?.to_dtype(dt)
    }
}

/// Pads `x` along `dim` with `lo` / `hi` copies of `value`.
fn pad_const(x: &Tensor, dim: usize, lo: usize, hi: usize, value: f64) -> Result<Tensor> {
    let mut parts = Vec::new();
    let mut shape = x.dims().to_vec();
    if lo > 0 {
        shape[dim] = lo;
        parts.push((Tensor::ones(shape.as_slice(), x.dtype(), x.device())? * value)?);
    }
    parts.push(x.clone());
    if hi > 0 {
        shape[dim] = hi;
        parts.push((Tensor::ones(shape.as_slice(), x.dtype(), x.device())? * value)?);
    }
    Tensor::cat(&parts, dim)
}

/// Pooling from differentiable Candle ops (pad, strided views by reshape, maximum / sum): the
/// path for devices without the CPU kernel. At exact ties max-pool splits the gradient.
pub fn pool_generic(x: &Tensor, p: PoolParams, max: bool) -> Result<Tensor> {
    super::require_non_empty("pool2d", x)?;
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = p.out_hw(h, w)?;
    let (kh, kw) = p.kernel;
    let (sh, sw) = p.stride;
    let (ph, pw) = p.padding;
    let fill = if max { f64::NEG_INFINITY } else { 0.0 };
    // every window offset must be able to take `stride * out` rows / columns
    let need_h = kh - 1 + sh * oh;
    let need_w = kw - 1 + sw * ow;
    let xp = pad_const(x, 2, ph, need_h.saturating_sub(h + ph), fill)?;
    let xp = pad_const(&xp, 3, pw, need_w.saturating_sub(w + pw), fill)?;
    let (n, c, _, wp) = xp.dims4()?;
    let mut acc: Option<Tensor> = None;
    for ky in 0..kh {
        let rows = xp
            .narrow(2, ky, sh * oh)?
            .reshape((n, c, oh, sh, wp))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for kx in 0..kw {
            let t = rows
                .narrow(3, kx, sw * ow)?
                .reshape((n, c, oh, ow, sw))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            acc = Some(match acc {
                None => t,
                Some(a) if max => a.maximum(&t)?,
                Some(a) => (a + t)?,
            });
        }
    }
    let acc = match acc {
        Some(a) => a,
        None => candle_core::bail!("pool2d: empty kernel"),
    };
    if max {
        Ok(acc)
    } else {
        acc / (kh * kw) as f64
    }
}

/// Max-pool over `(N, C, H, W)`, differentiable.
pub fn max_pool2d(x: &Tensor, p: PoolParams) -> Result<Tensor> {
    super::require_non_empty("max_pool2d", x)?;
    if !x.device().is_cpu() {
        if gpu::runs_on_gpu(x) {
            return x.contiguous()?.apply_op1(MaxPoolFwd(p));
        }
        return pool_generic(x, p, true);
    }
    run_f32(x, |x| x.apply_op1(MaxPoolFwd(p)))
}

/// Avg-pool over `(N, C, H, W)` (padding counted in the divisor), differentiable.
pub fn avg_pool2d(x: &Tensor, p: PoolParams) -> Result<Tensor> {
    super::require_non_empty("avg_pool2d", x)?;
    if !x.device().is_cpu() {
        if gpu::runs_on_gpu(x) {
            return x.contiguous()?.apply_op1(AvgPoolFwd(p));
        }
        return pool_generic(x, p, false);
    }
    run_f32(x, |x| x.apply_op1(AvgPoolFwd(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Naive reference pooling on a padded copy; returns (output, argmax-or-window lists).
    fn naive(x: &[f32], d: [usize; 4], p: PoolParams, max: bool) -> Vec<f32> {
        let [n, c, h, w] = d;
        let (oh, ow) = p.out_hw(h, w).unwrap();
        let mut y = Vec::new();
        for pl in 0..n * c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                    for ky in 0..p.kernel.0 {
                        for kx in 0..p.kernel.1 {
                            let iy = (oy * p.stride.0 + ky) as isize - p.padding.0 as isize;
                            let ix = (ox * p.stride.1 + kx) as isize - p.padding.1 as isize;
                            let v = if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                if max {
                                    f32::NEG_INFINITY
                                } else {
                                    0.0
                                }
                            } else {
                                x[pl * h * w + iy as usize * w + ix as usize]
                            };
                            acc = if max { acc.max(v) } else { acc + v };
                        }
                    }
                    y.push(if max {
                        acc
                    } else {
                        acc / (p.kernel.0 * p.kernel.1) as f32
                    });
                }
            }
        }
        y
    }

    #[test]
    fn generic_pool_matches_kernel_forward_and_backward() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(8);
        let dev = Device::Cpu;
        for (d, p) in [
            ([2, 3, 9, 9], PoolParams::square(3, 2, 1)),
            ([1, 2, 8, 7], PoolParams::square(3, 2, 1)),
            ([1, 3, 7, 5], PoolParams::square(3, 1, 1)),
            ([2, 2, 6, 6], PoolParams::square(2, 2, 0)),
        ] {
            let len: usize = d.iter().product();
            let xv: Vec<f32> = (0..len).map(|i| ((i * 7919) % len) as f32 * 0.01).collect();
            for max in [true, false] {
                let x = Var::from_vec(xv.clone(), &d, &dev)?;
                let a = if max {
                    max_pool2d(&x, p)?
                } else {
                    avg_pool2d(&x, p)?
                };
                let b = pool_generic(&x, p, max)?;
                let diff = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-5, "{d:?} {p:?} max={max}: {diff}");
                let r = rng.randn(0f32, 1.0, a.shape(), &dev)?;
                let ga = (a * &r)?.sum_all()?.backward()?;
                let gb = (b * &r)?.sum_all()?.backward()?;
                let diff = (ga.get(&x).unwrap() - gb.get(&x).unwrap())?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?;
                assert!(diff < 1e-5, "grad {d:?} {p:?} max={max}: {diff}");
            }
        }
        Ok(())
    }

    #[test]
    fn pools_match_naive_and_finite_differences() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(9);
        let dev = Device::Cpu;
        let cases = [
            ([2, 3, 9, 9], PoolParams::square(3, 2, 1)),
            ([1, 2, 8, 7], PoolParams::square(3, 2, 1)),
            ([2, 2, 6, 6], PoolParams::square(2, 2, 0)),
            ([1, 3, 7, 5], PoolParams::square(3, 1, 1)),
            (
                [1, 2, 10, 9],
                PoolParams {
                    kernel: (4, 3),
                    stride: (3, 2),
                    padding: (2, 1),
                },
            ),
        ];
        for (d, p) in cases {
            for max in [true, false] {
                // distinct values 0.01 apart in a scrambled order: no ties within fd steps
                let len: usize = d.iter().product();
                let xv: Vec<f32> = (0..len)
                    .map(|i| ((i * 7919) % len) as f32 * 0.01 - 0.5)
                    .collect();
                let x = Var::from_vec(xv.clone(), &d, &dev)?;
                let y = if max {
                    max_pool2d(&x, p)?
                } else {
                    avg_pool2d(&x, p)?
                };
                let yv: Vec<f32> = y.flatten_all()?.to_vec1()?;
                let want = naive(&xv, d, p, max);
                assert_eq!(yv.len(), want.len());
                for (a, b) in yv.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "{d:?} {p:?} max={max}");
                }
                let r = rng.randn(0f32, 1.0, y.shape(), &dev)?;
                let rv: Vec<f32> = r.flatten_all()?.to_vec1()?;
                let g = (y * &r)?.sum_all()?.backward()?;
                let gx: Vec<f32> = g.get(&x).unwrap().flatten_all()?.to_vec1()?;
                let loss = |xv: &[f32]| -> f64 {
                    naive(xv, d, p, max)
                        .iter()
                        .zip(&rv)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum()
                };
                for i in (0..xv.len()).step_by(7) {
                    let (mut a, mut b) = (xv.clone(), xv.clone());
                    a[i] += 1e-3;
                    b[i] -= 1e-3;
                    let fd = (loss(&a) - loss(&b)) / 2e-3;
                    assert!(
                        (fd - gx[i] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
                        "grad {d:?} {p:?} max={max} i={i}: fd {fd} got {}",
                        gx[i]
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn max_pool_takes_the_first_maximum_and_propagates_nan() -> Result<()> {
        let dev = Device::Cpu;
        // one 2x4 plane, 2x2 windows with stride 2: a tie (first 5 wins) and a NaN after a 9
        let x = candle_core::Var::from_tensor(&Tensor::from_vec(
            vec![1f32, 5., 9., 2., 5., 0., f32::NAN, 3.],
            (1, 1, 2, 4),
            &dev,
        )?)?;
        let y = max_pool2d(&x, PoolParams::square(2, 2, 0))?;
        let v: Vec<f32> = y.flatten_all()?.to_vec1()?;
        assert_eq!(v[0], 5.0);
        assert!(v[1].is_nan());
        let g = y.sum_all()?.backward()?;
        let gx: Vec<f32> = g.get(&x).unwrap().flatten_all()?.to_vec1()?;
        assert_eq!(gx, vec![0., 1., 0., 0., 0., 0., 1., 0.]);
        Ok(())
    }
}
