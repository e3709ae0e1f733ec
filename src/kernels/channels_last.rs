//! Fused per-channel element-wise ops around a ConvNeXt block's channels-last MLP, each one
//! parallel pass forward and one backward, with the per-channel gradients (bias, layer scale)
//! reduced in the same pass:
//!
//! - [`nchw_bias_to_nhwc`]: depthwise-conv bias add + the NCHW -> NHWC copy;
//! - [`bias_gelu`]: `gelu(x + b)` over the last dim (fc1's bias and GELU);
//! - [`bias_scale`]: `(x + b) * gamma` over the last dim (fc2's bias and the layer scale);
//! - [`add_nhwc_to_nchw`]: the residual `x + y` with `y` channels-last, out NCHW;
//! - [`scale_add_to_nchw`]: the whole block tail after fc2, `x + drop_path((z + b) * gamma)`
//!   out NCHW: the same arithmetic as [`bias_scale`], the drop-path product and
//!   [`add_nhwc_to_nchw`] in that order (bit for bit), but neither the scaled tensor nor the
//!   drop-path product is kept in the graph, two activation-sized tensors less per block.
//!
//! Composed from plain Candle ops they cost several passes each, and their backward reduces
//! the bias gradients with Candle's single-threaded strided sum and accumulates permuted
//! (strided) gradients. Other devices / dtypes and the reference mode use those plain ops,
//! except [`bias_gelu`] on CUDA, which runs the kernels of `kernels/cuda/gelu.cu`.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

use super::gelu::{bias_gelu_grad_row, bias_gelu_row};
use super::gpu;
#[cfg(feature = "cuda")]
use {super::gpu::cuda, candle_core::CudaStorage};

/// Rows per parallel task of the row-major `(rows, C)` passes.
const ROW_CHUNK: usize = 64;
/// Side of the square tiles of the NCHW <-> NHWC transposes.
const TILE: usize = 32;

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, what)
}

fn fast(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && !super::reference_mode()
}

/// Fills `out` (`rows x c`, row-major) row by row with `f(row, out_row, sum1, sum2)`, which
/// also adds its per-column contributions to two running sums; returns the sums, reduced
/// over the parallel tasks.
fn rows_with_column_sums(
    c: usize,
    out: &mut [f32],
    f: impl Fn(usize, &mut [f32], &mut [f32], &mut [f32]) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let partial: Vec<(Vec<f32>, Vec<f32>)> = out
        .par_chunks_mut(ROW_CHUNK * c)
        .enumerate()
        .map(|(chunk, out)| {
            let (mut s1, mut s2) = (vec![0f32; c], vec![0f32; c]);
            for (i, row) in out.chunks_mut(c).enumerate() {
                f(chunk * ROW_CHUNK + i, row, &mut s1, &mut s2);
            }
            (s1, s2)
        })
        .collect();
    let (mut a, mut b) = (vec![0f32; c], vec![0f32; c]);
    for (s1, s2) in partial {
        for j in 0..c {
            a[j] += s1[j];
            b[j] += s2[j];
        }
    }
    (a, b)
}

struct BiasGelu;
/// Backward of [`BiasGelu`]: `(x, b, g)` -> packed `[gx (rows*C) | gb (C)]`.
struct BiasGeluBwd;
/// Backward of [`BiasGelu`] on CUDA: `(x (T), b (f32), g (T))` -> `gx (T)`, and the bias
/// gradient written into `gb` (a fresh f32 tensor: a side output, see `gpu::cuda::TensorBuf`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct BiasGeluBwdCuda {
    gb: Tensor,
}

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let what = "bias_gelu";
        let (gpu, dt) = cuda::launcher(&[s1], what)?;
        cuda::launcher(&[s2], what)?;
        // the kernel reads the bias as f32 whatever the activations' dtype
        cuda::require_f32(s2, "bias_gelu bias")?;
        let x = cuda::input(s1, l1, what)?;
        let b = cuda::input(s2, l2, what)?;
        let n = l1.shape().elem_count();
        let y = super::gelu::gpu_bias_forward(&gpu, dt, &x, &b, n, l2.shape().elem_count())?;
        Ok((y.into_storage(gpu.dev)?, l1.shape().clone()))
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "bias_gelu")?;
        let b = slice(s2, l2, "bias_gelu")?;
        let c = b.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ROW_CHUNK * c)
            .zip(x.par_chunks(ROW_CHUNK * c))
            .for_each(|(y, x)| {
                for (yr, xr) in y.chunks_mut(c).zip(x.chunks(c)) {
                    bias_gelu_row(yr, xr, b);
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let c = b.elem_count();
        let n = x.elem_count();
        if x.device().is_cuda() {
            let gb = Tensor::zeros(c, DType::F32, x.device())?;
            let op = BiasGeluBwdCuda { gb: gb.clone() };
            let gx = x.apply_op3_no_bwd(b, &grad.contiguous()?, &op)?;
            return Ok((Some(gx), Some(gb.reshape(b.shape())?)));
        }
        let packed = x.apply_op3_no_bwd(b, &grad.contiguous()?, &BiasGeluBwd)?;
        let (gx, small) = super::split_packed(&packed, n, &[c])?;
        Ok((
            Some(gx.reshape(x.shape())?),
            Some(small[0].reshape(b.shape())?),
        ))
    }
}

impl CustomOp3 for BiasGeluBwd {
    fn name(&self) -> &'static str {
        "bias-gelu-bwd"
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
        let x = slice(s1, l1, "bias_gelu backward")?;
        let b = slice(s2, l2, "bias_gelu backward")?;
        let g = slice(s3, l3, "bias_gelu backward")?;
        let c = b.len();
        if g.len() != x.len() || c == 0 || x.len() % c != 0 {
            candle_core::bail!("bias_gelu backward: shape mismatch")
        }
        let mut out = vec![0f32; x.len() + c];
        let (gx, gb_out) = out.split_at_mut(x.len());
        let (gb, _) = rows_with_column_sums(c, gx, |r, o, s1, _| {
            let (xr, gr) = (&x[r * c..(r + 1) * c], &g[r * c..(r + 1) * c]);
            bias_gelu_grad_row(o, xr, gr, b);
            for (s, &v) in s1.iter_mut().zip(o.iter()) {
                *s += v;
            }
        });
        gb_out.copy_from_slice(&gb);
        Ok((CpuStorage::F32(out), Shape::from(x.len() + c)))
    }
}

