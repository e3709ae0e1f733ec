//! The project's CUDA kernels, checked without a GPU: every source in `kernels/cuda/` is
//! compiled for the CPU as C++ with the shim `tests/cuda_emulated/shim.h` (CUDA's built-ins,
//! a block's threads as fibers with barriers and warp shuffles; see the shim) and run through
//! the very launch code the GPU path uses (the ops' `gpu_*` functions, behind
//! `runner::kernels::gpu::Launcher`). Each kernel is compared, forward and backward, with the
//! composed Candle reference path (`kernels::set_reference_mode`, or the op's composed
//! fallback) on the CPU, on odd shapes (channels not a multiple of 32, H != W, stride 2,
//! padding), in f32, bf16 and f16.
//!
//! Both sides see the same inputs (rounded to the dtype first); the kernels accumulate in f32
//! and round once on output, so the stated tolerances are those of that last rounding: the
//! largest difference relative to the largest reference magnitude is at most 1e-5 (f32),
//! 1e-2 (bf16, 8 significant bits) and 2e-3 (f16, 11 bits).
//!
//! Needs a C++ compiler (`c++`, or `$CXX`), found through the `cc` crate; the compiled
//! libraries are cached under Cargo's test scratch folder.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Device, Result, Tensor, Var};
use runner::kernels::gpu::{self, Arg, Buffer, Grid, Launcher, Module};

// ---------------------------------------------------------------------------------------------
// The emulated launcher.

type EmuFn =
    unsafe extern "C" fn(*const u32, *const u32, *mut *mut c_void, *mut c_char, usize) -> i32;

/// One compiled module: its `dlopen` handle.
struct Lib(*mut c_void);
// SAFETY: the handle is only used for dlsym, which is thread-safe.
unsafe impl Send for Lib {}
unsafe impl Sync for Lib {}

fn target() -> String {
    let os = match std::env::consts::OS {
        "linux" => "unknown-linux-gnu",
        "macos" => "apple-darwin",
        other => other,
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

/// Compiles `m` (shim, common.cuh, the module, an `EMU` entry per kernel) into a shared
/// library, reusing one built from the same text.
fn compile(m: &Module) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shim = root.join("tests/cuda_emulated/shim.h");
    let mut text = format!(
        "#include \"{}\"\n{}\n{}\n",
        shim.display(),
        gpu::COMMON,
        m.source
    );
    for k in m.kernel_names() {
        text.push_str(&format!("EMU({k})\n"));
    }
    let shim_text = std::fs::read_to_string(&shim).expect("shim.h");
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&text, &shim_text).hash(&mut h);
        h.finish()
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_emulated");
    std::fs::create_dir_all(&dir).unwrap();
    let so = dir.join(format!("{}-{key:016x}.so", m.name));
    if so.exists() {
        return so;
    }
    let cpp = dir.join(format!("{}-{key:016x}.cpp", m.name));
    std::fs::write(&cpp, &text).unwrap();
    let t = target();
    let compiler = cc::Build::new()
        .cpp(true)
        .target(&t)
        .host(&t)
        .opt_level(2)
        .debug(false)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .try_get_compiler()
        .expect("a C++ compiler (set CXX)");
    let tmp = dir.join(format!("{}-{key:016x}.{}.tmp", m.name, std::process::id()));
    let out = compiler
        .to_command()
        .args(["-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-o"])
        .arg(&tmp)
        .arg(&cpp)
        .output()
        .expect("running the C++ compiler");
    assert!(
        out.status.success(),
        "compiling {} as C++ failed:\n{}",
        m.file,
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &so).unwrap();
    so
}

fn lib(m: &'static Module) -> *mut c_void {
    static LIBS: OnceLock<Mutex<HashMap<&'static str, &'static OnceLock<Lib>>>> = OnceLock::new();
    let cell: &'static OnceLock<Lib> = {
        let mut map = LIBS.get_or_init(Default::default).lock().unwrap();
        map.entry(m.name)
            .or_insert_with(|| Box::leak(Box::new(OnceLock::new())))
    };
    cell.get_or_init(|| {
        let so = compile(m);
        let path = CString::new(so.to_str().unwrap()).unwrap();
        // SAFETY: a library we just compiled; no initialisers beyond the C++ runtime's.
        let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!h.is_null(), "dlopen {}", so.display());
        Lib(h)
    })
    .0
}

/// Host memory a kernel reads and writes through its address (8-byte aligned).
struct HostBuf {
    data: Box<[std::cell::UnsafeCell<u64>]>,
    dtype: DType,
    len: usize,
}

impl Buffer for HostBuf {
    fn addr(&self) -> u64 {
        self.data.as_ptr() as u64
    }
}

impl HostBuf {
    fn new(dtype: DType, len: usize) -> Self {
        let bytes = len * dtype.size_in_bytes();
        // NaN bytes everywhere: an element no kernel writes shows up in the comparisons
        let data = (0..bytes.div_ceil(8).max(1))
            .map(|_| std::cell::UnsafeCell::new(u64::MAX))
            .collect();
        HostBuf { data, dtype, len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `data` holds at least `len * size` bytes; no kernel runs during the borrow.
        unsafe {
            std::slice::from_raw_parts(
                self.data.as_ptr() as *const u8,
                self.len * self.dtype.size_in_bytes(),
            )
        }
    }

    fn from_f32(dtype: DType, v: &[f32]) -> Self {
        let b = HostBuf::new(dtype, v.len());
        let p = b.data.as_ptr() as *mut u8;
        for (i, &x) in v.iter().enumerate() {
            // SAFETY: within the buffer (len * size bytes), nothing else uses it yet.
            unsafe {
                match dtype {
                    DType::F32 => (p as *mut f32).add(i).write(x),
                    DType::BF16 => (p as *mut u16)
                        .add(i)
                        .write(half::bf16::from_f32(x).to_bits()),
                    DType::F16 => (p as *mut u16)
                        .add(i)
                        .write(half::f16::from_f32(x).to_bits()),
                    _ => unreachable!(),
                }
            }
        }
        b
    }

    fn to_f32(&self) -> Vec<f32> {
        let b = self.bytes();
        match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f32())
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f32())
                .collect(),
            _ => unreachable!(),
        }
    }
}

