//! The NCHW depthwise convolution's path for small output planes (under [`SMALL_PLANE`]
//! pixels, MobileNet's late stages at 2x2 to 8x8): a plane's rows are then too short to
//! vectorise, so each image's channels go [`LANES`] at a time, staged channel-innermost in a
//! zero-padded scratch buffer, and every loop runs across those lanes (one or two SIMD
//! registers) whatever the plane size. Any kernel size, stride and padding.
//!
//! Each output is the sum of its taps in kernel order from zero, multiply then add (no FMA),
//! as the per-plane path computes it, so the forward gives that path's bits; the input
//! gradient adds its taps in kernel order and the weight gradient its pixels in plane order,
//! per image, the images' partial sums then added in order: fixed orders whatever the thread
//! count.

use rayon::prelude::*;

use super::simd::simd_fn;

/// Output planes of fewer pixels than this take this path.
pub(super) const SMALL_PLANE: usize = 100;
/// Channels per block: one AVX-512 register, two AVX2 ones.
const LANES: usize = 16;

/// Sizes of one call (the caller's geometry).
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Dims {
    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.ph, self.w + 2 * self.pw)
    }
}

/// `buf[(py * PW + px) * LANES + j]` <- channel `c0 + j` of image `img` (`C` planes of
/// `H*W`), zero in the border and in lanes past `nc`.
fn stage_input(d: &Dims, img: &[f32], c0: usize, nc: usize, buf: &mut [f32]) {
    let (_, pww) = d.padded();
    buf.fill(0.0);
    for j in 0..nc {
        let plane = &img[(c0 + j) * d.h * d.w..(c0 + j + 1) * d.h * d.w];
        for (y, row) in plane.chunks_exact(d.w).enumerate() {
            let base = ((y + d.ph) * pww + d.pw) * LANES + j;
            for (x, &v) in row.iter().enumerate() {
                buf[base + x * LANES] = v;
            }
        }
    }
}

/// `kt[t * LANES + j]` <- tap `t` of channel `c0 + j` (zero past `nc`).
fn stage_taps(w: &[f32], kk: usize, c0: usize, nc: usize, kt: &mut [f32]) {
    kt.fill(0.0);
    for j in 0..nc {
        for t in 0..kk {
            kt[t * LANES + j] = w[(c0 + j) * kk + t];
        }
    }
}

simd_fn! {
    /// One block's outputs, `out[(oy * OW + ox) * LANES + j]`.
    fn forward_block(d: &Dims, buf: &[f32], kt: &[f32], out: &mut [f32]) {
        let (_, pww) = d.padded();
        for oy in 0..d.oh {
            for ox in 0..d.ow {
                let mut acc = [0f32; LANES];
                for ky in 0..d.kh {
                    for kx in 0..d.kw {
                        let at = ((oy * d.sh + ky) * pww + ox * d.sw + kx) * LANES;
                        let t = (ky * d.kw + kx) * LANES;
                        let (xv, kv) = (&buf[at..at + LANES], &kt[t..t + LANES]);
                        for j in 0..LANES {
                            acc[j] += kv[j] * xv[j];
                        }
                    }
                }
                out[(oy * d.ow + ox) * LANES..(oy * d.ow + ox + 1) * LANES].copy_from_slice(&acc);
            }
        }
    }
}

/// Forward of `x (N, C, H, W)` with `w (C, 1, KH, KW)` into `y (N, C, OH, OW)`.
pub(super) fn forward(d: &Dims, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (phh, pww) = d.padded();
    let (kk, plane_in, plane_out) = (d.kh * d.kw, d.h * d.w, d.oh * d.ow);
    y.par_chunks_mut((d.c * plane_out).max(1))
        .zip(x.par_chunks((d.c * plane_in).max(1)))
        .for_each_init(
            || {
                (
                    vec![0f32; phh * pww * LANES],
                    vec![0f32; kk * LANES],
                    vec![0f32; plane_out * LANES],
                )
            },
            |(buf, kt, out), (yo, img)| {
                for c0 in (0..d.c).step_by(LANES) {
                    let nc = LANES.min(d.c - c0);
                    stage_input(d, img, c0, nc, buf);
                    stage_taps(w, kk, c0, nc, kt);
                    forward_block(d, buf, kt, out);
                    for j in 0..nc {
                        let plane = &mut yo[(c0 + j) * plane_out..(c0 + j + 1) * plane_out];
                        for (p, v) in plane.iter_mut().enumerate() {
                            *v = out[p * LANES + j];
                        }
                    }
                }
            },
        );
}