impl CustomOp3 for BiasGeluBwdCuda {
    fn name(&self) -> &'static str {
        "bias-gelu-bwd-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("bias-gelu-bwd-cuda: CUDA only (the CPU runs bias-gelu-bwd)")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let what = "bias_gelu backward";
        let (gpu, dt) = cuda::launcher(&[s1, s3], what)?;
        cuda::require_f32(s2, "bias_gelu backward bias")?;
        let (x, b, g) = (
            cuda::input(s1, l1, what)?,
            cuda::input(s2, l2, what)?,
            cuda::input(s3, l3, what)?,
        );
        if l1.shape() != l3.shape() {
            candle_core::bail!("bias_gelu backward: gradient size mismatch")
        }
        let gb = cuda::TensorBuf::of(&self.gb, what)?;
        let n = l1.shape().elem_count();
        let c = l2.shape().elem_count();
        let gx = super::gelu::gpu_bias_backward(&gpu, dt, &x, &b, &g, n, c, &gb.buf)?;
        Ok((gx.into_storage(gpu.dev)?, l1.shape().clone()))
    }
}

/// Exact GELU of `x + b`, `b` `(C)` broadcast over the last dimension of `x` `(..., C)`.
pub fn bias_gelu(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    super::require_non_empty("bias_gelu", x)?;
    let c = b.elem_count();
    if x.dims().last() != Some(&c) {
        candle_core::bail!("bias_gelu: last dim of {:?} is not {c}", x.dims())
    }
    if (fast(x) || gpu::runs_on_gpu(x)) && b.dtype() == DType::F32 {
        return x.contiguous()?.apply_op2(&b.contiguous()?, BiasGelu);
    }
    bias_gelu_composed(x, b)
}

fn bias_gelu_composed(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    super::add_param(x, b)?.gelu_erf()
}

struct BiasScale;
/// Backward of [`BiasScale`]: `(x, [b | gamma], g)` -> packed `[gx | gb | ggamma]`.
struct BiasScaleBwd;

