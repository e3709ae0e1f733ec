//! Project-owned Candle kernels: depthwise convolution, im2col convolution, pooling with
//! backward, and their benchmark.

pub mod depthwise;
pub mod im2col;
pub mod pool;

pub use depthwise::{depthwise_conv2d, DwParams};
pub use im2col::conv2d_im2col;
pub use pool::{avg_pool2d, max_pool2d, PoolParams};
pub mod bench;
