//! Parallel trials on this machine: one child process per run, on device slots
//! (`runner sweep --jobs N --devices cpu,cpu|cuda:0,cuda:1 --threads-per-run T`). Candle's CPU
//! thread count is process-wide, so runs cannot be threads of one process. Each child claims
//! its run in the store as any `runner run` does (two processes never train one run); this
//! process hands out slots, forwards an interrupt to the children (each checkpoints and stops;
//! the next call resumes them) and summarises from the store.

use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::local::{parent_not_done, train_parents_into, SweepOptions};
use super::SummaryRow;
use crate::engine::progress::Reporter;
use crate::engine::EngineError;
use crate::plan::PlannedRun;
use crate::store::{RunStatus, Store};

/// Where one child trains: a device (`cpu`, `cuda:N`) and its thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub device: String,
    pub threads: usize,
}

/// The command that trains one planned run on a slot (the command line is the caller's).
pub type ChildCommand<'a> = dyn Fn(&PlannedRun, &Slot) -> Command + 'a;

struct Running {
    child: Child,
    index: usize,
    slot: usize,
    started: Instant,
}

/// Trains the runs of a sweep in child processes, one per slot at a time (the parents a
/// recipe's runs start from first, here, one after another).
#[allow(clippy::too_many_arguments)]
pub fn train_parallel(
    store: &mut Store,
    sweep_id: i64,
    runs: &[PlannedRun],
    opts: &SweepOptions,
    slots: &[Slot],
    command: &ChildCommand,
    reporter: &Reporter,
    stop: Arc<AtomicBool>,
) -> Result<Vec<SummaryRow>, EngineError> {
    let mut rows: Vec<SummaryRow> = runs
        .iter()
        .map(|r| SummaryRow::planned(sweep_id, r))
        .collect();
    // the parents, in full, here (an interrupt there stops the sweep below, before any child)
    train_parents_into(store, runs, &mut rows, opts, reporter, &stop)?;
    // the runs to hand out, in plan order; the others say why not
    let mut queue: VecDeque<usize> = VecDeque::new();
    for (i, run) in runs.iter().enumerate().filter(|(_, r)| r.target) {
        let existing = store.run_by_key(&run.key)?;
        if let Some(r) = &existing {
            store.add_to_sweep(sweep_id, r.id)?;
            rows[i].run_id = Some(r.id);
            rows[i].status = r.shown_status();
        }
        let skip = match existing.as_ref().and_then(|r| r.status()) {
            Some(RunStatus::Done) => Some("skipped (done)"),
            Some(RunStatus::Submitted) => Some("skipped (submitted to Slurm)"),
            Some(RunStatus::Failed | RunStatus::Diverged) if !opts.retry_failed => {
                Some("skipped (use --retry-failed)")
            }
            Some(RunStatus::Running)
                if existing
                    .as_ref()
                    .is_some_and(|r| r.shown_status() == RunStatus::Running.as_str()) =>
            {
                Some("skipped (running elsewhere)")
            }
            _ => None,
        };
        match skip {
            Some(why) => rows[i].action = why.into(),
            None => match parent_not_done(store, run)? {
                Some(why) => rows[i].action = format!("not started ({why})"),
                None => queue.push_back(i),
            },
        }
    }
    let epochs_of = |i: &usize| u64::from(runs[*i].recipe.train.epochs);
    let bar = reporter.sweep_bar(queue.iter().map(epochs_of).sum());
    let keys: Vec<usize> = queue.iter().copied().collect();
    let mut running: Vec<Running> = Vec::new();
    let mut free: Vec<usize> = (0..slots.len()).rev().collect();
    let mut started_runs = 0usize;
    let mut stopped: Option<&'static str> = None;
    let mut forwarded = false;
    let mut last_bar = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            stopped = Some("interrupted");
            if !forwarded {
                // each child checkpoints and stops, as after its own Ctrl-C
                for r in &running {
                    // SAFETY: kill(2) with a child's pid and SIGINT has no memory effects.
                    unsafe {
                        libc::kill(r.child.id() as libc::pid_t, libc::SIGINT);
                    }
                }
                forwarded = true;
            }
        }
        while stopped.is_none() && !free.is_empty() && !queue.is_empty() {
            if opts.max_runs.is_some_and(|m| started_runs >= m) {
                stopped = Some("--max-runs");
                break;
            }
            let (Some(slot), Some(index)) = (free.pop(), queue.pop_front()) else {
                break;
            };
            let mut cmd = command(&runs[index], &slots[slot]);
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
            let child = cmd.spawn().map_err(|e| {
                EngineError::Other(format!(
                    "cannot start a child runner for run {}: {e}",
                    runs[index].key
                ))
            })?;
            started_runs += 1;
            running.push(Running {
                child,
                index,
                slot,
                started: Instant::now(),
            });
        }
        if running.is_empty() && (queue.is_empty() || stopped.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut k = 0;
        while k < running.len() {
            match running[k].child.try_wait() {
                Ok(Some(_)) => {
                    let r = running.swap_remove(k);
                    free.push(r.slot);
                    let row = &mut rows[r.index];
                    row.seconds = r.started.elapsed().as_secs_f64();
                    match store.run_by_key(&runs[r.index].key)? {
                        Some(run) => {
                            store.add_to_sweep(sweep_id, run.id)?;
                            row.run_id = Some(run.id);
                            row.status = run.shown_status();
                            let failed = matches!(
                                run.status(),
                                Some(RunStatus::Failed | RunStatus::Diverged)
                            );
                            if failed && opts.fail_fast {
                                stopped = stopped.or(Some("--fail-fast"));
                            }
                            if run.status() == Some(RunStatus::Interrupted) {
                                stopped = stopped.or(Some("interrupted"));
                            }
                        }
                        None => row.status = "failed".into(),
                    }
                    row.action = format!("trained on {}", slots[r.slot].device);
                }
                Ok(None) => k += 1,
                Err(e) => return Err(EngineError::Other(format!("waiting for a child: {e}"))),
            }
        }
        // the bar: epochs recorded so far by the runs handed out (read once a second)
        if last_bar.elapsed() >= Duration::from_secs(1) {
            last_bar = Instant::now();
            let mut done = 0u64;
            for i in &keys {
                if let Some(r) = store.run_by_key(&runs[*i].key)? {
                    done += store.epochs(r.id)?.len() as u64;
                }
            }
            bar.set_position(done);
        }
    }
    reporter.finish_sweep_bar();
    for i in queue {
        rows[i].action = format!("not started ({})", stopped.unwrap_or("interrupted"));
    }
    Ok(rows)
}

