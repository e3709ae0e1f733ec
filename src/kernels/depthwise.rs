//! Depthwise 2-D convolution (groups == channels) as a Candle custom op: one pass over the
//! tensor for the forward and for each backward pass, parallel over the N*C planes.
//!
//! Layout NCHW, weight `(C, 1, KH, KW)`. CPU f32 runs the project kernel; other dtypes on CPU
//! are converted to f32 and back; CUDA runs `kernels/cuda/depthwise.cu` (f32, bf16, f16; the
//! `gpu_*` launch functions below), other devices a sum of shifted windows.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::depthwise_small as small;
use super::simd::simd_fn;

use super::gpu::{self, Arg, Buffer, Grid, Launcher};
#[cfg(feature = "cuda")]
use {super::gpu::cuda, candle_core::CudaStorage};

/// Geometry of one depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwParams {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    fn new(x: &[usize], k: &[usize], p: DwParams) -> Result<Self> {
        if x.len() != 4 || k.len() != 4 {
            candle_core::bail!("depthwise_conv2d: expected 4-D input and weight, got {x:?} {k:?}")
        }
        let (n, c, h, w) = (x[0], x[1], x[2], x[3]);
        let (kc, one, kh, kw) = (k[0], k[1], k[2], k[3]);
        if kc != c || one != 1 {
            candle_core::bail!(
                "depthwise_conv2d: weight shape {k:?} does not match {c} channels (want ({c}, 1, kh, kw))"
            )
        }
        let (sh, sw) = p.stride;
        let (ph, pw) = p.padding;
        if sh == 0 || sw == 0 {
            candle_core::bail!("depthwise_conv2d: stride must be positive")
        }
        if h + 2 * ph < kh || w + 2 * pw < kw {
            candle_core::bail!(
                "depthwise_conv2d: kernel {kh}x{kw} larger than padded input {h}x{w}"
            )
        }
        let oh = (h + 2 * ph - kh) / sh + 1;
        let ow = (w + 2 * pw - kw) / sw + 1;
        Ok(Self {
            n,
            c,
            h,
            w,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            oh,
            ow,
        })
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("depthwise_conv2d: {what} must be contiguous"),
    }
}

/// Forward: `(x, w) -> y`.
struct DwConvFwd(DwParams);
/// Input gradient: `(grad_y, w) -> grad_x`; `.1` is the input's spatial size.
struct DwConvBwdInput(DwParams, (usize, usize));
/// Weight gradient: `(x, grad_y) -> grad_w`; `.1` is the kernel size.
struct DwConvBwdWeight(DwParams, (usize, usize));

impl Geom {
    /// The small-plane path's view of these sizes.
    fn small(&self) -> small::Dims {
        small::Dims {
            n: self.n,
            c: self.c,
            h: self.h,
            w: self.w,
            kh: self.kh,
            kw: self.kw,
            sh: self.sh,
            sw: self.sw,
            ph: self.ph,
            pw: self.pw,
            oh: self.oh,
            ow: self.ow,
        }
    }

    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.ph, self.w + 2 * self.pw)
    }

    /// Copies one input plane into the interior of a zero-bordered scratch plane.
    fn pad_into(&self, plane: &[f32], buf: &mut [f32]) {
        let (_, pwid) = self.padded();
        for (y, row) in plane.chunks_exact(self.w).enumerate() {
            let o = (y + self.ph) * pwid + self.pw;
            buf[o..o + self.w].copy_from_slice(row);
        }
    }
}

/// `acc[i] += a * src[i * stride]` over `acc`.
#[inline(always)]
fn axpy_strided(acc: &mut [f32], a: f32, src: &[f32], stride: usize) {
    if stride == 1 {
        let n = acc.len();
        for (o, &v) in acc.iter_mut().zip(&src[..n]) {
            *o += a * v;
        }
    } else {
        for (i, o) in acc.iter_mut().enumerate() {
            *o += a * src[i * stride];
        }
    }
}

/// Dot product with eight independent accumulators (vectorisable).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    for v in acc {
        s += v;
    }
    s
}

