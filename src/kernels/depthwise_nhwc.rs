//! Channels-last depthwise convolution (stride 1, "same"-style zero padding, with bias) for
//! ConvNeXt blocks: `(N, H, W, C)` in and out, every loop innermost over the channels, so it
//! vectorises at any plane size (the NCHW kernel's rows are only 2-16 values wide on
//! ConvNeXt's late stages). AVX-512 or AVX2 code (both with FMA) is chosen at run time where the CPU has it.
//! Each image is staged with zero columns each side, and a 7x7 kernel runs in register
//! blocks of pixels by 16 channels (the forward and input gradient 8 or 4 pixels, the
//! weight gradient one kernel row's seven taps), giving the bits of the plain loop. On
//! CUDA the kernels `dwl_*` of `kernels/cuda/depthwise.cu` (the `gpu_*` launch functions
//! below), in f32, bf16 or f16.
//!
//! [`depthwise_nhwc_from_nchw`] takes the block's NCHW input as it is and transposes each
//! image into a scratch buffer on the way in (and again for the weight gradient), so the
//! channels-last copy of the input is never kept in the graph: an activation-sized tensor
//! less per ConvNeXt block, the same values bit for bit.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gpu::{self, Arg, Buffer, Grid, Launcher};
#[cfg(feature = "cuda")]
use {super::gpu::cuda, candle_core::CudaStorage};

/// Images per partial sum of the weight gradient (fixed, so the sums do not depend on the
/// thread count).
const IMAGES_PER_PARTIAL: usize = 4;

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, what)
}

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    kh: usize,
    kw: usize,
    ph: usize,
    pw: usize,
}

impl Geom {
    /// Output rows / columns equal the input's (stride 1, `out = in + 2p - k + 1`).
    fn check(&self) -> Result<()> {
        if self.kh != 2 * self.ph + 1 || self.kw != 2 * self.pw + 1 {
            candle_core::bail!("depthwise_nhwc: needs kernel = 2 * padding + 1")
        }
        Ok(())
    }
}

/// `acc[c] += a[c] * b[c]`.
#[inline(always)]
fn fma_row<const FMA: bool>(acc: &mut [f32], a: &[f32], b: &[f32]) {
    let n = acc.len();
    let (a, b) = (&a[..n], &b[..n]);
    for i in 0..n {
        acc[i] = if FMA {
            a[i].mul_add(b[i], acc[i])
        } else {
            acc[i] + a[i] * b[i]
        };
    }
}

/// Channels per register block of the forward / input-gradient kernel: one AVX-512 vector,
/// two AVX2 vectors.
const LANES: usize = 16;

/// Kernel side of the unrolled blocks (ConvNeXt's 7x7); other sizes go pixel by pixel.
const UNROLLED_K: usize = 7;

/// One image, `(H, W, C)` (or `(C, H, W)` with `nchw`), staged as `(H, W + 2 pw, C)` with `pw`
/// zero columns each side, so that every tap of every output pixel reads inside its row.
fn stage_padded(image: &[f32], g: &Geom, nchw: bool) -> Vec<f32> {
    let (w, c, pw) = (g.w, g.c, g.pw);
    let staged;
    let nhwc = if nchw {
        staged = to_channels_last(image, g);
        &staged[..]
    } else {
        image
    };
    let pad_row = (w + 2 * pw) * c;
    let mut out = vec![0f32; g.h * pad_row];
    for (dst, src) in out.chunks_exact_mut(pad_row).zip(nhwc.chunks_exact(w * c)) {
        dst[pw * c..(pw + w) * c].copy_from_slice(src);
    }
    out
}

/// `o[c] = bias[c] + sum_taps x_shifted[c] * taps[c]` for one output pixel `(oy, ox)` and the
/// channels `chans`, from the column-padded image `pad` ([`stage_padded`]): the taps in
/// row-major order, the rows outside the image skipped, the padding columns multiplied in as
/// zeros.
#[inline(always)]
fn conv_pixel<const FMA: bool>(
    g: &Geom,
    pad: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    (oy, ox): (usize, usize),
    chans: std::ops::Range<usize>,
    o: &mut [f32],
) {
    let c = g.c;
    let pad_row = (g.w + 2 * g.pw) * c;
    match bias {
        Some(b) => o.copy_from_slice(&b[chans.clone()]),
        None => o.fill(0.0),
    }
    for ky in 0..g.kh {
        let iy = oy + ky;
        if iy < g.ph || iy - g.ph >= g.h {
            continue;
        }
        let row = &pad[(iy - g.ph) * pad_row..(iy - g.ph + 1) * pad_row];
        for kx in 0..g.kw {
            let t = &taps[(ky * g.kw + kx) * c..(ky * g.kw + kx + 1) * c];
            let at = (ox + kx) * c;
            fma_row::<FMA>(o, &row[at + chans.start..at + chans.end], &t[chans.clone()]);
        }
    }
}

