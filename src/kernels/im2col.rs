//! Dense 2-D convolution (groups 1) as im2col + matrix product, run in chunks of a few images.
//! Each rayon task takes a contiguous range of images and works through it a chunk at a time:
//! the chunk's images are copied channels-last and its column matrix (about 256 rows, columns
//! ordered (ky, kx, c) so that each kernel row's window is one contiguous copy) is built in a
//! scratch buffer that stays in cache, multiplied at once with a single-threaded GEMM against
//! the weight permuted to the same order, and the product is written out as NCHW. The
//! backward rebuilds each chunk's columns instead of keeping the whole batch's (a 38 MB matrix
//! for a ResNet-18 layer-1 conv at 64 px, batch 64: past glibc's mmap threshold, so each step
//! faulted and zeroed it afresh), accumulates the weight gradient per task (the K split by
//! hand that `gemm`'s own threading lacks) and scatters the input gradient with col2im.
//!
//! On CUDA ([`conv2d_im2col`] routes there): the `im2col` kernel of `kernels/cuda/im2col.cu`
//! lays out the whole batch's windows, a cuBLAS matrix product with the weight does the rest,
//! and the backward is the matrix products' and the `col2im` kernel (Candle's own CUDA conv
//! backward runs a naive transposed-convolution kernel for the input gradient). With the
//! `cudnn` feature, cuDNN runs the forward and both gradients instead (`gpu::cudnn`).

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

use super::gpu::{self, Arg, Buffer, Grid, Launcher};
#[cfg(feature = "cuda")]
use {super::gpu::cuda, candle_core::CudaStorage};

use super::channels_last::{transpose, transpose_images};
use super::{sgemm, Mat};

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

    /// For output column `ox`: the first input column of its window (may be negative) and the
    /// range of kernel columns that fall inside the image.
    #[inline(always)]
    fn window(&self, ox: usize) -> (isize, usize, usize) {
        let start = (ox * self.s) as isize - self.p as isize;
        let lo = (-start).clamp(0, self.k as isize) as usize;
        let hi = (self.w as isize - start).clamp(lo as isize, self.k as isize) as usize;
        (start, lo, hi)
    }

    #[inline(always)]
    fn iy(&self, oy: usize, ky: usize) -> Option<usize> {
        let v = (oy * self.s + ky) as isize - self.p as isize;
        (v >= 0 && (v as usize) < self.h).then_some(v as usize)
    }
}

/// Rows of the column matrix a chunk aims for: enough for an efficient GEMM, small enough that
/// the chunk's columns (rows x C*K*K floats) stay in the core's L2 cache at ResNet sizes.
const TARGET_ROWS: usize = 256;

/// How a batch is cut: `tasks` contiguous ranges of `per_task` images (the last may be
/// shorter), each worked through `per_chunk` images at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plan {
    per_task: usize,
    per_chunk: usize,
}

impl Plan {
    fn new(n: usize, rows_per_image: usize, threads: usize, target_rows: usize) -> Self {
        let per_task = n.div_ceil(threads.clamp(1, n.max(1))).max(1);
        let per_chunk = target_rows
            .div_ceil(rows_per_image.max(1))
            .clamp(1, per_task);
        Plan {
            per_task,
            per_chunk,
        }
    }
}

/// Writes the column rows of `nb` channels-last images `xt` (`H*W*C` each) into `cols`
/// (`nb*OH*OW` rows of `K*K*C`, rows ordered (image, oy, ox), columns (ky, kx, c)). Within a
/// row each kernel row's window is one contiguous run of `C`-channel pixels; every cell is
/// written, padding as zero, so the buffer can be reused.
fn im2col_chunk(g: &Geom, xt: &[f32], nb: usize, cols: &mut [f32]) {
    let (c, k, rl) = (g.c, g.k, g.row_len());
    let img = g.h * g.w * c;
    for (r, row) in cols[..nb * g.oh * g.ow * rl].chunks_mut(rl).enumerate() {
        let (b, oy, ox) = (r / (g.oh * g.ow), r / g.ow % g.oh, r % g.ow);
        let (start, lo, hi) = g.window(ox);
        for (ky, seg) in row.chunks_mut(k * c).enumerate() {
            let Some(iy) = g.iy(oy, ky) else {
                seg.fill(0.0);
                continue;
            };
            seg[..lo * c].fill(0.0);
            if hi > lo {
                let from = b * img + (iy * g.w) * c + (start + lo as isize) as usize * c;
                seg[lo * c..hi * c].copy_from_slice(&xt[from..from + (hi - lo) * c]);
            }
            seg[hi * c..].fill(0.0);
        }
    }
}