simd_fn! {
    /// One output plane from input plane `xp` and the channel's taps `k` (`buf`, `tmp`:
    /// scratch of the padded and flat sizes).
    fn forward_plane(
        g: &Geom,
        xp: &[f32],
        k: &[f32],
        flat: Option<usize>,
        buf: &mut [f32],
        tmp: &mut [f32],
        out: &mut [f32],
    ) {
        let (_, pww) = g.padded();
        g.pad_into(xp, buf);
        if let Some(len) = flat {
            tmp.fill(0.0);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let off = ky * pww + kx;
                    axpy_strided(tmp, k[ky * g.kw + kx], &buf[off..off + len], 1);
                }
            }
            unflatten(tmp, pww, g.ow, out);
            return;
        }
        for (oy, orow) in out.chunks_exact_mut(g.ow).enumerate() {
            for ky in 0..g.kh {
                let prow = &buf[(oy * g.sh + ky) * pww..(oy * g.sh + ky + 1) * pww];
                for kx in 0..g.kw {
                    axpy_strided(orow, k[ky * g.kw + kx], &prow[kx..], g.sw);
                }
            }
        }
    }
}

simd_fn! {
    /// One input-gradient plane `gin` from output-gradient plane `go` and the taps `k`.
    fn input_grad_plane(
        g: &Geom,
        go: &[f32],
        k: &[f32],
        flat: Option<usize>,
        buf: &mut [f32],
        gyp: &mut [f32],
        gin: &mut [f32],
    ) {
        let (_, pww) = g.padded();
        buf.iter_mut().for_each(|v| *v = 0.0);
        if let Some(len) = flat {
            // the transposed taps: each scatters the flat gradient onto the padded plane,
            // shifted by the tap's offset
            flatten(go, pww, g.ow, gyp);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let off = ky * pww + kx;
                    axpy_strided(&mut buf[off..off + len], k[ky * g.kw + kx], gyp, 1);
                }
            }
        } else {
            for (oy, grow) in go.chunks_exact(g.ow).enumerate() {
                for ky in 0..g.kh {
                    let r0 = (oy * g.sh + ky) * pww;
                    let prow = &mut buf[r0..r0 + pww];
                    for kx in 0..g.kw {
                        let wv = k[ky * g.kw + kx];
                        let dst = &mut prow[kx..];
                        if g.sw == 1 {
                            for (d, &v) in dst.iter_mut().zip(grow) {
                                *d += wv * v;
                            }
                        } else {
                            for (ox, &v) in grow.iter().enumerate() {
                                dst[ox * g.sw] += wv * v;
                            }
                        }
                    }
                }
            }
        }
        for (y, row) in gin.chunks_exact_mut(g.w).enumerate() {
            let o = (y + g.ph) * pww + g.pw;
            row.copy_from_slice(&buf[o..o + g.w]);
        }
    }
}

simd_fn! {
    /// The KHxKW weight-gradient partial sums `acc` of one plane: input `xp`, gradient `go`.
    fn weight_grad_plane(
        g: &Geom,
        xp: &[f32],
        go: &[f32],
        flat: Option<usize>,
        buf: &mut [f32],
        gyp: &mut [f32],
        acc: &mut [f32],
    ) {
        let (_, pww) = g.padded();
        g.pad_into(xp, buf);
        if let Some(len) = flat {
            // zeros past OW in the flat gradient keep the dropped columns out
            flatten(go, pww, g.ow, gyp);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let off = ky * pww + kx;
                    acc[ky * g.kw + kx] = dot(gyp, &buf[off..off + len]);
                }
            }
            return;
        }
        for (oy, grow) in go.chunks_exact(g.ow).enumerate() {
            for ky in 0..g.kh {
                let r0 = (oy * g.sh + ky) * pww;
                let prow = &buf[r0..r0 + pww];
                for kx in 0..g.kw {
                    let src = &prow[kx..];
                    let mut s = 0f32;
                    if g.sw == 1 {
                        s = dot(grow, &src[..grow.len()]);
                    } else {
                        for (ox, &a) in grow.iter().enumerate() {
                            s += a * src[ox * g.sw];
                        }
                    }
                    acc[ky * g.kw + kx] += s;
                }
            }
        }
    }
}

/// Stride-1 planes run "flat": with the input zero-padded to width `PW = OW + KW - 1`, output
/// `(oy, ox)` reads padded element `oy*PW + ox + ky*PW + kx`, so one tap is one contiguous
/// multiply-add over the output laid out at width `PW` (`(OH-1)*PW + OW` values, the columns
/// past `OW` computed and dropped). Rows of the small planes of late stages (2-16 values) barely
/// vectorise; the flat runs are 2-10x longer.
fn flat_len(g: &Geom) -> usize {
    let (_, pww) = g.padded();
    (g.oh - 1) * pww + g.ow
}

