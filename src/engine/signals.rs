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