impl CustomOp2 for BiasScale {
    fn name(&self) -> &'static str {
        "bias-scale"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "bias_scale")?;
        let p = slice(s2, l2, "bias_scale")?;
        let c = p.len() / 2;
        let (b, gamma) = p.split_at(c);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ROW_CHUNK * c)
            .zip(x.par_chunks(ROW_CHUNK * c))
            .for_each(|(y, x)| {
                for (yr, xr) in y.chunks_mut(c).zip(x.chunks(c)) {
                    for (((o, &v), &bv), &gv) in yr.iter_mut().zip(xr).zip(b).zip(gamma) {
                        *o = (v + bv) * gv;
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = x.elem_count();
        let c2 = p.elem_count();
        let packed = x.apply_op3_no_bwd(p, &grad.contiguous()?, &BiasScaleBwd)?;
        let (gx, mut small) = super::split_packed(&packed, n, &[c2])?;
        Ok((Some(gx.reshape(x.shape())?), small.pop()))
    }
}

impl CustomOp3 for BiasScaleBwd {
    fn name(&self) -> &'static str {
        "bias-scale-bwd"
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
        let x = slice(s1, l1, "bias_scale backward")?;
        let p = slice(s2, l2, "bias_scale backward")?;
        let g = slice(s3, l3, "bias_scale backward")?;
        let c = p.len() / 2;
        if g.len() != x.len() || c == 0 || x.len() % c != 0 {
            candle_core::bail!("bias_scale backward: shape mismatch")
        }
        let (b, gamma) = p.split_at(c);
        let mut out = vec![0f32; x.len() + 2 * c];
        let (gx, rest) = out.split_at_mut(x.len());
        // gx = g * gamma; gb = sum gx; ggamma = sum g * (x + b)
        let (gb, gg) = rows_with_column_sums(c, gx, |r, o, s1, s2| {
            let (xr, gr) = (&x[r * c..(r + 1) * c], &g[r * c..(r + 1) * c]);
            for j in 0..c {
                let v = gr[j] * gamma[j];
                o[j] = v;
                s1[j] += v;
                s2[j] += gr[j] * (xr[j] + b[j]);
            }
        });
        rest[..c].copy_from_slice(&gb);
        rest[c..].copy_from_slice(&gg);
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * c)))
    }
}

/// `(x + b) * gamma` with `b`, `gamma` `(C)` broadcast over the last dimension of `x`.
pub fn bias_scale(x: &Tensor, b: &Tensor, gamma: &Tensor) -> Result<Tensor> {
    super::require_non_empty("bias_scale", x)?;
    let c = b.elem_count();
    if x.dims().last() != Some(&c) || gamma.elem_count() != c {
        candle_core::bail!("bias_scale: last dim of {:?} is not {c}", x.dims())
    }
    if fast(x) && b.dtype() == DType::F32 && gamma.dtype() == DType::F32 {
        // one parameter tensor: its gradient is split back by `cat`'s backward
        let p = Tensor::cat(&[&b.flatten_all()?, &gamma.flatten_all()?], 0)?;
        return x.contiguous()?.apply_op2(&p, BiasScale);
    }
    bias_scale_composed(x, b, gamma)
}

fn bias_scale_composed(x: &Tensor, b: &Tensor, gamma: &Tensor) -> Result<Tensor> {
    super::mul_param(&super::add_param(x, b)?, gamma)
}

/// Copies `(N, C, H, W)` into `(N, H, W, C)` (or back with `to_nhwc == false`), one image per
/// task.
pub(super) fn transpose(
    src: &[f32],
    dst: &mut [f32],
    n: usize,
    c: usize,
    hw: usize,
    to_nhwc: bool,
) {
    let per = (c * hw).max(1);
    dst.par_chunks_mut(per)
        .zip(src.par_chunks(per))
        .for_each(|(d, s)| transpose_images(s, d, c, hw, to_nhwc));
    debug_assert_eq!(src.len(), n * c * hw);
}

/// [`transpose`] on the calling thread: each `(C, HW)` image of `src` to `(HW, C)` in `dst`
/// (or back), in square tiles.
pub(super) fn transpose_images(src: &[f32], dst: &mut [f32], c: usize, hw: usize, to_nhwc: bool) {
    let per = (c * hw).max(1);
    // rows x cols source matrix: (C, HW) for to_nhwc, (HW, C) otherwise
    let (rows, cols) = if to_nhwc { (c, hw) } else { (hw, c) };
    #[cfg(target_arch = "x86_64")]
    let avx = rows >= 8 && cols >= 8 && is_x86_feature_detected!("avx");
    for (d, s) in dst.chunks_mut(per).zip(src.chunks(per)) {
        #[cfg(target_arch = "x86_64")]
        if avx {
            // SAFETY: AVX is present (checked above); the kernel reads and writes only inside
            // the rows x cols matrices `s` and `d` (both `per` long, asserted there).
            unsafe { transpose_matrix_avx(s, d, rows, cols) };
            continue;
        }
        transpose_matrix(s, d, rows, cols);
    }
}

/// `d` (cols x rows) = transpose of `s` (rows x cols), in square tiles.
fn transpose_matrix(s: &[f32], d: &mut [f32], rows: usize, cols: usize) {
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for k in c0..(c0 + TILE).min(cols) {
                    d[k * rows + r] = s[r * cols + k];
                }
            }
        }
    }
}

