//! Fused, in-place CPU kernels for the f32 optimizer updates: one pass over memory per
//! buffer instead of a tensor op (and an allocation) per term. Each performs exactly the
//! same f32 operations in the same order as the tensor-op path, so both give identical bits.
//! On CUDA, one kernel launch per parameter tensor updates the parameter and its state
//! together (`kernels/cuda/optim.cu`, compiled without FMA contraction: the same operations
//! again; the `gpu_*` launch functions below).

use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

use crate::kernels::gpu::{self, Arg, Buffer, Grid, Launcher};
#[cfg(feature = "cuda")]
use {crate::kernels::gpu::cuda, candle_core::CudaStorage};

/// Elements per parallel chunk (small tensors run on one thread).
const CHUNK: usize = 1 << 15;

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => bail!("{op}: needs a contiguous f32 tensor"),
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, n: usize, op: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) if b - a == n => Ok(&v[a..b]),
        _ => bail!("{op}: needs contiguous f32 tensors of {n} elements"),
    }
}

/// SGD momentum buffer: `buf = buf * m + (g + p * wd) * (1 - dampening)`;
/// with `first`, the buffer holds `g` and becomes `g + p * wd`.
pub struct SgdBuffer {
    pub momentum: f32,
    pub one_minus_dampening: f32,
    pub weight_decay: f32,
    pub first: bool,
}

impl InplaceOp3 for SgdBuffer {
    fn name(&self) -> &'static str {
        "sgd-buffer"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let buf = slice_mut(s1, l1, self.name())?;
        let n = buf.len();
        let g = slice(s2, l2, n, self.name())?;
        let p = slice(s3, l3, n, self.name())?;
        let (m, omd, wd, first) = (
            self.momentum,
            self.one_minus_dampening,
            self.weight_decay,
            self.first,
        );
        buf.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(p.par_chunks(CHUNK)))
            .for_each(|(b, (g, p))| {
                for i in 0..b.len() {
                    let gi = if wd != 0.0 { g[i] + p[i] * wd } else { g[i] };
                    b[i] = if first { gi } else { b[i] * m + gi * omd };
                }
            });
        Ok(())
    }
}

/// SGD parameter update: `p -= lr * d` with `d = buf` (momentum), `g' + m * buf`
/// (Nesterov) or `g'` (no momentum), where `g' = g + p * wd`. The third operand is the
/// momentum buffer (ignored without momentum; pass the gradient again).
pub struct SgdParam {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub has_momentum: bool,
    pub nesterov: bool,
}

impl InplaceOp3 for SgdParam {
    fn name(&self) -> &'static str {
        "sgd-param"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let p = slice_mut(s1, l1, self.name())?;
        let n = p.len();
        let g = slice(s2, l2, n, self.name())?;
        let b = slice(s3, l3, n, self.name())?;
        let (lr, m, wd) = (self.lr, self.momentum, self.weight_decay);
        let (has_m, nesterov) = (self.has_momentum, self.nesterov);
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(p, (g, b))| {
                for i in 0..p.len() {
                    let d = if has_m && !nesterov {
                        b[i]
                    } else {
                        let gi = if wd != 0.0 { g[i] + p[i] * wd } else { g[i] };
                        if nesterov {
                            gi + b[i] * m
                        } else {
                            gi
                        }
                    };
                    p[i] -= d * lr;
                }
            });
        Ok(())
    }
}

/// AdamW moments: `m = m + (g - m) * (1 - b1)` (operand: g).
pub struct AdamExpAvg {
    pub one_minus_beta1: f32,
}

impl InplaceOp2 for AdamExpAvg {
    fn name(&self) -> &'static str {
        "adamw-exp-avg"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let m = slice_mut(s1, l1, self.name())?;
        let g = slice(s2, l2, m.len(), self.name())?;
        let c = self.one_minus_beta1;
        m.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(m, g)| {
                for i in 0..m.len() {
                    m[i] += (g[i] - m[i]) * c;
                }
            });
        Ok(())
    }
}

/// AdamW second moment: `v = v * b2 + g^2 * (1 - b2)` (operand: g).
pub struct AdamExpAvgSq {
    pub beta2: f32,
    pub one_minus_beta2: f32,
}

impl InplaceOp2 for AdamExpAvgSq {
    fn name(&self) -> &'static str {
        "adamw-exp-avg-sq"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let v = slice_mut(s1, l1, self.name())?;
        let g = slice(s2, l2, v.len(), self.name())?;
        let (b2, c) = (self.beta2, self.one_minus_beta2);
        v.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(v, g)| {
                for i in 0..v.len() {
                    v[i] = v[i] * b2 + (g[i] * g[i]) * c;
                }
            });
        Ok(())
    }
}

/// AdamW parameter: `p = p * decay - (m / (sqrt(v) * inv_bc2_sqrt + eps)) * step_size`
/// (operands: m, v).
pub struct AdamParam {
    pub decay: f32,
    pub inv_bc2_sqrt: f32,
    pub eps: f32,
    pub step_size: f32,
}

impl InplaceOp3 for AdamParam {
    fn name(&self) -> &'static str {
        "adamw-param"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let p = slice_mut(s1, l1, self.name())?;
        let n = p.len();
        let m = slice(s2, l2, n, self.name())?;
        let v = slice(s3, l3, n, self.name())?;
        let (decay, inv, eps, ss) = (self.decay, self.inv_bc2_sqrt, self.eps, self.step_size);
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|(p, (m, v))| {
                for i in 0..p.len() {
                    let denom = v[i].sqrt() * inv + eps;
                    p[i] = p[i] * decay - (m[i] / denom) * ss;
                }
            });
        Ok(())
    }
}

