//! The project's GPU kernels as a whole: their CUDA C sources (`kernels/cuda/*.cu`, one module
//! per op family, each compiled with `common.cuh` in front), the kernels each module defines,
//! and [`Launcher`], the one interface through which the ops of `src/kernels/<op>.rs` run
//! them. Two launchers exist: the CUDA device (feature `cuda`, [`cuda`]: NVRTC compiles a
//! module to PTX on first use, once per process and GPU architecture, and the device loads it
//! once), and the CPU emulation of `tests/cuda_emulated.rs`, which runs the same sources,
//! compiled as C++, through the same launch code.
//!
//! Each op's launch code (grid, block, arguments, scratch buffers) lives beside its CPU kernel
//! as `pub fn gpu_*<L: Launcher>`; its Candle `cuda_fwd` wraps the storages and calls it.

use candle_core::{DType, Result, Tensor};

/// `common.cuh`: the bf16 / f16 conversions and reductions every module starts with.
pub const COMMON: &str = include_str!("../../kernels/cuda/common.cuh");

/// One kernel source file, compiled (NVRTC) and loaded as one CUDA module.
#[derive(Debug)]
pub struct Module {
    /// The module's name on the device (unique in the process).
    pub name: &'static str,
    /// The file under `kernels/cuda/`.
    pub file: &'static str,
    /// The file's text (without `common.cuh`).
    pub source: &'static str,
    /// Kernels instantiated for every element type, as `<name>_f32`, `_bf16`, `_f16`.
    pub templated: &'static [&'static str],
    /// Kernels with no element-type suffix (f32 only).
    pub plain: &'static [&'static str],
    /// Whether NVRTC may contract `a * b + c` into a fused multiply-add (the optimizer
    /// module keeps the CPU kernels' exact roundings).
    pub fmad: bool,
}

impl Module {
    /// Every kernel entry point the module defines.
    pub fn kernel_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        for k in self.templated {
            for s in ["f32", "bf16", "f16"] {
                v.push(format!("{k}_{s}"));
            }
        }
        v.extend(self.plain.iter().map(|k| k.to_string()));
        v
    }

    /// What NVRTC compiles: `common.cuh`, then the module's file.
    pub fn full_source(&self) -> String {
        format!(
            "// kernels/cuda/common.cuh\n{COMMON}\n// kernels/cuda/{}\n{}",
            self.file, self.source
        )
    }
}

pub static DEPTHWISE: Module = Module {
    name: "runner_depthwise",
    file: "depthwise.cu",
    source: include_str!("../../kernels/cuda/depthwise.cu"),
    templated: &[
        "dw_fwd",
        "dw_bwd_input",
        "dw_wgrad_parts",
        "dw_sum_parts",
        "dwl_fwd",
        "dwl_bwd_input",
        "dwl_wgrad_parts",
        "dwl_sum_parts",
    ],
    plain: &[],
    fmad: true,
};

pub static POOL: Module = Module {
    name: "runner_pool",
    file: "pool.cu",
    source: include_str!("../../kernels/cuda/pool.cu"),
    templated: &[
        "max_pool_fwd",
        "max_pool_bwd",
        "avg_pool_fwd",
        "avg_pool_bwd",
    ],
    plain: &[],
    fmad: true,
};

pub static LAYERNORM: Module = Module {
    name: "runner_layernorm",
    file: "layernorm.cu",
    source: include_str!("../../kernels/cuda/layernorm.cu"),
    templated: &[
        "ln_fwd",
        "ln_bwd",
        "ln_params_parts",
        "lnc_fwd",
        "lnc_bwd",
        "lnc_params_parts",
    ],
    plain: &["ln_sum_parts"],
    fmad: true,
};

pub static GELU: Module = Module {
    name: "runner_gelu",
    file: "gelu.cu",
    source: include_str!("../../kernels/cuda/gelu.cu"),
    templated: &[
        "gelu_fwd",
        "gelu_bwd",
        "bias_gelu_fwd",
        "bias_gelu_bwd",
        "col_sum_parts",
    ],
    plain: &["gelu_sum_parts"],
    fmad: true,
};

