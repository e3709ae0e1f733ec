//! The step's gradient checks in one pass over every gradient (PyTorch's
//! `_amp_foreach_non_finite_check_and_unscale_` and `clip_grad_norm_`'s foreach norm, fused):
//! for each f32 tensor, the sum of its squares and the count of its non-finite values, as one
//! f32 tensor left on the tensors' device. On CUDA, two launches cover every tensor
//! (`kernels/cuda/optim.cu`: `grad_check_parts`, one 256-thread block per 4096-element chunk,
//! then `grad_check_sum`, one block per tensor); the CPU makes the same additions in the same
//! order (each thread's strided sum, the warp's butterfly, the block's warps in order), so both
//! give the same bits, and the CPU emulation of the CUDA source checks it.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::gpu::{self, Arg, Buffer, Grid, Launcher};
#[cfg(feature = "cuda")]
use {crate::kernels::gpu::cuda, candle_core::CudaStorage};

/// Threads per block of the check's kernels.
const THREADS: usize = 256;
/// Elements per block of the first pass.
pub const CHUNK: usize = 4096;

/// For tensors `ts` (any dtype, any layout, one device), an f32 tensor of `2 * ts.len()` values
/// on that device: each tensor's sum of squares (in f32, in the kernels' order), then each
/// one's count of non-finite values (NaN, +-inf). Nothing is read back.
pub fn grad_check(ts: &[&Tensor]) -> Result<Tensor> {
    let Some(first) = ts.first() else {
        bail!("grad_check: no tensor")
    };
    let ts: Vec<Tensor> = ts
        .iter()
        .map(|t| t.to_dtype(DType::F32)?.flatten_all()?.contiguous())
        .collect::<Result<_>>()?;
    if !(first.device().is_cpu() || gpu::runs_on_gpu(&ts[0])) {
        // another backend: the same numbers from tensor ops, in that backend's order
        let sums = ts
            .iter()
            .map(|t| t.sqr()?.sum_all())
            .collect::<Result<Vec<_>>>()?;
        let bad = ts
            .iter()
            .map(|t| {
                t.ne(t)?.to_dtype(DType::F32)?.sum_all()?.add(
                    &(t.abs()?
                        .eq(f64::INFINITY)?
                        .to_dtype(DType::F32)?
                        .sum_all()?),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        return Tensor::stack(&[sums, bad].concat(), 0);
    }
    let op = GradCheck {
        rest: ts[1..].to_vec(),
    };
    ts[0].apply_op1_no_bwd(&op)
}

/// The blocks of the first pass: tensor `t`'s chunks are blocks `first[t]..first[t + 1]`.
pub fn first_blocks(lens: &[usize]) -> Result<Vec<u32>> {
    let mut first = Vec::with_capacity(lens.len() + 1);
    let mut b = 0usize;
    first.push(0);
    for &n in lens {
        gpu::count("grad_check", n)?;
        b += n.div_ceil(CHUNK).max(1);
        first.push(gpu::count("grad_check blocks", b)?);
    }
    Ok(first)
}

/// The CUDA kernels' `block_sum` of 256 per-thread values (8 warps): each warp's butterfly,
/// then the warps' sums added in order from 0.
fn block_sum(v: &[f32; THREADS]) -> f32 {
    let mut t = 0.0f32;
    for w in v.chunks_exact(32) {
        let mut lanes = [0f32; 32];
        lanes.copy_from_slice(w);
        for o in [16, 8, 4, 2, 1] {
            let prev = lanes;
            for (i, l) in lanes.iter_mut().enumerate() {
                *l = prev[i] + prev[i ^ o];
            }
        }
        t += lanes[0];
    }
    t
}

fn is_bad(v: f32) -> bool {
    v.to_bits() & 0x7f80_0000 == 0x7f80_0000
}

/// `grad_check_parts` for one chunk (`xs`, at most [`CHUNK`] values).
fn chunk_parts(xs: &[f32]) -> (f32, f32) {
    let (mut sq, mut bad) = ([0f32; THREADS], [0f32; THREADS]);
    for row in xs.chunks(THREADS) {
        for (i, &v) in row.iter().enumerate() {
            sq[i] += v * v;
            if is_bad(v) {
                bad[i] += 1.0;
            }
        }
    }
    (block_sum(&sq), block_sum(&bad))
}

/// `grad_check_sum` for one tensor's parts.
fn tensor_sum(sq_parts: &[f32], bad_parts: &[f32]) -> (f32, f32) {
    let (mut sq, mut bad) = ([0f32; THREADS], [0f32; THREADS]);
    for (row_sq, row_bad) in sq_parts.chunks(THREADS).zip(bad_parts.chunks(THREADS)) {
        for i in 0..row_sq.len() {
            sq[i] += row_sq[i];
            bad[i] += row_bad[i];
        }
    }
    (block_sum(&sq), block_sum(&bad))
}

/// The check on the CPU: `[sums of squares.., non-finite counts..]` of `xs`.
pub fn cpu_grad_check(xs: &[&[f32]]) -> Vec<f32> {
    let chunks: Vec<(usize, &[f32])> = xs
        .iter()
        .enumerate()
        .flat_map(|(t, x)| {
            let n = x.len().div_ceil(CHUNK).max(1);
            (0..n).map(move |c| {
                (
                    t,
                    &x[(c * CHUNK).min(x.len())..((c + 1) * CHUNK).min(x.len())],
                )
            })
        })
        .collect();
    let parts: Vec<(f32, f32)> = chunks.par_iter().map(|(_, c)| chunk_parts(c)).collect();
    let n = xs.len();
    let mut out = vec![0f32; 2 * n];
    let mut at = 0;
    for t in 0..n {
        let k = xs[t].len().div_ceil(CHUNK).max(1);
        let (sq, bad): (Vec<f32>, Vec<f32>) = parts[at..at + k].iter().copied().unzip();
        (out[t], out[n + t]) = tensor_sum(&sq, &bad);
        at += k;
    }
    out
}

/// Launches the check over `tensors` (each an f32 buffer's address and length): returns the
/// buffer of `2 * tensors.len()` f32 values.
pub fn gpu_grad_check<L: Launcher>(l: &L, tensors: &[(u64, usize)]) -> Result<L::Buf> {
    let n = tensors.len();
    let lens: Vec<usize> = tensors.iter().map(|t| t.1).collect();
    let first = first_blocks(&lens)?;
    let blocks = first[n] as usize;
    let ptrs: Vec<u32> = tensors
        .iter()
        .flat_map(|(a, _)| [*a as u32, (*a >> 32) as u32])
        .collect();
    let lens: Vec<u32> = lens.iter().map(|&x| x as u32).collect();
    let (ptrs, lens, first) = (l.upload(&ptrs)?, l.upload(&lens)?, l.upload(&first)?);
    let parts = l.alloc(DType::F32, 2 * blocks)?;
    let out = l.alloc(DType::F32, 2 * n)?;
    let n_arg = Arg::U32(gpu::count("grad_check tensors", n)?);
    l.launch(
        &gpu::OPTIM,
        "grad_check_parts",
        Grid::blocks(blocks, 1),
        &[
            Arg::Ptr(ptrs.addr()),
            Arg::Ptr(lens.addr()),
            Arg::Ptr(first.addr()),
            n_arg,
            Arg::Ptr(parts.addr()),
        ],
    )?;
    l.launch(
        &gpu::OPTIM,
        "grad_check_sum",
        Grid::blocks(n, 1),
        &[
            Arg::Ptr(first.addr()),
            n_arg,
            Arg::Ptr(parts.addr()),
            Arg::Ptr(out.addr()),
        ],
    )?;
    Ok(out)
}

/// The check as a Candle op on its first tensor; the others ride along.
struct GradCheck {
    rest: Vec<Tensor>,
}

fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("grad_check: needs contiguous f32 tensors"),
    }
}

impl CustomOp1 for GradCheck {
    fn name(&self) -> &'static str {
        "grad-check"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let guards: Vec<_> = self.rest.iter().map(|t| t.storage_and_layout()).collect();
        let mut xs = vec![cpu_slice(s, l)?];
        for (g, layout) in &guards {
            match &**g {
                candle_core::Storage::Cpu(c) => xs.push(cpu_slice(c, layout)?),
                _ => bail!("grad_check: tensors on different devices"),
            }
        }
        let out = cpu_grad_check(&xs);
        let n = out.len();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (launcher, _) = cuda::launcher(&[s], self.name())?;
        let rest: Vec<cuda::TensorBuf> = self
            .rest
            .iter()
            .map(|t| cuda::TensorBuf::of(t, "grad_check"))
            .collect::<Result<_>>()?;
        let mut tensors = vec![(
            cuda::input(s, l, "grad_check")?.addr(),
            l.shape().elem_count(),
        )];
        for (b, t) in rest.iter().zip(&self.rest) {
            tensors.push((b.buf.addr(), t.elem_count()));
        }
        let out = gpu_grad_check(&launcher, &tensors)?;
        Ok((
            out.into_storage(launcher.dev)?,
            Shape::from(2 * tensors.len()),
        ))
    }
}
