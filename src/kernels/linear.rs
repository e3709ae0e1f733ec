//! Fully connected layer `y = x W^T (+ b)` over rows of a 2-D input as a Candle custom op, the
//! bias added in the product's pass. The backward computes the bias gradient (column sums)
//! together with the weight gradient; Candle's broadcast add instead reduces it in a separate
//! strided reduction over the rows (`ReduceSum`, 15% of a ConvNeXt nano step).
//!
//! Products run on the `gemm` crate, single-threaded per block of rows, the blocks in
//! parallel on rayon; the weight gradient splits the rows over the threads and sums the parts.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{sgemm, Mat};

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, &format!("linear: {what}"))
}

/// Rows per parallel task: about four tasks per thread, at least 32 rows.
fn row_block(m: usize) -> usize {
    m.div_ceil(4 * rayon::current_num_threads()).max(32)
}

fn dims2(l: &Layout, what: &str) -> Result<(usize, usize)> {
    match *l.dims() {
        [a, b] => Ok((a, b)),
        ref d => candle_core::bail!("linear: {what} must be 2-D, got {d:?}"),
    }
}

/// `(x (M, K), w (N, K)[, b (N,)]) -> y (M, N)`.
struct Lin;

fn lin_forward(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f32> {
    let rb = row_block(m);
    let mut y = vec![0f32; m * n];
    y.par_chunks_mut((rb * n).max(1))
        .enumerate()
        .for_each(|(t, yo)| {
            let rows = yo.len() / n.max(1);
            if let Some(b) = b {
                yo.chunks_exact_mut(n).for_each(|r| r.copy_from_slice(b));
            }
            let xb = &x[t * rb * k..];
            // SAFETY: rows x k of x from this block, n x k of w; y block is disjoint.
            unsafe {
                sgemm(
                    rows,
                    n,
                    k,
                    yo.as_mut_ptr(),
                    n,
                    b.is_some(),
                    Mat {
                        ptr: xb.as_ptr(),
                        rs: k as isize,
                        cs: 1,
                    },
                    Mat {
                        ptr: w.as_ptr(),
                        rs: 1,
                        cs: k as isize,
                    },
                )
            }
        });
    y
}

impl CustomOp2 for Lin {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ((m, k), (n, wk)) = (dims2(l1, "input")?, dims2(l2, "weight")?);
        if k != wk {
            candle_core::bail!("linear: input has {k} features, weight expects {wk}")
        }
        let y = lin_forward(
            slice(s1, l1, "input")?,
            slice(s2, l2, "weight")?,
            None,
            m,
            k,
            n,
        );
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, _) = lin_grads(x, w, grad, false)?;
        Ok((gx, Some(gw)))
    }
}

/// `(x, w, b) -> y`.
struct LinBias;

impl CustomOp3 for LinBias {
    fn name(&self) -> &'static str {
        "linear-bias"
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
        let ((m, k), (n, wk)) = (dims2(l1, "input")?, dims2(l2, "weight")?);
        let b = slice(s3, l3, "bias")?;
        if k != wk || b.len() != n {
            candle_core::bail!("linear: input {m}x{k}, weight {n}x{wk}, bias {}", b.len())
        }
        let y = lin_forward(
            slice(s1, l1, "input")?,
            slice(s2, l2, "weight")?,
            Some(b),
            m,
            k,
            n,
        );
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, gb) = lin_grads(x, w, grad, true)?;
        Ok((gx, Some(gw), gb))
    }
}

fn lin_grads(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    with_bias: bool,
) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let gx = if x.track_op() {
        Some(grad.apply_op2_no_bwd(w, &LinBwdInput)?)
    } else {
        None
    };
    let packed = x.apply_op2_no_bwd(&grad, &LinBwdWeight(with_bias))?;
    let nw = w.elem_count();
    let gw = packed.narrow(0, 0, nw)?.reshape(w.shape())?;
    let gb = if with_bias {
        Some(packed.narrow(0, nw, w.dim(0)?)?)
    } else {
        None
    };
    Ok((gx, gw, gb))
}

/// `(grad_y (M, N), w (N, K)) -> grad_x (M, K)`.
struct LinBwdInput;
/// `(x (M, K), grad_y (M, N)) -> [grad_w (N*K) | grad_b (N)]`.
struct LinBwdWeight(bool);

impl CustomOp2 for LinBwdInput {
    fn name(&self) -> &'static str {
        "linear-bwd-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ((m, n), (wn, k)) = (dims2(l1, "gradient")?, dims2(l2, "weight")?);
        if n != wn {
            candle_core::bail!("linear backward: gradient {m}x{n}, weight {wn}x{k}")
        }
        let (gy, w) = (slice(s1, l1, "gradient")?, slice(s2, l2, "weight")?);
        let rb = row_block(m);
        let mut gx = vec![0f32; m * k];
        gx.par_chunks_mut((rb * k).max(1))
            .enumerate()
            .for_each(|(t, go)| {
                let rows = go.len() / k.max(1);
                let gyb = &gy[t * rb * n..];
                // SAFETY: rows x n of gy from this block, n x k of w.
                unsafe {
                    sgemm(
                        rows,
                        k,
                        n,
                        go.as_mut_ptr(),
                        k,
                        false,
                        Mat {
                            ptr: gyb.as_ptr(),
                            rs: n as isize,
                            cs: 1,
                        },
                        Mat {
                            ptr: w.as_ptr(),
                            rs: k as isize,
                            cs: 1,
                        },
                    )
                }
            });
        Ok((CpuStorage::F32(gx), Shape::from((m, k))))
    }
}