/// The slots of `--jobs N --devices LIST --threads-per-run T`: device i for job i (`cpu` when
/// no list), and per run T threads, or the cores split evenly among the CPU jobs.
pub fn slots(
    jobs: usize,
    devices: &[String],
    threads_per_run: Option<usize>,
    cores: usize,
) -> Result<Vec<Slot>, String> {
    if jobs == 0 {
        return Err("--jobs: must be at least 1".into());
    }
    if !devices.is_empty() && devices.len() < jobs {
        return Err(format!(
            "--devices lists {} device(s) for --jobs {jobs}: give one per job (repeat a device to share it, e.g. cuda:0,cuda:0)",
            devices.len()
        ));
    }
    if threads_per_run == Some(0) {
        return Err("--threads-per-run: must be at least 1".into());
    }
    let threads = threads_per_run.unwrap_or((cores / jobs).max(1));
    Ok((0..jobs)
        .map(|i| Slot {
            device: devices.get(i).cloned().unwrap_or_else(|| "cpu".into()),
            threads,
        })
        .collect())
}

/// Records the sweep and trains its runs in child processes on `slots`.
#[allow(clippy::too_many_arguments)]
pub fn execute_parallel(
    store: &mut Store,
    recipe_path: &str,
    runs: &[PlannedRun],
    opts: &SweepOptions,
    slots: &[Slot],
    command: &ChildCommand,
    reporter: &Reporter,
    stop: Arc<AtomicBool>,
) -> Result<super::SweepOutcome, EngineError> {
    let sweep_id = super::local::sweep_for(store, recipe_path, runs)?;
    let rows = train_parallel(store, sweep_id, runs, opts, slots, command, reporter, stop)?;
    Ok(super::SweepOutcome {
        sweep_id,
        rows,
        job_id: None,
    })
}