/// [`LANES`] channels from `cb` of the output pixels `ox0..ox0 + NB` of row `oy`, `KW x KW`
/// kernel: the same operations in the same order as [`conv_pixel`], unrolled over the taps of
/// a kernel row and the pixels with one bounds check per kernel row, so the compiler keeps
/// the accumulators and the row's `NB + KW - 1` input vectors in registers (each tap vector
/// is loaded once per block, each input vector once per kernel row).
#[inline(always)]
fn conv_block<const FMA: bool, const NB: usize, const KW: usize>(
    g: &Geom,
    pad: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    (oy, ox0): (usize, usize),
    cb: usize,
    row: &mut [f32],
) {
    let c = g.c;
    let pad_row = (g.w + 2 * g.pw) * c;
    let init: [f32; LANES] = match bias {
        Some(b) => b[cb..cb + LANES].try_into().expect("LANES values"),
        None => [0.0; LANES],
    };
    let mut acc = [init; NB];
    for ky in 0..KW {
        let iy = oy + ky;
        if iy < g.ph || iy - g.ph >= g.h {
            continue;
        }
        let t0 = ky * KW * c + cb;
        let trow = &taps[t0..t0 + (KW - 1) * c + LANES];
        let s0 = (iy - g.ph) * pad_row + ox0 * c + cb;
        let window = &pad[s0..s0 + (NB + KW - 2) * c + LANES];
        for kx in 0..KW {
            // SAFETY: kx * c + LANES <= trow.len(), as kx < KW
            let t: [f32; LANES] = unsafe { *(trow.as_ptr().add(kx * c) as *const [f32; LANES]) };
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: (j + kx) * c + LANES <= window.len(), as j < NB and kx < KW
                let s: [f32; LANES] =
                    unsafe { *(window.as_ptr().add((j + kx) * c) as *const [f32; LANES]) };
                for l in 0..LANES {
                    a[l] = if FMA {
                        s[l].mul_add(t[l], a[l])
                    } else {
                        a[l] + s[l] * t[l]
                    };
                }
            }
        }
    }
    for (j, a) in acc.iter().enumerate() {
        row[(ox0 + j) * c + cb..][..LANES].copy_from_slice(a);
    }
}

/// Per image: `out` `(H, W, C)` from the column-padded `pad` ([`stage_padded`]). A 7x7 kernel
/// runs in register blocks ([`conv_block`]) of `NB` pixels (the row's rest in blocks of 4, 2
/// and 1) by [`LANES`] channels; channels past the last full block of lanes, and other
/// kernel sizes, pixel by pixel. Every path gives the same bits.
#[inline(always)]
fn conv_image<const FMA: bool, const NB: usize>(
    g: &Geom,
    pad: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (w, c) = (g.w, g.c);
    let unrolled = g.kh == UNROLLED_K && g.kw == UNROLLED_K;
    let full = if unrolled { c / LANES * LANES } else { 0 };
    for (oy, row) in out.chunks_exact_mut(w * c).enumerate() {
        let mut ox0 = 0;
        while ox0 < w {
            let rest = w - ox0;
            let nb = if rest >= NB {
                NB
            } else {
                [4, 2, 1].into_iter().find(|&b| b <= rest).unwrap_or(1)
            };
            for cb in (0..full).step_by(LANES) {
                let at = (oy, ox0);
                match nb {
                    _ if nb == NB => {
                        conv_block::<FMA, NB, UNROLLED_K>(g, pad, taps, bias, at, cb, row)
                    }
                    4 => conv_block::<FMA, 4, UNROLLED_K>(g, pad, taps, bias, at, cb, row),
                    2 => conv_block::<FMA, 2, UNROLLED_K>(g, pad, taps, bias, at, cb, row),
                    _ => conv_block::<FMA, 1, UNROLLED_K>(g, pad, taps, bias, at, cb, row),
                }
            }
            if full < c {
                for ox in ox0..ox0 + nb {
                    let o = &mut row[ox * c + full..(ox + 1) * c];
                    conv_pixel::<FMA>(g, pad, taps, bias, (oy, ox), full..c, o);
                }
            }
            ox0 += nb;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_image_avx2(
    g: &Geom,
    src: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    conv_image::<true, 4>(g, src, taps, bias, out)
}

/// [`conv_image`] with FMA, compiled for AVX-512 (16 channels per vector).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn conv_image_avx512(
    g: &Geom,
    src: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    conv_image::<true, 8>(g, src, taps, bias, out)
}

/// [`grad_w_image`] with FMA, compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn grad_w_image_avx512(g: &Geom, x: &[f32], gy: &[f32], gw: &mut [f32], gb: &mut [f32]) {
    grad_w_image::<true>(g, x, gy, gw, gb)
}

/// Whether this thread's kernels use the FMA variants: AVX2 + FMA or AVX-512, as
/// [`super::simd::level`] allows (a test's cap included).
fn uses_fma() -> bool {
    super::simd::level() >= super::simd::SimdLevel::Avx2
}

/// Where a buffer of images is NCHW instead of channels-last.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Nchw {
    src: bool,
    out: bool,
}