pub static BATCHNORM: Module = Module {
    name: "runner_batchnorm",
    file: "batchnorm.cu",
    source: include_str!("../../kernels/cuda/batchnorm.cu"),
    templated: &["bn_stat_parts", "bn_fwd", "bn_bwd_parts", "bn_bwd_input"],
    plain: &["bn_sum_parts"],
    fmad: true,
};

pub static IM2COL: Module = Module {
    name: "runner_im2col",
    file: "im2col.cu",
    source: include_str!("../../kernels/cuda/im2col.cu"),
    templated: &["im2col", "col2im"],
    plain: &[],
    fmad: true,
};

pub static OPTIM: Module = Module {
    name: "runner_optim",
    file: "optim.cu",
    source: include_str!("../../kernels/cuda/optim.cu"),
    templated: &[],
    plain: &[
        "sgd_step",
        "adamw_step",
        "grad_check_parts",
        "grad_check_sum",
    ],
    fmad: false,
};

/// Every module, in the order `runner selftest` and CI compile them.
pub static MODULES: [&Module; 7] = [
    &DEPTHWISE, &POOL, &LAYERNORM, &GELU, &BATCHNORM, &IM2COL, &OPTIM,
];

/// The suffix of a templated kernel for element type `dt` (`f32`, `bf16`, `f16`).
pub fn suffix(dt: DType) -> Result<&'static str> {
    match dt {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        other => candle_core::bail!("GPU kernels take f32, bf16 or f16, not {other:?}"),
    }
}

/// A kernel argument, as the kernel declares it: a pointer (device address), `int`,
/// `unsigned` or `float`.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    Ptr(u64),
    I32(i32),
    U32(u32),
    F32(f32),
}

/// Grid and block dimensions of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
}

/// Threads per block of the element-wise kernels.
pub const THREADS: u32 = 256;
/// At most this many blocks for a grid-stride loop over elements.
const MAX_BLOCKS: usize = 65_535;

thread_local! {
    /// The block cap of grid-stride launches made on this thread ([`cap_blocks_for_test`]).
    static BLOCK_CAP: std::cell::Cell<usize> = const { std::cell::Cell::new(MAX_BLOCKS) };
}

/// Lowers the block cap of the grid-stride launches this thread makes (`None` restores
/// 65,535), so that a test's small launch runs the loop's later passes, which real sizes reach
/// only past 16.7 million elements. Per thread: parallel tests do not see it.
pub fn cap_blocks_for_test(cap: Option<usize>) {
    BLOCK_CAP.with(|c| c.set(cap.unwrap_or(MAX_BLOCKS).clamp(1, MAX_BLOCKS)));
}

impl Grid {
    /// A 1-D grid-stride launch over `n` items, 256 threads per block.
    pub fn items(n: usize) -> Self {
        let cap = BLOCK_CAP.with(|c| c.get());
        let blocks = n.div_ceil(THREADS as usize).clamp(1, cap) as u32;
        Grid {
            grid: (blocks, 1, 1),
            block: (THREADS, 1, 1),
        }
    }

    /// One block of 256 threads per `(x, y)`.
    pub fn blocks(x: usize, y: usize) -> Self {
        Grid {
            grid: (x.max(1) as u32, y.max(1) as u32, 1),
            block: (THREADS, 1, 1),
        }
    }

    /// Column-group blocks of 32 columns x 8 row lanes, `(ceil(c / 32), slices)`.
    pub fn columns(c: usize, slices: usize) -> Self {
        Grid {
            grid: (c.div_ceil(32).max(1) as u32, slices.max(1) as u32, 1),
            block: (32, 8, 1),
        }
    }
}

