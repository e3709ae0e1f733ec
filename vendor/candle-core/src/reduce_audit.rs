//! runner's patch (see vendor/README.md): a record of the sums the CPU backend computes in a
//! 16-bit dtype (bf16 / f16), whose accumulator is then 16-bit too. Kept per thread, so that
//! parallel tests do not see each other's; a training step's forward and backward run their
//! reductions on the calling thread. runner's test `*accumulate_in_f32*` takes the record
//! around a bf16 training step and expects it empty.

use std::cell::RefCell;

thread_local! {
    static LOW_PRECISION_SUMS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Records one sum of a tensor of `dtype` and `dims` over `reduce_dims`, when `dtype` is 16-bit.
pub fn record(dtype: crate::DType, dims: &[usize], reduce_dims: &[usize]) {
    if matches!(dtype, crate::DType::BF16 | crate::DType::F16) {
        LOW_PRECISION_SUMS.with(|v| {
            v.borrow_mut()
                .push(format!("{dtype:?} sum of {dims:?} over dims {reduce_dims:?}"))
        });
    }
}

/// The 16-bit sums recorded on this thread since the last call, and clears them.
pub fn take() -> Vec<String> {
    LOW_PRECISION_SUMS.with(|v| std::mem::take(&mut *v.borrow_mut()))
}