/// All images, in parallel; with `nchw.src` each source image is transposed to channels-last
/// first, with `nchw.out` each result is transposed to NCHW.
fn conv_all(g: &Geom, src: &[f32], taps: &[f32], bias: Option<&[f32]>, nchw: Nchw) -> Vec<f32> {
    let per = g.h * g.w * g.c;
    let mut out = vec![0f32; g.n * per];
    let fast = uses_fma();
    let wide = super::simd::level() == super::simd::SimdLevel::Avx512;
    out.par_chunks_mut(per)
        .zip(src.par_chunks(per))
        .for_each(|(o, s)| {
            let padded = stage_padded(s, g, nchw.src);
            let s = &padded[..];
            let mut result = nchw.out.then(|| vec![0f32; per]);
            let dst = result.as_deref_mut().unwrap_or(&mut *o);
            #[cfg(target_arch = "x86_64")]
            if wide {
                // SAFETY: the CPU has AVX-512, AVX2 and FMA (checked above).
                unsafe { conv_image_avx512(g, s, taps, bias, dst) };
            } else if fast {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                unsafe { conv_image_avx2(g, s, taps, bias, dst) };
            } else {
                conv_image::<false, 4>(g, s, taps, bias, dst)
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = (fast, wide);
                conv_image::<false, 4>(g, s, taps, bias, dst)
            }
            if let Some(r) = result {
                super::channels_last::transpose_images(&r, o, g.c, g.h * g.w, false);
            }
        });
    out
}

/// One `(C, H, W)` image as `(H, W, C)`.
fn to_channels_last(image: &[f32], g: &Geom) -> Vec<f32> {
    let mut t = vec![0f32; image.len()];
    super::channels_last::transpose_images(image, &mut t, g.c, g.h * g.w, true);
    t
}

/// `(C, 1, KH, KW)` weights as `(KH*KW, C)` taps, optionally flipped (for the input gradient).
fn taps_of(w: &[f32], c: usize, kh: usize, kw: usize, flip: bool) -> Vec<f32> {
    let kk = kh * kw;
    let mut t = vec![0f32; kk * c];
    for ch in 0..c {
        for k in 0..kk {
            let src = if flip { kk - 1 - k } else { k };
            t[k * c + ch] = w[ch * kk + src];
        }
    }
    t
}

/// Weight and bias gradient of one image: `gw[tap, c] += sum g[oy, ox, c] * x[iy, ix, c]`
/// over the output pixels in row-major order, `x` column-padded ([`stage_padded`]; rows
/// outside the image skipped, padding columns multiplied in as zeros, which leaves every sum
/// as it was: a sum starting from +0 never becomes -0). A 7x7 kernel runs per kernel row
/// and [`LANES`] channels with the row's seven tap sums in registers ([`grad_w_block`]);
/// channels past the last full block of lanes, and other kernel sizes, pixel by pixel.
#[inline(always)]
fn grad_w_image<const FMA: bool>(
    g: &Geom,
    pad: &[f32],
    gy: &[f32],
    gw: &mut [f32],
    gb: &mut [f32],
) {
    let (w, c) = (g.w, g.c);
    let pad_row = (w + 2 * g.pw) * c;
    for go in gy.chunks_exact(c) {
        for (b, &v) in gb.iter_mut().zip(go) {
            *b += v;
        }
    }
    let unrolled = g.kh == UNROLLED_K && g.kw == UNROLLED_K;
    let full = if unrolled { c / LANES * LANES } else { 0 };
    for cb in (0..full).step_by(LANES) {
        for ky in 0..UNROLLED_K {
            grad_w_block::<FMA, UNROLLED_K>(g, pad, gy, gw, ky, cb);
        }
    }
    if full == c {
        return;
    }
    for oy in 0..g.h {
        for ox in 0..w {
            let go = &gy[(oy * w + ox) * c + full..(oy * w + ox + 1) * c];
            for ky in 0..g.kh {
                let iy = oy + ky;
                if iy < g.ph || iy - g.ph >= g.h {
                    continue;
                }
                for kx in 0..g.kw {
                    let xi = (iy - g.ph) * pad_row + (ox + kx) * c;
                    let t = ky * g.kw + kx;
                    fma_row::<FMA>(
                        &mut gw[t * c + full..(t + 1) * c],
                        go,
                        &pad[xi + full..xi + c],
                    );
                }
            }
        }
    }
}

