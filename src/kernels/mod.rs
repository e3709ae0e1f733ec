//! Project-owned Candle kernels: depthwise convolution, pooling with backward.
