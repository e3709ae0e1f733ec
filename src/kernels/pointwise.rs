//! Pointwise (1x1, stride 1, no padding) convolution of NCHW input as a Candle custom op: one
//! matrix product per image, `Y[n] = W X[n]` (`(O, C) x (C, H*W)`), on the NCHW data as it is,
//! so neither the forward nor the backward permutes to channels-last and back. The optional
//! bias is added in the same pass. Backward: `dX[n] = W^T dY[n]`, `dW = sum_n dY[n] X[n]^T`,
//! `db = sum dY`; images run in parallel (rayon), each product single-threaded (`gemm`).
//!
//! Small images (`H*W` under [`BLOCK_COLUMNS`]) go a block of images at a time instead: the
//! block's planes are gathered into one `(C, images*H*W)` matrix, so that one product packs
//! the weight once for the block rather than once per image, and the weight gradient's
//! `(O, C)` sum is read and written once per block rather than once per image (at 2x2 pixels
//! and 960 channels those were most of the work). The block size depends on `H*W` alone, so
//! the result does not depend on the thread count.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{sgemm, Mat};

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, &format!("conv1x1: {what}"))
}

#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    c: usize,
    hw: usize,
    o: usize,
}

impl Geom {
    fn new(x: &Layout, w: &Layout) -> Result<Self> {
        match (x.dims(), w.dims()) {
            (&[n, c, h, wd], &[o, wc, 1, 1]) if wc == c => Ok(Self {
                n,
                c,
                hw: h * wd,
                o,
            }),
            (d, k) => candle_core::bail!("conv1x1: input {d:?} and weight {k:?} do not match"),
        }
    }
}

/// Columns a product should have at least: images of fewer pixels go in blocks of
/// `BLOCK_COLUMNS / (H*W)` (rounded up) images.
const BLOCK_COLUMNS: usize = 256;

/// Images per block for planes of `hw` pixels (1: one product per image, no gathering).
fn block_images(hw: usize, n: usize) -> usize {
    BLOCK_COLUMNS.div_ceil(hw.max(1)).clamp(1, n.max(1))
}

/// `dst (rows, nb*hw)` <- the `nb` planes-of-`rows` images of `src` (`(nb, rows, hw)`).
fn gather(src: &[f32], nb: usize, rows: usize, hw: usize, dst: &mut Vec<f32>) {
    dst.clear();
    dst.resize(rows * nb * hw, 0.0);
    let cols = nb * hw;
    for (b, img) in src.chunks_exact(rows * hw).take(nb).enumerate() {
        for (r, plane) in img.chunks_exact(hw).enumerate() {
            dst[r * cols + b * hw..r * cols + (b + 1) * hw].copy_from_slice(plane);
        }
    }
}

/// `dst` (`(nb, rows, hw)`) <- `src` (`(rows, nb*hw)`), plus `bias[r]` on row `r` if given.
fn scatter(src: &[f32], nb: usize, rows: usize, hw: usize, bias: Option<&[f32]>, dst: &mut [f32]) {
    let cols = nb * hw;
    for (b, img) in dst.chunks_exact_mut(rows * hw).take(nb).enumerate() {
        for (r, plane) in img.chunks_exact_mut(hw).enumerate() {
            let s = &src[r * cols + b * hw..r * cols + (b + 1) * hw];
            match bias {
                Some(bias) => plane.iter_mut().zip(s).for_each(|(d, &v)| *d = v + bias[r]),
                None => plane.copy_from_slice(s),
            }
        }
    }
}

/// `out (NCHW, rows_out channels) = a (rows_out x rows_in; data, row and column strides) *
/// input (NCHW, rows_in channels)` for small planes, a block of images per product.
#[allow(clippy::too_many_arguments)]
fn blocked_product(
    n: usize,
    rows_in: usize,
    rows_out: usize,
    hw: usize,
    input: &[f32],
    (a, a_rs, a_cs): (&[f32], isize, isize),
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let per = block_images(hw, n);
    out.par_chunks_mut((per * rows_out * hw).max(1))
        .zip(input.par_chunks((per * rows_in * hw).max(1)))
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(xs, ys), (yo, xb)| {
                let nb = yo.len() / (rows_out * hw);
                gather(xb, nb, rows_in, hw, xs);
                ys.clear();
                ys.resize(rows_out * nb * hw, 0.0);
                // SAFETY: xs is (rows_in, nb*hw), ys (rows_out, nb*hw), a (rows_out, rows_in).
                unsafe {
                    sgemm(
                        rows_out,
                        nb * hw,
                        rows_in,
                        ys.as_mut_ptr(),
                        nb * hw,
                        false,
                        Mat {
                            ptr: a.as_ptr(),
                            rs: a_rs,
                            cs: a_cs,
                        },
                        Mat {
                            ptr: xs.as_ptr(),
                            rs: (nb * hw) as isize,
                            cs: 1,
                        },
                    )
                }
                scatter(ys, nb, rows_out, hw, bias, yo);
            },
        );
}