/// The `KW` tap sums of kernel row `ky`, [`LANES`] channels from `cb`, over one image: held
/// in registers across all output pixels (in row-major order, four at a time with the
/// window's inputs loaded once), added to `gw` at the end.
#[inline(always)]
fn grad_w_block<const FMA: bool, const KW: usize>(
    g: &Geom,
    pad: &[f32],
    gy: &[f32],
    gw: &mut [f32],
    ky: usize,
    cb: usize,
) {
    const NB: usize = 4;
    let (w, c) = (g.w, g.c);
    let pad_row = (w + 2 * g.pw) * c;
    let mut acc = [[0f32; LANES]; KW];
    for (kx, a) in acc.iter_mut().enumerate() {
        *a = gw[(ky * KW + kx) * c + cb..][..LANES]
            .try_into()
            .expect("LANES values");
    }
    let fma = |a: &mut [f32; LANES], go: &[f32; LANES], x: &[f32; LANES]| {
        for l in 0..LANES {
            a[l] = if FMA {
                go[l].mul_add(x[l], a[l])
            } else {
                a[l] + go[l] * x[l]
            };
        }
    };
    for oy in 0..g.h {
        let iy = oy + ky;
        if iy < g.ph || iy - g.ph >= g.h {
            continue;
        }
        let xrow = &pad[(iy - g.ph) * pad_row..(iy - g.ph + 1) * pad_row];
        let grow = &gy[oy * w * c..(oy + 1) * w * c];
        let load = |s: &[f32], at: usize| -> [f32; LANES] {
            s[at..at + LANES].try_into().expect("LANES values")
        };
        let mut ox = 0;
        while ox + NB <= w {
            let window = &xrow[ox * c + cb..ox * c + cb + (NB + KW - 2) * c + LANES];
            let gblock = &grow[ox * c + cb..ox * c + cb + (NB - 1) * c + LANES];
            for (kx, a) in acc.iter_mut().enumerate() {
                for j in 0..NB {
                    // SAFETY: (j + kx) * c + LANES <= window.len() and j * c + LANES <=
                    // gblock.len(), as j < NB and kx < KW
                    let (x, go) = unsafe {
                        (
                            &*(window.as_ptr().add((j + kx) * c) as *const [f32; LANES]),
                            &*(gblock.as_ptr().add(j * c) as *const [f32; LANES]),
                        )
                    };
                    fma(a, go, x);
                }
            }
            ox += NB;
        }
        for ox in ox..w {
            let go = load(grow, ox * c + cb);
            for (kx, a) in acc.iter_mut().enumerate() {
                fma(a, &go, &load(xrow, (ox + kx) * c + cb));
            }
        }
    }
    for (kx, a) in acc.iter().enumerate() {
        gw[(ky * KW + kx) * c + cb..][..LANES].copy_from_slice(a);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn grad_w_image_avx2(g: &Geom, x: &[f32], gy: &[f32], gw: &mut [f32], gb: &mut [f32]) {
    grad_w_image::<true>(g, x, gy, gw, gb)
}

/// `nchw`: the input is `(N, C, H, W)` (CPU only); the output is channels-last either way.
struct DwNhwc {
    g: Geom,
    nchw: bool,
}

/// Backward: `(x, w, gy)` -> packed `[gx (x's layout) | gw (C*KH*KW, PyTorch order) | gb (C)]`.
struct DwNhwcBwd {
    g: Geom,
    nchw: bool,
}

/// CUDA input gradient: `(gy, w) -> gx`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct DwNhwcBwdInputCuda {
    g: Geom,
}

/// CUDA weight and bias gradients: `(x, gy) -> [gw (C*KH*KW) | gb (C)]`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct DwNhwcBwdParamsCuda {
    g: Geom,
}

impl CustomOp3 for DwNhwc {
    fn name(&self) -> &'static str {
        "depthwise-nhwc"
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
        let what = "depthwise_nhwc";
        let (gpu, dt) = cuda::launcher(&[s1, s2, s3], what)?;
        let (x, w, b) = (
            cuda::input(s1, l1, what)?,
            cuda::input(s2, l2, what)?,
            cuda::input(s3, l3, what)?,
        );
        let g = self.g;
        let y = gpu_forward(&gpu, dt, &x, &w, &b, [g.n, g.h, g.w, g.c], (g.kh, g.kw))?;
        Ok((y.into_storage(gpu.dev)?, l1.shape().clone()))
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
        let g = self.g;
        let x = slice(s1, l1, "depthwise_nhwc")?;
        let w = slice(s2, l2, "depthwise_nhwc")?;
        let b = slice(s3, l3, "depthwise_nhwc")?;
        let taps = taps_of(w, g.c, g.kh, g.kw, false);
        let nchw = Nchw {
            src: self.nchw,
            out: false,
        };
        let y = conv_all(&g, x, &taps, Some(b), nchw);
        if self.nchw {
            return Ok((CpuStorage::F32(y), Shape::from((g.n, g.h, g.w, g.c))));
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.g;
        let nx = x.elem_count();
        let nw = w.elem_count();
        if x.device().is_cuda() {
            let grad = grad.contiguous()?;
            let gx = grad.apply_op2_no_bwd(w, &DwNhwcBwdInputCuda { g })?;
            let packed = x.apply_op2_no_bwd(&grad, &DwNhwcBwdParamsCuda { g })?;
            let (gw, gb) = (packed.narrow(0, 0, nw)?, packed.narrow(0, nw, g.c)?);
            return Ok((
                Some(gx),
                Some(gw.reshape(w.shape())?),
                Some(gb.reshape(b.shape())?),
            ));
        }
        let bwd = DwNhwcBwd { g, nchw: self.nchw };
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &bwd)?;
        let (gx, small) = super::split_packed(&packed, nx, &[nw, g.c])?;
        Ok((
            Some(gx.reshape(x.shape())?),
            Some(small[0].reshape(w.shape())?),
            Some(small[1].reshape(b.shape())?),
        ))
    }
}

