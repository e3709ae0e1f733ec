//! Exact (erf) GELU as a Candle custom op: one parallel pass forward, one for the backward
//! (Candle's element-wise backward composes several slow passes).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 4096;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const INV_SQRT_2PI: f32 = 0.398_942_3;

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, "gelu")
}

/// erf with absolute error below 1.5e-7 (Abramowitz & Stegun 7.1.26), in f32.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let r = 1.0 - poly * (-a * a).exp();
    if x < 0.0 {
        -r
    } else {
        r
    }
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
    let pdf = INV_SQRT_2PI * (-0.5 * v * v).exp();
    cdf + v * pdf
}

struct GeluFwd;
struct GeluBwd;

impl CustomOp1 for GeluFwd {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| {
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = gelu_f32(v);
                }
            });
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
            .for_each(|(o, (x, g))| {
                for ((o, &v), &gv) in o.iter_mut().zip(x).zip(g) {
                    *o = gv * gelu_grad_f32(v);
                }
            });
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, differentiable. CPU f32 runs the fused op;
/// otherwise Candle's `gelu_erf`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && !super::reference_mode() {
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
