//! Ctrl-C and SIGTERM: the first one asks the current run to stop after its current step
//! (it checkpoints and is marked `interrupted`); a second one exits at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// The process-wide stop flag, installing the handler on first use.
pub fn stop_flag() -> Arc<AtomicBool> {
    STOP.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let _ = ctrlc::set_handler(move || {
            if COUNT.fetch_add(1, Ordering::SeqCst) >= 1 {
                eprintln!("\nsecond interrupt: exiting now");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: finishing the current step, then checkpointing (again to exit now)"
            );
            f.store(true, Ordering::SeqCst);
        });
        flag
    })
    .clone()
}

/// Raised by SIGUSR1.
static USR1: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    // only atomic stores: async-signal-safe
    USR1.store(true, Ordering::SeqCst);
    if let Some(flag) = STOP.get() {
        flag.store(true, Ordering::SeqCst);
    }
}

/// SIGUSR1, which Slurm sends before a task's time limit (`--signal=B:USR1@120`): the run
/// stops after its current step with a checkpoint, as on Ctrl-C, and `usr1_received` says
/// so (`runner exec` then requeues the task). Installs the Ctrl-C / SIGTERM handler too.
pub fn install_usr1() {
    stop_flag();
    // SAFETY: installs a handler that only stores to atomics.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            on_usr1 as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// Whether SIGUSR1 arrived (after `install_usr1`).
pub fn usr1_received() -> bool {
    USR1.load(Ordering::SeqCst)
}