impl CustomOp3 for DwNhwcBwd {
    fn name(&self) -> &'static str {
        "depthwise-nhwc-bwd"
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
        let g = self.g;
        let x = slice(s1, l1, "depthwise_nhwc backward")?;
        let w = slice(s2, l2, "depthwise_nhwc backward")?;
        let gy = slice(s3, l3, "depthwise_nhwc backward")?;
        if gy.len() != x.len() {
            candle_core::bail!("depthwise_nhwc backward: gradient size mismatch")
        }
        let (c, kk) = (g.c, g.kh * g.kw);
        // input gradient: the same correlation with the flipped kernel (stride 1, symmetric
        // padding)
        let flipped = taps_of(w, c, g.kh, g.kw, true);
        let nchw = Nchw {
            src: false,
            out: self.nchw,
        };
        let gx = conv_all(&g, gy, &flipped, None, nchw);
        let per = g.h * g.w * c;
        let fast = uses_fma();
        let wide = super::simd::level() == super::simd::SimdLevel::Avx512;
        // weight and bias gradients: a partial per block of images, added in block order
        let n = x.len() / per.max(1);
        let blocks = n.div_ceil(IMAGES_PER_PARTIAL);
        let sums = super::sum_in_order(blocks, kk * c + c, |blk| {
            let mut acc = vec![0f32; kk * c + c];
            let (gw, gb) = acc.split_at_mut(kk * c);
            let images = blk * IMAGES_PER_PARTIAL..((blk + 1) * IMAGES_PER_PARTIAL).min(n);
            for i in images {
                let (xi, gi) = (&x[i * per..(i + 1) * per], &gy[i * per..(i + 1) * per]);
                let padded = stage_padded(xi, &g, self.nchw);
                let xi = &padded[..];
                #[cfg(target_arch = "x86_64")]
                if wide {
                    // SAFETY: the CPU has AVX-512, AVX2 and FMA (checked above).
                    unsafe { grad_w_image_avx512(&g, xi, gi, gw, gb) };
                    continue;
                }
                if fast {
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    unsafe { grad_w_image_avx2(&g, xi, gi, gw, gb) };
                    continue;
                }
                let _ = (fast, wide);
                grad_w_image::<false>(&g, xi, gi, gw, gb);
            }
            acc
        });
        let (gw_t, gb) = sums.split_at(kk * c);
        let mut out = gx;
        out.reserve(c * kk + c);
        // taps (KH*KW, C) back to PyTorch's (C, 1, KH, KW)
        for ch in 0..c {
            for k in 0..kk {
                out.push(gw_t[k * c + ch]);
            }
        }
        out.extend_from_slice(gb);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

impl CustomOp2 for DwNhwcBwdInputCuda {
    fn name(&self) -> &'static str {
        "depthwise-nhwc-bwd-input-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("depthwise-nhwc-bwd-input-cuda: CUDA only")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let what = "depthwise_nhwc backward";
        let (gpu, dt) = cuda::launcher(&[s1, s2], what)?;
        let (gy, w) = (cuda::input(s1, l1, what)?, cuda::input(s2, l2, what)?);
        let g = self.g;
        let gx = gpu_backward_input(&gpu, dt, &gy, &w, [g.n, g.h, g.w, g.c], (g.kh, g.kw))?;
        Ok((gx.into_storage(gpu.dev)?, l1.shape().clone()))
    }
}

impl CustomOp2 for DwNhwcBwdParamsCuda {
    fn name(&self) -> &'static str {
        "depthwise-nhwc-bwd-params-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("depthwise-nhwc-bwd-params-cuda: CUDA only")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let what = "depthwise_nhwc backward";
        let (gpu, dt) = cuda::launcher(&[s1, s2], what)?;
        let (x, gy) = (cuda::input(s1, l1, what)?, cuda::input(s2, l2, what)?);
        let g = self.g;
        let p = gpu_backward_params(&gpu, dt, &x, &gy, [g.n, g.h, g.w, g.c], (g.kh, g.kw))?;
        Ok((
            p.into_storage(gpu.dev)?,
            Shape::from(g.c * g.kh * g.kw + g.c),
        ))
    }
}

// ---- GPU: the kernels dwl_* of kernels/cuda/depthwise.cu, launched through a gpu::Launcher ----

fn kernel(name: &str, dt: DType) -> Result<String> {
    Ok(format!("{name}_{}", gpu::suffix(dt)?))
}

/// `N, H, W, C, KH, KW` as the kernels' arguments (odd kernels).
fn gpu_args(d: [usize; 4], k: (usize, usize)) -> Result<Vec<Arg>> {
    let what = "depthwise_nhwc";
    if k.0.is_multiple_of(2) || k.1.is_multiple_of(2) {
        candle_core::bail!("{what}: needs an odd kernel, got {k:?}")
    }
    gpu::count(what, d.iter().product())?;
    [d[0], d[1], d[2], d[3], k.0, k.1]
        .iter()
        .map(|&v| gpu::int(what, v))
        .collect()
}