/// Adds the column rows `cols` of `nb` images back onto their input positions in the
/// channels-last `gxt` (`nb` images of `H*W*C`, zeroed by the caller).
fn col2im_chunk(g: &Geom, cols: &[f32], nb: usize, gxt: &mut [f32]) {
    let (c, k, rl) = (g.c, g.k, g.row_len());
    let img = g.h * g.w * c;
    for (r, row) in cols[..nb * g.oh * g.ow * rl].chunks(rl).enumerate() {
        let (b, oy, ox) = (r / (g.oh * g.ow), r / g.ow % g.oh, r % g.ow);
        let (start, lo, hi) = g.window(ox);
        for (ky, seg) in row.chunks(k * c).enumerate() {
            let Some(iy) = g.iy(oy, ky) else { continue };
            if hi == lo {
                continue;
            }
            let to = b * img + (iy * g.w) * c + (start + lo as isize) as usize * c;
            for (d, &v) in gxt[to..to + (hi - lo) * c]
                .iter_mut()
                .zip(&seg[lo * c..hi * c])
            {
                *d += v;
            }
        }
    }
}

/// Weight `(O, C, K, K)` -> `(O, K, K, C)`, the column order of [`im2col_chunk`].
fn permute_weight(g: &Geom, o: usize, w: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    transpose(w, &mut out, o, g.c, g.k * g.k, true);
    out
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, "conv2d-im2col")
}

/// The forward op on (input, weight); its backward is [`ConvBackward`].
struct ConvForward {
    g: Geom,
    o: usize,
    target_rows: usize,
}

