//! Ctrl-C and SIGTERM: the first one asks the current run to stop after its current step
//! (it checkpoints and is marked `interrupted`, and the command exits 130); a second one, a
//! second or more later, exits at once. Signals less than `SAME_INTERRUPT` apart are one
//! interrupt: `timeout -s INT` and a shell's Ctrl-C deliver the signal to the process and to
//! its process group, so runner sees it twice within microseconds. A closed stdout or stderr
//! (`runner run ... | head -1`) asks the run to stop the same way (`crate::console`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
/// When the first interrupt arrived.
static FIRST: Mutex<Option<Instant>> = Mutex::new(None);

/// Interrupts closer together than this are one (the same signal sent to the process and to
/// its group).
pub const SAME_INTERRUPT: Duration = Duration::from_secs(1);

/// What an interrupt at `now` does, given when the first one came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptAction {
    /// The first: stop after the current step, with a checkpoint.
    Stop,
    /// The same interrupt delivered twice: nothing more.
    Ignore,
    /// A second interrupt: exit now.
    Exit,
}

/// Decides what an interrupt does (records the first one's time).
pub fn on_interrupt(first: &mut Option<Instant>, now: Instant) -> InterruptAction {
    match *first {
        None => {
            *first = Some(now);
            InterruptAction::Stop
        }
        Some(t) if now.saturating_duration_since(t) < SAME_INTERRUPT => InterruptAction::Ignore,
        Some(_) => InterruptAction::Exit,
    }
}

/// Raises the stop flag (when a run installed it): what a closed output stream does.
fn stop_on_broken_pipe() {
    if let Some(flag) = STOP.get() {
        if !flag.swap(true, Ordering::SeqCst) {
            crate::errln!("\noutput closed: finishing the current step, then checkpointing");
        }
    }
}

/// The process-wide stop flag, installing the handler on first use.
pub fn stop_flag() -> Arc<AtomicBool> {
    STOP.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        crate::console::on_broken_pipe(stop_on_broken_pipe);
        let _ = ctrlc::set_handler(move || {
            let action = {
                let mut first = FIRST.lock().unwrap_or_else(|p| p.into_inner());
                on_interrupt(&mut first, Instant::now())
            };
            match action {
                InterruptAction::Ignore => {}
                InterruptAction::Exit => {
                    crate::errln!("\nsecond interrupt: exiting now");
                    std::process::exit(130);
                }
                InterruptAction::Stop => {
                    crate::errln!(
                        "\ninterrupt: finishing the current step, then checkpointing (again to exit now)"
                    );
                    f.store(true, Ordering::SeqCst);
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_within_a_second_are_one_interrupt() {
        let t0 = Instant::now();
        let mut first = None;
        assert_eq!(on_interrupt(&mut first, t0), InterruptAction::Stop);
        assert_eq!(
            on_interrupt(&mut first, t0 + Duration::from_millis(5)),
            InterruptAction::Ignore
        );
        assert_eq!(
            on_interrupt(&mut first, t0 + Duration::from_millis(999)),
            InterruptAction::Ignore
        );
        assert_eq!(
            on_interrupt(&mut first, t0 + Duration::from_millis(1500)),
            InterruptAction::Exit
        );
    }
}