impl CustomOp2 for LinBwdWeight {
    fn name(&self) -> &'static str {
        "linear-bwd-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ((m, k), (gm, n)) = (dims2(l1, "input")?, dims2(l2, "gradient")?);
        if m != gm {
            candle_core::bail!("linear backward: input {m}x{k}, gradient {gm}x{n}")
        }
        let (x, gy) = (slice(s1, l1, "input")?, slice(s2, l2, "gradient")?);
        let with_bias = self.0;
        let parts = rayon::current_num_threads().clamp(1, m.max(1));
        let per = m.div_ceil(parts).max(1);
        let len = n * k + if with_bias { n } else { 0 };
        let partial: Vec<Vec<f32>> = (0..parts)
            .into_par_iter()
            .map(|p| {
                let mut acc = vec![0f32; len];
                let lo = (p * per).min(m);
                let hi = ((p + 1) * per).min(m);
                if hi > lo {
                    let (gw, gb) = acc.split_at_mut(n * k);
                    // SAFETY: rows lo..hi of gy (transposed: n x rows) and x (rows x k).
                    unsafe {
                        sgemm(
                            n,
                            k,
                            hi - lo,
                            gw.as_mut_ptr(),
                            k,
                            false,
                            Mat {
                                ptr: gy[lo * n..].as_ptr(),
                                rs: 1,
                                cs: n as isize,
                            },
                            Mat {
                                ptr: x[lo * k..].as_ptr(),
                                rs: k as isize,
                                cs: 1,
                            },
                        )
                    }
                    if with_bias {
                        for row in gy[lo * n..hi * n].chunks_exact(n) {
                            gb.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
                        }
                    }
                }
                acc
            })
            .collect();
        let mut it = partial.into_iter();
        let mut out = it.next().unwrap_or_else(|| vec![0f32; len]);
        for p in it {
            out.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
        }
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// `x (M, K) W^T (+ b)` for 2-D `x`, weight `(N, K)`, bias `(N,)`. `None` where the fast path
/// does not apply (not CPU f32, reference mode); the caller then uses Candle's matmul.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    super::require_non_empty("linear", x)?;
    if !x.device().is_cpu()
        || x.dtype() != candle_core::DType::F32
        || weight.dtype() != candle_core::DType::F32
        || x.rank() != 2
        || super::reference_mode()
    {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let w = weight.contiguous()?;
    Ok(Some(match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, LinBias)?,
        None => x.apply_op2(&w, Lin)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<(f32, f32)> {
        let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        Ok((diff, scale))
    }

    #[test]
    fn linear_matches_candle_and_gradients() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(2);
        let dev = Device::Cpu;
        for (m, k, n, with_bias) in [
            (7, 5, 3, true),
            (1, 9, 4, false),
            (130, 17, 33, true),
            (300, 8, 1, true),
            (65, 1, 6, false),
        ] {
            let x = rng.var(0f32, 1.0, (m, k), &dev)?;
            let w = rng.var(0f32, 1.0, (n, k), &dev)?;
            let b = rng.var(0f32, 1.0, n, &dev)?;
            let a = linear(&x, &w, with_bias.then_some(b.as_tensor()))?.expect("fast path");
            let mut r = x.matmul(&w.t()?)?;
            if with_bias {
                r = r.broadcast_add(&b)?;
            }
            let (diff, scale) = max_diff(&a, &r)?;
            assert!(diff < 1e-5 * scale, "forward {m}x{k}x{n}: {diff}");
            let t = rng.randn(0f32, 1.0, a.shape(), &dev)?;
            let ga = (a * &t)?.sum_all()?.backward()?;
            let gr = (r * &t)?.sum_all()?.backward()?;
            let mut vars = vec![&x, &w];
            if with_bias {
                vars.push(&b);
            } else {
                assert!(ga.get(&b).is_none());
            }
            for v in vars {
                let (diff, scale) = max_diff(ga.get(v).unwrap(), gr.get(v).unwrap())?;
                assert!(diff < 1e-4 * scale, "grad {m}x{k}x{n}: {diff}");
            }
        }
        Ok(())
    }

    #[test]
    fn linear_untracked_input_gets_no_gradient() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(3);
        let dev = Device::Cpu;
        let x = rng.randn(0f32, 1.0, (40, 6), &dev)?;
        let w = rng.var(0f32, 1.0, (5, 6), &dev)?;
        let a = linear(&x, &w, None)?.expect("fast path");
        let ga = a.sum_all()?.backward()?;
        assert!(ga.get(&x).is_none());
        let gr = x.matmul(&w.t()?)?.sum_all()?.backward()?;
        let (diff, scale) = max_diff(ga.get(&w).unwrap(), gr.get(&w).unwrap())?;
        assert!(diff < 1e-4 * scale, "{diff}");
        Ok(())
    }
}