/// `out` (rows of `OW`) <- `flat` (rows of `PW`).
fn unflatten(flat: &[f32], pww: usize, ow: usize, out: &mut [f32]) {
    for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
        row.copy_from_slice(&flat[oy * pww..oy * pww + ow]);
    }
}

/// `flat` (rows of `PW`, zeros past `OW`) <- `rows` (rows of `OW`).
fn flatten(rows: &[f32], pww: usize, ow: usize, flat: &mut [f32]) {
    flat.fill(0.0);
    for (oy, row) in rows.chunks_exact(ow).enumerate() {
        flat[oy * pww..oy * pww + ow].copy_from_slice(row);
    }
}

/// Forward plane by plane (the path for output planes of `small::SMALL_PLANE` pixels or more).
fn forward_per_plane(g: &Geom, x: &[f32], wt: &[f32]) -> Vec<f32> {
    let g = *g;
    let mut y = vec![0f32; g.n * g.c * g.oh * g.ow];
    let plane_in = g.h * g.w;
    let plane_out = g.oh * g.ow;
    let kk = g.kh * g.kw;
    let (phh, pww) = g.padded();
    let flat = (g.sh == 1 && g.sw == 1).then(|| flat_len(&g));
    y.par_chunks_mut(plane_out.max(1))
        .enumerate()
        .for_each_init(
            || (vec![0f32; phh * pww], vec![0f32; flat.unwrap_or(0)]),
            |(buf, tmp), (p, out)| {
                let c = p % g.c;
                let xp = &x[p * plane_in..(p + 1) * plane_in];
                let k = &wt[c * kk..(c + 1) * kk];
                forward_plane(&g, xp, k, flat, buf, tmp, out);
            },
        );
    y
}

impl CustomOp2 for DwConvFwd {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let what = "depthwise_conv2d";
        let (gpu, dt) = cuda::launcher(&[s1, s2], what)?;
        let x = cuda::input(s1, l1, what)?;
        let w = cuda::input(s2, l2, what)?;
        let (y, shape) = gpu_forward(&gpu, dt, &x, l1.dims(), &w, l2.dims(), self.0)?;
        Ok((y.into_storage(gpu.dev)?, shape))
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.0)?;
        let x = f32_slice(s1, l1, "input")?;
        let wt = f32_slice(s2, l2, "weight")?;
        let y = if g.oh * g.ow < small::SMALL_PLANE {
            let mut y = vec![0f32; g.n * g.c * g.oh * g.ow];
            small::forward(&g.small(), x, wt, &mut y);
            y
        } else {
            forward_per_plane(&g, x, wt)
        };
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.c, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let gx = grad.apply_op2_no_bwd(w, &DwConvBwdInput(self.0, (h, wd)))?;
        let gw = x.apply_op2_no_bwd(&grad, &DwConvBwdWeight(self.0, (kh, kw)))?;
        Ok((Some(gx), Some(gw)))
    }
}

impl CustomOp2 for DwConvBwdInput {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-bwd-input"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let what = "depthwise_conv2d backward";
        let (gpu, dt) = cuda::launcher(&[s1, s2], what)?;
        let gy = cuda::input(s1, l1, what)?;
        let w = cuda::input(s2, l2, what)?;
        let (gx, shape) =
            gpu_backward_input(&gpu, dt, &gy, l1.dims(), &w, l2.dims(), self.1, self.0)?;
        Ok((gx.into_storage(gpu.dev)?, shape))
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let gd = l1.dims();
        let (h, w) = self.1;
        let g = Geom::new(&[gd[0], gd[1], h, w], l2.dims(), self.0)?;
        if gd[2] != g.oh || gd[3] != g.ow {
            candle_core::bail!("depthwise_conv2d backward: gradient shape {gd:?} mismatch")
        }
        let gy = f32_slice(s1, l1, "gradient")?;
        let wt = f32_slice(s2, l2, "weight")?;
        let plane_in = g.h * g.w;
        let plane_out = g.oh * g.ow;
        let kk = g.kh * g.kw;
        let (phh, pww) = g.padded();
        let mut gx = vec![0f32; g.n * g.c * plane_in];
        if plane_out < small::SMALL_PLANE {
            small::backward_input(&g.small(), gy, wt, &mut gx);
            return Ok((CpuStorage::F32(gx), Shape::from((g.n, g.c, g.h, g.w))));
        }
        let flat = (g.sh == 1 && g.sw == 1).then(|| flat_len(&g));
        gx.par_chunks_mut(plane_in.max(1))
            .enumerate()
            .for_each_init(
                || (vec![0f32; phh * pww], vec![0f32; flat.unwrap_or(0)]),
                |(buf, gyp), (p, gin)| {
                    let c = p % g.c;
                    let go = &gy[p * plane_out..(p + 1) * plane_out];
                    let k = &wt[c * kk..(c + 1) * kk];
                    input_grad_plane(&g, go, k, flat, buf, gyp, gin);
                },
            );
        Ok((CpuStorage::F32(gx), Shape::from((g.n, g.c, g.h, g.w))))
    }
}