/// Forward of `x (N, C, H, W)`, `w (O, C)` plus optional bias `(O,)`.
fn forward(g: Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (c, hw, o) = (g.c, g.hw, g.o);
    let mut y = vec![0f32; g.n * o * hw];
    if block_images(hw, g.n) > 1 {
        blocked_product(g.n, c, o, hw, x, (w, c as isize, 1), bias, &mut y);
        return y;
    }
    y.par_chunks_mut((o * hw).max(1))
        .enumerate()
        .for_each(|(b, yo)| {
            if let Some(bias) = bias {
                for (row, &bv) in yo.chunks_exact_mut(hw).zip(bias) {
                    row.iter_mut().for_each(|v| *v = bv);
                }
            }
            let xb = &x[b * c * hw..(b + 1) * c * hw];
            // SAFETY: sizes match the slices; y and x are distinct allocations.
            unsafe {
                sgemm(
                    o,
                    hw,
                    c,
                    yo.as_mut_ptr(),
                    hw,
                    bias.is_some(),
                    Mat {
                        ptr: w.as_ptr(),
                        rs: c as isize,
                        cs: 1,
                    },
                    Mat {
                        ptr: xb.as_ptr(),
                        rs: hw as isize,
                        cs: 1,
                    },
                )
            }
        });
    y
}

/// Input gradient: `dX[n] = W^T dY[n]`.
fn backward_input(g: Geom, gy: &[f32], w: &[f32]) -> Vec<f32> {
    let (c, hw, o) = (g.c, g.hw, g.o);
    let mut gx = vec![0f32; g.n * c * hw];
    if block_images(hw, g.n) > 1 {
        blocked_product(g.n, o, c, hw, gy, (w, 1, c as isize), None, &mut gx);
        return gx;
    }
    gx.par_chunks_mut((c * hw).max(1))
        .enumerate()
        .for_each(|(b, gxo)| {
            let gyb = &gy[b * o * hw..(b + 1) * o * hw];
            // SAFETY: as in `forward`.
            unsafe {
                sgemm(
                    c,
                    hw,
                    o,
                    gxo.as_mut_ptr(),
                    hw,
                    false,
                    Mat {
                        ptr: w.as_ptr(),
                        rs: 1,
                        cs: c as isize,
                    },
                    Mat {
                        ptr: gyb.as_ptr(),
                        rs: hw as isize,
                        cs: 1,
                    },
                )
            }
        });
    gx
}