impl CustomOp2 for ConvForward {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, o) = (self.g, self.o);
        let (x, w) = (slice(s1, l1)?, slice(s2, l2)?);
        let (hw, rl) = (g.oh * g.ow, g.row_len());
        let img = g.c * g.h * g.w;
        let plan = Plan::new(g.n, hw, rayon::current_num_threads(), self.target_rows);
        let w = permute_weight(&g, o, w);
        let mut out = vec![0f32; g.n * o * hw];
        out.par_chunks_mut((plan.per_task * o * hw).max(1))
            .enumerate()
            .for_each(|(t, task_out)| {
                let mut xt = vec![0f32; plan.per_chunk * img];
                let mut cols = vec![0f32; plan.per_chunk * hw * rl];
                let mut rows = vec![0f32; plan.per_chunk * hw * o];
                let task_images = task_out.len() / (o * hw).max(1);
                for (c, chunk_out) in task_out
                    .chunks_mut((plan.per_chunk * o * hw).max(1))
                    .enumerate()
                {
                    let nb = chunk_out.len() / (o * hw).max(1);
                    let b0 = t * plan.per_task + c * plan.per_chunk;
                    debug_assert!(c * plan.per_chunk + nb <= task_images);
                    let xs = &x[b0 * img..(b0 + nb) * img];
                    transpose_images(xs, &mut xt[..nb * img], g.c, g.h * g.w, true);
                    im2col_chunk(&g, &xt, nb, &mut cols);
                    // rows (nb*HW x O) = cols (nb*HW x K) * W^T (K x O)
                    // SAFETY: the buffers hold these sizes and do not overlap.
                    unsafe {
                        sgemm(
                            nb * hw,
                            o,
                            rl,
                            rows.as_mut_ptr(),
                            o,
                            false,
                            Mat {
                                ptr: cols.as_ptr(),
                                rs: rl as isize,
                                cs: 1,
                            },
                            Mat {
                                ptr: w.as_ptr(),
                                rs: 1,
                                cs: rl as isize,
                            },
                        )
                    };
                    transpose_images(&rows[..nb * hw * o], chunk_out, o, hw, false);
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
        let g = self.g;
        let need_input = x.track_op();
        let both = x.apply_op3_no_bwd(
            weight,
            &grad.contiguous()?,
            &ConvBackward {
                g,
                o: self.o,
                target_rows: self.target_rows,
                need_input,
            },
        )?;
        let nx = if need_input { g.n * g.c * g.h * g.w } else { 0 };
        let (gx, small) = super::split_packed(&both, nx, &[weight.elem_count()])?;
        let gx = if need_input {
            Some(gx.reshape(x.shape())?)
        } else {
            None
        };
        Ok((gx, Some(small[0].reshape(weight.shape())?)))
    }
}

/// Backward on (input, weight, output gradient): one flat tensor holding the input gradient
/// (when `need_input`) followed by the weight gradient.
struct ConvBackward {
    g: Geom,
    o: usize,
    target_rows: usize,
    need_input: bool,
}

impl CustomOp3 for ConvBackward {
    fn name(&self) -> &'static str {
        "conv2d-im2col-backward"
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
        let (g, o) = (self.g, self.o);
        let (x, w, gy) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (hw, rl) = (g.oh * g.ow, g.row_len());
        if gy.len() != g.n * o * hw {
            candle_core::bail!("conv2d-im2col: gradient shape {:?} mismatch", l3.dims())
        }
        let plan = Plan::new(g.n, hw, rayon::current_num_threads(), self.target_rows);
        let img = g.c * g.h * g.w;
        // permuted again rather than kept from the forward: holding every conv's permuted
        // weight until the backward cost 55 MB of peak memory for ResNet-18 and no
        // measurable time
        let w = permute_weight(&g, o, w);
        let nx = if self.need_input { g.n * img } else { 0 };
        let mut out = vec![0f32; nx + o * rl];
        let (gx, gw) = out.split_at_mut(nx);
        let tasks = g.n.div_ceil(plan.per_task);
        // one input-gradient slice per task (empty when the input needs none)
        let gx_parts: Vec<&mut [f32]> = if self.need_input {
            gx.chunks_mut(plan.per_task * img).collect()
        } else {
            (0..tasks).map(|_| Default::default()).collect()
        };
        let partials: Vec<Vec<f32>> = gx_parts
            .into_par_iter()
            .enumerate()
            .map(|(t, gx_task)| {
                let mut gw_task = vec![0f32; o * rl];
                let mut xt = vec![0f32; plan.per_chunk * img];
                let mut cols = vec![0f32; plan.per_chunk * hw * rl];
                let mut rows = vec![0f32; plan.per_chunk * hw * o];
                let first = t * plan.per_task;
                let last = (first + plan.per_task).min(g.n);
                let mut b0 = first;
                while b0 < last {
                    let nb = plan.per_chunk.min(last - b0);
                    let r = nb * hw;
                    let xs = &x[b0 * img..(b0 + nb) * img];
                    transpose_images(xs, &mut xt[..nb * img], g.c, g.h * g.w, true);
                    im2col_chunk(&g, &xt, nb, &mut cols);
                    let gys = &gy[b0 * o * hw..(b0 + nb) * o * hw];
                    transpose_images(gys, &mut rows[..nb * hw * o], o, hw, true);
                    // SAFETY (both products): the buffers hold these sizes and do not overlap.
                    // gW (O x K) += gy_rows^T (O x r) * cols (r x K)
                    unsafe {
                        sgemm(
                            o,
                            rl,
                            r,
                            gw_task.as_mut_ptr(),
                            rl,
                            true,
                            Mat {
                                ptr: rows.as_ptr(),
                                rs: 1,
                                cs: o as isize,
                            },
                            Mat {
                                ptr: cols.as_ptr(),
                                rs: rl as isize,
                                cs: 1,
                            },
                        )
                    };
                    if self.need_input {
                        // dcols (r x K) = gy_rows (r x O) * W (O x K), into the column buffer
                        unsafe {
                            sgemm(
                                r,
                                rl,
                                o,
                                cols.as_mut_ptr(),
                                rl,
                                false,
                                Mat {
                                    ptr: rows.as_ptr(),
                                    rs: o as isize,
                                    cs: 1,
                                },
                                Mat {
                                    ptr: w.as_ptr(),
                                    rs: rl as isize,
                                    cs: 1,
                                },
                            )
                        };
                        // the channels-last input is no longer needed: reuse it for the gradient
                        xt[..nb * img].fill(0.0);
                        col2im_chunk(&g, &cols, nb, &mut xt);
                        let off = (b0 - first) * img;
                        let gxs = &mut gx_task[off..off + nb * img];
                        transpose_images(&xt[..nb * img], gxs, g.c, g.h * g.w, false);
                    }
                    b0 += nb;
                }
                gw_task
            })
            .collect();
        let mut sum = vec![0f32; o * rl];
        for p in &partials {
            for (a, b) in sum.iter_mut().zip(p) {
                *a += *b;
            }
        }
        // back from column order to (O, C, K, K)
        transpose(&sum, gw, o, g.c, g.k * g.k, false);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// CUDA: `x (N, C, H, W) -> cols (N*OH*OW, C*K*K)`, rows the output positions, columns
/// (c, ky, kx); backward [`Col2ImCuda`]. (Unused with `cudnn`, whose convolution replaces it.)
#[cfg_attr(feature = "cudnn", allow(dead_code))]
struct Im2ColCuda {
    g: Geom,
}

/// CUDA: `cols -> x`-shaped sum of each input element's window entries.
#[cfg_attr(any(not(feature = "cuda"), feature = "cudnn"), allow(dead_code))]
struct Col2ImCuda {
    g: Geom,
}

impl CustomOp1 for Im2ColCuda {
    fn name(&self) -> &'static str {
        "im2col-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("im2col-cuda: CUDA only (the CPU runs conv2d-im2col)")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (gpu, dt) = cuda::launcher(&[s], "conv2d")?;
        let x = cuda::input(s, l, "conv2d")?;
        let g = self.g;
        let cols = gpu_im2col(&gpu, dt, &x, [g.n, g.c, g.h, g.w], g.k, g.s, g.p)?;
        Ok((cols.into_storage(gpu.dev)?, g.cols_shape()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&Col2ImCuda { g: self.g })?,
        ))
    }
}

