//! Run-time choice of the instruction set for the kernels' element-wise loops. The crate is
//! built for baseline x86-64 (SSE2, 4 floats per vector), so a plain loop vectorises 4 wide;
//! [`simd_fn!`] compiles a kernel's inner function twice more, for AVX2 + FMA (8 wide) and
//! AVX-512 (16 wide), and calls the widest the CPU has. Rust never fuses a multiply and an add
//! by itself and never reorders float additions, so every `simd_fn!` variant computes the
//! same values bit for bit (tested per kernel); only the speed differs. The one kernel that
//! fuses on purpose, channels-last depthwise (`depthwise_nhwc`, `mul_add` at AVX2 and above),
//! gives the same bits at AVX2 and AVX-512 and differs in the last bits without FMA.
//!
//! Tests compare the levels with [`with_cap`]: a cap held by the threads of a pool of its
//! own, so that tests running beside it keep the CPU's level.

use std::cell::Cell;

/// The widest instruction set a kernel may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// The build's baseline (SSE2 on x86-64).
    Base = 0,
    /// AVX2 + FMA.
    Avx2 = 1,
    /// AVX-512 F/BW/DQ/VL (with AVX2 + FMA).
    Avx512 = 2,
}

thread_local! {
    /// 255: no cap; otherwise the highest level kernels run on this thread may use.
    static CAP: Cell<u8> = const { Cell::new(u8::MAX) };
}

/// What this CPU supports.
pub fn detected() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Base
}

/// The level the kernels running on this thread use: what the CPU has, at most the thread's
/// cap.
pub fn level() -> SimdLevel {
    let d = detected();
    match CAP.with(Cell::get) {
        0 => SimdLevel::Base,
        1 => d.min(SimdLevel::Avx2),
        _ => d,
    }
}

/// Runs `f` with the kernels capped at `cap` (at most what the CPU has), on a pool of
/// `threads` threads that hold the cap (the kernels' parallel loops run there too); threads
/// elsewhere keep their level. For tests and benchmarks comparing the variants.
pub fn with_cap<R: Send>(cap: SimdLevel, threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let c = cap as u8;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .start_handler(move |_| CAP.with(|x| x.set(c)))
        .build()
        .expect("a thread pool for the capped kernels");
    pool.install(f)
}