/// SGD on CUDA, one kernel: `p` (the in-place operand) with the gradient and the momentum
/// buffer as operands; the kernel updates the buffer in place through its address (a buffer
/// the optimizer owns, used by nothing else).
#[derive(Debug, Clone, Copy)]
pub struct SgdStepCuda {
    pub lr: f32,
    pub momentum: f32,
    pub one_minus_dampening: f32,
    pub weight_decay: f32,
    pub has_momentum: bool,
    pub nesterov: bool,
    /// The buffer's first step: it becomes the (decayed) gradient.
    pub first: bool,
}

impl InplaceOp3 for SgdStepCuda {
    fn name(&self) -> &'static str {
        "sgd-step-cuda"
    }
    fn cpu_fwd(
        &self,
        _: &mut CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        bail!("sgd-step-cuda: CUDA only (the CPU runs sgd-buffer and sgd-param)")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<()> {
        let what = "sgd step";
        let n = l1.shape().elem_count();
        let buf_ok = !self.has_momentum || l3.shape().elem_count() == n;
        if l2.shape().elem_count() != n || !buf_ok {
            bail!("{what}: parameter, gradient and buffer sizes differ")
        }
        for s in [&*s1, s2, s3] {
            cuda::require_f32(s, what)?;
        }
        let (p, g, b) = (
            cuda::input(s1, l1, what)?,
            cuda::input(s2, l2, what)?,
            cuda::input(s3, l3, what)?,
        );
        let gpu = cuda::Cuda { dev: &s2.device };
        gpu_sgd_step(&gpu, &p, &g, &b, n, self)
    }
}

/// AdamW on CUDA, one kernel: `p` (the in-place operand) with the moments `m`, `v` as
/// operands, updated in place through their addresses (the optimizer's own buffers), and the
/// gradient `g` read through its address.
#[derive(Debug, Clone)]
pub struct AdamWStepCuda {
    pub g: Tensor,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub decay: f32,
    pub inv_bc2_sqrt: f32,
    pub eps: f32,
    pub step_size: f32,
}

impl InplaceOp3 for AdamWStepCuda {
    fn name(&self) -> &'static str {
        "adamw-step-cuda"
    }
    fn cpu_fwd(
        &self,
        _: &mut CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        bail!("adamw-step-cuda: CUDA only (the CPU runs the adamw-* ops)")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<()> {
        let what = "adamw step";
        let n = l1.shape().elem_count();
        if l2.shape().elem_count() != n
            || l3.shape().elem_count() != n
            || self.g.elem_count() != n
            || self.g.dtype() != candle_core::DType::F32
        {
            bail!("{what}: parameter, gradient and moment sizes or dtypes differ")
        }
        for s in [&*s1, s2, s3] {
            cuda::require_f32(s, what)?;
        }
        let (p, m, v) = (
            cuda::input(s1, l1, what)?,
            cuda::input(s2, l2, what)?,
            cuda::input(s3, l3, what)?,
        );
        let g = cuda::TensorBuf::of(&self.g, what)?;
        let gpu = cuda::Cuda { dev: &s2.device };
        gpu_adamw_step(&gpu, &p, &g.buf, &m, &v, n, self)
    }
}

/// One SGD step on the GPU over `n` f32 values: `p` and (with momentum) `buf` in place.
pub fn gpu_sgd_step<L: Launcher>(
    l: &L,
    p: &L::Buf,
    g: &L::Buf,
    buf: &L::Buf,
    n: usize,
    hp: &SgdStepCuda,
) -> Result<()> {
    let args = [
        Arg::Ptr(p.addr()),
        Arg::Ptr(g.addr()),
        Arg::Ptr(buf.addr()),
        Arg::U32(gpu::count("sgd step", n)?),
        Arg::F32(hp.lr),
        Arg::F32(hp.momentum),
        Arg::F32(hp.one_minus_dampening),
        Arg::F32(hp.weight_decay),
        Arg::I32(hp.has_momentum as i32),
        Arg::I32(hp.nesterov as i32),
        Arg::I32(hp.first as i32),
    ];
    l.launch(&gpu::OPTIM, "sgd_step", Grid::items(n), &args)
}

/// One AdamW step on the GPU over `n` f32 values: `p`, `m` and `v` in place.
pub fn gpu_adamw_step<L: Launcher>(
    l: &L,
    p: &L::Buf,
    g: &L::Buf,
    m: &L::Buf,
    v: &L::Buf,
    n: usize,
    hp: &AdamWStepCuda,
) -> Result<()> {
    let args = [
        Arg::Ptr(p.addr()),
        Arg::Ptr(g.addr()),
        Arg::Ptr(m.addr()),
        Arg::Ptr(v.addr()),
        Arg::U32(gpu::count("adamw step", n)?),
        Arg::F32(hp.one_minus_beta1),
        Arg::F32(hp.beta2),
        Arg::F32(hp.one_minus_beta2),
        Arg::F32(hp.decay),
        Arg::F32(hp.inv_bc2_sqrt),
        Arg::F32(hp.eps),
        Arg::F32(hp.step_size),
    ];
    l.launch(&gpu::OPTIM, "adamw_step", Grid::items(n), &args)
}
