//! Allocator tuning for training on glibc: keep large freed blocks in the heap instead of
//! returning them to the kernel, so that the activation and gradient buffers Candle allocates
//! for every op do not cost fresh page faults and page zeroing each step.
//!
//! glibc serves blocks above `M_MMAP_THRESHOLD` (128 KiB, growing dynamically up to 32 MiB)
//! with their own `mmap` and unmaps them on free; a training step allocates and frees
//! hundreds of such buffers, so each step faulted in (and the kernel zeroed) hundreds of MiB:
//! 15-20% of a ResNet-18 step's CPU time in `perf` on the 2-core dev machine. A fixed
//! threshold of 32 MiB (glibc's maximum on 64-bit) and a high trim threshold make the heap
//! reuse those pages. Peak resident memory stays about the same (the same buffers are live).
//!
//! Blocks above 32 MiB (a ConvNeXt MLP activation at 224 px is 128 MiB and more) would still
//! be mapped and unmapped on every use, since glibc refuses a higher threshold; so `mmap` for
//! single blocks is turned off (`M_MMAP_MAX` 0) and they come from the heap too. At 224 px
//! batch 32 on the 2-core machine the page zeroing was a third of a ConvNeXt nano step in
//! `perf`, and the change took ResNet-50 from 6.6 to 10.4 img/s and ConvNeXt-T from 5.6 to
//! 8.7, peak RSS within 2% (docs/benchmarks.md).

use std::sync::OnceLock;

/// Largest value glibc accepts for `M_MMAP_THRESHOLD` on 64-bit targets (32 MiB).
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory at the top of the heap kept before it is returned to the kernel (512 MiB).
pub const TRIM_THRESHOLD: usize = 512 << 20;
/// Blocks glibc may serve with their own `mmap` at once: none, so large blocks are reused.
pub const MMAP_MAX: usize = 0;

static APPLIED: OnceLock<bool> = OnceLock::new();

/// Applies the settings once per process (later calls do nothing) and reports whether glibc
/// accepted them (`false` on other C libraries and platforms, where nothing is changed).
/// Called when a model is built (`crate::model::build`); the environment variables
/// `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` / `MALLOC_MMAP_MAX_`, when set, take
/// precedence.
pub fn tune_allocator() -> bool {
    *APPLIED.get_or_init(apply)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    let set = |var: &str, param: libc::c_int, value: usize| -> bool {
        if std::env::var_os(var).is_some() {
            return true; // the user's own setting wins
        }
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
        unsafe { libc::mallopt(param, value as libc::c_int) == 1 }
    };
    let a = set(
        "MALLOC_MMAP_THRESHOLD_",
        libc::M_MMAP_THRESHOLD,
        MMAP_THRESHOLD,
    );
    let b = set(
        "MALLOC_TRIM_THRESHOLD_",
        libc::M_TRIM_THRESHOLD,
        TRIM_THRESHOLD,
    );
    let c = set("MALLOC_MMAP_MAX_", libc::M_MMAP_MAX, MMAP_MAX);
    a && b && c
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_once_and_is_idempotent() {
        let first = tune_allocator();
        assert_eq!(tune_allocator(), first);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert!(first, "glibc rejected the allocator settings");
        // large blocks still allocate, fill and free correctly after the change
        for mib in [1usize, 8, 40, 200] {
            let n = mib << 18;
            let mut v = vec![0f32; n];
            v.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32);
            assert_eq!(
                (v[0], v[n / 2], v[n - 1]),
                (0.0, (n / 2) as f32, (n - 1) as f32)
            );
        }
    }
}