/// Forward on the GPU: `x` `(N, H, W, C)` (`dims`), `w` `(C, 1, KH, KW)`, `b` `(C)`, all of
/// dtype `dt`; stride 1, padding `(KH / 2, KW / 2)`.
pub fn gpu_forward<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    w: &L::Buf,
    b: &L::Buf,
    dims: [usize; 4],
    k: (usize, usize),
) -> Result<L::Buf> {
    let total: usize = dims.iter().product();
    let y = l.alloc(dt, total)?;
    let mut args = vec![
        Arg::Ptr(x.addr()),
        Arg::Ptr(w.addr()),
        Arg::Ptr(b.addr()),
        Arg::Ptr(y.addr()),
    ];
    args.extend(gpu_args(dims, k)?);
    l.launch(
        &gpu::DEPTHWISE,
        &kernel("dwl_fwd", dt)?,
        Grid::items(total),
        &args,
    )?;
    Ok(y)
}

/// Input gradient on the GPU from `gy` `(N, H, W, C)` and `w`.
pub fn gpu_backward_input<L: Launcher>(
    l: &L,
    dt: DType,
    gy: &L::Buf,
    w: &L::Buf,
    dims: [usize; 4],
    k: (usize, usize),
) -> Result<L::Buf> {
    let total: usize = dims.iter().product();
    let gx = l.alloc(dt, total)?;
    let mut args = vec![Arg::Ptr(gy.addr()), Arg::Ptr(w.addr()), Arg::Ptr(gx.addr())];
    args.extend(gpu_args(dims, k)?);
    l.launch(
        &gpu::DEPTHWISE,
        &kernel("dwl_bwd_input", dt)?,
        Grid::items(total),
        &args,
    )?;
    Ok(gx)
}

/// Weight and bias gradients on the GPU: `[gw (C, 1, KH, KW) | gb (C)]` in dtype `dt`, from
/// partial sums per (32 channels, slice of positions) in f32, slices added in order.
pub fn gpu_backward_params<L: Launcher>(
    l: &L,
    dt: DType,
    x: &L::Buf,
    gy: &L::Buf,
    dims: [usize; 4],
    k: (usize, usize),
) -> Result<L::Buf> {
    let [n, h, w, c] = dims;
    let taps = k.0 * k.1;
    let s = gpu::slices(n * h * w * 32, c.div_ceil(32));
    let parts = l.alloc(DType::F32, s * (taps + 1) * c)?;
    let mut args = vec![
        Arg::Ptr(x.addr()),
        Arg::Ptr(gy.addr()),
        Arg::Ptr(parts.addr()),
    ];
    args.extend(gpu_args(dims, k)?);
    l.launch(
        &gpu::DEPTHWISE,
        &kernel("dwl_wgrad_parts", dt)?,
        Grid::columns(c, s),
        &args,
    )?;
    let m = c * (taps + 1);
    let out = l.alloc(dt, m)?;
    let what = "depthwise_nhwc backward";
    let args = [
        Arg::Ptr(parts.addr()),
        Arg::Ptr(out.addr()),
        gpu::int(what, c)?,
        gpu::int(what, taps)?,
        gpu::int(what, s)?,
    ];
    l.launch(
        &gpu::DEPTHWISE,
        &kernel("dwl_sum_parts", dt)?,
        Grid::items(m),
        &args,
    )?;
    Ok(out)
}

/// Depthwise convolution of channels-last `x` `(N, H, W, C)` with `weight` `(C, 1, KH, KW)`
/// (PyTorch's layout) and `bias` `(C)`, stride 1, padding `(KH / 2, KW / 2)` (odd kernels):
/// `(N, H, W, C)` out, differentiable in all three. CPU f32 runs the kernel above, CUDA its
/// kernels (weight and bias cast to the input's dtype); otherwise the NCHW path
/// (`depthwise_conv2d`) between two permutes.
pub fn depthwise_nhwc(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    super::require_non_empty("depthwise_nhwc", x)?;
    let (n, h, w, c) = x.dims4()?;
    let (wc, one, kh, kw) = weight.dims4()?;
    if wc != c || one != 1 || bias.elem_count() != c || kh % 2 == 0 || kw % 2 == 0 {
        candle_core::bail!(
            "depthwise_nhwc: weight {:?} / bias {:?} for {c} channels",
            weight.dims(),
            bias.dims()
        )
    }
    let g = Geom {
        n,
        h,
        w,
        c,
        kh,
        kw,
        ph: kh / 2,
        pw: kw / 2,
    };
    g.check()?;
    if gpu::runs_on_gpu(x) {
        let dt = x.dtype();
        return x.contiguous()?.apply_op3(
            &weight.to_dtype(dt)?.contiguous()?,
            &bias.to_dtype(dt)?.flatten_all()?.contiguous()?,
            DwNhwc { g, nchw: false },
        );
    }
    if x.device().is_cpu()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.dtype() == DType::F32
        && !super::reference_mode()
    {
        return x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.flatten_all()?.contiguous()?,
            DwNhwc { g, nchw: false },
        );
    }
    depthwise_nhwc_composed(x, weight, bias, g)
}

