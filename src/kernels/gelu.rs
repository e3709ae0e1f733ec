//! Exact (erf) GELU as a Candle custom op: one parallel pass forward, one for the backward
//! (Candle's element-wise backward composes several slow passes); on CUDA the kernels of
//! `kernels/cuda/gelu.cu` (the `gpu_*` launch functions below).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::simd::simd_fn;

use super::gpu::{self, Arg, Buffer, Grid, Launcher};
#[cfg(feature = "cuda")]
use {super::gpu::cuda, candle_core::CudaStorage};

const CHUNK: usize = 4096;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const INV_SQRT_2PI: f32 = 0.398_942_3;

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, "gelu")
}

/// `e^x` for f32 without a libm call, so loops over it vectorise: Cephes' `expf` (range
/// reduction by ln 2 in two parts, degree-5 polynomial, scaling by building 2^n's bits), within
/// 2 ulp; inputs are clamped to [-87, 88] (results to about 1.6e-38 .. 1.7e38).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // round to nearest by adding and subtracting 1.5 * 2^23; the sum's low mantissa bits hold
    // n as an integer (read from the bits: a float-to-int cast would not vectorise)
    const SHIFT: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let ni = t.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((ni + 127) as u32) << 23)
}

/// erf with absolute error below 1.5e-7 (Abramowitz & Stegun 7.1.26), in f32, branch-free.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    (1.0 - poly * exp_f32(-a * a)).copysign(x)
}

/// Exact GELU of one value.
#[inline(always)]
pub(crate) fn gelu_f32(v: f32) -> f32 {
    0.5 * v * (1.0 + erf_f32(v * FRAC_1_SQRT_2))
}

/// d GELU / dx at `v`.
#[inline(always)]
pub(crate) fn gelu_grad_f32(v: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_f32(v * FRAC_1_SQRT_2));
    let pdf = INV_SQRT_2PI * exp_f32(-0.5 * v * v);
    cdf + v * pdf
}

simd_fn! {
    /// `out = gelu(x + b)` element-wise (equal lengths), as wide as the CPU allows
    /// ([`super::simd`]).
    pub(crate) fn bias_gelu_row(out: &mut [f32], x: &[f32], b: &[f32]) {
        for ((o, &v), &bv) in out.iter_mut().zip(x).zip(b) {
            *o = gelu_f32(v + bv);
        }
    }
}

simd_fn! {
    /// `out = g * gelu'(x + b)` element-wise (equal lengths), as wide as the CPU allows.
    pub(crate) fn bias_gelu_grad_row(out: &mut [f32], x: &[f32], g: &[f32], b: &[f32]) {
        for (((o, &v), &gv), &bv) in out.iter_mut().zip(x).zip(g).zip(b) {
            *o = gv * gelu_grad_f32(v + bv);
        }
    }
}

/// A zero bias for the plain GELU, one chunk long.
static ZEROS: [f32; CHUNK] = [0.0; CHUNK];

struct GeluFwd;
struct GeluBwd;

impl CustomOp1 for GeluFwd {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (gpu, dt) = cuda::launcher(&[s], "gelu")?;
        let y = gpu_forward(
            &gpu,
            dt,
            &cuda::input(s, l, "gelu")?,
            l.shape().elem_count(),
        )?;
        Ok((y.into_storage(gpu.dev)?, l.shape().clone()))
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| bias_gelu_row(y, x, &ZEROS[..x.len()]));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluBwd)?))
    }
}

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "gelu-erf-bwd"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let what = "gelu backward";
        let (gpu, dt) = cuda::launcher(&[s1, s2], what)?;
        if l1.shape() != l2.shape() {
            candle_core::bail!("gelu backward: gradient size mismatch")
        }
        let x = cuda::input(s1, l1, what)?;
        let g = cuda::input(s2, l2, what)?;
        let gx = gpu_backward(&gpu, dt, &x, &g, l1.shape().elem_count())?;
        Ok((gx.into_storage(gpu.dev)?, l1.shape().clone()))
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1)?;
        let g = slice(s2, l2)?;
        if x.len() != g.len() {
            candle_core::bail!("gelu backward: gradient size mismatch")
        }
        let mut gx = vec![0f32; x.len()];
        gx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(o, (x, g))| bias_gelu_grad_row(o, x, g, &ZEROS[..x.len()]));
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

// ---- GPU: the kernels of kernels/cuda/gelu.cu, launched through a gpu::Launcher ----

fn kernel(name: &str, dt: DType) -> Result<String> {
    Ok(format!("{name}_{}", gpu::suffix(dt)?))
}

/// GELU of the `n` values of `x` (dtype `dt`) on the GPU.
pub fn gpu_forward<L: Launcher>(l: &L, dt: DType, x: &L::Buf, n: usize) -> Result<L::Buf> {
    let y = l.alloc(dt, n)?;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(y.addr()),
        Arg::U32(gpu::count("gelu", n)?),
    ];
    l.launch(&gpu::GELU, &kernel("gelu_fwd", dt)?, Grid::items(n), &args)?;
    Ok(y)
}

/// `g * gelu'(x)` on the GPU.
pub fn gpu_backward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    g: &L::Buf,
    n: usize,
) -> Result<L::Buf> {
    let gx = l.alloc(dt, n)?;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(g.addr()),
        Arg::Ptr(gx.addr()),
        Arg::U32(gpu::count("gelu", n)?),
    ];
    l.launch(&gpu::GELU, &kernel("gelu_bwd", dt)?, Grid::items(n), &args)?;
    Ok(gx)
}

