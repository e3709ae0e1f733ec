//! The CUDA [`Launcher`]: NVRTC compiles a kernel module to a CUBIN for the device's real
//! architecture (`sm_XY`) on first use, once per process and architecture. Building a CUBIN
//! runs the assembler (ptxas, inside NVRTC) here rather than the driver's JIT, so a driver a
//! minor version older than NVRTC still loads it, and what ships is what CI assembles. The
//! module is loaded once per device and its functions looked up once; kernels launch on the
//! device's stream. Also the glue of the ops' `cuda_fwd`: Candle storages as launch buffers,
//! new buffers back as storages, and side outputs written into a tensor's memory.
//!
//! Every buffer is used on Candle's one stream per device, in launch order, so raw device
//! addresses are enough: a storage outlives the launches that read it because the `cuda_fwd`
//! holding it returns after enqueueing them, and the stream orders any later free.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::{self, compile_ptx_with_opts, CompileOptions, Ptx};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Storage, Tensor};

pub use super::{resources, KernelResources};
use super::{Arg, Buffer, Grid, Launcher, Module};

/// NVRTC compiles `module` (with `common.cuh`) to PTX for `arch` (`compute_80`, `sm_90`, ...):
/// what the device loads, and what CI runs for every module without a GPU.
pub fn compile_ptx(module: &Module, arch: &'static str) -> Result<String> {
    let opts = CompileOptions {
        arch: Some(arch),
        fmad: Some(module.fmad),
        options: vec!["--std=c++17".to_string()],
        ..Default::default()
    };
    match compile_ptx_with_opts(module.full_source(), opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(e) => candle_core::bail!(
            "NVRTC could not compile kernels/cuda/{}: {e:?}",
            module.file
        ),
    }
}

/// A module assembled by NVRTC for one real architecture.
pub struct Cubin {
    pub image: Vec<u8>,
    /// NVRTC's log: with `--ptxas-options=-v`, each kernel's registers, spills and shared
    /// memory, as ptxas reports them.
    pub log: String,
    /// NVRTC's compile time.
    pub seconds: f64,
}