impl CustomOp1 for Col2ImCuda {
    fn name(&self) -> &'static str {
        "col2im-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("col2im-cuda: CUDA only")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (gpu, dt) = cuda::launcher(&[s], "conv2d backward")?;
        let cols = cuda::input(s, l, "conv2d backward")?;
        let g = self.g;
        if l.dims() != g.cols_shape().dims() {
            candle_core::bail!("conv2d backward: column gradient shape {:?}", l.dims())
        }
        let gx = gpu_col2im(&gpu, dt, &cols, [g.n, g.c, g.h, g.w], g.k, g.s, g.p)?;
        Ok((gx.into_storage(gpu.dev)?, Shape::from((g.n, g.c, g.h, g.w))))
    }
}

impl Geom {
    #[cfg_attr(any(not(feature = "cuda"), feature = "cudnn"), allow(dead_code))]
    fn cols_shape(&self) -> Shape {
        Shape::from((self.n * self.oh * self.ow, self.c * self.k * self.k))
    }

    /// `N, C, H, W, KH, KW, S, P, OH, OW` for the kernels, checking the sizes fit them.
    fn gpu_args(&self) -> Result<Vec<Arg>> {
        let what = "conv2d";
        gpu::count(what, self.n * self.c * self.h * self.w)?;
        gpu::count(what, self.n * self.oh * self.ow * self.c * self.k * self.k)?;
        [
            self.n, self.c, self.h, self.w, self.k, self.k, self.s, self.p, self.oh, self.ow,
        ]
        .iter()
        .map(|&v| gpu::int(what, v))
        .collect()
    }
}

fn kernel(name: &str, dt: DType) -> Result<String> {
    Ok(format!("{name}_{}", gpu::suffix(dt)?))
}

/// The column matrix `(N*OH*OW, C*K*K)` of NCHW `x` (`dims`) on the GPU: square kernel `k`,
/// stride `s`, padding `p`.
pub fn gpu_im2col<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    dims: [usize; 4],
    k: usize,
    s: usize,
    p: usize,
) -> Result<L::Buf> {
    let g = Geom::new(dims[0], dims[1], dims[2], dims[3], k, s, p)?;
    let total = g.n * g.oh * g.ow * g.c * g.k * g.k;
    let cols = l.alloc(dt, total)?;
    let mut args = vec![Arg::Ptr(x.addr()), Arg::Ptr(cols.addr())];
    args.extend(g.gpu_args()?);
    l.launch(
        &gpu::IM2COL,
        &kernel("im2col", dt)?,
        Grid::items(total),
        &args,
    )?;
    Ok(cols)
}

/// The input gradient of [`gpu_im2col`] from the columns' gradient, on the GPU.
pub fn gpu_col2im<L: Launcher>(
    l: &L,
    dt: DType,
    cols: &L::Buf,
    dims: [usize; 4],
    k: usize,
    s: usize,
    p: usize,
) -> Result<L::Buf> {
    let g = Geom::new(dims[0], dims[1], dims[2], dims[3], k, s, p)?;
    let total = g.n * g.c * g.h * g.w;
    let gx = l.alloc(dt, total)?;
    let mut args = vec![Arg::Ptr(cols.addr()), Arg::Ptr(gx.addr())];
    args.extend(g.gpu_args()?);
    l.launch(
        &gpu::IM2COL,
        &kernel("col2im", dt)?,
        Grid::items(total),
        &args,
    )?;
    Ok(gx)
}

