//! Project-owned Candle kernels: depthwise convolution, im2col convolution, pooling,
//! exact GELU, LayerNorm and BatchNorm, each with backward, and their benchmark; allocator
//! tuning; the run-time choice of SIMD width for their element-wise loops (`simd`). Each op keeps its CPU code and, beside it, the launch code of its CUDA kernels
//! (`kernels/cuda/*.cu`, run through [`gpu::Launcher`]).

pub mod alloc;
pub mod batchnorm;
pub mod bench;
pub mod channels_last;
pub mod depthwise;
pub mod depthwise_nhwc;
mod depthwise_small;
pub mod eltwise;
pub mod gelu;
pub mod gpu;
pub mod im2col;
pub mod layernorm;
pub mod linear;
pub mod pointwise;
pub mod pool;
pub mod simd;

pub use alloc::tune_allocator;
pub use batchnorm::{batch_norm_train, batch_norm_train_act, BnAct};
pub use depthwise::{depthwise_conv2d, DwParams};
pub use eltwise::add_relu;
pub use gelu::gelu_erf;
pub use im2col::conv2d_im2col;
pub use layernorm::layer_norm_last;
pub use linear::linear;
pub use pointwise::conv1x1;
pub use pool::{avg_pool2d, max_pool2d, PoolParams};

use std::sync::atomic::{AtomicBool, Ordering};

/// Row-major view of a matrix: element `(i, j)` at `i * rs + j * cs`.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// `dst (m x n, row-major, leading dim ldd) = [dst +] a (m x k) * b (k x n)`, single-threaded.
///
/// # Safety
/// The views must cover valid memory for the given sizes; `dst` must not alias `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ldd: usize,
    accumulate: bool,
    a: Mat,
    b: Mat,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ldd as isize,
        accumulate,
        a.ptr,
        a.cs,
        a.rs,
        b.ptr,
        b.cs,
        b.rs,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Splits a backward kernel's packed output `[input gradient (len first) | small gradients
/// (lens rest)]`. The input gradient stays a view of the packed buffer; the small (parameter)
/// gradients are copied out: Candle keeps a parameter's gradient to the end of the backward,
/// and a view would keep the whole, activation-sized buffer alive with it.
fn split_packed(
    packed: &candle_core::Tensor,
    first: usize,
    rest: &[usize],
) -> candle_core::Result<(candle_core::Tensor, Vec<candle_core::Tensor>)> {
    let mut at = first;
    let mut small = Vec::with_capacity(rest.len());
    for &len in rest {
        small.push(packed.narrow(0, at, len)?.force_contiguous()?);
        at += len;
    }
    Ok((packed.narrow(0, 0, first)?, small))
}

/// The f32 data of a contiguous CPU tensor (what every kernel here reads); `what` names the
/// op and argument in the error otherwise.
pub(crate) fn contiguous_f32<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: tensor must be contiguous"),
    }
}