/// NVRTC compiles and assembles `module` (with `common.cuh`) for the real architecture `arch`
/// (`sm_80`, `sm_90`, ...): the CUBIN the device loads, and what CI assembles for every module
/// without a GPU (so the inline PTX of `common.cuh` goes through the assembler each run).
pub fn compile_cubin(module: &Module, arch: &str) -> Result<Cubin> {
    use std::ffi::{c_char, CStr, CString};
    let t = std::time::Instant::now();
    let err = |what: &str, e: nvrtc::result::NvrtcError| {
        candle_core::Error::Msg(format!(
            "NVRTC: {what} kernels/cuda/{} for {arch}: {e:?}",
            module.file
        ))
    };
    let src = CString::new(module.full_source()).map_err(|_| {
        candle_core::Error::Msg(format!("kernels/cuda/{}: a NUL byte", module.file))
    })?;
    let prog = nvrtc::result::create_program(&src, None).map_err(|e| err("creating", e))?;
    let opts = vec![
        format!("--gpu-architecture={arch}"),
        format!("--fmad={}", module.fmad),
        "--std=c++17".to_string(),
        "--ptxas-options=-v".to_string(),
    ];
    // SAFETY: `prog` is a live program; the options are NUL-free strings.
    let compiled = unsafe { nvrtc::result::compile_program(prog, &opts) };
    // SAFETY: as above; the log is NUL-terminated.
    let log = unsafe { nvrtc::result::get_program_log(prog) }
        .map(|raw| {
            unsafe { CStr::from_ptr(raw.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let image = compiled.map_err(|e| err("compiling", e)).and_then(|()| {
        let mut size = 0usize;
        // SAFETY: a compiled program; the buffer has the size NVRTC gives.
        unsafe { nvrtc::sys::nvrtcGetCUBINSize(prog, &mut size) }
            .result()
            .map_err(|e| err("sizing the CUBIN of", e))?;
        let mut image = vec![0u8; size];
        unsafe { nvrtc::sys::nvrtcGetCUBIN(prog, image.as_mut_ptr() as *mut c_char) }
            .result()
            .map_err(|e| err("reading the CUBIN of", e))?;
        Ok(image)
    });
    // SAFETY: the program is not used after this.
    let _ = unsafe { nvrtc::result::destroy_program(prog) };
    let image = image.map_err(|e| candle_core::Error::Msg(format!("{e}\n{log}")))?;
    Ok(Cubin {
        image,
        log,
        seconds: t.elapsed().as_secs_f64(),
    })
}

type FuncCache = Mutex<HashMap<(usize, &'static str, String), CudaFunction>>;

/// The function `kernel` of `module` on the device of `stream`: the module's CUBIN assembled
/// for the device's architecture and loaded once per device, the function looked up once.
fn function(module: &'static Module, kernel: &str, stream: &CudaStream) -> Result<CudaFunction> {
    static FUNCS: OnceLock<FuncCache> = OnceLock::new();
    static MODULES: OnceLock<
        Mutex<
            HashMap<
                (usize, &'static str),
                Arc<candle_core::cuda_backend::cudarc::driver::CudaModule>,
            >,
        >,
    > = OnceLock::new();
    let ctx = stream.context();
    let key = (ctx.ordinal(), module.name, kernel.to_string());
    let funcs = FUNCS.get_or_init(Default::default);
    if let Some(f) = funcs.lock().map_err(poisoned)?.get(&key) {
        return Ok(f.clone());
    }
    let modules = MODULES.get_or_init(Default::default);
    let loaded = modules
        .lock()
        .map_err(poisoned)?
        .get(&(ctx.ordinal(), module.name))
        .cloned();
    let m = match loaded {
        Some(m) => m,
        None => {
            let cubin = compile_cubin(module, arch_of(stream)?)?;
            let m = ctx.load_module(Ptx::from_binary(cubin.image)).w()?;
            modules
                .lock()
                .map_err(poisoned)?
                .insert((ctx.ordinal(), module.name), m.clone());
            m
        }
    };
    let f = m.load_function(kernel).w()?;
    funcs.lock().map_err(poisoned)?.insert(key, f.clone());
    Ok(f)
}

/// Sets what training on a new CUDA device relies on, as PyTorch's defaults are:
/// - cuBLAS matmuls without TF32 or reduced-precision reductions (Candle's gemm flags off, and
///   the handle's math mode `CUBLAS_DEFAULT_MATH`); cuDNN convolutions may use TF32
///   (`gpu::cudnn`);
/// - the stream-ordered memory pool keeps what is freed (release threshold at its maximum), so
///   that a training step's allocations are served from the pool instead of the driver.
pub fn configure(dev: &CudaDevice) -> Result<()> {
    use candle_core::cuda_backend::cudarc::{cublas, driver};
    candle_core::cuda::set_gemm_reduced_precision_f32(false);
    candle_core::cuda::set_gemm_reduced_precision_f16(false);
    candle_core::cuda::set_gemm_reduced_precision_bf16(false);
    let blas = dev.cublas_handle();
    // SAFETY: the handle is the device's live cuBLAS handle.
    unsafe {
        cublas::sys::cublasSetMathMode(
            *blas.handle(),
            cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
        )
    }
    .result()
    .map_err(candle_core::Error::wrap)?;
    let stream = dev.cuda_stream();
    let mut pool: driver::sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: the context is current on this thread (Candle binds it when it makes the device);
    // the attribute takes a u64.
    unsafe {
        driver::sys::cuDeviceGetDefaultMemPool(&mut pool, stream.context().cu_device())
            .result()
            .w()?;
        driver::sys::cuMemPoolSetAttribute(
            pool,
            driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold) as *mut u64 as *mut std::ffi::c_void,
        )
        .result()
        .w()?;
    }
    Ok(())
}

/// The CUDA version the driver supports and NVRTC's own, as (major, minor); `None` where the
/// library cannot be loaded or answer (no driver on this machine, no libnvrtc on the path).
pub fn versions() -> (Option<(i32, i32)>, Option<(i32, i32)>) {
    use candle_core::cuda_backend::cudarc::{driver, nvrtc};
    // cudarc panics when it cannot load a library: quietly, here
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let drv = std::panic::catch_unwind(|| {
        let mut v = 0;
        // SAFETY: writes one int
        unsafe { driver::sys::cuDriverGetVersion(&mut v) }
            .result()
            .ok()
            .map(|_| (v / 1000, (v % 1000) / 10))
    })
    .ok()
    .flatten();
    let rtc = std::panic::catch_unwind(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: writes two ints
        unsafe { nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
            .result()
            .ok()
            .map(|_| (major, minor))
    })
    .ok()
    .flatten();
    std::panic::set_hook(hook);
    (drv, rtc)
}

fn poisoned<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg("GPU kernel cache lock poisoned".into())
}

/// The real architecture (`sm_XY`) of a device, asked of the driver once per ordinal.
fn arch_of(stream: &CudaStream) -> Result<&'static str> {
    static ARCHS: OnceLock<Mutex<HashMap<usize, &'static str>>> = OnceLock::new();
    let ctx = stream.context();
    let archs = ARCHS.get_or_init(Default::default);
    if let Some(a) = archs.lock().map_err(poisoned)?.get(&ctx.ordinal()) {
        return Ok(a);
    }
    let (major, minor) = ctx.compute_capability().w()?;
    let arch: &'static str = Box::leak(format!("sm_{major}{minor}").into_boxed_str());
    archs.lock().map_err(poisoned)?.insert(ctx.ordinal(), arch);
    Ok(arch)
}

/// The CUDA device as a [`Launcher`].
pub struct Cuda<'a> {
    pub dev: &'a CudaDevice,
}

/// A device buffer: an input's address, or a new allocation that becomes an op's output.
pub struct CudaBuf {
    addr: u64,
    owned: Option<CudaStorageSlice>,
}

impl Buffer for CudaBuf {
    fn addr(&self) -> u64 {
        self.addr
    }
}

fn addr_of<T>(s: &CudaSlice<T>, stream: &CudaStream, offset: usize) -> u64 {
    // the guard records a read event for other streams on drop; Candle uses one stream
    let (p, _guard) = s.device_ptr(stream);
    p + (offset * std::mem::size_of::<T>()) as u64
}

impl CudaBuf {
    /// A contiguous f32 / bf16 / f16 input (`what` names the op and argument in errors).
    pub fn input(s: &CudaStorage, l: &Layout, what: &str) -> Result<Self> {
        let Some((start, _)) = l.contiguous_offsets() else {
            candle_core::bail!("{what}: tensor must be contiguous")
        };
        let stream = s.device.cuda_stream();
        let addr = match &s.slice {
            CudaStorageSlice::F32(v) => addr_of(v, &stream, start),
            CudaStorageSlice::BF16(v) => addr_of(v, &stream, start),
            CudaStorageSlice::F16(v) => addr_of(v, &stream, start),
            _ => candle_core::bail!("{what}: GPU kernels take f32, bf16 or f16"),
        };
        Ok(CudaBuf { addr, owned: None })
    }

    /// The storage of a buffer this launcher allocated (an op's result).
    pub fn into_storage(self, dev: &CudaDevice) -> Result<CudaStorage> {
        match self.owned {
            Some(slice) => Ok(CudaStorage {
                slice,
                device: dev.clone(),
            }),
            None => candle_core::bail!("GPU kernel: an input buffer returned as a result"),
        }
    }
}

impl Launcher for Cuda<'_> {
    type Buf = CudaBuf;

    fn alloc(&self, dtype: DType, len: usize) -> Result<CudaBuf> {
        let len = len.max(1);
        let stream = self.dev.cuda_stream();
        // SAFETY: every kernel writes all of its output before anything reads it.
        let slice = unsafe {
            match dtype {
                DType::F32 => CudaStorageSlice::F32(self.dev.alloc::<f32>(len)?),
                DType::BF16 => CudaStorageSlice::BF16(self.dev.alloc::<half::bf16>(len)?),
                DType::F16 => CudaStorageSlice::F16(self.dev.alloc::<half::f16>(len)?),
                other => candle_core::bail!("GPU kernels: cannot allocate {other:?}"),
            }
        };
        let addr = match &slice {
            CudaStorageSlice::F32(v) => addr_of(v, &stream, 0),
            CudaStorageSlice::BF16(v) => addr_of(v, &stream, 0),
            CudaStorageSlice::F16(v) => addr_of(v, &stream, 0),
            _ => unreachable!("allocated above as f32, bf16 or f16"),
        };
        Ok(CudaBuf {
            addr,
            owned: Some(slice),
        })
    }

    fn upload(&self, data: &[u32]) -> Result<CudaBuf> {
        let stream = self.dev.cuda_stream();
        let slice = self.dev.clone_htod(data)?;
        let addr = addr_of(&slice, &stream, 0);
        Ok(CudaBuf {
            addr,
            owned: Some(CudaStorageSlice::U32(slice)),
        })
    }

    fn launch(
        &self,
        module: &'static Module,
        kernel: &str,
        grid: Grid,
        args: &[Arg],
    ) -> Result<()> {
        let stream = self.dev.cuda_stream();
        let func = function(module, kernel, &stream)?;
        candle_core::cuda_backend::count_launch();
        let mut b = stream.launch_builder(&func);
        for a in args {
            match a {
                Arg::Ptr(p) => b.arg(p),
                Arg::I32(v) => b.arg(v),
                Arg::U32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: grid.grid,
            block_dim: grid.block,
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow the kernel's declared parameters (the emulated tests
        // run the same launch code against the same sources), and every buffer they point to
        // is alive and large enough (see the module comment).
        unsafe { b.launch(cfg) }.w()?;
        Ok(())
    }
}

/// A tensor's device memory as a launch buffer, beside an op's Candle operands: a "side
/// output" a kernel writes next to the op's result (the parameter gradients of a norm's
/// backward, in a fresh tensor nothing else reads until the op is done), or a fourth input (an
/// optimizer's gradient). Contiguous f32 / bf16 / f16 on this device; the guard keeps the
/// storage read-locked meanwhile.
pub struct TensorBuf<'a> {
    _guard: candle_core::StorageRef<'a>,
    pub buf: CudaBuf,
}

impl<'a> TensorBuf<'a> {
    pub fn of(t: &'a Tensor, what: &str) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let buf = match &*guard {
            Storage::Cuda(s) => CudaBuf::input(s, layout, what)?,
            _ => candle_core::bail!("{what}: tensor not on a CUDA device"),
        };
        Ok(TensorBuf { _guard: guard, buf })
    }
}

/// The launcher of an op's CUDA storages, and their common dtype (an error naming `what` when
/// they differ).
pub fn launcher<'a>(storages: &[&'a CudaStorage], what: &str) -> Result<(Cuda<'a>, DType)> {
    use candle_core::backend::BackendStorage;
    let Some(first) = storages.first() else {
        candle_core::bail!("{what}: no input")
    };
    let dt = first.dtype();
    if let Some(o) = storages.iter().find(|s| s.dtype() != dt) {
        candle_core::bail!("{what}: mixed dtypes {dt:?} and {:?}", o.dtype())
    }
    // The one-stream invariant (module comment): raw addresses are safe only because every
    // operand lives on the stream the launch uses.
    let stream = first.device.cuda_stream();
    if storages
        .iter()
        .any(|s| !Arc::ptr_eq(&s.device.cuda_stream(), &stream))
    {
        candle_core::bail!("{what}: operands on different CUDA streams")
    }
    Ok((Cuda { dev: &first.device }, dt))
}

/// [`CudaBuf::input`].
pub fn input(s: &CudaStorage, l: &Layout, what: &str) -> Result<CudaBuf> {
    CudaBuf::input(s, l, what)
}

/// Errors unless `s` holds f32 (the norms' parameters and the optimizers' tensors).
pub fn require_f32(s: &CudaStorage, what: &str) -> Result<()> {
    use candle_core::backend::BackendStorage;
    if s.dtype() != DType::F32 {
        candle_core::bail!("{what}: expected f32 parameters, got {:?}", s.dtype())
    }
    Ok(())
}