/// `gelu(x + b)` on the GPU, `x` `(rows, C)` of dtype `dt`, `b` `(C)` f32.
pub fn gpu_bias_forward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    b: &L::Buf,
    n: usize,
    c: usize,
) -> Result<L::Buf> {
    if c == 0 || !n.is_multiple_of(c) {
        candle_core::bail!("bias_gelu: {n} values are not rows of {c}")
    }
    let y = l.alloc(dt, n)?;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(b.addr()),
        Arg::Ptr(y.addr()),
        Arg::U32(gpu::count("bias_gelu", n)?),
        gpu::int("bias_gelu", c)?,
    ];
    l.launch(
        &gpu::GELU,
        &kernel("bias_gelu_fwd", dt)?,
        Grid::items(n),
        &args,
    )?;
    Ok(y)
}

/// Backward of [`gpu_bias_forward`]: returns the input gradient (dtype `dt`) and writes the
/// bias gradient, the column sums of it in f32, into `gb` (`C` f32).
#[allow(clippy::too_many_arguments)]
pub fn gpu_bias_backward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    b: &L::Buf,
    g: &L::Buf,
    n: usize,
    c: usize,
    gb: &L::Buf,
) -> Result<L::Buf> {
    if c == 0 || !n.is_multiple_of(c) {
        candle_core::bail!("bias_gelu backward: {n} values are not rows of {c}")
    }
    let what = "bias_gelu backward";
    let gx = l.alloc(dt, n)?;
    let args = [
        Arg::Ptr(x.addr()),
        Arg::Ptr(b.addr()),
        Arg::Ptr(g.addr()),
        Arg::Ptr(gx.addr()),
        Arg::U32(gpu::count(what, n)?),
        gpu::int(what, c)?,
    ];
    l.launch(
        &gpu::GELU,
        &kernel("bias_gelu_bwd", dt)?,
        Grid::items(n),
        &args,
    )?;
    let rows = n / c;
    let s = gpu::slices(rows * 32, c.div_ceil(32));
    let parts = l.alloc(DType::F32, s * c)?;
    let args = [
        Arg::Ptr(gx.addr()),
        Arg::Ptr(parts.addr()),
        Arg::U32(gpu::count(what, rows)?),
        gpu::int(what, c)?,
    ];
    l.launch(
        &gpu::GELU,
        &kernel("col_sum_parts", dt)?,
        Grid::columns(c, s),
        &args,
    )?;
    let args = [
        Arg::Ptr(parts.addr()),
        Arg::Ptr(gb.addr()),
        gpu::int(what, c)?,
        gpu::int(what, s)?,
    ];
    l.launch(&gpu::GELU, "gelu_sum_parts", Grid::items(c), &args)?;
    Ok(gx)
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, differentiable. CPU f32 and CUDA run the fused
/// op; otherwise Candle's `gelu_erf`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    super::require_non_empty("gelu_erf", x)?;
    let cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32 && !super::reference_mode();
    if cpu_f32 || gpu::runs_on_gpu(x) {
        x.contiguous()?.apply_op1(GeluFwd)
    } else {
        x.gelu_erf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_is_within_two_ulp() {
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let want = (x as f64).exp();
            let rel = ((exp_f32(x) as f64 - want) / want).abs();
            assert!(rel < 2.5e-7, "exp({x}): relative error {rel}");
        }
        // clamped outside the range, never inf or 0
        assert!(exp_f32(-1e4) > 0.0 && exp_f32(-1e4) < 2e-38);
        assert!(exp_f32(1e4).is_finite());
    }

    #[test]
    fn vector_rows_match_the_scalar_formula() {
        let x: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.37).collect();
        let b: Vec<f32> = (0..37).map(|i| (i % 5) as f32 * 0.1).collect();
        let g: Vec<f32> = (0..37).map(|i| 1.0 - (i % 3) as f32).collect();
        let (mut y, mut gy) = (vec![0f32; 37], vec![0f32; 37]);
        bias_gelu_row(&mut y, &x, &b);
        bias_gelu_grad_row(&mut gy, &x, &g, &b);
        for i in 0..37 {
            let v = (x[i] + b[i]) as f64;
            let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(v / 2f64.sqrt()));
            let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!(
                (y[i] as f64 - v * cdf).abs() < 1e-6 * (1.0 + v.abs()),
                "gelu({v})"
            );
            let want = g[i] as f64 * (cdf + v * pdf);
            assert!(
                (gy[i] as f64 - want).abs() < 1e-6 * (1.0 + v.abs()),
                "grad({v})"
            );
        }
    }

    #[test]
    fn erf_is_accurate() {
        for i in -400..=400 {
            let x = i as f32 * 0.01;
            let want = candle_core::cpu::erf::erf_f64(x as f64);
            assert!((erf_f32(x) as f64 - want).abs() < 3e-7, "erf({x})");
        }
    }

    #[test]
    fn matches_candle_gelu_erf_and_its_gradient() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(20);
        let x = rng.var(0f32, 2.0, (3, 7, 11), &Device::Cpu)?;
        let r = rng.randn(0f32, 1.0, (3, 7, 11), &Device::Cpu)?;
        let a = gelu_erf(&x)?;
        let b = x.gelu_erf()?;
        let d = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6 * 8.0, "forward {d}");
        let ga = (a * &r)?.sum_all()?.backward()?;
        let gb = (b * &r)?.sum_all()?.backward()?;
        let d = (ga.get(&x).unwrap() - gb.get(&x).unwrap())?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-5, "backward {d}");
        Ok(())
    }
}