struct Emu;

impl Launcher for Emu {
    type Buf = HostBuf;

    fn alloc(&self, dtype: DType, len: usize) -> Result<HostBuf> {
        Ok(HostBuf::new(dtype, len))
    }

    fn upload(&self, data: &[u32]) -> Result<HostBuf> {
        let b = HostBuf::new(DType::U32, data.len());
        // SAFETY: the buffer holds data.len() u32s (8-byte aligned); nothing else uses it yet.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), b.addr() as *mut u32, data.len()) };
        Ok(b)
    }

    fn launch(&self, m: &'static Module, kernel: &str, g: Grid, args: &[Arg]) -> Result<()> {
        assert!(
            m.kernel_names().iter().any(|k| k == kernel),
            "{kernel} is not listed in module {}",
            m.name
        );
        let h = lib(m);
        let sym = CString::new(format!("emu_{kernel}")).unwrap();
        // SAFETY: looking up a symbol of a loaded library.
        let f = unsafe { libc::dlsym(h, sym.as_ptr()) };
        assert!(!f.is_null(), "emu_{kernel} missing from {}", m.file);
        // SAFETY: EMU() defines every emu_* with this signature.
        let f: EmuFn = unsafe { std::mem::transmute::<*mut c_void, EmuFn>(f) };
        // the values, then pointers to them (cuLaunchKernel's kernelParams)
        let mut vals: Vec<[u8; 8]> = args
            .iter()
            .map(|a| {
                let mut v = [0u8; 8];
                match a {
                    Arg::Ptr(p) => v.copy_from_slice(&p.to_ne_bytes()),
                    Arg::I32(x) => v[..4].copy_from_slice(&x.to_ne_bytes()),
                    Arg::U32(x) => v[..4].copy_from_slice(&x.to_ne_bytes()),
                    Arg::F32(x) => v[..4].copy_from_slice(&x.to_ne_bytes()),
                }
                v
            })
            .collect();
        let mut ptrs: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|v| v.as_mut_ptr() as *mut c_void)
            .collect();
        let grid = [g.grid.0, g.grid.1, g.grid.2];
        let block = [g.block.0, g.block.1, g.block.2];
        let mut err = vec![0 as c_char; 512];
        // SAFETY: the arguments follow the kernel's parameters (the launch code under test),
        // and the buffers they point to are alive.
        let rc = unsafe {
            f(
                grid.as_ptr(),
                block.as_ptr(),
                ptrs.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            // SAFETY: the emulator wrote a NUL-terminated message.
            let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
            candle_core::bail!("{kernel}: {}", msg.to_string_lossy())
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

fn tolerance(dt: DType) -> f32 {
    match dt {
        DType::F32 => 1e-5,
        DType::BF16 => 1e-2,
        _ => 2e-3,
    }
}

/// Values rounded to `dt` (what both sides compute from).
fn rounded(dt: DType, v: &[f32]) -> Vec<f32> {
    HostBuf::from_f32(dt, v).to_f32()
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// An f32 CPU variable holding `v` rounded to `dt`, and its buffer in `dt`.
fn input(dt: DType, v: &[f32], shape: &[usize]) -> (Var, HostBuf) {
    let r = rounded(dt, v);
    let var = Var::from_tensor(&Tensor::from_vec(r.clone(), shape, &Device::Cpu).unwrap()).unwrap();
    (var, HostBuf::from_f32(dt, &r))
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Asserts `got` (a kernel's output) is within the dtype's tolerance of `want`.
fn close(what: &str, dt: DType, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what} ({dt:?}): length");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let mut worst = (0f32, 0usize);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let d = if a.is_nan() || b.is_nan() {
            if a.is_nan() && b.is_nan() {
                0.0
            } else {
                f32::INFINITY
            }
        } else {
            (a - b).abs() / scale
        };
        if d > worst.0 || d.is_nan() {
            worst = (d, i);
        }
    }
    assert!(
        worst.0 <= tolerance(dt),
        "{what} ({dt:?}): relative error {:.3e} at {} (got {}, want {})",
        worst.0,
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

/// The reference path: Candle's composed ops (what `kernels::reference_mode` selects).
fn reference<T>(f: impl FnOnce() -> T) -> T {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    runner::kernels::set_reference_mode(true);
    let out = f();
    runner::kernels::set_reference_mode(false);
    out
}

// ---------------------------------------------------------------------------------------------
// Depthwise convolution, NCHW.

#[test]
fn depthwise_nchw_forward_and_gradients() {
    use runner::kernels::depthwise::{
        depthwise_shift_sum, gpu_backward_input, gpu_backward_weight, gpu_forward,
    };
    use runner::kernels::DwParams;
    // (N, C, H, W), kernel, stride, padding
    let cases = [
        ([2, 5, 9, 7], (7, 7), (1, 1), (3, 3)),
        ([1, 37, 11, 13], (3, 3), (2, 2), (1, 1)),
        ([3, 3, 8, 6], (3, 3), (2, 2), (0, 0)),
        ([2, 4, 6, 5], (5, 3), (1, 2), (2, 1)),
        ([2, 3, 2, 3], (7, 7), (1, 1), (3, 3)),
        // large enough that the weight gradient is split into several slices
        ([2, 3, 48, 48], (3, 3), (1, 1), (1, 1)),
    ];
    // (the split's order of addition is part of what the kernels must get right)
    assert!(runner::kernels::gpu::slices(2 * 48 * 48, 3) > 1);
    for (ci, (xd, k, s, p)) in cases.into_iter().enumerate() {
        let params = DwParams {
            stride: s,
            padding: p,
        };
        for dt in DTYPES {
            let nx: usize = xd.iter().product();
            let (x, xb) = input(dt, &values(ci as u64, nx), &xd);
            let wd = [xd[1], 1, k.0, k.1];
            let (w, wb) = input(dt, &values(100 + ci as u64, wd.iter().product()), &wd);
            // reference: the composed shifted-window sum, gradients by Candle's autograd
            let y = reference(|| depthwise_shift_sum(&x, &w, params)).unwrap();
            let (yb, shape) = gpu_forward(&Emu, dt, &xb, &xd, &wb, &wd, params).unwrap();
            assert_eq!(shape.dims(), y.dims());
            let what = format!("depthwise {xd:?} k{k:?} s{s:?} p{p:?}");
            close(&format!("{what} forward"), dt, &yb.to_f32(), &flat(&y));
            let gy_v = rounded(dt, &values(200 + ci as u64, y.elem_count()));
            let gy = Tensor::from_vec(gy_v.clone(), y.shape(), &Device::Cpu).unwrap();
            let grads = (y * &gy).unwrap().sum_all().unwrap().backward().unwrap();
            let gyb = HostBuf::from_f32(dt, &gy_v);
            let (gx, _) =
                gpu_backward_input(&Emu, dt, &gyb, gy.dims(), &wb, &wd, (xd[2], xd[3]), params)
                    .unwrap();
            close(
                &format!("{what} input grad"),
                dt,
                &gx.to_f32(),
                &flat(grads.get(&x).unwrap()),
            );
            let (gw, _) =
                gpu_backward_weight(&Emu, dt, &xb, &xd, &gyb, gy.dims(), k, params).unwrap();
            close(
                &format!("{what} weight grad"),
                dt,
                &gw.to_f32(),
                &flat(grads.get(&w).unwrap()),
            );
        }
    }
}

/// `sum(y * r)` and its gradients for each of `vars`, by Candle's autograd; `r` fixed values.
fn grads_of(y: &Tensor, seed: u64, dt: DType, vars: &[&Var]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let r = rounded(dt, &values(seed, y.elem_count()));
    let rt = Tensor::from_vec(r.clone(), y.shape(), &Device::Cpu).unwrap();
    let g = (y * &rt).unwrap().sum_all().unwrap().backward().unwrap();
    let out = vars
        .iter()
        .map(|v| flat(g.get(v).expect("a gradient")))
        .collect();
    (r, out)
}

// ---------------------------------------------------------------------------------------------
// Depthwise convolution, channels-last with bias (ConvNeXt blocks).

#[test]
fn depthwise_channels_last_forward_and_gradients() {
    use runner::kernels::depthwise_nhwc::{
        depthwise_nhwc, gpu_backward_input, gpu_backward_params, gpu_forward,
    };
    for (ci, (n, h, w, c, k)) in [
        (2usize, 9usize, 7usize, 37usize, 7usize),
        (1, 4, 5, 96, 7),
        (3, 2, 3, 9, 7),
        (2, 6, 5, 3, 3),
        (2, 5, 8, 70, 5),
        // the weight and bias gradients split into several slices
        (2, 12, 12, 40, 3),
    ]
    .into_iter()
    .enumerate()
    {
        if (n, h, w, c) == (2, 12, 12, 40) {
            assert!(runner::kernels::gpu::slices(n * h * w * 32, c.div_ceil(32)) > 1);
        }
        for dt in DTYPES {
            let seed = 10 * ci as u64;
            let (x, xb) = input(dt, &values(seed, n * h * w * c), &[n, h, w, c]);
            let (wt, wb) = input(dt, &values(seed + 1, c * k * k), &[c, 1, k, k]);
            let (b, bb) = input(dt, &values(seed + 2, c), &[c]);
            let y = reference(|| depthwise_nhwc(&x, &wt, &b)).unwrap();
            let what = format!("depthwise_nhwc {:?} k{k}", [n, h, w, c]);
            let yb = gpu_forward(&Emu, dt, &xb, &wb, &bb, [n, h, w, c], (k, k)).unwrap();
            close(&format!("{what} forward"), dt, &yb.to_f32(), &flat(&y));
            let (r, g) = grads_of(&y, seed + 3, dt, &[&x, &wt, &b]);
            let rb = HostBuf::from_f32(dt, &r);
            let gx = gpu_backward_input(&Emu, dt, &rb, &wb, [n, h, w, c], (k, k)).unwrap();
            close(&format!("{what} input grad"), dt, &gx.to_f32(), &g[0]);
            let p = gpu_backward_params(&Emu, dt, &xb, &rb, [n, h, w, c], (k, k))
                .unwrap()
                .to_f32();
            close(&format!("{what} weight grad"), dt, &p[..c * k * k], &g[1]);
            close(&format!("{what} bias grad"), dt, &p[c * k * k..], &g[2]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pooling.

#[test]
fn pooling_forward_and_gradients() {
    use runner::kernels::pool::{
        gpu_avg_backward, gpu_avg_forward, gpu_max_backward, gpu_max_forward, pool_generic,
    };
    use runner::kernels::{max_pool2d, PoolParams};
    let cases = [
        ([2, 37, 9, 7], PoolParams::square(3, 2, 1)),
        ([1, 5, 8, 11], PoolParams::square(2, 2, 0)),
        ([2, 3, 7, 7], PoolParams::square(3, 1, 1)),
        (
            [1, 4, 10, 6],
            PoolParams {
                kernel: (3, 2),
                stride: (2, 1),
                padding: (1, 0),
            },
        ),
        ([3, 2, 5, 5], PoolParams::square(5, 3, 2)),
    ];
    for (ci, (d, p)) in cases.into_iter().enumerate() {
        for dt in DTYPES {
            let seed = 300 + 10 * ci as u64;
            let (x, xb) = input(dt, &values(seed, d.iter().product()), &d);
            let what = format!("pool {d:?} {p:?}");
            // max-pool: the project's CPU kernel (first maximum; bf16 rounding makes ties)
            let y = max_pool2d(&x, p).unwrap();
            let (yb, _) = gpu_max_forward(&Emu, dt, &xb, &d, p).unwrap();
            close(&format!("{what} max forward"), dt, &yb.to_f32(), &flat(&y));
            let (r, g) = grads_of(&y, seed + 1, dt, &[&x]);
            let rb = HostBuf::from_f32(dt, &r);
            let (gx, _) = gpu_max_backward(&Emu, dt, &xb, &d, &rb, y.dims(), p).unwrap();
            close(&format!("{what} max grad"), dt, &gx.to_f32(), &g[0]);
            // avg-pool: the composed reference
            let y = reference(|| pool_generic(&x, p, false)).unwrap();
            let (yb, _) = gpu_avg_forward(&Emu, dt, &xb, &d, p).unwrap();
            close(&format!("{what} avg forward"), dt, &yb.to_f32(), &flat(&y));
            let (r, g) = grads_of(&y, seed + 2, dt, &[&x]);
            let rb = HostBuf::from_f32(dt, &r);
            let (gx, _) = gpu_avg_backward(&Emu, dt, &rb, y.dims(), (d[2], d[3]), p).unwrap();
            close(&format!("{what} avg grad"), dt, &gx.to_f32(), &g[0]);
        }
    }
}

#[test]
fn max_pool_propagates_nan_and_takes_the_first_maximum() {
    use runner::kernels::pool::{gpu_max_backward, gpu_max_forward};
    use runner::kernels::{max_pool2d, PoolParams};
    let p = PoolParams::square(2, 2, 0);
    let v = [
        1.0f32,
        3.0,
        3.0,
        0.5,
        f32::NAN,
        2.0,
        1.0,
        1.0,
        0.0,
        7.0,
        7.0,
        7.0,
        0.0,
        0.0,
        7.0,
        1.0,
    ];
    let d = [1, 1, 4, 4];
    let x = Var::from_tensor(&Tensor::from_vec(v.to_vec(), &d, &Device::Cpu).unwrap()).unwrap();
    let y = max_pool2d(&x, p).unwrap();
    let xb = HostBuf::from_f32(DType::F32, &v);
    let (yb, _) = gpu_max_forward(&Emu, DType::F32, &xb, &d, p).unwrap();
    let (got, want) = (yb.to_f32(), flat(&y));
    assert!(got[0].is_nan() && want[0].is_nan(), "{got:?} {want:?}");
    assert_eq!(got[1..], want[1..]);
    let (r, g) = grads_of(&y, 1, DType::F32, &[&x]);
    let (gx, _) = gpu_max_backward(
        &Emu,
        DType::F32,
        &xb,
        &d,
        &HostBuf::from_f32(DType::F32, &r),
        y.dims(),
        p,
    )
    .unwrap();
    assert_eq!(gx.to_f32(), g[0]);
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last dimension and over the channels.

fn params(seed: u64, c: usize) -> (Var, HostBuf, Var, HostBuf) {
    let w: Vec<f32> = values(seed, c).iter().map(|v| 1.0 + 0.5 * v).collect();
    let (wv, wb) = input(DType::F32, &w, &[c]);
    let (bv, bb) = input(DType::F32, &values(seed + 1, c), &[c]);
    (wv, wb, bv, bb)
}

#[test]
fn layer_norm_last_dim_forward_and_gradients() {
    use runner::kernels::layernorm::{gpu_backward, gpu_forward, layer_norm_last};
    for (ci, dims) in [
        vec![2usize, 5, 7, 37],
        vec![130, 8],
        vec![3, 1],
        vec![4, 2, 96],
        vec![6, 200],
    ]
    .into_iter()
    .enumerate()
    {
        let c = *dims.last().unwrap();
        let n: usize = dims.iter().product();
        for dt in DTYPES {
            let seed = 500 + 10 * ci as u64;
            let xs: Vec<f32> = values(seed, n).iter().map(|v| 2.0 * v + 0.5).collect();
            let (x, xb) = input(dt, &xs, &dims);
            let (w, wb, b, bb) = params(seed + 1, c);
            let eps = 1e-6;
            let y = reference(|| layer_norm_last(&x, &w, &b, eps)).unwrap();
            let what = format!("layer_norm {dims:?}");
            let yb = gpu_forward(&Emu, dt, &xb, &wb, &bb, n, c, eps as f32).unwrap();
            close(&format!("{what} forward"), dt, &yb.to_f32(), &flat(&y));
            let (r, g) = grads_of(&y, seed + 3, dt, &[&x, &w, &b]);
            let rb = HostBuf::from_f32(dt, &r);
            let gwb = HostBuf::new(DType::F32, 2 * c);
            let gx = gpu_backward(&Emu, dt, &xb, &wb, &rb, n, c, eps as f32, &gwb).unwrap();
            close(&format!("{what} input grad"), dt, &gx.to_f32(), &g[0]);
            let p = gwb.to_f32();
            // parameter gradients stay f32 whatever the input's dtype
            close(&format!("{what} weight grad"), DType::F32, &p[..c], &g[1]);
            close(&format!("{what} bias grad"), DType::F32, &p[c..], &g[2]);
        }
    }
}

#[test]
fn layer_norm_channels_forward_and_gradients() {
    use runner::kernels::layernorm::{gpu_channels_backward, gpu_channels_forward};
    for (ci, d) in [
        [2usize, 37, 5, 7],
        [1, 96, 4, 4],
        [3, 3, 2, 1],
        [2, 8, 9, 6],
        // the parameter gradients split into several slices (8 channels: with 3, the input
        // gradient's cancellation over so few channels exceeds f32's tolerance on both sides)
        [2, 8, 48, 48],
    ]
    .into_iter()
    .enumerate()
    {
        let c = d[1];
        if d == [2, 8, 48, 48] {
            assert!(runner::kernels::gpu::slices(d[0] * d[2] * d[3], c) > 1);
        }
        for dt in DTYPES {
            let seed = 600 + 10 * ci as u64;
            let xs: Vec<f32> = values(seed, d.iter().product())
                .iter()
                .map(|v| 2.0 * v - 0.3)
                .collect();
            let (x, xb) = input(dt, &xs, &d);
            let (w, wb, b, bb) = params(seed + 1, c);
            let eps = 1e-6;
            // timm's LayerNorm2d from Candle ops (the model's composed path)
            let y = {
                let mean = x.mean_keepdim(1).unwrap();
                let xc = x.broadcast_sub(&mean).unwrap();
                let var = xc.sqr().unwrap().mean_keepdim(1).unwrap();
                xc.broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
                    .unwrap()
                    .broadcast_mul(&w.reshape((1, c, 1, 1)).unwrap())
                    .unwrap()
                    .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
                    .unwrap()
            };
            let what = format!("layer_norm channels {d:?}");
            let yb = gpu_channels_forward(&Emu, dt, &xb, &d, &wb, &bb, eps as f32).unwrap();
            close(&format!("{what} forward"), dt, &yb.to_f32(), &flat(&y));
            let (r, g) = grads_of(&y, seed + 3, dt, &[&x, &w, &b]);
            let rb = HostBuf::from_f32(dt, &r);
            let gwb = HostBuf::new(DType::F32, 2 * c);
            let gx = gpu_channels_backward(&Emu, dt, &xb, &d, &wb, &rb, eps as f32, &gwb).unwrap();
            close(&format!("{what} input grad"), dt, &gx.to_f32(), &g[0]);
            let p = gwb.to_f32();
            close(&format!("{what} weight grad"), DType::F32, &p[..c], &g[1]);
            close(&format!("{what} bias grad"), DType::F32, &p[c..], &g[2]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GELU, and GELU of x + bias (channels-last).

#[test]
fn gelu_and_bias_gelu_forward_and_gradients() {
    use runner::kernels::channels_last::bias_gelu;
    use runner::kernels::gelu::{gpu_backward, gpu_bias_backward, gpu_bias_forward, gpu_forward};
    use runner::kernels::gelu_erf;
    // the last: the bias gradient (column sums) split into several slices
    for (ci, dims) in [vec![3usize, 7, 37], vec![1000], vec![5, 96], vec![160, 37]]
        .into_iter()
        .enumerate()
    {
        let n: usize = dims.iter().product();
        let c = *dims.last().unwrap();
        if dims == [160, 37] {
            assert!(runner::kernels::gpu::slices((n / c) * 32, c.div_ceil(32)) > 1);
        }
        for dt in DTYPES {
            let seed = 700 + 10 * ci as u64;
            let xs: Vec<f32> = values(seed, n).iter().map(|v| 4.0 * v).collect();
            let (x, xb) = input(dt, &xs, &dims);
            let what = format!("gelu {dims:?}");
            let y = reference(|| gelu_erf(&x)).unwrap();
            let yb = gpu_forward(&Emu, dt, &xb, n).unwrap();
            close(&format!("{what} forward"), dt, &yb.to_f32(), &flat(&y));
            let (r, g) = grads_of(&y, seed + 1, dt, &[&x]);
            let rb = HostBuf::from_f32(dt, &r);
            let gx = gpu_backward(&Emu, dt, &xb, &rb, n).unwrap();
            close(&format!("{what} grad"), dt, &gx.to_f32(), &g[0]);
            let (b, bb) = input(DType::F32, &values(seed + 2, c), &[c]);
            let y = reference(|| bias_gelu(&x, &b)).unwrap();
            let yb = gpu_bias_forward(&Emu, dt, &xb, &bb, n, c).unwrap();
            close(&format!("bias {what} forward"), dt, &yb.to_f32(), &flat(&y));
            let (r, g) = grads_of(&y, seed + 3, dt, &[&x, &b]);
            let rb = HostBuf::from_f32(dt, &r);
            let gb = HostBuf::new(DType::F32, c);
            let gx = gpu_bias_backward(&Emu, dt, &xb, &bb, &rb, n, c, &gb).unwrap();
            close(&format!("bias {what} input grad"), dt, &gx.to_f32(), &g[0]);
            // the bias gradient adds up the dtype-rounded input gradients
            close(&format!("bias {what} bias grad"), dt, &gb.to_f32(), &g[1]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// BatchNorm, train and eval mode, with the fused activations.

#[test]
fn batch_norm_train_and_eval_forward_and_gradients() {
    use runner::kernels::batchnorm::{gpu_backward, gpu_forward, gpu_stats};
    use runner::kernels::{batch_norm_train_act, BnAct};
    let acts = [BnAct::None, BnAct::Relu, BnAct::Relu6];
    for (ci, d) in [
        [4usize, 37, 5, 7],
        [2, 3, 9, 1],
        [8, 96, 2, 2],
        [1, 5, 40, 60],
        // statistics and parameter gradients split into several slices
        [2, 3, 48, 48],
    ]
    .into_iter()
    .enumerate()
    {
        let c = d[1];
        if d == [2, 3, 48, 48] {
            assert!(runner::kernels::gpu::slices(d[0] * d[2] * d[3], c) > 1);
        }
        for dt in DTYPES {
            let act = acts[ci % 3];
            let seed = 800 + 10 * ci as u64;
            let xs: Vec<f32> = values(seed, d.iter().product())
                .iter()
                .map(|v| 3.0 * v + 1.0)
                .collect();
            let (x, xb) = input(dt, &xs, &d);
            let (w, _, b, _) = params(seed + 1, c);
            let eps = 1e-5;
            let what = format!("batch_norm {d:?} {act:?}");
            // train mode
            let (y, mean, var) = reference(|| batch_norm_train_act(&x, &w, &b, eps, act)).unwrap();
            let (st, _) = gpu_stats(&Emu, dt, &xb, &d).unwrap();
            let stv = st.to_f32();
            close(&format!("{what} mean"), DType::F32, &stv[..c], &flat(&mean));
            close(&format!("{what} var"), DType::F32, &stv[c..], &flat(&var));
            let wbb = HostBuf::from_f32(DType::F32, &[flat(&w), flat(&b)].concat());
            let yb = gpu_forward(&Emu, dt, &xb, &d, &wbb, &st, eps as f32, act).unwrap();
            close(&format!("{what} forward"), dt, &yb.to_f32(), &flat(&y));
            let (r, g) = grads_of(&y, seed + 3, dt, &[&x, &w, &b]);
            let rb = HostBuf::from_f32(dt, &r);
            let p = HostBuf::from_f32(DType::F32, &[flat(&w), flat(&b), stv.clone()].concat());
            let gwb = HostBuf::new(DType::F32, 2 * c);
            let gx = gpu_backward(&Emu, dt, &xb, &d, &rb, &p, eps as f32, act, true, &gwb).unwrap();
            close(&format!("{what} input grad"), dt, &gx.to_f32(), &g[0]);
            let pg = gwb.to_f32();
            close(&format!("{what} weight grad"), DType::F32, &pg[..c], &g[1]);
            close(&format!("{what} bias grad"), DType::F32, &pg[c..], &g[2]);
            // eval mode with running statistics
            let rm: Vec<f32> = values(seed + 4, c).iter().map(|v| 0.5 * v).collect();
            let rv: Vec<f32> = values(seed + 5, c).iter().map(|v| 1.0 + 0.5 * v).collect();
            let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), (1, c, 1, 1), &Device::Cpu).unwrap();
            let scale = ((t(&rv) + eps).unwrap().sqrt().unwrap().recip().unwrap()
                * w.reshape((1, c, 1, 1)).unwrap())
            .unwrap();
            let y = act
                .apply_tensor(
                    x.broadcast_sub(&t(&rm))
                        .unwrap()
                        .broadcast_mul(&scale)
                        .unwrap()
                        .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
                        .unwrap(),
                )
                .unwrap();
            let run = HostBuf::from_f32(DType::F32, &[rm.clone(), rv.clone()].concat());
            let yb = gpu_forward(&Emu, dt, &xb, &d, &wbb, &run, eps as f32, act).unwrap();
            close(&format!("{what} eval forward"), dt, &yb.to_f32(), &flat(&y));
            let (r, g) = grads_of(&y, seed + 6, dt, &[&x, &w, &b]);
            let rb = HostBuf::from_f32(dt, &r);
            let p = HostBuf::from_f32(DType::F32, &[flat(&w), flat(&b), rm, rv].concat());
            let gwb = HostBuf::new(DType::F32, 2 * c);
            let gx =
                gpu_backward(&Emu, dt, &xb, &d, &rb, &p, eps as f32, act, false, &gwb).unwrap();
            close(&format!("{what} eval input grad"), dt, &gx.to_f32(), &g[0]);
            let pg = gwb.to_f32();
            close(
                &format!("{what} eval weight grad"),
                DType::F32,
                &pg[..c],
                &g[1],
            );
            close(
                &format!("{what} eval bias grad"),
                DType::F32,
                &pg[c..],
                &g[2],
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dense convolution: im2col + product, col2im.

#[test]
fn im2col_convolution_forward_and_gradients() {
    use runner::kernels::conv2d_im2col;
    use runner::kernels::im2col::{gpu_col2im, gpu_im2col};
    // (N, C, H, W), O, K, stride, padding; sizes the stride divides (Candle's conv backward)
    for (ci, (d, o, k, s, p)) in [
        ([2usize, 5, 9, 7], 6usize, 3usize, 2usize, 1usize),
        ([1, 3, 8, 8], 4, 7, 1, 3),
        ([2, 37, 5, 6], 3, 1, 1, 0),
        ([1, 4, 11, 9], 5, 3, 1, 0),
    ]
    .into_iter()
    .enumerate()
    {
        for dt in DTYPES {
            let seed = 900 + 10 * ci as u64;
            let (x, xb) = input(dt, &values(seed, d.iter().product()), &d);
            let (w, _) = input(dt, &values(seed + 1, o * d[1] * k * k), &[o, d[1], k, k]);
            let y = reference(|| conv2d_im2col(&x, &w, s, p)).unwrap();
            let (_, _, oh, ow) = y.dims4().unwrap();
            let what = format!("conv {d:?} o{o} k{k} s{s} p{p}");
            // the CUDA path: cols (kernel), then cols @ w^T (cuBLAS there, Candle here)
            let cols = gpu_im2col(&Emu, dt, &xb, d, k, s, p).unwrap().to_f32();
            let ckk = d[1] * k * k;
            let cols = Tensor::from_vec(cols, (d[0] * oh * ow, ckk), &Device::Cpu).unwrap();
            let wm = w.reshape((o, ckk)).unwrap();
            let yg = cols
                .matmul(&wm.t().unwrap())
                .unwrap()
                .reshape((d[0], oh, ow, o))
                .unwrap()
                .permute((0, 3, 1, 2))
                .unwrap();
            close(&format!("{what} forward"), dt, &flat(&yg), &flat(&y));
            let (r, g) = grads_of(&y, seed + 2, dt, &[&x]);
            // the columns' gradient as cuBLAS forms it: gy (rows, O) @ w (O, CKK), rounded to dt
            let gy = Tensor::from_vec(r, y.shape(), &Device::Cpu)
                .unwrap()
                .permute((0, 2, 3, 1))
                .unwrap()
                .reshape((d[0] * oh * ow, o))
                .unwrap();
            let gcols = rounded(dt, &flat(&gy.matmul(&wm).unwrap()));
            let gx = gpu_col2im(&Emu, dt, &HostBuf::from_f32(dt, &gcols), d, k, s, p).unwrap();
            close(&format!("{what} input grad"), dt, &gx.to_f32(), &g[0]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Optimizers: the CUDA kernels give the CPU kernels' bits.

#[test]
fn optimizer_kernels_match_the_cpu_bit_for_bit() {
    use runner::train::optim::fused::{gpu_adamw_step, gpu_sgd_step, AdamWStepCuda, SgdStepCuda};
    use runner::train::optim::{AdamW, AdamWParams, Optimizer, Param, Sgd, SgdParams};
    let n = 1000;
    let p0 = values(1, n);
    let grads: Vec<Vec<f32>> = (0..3).map(|i| values(10 + i, n)).collect();
    let cpu_param = || {
        let var =
            Var::from_tensor(&Tensor::from_vec(p0.clone(), n, &Device::Cpu).unwrap()).unwrap();
        let param = Param {
            name: "w".into(),
            var: var.clone(),
            weight_decay: 0.05,
            lr_scale: 1.0,
        };
        (var, param)
    };
    // the gradients of sum(w * g): exactly g
    let store = |var: &Var, g: &[f32]| {
        let gt = Tensor::from_vec(g.to_vec(), n, &Device::Cpu).unwrap();
        (var.as_tensor() * gt)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    };
    let lr = 0.1;
    for (momentum, dampening, nesterov) in [
        (0.9, 0.0, false),
        (0.9, 0.0, true),
        (0.0, 0.0, false),
        (0.8, 0.3, false),
    ] {
        let (var, param) = cpu_param();
        let mut opt = Sgd::new(
            vec![param],
            SgdParams {
                momentum,
                dampening,
                nesterov,
            },
        )
        .unwrap();
        let pb = HostBuf::from_f32(DType::F32, &p0);
        let buf = HostBuf::from_f32(DType::F32, &vec![0.0; n]);
        for (step, g) in grads.iter().enumerate() {
            opt.step(&store(&var, g), lr).unwrap();
            let hp = SgdStepCuda {
                lr: lr as f32,
                momentum: momentum as f32,
                one_minus_dampening: (1.0 - dampening) as f32,
                weight_decay: 0.05,
                has_momentum: momentum != 0.0,
                nesterov,
                first: step == 0,
            };
            gpu_sgd_step(&Emu, &pb, &HostBuf::from_f32(DType::F32, g), &buf, n, &hp).unwrap();
            let want = flat(var.as_tensor());
            let got = pb.to_f32();
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "sgd m{momentum} d{dampening} nesterov {nesterov} step {step}"
            );
        }
    }
    let (beta1, beta2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let (var, param) = cpu_param();
    let mut opt = AdamW::new(vec![param], AdamWParams { beta1, beta2, eps }).unwrap();
    let (pb, m, v) = (
        HostBuf::from_f32(DType::F32, &p0),
        HostBuf::from_f32(DType::F32, &vec![0.0; n]),
        HostBuf::from_f32(DType::F32, &vec![0.0; n]),
    );
    for (i, g) in grads.iter().enumerate() {
        opt.step(&store(&var, g), lr).unwrap();
        let step = i as i32 + 1;
        let (bc1, bc2_sqrt) = (1.0 - beta1.powi(step), (1.0 - beta2.powi(step)).sqrt());
        let hp = AdamWStepCuda {
            g: Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            decay: (1.0 - lr * 0.05) as f32,
            inv_bc2_sqrt: (1.0 / bc2_sqrt) as f32,
            eps: eps as f32,
            step_size: (lr / bc1) as f32,
        };
        gpu_adamw_step(&Emu, &pb, &HostBuf::from_f32(DType::F32, g), &m, &v, n, &hp).unwrap();
        let want = flat(var.as_tensor());
        assert!(
            pb.to_f32()
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "adamw step {step}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The bf16 / f16 conversions of common.cuh, against Candle's (the `half` crate).

#[test]
fn half_conversions_round_like_candle() {
    use runner::kernels::gpu::{Grid, DEPTHWISE, GELU};
    // f32 -> f16 / bf16 (st): dw_sum_parts with one slice copies f32 parts into the dtype
    let mut xs: Vec<f32> = values(5, 20000).iter().map(|v| v * 70000.0).collect();
    xs.extend(values(6, 20000).iter().map(|v| v * 1e-4));
    xs.extend(values(7, 20000).iter().map(|v| v * 1e-7));
    xs.extend((0..20000u32).map(|i| f32::from_bits(0x3800_0000 + i * 4096)));
    // (not -0.0: the kernel adds it to 0.0, which gives +0.0)
    xs.extend([
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        65504.0,
        65520.0,
        65519.0,
        5.96e-8,
        2.98e-8,
        2.99e-8,
        1e-9,
    ]);
    let parts = HostBuf::from_f32(DType::F32, &xs);
    for dt in [DType::BF16, DType::F16] {
        let out = HostBuf::new(dt, xs.len());
        let s = gpu::suffix(dt).unwrap();
        let args = [
            Arg::Ptr(parts.addr()),
            Arg::Ptr(out.addr()),
            Arg::I32(xs.len() as i32),
            Arg::I32(1),
        ];
        Emu.launch(
            &DEPTHWISE,
            &format!("dw_sum_parts_{s}"),
            Grid::items(xs.len()),
            &args,
        )
        .unwrap();
        let want = HostBuf::from_f32(dt, &xs);
        for (i, (a, b)) in out
            .bytes()
            .chunks(2)
            .zip(want.bytes().chunks(2))
            .enumerate()
        {
            let nan = xs[i].is_nan();
            assert!(a == b || nan, "{dt:?} from {:e}: {a:?} != {b:?}", xs[i]);
        }
    }
    // f16 / bf16 -> f32 (ld), every bit pattern: column sums of one row
    for dt in [DType::BF16, DType::F16] {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let src = HostBuf::new(dt, all.len());
        // SAFETY: the buffer holds all.len() 16-bit values.
        unsafe { std::ptr::copy_nonoverlapping(all.as_ptr(), src.addr() as *mut u16, all.len()) };
        let out = HostBuf::new(DType::F32, all.len());
        let s = gpu::suffix(dt).unwrap();
        let args = [
            Arg::Ptr(src.addr()),
            Arg::Ptr(out.addr()),
            Arg::U32(1),
            Arg::I32(all.len() as i32),
        ];
        Emu.launch(
            &GELU,
            &format!("col_sum_parts_{s}"),
            Grid::columns(all.len(), 1),
            &args,
        )
        .unwrap();
        for (&bits, got) in all.iter().zip(out.to_f32()) {
            let want = match dt {
                DType::BF16 => half::bf16::from_bits(bits).to_f32(),
                _ => half::f16::from_bits(bits).to_f32(),
            };
            // (== : the kernel's sum turns -0 into +0)
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "{dt:?} {bits:#06x}: {got} != {want}"
            );
        }
    }
}

/// The emulator reports what would hang or be undefined on a GPU instead of running it.
#[test]
fn a_grid_stride_loop_runs_its_later_passes() {
    // real sizes reach a second pass only past 65,535 blocks x 256 threads (16.7 million
    // elements); with the cap lowered to 2 blocks on this thread, 3,000 values take 6 passes
    use runner::kernels::gelu::gpu_forward;
    use runner::kernels::gelu_erf;
    let n = 3000;
    assert!(n > 2 * runner::kernels::gpu::THREADS as usize * 5);
    runner::kernels::gpu::cap_blocks_for_test(Some(2));
    for dt in DTYPES {
        let xs: Vec<f32> = values(950, n).iter().map(|v| 4.0 * v).collect();
        let (x, xb) = input(dt, &xs, &[n]);
        let y = reference(|| gelu_erf(&x)).unwrap();
        let yb = gpu_forward(&Emu, dt, &xb, n).unwrap();
        close("gelu, 2 blocks, 6 passes", dt, &yb.to_f32(), &flat(&y));
    }
    runner::kernels::gpu::cap_blocks_for_test(None);
}

#[test]
fn emulator_refuses_a_block_of_the_wrong_size() {
    let x = HostBuf::from_f32(DType::F32, &[1.0; 64]);
    let y = HostBuf::new(DType::F32, 64);
    let bad = Grid {
        grid: (1, 1, 1),
        block: (48, 1, 1),
    };
    let err = Emu
        .launch(
            &gpu::GELU,
            "gelu_fwd_f32",
            bad,
            &[Arg::Ptr(x.addr()), Arg::Ptr(y.addr()), Arg::U32(64)],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiple of 32"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The step's gradient checks: every tensor in two launches, the CPU's bits.

/// The emulation, counting its launches.
struct Counting {
    launches: std::cell::Cell<usize>,
}

impl Launcher for Counting {
    type Buf = HostBuf;
    fn alloc(&self, dtype: DType, len: usize) -> Result<HostBuf> {
        Emu.alloc(dtype, len)
    }
    fn upload(&self, data: &[u32]) -> Result<HostBuf> {
        Emu.upload(data)
    }
    fn launch(&self, m: &'static Module, kernel: &str, g: Grid, args: &[Arg]) -> Result<()> {
        self.launches.set(self.launches.get() + 1);
        Emu.launch(m, kernel, g, args)
    }
}

#[test]
fn grad_check_kernels_match_the_cpu_bit_for_bit_in_two_launches() {
    use runner::train::optim::grad_check::{cpu_grad_check, gpu_grad_check, grad_check, CHUNK};
    // sizes around a chunk, and one of 257 chunks, so that pass two's threads loop
    let sizes = [1, 255, 4096, 4097, 3 * CHUNK + 17, 256 * CHUNK + 5, 70];
    let mut tensors: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| values(40 + i as u64, n))
        .collect();
    tensors[1][7] = f32::NAN;
    tensors[3][4096] = f32::INFINITY;
    tensors[3][0] = f32::NEG_INFINITY;
    tensors[5][300_000] = f32::NAN;
    tensors[6][3] = 1e30; // its square overflows: the sum is infinite, the count stays 0
    let slices: Vec<&[f32]> = tensors.iter().map(|t| t.as_slice()).collect();
    let want = cpu_grad_check(&slices);
    let bufs: Vec<HostBuf> = tensors
        .iter()
        .map(|t| HostBuf::from_f32(DType::F32, t))
        .collect();
    let list: Vec<(u64, usize)> = bufs
        .iter()
        .zip(&sizes)
        .map(|(b, &n)| (b.addr(), n))
        .collect();
    let l = Counting {
        launches: std::cell::Cell::new(0),
    };
    let got = gpu_grad_check(&l, &list).unwrap().to_f32();
    assert_eq!(
        l.launches.get(),
        2,
        "one launch per pass, whatever the tensor count"
    );
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want), "emulated kernels against the CPU");
    let n = sizes.len();
    assert_eq!(&want[n..], &[0.0, 1.0, 0.0, 2.0, 0.0, 1.0, 0.0]);
    assert!(want[6].is_infinite() && want[1].is_nan() && want[0].is_finite());
    // the sums of squares are the f64 ones, to f32's precision
    for (t, x) in tensors
        .iter()
        .enumerate()
        .filter(|(t, _)| [0, 2, 4].contains(t))
    {
        let exact: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
        let rel = (want[t] as f64 - exact).abs() / exact;
        assert!(
            rel < 1e-5,
            "tensor {t}: {} against {exact} ({rel:e})",
            want[t]
        );
    }
    // and the op users run gives the same values on the CPU
    let ts: Vec<Tensor> = tensors
        .iter()
        .map(|t| Tensor::from_vec(t.clone(), t.len(), &Device::Cpu).unwrap())
        .collect();
    let refs: Vec<&Tensor> = ts.iter().collect();
    assert_eq!(bits(&flat(&grad_check(&refs).unwrap())), bits(&want));
}
