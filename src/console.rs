//! Writing to stdout and stderr without dying on a closed pipe. `runner run ... 2>&1 | head -1`
//! must not kill a training run half-way: `main` ignores SIGPIPE, so a write to a closed pipe
//! fails with EPIPE instead, and these functions then drop that stream's output from there on
//! and call the hook `engine::signals` registers, which asks the run to stop as an interrupt
//! does (checkpoint, then `interrupted`). Every line the program prints goes through here
//! (`outln!`, `out!`, `errln!`), never through `println!`, which panics on EPIPE. Also the
//! number formats every command shares (`fmt_num`, `fmt_lr`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static STDERR_GONE: AtomicBool = AtomicBool::new(false);
static ON_BROKEN: OnceLock<fn()> = OnceLock::new();

/// Registers what a broken pipe does besides dropping output (the first registration wins).
pub fn on_broken_pipe(hook: fn()) {
    let _ = ON_BROKEN.set(hook);
}

fn write_to(gone: &AtomicBool, write: impl FnOnce() -> std::io::Result<()>) {
    if gone.load(Ordering::SeqCst) {
        return;
    }
    // Any write error (EPIPE, a full disk under a redirect) ends that stream's output; it
    // never ends the program.
    if write().is_err() {
        gone.store(true, Ordering::SeqCst);
        if let Some(hook) = ON_BROKEN.get() {
            hook();
        }
    }
}

/// Writes `text` to stdout (and flushes), or nothing once stdout is gone.
pub fn write_out(text: &str) {
    write_to(&STDOUT_GONE, || {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    });
}

/// Writes `text` to stderr, or nothing once stderr is gone.
pub fn write_err(text: &str) {
    write_to(&STDERR_GONE, || {
        let mut err = std::io::stderr().lock();
        err.write_all(text.as_bytes())?;
        err.flush()
    });
}

/// A float with 4 significant digits, without trailing noise.
pub fn fmt_num(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return format!("{f}");
    }
    let a = f.abs();
    if (1e-3..1e5).contains(&a) {
        let s = format!("{f:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{f:.3e}")
    }
}

/// A learning rate, in the one format every command prints it in (`2.000e-4`): `fmt_num`
/// would print 1.986e-3 and 2e-3 both as 0.002.
pub fn fmt_lr(lr: f64) -> String {
    format!("{lr:.3e}")
}

/// `println!` that survives a closed stdout.
#[macro_export]
macro_rules! outln {
    () => { $crate::console::write_out("\n") };
    ($($arg:tt)*) => { $crate::console::write_out(&format!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that survives a closed stdout.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::console::write_out(&format!($($arg)*)) };
}

/// `eprintln!` that survives a closed stderr.
#[macro_export]
macro_rules! errln {
    () => { $crate::console::write_err("\n") };
    ($($arg:tt)*) => { $crate::console::write_err(&format!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that survives a closed stderr.
#[macro_export]
macro_rules! errout {
    ($($arg:tt)*) => { $crate::console::write_err(&format!($($arg)*)) };
}
