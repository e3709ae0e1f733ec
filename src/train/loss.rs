//! Cross-entropy with label smoothing (PyTorch's `F.cross_entropy`, mean reduction), built only
//! from ops that have a backward pass (candle's fused softmax kernels have none).

use candle_core::{DType, Result, Tensor, D};

/// `log_softmax` over the last dimension from max / sub / exp / sum / log (all differentiable).
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    // The shift does not change the result; detaching it keeps the gradient exact at ties.
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Mean cross-entropy of `logits` `[batch, classes]` against class indices `targets` `[batch]`
/// (u32 or i64), with PyTorch's label smoothing:
/// `(1 - eps) * nll + eps * mean over classes of (-log p)`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, label_smoothing: f64) -> Result<Tensor> {
    let (batch, _classes) = logits.dims2()?;
    if targets.dims() != [batch] {
        candle_core::bail!(
            "cross_entropy: targets have shape {:?}, expected [{batch}]",
            targets.dims()
        );
    }
    let targets = match targets.dtype() {
        DType::U32 | DType::I64 => targets.clone(),
        _ => targets.to_dtype(DType::U32)?,
    };
    let logp = log_softmax(logits)?;
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let nll = picked.mean_all()?.neg()?;
    if label_smoothing == 0.0 {
        return Ok(nll);
    }
    let smooth = logp.mean(D::Minus1)?.mean_all()?.neg()?;
    (nll * (1.0 - label_smoothing))? + (smooth * label_smoothing)?
}

/// Fraction of rows whose arg-max equals the target.
pub fn accuracy(logits: &Tensor, targets: &Tensor) -> Result<f64> {
    let (batch, _) = logits.dims2()?;
    if batch == 0 {
        return Ok(0.0);
    }
    let pred = logits.argmax(D::Minus1)?;
    let targets = targets.to_dtype(DType::U32)?;
    let correct = pred
        .eq(&targets)?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    Ok(correct / batch as f64)
}

/// Number of rows whose arg-max equals the target (for exact epoch accuracy).
pub fn correct_count(logits: &Tensor, targets: &Tensor) -> Result<usize> {
    Ok(correct_tensor(logits, targets)?.to_scalar::<u32>()? as usize)
}

/// [`correct_count`] as a u32 scalar left on the logits' device (read with other numbers).
pub fn correct_tensor(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let pred = logits.argmax(D::Minus1)?;
    let targets = targets.to_dtype(DType::U32)?;
    pred.eq(&targets)?.to_dtype(DType::U32)?.sum_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn gradient_flows_and_matches_softmax_minus_onehot() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[[1f64, 2.0, 3.0], [0.5, 0.5, -1.0]], &dev)?)?;
        let t = Tensor::new(&[2u32, 0], &dev)?;
        let loss = cross_entropy(x.as_tensor(), &t, 0.0)?;
        let g = loss.backward()?;
        let gx = g.get(x.as_tensor()).expect("grad").to_vec2::<f64>()?;
        let p = candle_nn::ops::softmax(x.as_tensor(), 1)?.to_vec2::<f64>()?;
        for (r, tgt) in [(0usize, 2usize), (1, 0)] {
            for c in 0..3 {
                let want = (p[r][c] - if c == tgt { 1.0 } else { 0.0 }) / 2.0;
                assert!((gx[r][c] - want).abs() < 1e-12);
            }
        }
        Ok(())
    }

    #[test]
    fn accuracy_counts_argmax() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, 2.0], [3.0, 0.0], [0.0, 1.0]], &dev)?;
        let t = Tensor::new(&[1u32, 1, 1], &dev)?;
        assert!((accuracy(&x, &t)? - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(correct_count(&x, &t)?, 2);
        Ok(())
    }
}
