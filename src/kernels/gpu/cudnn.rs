//! cuDNN convolutions (feature `cudnn`, libcudnn needed at run time): the forward, the input
//! gradient (backward data) and the weight gradient (backward filter) of an NCHW convolution
//! with groups 1 and a square kernel, as one Candle op with its own backward, through cudarc's
//! cuDNN bindings. One cuDNN handle per device and thread (handles are neither `Send` nor
//! `Sync`; Candle keeps its own the same way).
//!
//! Every dtype computes in f32 (bf16 and f16 data, f32 accumulation, as PyTorch does: an f16
//! weight-gradient sum of N x OH x OW loss-scaled terms would overflow in f16). Math modes follow
//! PyTorch's defaults: tensor cores for bf16 / f16, TF32 allowed for f32 convolutions
//! (`torch.backends.cudnn.allow_tf32 = True`); [`set_strict`] (`runner selftest`'s parity
//! checks) turns TF32 off and picks deterministic backward algorithms. The descriptors, the
//! algorithm and its workspace size are made once per shape and kept (per thread); one
//! workspace buffer per device grows to the largest need. Without this feature, CUDA
//! convolutions run the `im2col` kernel and cuBLAS (`kernels::im2col`).

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::{
    self as cu, ConvBackwardData, ConvBackwardFilter, ConvForward, Cudnn, CudnnDataType,
};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr};
use candle_core::cuda_backend::{CudaStorageSlice, DeviceId, WrapErr};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor,
};

thread_local! {
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    /// Prepared convolutions by shape, pass, dtype and mode (`Rc<Plan<T, C>>` as `dyn Any`).
    static PLANS: RefCell<HashMap<PlanKey, Rc<dyn Any>>> = RefCell::new(HashMap::new());
    /// The workspace of each device (launches are ordered on its one stream, so one buffer
    /// serves them all).
    static WORKSPACES: RefCell<HashMap<DeviceId, CudaSlice<u8>>> = RefCell::new(HashMap::new());
}

/// TF32 off and deterministic algorithms (parity checks); off by default.
static STRICT: AtomicBool = AtomicBool::new(false);

/// Strict mode for the convolutions that follow: f32 convolutions in full precision (no TF32)
/// and deterministic backward algorithms, so that parity with the CPU holds to tight
/// tolerances and repeats bit for bit. `runner selftest` sets it; training leaves it off.
pub fn set_strict(strict: bool) {
    STRICT.store(strict, Ordering::Relaxed);
}

fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream()).map_err(candle_core::Error::wrap)?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    fn new(x: &[usize], wt: &[usize], stride: usize, pad: usize) -> Result<Self> {
        let (&[n, c, h, w], &[o, wc, k, k2]) = (x, wt) else {
            candle_core::bail!("conv2d (cuDNN): expected 4-D input and weight, got {x:?} {wt:?}")
        };
        if wc != c || k != k2 || stride == 0 || h + 2 * pad < k || w + 2 * pad < k {
            candle_core::bail!("conv2d (cuDNN): weight {wt:?} does not fit input {x:?}")
        }
        Ok(Geom {
            n,
            c,
            h,
            w,
            o,
            k,
            stride,
            pad,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pass {
    /// `(x, w) -> y`
    Forward,
    /// `(dy, w) -> dx`
    Data,
    /// `(x, dy) -> dw`
    Filter,
}

fn i(v: usize) -> i32 {
    v as i32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    dev: DeviceId,
    pass: Pass,
    g: Geom,
    dtype: TypeId,
    strict: bool,
}

#[derive(Debug, Clone, Copy)]
enum Algo {
    Forward(cu::sys::cudnnConvolutionFwdAlgo_t),
    Data(cu::sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(cu::sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// A convolution prepared for one shape and pass: its descriptors, algorithm and workspace.
struct Plan<T, C> {
    conv: cu::ConvDescriptor<C>,
    x: cu::TensorDescriptor<T>,
    w: cu::FilterDescriptor<T>,
    y: cu::TensorDescriptor<T>,
    algo: Algo,
    workspace: usize,
}

/// The math type of a convolution of element type `T`: tensor cores for 16-bit data; for f32,
/// TF32 allowed (cuDNN's default math on Ampere and later) unless strict.
fn math_type<T: 'static>(strict: bool) -> cu::sys::cudnnMathType_t {
    use cu::sys::cudnnMathType_t::*;
    if TypeId::of::<T>() != TypeId::of::<f32>() {
        CUDNN_TENSOR_OP_MATH
    } else if strict {
        CUDNN_FMA_MATH
    } else {
        CUDNN_DEFAULT_MATH
    }
}

fn plan<T, C>(dev: &CudaDevice, pass: Pass, g: &Geom) -> Result<Rc<Plan<T, C>>>
where
    T: CudnnDataType + 'static,
    C: CudnnDataType + 'static,
{
    use cu::sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let strict = STRICT.load(Ordering::Relaxed);
    let key = PlanKey {
        dev: dev.id(),
        pass,
        g: *g,
        dtype: TypeId::of::<T>(),
        strict,
    };
    if let Some(p) = PLANS.with(|p| p.borrow().get(&key).cloned()) {
        if let Ok(p) = p.downcast::<Plan<T, C>>() {
            return Ok(p);
        }
    }
    let w = candle_core::Error::wrap;
    let cudnn = handle(dev)?;
    let mut conv = cudnn
        .create_conv2d::<C>(
            [i(g.pad), i(g.pad)],
            [i(g.stride), i(g.stride)],
            [1, 1],
            cu::sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )
        .map_err(w)?;
    conv.set_math_type(math_type::<T>(strict)).map_err(w)?;
    let x = cudnn
        .create_4d_tensor::<T>(CUDNN_TENSOR_NCHW, [i(g.n), i(g.c), i(g.h), i(g.w)])
        .map_err(w)?;
    let f = cudnn
        .create_4d_filter::<T>(CUDNN_TENSOR_NCHW, [i(g.o), i(g.c), i(g.k), i(g.k)])
        .map_err(w)?;
    let y = cudnn
        .create_4d_tensor::<T>(CUDNN_TENSOR_NCHW, [i(g.n), i(g.o), i(g.oh), i(g.ow)])
        .map_err(w)?;
    let (algo, workspace) = match pass {
        Pass::Forward => {
            let op = ConvForward {
                conv: &conv,
                x: &x,
                w: &f,
                y: &y,
            };
            // every forward algorithm is deterministic
            let a = op.pick_algorithm().map_err(w)?;
            (Algo::Forward(a), op.get_workspace_size(a).map_err(w)?)
        }
        Pass::Data => {
            let op = ConvBackwardData {
                conv: &conv,
                dx: &x,
                w: &f,
                dy: &y,
            };
            let a = if strict {
                cu::sys::cudnnConvolutionBwdDataAlgo_t::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1
            } else {
                op.pick_algorithm().map_err(w)?
            };
            (Algo::Data(a), op.get_workspace_size(a).map_err(w)?)
        }
        Pass::Filter => {
            let op = ConvBackwardFilter {
                conv: &conv,
                x: &x,
                dw: &f,
                dy: &y,
            };
            let a = if strict {
                cu::sys::cudnnConvolutionBwdFilterAlgo_t::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1
            } else {
                op.pick_algorithm().map_err(w)?
            };
            (Algo::Filter(a), op.get_workspace_size(a).map_err(w)?)
        }
    };
    let p = Rc::new(Plan {
        conv,
        x,
        w: f,
        y,
        algo,
        workspace,
    });
    PLANS.with(|m| m.borrow_mut().insert(key, p.clone() as Rc<dyn Any>));
    Ok(p)
}

/// The device's workspace of at least `size` bytes, taken out while a launch uses it.
fn take_workspace(dev: &CudaDevice, size: usize) -> Result<CudaSlice<u8>> {
    if let Some(ws) = WORKSPACES.with(|m| m.borrow_mut().remove(&dev.id())) {
        if ws.len() >= size.max(1) {
            return Ok(ws);
        }
    }
    // SAFETY: a workspace's contents are cuDNN's scratch, written before read.
    unsafe { dev.cuda_stream().alloc::<u8>(size.max(1)) }.w()
}

fn put_workspace(dev: &CudaDevice, ws: CudaSlice<u8>) {
    WORKSPACES.with(|m| m.borrow_mut().insert(dev.id(), ws));
}

/// One pass of the convolution, element type `T`, compute type `C`.
fn run<T, C>(
    dev: &CudaDevice,
    pass: Pass,
    g: &Geom,
    a: &CudaSlice<T>,
    ao: usize,
    b: &CudaSlice<T>,
    bo: usize,
) -> Result<CudaSlice<T>>
where
    T: CudnnDataType + DeviceRepr + num_one::One + 'static,
    C: CudnnDataType + 'static,
{
    let p = plan::<T, C>(dev, pass, g)?;
    let (a, b) = (a.slice(ao..), b.slice(bo..));
    let len = match pass {
        Pass::Forward => g.n * g.o * g.oh * g.ow,
        Pass::Data => g.n * g.c * g.h * g.w,
        Pass::Filter => g.o * g.c * g.k * g.k,
    };
    // SAFETY: with beta = 0 cuDNN writes every output element without reading it.
    let mut out = unsafe { dev.alloc::<T>(len)? };
    let mut ws = take_workspace(dev, p.workspace)?;
    let scale = (T::one(), T::zero());
    let w = candle_core::Error::wrap;
    // SAFETY: the descriptors describe the buffers (contiguous NCHW of the sizes above).
    let launched = unsafe {
        match p.algo {
            Algo::Forward(algo) => ConvForward {
                conv: &p.conv,
                x: &p.x,
                w: &p.w,
                y: &p.y,
            }
            .launch(algo, Some(&mut ws), scale, &a, &b, &mut out),
            Algo::Data(algo) => ConvBackwardData {
                conv: &p.conv,
                dx: &p.x,
                w: &p.w,
                dy: &p.y,
            }
            .launch(algo, Some(&mut ws), scale, &mut out, &b, &a),
            Algo::Filter(algo) => ConvBackwardFilter {
                conv: &p.conv,
                x: &p.x,
                dw: &p.w,
                dy: &p.y,
            }
            .launch(algo, Some(&mut ws), scale, &a, &mut out, &b),
        }
    };
    put_workspace(dev, ws);
    launched.map_err(w)?;
    Ok(out)
}

/// `1` and `0` of the element types.
mod num_one {
    pub trait One {
        fn one() -> Self;
        fn zero() -> Self;
    }
    impl One for f32 {
        fn one() -> Self {
            1.0
        }
        fn zero() -> Self {
            0.0
        }
    }
    impl One for half::bf16 {
        fn one() -> Self {
            half::bf16::ONE
        }
        fn zero() -> Self {
            half::bf16::ZERO
        }
    }
    impl One for half::f16 {
        fn one() -> Self {
            half::f16::ONE
        }
        fn zero() -> Self {
            half::f16::ZERO
        }
    }
}

/// One pass on two storages (contiguous), dispatched on their dtype.
fn pass(
    pass: Pass,
    g: &Geom,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<CudaStorage> {
    let (Some((o1, _)), Some((o2, _))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
        candle_core::bail!("conv2d (cuDNN): tensors must be contiguous")
    };
    if s1.dtype() != s2.dtype() {
        candle_core::bail!(
            "conv2d (cuDNN): mixed dtypes {:?} and {:?}",
            s1.dtype(),
            s2.dtype()
        )
    }
    let dev = &s1.device;
    let slice = match (&s1.slice, &s2.slice) {
        (CudaStorageSlice::F32(a), CudaStorageSlice::F32(b)) => {
            CudaStorageSlice::F32(run::<f32, f32>(dev, pass, g, a, o1, b, o2)?)
        }
        (CudaStorageSlice::BF16(a), CudaStorageSlice::BF16(b)) => {
            CudaStorageSlice::BF16(run::<half::bf16, f32>(dev, pass, g, a, o1, b, o2)?)
        }
        (CudaStorageSlice::F16(a), CudaStorageSlice::F16(b)) => {
            CudaStorageSlice::F16(run::<half::f16, f32>(dev, pass, g, a, o1, b, o2)?)
        }
        _ => candle_core::bail!(
            "conv2d (cuDNN): f32, bf16 or f16 only, got {:?}",
            s1.dtype()
        ),
    };
    Ok(CudaStorage {
        slice,
        device: dev.clone(),
    })
}

/// `(x, w) -> y`, backward through [`ConvBwd`].
struct ConvFwd {
    stride: usize,
    pad: usize,
}

/// `(a, b) -> grad` of one backward pass; `g` the forward's sizes.
struct ConvBwd {
    g: Geom,
    pass: Pass,
}

impl CustomOp2 for ConvFwd {
    fn name(&self) -> &'static str {
        "conv2d-cudnn"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("conv2d-cudnn: CUDA only")
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let y = pass(Pass::Forward, &g, s1, l1, s2, l2)?;
        Ok((y, Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geom::new(x.dims(), w.dims(), self.stride, self.pad)?;
        let grad = grad.contiguous()?;
        // the stem's input is the images: no gradient needed, none computed
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(
                w,
                &ConvBwd {
                    g,
                    pass: Pass::Data,
                },
            )?)
        } else {
            None
        };
        let gw = x.apply_op2_no_bwd(
            &grad,
            &ConvBwd {
                g,
                pass: Pass::Filter,
            },
        )?;
        Ok((gx, Some(gw)))
    }
}

impl CustomOp2 for ConvBwd {
    fn name(&self) -> &'static str {
        "conv2d-cudnn-bwd"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("conv2d-cudnn-bwd: CUDA only")
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = self.g;
        let out = pass(self.pass, &g, s1, l1, s2, l2)?;
        let shape = match self.pass {
            Pass::Data => Shape::from((g.n, g.c, g.h, g.w)),
            _ => Shape::from((g.o, g.c, g.k, g.k)),
        };
        Ok((out, shape))
    }
}

/// Convolution of NCHW `x` with `weight` `(O, C, K, K)` on cuDNN, differentiable in both.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if x.dtype() != weight.dtype() || !matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16) {
        candle_core::bail!(
            "conv2d (cuDNN): input {:?} and weight {:?}",
            x.dtype(),
            weight.dtype()
        )
    }
    x.contiguous()?.apply_op2(
        &weight.contiguous()?,
        ConvFwd {
            stride,
            pad: padding,
        },
    )
}
