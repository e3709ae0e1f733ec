//! Project-owned Candle kernels: depthwise convolution, im2col convolution, pooling,
//! exact GELU and LayerNorm, each with backward, and their benchmark; allocator tuning.

pub mod alloc;
pub mod batchnorm;
pub mod bench;
pub mod channels_last;
pub mod depthwise;
pub mod gelu;
pub mod im2col;
pub mod layernorm;
pub mod pool;

pub use alloc::tune_allocator;
pub use batchnorm::batch_norm_train;
pub use depthwise::{depthwise_conv2d, DwParams};
pub use gelu::gelu_erf;
pub use im2col::conv2d_im2col;
pub use layernorm::layer_norm_last;
pub use pool::{avg_pool2d, max_pool2d, PoolParams};

use std::sync::atomic::{AtomicBool, Ordering};

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
