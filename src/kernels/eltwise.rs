//! Element-wise `relu(a + b)` (a residual join) as one Candle custom op: one pass forward,
//! and one backward pass producing the masked gradient both inputs share. Candle's
//! `(a + b).relu()` runs two forward passes and, backward, a comparison, a dtype
//! conversion, a multiply and the gradient accumulations, each a pass over memory.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::simd::simd_fn;

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, &format!("add_relu: {what}"))
}

const CHUNK: usize = 16 * 1024;

simd_fn! {
    fn add_relu_chunk(yo: &mut [f32], a: &[f32], b: &[f32]) {
        for ((o, &u), &v) in yo.iter_mut().zip(a).zip(b) {
            *o = (u + v).max(0.0);
        }
    }
}

simd_fn! {
    fn relu_mask_chunk(o: &mut [f32], g: &[f32], y: &[f32]) {
        for ((d, &gv), &yv) in o.iter_mut().zip(g).zip(y) {
            *d = if yv > 0.0 { gv } else { 0.0 };
        }
    }
}

/// `(a, b) -> relu(a + b)`.
struct AddRelu;
/// `(grad_y, y) -> grad_y * (y > 0)`.
struct ReluMask;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "add_relu: shapes {:?} and {:?} differ",
                l1.dims(),
                l2.dims()
            )
        }
        let (a, b) = (slice(s1, l1, "lhs")?, slice(s2, l2, "rhs")?);
        let mut y = vec![0f32; a.len()];
        y.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(yo, (ac, bc))| add_relu_chunk(yo, ac, bc));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = relu_mask(grad, res)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, y) = (slice(s1, l1, "gradient")?, slice(s2, l2, "output")?);
        if g.len() != y.len() {
            candle_core::bail!("add_relu backward: shape mismatch")
        }
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
            .for_each(|(o, (gc, yc))| relu_mask_chunk(o, gc, yc));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `grad * (y > 0)` (both contiguous CPU f32, same shape): the gradient through a ReLU from
/// its output `y`; what [`add_relu`]'s backward gives both its inputs.
pub(super) fn relu_mask(grad: &Tensor, y: &Tensor) -> Result<Tensor> {
    grad.contiguous()?.apply_op2_no_bwd(y, &ReluMask)
}

/// `relu(a + b)` for same-shaped tensors; CPU f32 runs the fused op, otherwise Candle ops.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    super::require_non_empty("add_relu", a)?;
    if a.device().is_cpu()
        && a.dtype() == candle_core::DType::F32
        && b.dtype() == candle_core::DType::F32
        && a.shape() == b.shape()
        && !super::reference_mode()
    {
        return a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu);
    }
    (a + b)?.relu()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_add_relu_and_gradients() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(21);
        let dev = Device::Cpu;
        for d in [
            vec![2usize, 3, 5, 7],
            vec![1],
            vec![70_001],
            vec![3, 17, 4, 4],
        ] {
            let a = rng.var(0f32, 1.0, d.as_slice(), &dev)?;
            let b = rng.var(0f32, 1.0, d.as_slice(), &dev)?;
            let y = add_relu(&a, &b)?;
            let r = (a.as_tensor() + b.as_tensor())?.relu()?;
            let diff = (&y - &r)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff == 0.0, "forward {d:?}: {diff}");
            let t = rng.randn(0f32, 1.0, d.as_slice(), &dev)?;
            let ga = (y * &t)?.sum_all()?.backward()?;
            let gr = (r * &t)?.sum_all()?.backward()?;
            for v in [&a, &b] {
                let (p, q) = (ga.get(v).unwrap(), gr.get(v).unwrap());
                let diff = (p - q)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-6, "grad {d:?}: {diff}");
            }
        }
        Ok(())
    }
}
