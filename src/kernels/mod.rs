//! Project-owned Candle kernels: depthwise convolution, pooling with backward.

pub mod depthwise;
pub mod pool;

pub use depthwise::{depthwise_conv2d, DwParams};
pub use pool::{avg_pool2d, max_pool2d, PoolParams};
pub mod bench;