simd_fn! {
    /// One block's input gradient `gin[(iy * W + ix) * LANES + j]` from the staged output
    /// gradient `gys[(oy * OW + ox) * LANES + j]`: each input pixel adds the taps that read
    /// it, in kernel order.
    fn input_grad_block(d: &Dims, gys: &[f32], kt: &[f32], gin: &mut [f32]) {
        for iy in 0..d.h {
            for ix in 0..d.w {
                let mut acc = [0f32; LANES];
                for ky in 0..d.kh {
                    let ty = iy + d.ph;
                    if ty < ky || !(ty - ky).is_multiple_of(d.sh) || (ty - ky) / d.sh >= d.oh {
                        continue;
                    }
                    let oy = (ty - ky) / d.sh;
                    for kx in 0..d.kw {
                        let tx = ix + d.pw;
                        if tx < kx || !(tx - kx).is_multiple_of(d.sw) || (tx - kx) / d.sw >= d.ow {
                            continue;
                        }
                        let at = (oy * d.ow + (tx - kx) / d.sw) * LANES;
                        let t = (ky * d.kw + kx) * LANES;
                        let (gv, kv) = (&gys[at..at + LANES], &kt[t..t + LANES]);
                        for j in 0..LANES {
                            acc[j] += kv[j] * gv[j];
                        }
                    }
                }
                gin[(iy * d.w + ix) * LANES..(iy * d.w + ix + 1) * LANES].copy_from_slice(&acc);
            }
        }
    }
}

/// `gys[p * LANES + j]` <- channel `c0 + j` of the image's output gradient `go` (zero past
/// `nc`).
fn stage_grad(plane_out: usize, go: &[f32], c0: usize, nc: usize, gys: &mut [f32]) {
    gys.fill(0.0);
    for j in 0..nc {
        let plane = &go[(c0 + j) * plane_out..(c0 + j + 1) * plane_out];
        for (p, &v) in plane.iter().enumerate() {
            gys[p * LANES + j] = v;
        }
    }
}

/// Input gradient `(N, C, H, W)` of `gy (N, C, OH, OW)` with `w`.
pub(super) fn backward_input(d: &Dims, gy: &[f32], w: &[f32], gx: &mut [f32]) {
    let (kk, plane_in, plane_out) = (d.kh * d.kw, d.h * d.w, d.oh * d.ow);
    gx.par_chunks_mut((d.c * plane_in).max(1))
        .zip(gy.par_chunks((d.c * plane_out).max(1)))
        .for_each_init(
            || {
                (
                    vec![0f32; plane_out * LANES],
                    vec![0f32; kk * LANES],
                    vec![0f32; plane_in * LANES],
                )
            },
            |(gys, kt, gin), (gxo, go)| {
                for c0 in (0..d.c).step_by(LANES) {
                    let nc = LANES.min(d.c - c0);
                    stage_grad(plane_out, go, c0, nc, gys);
                    stage_taps(w, kk, c0, nc, kt);
                    input_grad_block(d, gys, kt, gin);
                    for j in 0..nc {
                        let plane = &mut gxo[(c0 + j) * plane_in..(c0 + j + 1) * plane_in];
                        for (p, v) in plane.iter_mut().enumerate() {
                            *v = gin[p * LANES + j];
                        }
                    }
                }
            },
        );
}

simd_fn! {
    /// One block's weight-gradient sums `acc[t * LANES + j]` over the output pixels in order.
    fn weight_grad_block(d: &Dims, buf: &[f32], gys: &[f32], acc: &mut [f32]) {
        let (_, pww) = d.padded();
        acc.fill(0.0);
        for oy in 0..d.oh {
            for ox in 0..d.ow {
                let g0 = (oy * d.ow + ox) * LANES;
                let gv = &gys[g0..g0 + LANES];
                for ky in 0..d.kh {
                    for kx in 0..d.kw {
                        let at = ((oy * d.sh + ky) * pww + ox * d.sw + kx) * LANES;
                        let t = (ky * d.kw + kx) * LANES;
                        let xv = &buf[at..at + LANES];
                        let a = &mut acc[t..t + LANES];
                        for j in 0..LANES {
                            a[j] += gv[j] * xv[j];
                        }
                    }
                }
            }
        }
    }
}

/// Weight gradient `(C, 1, KH, KW)` of input `x` and output gradient `gy`: per image its
/// partial sums, then the images added in order.
pub(super) fn backward_weight(d: &Dims, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let (phh, pww) = d.padded();
    let (kk, plane_in, plane_out) = (d.kh * d.kw, d.h * d.w, d.oh * d.ow);
    let mut partial = vec![0f32; d.n * d.c * kk];
    partial
        .par_chunks_mut((d.c * kk).max(1))
        .zip(x.par_chunks((d.c * plane_in).max(1)))
        .zip(gy.par_chunks((d.c * plane_out).max(1)))
        .for_each_init(
            || {
                (
                    vec![0f32; phh * pww * LANES],
                    vec![0f32; plane_out * LANES],
                    vec![0f32; kk * LANES],
                )
            },
            |(buf, gys, acc), ((part, img), go)| {
                for c0 in (0..d.c).step_by(LANES) {
                    let nc = LANES.min(d.c - c0);
                    stage_input(d, img, c0, nc, buf);
                    stage_grad(plane_out, go, c0, nc, gys);
                    weight_grad_block(d, buf, gys, acc);
                    for j in 0..nc {
                        for t in 0..kk {
                            part[(c0 + j) * kk + t] = acc[t * LANES + j];
                        }
                    }
                }
            },
        );
    let mut gw = vec![0f32; d.c * kk];
    for img in partial.chunks_exact((d.c * kk).max(1)) {
        for (g, &v) in gw.iter_mut().zip(img) {
            *g += v;
        }
    }
    gw
}
