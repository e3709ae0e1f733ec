//! Per-channel bias of NCHW data (`y = x + b[c]`) as a Candle custom op: one pass forward;
//! backward passes the gradient through and sums it per channel in one vectorised pass.
//! Candle's `broadcast_add` reduces the bias gradient with a strided `ReduceSum` over
//! (N, H, W) instead (`Map1::map` in the ConvNeXt profiles: depthwise conv bias per block).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("channel_bias: {what} must be contiguous"),
    }
}

fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    match *l.dims() {
        [n, c, h, w] => Ok((n, c, h * w)),
        ref d => candle_core::bail!("channel_bias: expected NCHW input, got {d:?}"),
    }
}

/// `(x, b) -> x + b[c]`.
struct ChanBias;
/// `grad_y -> (C,)` per-channel sums.
struct ChanSum;

impl CustomOp2 for ChanBias {
    fn name(&self) -> &'static str {
        "channel-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, hw) = dims(l1)?;
        let x = slice(s1, l1, "input")?;
        let b = slice(s2, l2, "bias")?;
        if b.len() != c {
            candle_core::bail!("channel_bias: {} values for {c} channels", b.len())
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(hw.max(1))
            .zip(x.par_chunks(hw.max(1)))
            .enumerate()
            .for_each(|(p, (yo, xi))| {
                let bv = b[p % c];
                yo.iter_mut().zip(xi).for_each(|(o, &v)| *o = v + bv);
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gb = grad.apply_op1_no_bwd(&ChanSum)?;
        Ok((Some(grad), Some(gb)))
    }
}

impl CustomOp1 for ChanSum {
    fn name(&self) -> &'static str {
        "channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = dims(l)?;
        let g = slice(s, l, "gradient")?;
        let out: Vec<f32> = (0..c)
            .into_par_iter()
            .map(|ci| {
                let mut s = 0f64;
                for b in 0..n {
                    let p = &g[(b * c + ci) * hw..(b * c + ci + 1) * hw];
                    let mut acc = [0f32; 8];
                    let ch = p.chunks_exact(8);
                    let mut r: f32 = ch.remainder().iter().sum();
                    for v in ch {
                        for i in 0..8 {
                            acc[i] += v[i];
                        }
                    }
                    for a in acc {
                        r += a;
                    }
                    s += r as f64;
                }
                s as f32
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(c)))
    }
}

/// `x + bias` per channel of NCHW `x`, bias `(C,)`. `None` where the fast path does not apply
/// (not CPU f32, reference mode).
pub fn channel_bias(x: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
    if !x.device().is_cpu()
        || x.dtype() != candle_core::DType::F32
        || bias.dtype() != candle_core::DType::F32
        || x.rank() != 4
        || bias.rank() != 1
        || super::reference_mode()
    {
        return Ok(None);
    }
    Ok(Some(
        x.contiguous()?.apply_op2(&bias.contiguous()?, ChanBias)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_broadcast_add_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for d in [[2usize, 3, 5, 7], [1, 1, 1, 1], [3, 17, 4, 4], [2, 5, 1, 9]] {
            let x = Var::randn(0f32, 1.0, &d, &dev)?;
            let b = Var::randn(0f32, 1.0, d[1], &dev)?;
            let a = channel_bias(&x, &b)?.expect("fast path");
            let r = x.broadcast_add(&b.reshape((1, d[1], 1, 1))?)?;
            let diff = (&a - &r)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "forward {d:?}: {diff}");
            let t = Tensor::randn(0f32, 1.0, &d, &dev)?;
            let ga = (a * &t)?.sum_all()?.backward()?;
            let gr = (r * &t)?.sum_all()?.backward()?;
            for v in [&x, &b] {
                let (p, q) = (ga.get(v).unwrap(), gr.get(v).unwrap());
                let s = q.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                let diff = (p - q)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-5 * s, "grad {d:?}: {diff}");
            }
        }
        Ok(())
    }
}