/// Weight gradient `sum_n dY[n] X[n]^T` `(O, C)`, followed (if `with_bias`) by `sum dY` `(O,)`.
/// The batch is split into one contiguous range per thread, each summing into its own buffer.
fn backward_weight(g: Geom, x: &[f32], gy: &[f32], with_bias: bool) -> Vec<f32> {
    let (c, hw, o) = (g.c, g.hw, g.o);
    let parts = rayon::current_num_threads().clamp(1, g.n.max(1));
    let per = g.n.div_ceil(parts).max(1);
    let len = o * c + if with_bias { o } else { 0 };
    let partial: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let mut acc = vec![0f32; len];
            let (gw, gb) = acc.split_at_mut(o * c);
            let lo = (p * per).min(g.n);
            let hi = ((p + 1) * per).min(g.n);
            let block = block_images(hw, g.n);
            if block > 1 {
                // a block of images per product: `gw += dY_blk (O, K) X_blk^T (K, C)`
                let (mut xs, mut ys) = (Vec::new(), Vec::new());
                let mut b0 = lo;
                while b0 < hi {
                    let nb = block.min(hi - b0);
                    gather(&x[b0 * c * hw..], nb, c, hw, &mut xs);
                    gather(&gy[b0 * o * hw..], nb, o, hw, &mut ys);
                    let k = nb * hw;
                    // SAFETY: ys is (O, k), xs (C, k) read transposed, gw (O, C).
                    unsafe {
                        sgemm(
                            o,
                            c,
                            k,
                            gw.as_mut_ptr(),
                            c,
                            b0 > lo,
                            Mat {
                                ptr: ys.as_ptr(),
                                rs: k as isize,
                                cs: 1,
                            },
                            Mat {
                                ptr: xs.as_ptr(),
                                rs: 1,
                                cs: k as isize,
                            },
                        )
                    }
                    b0 += nb;
                }
                if with_bias {
                    for b in lo..hi {
                        let gyb = &gy[b * o * hw..(b + 1) * o * hw];
                        for (s, row) in gb.iter_mut().zip(gyb.chunks_exact(hw)) {
                            *s += row.iter().sum::<f32>();
                        }
                    }
                }
                return acc;
            }
            for b in lo..hi {
                let xb = &x[b * c * hw..(b + 1) * c * hw];
                let gyb = &gy[b * o * hw..(b + 1) * o * hw];
                // SAFETY: as in `forward`.
                unsafe {
                    sgemm(
                        o,
                        c,
                        hw,
                        gw.as_mut_ptr(),
                        c,
                        b > lo,
                        Mat {
                            ptr: gyb.as_ptr(),
                            rs: hw as isize,
                            cs: 1,
                        },
                        Mat {
                            ptr: xb.as_ptr(),
                            rs: 1,
                            cs: hw as isize,
                        },
                    )
                }
                if with_bias {
                    for (s, row) in gb.iter_mut().zip(gyb.chunks_exact(hw)) {
                        *s += row.iter().sum::<f32>();
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
    out
}

/// `(x, w) -> y`, no bias.
struct Pw;
/// `(x, w, bias) -> y`.
struct PwBias;
/// `(grad_y, w) -> grad_x`.
struct PwBwdInput;
/// `(x, grad_y) -> [grad_w | grad_b]` flat; `.0`: with the bias gradient.
struct PwBwdWeight(bool);

impl CustomOp2 for Pw {
    fn name(&self) -> &'static str {
        "conv1x1"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1, l2)?;
        let y = forward(g, slice(s1, l1, "input")?, slice(s2, l2, "weight")?, None);
        let d = l1.dims();
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, d[2], d[3]))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, _) = grads(x, w, grad, false)?;
        Ok((gx, Some(gw)))
    }
}

impl CustomOp3 for PwBias {
    fn name(&self) -> &'static str {
        "conv1x1-bias"
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
        let g = Geom::new(l1, l2)?;
        let bias = slice(s3, l3, "bias")?;
        if bias.len() != g.o {
            candle_core::bail!(
                "conv1x1: bias has {} values for {} channels",
                bias.len(),
                g.o
            )
        }
        let y = forward(
            g,
            slice(s1, l1, "input")?,
            slice(s2, l2, "weight")?,
            Some(bias),
        );
        let d = l1.dims();
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, d[2], d[3]))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, gb) = grads(x, w, grad, true)?;
        Ok((gx, Some(gw), gb))
    }
}

/// Input gradient (only where `x` is tracked), weight gradient, bias gradient.
fn grads(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    with_bias: bool,
) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let o = w.dim(0)?;
    let gx = if x.track_op() {
        Some(grad.apply_op2_no_bwd(w, &PwBwdInput)?)
    } else {
        None
    };
    let packed = x.apply_op2_no_bwd(&grad, &PwBwdWeight(with_bias))?;
    let nw = w.elem_count();
    let gw = packed.narrow(0, 0, nw)?.reshape(w.shape())?;
    let gb = if with_bias {
        Some(packed.narrow(0, nw, o)?)
    } else {
        None
    };
    Ok((gx, gw, gb))
}

impl CustomOp2 for PwBwdInput {
    fn name(&self) -> &'static str {
        "conv1x1-bwd-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        // the gradient has O channels where the input had C: swap to reuse `Geom`
        let (gd, wd) = (l1.dims(), l2.dims());
        if gd.len() != 4 || wd.len() != 4 || gd[1] != wd[0] {
            candle_core::bail!("conv1x1 backward: gradient {gd:?} and weight {wd:?} mismatch")
        }
        let g = Geom {
            n: gd[0],
            c: wd[1],
            hw: gd[2] * gd[3],
            o: wd[0],
        };
        let gx = backward_input(g, slice(s1, l1, "gradient")?, slice(s2, l2, "weight")?);
        Ok((CpuStorage::F32(gx), Shape::from((g.n, g.c, gd[2], gd[3]))))
    }
}