/// Slices a reduction over `positions` values is split into (one block each, added in order
/// afterwards): enough blocks to fill a GPU, at least ~2048 values per block, at most 64.
/// Fixed by the sizes alone, so the sums are the same from run to run.
pub fn slices(positions: usize, other_blocks: usize) -> usize {
    let want = 512usize.div_ceil(other_blocks.max(1));
    want.min(positions / 2048).clamp(1, 64)
}

/// A GPU buffer as a launch sees it: its address.
pub trait Buffer {
    fn addr(&self) -> u64;
}

/// Runs the project's kernels: the CUDA device, or the CPU emulation in the tests.
pub trait Launcher {
    type Buf: Buffer;
    /// A buffer of `len` elements of `dtype`, contents unspecified.
    fn alloc(&self, dtype: DType, len: usize) -> Result<Self::Buf>;
    /// A buffer holding `data` (a launch's small tables: addresses, lengths, offsets), copied
    /// to the device in the stream's order.
    fn upload(&self, data: &[u32]) -> Result<Self::Buf>;
    /// Launches `kernel` of `module` on `grid` with `args` (in the kernel's parameter order).
    fn launch(&self, module: &'static Module, kernel: &str, grid: Grid, args: &[Arg])
        -> Result<()>;
}

/// `n` as the kernels' 32-bit element count, or an error naming `what`.
pub fn count(what: &str, n: usize) -> Result<u32> {
    if n > i32::MAX as usize {
        candle_core::bail!("{what}: {n} elements, more than the GPU kernels index (2^31 - 1)")
    }
    Ok(n as u32)
}

/// `n` as an `int` kernel argument.
pub fn int(what: &str, n: usize) -> Result<Arg> {
    Ok(Arg::I32(count(what, n)? as i32))
}

/// Whether `t` runs on the project's GPU kernels: a CUDA tensor in f32, bf16 or f16, in a
/// build with the `cuda` feature, outside the reference mode.
pub fn runs_on_gpu(t: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && t.device().is_cuda()
        && matches!(t.dtype(), DType::F32 | DType::BF16 | DType::F16)
        && !super::reference_mode()
}

/// One kernel's resources from a ptxas `-v` log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelResources {
    pub kernel: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// The kernels' registers and spills in a ptxas `-v` log ("Compiling entry function 'k'"
/// then "N bytes spill stores, M bytes spill loads" and "Used R registers").
pub fn resources(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    let number_before = |line: &str, word: &str| -> Option<u32> {
        let at = line.find(word)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(KernelResources {
                kernel: name,
                registers: 0,
                spill_stores: 0,
                spill_loads: 0,
            });
        } else if let Some(k) = out.last_mut() {
            if let Some(n) = number_before(line, "bytes spill stores") {
                k.spill_stores = n;
            }
            if let Some(n) = number_before(line, "bytes spill loads") {
                k.spill_loads = n;
            }
            if let Some(n) = number_before(line, "registers") {
                k.registers = n;
            }
        }
    }
    out
}

#[cfg(test)]
mod resources_tests {
    use super::*;

    #[test]
    fn registers_and_spills_are_read_from_a_ptxas_log() {
        let log = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'dw_fwd_f32' for 'sm_90'
ptxas info    : Function properties for dw_fwd_f32
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, 384 bytes cmem[0]
ptxas info    : Compiling entry function 'dw_wgrad_bf16' for 'sm_90'
ptxas info    : Function properties for dw_wgrad_bf16
    16 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 255 registers, 384 bytes cmem[0]
";
        assert_eq!(
            resources(log),
            vec![
                KernelResources {
                    kernel: "dw_fwd_f32".into(),
                    registers: 32,
                    spill_stores: 0,
                    spill_loads: 0
                },
                KernelResources {
                    kernel: "dw_wgrad_bf16".into(),
                    registers: 255,
                    spill_stores: 12,
                    spill_loads: 8
                },
            ]
        );
    }
}

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cudnn")]
pub mod cudnn;