impl CustomOp2 for DwConvBwdWeight {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-bwd-weight"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let what = "depthwise_conv2d backward";
        let (gpu, dt) = cuda::launcher(&[s1, s2], what)?;
        let x = cuda::input(s1, l1, what)?;
        let gy = cuda::input(s2, l2, what)?;
        let (gw, shape) =
            gpu_backward_weight(&gpu, dt, &x, l1.dims(), &gy, l2.dims(), self.1, self.0)?;
        Ok((gw.into_storage(gpu.dev)?, shape))
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xd = l1.dims();
        let (kh, kw) = self.1;
        let g = Geom::new(xd, &[xd[1], 1, kh, kw], self.0)?;
        let gd = l2.dims();
        if gd != [g.n, g.c, g.oh, g.ow] {
            candle_core::bail!("depthwise_conv2d backward: gradient shape {gd:?} mismatch")
        }
        let x = f32_slice(s1, l1, "input")?;
        let gy = f32_slice(s2, l2, "gradient")?;
        let plane_in = g.h * g.w;
        let plane_out = g.oh * g.ow;
        let kk = g.kh * g.kw;
        if plane_out < small::SMALL_PLANE {
            let gw = small::backward_weight(&g.small(), x, gy);
            return Ok((CpuStorage::F32(gw), Shape::from((g.c, 1, g.kh, g.kw))));
        }
        let (phh, pww) = g.padded();
        // One pass over the N*C planes, each producing its KHxKW partial sums.
        let mut partial = vec![0f32; g.n * g.c * kk];
        let flat = (g.sh == 1 && g.sw == 1).then(|| flat_len(&g));
        partial.par_chunks_mut(kk.max(1)).enumerate().for_each_init(
            || (vec![0f32; phh * pww], vec![0f32; flat.unwrap_or(0)]),
            |(buf, gyp), (p, acc)| {
                let xp = &x[p * plane_in..(p + 1) * plane_in];
                let go = &gy[p * plane_out..(p + 1) * plane_out];
                weight_grad_plane(&g, xp, go, flat, buf, gyp, acc);
            },
        );
        let mut gw = vec![0f32; g.c * kk];
        for n in 0..g.n {
            let src = &partial[n * g.c * kk..(n + 1) * g.c * kk];
            for (d, &s) in gw.iter_mut().zip(src) {
                *d += s;
            }
        }
        Ok((CpuStorage::F32(gw), Shape::from((g.c, 1, g.kh, g.kw))))
    }
}

// ---- GPU: the kernels of kernels/cuda/depthwise.cu, launched through a gpu::Launcher (the
// CUDA device, or the CPU emulation of tests/cuda_emulated.rs) ----

impl Geom {
    /// The kernels' geometry arguments `N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW`.
    fn gpu_args(&self) -> Result<Vec<Arg>> {
        let what = "depthwise_conv2d";
        gpu::count(what, self.n * self.c * self.h * self.w)?;
        gpu::count(what, self.n * self.c * self.oh * self.ow)?;
        [
            self.n, self.c, self.h, self.w, self.kh, self.kw, self.sh, self.sw, self.ph, self.pw,
            self.oh, self.ow,
        ]
        .iter()
        .map(|&v| gpu::int(what, v))
        .collect()
    }
}

fn kernel(name: &str, dt: DType) -> Result<String> {
    Ok(format!("{name}_{}", gpu::suffix(dt)?))
}

