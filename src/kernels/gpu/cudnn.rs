//! cuDNN convolutions (feature `cudnn`, libcudnn needed at run time): the forward, the input
//! gradient (backward data) and the weight gradient (backward filter) of an NCHW convolution
//! with groups 1 and a square kernel, as one Candle op with its own backward, through cudarc's
//! cuDNN bindings. One cuDNN handle per device and thread (handles are neither `Send` nor
//! `Sync`; Candle keeps its own the same way). f32 and f16 compute in their own type, bf16 in
//! f32, as Candle's cuDNN forward does. Without this feature, CUDA convolutions run the
//! `im2col` kernel and cuBLAS (`kernels::im2col`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::{
    self as cu, ConvBackwardData, ConvBackwardFilter, ConvForward, Cudnn, CudnnDataType,
};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::{CudaStorageSlice, DeviceId, WrapErr};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor,
};

thread_local! {
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
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
#[derive(Debug, Clone, Copy)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    T: CudnnDataType + DeviceRepr + ValidAsZeroBits + num_one::One,
    C: CudnnDataType,
{
    use cu::sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let cudnn = handle(dev)?;
    let conv = cudnn
        .create_conv2d::<C>(
            [i(g.pad), i(g.pad)],
            [i(g.stride), i(g.stride)],
            [1, 1],
            cu::sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )
        .map_err(candle_core::Error::wrap)?;
    let x = cudnn
        .create_4d_tensor::<T>(CUDNN_TENSOR_NCHW, [i(g.n), i(g.c), i(g.h), i(g.w)])
        .map_err(candle_core::Error::wrap)?;
    let w = cudnn
        .create_4d_filter::<T>(CUDNN_TENSOR_NCHW, [i(g.o), i(g.c), i(g.k), i(g.k)])
        .map_err(candle_core::Error::wrap)?;
    let y = cudnn
        .create_4d_tensor::<T>(CUDNN_TENSOR_NCHW, [i(g.n), i(g.o), i(g.oh), i(g.ow)])
        .map_err(candle_core::Error::wrap)?;
    let stream = dev.cuda_stream();
    let (a, b) = (a.slice(ao..), b.slice(bo..));
    let len = match pass {
        Pass::Forward => g.n * g.o * g.oh * g.ow,
        Pass::Data => g.n * g.c * g.h * g.w,
        Pass::Filter => g.o * g.c * g.k * g.k,
    };
    let mut out = dev.alloc_zeros::<T>(len)?;
    let scale = (T::one(), T::zero());
    // SAFETY: the descriptors describe the buffers (contiguous NCHW of the sizes above).
    unsafe {
        match pass {
            Pass::Forward => {
                let op = ConvForward {
                    conv: &conv,
                    x: &x,
                    w: &w,
                    y: &y,
                };
                let algo = op.pick_algorithm().map_err(candle_core::Error::wrap)?;
                let size = op
                    .get_workspace_size(algo)
                    .map_err(candle_core::Error::wrap)?;
                let mut ws = stream.alloc_zeros::<u8>(size.max(1)).w()?;
                op.launch(algo, Some(&mut ws), scale, &a, &b, &mut out)
                    .map_err(candle_core::Error::wrap)?;
            }
            Pass::Data => {
                let op = ConvBackwardData {
                    conv: &conv,
                    dx: &x,
                    w: &w,
                    dy: &y,
                };
                let algo = op.pick_algorithm().map_err(candle_core::Error::wrap)?;
                let size = op
                    .get_workspace_size(algo)
                    .map_err(candle_core::Error::wrap)?;
                let mut ws = stream.alloc_zeros::<u8>(size.max(1)).w()?;
                op.launch(algo, Some(&mut ws), scale, &mut out, &b, &a)
                    .map_err(candle_core::Error::wrap)?;
            }
            Pass::Filter => {
                let op = ConvBackwardFilter {
                    conv: &conv,
                    x: &x,
                    dw: &w,
                    dy: &y,
                };
                let algo = op.pick_algorithm().map_err(candle_core::Error::wrap)?;
                let size = op
                    .get_workspace_size(algo)
                    .map_err(candle_core::Error::wrap)?;
                let mut ws = stream.alloc_zeros::<u8>(size.max(1)).w()?;
                op.launch(algo, Some(&mut ws), scale, &a, &mut out, &b)
                    .map_err(candle_core::Error::wrap)?;
            }
        }
    }
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
            CudaStorageSlice::F16(run::<half::f16, half::f16>(dev, pass, g, a, o1, b, o2)?)
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
        let gx = grad.apply_op2_no_bwd(
            w,
            &ConvBwd {
                g,
                pass: Pass::Data,
            },
        )?;
        let gw = x.apply_op2_no_bwd(
            &grad,
            &ConvBwd {
                g,
                pass: Pass::Filter,
            },
        )?;
        Ok((Some(gx), Some(gw)))
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