/// [`depthwise_nhwc`] of `x` `(N, C, H, W)` made channels-last, without keeping that copy:
/// `(N, H, W, C)` out, the same values. CPU f32 only; elsewhere the copy and
/// [`depthwise_nhwc`].
pub fn depthwise_nhwc_from_nchw(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    super::require_non_empty("depthwise_nhwc_from_nchw", x)?;
    let (n, c, h, w) = x.dims4()?;
    let (wc, one, kh, kw) = weight.dims4()?;
    let fast = x.device().is_cpu()
        && [x, weight, bias].iter().all(|t| t.dtype() == DType::F32)
        && !super::reference_mode();
    if !fast || wc != c || one != 1 || bias.elem_count() != c || kh % 2 == 0 || kw % 2 == 0 {
        // the other path (or its error message)
        return depthwise_nhwc(&super::channels_last::to_nhwc(x)?, weight, bias);
    }
    let g = Geom {
        n,
        h,
        w,
        c,
        kh,
        kw,
        ph: kh / 2,
        pw: kw / 2,
    };
    g.check()?;
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.flatten_all()?.contiguous()?,
        DwNhwc { g, nchw: true },
    )
}

fn depthwise_nhwc_composed(x: &Tensor, weight: &Tensor, bias: &Tensor, g: Geom) -> Result<Tensor> {
    let xn = x.permute((0, 3, 1, 2))?;
    let y = super::depthwise_conv2d(
        &xn,
        &weight.to_dtype(x.dtype())?,
        super::DwParams {
            stride: (1, 1),
            padding: (g.ph, g.pw),
        },
    )?;
    super::add_param(&y, &bias.reshape((1, g.c, 1, 1))?)?
        .permute((0, 2, 3, 1))?
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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

    /// The NCHW-input op is the channels-last copy + [`depthwise_nhwc`] bit for bit: output
    /// and the gradients of input, weight and bias.
    #[test]
    fn from_nchw_is_the_copy_and_the_op_bit_for_bit() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(2);
        let dev = Device::Cpu;
        for (n, c, h, w, k) in [
            (2usize, 5usize, 9usize, 7usize, 7usize),
            (3, 17, 4, 4, 7),
            (1, 9, 1, 1, 3),
        ] {
            let x = rng.var(0f32, 1.0, (n, c, h, w), &dev)?;
            let wt = rng.var(0f32, 1.0, (c, 1, k, k), &dev)?;
            let b = rng.var(0f32, 1.0, c, &dev)?;
            let y = depthwise_nhwc_from_nchw(&x, &wt, &b)?;
            let y2 = depthwise_nhwc(&crate::kernels::channels_last::to_nhwc(&x)?, &wt, &b)?;
            assert_eq!(y.dims(), &[n, h, w, c]);
            let what = format!("{n} {c} {h} {w} {k}");
            crate::kernels::assert_same_bits(&y, &y2, &[&x, &wt, &b], &what)?;
        }
        Ok(())
    }

    /// Against the NCHW path (itself tested against naive loops and Candle's conv): forward
    /// and the gradients of input, weight and bias; odd sizes, planes smaller than the kernel.
    #[test]
    fn matches_the_nchw_path() -> Result<()> {
        let mut rng = crate::engine::init::TensorRng::new(1);
        let dev = Device::Cpu;
        for (n, h, w, c, k) in [
            (2usize, 9usize, 7usize, 5usize, 7usize),
            (1, 4, 4, 17, 7),
            (3, 2, 3, 9, 7),
            (2, 1, 1, 4, 7),
            (2, 6, 5, 3, 3),
            (1, 5, 8, 40, 5),
            (2, 9, 15, 40, 7),
        ] {
            let x = rng.var(0f32, 1.0, (n, h, w, c), &dev)?;
            let wt = rng.var(0f32, 1.0, (c, 1, k, k), &dev)?;
            let b = rng.var(0f32, 1.0, c, &dev)?;
            let g = Geom {
                n,
                h,
                w,
                c,
                kh: k,
                kw: k,
                ph: k / 2,
                pw: k / 2,
            };
            let y = depthwise_nhwc(&x, &wt, &b)?;
            let y2 = depthwise_nhwc_composed(&x, &wt, &b, g)?;
            assert_eq!(y.dims(), &[n, h, w, c]);
            let d = max_diff(&y, &y2);
            assert!(d < 1e-4, "forward {n} {h} {w} {c} {k}: {d}");
            let r = rng.randn(0f32, 1.0, y.shape(), &dev)?;
            let g1 = (y * &r)?.sum_all()?.backward()?;
            let g2 = (y2 * &r)?.sum_all()?.backward()?;
            for (i, v) in [&x, &wt, &b].iter().enumerate() {
                let a = g1.get(v).expect("fast gradient");
                let e = g2.get(v).expect("reference gradient");
                assert_eq!(a.dims(), v.dims());
                let scale = e.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
                let d = max_diff(a, e);
                assert!(d < 1e-4 * scale, "gradient {i} of {n} {h} {w} {c} {k}: {d}");
            }
        }
        Ok(())
    }

    /// The register blocks (8, 4, 2 and 1 pixels by 16 channels, over the zero-padded
    /// columns) give the bits of the plain loop over the in-image taps in row-major order,
    /// with the channel tail, 7x7 and other kernel sizes.
    #[test]
    fn blocks_give_the_bits_of_the_plain_loop() -> Result<()> {
        use super::super::simd::{with_cap, SimdLevel};
        // at every level the CPU has: the scalar loop, AVX2 and AVX-512 (FMA)
        for cap in [SimdLevel::Base, SimdLevel::Avx2, SimdLevel::Avx512] {
            with_cap(cap, 2, || -> Result<()> {
                let mut rng = crate::engine::init::TensorRng::new(3);
                let dev = Device::Cpu;
                let fma = uses_fma();
                for (n, h, w, c, k) in [
                    (2usize, 9usize, 15usize, 40usize, 7usize),
                    (1, 4, 7, 16, 7),
                    (1, 3, 2, 33, 7),
                    (1, 6, 5, 20, 3),
                ] {
                    let x = rng.var(0f32, 1.0, (n, h, w, c), &dev)?;
                    let wt = rng.var(0f32, 1.0, (c, 1, k, k), &dev)?;
                    let b = rng.var(0f32, 1.0, c, &dev)?;
                    let y = depthwise_nhwc(&x, &wt, &b)?
                        .flatten_all()?
                        .to_vec1::<f32>()?;
                    let (xv, wv, bv) = (
                        x.flatten_all()?.to_vec1::<f32>()?,
                        wt.flatten_all()?.to_vec1::<f32>()?,
                        b.to_vec1::<f32>()?,
                    );
                    let p = k / 2;
                    let mut expected = Vec::with_capacity(y.len());
                    for i in 0..n {
                        for oy in 0..h {
                            for ox in 0..w {
                                for ch in 0..c {
                                    let mut acc = bv[ch];
                                    for ky in 0..k {
                                        for kx in 0..k {
                                            let (iy, ix) = (oy + ky, ox + kx);
                                            if iy < p || iy - p >= h || ix < p || ix - p >= w {
                                                continue;
                                            }
                                            let s = xv[((i * h + iy - p) * w + ix - p) * c + ch];
                                            let t = wv[(ch * k + ky) * k + kx];
                                            acc = if fma { s.mul_add(t, acc) } else { acc + s * t };
                                        }
                                    }
                                    expected.push(acc);
                                }
                            }
                        }
                    }
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&y), bits(&expected), "{n} {h} {w} {c} {k}");
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The weight and bias gradient of one image: the register blocks over the padded image
    /// give the bits of the plain loop over the in-image taps (pixels in row-major order), in
    /// every variant this CPU can run: the scalar one, and AVX2 and AVX-512 (both FMA).
    #[test]
    fn weight_gradient_gives_the_bits_of_the_plain_loop() {
        use super::super::simd::{detected, SimdLevel};
        let mut variants = vec![SimdLevel::Base];
        if detected() >= SimdLevel::Avx2 {
            variants.push(SimdLevel::Avx2);
        }
        if detected() == SimdLevel::Avx512 {
            variants.push(SimdLevel::Avx512);
        }
        for (variant, (h, w, c, k)) in variants.into_iter().flat_map(|v| {
            [
                (9usize, 15usize, 40usize, 7usize),
                (3, 2, 16, 7),
                (6, 5, 20, 3),
            ]
            .map(|case| (v, case))
        }) {
            let fma = variant != SimdLevel::Base;
            let p = k / 2;
            let g = Geom {
                n: 1,
                h,
                w,
                c,
                kh: k,
                kw: k,
                ph: p,
                pw: p,
            };
            let val = |i: usize, s: f32| ((i as f32 * s).sin() * 3.0).fract();
            let x: Vec<f32> = (0..h * w * c).map(|i| val(i, 0.37)).collect();
            let gy: Vec<f32> = (0..h * w * c).map(|i| val(i, 0.11)).collect();
            let start: Vec<f32> = (0..k * k * c).map(|i| val(i, 0.53)).collect();
            let (mut gw, mut gb) = (start.clone(), vec![0.5f32; c]);
            let pad = stage_padded(&x, &g, false);
            match variant {
                // SAFETY: listed only where the CPU has the variant's features (above).
                #[cfg(target_arch = "x86_64")]
                SimdLevel::Avx512 => unsafe {
                    grad_w_image_avx512(&g, &pad, &gy, &mut gw, &mut gb)
                },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                SimdLevel::Avx2 => unsafe { grad_w_image_avx2(&g, &pad, &gy, &mut gw, &mut gb) },
                _ => grad_w_image::<false>(&g, &pad, &gy, &mut gw, &mut gb),
            }
            let (mut ew, mut eb) = (start, vec![0.5f32; c]);
            for oy in 0..h {
                for ox in 0..w {
                    for ch in 0..c {
                        let go = gy[(oy * w + ox) * c + ch];
                        eb[ch] += go;
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (oy + ky, ox + kx);
                                if iy < p || iy - p >= h || ix < p || ix - p >= w {
                                    continue;
                                }
                                let xv = x[((iy - p) * w + ix - p) * c + ch];
                                let a = &mut ew[(ky * k + kx) * c + ch];
                                *a = if fma {
                                    go.mul_add(xv, *a)
                                } else {
                                    *a + go * xv
                                };
                            }
                        }
                    }
                }
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&gw), bits(&ew), "{variant:?}: weights {h} {w} {c} {k}");
            assert_eq!(bits(&gb), bits(&eb), "{variant:?}: bias {h} {w} {c} {k}");
        }
    }
}