/// Forward on the GPU: `x` `(N, C, H, W)` and `w` `(C, 1, KH, KW)`, both of dtype `dt`; the
/// output and its shape.
pub fn gpu_forward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    x_dims: &[usize],
    w: &L::Buf,
    w_dims: &[usize],
    p: DwParams,
) -> Result<(L::Buf, Shape)> {
    let g = Geom::new(x_dims, w_dims, p)?;
    let total = g.n * g.c * g.oh * g.ow;
    let y = l.alloc(dt, total)?;
    let mut args = vec![Arg::Ptr(x.addr()), Arg::Ptr(w.addr()), Arg::Ptr(y.addr())];
    args.extend(g.gpu_args()?);
    l.launch(
        &gpu::DEPTHWISE,
        &kernel("dw_fwd", dt)?,
        Grid::items(total),
        &args,
    )?;
    Ok((y, Shape::from((g.n, g.c, g.oh, g.ow))))
}

/// Input gradient on the GPU from `gy` `(N, C, OH, OW)` and `w`; `hw` is the input's size.
#[allow(clippy::too_many_arguments)]
pub fn gpu_backward_input<L: Launcher>(
    l: &L,
    dt: DType,
    gy: &L::Buf,
    gy_dims: &[usize],
    w: &L::Buf,
    w_dims: &[usize],
    hw: (usize, usize),
    p: DwParams,
) -> Result<(L::Buf, Shape)> {
    if gy_dims.len() != 4 {
        candle_core::bail!("depthwise_conv2d backward: gradient shape {gy_dims:?}")
    }
    let g = Geom::new(&[gy_dims[0], gy_dims[1], hw.0, hw.1], w_dims, p)?;
    if gy_dims[2] != g.oh || gy_dims[3] != g.ow {
        candle_core::bail!("depthwise_conv2d backward: gradient shape {gy_dims:?} mismatch")
    }
    let total = g.n * g.c * g.h * g.w;
    let gx = l.alloc(dt, total)?;
    let mut args = vec![Arg::Ptr(gy.addr()), Arg::Ptr(w.addr()), Arg::Ptr(gx.addr())];
    args.extend(g.gpu_args()?);
    l.launch(
        &gpu::DEPTHWISE,
        &kernel("dw_bwd_input", dt)?,
        Grid::items(total),
        &args,
    )?;
    Ok((gx, Shape::from((g.n, g.c, g.h, g.w))))
}

/// Weight gradient on the GPU from `x` and `gy`; `k` is the kernel size. Partial sums per
/// (channel, slice of positions) in f32, then the slices added in order.
#[allow(clippy::too_many_arguments)]
pub fn gpu_backward_weight<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    x_dims: &[usize],
    gy: &L::Buf,
    gy_dims: &[usize],
    k: (usize, usize),
    p: DwParams,
) -> Result<(L::Buf, Shape)> {
    if x_dims.len() != 4 {
        candle_core::bail!("depthwise_conv2d backward: input shape {x_dims:?}")
    }
    let g = Geom::new(x_dims, &[x_dims[1], 1, k.0, k.1], p)?;
    if gy_dims != [g.n, g.c, g.oh, g.ow] {
        candle_core::bail!("depthwise_conv2d backward: gradient shape {gy_dims:?} mismatch")
    }
    let kk = g.kh * g.kw;
    let s = gpu::slices(g.n * g.oh * g.ow, g.c);
    let parts = l.alloc(DType::F32, s * g.c * kk)?;
    let mut args = vec![
        Arg::Ptr(x.addr()),
        Arg::Ptr(gy.addr()),
        Arg::Ptr(parts.addr()),
    ];
    args.extend(g.gpu_args()?);
    l.launch(
        &gpu::DEPTHWISE,
        &kernel("dw_wgrad_parts", dt)?,
        Grid::blocks(g.c, s),
        &args,
    )?;
    let m = g.c * kk;
    let gw = l.alloc(dt, m)?;
    let args = [
        Arg::Ptr(parts.addr()),
        Arg::Ptr(gw.addr()),
        gpu::int("depthwise_conv2d", m)?,
        gpu::int("depthwise_conv2d", s)?,
    ];
    l.launch(
        &gpu::DEPTHWISE,
        &kernel("dw_sum_parts", dt)?,
        Grid::items(m),
        &args,
    )?;
    Ok((gw, Shape::from((g.c, 1, g.kh, g.kw))))
}