/// CUDA convolution, groups 1, square kernel: cuDNN with the `cudnn` feature; otherwise the
/// `im2col` kernel and a cuBLAS product (the backward: the products' and `col2im`).
fn conv2d_cuda(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (o, c, k, _) = weight.dims4()?;
    let (n, xc, h, w) = x.dims4()?;
    if xc != c {
        candle_core::bail!("conv2d: input has {xc} channels, weight expects {c}")
    }
    let g = Geom::new(n, c, h, w, k, stride, padding)?;
    #[cfg(feature = "cudnn")]
    {
        let _ = (g, o);
        super::gpu::cudnn::conv2d(x, weight, stride, padding)
    }
    #[cfg(not(feature = "cudnn"))]
    {
        let cols = x.contiguous()?.apply_op1(Im2ColCuda { g })?;
        let wm = weight.reshape((o, c * k * k))?;
        cols.matmul(&wm.t()?)?
            .reshape((n, g.oh, g.ow, o))?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }
}

/// Convolution of `x` `(N, C, H, W)` with `weight` `(O, C, K, K)`, square stride and padding,
/// no bias, as chunked im2col + GEMM. CPU (in f32, other dtypes are cast); CUDA: the im2col
/// kernel and cuBLAS, or cuDNN (feature `cudnn`); other devices use Candle's `conv2d`.
pub fn conv2d_im2col(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    super::require_non_empty("conv2d", x)?;
    conv2d_chunked(x, weight, stride, padding, TARGET_ROWS)
}

fn conv2d_chunked(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
    target_rows: usize,
) -> Result<Tensor> {
    let (o, c, kh, kw) = weight.dims4()?;
    if gpu::runs_on_gpu(x) && kh == kw && weight.dtype() == x.dtype() {
        return conv2d_cuda(x, weight, stride, padding);
    }
    if !x.device().is_cpu() || kh != kw || super::reference_mode() {
        return x.conv2d(weight, padding, stride, 1, 1);
    }
    let dt = x.dtype();
    if dt != candle_core::DType::F32 {
        // Candle's CPU conv has no bf16 GEMM: a low-precision forward on the CPU runs in f32
        let f32 = candle_core::DType::F32;
        return conv2d_chunked(
            &x.to_dtype(f32)?,
            &weight.to_dtype(f32)?,
            stride,
            padding,
            target_rows,
        )?
        .to_dtype(dt);
    }
    let (n, xc, h, w) = x.dims4()?;
    if xc != c {
        candle_core::bail!("conv2d: input has {xc} channels, weight expects {c}")
    }
    let g = Geom::new(n, c, h, w, kh, stride, padding)?;
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, ConvForward { g, o, target_rows })
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
            ([5, 3, 4, 4], 4, 3, 1, 1),
            ([7, 2, 6, 5], 3, 3, 2, 1),
        ];
        // the default chunking, and small targets that cut the batch into several chunks per
        // task with a shorter last chunk
        for ((d, o, k, s, p), target) in cases
            .into_iter()
            .flat_map(|c| [(c, TARGET_ROWS), (c, 1), (c, 20)])
        {
            let x = rng.var(0f32, 1.0, &d, &dev)?;
            let w = rng.var(0f32, 1.0, (o, d[1], k, k), &dev)?;
            let a = conv2d_chunked(&x, &w, s, p, target)?;
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
                    "grad {d:?} k{k} s{s} p{p} target {target}: {diff}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn plan_splits_the_batch_over_tasks_and_chunks() {
        // 64 images of 256 rows, 2 threads: two tasks of 32, one image per chunk
        assert_eq!(
            Plan::new(64, 256, 2, 256),
            Plan {
                per_task: 32,
                per_chunk: 1
            }
        );
        // 2x2 outputs: a chunk takes 64 images but no more than its task
        assert_eq!(
            Plan::new(64, 4, 2, 256),
            Plan {
                per_task: 32,
                per_chunk: 32
            }
        );
        // more threads than images
        assert_eq!(
            Plan::new(3, 10, 8, 256),
            Plan {
                per_task: 1,
                per_chunk: 1
            }
        );
        assert_eq!(
            Plan::new(7, 9, 2, 20),
            Plan {
                per_task: 4,
                per_chunk: 3
            }
        );
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
