//! runner's patch (see vendor/README.md): a per-thread count of the reads of a tensor's values
//! into host memory (`to_scalar`, `to_vec0` to `to_vec3`): on CUDA each is a device-to-host
//! copy that waits for the stream. runner counts them per training step (`*readback*` test: at
//! most one).

use std::cell::Cell;

thread_local! {
    static READS: Cell<u64> = const { Cell::new(0) };
}

/// Counts one read on this thread.
pub fn record() {
    READS.with(|c| c.set(c.get() + 1));
}

/// The reads on this thread so far.
pub fn count() -> u64 {
    READS.with(|c| c.get())
}
