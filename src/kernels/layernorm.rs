//! LayerNorm over the last dimension as a Candle custom op with its own backward (input,
//! weight and bias gradients in one parallel pass). Candle's `LayerNorm` has no backward on
//! contiguous input; composing it from basic ops works but costs many passes.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

const ROWS_PER_TASK: usize = 64;

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, "layer_norm")
}

#[inline]
fn stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `(x, weight, bias) -> y`.
struct LnFwd {
    eps: f32,
}

/// `(x, weight, grad_y) -> [grad_x | grad_w | grad_b]` packed in one flat tensor.
struct LnBwd {
    eps: f32,
}

impl CustomOp3 for LnFwd {
    fn name(&self) -> &'static str {
        "layer-norm-last"
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
            .for_each(|(yo, xi)| {
                for (yr, xr) in yo.chunks_exact_mut(c).zip(xi.chunks_exact(c)) {
                    let (mean, rstd) = stats(xr, self.eps);
                    for i in 0..c {
                        yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
                    }
                }
            });
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
                for ((gr, xr), gyr) in go
                    .chunks_exact_mut(c)
                    .zip(xi.chunks_exact(c))
                    .zip(gi.chunks_exact(c))
                {
                    let (mean, rstd) = stats(xr, self.eps);
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

/// LayerNorm over the last dimension with affine `weight` / `bias`, differentiable in all
/// three. CPU f32 runs the fused op; otherwise it is composed from Candle ops.
pub fn layer_norm_last(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    super::require_non_empty("layer_norm", x)?;
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
