//! Dense 2-D convolution (groups 1) as im2col + matrix product. `im2col` is a Candle custom op
//! whose backward is col2im, so the convolution's backward is two matrix products and one
//! scatter pass (Candle's own conv backward runs a naive transposed convolution).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    fn new(n: usize, c: usize, h: usize, w: usize, k: usize, s: usize, p: usize) -> Result<Self> {
        if k == 0 || s == 0 {
            candle_core::bail!("conv2d: kernel and stride must be positive")
        }
        if h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("conv2d: kernel {k}x{k} larger than padded input {h}x{w}")
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            k,
            s,
            p,
            oh: (h + 2 * p - k) / s + 1,
            ow: (w + 2 * p - k) / s + 1,
        })
    }

    fn row_len(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Input column for output column `ox` and kernel column `kx`, if inside the image.
    #[inline(always)]
    fn ix(&self, ox: usize, kx: usize) -> Option<usize> {
        let v = (ox * self.s + kx) as isize - self.p as isize;
        (v >= 0 && (v as usize) < self.w).then_some(v as usize)
    }

    #[inline(always)]
    fn iy(&self, oy: usize, ky: usize) -> Option<usize> {
        let v = (oy * self.s + ky) as isize - self.p as isize;
        (v >= 0 && (v as usize) < self.h).then_some(v as usize)
    }
}

/// `(N, C, H, W)` -> `(N*OH*OW, C*K*K)`, rows ordered (n, oy, ox), columns (c, ky, kx).
struct Im2Col {
    k: usize,
    s: usize,
    p: usize,
}