/// [`transpose_matrix`] with 8x8 blocks transposed in AVX registers inside each tile; the
/// edges (rows or columns past the last multiple of 8) element by element. The same values
/// land in the same places: a permutation, so results do not change by a bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_matrix_avx(s: &[f32], d: &mut [f32], rows: usize, cols: usize) {
    use std::arch::x86_64::*;
    assert!(s.len() >= rows * cols && d.len() >= rows * cols);
    let (rows8, cols8) = (rows / 8 * 8, cols / 8 * 8);
    let (sp, dp) = (s.as_ptr(), d.as_mut_ptr());
    for r0 in (0..rows8).step_by(TILE) {
        for c0 in (0..cols8).step_by(TILE) {
            for r in (r0..(r0 + TILE).min(rows8)).step_by(8) {
                for k in (c0..(c0 + TILE).min(cols8)).step_by(8) {
                    // rows r..r+8, columns k..k+8 of s: in bounds as r + 8 <= rows8 <= rows
                    // and k + 8 <= cols8 <= cols
                    let ld = |i: usize| _mm256_loadu_ps(sp.add((r + i) * cols + k));
                    let (a0, a1, a2, a3) = (ld(0), ld(1), ld(2), ld(3));
                    let (a4, a5, a6, a7) = (ld(4), ld(5), ld(6), ld(7));
                    let (t0, t1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
                    let (t2, t3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
                    let (t4, t5) = (_mm256_unpacklo_ps(a4, a5), _mm256_unpackhi_ps(a4, a5));
                    let (t6, t7) = (_mm256_unpacklo_ps(a6, a7), _mm256_unpackhi_ps(a6, a7));
                    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                    // column k + j of the block is row j of the result, at d[(k + j) * rows + r]
                    let st = |j: usize, v: __m256| _mm256_storeu_ps(dp.add((k + j) * rows + r), v);
                    st(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
                    st(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
                    st(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
                    st(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
                    st(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
                    st(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
                    st(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
                    st(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
                }
            }
        }
    }
    // edges: the last rows (all columns), then the last columns of the other rows
    for r in rows8..rows {
        for k in 0..cols {
            d[k * rows + r] = s[r * cols + k];
        }
    }
    for r in 0..rows8 {
        for k in cols8..cols {
            d[k * rows + r] = s[r * cols + k];
        }
    }
}

struct NchwBiasToNhwc;
/// Backward of [`NchwBiasToNhwc`]: `g` NHWC -> packed `[gx NCHW | gb]`.
struct NchwBiasToNhwcBwd {
    n: usize,
    c: usize,
    hw: usize,
}

impl CustomOp2 for NchwBiasToNhwc {
    fn name(&self) -> &'static str {
        "nchw-bias-to-nhwc"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "nchw_bias_to_nhwc")?;
        let b = slice(s2, l2, "nchw_bias_to_nhwc")?;
        let (n, c, h, w) = l1.shape().dims4()?;
        let mut y = vec![0f32; x.len()];
        transpose(x, &mut y, n, c, h * w, true);
        y.par_chunks_mut(ROW_CHUNK * c).for_each(|y| {
            for row in y.chunks_mut(c) {
                for (o, &bv) in row.iter_mut().zip(b) {
                    *o += bv;
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, h, w, c))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let packed = grad
            .contiguous()?
            .apply_op1_no_bwd(&NchwBiasToNhwcBwd { n, c, hw: h * w })?;
        let (gx, small) = super::split_packed(&packed, n * c * h * w, &[c])?;
        Ok((
            Some(gx.reshape((n, c, h, w))?),
            Some(small[0].reshape(b.shape())?),
        ))
    }
}

impl CustomOp1 for NchwBiasToNhwcBwd {
    fn name(&self) -> &'static str {
        "nchw-bias-to-nhwc-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = slice(s, l, "nchw_bias_to_nhwc backward")?;
        let (n, c, hw) = (self.n, self.c, self.hw);
        if g.len() != n * c * hw {
            candle_core::bail!("nchw_bias_to_nhwc backward: shape mismatch")
        }
        let mut out = vec![0f32; g.len() + c];
        let (gx, gb_out) = out.split_at_mut(g.len());
        transpose(g, gx, n, c, hw, false);
        // bias gradient: per channel, a contiguous run of HW values per image
        let gb = channel_sums(gx, n, c, hw);
        gb_out.copy_from_slice(&gb);
        Ok((CpuStorage::F32(out), Shape::from(g.len() + c)))
    }
}

/// `(x + b).permute(0, 2, 3, 1)` as a contiguous `(N, H, W, C)` tensor, `x` `(N, C, H, W)`.
pub fn nchw_bias_to_nhwc(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    super::require_non_empty("nchw_bias_to_nhwc", x)?;
    let c = x.dim(1)?;
    if b.elem_count() != c {
        candle_core::bail!(
            "nchw_bias_to_nhwc: bias of {} for {c} channels",
            b.elem_count()
        )
    }
    if fast(x) && b.dtype() == DType::F32 {
        return x.contiguous()?.apply_op2(&b.contiguous()?, NchwBiasToNhwc);
    }
    nchw_bias_to_nhwc_composed(x, b)
}

fn nchw_bias_to_nhwc_composed(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    super::add_param(x, &b.reshape((1, c, 1, 1))?)?
        .permute((0, 2, 3, 1))?
        .contiguous()
}

struct AddNhwcToNchw;
struct NhwcToNchw {
    to_nhwc: bool,
}

impl CustomOp2 for AddNhwcToNchw {
    fn name(&self) -> &'static str {
        "add-nhwc-to-nchw"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "add_nhwc_to_nchw")?;
        let y = slice(s2, l2, "add_nhwc_to_nchw")?;
        let (n, c, h, w) = l1.shape().dims4()?;
        let mut out = vec![0f32; x.len()];
        transpose(y, &mut out, n, c, h * w, false);
        out.par_chunks_mut(16384)
            .zip(x.par_chunks(16384))
            .for_each(|(o, x)| {
                for (o, &v) in o.iter_mut().zip(x) {
                    *o += v;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let gy = g.apply_op1_no_bwd(&NhwcToNchw { to_nhwc: true })?;
        Ok((Some(g), Some(gy)))
    }
}

impl CustomOp1 for NhwcToNchw {
    fn name(&self) -> &'static str {
        "nchw-nhwc-transpose"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "transpose")?;
        let (n, a, b, d) = l.shape().dims4()?;
        let mut y = vec![0f32; x.len()];
        let shape = if self.to_nhwc {
            // (N, C, H, W) -> (N, H, W, C)
            transpose(x, &mut y, n, a, b * d, true);
            Shape::from((n, b, d, a))
        } else {
            // (N, H, W, C) -> (N, C, H, W)
            transpose(x, &mut y, n, d, a * b, false);
            Shape::from((n, d, a, b))
        };
        Ok((CpuStorage::F32(y), shape))
    }
}

/// `x + y.permute(0, 3, 1, 2)`: `x` `(N, C, H, W)`, `y` `(N, H, W, C)`, out NCHW contiguous.
pub fn add_nhwc_to_nchw(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    super::require_non_empty("add_nhwc_to_nchw", x)?;
    let (n, c, h, w) = x.dims4()?;
    if y.dims() != [n, h, w, c] {
        candle_core::bail!("add_nhwc_to_nchw: {:?} and {:?}", x.dims(), y.dims())
    }
    if fast(x) && y.dtype() == DType::F32 {
        return x.contiguous()?.apply_op2(&y.contiguous()?, AddNhwcToNchw);
    }
    add_nhwc_to_nchw_composed(x, y)
}

fn add_nhwc_to_nchw_composed(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    x + y.permute((0, 3, 1, 2))?
}

/// `(x NCHW, z NHWC, [b | gamma | mask]) -> x + transpose((z + b) * gamma [* mask])`.
struct ScaleAddToNchw;
/// Backward of [`ScaleAddToNchw`]: `(z, [b | gamma | mask], g NCHW)` -> packed
/// `[gz NHWC | gb | ggamma | 0 (mask)]`.
struct ScaleAddToNchwBwd;

impl CustomOp3 for ScaleAddToNchw {
    fn name(&self) -> &'static str {
        "scale-add-to-nchw"
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
        let x = slice(s1, l1, "scale_add_to_nchw")?;
        let z = slice(s2, l2, "scale_add_to_nchw")?;
        let p = slice(s3, l3, "scale_add_to_nchw")?;
        let (n, c, h, w) = l1.shape().dims4()?;
        let hw = h * w;
        if z.len() != x.len() || (p.len() != 2 * c && p.len() != 2 * c + n) {
            candle_core::bail!("scale_add_to_nchw: shape mismatch")
        }
        let (b, gamma, mask) = (&p[..c], &p[c..2 * c], &p[2 * c..]);
        let mut out = vec![0f32; x.len()];
        let per = (c * hw).max(1);
        out.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .zip(z.par_chunks(per))
            .enumerate()
            .for_each(|(i, ((o, xi), zi))| {
                // (z + b) * gamma [* mask], channels-last, then transposed into the output
                let mut t = vec![0f32; zi.len()];
                for (tr, zr) in t.chunks_mut(c).zip(zi.chunks(c)) {
                    for (((t, &v), &bv), &gv) in tr.iter_mut().zip(zr).zip(b).zip(gamma) {
                        *t = (v + bv) * gv;
                    }
                }
                if let Some(&m) = mask.get(i) {
                    t.iter_mut().for_each(|v| *v *= m);
                }
                transpose_images(&t, o, c, hw, false);
                o.iter_mut().zip(xi).for_each(|(o, &v)| *o += v);
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        z: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let n = z.elem_count();
        let packed = z.apply_op3_no_bwd(p, &g, &ScaleAddToNchwBwd)?;
        let (gz, mut small) = super::split_packed(&packed, n, &[p.elem_count()])?;
        let gx = x.track_op().then_some(g);
        Ok((gx, Some(gz.reshape(z.shape())?), small.pop()))
    }
}

impl CustomOp3 for ScaleAddToNchwBwd {
    fn name(&self) -> &'static str {
        "scale-add-to-nchw-bwd"
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
        let z = slice(s1, l1, "scale_add_to_nchw backward")?;
        let p = slice(s2, l2, "scale_add_to_nchw backward")?;
        let g = slice(s3, l3, "scale_add_to_nchw backward")?;
        let (n, h, w, c) = l1.shape().dims4()?;
        let hw = h * w;
        if g.len() != z.len() || p.len() < 2 * c {
            candle_core::bail!("scale_add_to_nchw backward: shape mismatch")
        }
        let (b, gamma, mask) = (&p[..c], &p[c..2 * c], &p[2 * c..]);
        let mut out = vec![0f32; z.len() + p.len()];
        let (gz, rest) = out.split_at_mut(z.len());
        // the residual's gradient channels-last (through the drop-path mask), then in place:
        // gz = gs * gamma; gb = sum gz; ggamma = sum gs * (z + b)
        transpose(g, gz, n, c, hw, true);
        let rows_per_image = hw.max(1);
        let (gb, gg) = rows_with_column_sums(c, gz, |r, o, s1, s2| {
            let zr = &z[r * c..(r + 1) * c];
            let m = mask.get(r / rows_per_image).copied();
            for j in 0..c {
                let gs = match m {
                    Some(m) => o[j] * m,
                    None => o[j],
                };
                let v = gs * gamma[j];
                o[j] = v;
                s1[j] += v;
                s2[j] += gs * (zr[j] + b[j]);
            }
        });
        rest[..c].copy_from_slice(&gb);
        rest[c..2 * c].copy_from_slice(&gg);
        Ok((CpuStorage::F32(out), Shape::from(z.len() + p.len())))
    }
}

/// The ConvNeXt block tail `x + drop_path((z + b) * gamma)`: `x` `(N, C, H, W)`, `z`
/// `(N, H, W, C)` (fc2's output before its bias), `b` and `gamma` `(C)`, `mask` the per-image
/// drop-path factors `(N)` (0 or `1 / keep`; `None`: no drop path); out NCHW contiguous.
/// CPU f32 runs one fused op (the same values, bit for bit, as [`bias_scale`], the mask
/// product and [`add_nhwc_to_nchw`]); elsewhere those ops.
pub fn scale_add_to_nchw(
    x: &Tensor,
    z: &Tensor,
    b: &Tensor,
    gamma: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    super::require_non_empty("scale_add_to_nchw", x)?;
    let (n, c, h, w) = x.dims4()?;
    if z.dims() != [n, h, w, c] || b.elem_count() != c || gamma.elem_count() != c {
        candle_core::bail!(
            "scale_add_to_nchw: x {:?}, z {:?}, bias {:?}, gamma {:?}",
            x.dims(),
            z.dims(),
            b.dims(),
            gamma.dims()
        )
    }
    if let Some(m) = mask {
        if m.elem_count() != n {
            candle_core::bail!("scale_add_to_nchw: mask {:?} for {n} images", m.dims())
        }
    }
    let all_f32 = [z, b, gamma]
        .into_iter()
        .chain(mask)
        .all(|t| t.dtype() == DType::F32);
    if fast(x) && all_f32 {
        let mut parts = vec![b.flatten_all()?, gamma.flatten_all()?];
        if let Some(m) = mask {
            parts.push(m.flatten_all()?.detach());
        }
        // one parameter tensor: `cat`'s backward splits its gradient back
        let p = Tensor::cat(&parts, 0)?;
        return x
            .contiguous()?
            .apply_op3(&z.contiguous()?, &p, ScaleAddToNchw);
    }
    scale_add_to_nchw_composed(x, z, b, gamma, mask)
}

fn scale_add_to_nchw_composed(
    x: &Tensor,
    z: &Tensor,
    b: &Tensor,
    gamma: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let y = bias_scale(z, b, gamma)?;
    let y = match mask {
        Some(m) => {
            y.broadcast_mul(&m.to_dtype(y.dtype())?.reshape((m.elem_count(), 1, 1, 1))?)?
        }
        None => y,
    };
    add_nhwc_to_nchw(x, &y)
}

struct Layout4 {
    to_nhwc: bool,
}

impl CustomOp1 for Layout4 {
    fn name(&self) -> &'static str {
        "nchw-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        NhwcToNchw {
            to_nhwc: self.to_nhwc,
        }
        .cpu_fwd(s, l)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&NhwcToNchw {
            to_nhwc: !self.to_nhwc,
        })?))
    }
}

/// `(N, C, H, W)` -> contiguous `(N, H, W, C)`, differentiable.
pub fn to_nhwc(x: &Tensor) -> Result<Tensor> {
    super::require_non_empty("to_nhwc", x)?;
    if fast(x) {
        return x.contiguous()?.apply_op1(Layout4 { to_nhwc: true });
    }
    x.permute((0, 2, 3, 1))?.contiguous()
}

/// `(N, H, W, C)` -> contiguous `(N, C, H, W)`, differentiable.
pub fn to_nchw(x: &Tensor) -> Result<Tensor> {
    super::require_non_empty("to_nchw", x)?;
    if fast(x) {
        return x.contiguous()?.apply_op1(Layout4 { to_nhwc: false });
    }
    x.permute((0, 3, 1, 2))?.contiguous()
}

struct BiasNchw;
/// Backward of [`BiasNchw`] for the bias: per-channel sums of `g` `(N, C, H, W)`.
struct ChannelSums {
    c: usize,
    hw: usize,
}

impl CustomOp2 for BiasNchw {
    fn name(&self) -> &'static str {
        "bias-nchw"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "bias_nchw")?;
        let b = slice(s2, l2, "bias_nchw")?;
        let (_, c, h, w) = l1.shape().dims4()?;
        let hw = (h * w).max(1);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(|(i, (y, x))| {
                let bv = b[i % c];
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = v + bv;
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, c, h, w) = x.dims4()?;
        let g = grad.contiguous()?;
        let gb = g.apply_op1_no_bwd(&ChannelSums { c, hw: h * w })?;
        Ok((Some(g), Some(gb)))
    }
}

impl CustomOp1 for ChannelSums {
    fn name(&self) -> &'static str {
        "channel-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = slice(s, l, "bias_nchw backward")?;
        let (c, hw) = (self.c, self.hw.max(1));
        let sums = channel_sums(g, g.len() / (c * hw).max(1), c, hw);
        Ok((CpuStorage::F32(sums), Shape::from(c)))
    }
}