/// Defines a function whose body is compiled for the baseline, AVX2 + FMA and AVX-512 and
/// runs as the widest [`level`] allows. The body should keep its hot loops in itself or in
/// `#[inline(always)]` helpers, so that they are compiled with the variant's features.
macro_rules! simd_fn {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn mid($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                match $crate::kernels::simd::level() {
                    // SAFETY: `level` reports only features this CPU has.
                    $crate::kernels::simd::SimdLevel::Avx512 => return unsafe { wide($($arg),*) },
                    $crate::kernels::simd::SimdLevel::Avx2 => return unsafe { mid($($arg),*) },
                    $crate::kernels::simd::SimdLevel::Base => {}
                }
            }
            imp($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

#[cfg(test)]
mod tests {
    use super::*;

    simd_fn! {
        fn scaled_sum(a: &[f32], b: &[f32], s: f32, out: &mut [f32]) -> f32 {
            let mut acc = [0f32; 8];
            for (i, ((o, &x), &y)) in out.iter_mut().zip(a).zip(b).enumerate() {
                *o = x * s + y;
                acc[i % 8] += *o * x;
            }
            acc.iter().sum()
        }
    }

    /// The dispatched kernels (depthwise NCHW at strides 1 and 2, BatchNorm with an activation
    /// and with the shortcut add, add + ReLU, LayerNorm, GELU, depthwise channels-last): the
    /// same outputs and gradients, bit for bit, at every level this CPU has; depthwise
    /// channels-last (FMA) the same bits at AVX2 and AVX-512, and within 1e-5 at the baseline.
    #[test]
    fn kernels_give_the_same_bits_at_every_level() -> candle_core::Result<()> {
        use crate::kernels::{self, BnAct, DwParams};
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        let mut rng = crate::engine::init::TensorRng::new(5);
        let x = rng.var(0f32, 1.0, (2, 24, 9, 9), &dev)?;
        let r = rng.var(0f32, 1.0, (2, 24, 9, 9), &dev)?;
        let xl = rng.var(0f32, 1.0, (2, 9, 9, 24), &dev)?;
        let w3 = rng.var(0f32, 0.3, (24, 1, 3, 3), &dev)?;
        let w7 = rng.var(0f32, 0.1, (24, 1, 7, 7), &dev)?;
        let wn = rng.var(1f32, 0.3, 24, &dev)?;
        let bn = rng.var(0f32, 0.3, 24, &dev)?;
        // small planes (BatchNorm image by image, the 1x1 conv in blocks of images) and a
        // depthwise output plane large enough for the per-plane path
        let xs = rng.var(0f32, 1.0, (9, 24, 3, 3), &dev)?;
        let xb = rng.var(0f32, 1.0, (2, 4, 12, 12), &dev)?;
        let w3b = rng.var(0f32, 0.3, (4, 1, 3, 3), &dev)?;
        let w1 = rng.var(0f32, 0.3, (8, 24, 1, 1), &dev)?;
        let vars = [&x, &r, &xl, &w3, &w7, &wn, &bn, &xs, &xb, &w3b, &w1];
        let bits = crate::kernels::f32_bits;
        let run = || -> candle_core::Result<Vec<Vec<u32>>> {
            let dw = |s| DwParams {
                stride: (s, s),
                padding: (1, 1),
            };
            let outs = vec![
                kernels::depthwise_conv2d(&x, &w3, dw(1))?,
                kernels::depthwise_conv2d(&x, &w3, dw(2))?,
                kernels::batch_norm_train_act(&x, &wn, &bn, 1e-5, BnAct::Relu6)?.0,
                kernels::batchnorm::batch_norm_add_relu(&x, &r, &wn, &bn, 1e-5, None)?
                    .expect("CPU op")
                    .0,
                kernels::add_relu(&x, &r)?,
                kernels::layer_norm_last(&xl, &wn, &bn, 1e-6)?,
                kernels::gelu_erf(&xl)?,
                kernels::depthwise_nhwc::depthwise_nhwc(&xl, &w7, &bn)?,
                kernels::batch_norm_train_act(&xs, &wn, &bn, 1e-5, BnAct::Relu)?.0,
                kernels::depthwise_conv2d(&xb, &w3b, dw(1))?,
                kernels::conv1x1(&xs, &w1, None)?.expect("CPU op"),
            ];
            let mut weights = crate::engine::init::TensorRng::new(99);
            let mut loss = Tensor::zeros((), candle_core::DType::F32, &dev)?;
            let mut found = Vec::new();
            for y in &outs {
                let t = weights.randn(0f32, 1.0, y.shape(), &dev)?;
                loss = (loss + (y * t)?.sum_all()?)?;
                found.push(bits(y)?);
            }
            let grads = loss.backward()?;
            for v in vars {
                found.push(bits(grads.get(v).expect("every input gets a gradient"))?);
            }
            Ok(found)
        };
        let mut runs = Vec::new();
        for cap in [SimdLevel::Base, SimdLevel::Avx2, SimdLevel::Avx512] {
            // each level where the CPU has it (a cap above the CPU runs its widest again)
            runs.push((cap.min(detected()), with_cap(cap, 2, run)?));
        }
        // the depthwise channels-last output and the gradients through it fuse with FMA
        // (AVX2 and above): output 7, and the gradients of xl, w7 and bn (vars 2, 4 and 6,
        // after the 11 outputs)
        let fused = |i: usize| i == 7 || i == 11 + 2 || i == 11 + 4 || i == 11 + 6;
        for w in runs.windows(2) {
            let ((la, a), (lb, b)) = (&w[0], &w[1]);
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if fused(i) && *la == SimdLevel::Base && *lb != SimdLevel::Base {
                    // without FMA: the same values to f32's precision
                    let close = x.iter().zip(y).all(|(&p, &q)| {
                        let (p, q) = (f32::from_bits(p), f32::from_bits(q));
                        (p - q).abs() <= 1e-5 * (1.0 + q.abs())
                    });
                    assert!(close, "tensor {i}: {la:?} against {lb:?}");
                } else {
                    assert_eq!(x, y, "tensor {i}: {la:?} against {lb:?}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn every_level_gives_the_same_bits() {
        let a: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut runs = Vec::new();
        for cap in [SimdLevel::Base, SimdLevel::Avx2, SimdLevel::Avx512] {
            runs.push(with_cap(cap, 1, || {
                assert_eq!(
                    level(),
                    cap.min(detected()),
                    "the pool's threads hold the cap"
                );
                let mut out = vec![0f32; a.len()];
                let s = scaled_sum(&a, &b, 1.7, &mut out);
                let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                (bits, s.to_bits())
            }));
        }
        assert!(runs.windows(2).all(|w| w[0] == w[1]));
        // this thread was never capped
        assert_eq!(level(), detected());
    }
}
