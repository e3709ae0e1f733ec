//! Project-owned Candle kernels: depthwise convolution, im2col convolution, pooling,
//! exact GELU and LayerNorm, each with backward, and their benchmark.

pub mod batchnorm;
pub mod depthwise;
pub mod gelu;
pub mod im2col;
pub mod layernorm;
pub mod pool;

pub use batchnorm::batch_norm_train;
pub use depthwise::{depthwise_conv2d, DwParams};
pub use gelu::gelu_erf;
pub use im2col::conv2d_im2col;
pub use layernorm::layer_norm_last;
pub use pool::{avg_pool2d, max_pool2d, PoolParams};
pub mod bench;