/// `x + b` with `b` `(C)` broadcast over `(N, C, H, W)`: a conv's bias.
pub fn bias_nchw(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    super::require_non_empty("bias_nchw", x)?;
    let c = x.dim(1)?;
    if b.elem_count() != c {
        candle_core::bail!("bias_nchw: bias of {} for {c} channels", b.elem_count())
    }
    if fast(x) && b.dtype() == DType::F32 && x.rank() == 4 {
        return x.contiguous()?.apply_op2(&b.flatten_all()?, BiasNchw);
    }
    bias_nchw_composed(x, b)
}

fn bias_nchw_composed(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    super::add_param(x, &b.reshape((1, c, 1, 1))?)
}

/// Per-channel sums of NCHW `g` (`n` images of `c` planes of `hw` values): one partial per
/// image, added in image order (the same sums whatever the threads do).
fn channel_sums(g: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    super::sum_in_order(n, c, |b| {
        g[b * c * hw..(b + 1) * c * hw]
            .chunks_exact(hw.max(1))
            .map(|run| run.iter().sum::<f32>())
            .collect()
    })
}

#[cfg(test)]
mod tests {

    /// The AVX transpose puts every value where the scalar one does, for shapes with and
    /// without edges past a multiple of 8 and across tile borders, both directions.
    #[test]
    fn transposes_agree_with_the_scalar_one_bit_for_bit() {
        for (n, c, hw) in [
            (2, 8, 8),
            (3, 13, 37),
            (1, 64, 49),
            (2, 96, 100),
            (1, 7, 300),
            (1, 300, 9),
        ] {
            let src: Vec<f32> = (0..n * c * hw).map(|i| i as f32 * 0.5 - 3.0).collect();
            for to_nhwc in [true, false] {
                let mut fast = vec![f32::NAN; src.len()];
                transpose_images(&src, &mut fast, c, hw, to_nhwc);
                let (rows, cols) = if to_nhwc { (c, hw) } else { (hw, c) };
                let mut slow = vec![f32::NAN; src.len()];
                for (d, s) in slow.chunks_mut(c * hw).zip(src.chunks(c * hw)) {
                    transpose_matrix(s, d, rows, cols);
                }
                let same = fast
                    .iter()
                    .zip(&slow)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "n {n} c {c} hw {hw} to_nhwc {to_nhwc}");
                // and it is the transpose
                let (r, k) = (rows - 1, cols / 2);
                assert_eq!(
                    slow[(n - 1) * c * hw + k * rows + r],
                    src[(n - 1) * c * hw + r * cols + k]
                );
            }
        }
    }

    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Compares the fused op `f` with the composed ops `g` on the same variables: outputs and
    /// the gradients of `sum(out * r)` with respect to every variable.
    fn check(
        vars: &[&Var],
        f: impl Fn() -> Result<Tensor>,
        g: impl Fn() -> Result<Tensor>,
        tol: f32,
    ) -> Result<()> {
        let (a, b) = (f()?, g()?);
        assert_eq!(a.dims(), b.dims());
        assert!(a.is_contiguous(), "fused output must be contiguous");
        let d = max_diff(&a, &b);
        assert!(d < tol, "forward differs by {d}");
        let r = crate::engine::init::TensorRng::new(99).randn(0f32, 1.0, a.shape(), a.device())?;
        let ga = (a * &r)?.sum_all()?.backward()?;
        let gb = (b * &r)?.sum_all()?.backward()?;
        for (i, v) in vars.iter().enumerate() {
            let x = ga.get(v).expect("fused gradient");
            let y = gb.get(v).expect("composed gradient");
            assert_eq!(x.dims(), v.dims());
            let d = max_diff(x, y);
            let scale = y.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
            assert!(
                d < tol * scale,
                "gradient {i} differs by {d} (scale {scale})"
            );
        }
        Ok(())
    }

    #[test]
    fn bias_gelu_matches_composed_ops() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(14);
        let dev = Device::Cpu;
        for (shape, c) in [
            ((3usize, 5usize, 7usize), 7usize),
            ((2, 33, 13), 13),
            ((1, 1, 1), 1),
        ] {
            let x = rng.var(0f32, 2.0, shape, &dev)?;
            let b = rng.var(0f32, 1.0, c, &dev)?;
            check(
                &[&x, &b],
                || bias_gelu(&x, &b),
                || bias_gelu_composed(&x, &b),
                1e-5,
            )?;
        }
        Ok(())
    }

    #[test]
    fn bias_scale_matches_composed_ops() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(15);
        let dev = Device::Cpu;
        for (rows, c) in [(5usize, 3usize), (130, 17), (1, 1)] {
            let x = rng.var(0f32, 2.0, (rows, c), &dev)?;
            let b = rng.var(0f32, 1.0, c, &dev)?;
            let g = rng.var(0f32, 1.0, c, &dev)?;
            check(
                &[&x, &b, &g],
                || bias_scale(&x, &b, &g),
                || bias_scale_composed(&x, &b, &g),
                1e-4,
            )?;
        }
        Ok(())
    }

    /// The fused tail gives bit for bit the values and gradients of the ops it replaces (so
    /// training results do not change), with and without a drop-path mask.
    #[test]
    fn scale_add_to_nchw_is_the_composed_tail_bit_for_bit() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(17);
        let dev = Device::Cpu;
        for (n, c, h, w) in [
            (2usize, 3usize, 5usize, 7usize),
            (3, 40, 9, 3),
            (1, 1, 1, 1),
        ] {
            let x = rng.var(0f32, 1.0, (n, c, h, w), &dev)?;
            let z = rng.var(0f32, 1.0, (n, h, w, c), &dev)?;
            let b = rng.var(0f32, 1.0, c, &dev)?;
            let g = rng.var(0f32, 1.0, c, &dev)?;
            let factors: Vec<f32> = (0..n).map(|i| [0.0, 1.25][i % 2]).collect();
            let mask = Tensor::from_vec(factors, (n, 1, 1, 1), &dev)?;
            for m in [None, Some(&mask)] {
                let fused = scale_add_to_nchw(&x, &z, &b, &g, m)?;
                let y = bias_scale(&z, &b, &g)?;
                let y = match m {
                    Some(m) => y.broadcast_mul(m)?,
                    None => y,
                };
                let composed = add_nhwc_to_nchw(&x, &y)?;
                let what = format!("{n}x{c}x{h}x{w}, mask {}", m.is_some());
                crate::kernels::assert_same_bits(&fused, &composed, &[&x, &z, &b, &g], &what)?;
            }
        }
        Ok(())
    }

    #[test]
    fn layout_changes_match_permutes() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(16);
        let dev = Device::Cpu;
        for (n, c, h, w) in [
            (2usize, 3usize, 5usize, 7usize),
            (1, 40, 9, 3),
            (3, 1, 1, 1),
            (2, 33, 35, 2),
        ] {
            let x = rng.var(0f32, 1.0, (n, c, h, w), &dev)?;
            let b = rng.var(0f32, 1.0, c, &dev)?;
            check(
                &[&x, &b],
                || nchw_bias_to_nhwc(&x, &b),
                || nchw_bias_to_nhwc_composed(&x, &b),
                1e-5,
            )?;
            let y = rng.var(0f32, 1.0, (n, h, w, c), &dev)?;
            check(
                &[&x, &y],
                || add_nhwc_to_nchw(&x, &y),
                || add_nhwc_to_nchw_composed(&x, &y),
                1e-5,
            )?;
        }
        Ok(())
    }
}
