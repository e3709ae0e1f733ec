//! runner's patch (see vendor/README.md): per-thread wall time of every storage operation
//! (element-wise, reductions, copies, matrix products, custom ops by their `name()`), the
//! CPU side of `torch.profiler`'s operator table. Off by default: one thread-local flag read
//! per operation. On CUDA the times are those of the launches, not of the kernels.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static TABLE: RefCell<HashMap<&'static str, (u64, Duration)>> = RefCell::new(HashMap::new());
}

/// Starts recording on this thread, with an empty table.
pub fn start() {
    TABLE.with(|t| t.borrow_mut().clear());
    ON.with(|c| c.set(true));
}

/// Stops recording on this thread and returns the table: (operation, calls, total time),
/// longest first. An operation run inside another (a custom op's own tensor ops) counts only
/// in the outer one.
pub fn stop() -> Vec<(&'static str, u64, Duration)> {
    ON.with(|c| c.set(false));
    let mut v: Vec<_> = TABLE.with(|t| {
        t.borrow_mut()
            .drain()
            .map(|(k, (n, d))| (k, n, d))
            .collect()
    });
    v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
    v
}

/// Times one operation while alive (when recording and not inside another timed operation).
pub(crate) struct Scope {
    nested: bool,
    timed: Option<(&'static str, Instant)>,
}

pub(crate) fn scope(name: &'static str) -> Scope {
    if !ON.with(Cell::get) {
        return Scope {
            nested: false,
            timed: None,
        };
    }
    let outer = DEPTH.with(|d| {
        let v = d.get();
        d.set(v + 1);
        v == 0
    });
    Scope {
        nested: true,
        timed: outer.then(|| (name, Instant::now())),
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.nested {
            DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
        if !ON.with(Cell::get) {
            return;
        }
        if let Some((name, t0)) = self.timed {
            let dt = t0.elapsed();
            TABLE.with(|t| {
                let mut t = t.borrow_mut();
                let e = t.entry(name).or_insert((0, Duration::ZERO));
                e.0 += 1;
                e.1 += dt;
            });
        }
    }
}