/// Adds up per-block partial sums in a fixed order: `partial(b)` is block `b`'s contribution
/// (`len` values; blocks fixed by the caller, not by the thread count), the blocks run in
/// parallel and their results are added in block order. Rayon's `fold` / `reduce` group
/// blocks as work stealing happens to split them, so float sums (weight and bias gradients)
/// would differ from run to run in their last bits; bitwise resume needs them fixed.
pub(crate) fn sum_in_order(
    blocks: usize,
    len: usize,
    partial: impl Fn(usize) -> Vec<f32> + Sync + Send,
) -> Vec<f32> {
    use rayon::prelude::*;
    let parts: Vec<Vec<f32>> = (0..blocks).into_par_iter().map(partial).collect();
    let mut out = vec![0f32; len];
    for p in parts {
        out.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    out
}

/// Refuses an input with no elements. The kernels split their work into chunks of one image,
/// plane or row, which a zero-sized dimension would make zero-sized (a panic in rayon); an
/// empty feature map comes from an image too small for the network's downsampling.
/// `x + p` for a parameter (or any small tensor, a gate) `p` broadcast over `x` (its shape aligned to `x`'s last dims:
/// `(C)` over `(..., C)`, `(1, C, 1, 1)` over NCHW). In f32, a broadcast add. In bf16 / f16,
/// `p` is first expanded to `x`'s shape in f32 and then cast, so that its gradient (the sum
/// of `x`'s gradient over the broadcast dims) is summed in f32: Candle sums a broadcast
/// operand's gradient in the gradient's own dtype (on CUDA too), which in 16 bits loses the
/// small terms of a large sum. The cost is one activation-sized pass each way.
pub fn add_param(
    x: &candle_core::Tensor,
    p: &candle_core::Tensor,
) -> candle_core::Result<candle_core::Tensor> {
    if x.dtype() == candle_core::DType::F32 {
        return x.broadcast_add(&p.to_dtype(candle_core::DType::F32)?);
    }
    x + expand_f32(p, x)?
}

/// `x * p` for a parameter `p` broadcast over `x`, its gradient summed in f32 (as
/// [`add_param`]).
pub fn mul_param(
    x: &candle_core::Tensor,
    p: &candle_core::Tensor,
) -> candle_core::Result<candle_core::Tensor> {
    if x.dtype() == candle_core::DType::F32 {
        return x.broadcast_mul(&p.to_dtype(candle_core::DType::F32)?);
    }
    x * expand_f32(p, x)?
}

/// `p` in f32, broadcast to `x`'s shape, then cast to `x`'s dtype (the broadcast's backward,
/// a sum, runs on f32).
fn expand_f32(
    p: &candle_core::Tensor,
    x: &candle_core::Tensor,
) -> candle_core::Result<candle_core::Tensor> {
    p.to_dtype(candle_core::DType::F32)?
        .broadcast_as(x.shape())?
        .to_dtype(x.dtype())
}

pub(crate) fn require_non_empty(op: &str, x: &candle_core::Tensor) -> candle_core::Result<()> {
    if x.elem_count() == 0 {
        candle_core::bail!(
            "{op}: empty input of shape {:?} (an input image too small for the network's downsampling leaves an empty feature map)",
            x.dims()
        )
    }
    Ok(())
}

/// Runs Candle's own element-wise ops on the calling thread (sets `CANDLE_NUM_THREADS=1`
/// unless the variable is set). Candle 0.11 splits large element-wise ops over a second,
/// private thread pool whose caller spins until the workers finish; next to the rayon pool
/// the project kernels and `gemm` use, that is more threads than this 2-core machine has, and
/// a descheduled worker left the main thread spinning (`BarrierGuard::drop`: 36% of a
/// MobileNetV2 training profile). Call at the start of `main`, before any thread starts
/// (the pool reads the variable once, on first use).
pub fn candle_elementwise_single_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

static REFERENCE_MODE: AtomicBool = AtomicBool::new(false);

/// Process-wide switch for benchmarks: `true` makes every wrapper above fall back to plain
/// Candle ops (grouped conv2d, conv2d, composed norms, Candle's GELU), to time the kernels
/// against the baseline in one process. Pooling always uses the project kernel (Candle has no
/// backward for overlapping windows).
pub fn set_reference_mode(on: bool) {
    REFERENCE_MODE.store(on, Ordering::Relaxed);
}

/// See [`set_reference_mode`].
pub fn reference_mode() -> bool {
    REFERENCE_MODE.load(Ordering::Relaxed)
}

/// The bit patterns of an f32 tensor's values, for tests that compare kernels bit for bit.
#[cfg(test)]
pub(crate) fn f32_bits(t: &candle_core::Tensor) -> candle_core::Result<Vec<u32>> {
    Ok(t.flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .map(|v| v.to_bits())
        .collect())
}

/// Asserts that `fused` and `composed` (the ops it replaces) agree bit for bit: their values,
/// and the gradients of `sum(out * t)` (`t` fixed random weights) with respect to each of
/// `vars`. `what` names the case in a failure.
#[cfg(test)]
pub(crate) fn assert_same_bits(
    fused: &candle_core::Tensor,
    composed: &candle_core::Tensor,
    vars: &[&candle_core::Var],
    what: &str,
) -> candle_core::Result<()> {
    assert_eq!(fused.dims(), composed.dims(), "{what}: shapes");
    assert_eq!(f32_bits(fused)?, f32_bits(composed)?, "{what}: forward");
    let t =
        crate::engine::init::TensorRng::new(99).randn(0f32, 1.0, fused.shape(), fused.device())?;
    let ga = (fused * &t)?.sum_all()?.backward()?;
    let gb = (composed * &t)?.sum_all()?.backward()?;
    for (i, v) in vars.iter().enumerate() {
        let (a, b) = (
            ga.get(v).expect("fused gradient"),
            gb.get(v).expect("composed gradient"),
        );
        assert_eq!(a.dims(), v.dims(), "{what}: gradient {i} shape");
        assert_eq!(f32_bits(a)?, f32_bits(b)?, "{what}: gradient {i}");
    }
    Ok(())
}

#[cfg(test)]
mod empty_input_tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    /// Every kernel entry point refuses an empty tensor with an error naming the op, where
    /// the rayon chunking used to panic (`chunk_size must not be zero`).
    #[test]
    fn kernels_refuse_empty_inputs_without_panicking() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let z = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &dev);
        let nhwc = z(&[2, 0, 0, 8])?;
        let nchw = z(&[2, 8, 0, 0])?;
        let b = z(&[8])?;
        let dw = z(&[8, 1, 7, 7])?;
        let results: Vec<(&str, candle_core::Result<()>)> = vec![
            (
                "depthwise_nhwc",
                depthwise_nhwc::depthwise_nhwc(&nhwc, &dw, &b).map(|_| ()),
            ),
            ("to_nhwc", channels_last::to_nhwc(&nchw).map(|_| ())),
            ("to_nchw", channels_last::to_nchw(&nhwc).map(|_| ())),
            ("bias_gelu", channels_last::bias_gelu(&nhwc, &b).map(|_| ())),
            (
                "bias_scale",
                channels_last::bias_scale(&nhwc, &b, &b).map(|_| ()),
            ),
            (
                "nchw_bias_to_nhwc",
                channels_last::nchw_bias_to_nhwc(&nchw, &b).map(|_| ()),
            ),
            (
                "add_nhwc_to_nchw",
                channels_last::add_nhwc_to_nchw(&nchw, &nhwc).map(|_| ()),
            ),
            ("bias_nchw", channels_last::bias_nchw(&nchw, &b).map(|_| ())),
            (
                "depthwise_conv2d",
                depthwise_conv2d(
                    &nchw,
                    &dw,
                    DwParams {
                        stride: (1, 1),
                        padding: (3, 3),
                    },
                )
                .map(|_| ()),
            ),
            ("add_relu", add_relu(&nchw, &nchw).map(|_| ())),
            ("gelu_erf", gelu_erf(&nhwc).map(|_| ())),
            (
                "conv2d",
                conv2d_im2col(&nchw, &z(&[4, 8, 3, 3])?, 1, 1).map(|_| ()),
            ),
            (
                "layer_norm",
                layer_norm_last(&nhwc, &b, &b, 1e-6).map(|_| ()),
            ),
            (
                "linear",
                linear(&z(&[0, 8])?, &z(&[4, 8])?, None).map(|_| ()),
            ),
            (
                "conv1x1",
                conv1x1(&nchw, &z(&[4, 8, 1, 1])?, None).map(|_| ()),
            ),
            (
                "max_pool2d",
                max_pool2d(
                    &nchw,
                    PoolParams {
                        kernel: (3, 3),
                        stride: (2, 2),
                        padding: (1, 1),
                    },
                )
                .map(|_| ()),
            ),
            (
                "avg_pool2d",
                avg_pool2d(
                    &nchw,
                    PoolParams {
                        kernel: (2, 2),
                        stride: (2, 2),
                        padding: (0, 0),
                    },
                )
                .map(|_| ()),
            ),
            (
                "batch_norm",
                batch_norm_train(&nchw, &b, &b, 1e-5).map(|_| ()),
            ),
        ];
        for (op, r) in results {
            let err = r.expect_err(op).to_string();
            assert!(err.contains(op) && err.contains("empty"), "{op}: {err}");
        }
        Ok(())
    }
}