/// Depthwise convolution from differentiable whole-tensor ops, for devices without the CPU
/// kernel (CUDA): the sum over the `KH * KW` taps of a strided window of the zero-padded input
/// times that tap's per-channel weight. Candle's grouped `conv2d` would run one convolution per
/// channel (hundreds of launches per layer, and as many in the backward).
pub fn depthwise_shift_sum(x: &Tensor, weight: &Tensor, params: DwParams) -> Result<Tensor> {
    super::require_non_empty("depthwise_conv2d", x)?;
    let (n, c, h, w) = x.dims4()?;
    let (wc, one, kh, kw) = weight.dims4()?;
    if wc != c || one != 1 {
        candle_core::bail!(
            "depthwise_conv2d: weight {:?} for {c} channels",
            weight.dims()
        )
    }
    let (sh, sw) = params.stride;
    let (ph, pw) = params.padding;
    if h + 2 * ph < kh || w + 2 * pw < kw || sh == 0 || sw == 0 {
        candle_core::bail!("depthwise_conv2d: kernel larger than the padded input")
    }
    let oh = (h + 2 * ph - kh) / sh + 1;
    let ow = (w + 2 * pw - kw) / sw + 1;
    // pad so that every tap can take `stride * out` rows / columns (extra zeros are never read
    // by a kept output)
    let need_h = kh - 1 + sh * oh;
    let need_w = kw - 1 + sw * ow;
    let xp = x
        .pad_with_zeros(2, ph, need_h.saturating_sub(h + ph))?
        .pad_with_zeros(3, pw, need_w.saturating_sub(w + pw))?;
    let wp = xp.dim(3)?;
    let taps = weight.reshape((c, kh * kw))?.t()?.contiguous()?; // (KH*KW, C)
    let mut acc: Option<Tensor> = None;
    for ky in 0..kh {
        let rows = xp.narrow(2, ky, sh * oh)?;
        let rows = if sh > 1 {
            rows.reshape((n, c, oh, sh, wp))?
                .narrow(3, 0, 1)?
                .squeeze(3)?
        } else {
            rows
        };
        for kx in 0..kw {
            let win = rows.narrow(3, kx, sw * ow)?;
            let win = if sw > 1 {
                win.reshape((n, c, oh, ow, sw))?
                    .narrow(4, 0, 1)?
                    .squeeze(4)?
            } else {
                win
            };
            let tap = taps.get(ky * kw + kx)?.reshape((1, c, 1, 1))?;
            let term = win.broadcast_mul(&tap)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    match acc {
        Some(a) => Ok(a),
        None => candle_core::bail!("depthwise_conv2d: empty kernel"),
    }
}

/// Depthwise convolution of `x` `(N, C, H, W)` with `weight` `(C, 1, KH, KW)`, no bias.
/// Differentiable with respect to both arguments.
pub fn depthwise_conv2d(x: &Tensor, weight: &Tensor, params: DwParams) -> Result<Tensor> {
    super::require_non_empty("depthwise_conv2d", x)?;
    if super::reference_mode() {
        if params.stride.0 != params.stride.1 || params.padding.0 != params.padding.1 {
            candle_core::bail!("depthwise_conv2d: non-square stride/padding needs the CPU kernel")
        }
        let c = x.dim(1)?;
        return x.conv2d(weight, params.padding.0, params.stride.0, 1, c);
    }
    if !x.device().is_cpu() {
        if gpu::runs_on_gpu(x) && weight.dtype() == x.dtype() {
            return x
                .contiguous()?
                .apply_op2(&weight.contiguous()?, DwConvFwd(params));
        }
        return depthwise_shift_sum(x, weight, params);
    }
    let dt = x.dtype();
    if dt != candle_core::DType::F32 {
        let y = depthwise_conv2d(
            &x.to_dtype(candle_core::DType::F32)?,
            &weight.to_dtype(candle_core::DType::F32)?,
            params,
        )?;
        return y.to_dtype(dt);
    }
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    x.apply_op2(&weight, DwConvFwd(params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn naive(x: &[f32], xd: [usize; 4], w: &[f32], k: (usize, usize), p: DwParams) -> Vec<f32> {
        let [n, c, h, wd] = xd;
        let g = Geom::new(&xd, &[c, 1, k.0, k.1], p).unwrap();
        let mut y = vec![0f32; n * c * g.oh * g.ow];
        for b in 0..n {
            for ch in 0..c {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0f32;
                        for ky in 0..k.0 {
                            for kx in 0..k.1 {
                                let iy = (oy * g.sh + ky) as isize - g.ph as isize;
                                let ix = (ox * g.sw + kx) as isize - g.pw as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    s += x[((b * c + ch) * h + iy as usize) * wd + ix as usize]
                                        * w[(ch * k.0 + ky) * k.1 + kx];
                                }
                            }
                        }
                        y[((b * c + ch) * g.oh + oy) * g.ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
    }

    /// The whole-tensor path (CUDA's) against the CPU kernel: forward and both gradients,
    /// odd sizes, rectangular kernels, stride and padding.
    #[test]
    fn shift_sum_path_matches_the_kernel() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(10);
        let dev = Device::Cpu;
        let cases = [
            ([2, 3, 9, 7], (7, 7), (1, 1), (3, 3)),
            ([1, 4, 11, 13], (3, 3), (2, 2), (1, 1)),
            ([3, 2, 8, 8], (3, 3), (2, 2), (0, 0)),
            ([2, 5, 6, 5], (5, 3), (1, 2), (2, 1)),
            ([1, 3, 5, 5], (1, 1), (1, 1), (0, 0)),
            ([2, 3, 2, 2], (7, 7), (1, 1), (3, 3)),
            ([1, 2, 3, 2], (3, 3), (2, 2), (1, 1)),
        ];
        for (xd, k, s, pd) in cases {
            let p = DwParams {
                stride: s,
                padding: pd,
            };
            let x = rng.var(0f32, 1.0, &xd, &dev)?;
            let w = rng.var(0f32, 1.0, (xd[1], 1, k.0, k.1), &dev)?;
            let y = depthwise_conv2d(&x, &w, p)?;
            let y2 = depthwise_shift_sum(&x, &w, p)?;
            assert_eq!(y.dims(), y2.dims(), "{xd:?} {k:?} {s:?} {pd:?}");
            let (a, b) = (
                y.flatten_all()?.to_vec1::<f32>()?,
                y2.flatten_all()?.to_vec1()?,
            );
            assert!(max_rel(&b, &a) < 1e-5, "forward {xd:?} {k:?} {s:?} {pd:?}");
            let r = rng.randn(0f32, 1.0, y.shape(), &dev)?;
            let g1 = (y * &r)?.sum_all()?.backward()?;
            let g2 = (y2 * &r)?.sum_all()?.backward()?;
            for v in [&x, &w] {
                let a = g1.get(v).unwrap().flatten_all()?.to_vec1::<f32>()?;
                let b = g2.get(v).unwrap().flatten_all()?.to_vec1::<f32>()?;
                assert!(max_rel(&b, &a) < 1e-5, "grad {xd:?} {k:?} {s:?} {pd:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn small_planes_forward_gives_the_per_plane_bits() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(12);
        let dev = Device::Cpu;
        for (xd, k, s, pd) in [
            (
                [3usize, 37, 4, 4],
                (3usize, 3usize),
                (1usize, 1usize),
                (1usize, 1usize),
            ),
            ([2, 17, 5, 3], (3, 3), (2, 2), (1, 1)),
            ([2, 5, 3, 3], (7, 7), (1, 1), (3, 3)),
        ] {
            let p = DwParams {
                stride: s,
                padding: pd,
            };
            let x: Vec<f32> = rng.randn(0f32, 1.0, &xd, &dev)?.flatten_all()?.to_vec1()?;
            let w: Vec<f32> = rng
                .randn(0f32, 1.0, (xd[1], 1, k.0, k.1), &dev)?
                .flatten_all()?
                .to_vec1()?;
            let g = Geom::new(&xd, &[xd[1], 1, k.0, k.1], p)?;
            assert!(g.oh * g.ow < small::SMALL_PLANE);
            let mut y = vec![0f32; g.n * g.c * g.oh * g.ow];
            small::forward(&g.small(), &x, &w, &mut y);
            let want = forward_per_plane(&g, &x, &w);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&want), "{xd:?} {k:?} {s:?}");
        }
        Ok(())
    }

    #[test]
    fn forward_matches_naive_and_grads_match_candle_conv() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(11);
        let dev = Device::Cpu;
        let cases = [
            ([2, 3, 9, 7], (7, 7), (1, 1), (3, 3)),
            ([1, 4, 11, 13], (3, 3), (2, 2), (1, 1)),
            ([3, 2, 8, 8], (3, 3), (2, 2), (0, 0)),
            ([2, 5, 6, 5], (5, 3), (1, 2), (2, 1)),
            ([1, 3, 5, 5], (1, 1), (1, 1), (0, 0)),
            ([2, 3, 2, 2], (7, 7), (1, 1), (3, 3)),
            ([2, 3, 1, 1], (7, 7), (1, 1), (3, 3)),
            ([1, 2, 3, 2], (3, 3), (2, 2), (1, 1)),
            ([2, 2, 4, 6], (7, 7), (1, 1), (3, 3)),
            // stride 1 runs the flat path: MobileNet's 3x3, no padding, uneven kernel/padding
            ([2, 3, 4, 4], (3, 3), (1, 1), (1, 1)),
            ([2, 2, 7, 5], (3, 3), (1, 1), (0, 0)),
            ([1, 2, 6, 9], (3, 5), (1, 1), (0, 2)),
            // output planes under small::SMALL_PLANE pixels run channel-blocked: 20 channels
            // are a block of 16 and one of 4
            ([2, 20, 5, 5], (3, 3), (1, 1), (1, 1)),
            ([3, 18, 4, 4], (3, 3), (2, 2), (1, 1)),
            // at or past it, plane by plane (stride 1 flat, stride 2 by rows)
            ([2, 3, 12, 11], (3, 3), (1, 1), (1, 1)),
            ([1, 2, 21, 20], (3, 3), (2, 2), (1, 1)),
        ];
        for (xd, k, s, pd) in cases {
            let p = DwParams {
                stride: s,
                padding: pd,
            };
            let x = rng.var(0f32, 1.0, &xd, &dev)?;
            let w = rng.var(0f32, 1.0, (xd[1], 1, k.0, k.1), &dev)?;
            let y = depthwise_conv2d(&x, &w, p)?;
            let yv = y.flatten_all()?.to_vec1::<f32>()?;
            let want = naive(
                &x.flatten_all()?.to_vec1()?,
                xd,
                &w.flatten_all()?.to_vec1()?,
                k,
                p,
            );
            assert_eq!(yv.len(), want.len());
            assert!(
                max_rel(&yv, &want) < 1e-5,
                "forward {xd:?} {k:?} {s:?} {pd:?}"
            );
            // gradients of sum(y * r) against candle's own grouped conv (square cases)
            let r = rng.randn(0f32, 1.0, y.shape(), &dev)?;
            let gs = (y * &r)?.sum_all()?.backward()?;
            // candle's conv2d backward cannot recover input sizes that stride truncates
            let exact = (xd[2] + 2 * pd.0 - k.0) % s.0 == 0 && (xd[3] + 2 * pd.1 - k.1) % s.1 == 0;
            if s.0 == s.1 && pd.0 == pd.1 && exact {
                let y2 = x.conv2d(&w, pd.0, s.0, 1, xd[1])?;
                let g2 = (y2 * &r)?.sum_all()?.backward()?;
                for v in [&x, &w] {
                    let a = gs.get(v).unwrap().flatten_all()?.to_vec1::<f32>()?;
                    let b = g2.get(v).unwrap().flatten_all()?.to_vec1::<f32>()?;
                    assert!(max_rel(&a, &b) < 1e-5, "grad {xd:?} {k:?} {s:?} {pd:?}");
                }
            } else {
                // finite differences on a few weight and input entries (f64 loss)
                let xv: Vec<f32> = x.flatten_all()?.to_vec1()?;
                let wv: Vec<f32> = w.flatten_all()?.to_vec1()?;
                let rv: Vec<f32> = r.flatten_all()?.to_vec1()?;
                let loss = |xv: &[f32], wv: &[f32]| -> f64 {
                    naive(xv, xd, wv, k, p)
                        .iter()
                        .zip(&rv)
                        .map(|(a, b)| (*a as f64) * (*b as f64))
                        .sum()
                };
                let gw = gs.get(&w).unwrap().flatten_all()?.to_vec1::<f32>()?;
                for i in [0, wv.len() / 2, wv.len() - 1] {
                    let (mut a, mut b) = (wv.clone(), wv.clone());
                    a[i] += 1e-2;
                    b[i] -= 1e-2;
                    let fd = (loss(&xv, &a) - loss(&xv, &b)) / 2e-2;
                    assert!(
                        (fd - gw[i] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
                        "fd w {i}"
                    );
                }
                let gx = gs.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
                for i in [0, xv.len() / 3, xv.len() / 2, xv.len() - 1] {
                    let (mut a, mut b) = (xv.clone(), xv.clone());
                    a[i] += 1e-2;
                    b[i] -= 1e-2;
                    let fd = (loss(&a, &wv) - loss(&b, &wv)) / 2e-2;
                    assert!(
                        (fd - gx[i] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
                        "fd x {i}"
                    );
                }
            }
        }
        Ok(())
    }
}