impl CustomOp2 for PwBwdWeight {
    fn name(&self) -> &'static str {
        "conv1x1-bwd-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (xd, gd) = (l1.dims(), l2.dims());
        if xd.len() != 4 || gd.len() != 4 || xd[0] != gd[0] || xd[2..] != gd[2..] {
            candle_core::bail!("conv1x1 backward: input {xd:?} and gradient {gd:?} mismatch")
        }
        let g = Geom {
            n: xd[0],
            c: xd[1],
            hw: xd[2] * xd[3],
            o: gd[1],
        };
        let out = backward_weight(
            g,
            slice(s1, l1, "input")?,
            slice(s2, l2, "gradient")?,
            self.0,
        );
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// Pointwise convolution of `x` `(N, C, H, W)` with `weight` `(O, C, 1, 1)` and optional bias
/// `(O,)`. `None` where the fast path does not apply (not CPU f32, reference mode); the caller
/// then runs its general path.
pub fn conv1x1(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    super::require_non_empty("conv1x1", x)?;
    let (_, _, kh, kw) = weight.dims4()?;
    if kh != 1
        || kw != 1
        || !x.device().is_cpu()
        || x.dtype() != candle_core::DType::F32
        || weight.dtype() != candle_core::DType::F32
        || super::reference_mode()
    {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let w = weight.contiguous()?;
    let y = match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, PwBias)?,
        None => x.apply_op2(&w, Pw)?,
    };
    Ok(Some(y))
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
    fn matches_candle_conv_forward_and_gradients() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(17);
        let dev = Device::Cpu;
        // (input dims, out channels, bias)
        let cases = [
            ([2, 3, 9, 9], 4, false),
            ([3, 5, 7, 3], 6, true),
            ([1, 16, 1, 1], 7, true),
            ([5, 1, 4, 6], 3, false),
            ([4, 33, 5, 5], 17, true),
            // blocks of 11 images (25 pixels each) with a short last one, and 2x2 planes
            ([24, 6, 5, 5], 5, true),
            ([70, 12, 2, 2], 9, false),
            // one product per image (272 pixels)
            ([2, 3, 16, 17], 4, true),
        ];
        for (d, o, with_bias) in cases {
            let x = rng.var(0f32, 1.0, &d, &dev)?;
            let w = rng.var(0f32, 1.0, (o, d[1], 1, 1), &dev)?;
            let b = rng.var(0f32, 1.0, o, &dev)?;
            let bias = with_bias.then_some(b.as_tensor());
            let a = conv1x1(&x, &w, bias)?.expect("fast path");
            let mut r = x.conv2d(&w, 0, 1, 1, 1)?;
            if with_bias {
                r = r.broadcast_add(&b.reshape((1, o, 1, 1))?)?;
            }
            let (diff, scale) = max_diff(&a, &r)?;
            assert!(diff < 1e-5 * scale, "forward {d:?} o{o}: {diff}");
            let t = rng.randn(0f32, 1.0, a.shape(), &dev)?;
            let ga = (a * &t)?.sum_all()?.backward()?;
            let gr = (r * &t)?.sum_all()?.backward()?;
            let mut vars = vec![&x, &w];
            if with_bias {
                vars.push(&b);
            }
            for v in vars {
                let (diff, scale) = max_diff(ga.get(v).unwrap(), gr.get(v).unwrap())?;
                assert!(diff < 1e-4 * scale, "grad {d:?} o{o}: {diff}");
            }
            if !with_bias {
                assert!(ga.get(&b).is_none());
            }
        }
        Ok(())
    }

    #[test]
    fn untracked_input_gets_no_gradient() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(18);
        let dev = Device::Cpu;
        let x = rng.randn(0f32, 1.0, (3, 4, 5, 5), &dev)?;
        let w = rng.var(0f32, 1.0, (6, 4, 1, 1), &dev)?;
        let a = conv1x1(&x, &w, None)?.expect("fast path");
        let r = x.conv2d(&w, 0, 1, 1, 1)?;
        let t = rng.randn(0f32, 1.0, a.shape(), &dev)?;
        let ga = (a * &t)?.sum_all()?.backward()?;
        let gr = (r * &t)?.sum_all()?.backward()?;
        assert!(ga.get(&x).is_none());
        let (diff, scale) = max_diff(ga.get(&w).unwrap(), gr.get(&w).unwrap())?;
        assert!(diff < 1e-4 * scale, "weight grad: {diff}");
        Ok(())
    }
}