/// Backward of `Im2Col`: scatters the column gradient back to `(N, C, H, W)`.
struct Col2Im {
    g: Geom,
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, "im2col")
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = match *l.dims() {
            [n, c, h, w] => (n, c, h, w),
            ref d => candle_core::bail!("im2col: expected 4-D input, got {d:?}"),
        };
        let g = Geom::new(n, c, h, w, self.k, self.s, self.p)?;
        let x = slice(st, l)?;
        let rl = g.row_len();
        let mut cols = vec![0f32; n * g.oh * g.ow * rl];
        // one task per output row (n, oy): OW rows of the column matrix
        cols.par_chunks_mut((g.ow * rl).max(1))
            .enumerate()
            .for_each(|(t, out)| {
                let (b, oy) = (t / g.oh, t % g.oh);
                for ci in 0..g.c {
                    let plane = &x[(b * g.c + ci) * g.h * g.w..(b * g.c + ci + 1) * g.h * g.w];
                    for ky in 0..g.k {
                        let Some(iy) = g.iy(oy, ky) else { continue };
                        let irow = &plane[iy * g.w..(iy + 1) * g.w];
                        let base = (ci * g.k + ky) * g.k;
                        for ox in 0..g.ow {
                            let dst = &mut out[ox * rl + base..ox * rl + base + g.k];
                            for (kx, d) in dst.iter_mut().enumerate() {
                                if let Some(ix) = g.ix(ox, kx) {
                                    *d = irow[ix];
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(cols), Shape::from((n * g.oh * g.ow, rl))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let g = Geom::new(n, c, h, w, self.k, self.s, self.p)?;
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im { g })?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.g;
        let rl = g.row_len();
        if l.dims() != [g.n * g.oh * g.ow, rl] {
            candle_core::bail!("col2im: gradient shape {:?} mismatch", l.dims())
        }
        let cols = slice(st, l)?;
        let mut gx = vec![0f32; g.n * g.c * g.h * g.w];
        // One task per image (disjoint writes). The column rows are read in order, each once;
        // the scattered adds of neighbouring output pixels land on the same few input rows,
        // which stay in cache. (One task per plane read every row's few values per channel,
        // a cache line for three floats.)
        let plane = g.h * g.w;
        let rows_per_image = g.oh * g.ow;
        gx.par_chunks_mut((g.c * plane).max(1))
            .zip(cols.par_chunks((rows_per_image * rl).max(1)))
            .for_each(|(img, rows)| {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let row = &rows[(oy * g.ow + ox) * rl..(oy * g.ow + ox + 1) * rl];
                        for ci in 0..g.c {
                            let p = &mut img[ci * plane..(ci + 1) * plane];
                            for ky in 0..g.k {
                                let Some(iy) = g.iy(oy, ky) else { continue };
                                let src = &row[(ci * g.k + ky) * g.k..(ci * g.k + ky + 1) * g.k];
                                let irow = &mut p[iy * g.w..(iy + 1) * g.w];
                                for (kx, &v) in src.iter().enumerate() {
                                    if let Some(ix) = g.ix(ox, kx) {
                                        irow[ix] += v;
                                    }
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(gx), Shape::from((g.n, g.c, g.h, g.w))))
    }
}

/// Convolution of `x` `(N, C, H, W)` with `weight` `(O, C, K, K)`, square stride and padding,
/// no bias: `im2col(x) @ weight^T`. CPU (in f32, other dtypes are cast); other devices use
/// Candle's `conv2d`.
pub fn conv2d_im2col(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (o, c, kh, kw) = weight.dims4()?;
    if !x.device().is_cpu() || kh != kw || super::reference_mode() {
        return x.conv2d(weight, padding, stride, 1, 1);
    }
    let dt = x.dtype();
    if dt != candle_core::DType::F32 {
        // Candle's CPU conv has no bf16 GEMM: a low-precision forward on the CPU runs in f32
        let f32 = candle_core::DType::F32;
        return conv2d_im2col(&x.to_dtype(f32)?, &weight.to_dtype(f32)?, stride, padding)?
            .to_dtype(dt);
    }
    let (n, xc, h, w) = x.dims4()?;
    if xc != c {
        candle_core::bail!("conv2d: input has {xc} channels, weight expects {c}")
    }
    let g = Geom::new(n, c, h, w, kh, stride, padding)?;
    // The forward runs on detached tensors, so the column matrix is no graph node: Candle's
    // matmul backward would otherwise compute (and zero-fill plus add) a gradient for it even
    // where the input needs none (the image of the first conv), one column-sized pass each.
    let cols = x.detach().contiguous()?.apply_op1_no_bwd(&Im2Col {
        k: kh,
        s: stride,
        p: padding,
    })?;
    let w2 = weight.detach().reshape((o, c * kh * kw))?;
    let y = cols.matmul(&w2.t()?)?;
    x.apply_op2(weight, ConvAttach { g, o, cols, y })
}

/// Attaches the im2col convolution to the graph: forward permutes the precomputed `(N*OH*OW, O)`
/// product to `(N, O, OH, OW)`; backward returns the weight gradient `gy^T @ cols` and, only
/// where the input is tracked, the input gradient `col2im(gy @ W)`.
struct ConvAttach {
    g: Geom,
    o: usize,
    cols: Tensor,
    y: Tensor,
}

impl CustomOp2 for ConvAttach {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, o) = (self.g, self.o);
        let (st, l) = self.y.storage_and_layout();
        let src = match &*st {
            Storage::Cpu(s) => slice(s, l)?,
            _ => candle_core::bail!("conv2d-im2col: product is not on the CPU"),
        };
        let hw = g.oh * g.ow;
        let mut out = vec![0f32; g.n * o * hw];
        // one task per (n, o) plane
        out.par_chunks_mut(hw.max(1))
            .enumerate()
            .for_each(|(t, plane)| {
                let (b, oc) = (t / o, t % o);
                let rows = &src[b * hw * o..(b + 1) * hw * o];
                for (p, d) in plane.iter_mut().enumerate() {
                    *d = rows[p * o + oc];
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((g.n, o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (g, o) = (self.g, self.o);
        let gy = grad
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((g.n * g.oh * g.ow, o))?;
        let gw = gy.t()?.matmul(&self.cols)?.reshape(weight.shape())?;
        let gx = if x.track_op() {
            let w2 = weight.detach().reshape((o, g.row_len()))?;
            Some(gy.matmul(&w2)?.apply_op1_no_bwd(&Col2Im { g })?)
        } else {
            None
        };
        Ok((gx, Some(gw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_conv_forward_and_gradients() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(4);
        let dev = Device::Cpu;
        // (input dims, out channels, k, stride, padding)
        let cases = [
            ([2, 3, 9, 9], 4, 3, 1, 1),
            ([2, 3, 11, 9], 5, 7, 2, 3),
            ([1, 4, 8, 8], 6, 1, 2, 0),
            ([2, 2, 7, 7], 3, 3, 2, 1),
            ([1, 3, 5, 6], 2, 3, 1, 0),
        ];
        for (d, o, k, s, p) in cases {
            let x = rng.var(0f32, 1.0, &d, &dev)?;
            let w = rng.var(0f32, 1.0, (o, d[1], k, k), &dev)?;
            let a = conv2d_im2col(&x, &w, s, p)?;
            let b = x.conv2d(&w, p, s, 1, 1)?;
            let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
            let diff = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 1e-5 * scale.max(1.0),
                "forward {d:?} k{k} s{s} p{p}: {diff}"
            );
            let exact = (d[2] + 2 * p - k) % s == 0 && (d[3] + 2 * p - k) % s == 0;
            if !exact {
                continue; // candle's conv backward cannot recover truncated sizes
            }
            let r = rng.randn(0f32, 1.0, a.shape(), &dev)?;
            let ga = (a * &r)?.sum_all()?.backward()?;
            let gb = (b * &r)?.sum_all()?.backward()?;
            for v in [&x, &w] {
                let (ta, tb) = (ga.get(v).unwrap(), gb.get(v).unwrap());
                let scale = tb.abs()?.max_all()?.to_scalar::<f32>()?;
                let diff = (ta - tb)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(
                    diff < 1e-4 * scale.max(1.0),
                    "grad {d:?} k{k} s{s} p{p}: {diff}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn truncated_sizes_match_finite_differences() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(5);
        let dev = Device::Cpu;
        let d = [1, 2, 8, 7];
        let x = rng.var(0f32, 1.0, &d, &dev)?;
        let w = rng.var(0f32, 1.0, (3, 2, 3, 3), &dev)?;
        let y = conv2d_im2col(&x, &w, 2, 1)?;
        let r = rng.randn(0f32, 1.0, y.shape(), &dev)?;
        let g = (y * &r)?.sum_all()?.backward()?;
        let gx: Vec<f32> = g.get(&x).unwrap().flatten_all()?.to_vec1()?;
        let xv: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let loss = |xv: &[f32]| -> Result<f64> {
            let xt = Tensor::from_vec(xv.to_vec(), &d, &dev)?;
            let y = xt.conv2d(&w, 1, 2, 1, 1)?;
            (y.to_dtype(candle_core::DType::F64)? * r.to_dtype(candle_core::DType::F64)?)?
                .sum_all()?
                .to_scalar::<f64>()
        };
        for i in [0, 13, 55, xv.len() - 1] {
            let (mut a, mut b) = (xv.clone(), xv.clone());
            a[i] += 1e-2;
            b[i] -= 1e-2;
            let fd = (loss(&a)? - loss(&b)?) / 2e-2;
            assert!(
                (fd - gx[i] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
                "fd {i}: {fd} vs {}",
                gx[i]
            );
        }
        Ok(())
    }

    #[test]
    fn untracked_input_gets_no_gradient_and_weight_gradient_matches() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(6);
        let dev = Device::Cpu;
        let x = rng.randn(0f32, 1.0, (2, 3, 9, 9), &dev)?;
        let w = rng.var(0f32, 1.0, (4, 3, 7, 7), &dev)?;
        let a = conv2d_im2col(&x, &w, 2, 3)?;
        let b = x.conv2d(&w, 3, 2, 1, 1)?;
        let r = rng.randn(0f32, 1.0, a.shape(), &dev)?;
        let ga = (a * &r)?.sum_all()?.backward()?;
        let gb = (b * &r)?.sum_all()?.backward()?;
        assert!(ga.get(&x).is_none());
        let (ta, tb) = (ga.get(&w).unwrap(), gb.get(&w).unwrap());
        let scale = tb.abs()?.max_all()?.to_scalar::<f32>()?;
        let diff = (ta - tb)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4 * scale.max(1.0), "weight grad: {diff}");
        Ok(())
    }
}
