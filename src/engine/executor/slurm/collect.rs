//! `runner collect`: imports the records Slurm tasks appended to their runs' logs into the
//! store, and settles the runs whose tasks ended; `runner status`: the runs' store status
//! beside their Slurm state.
//!
//! Importing is idempotent: each run's store row keeps the byte offset of its log that it
//! holds, and the lines after it are applied in one transaction with the new offset (only if
//! the offset did not move meanwhile), so collecting twice, or while a task writes, neither
//! duplicates nor loses a record. A run's final status comes from its task's own `finish`
//! line (Slurm forgets finished jobs, and this cluster may have no accounting): done, failed
//! and diverged are final; `interrupted` is final once the job has left Slurm (a requeued
//! task runs again); a job that left Slurm without a `finish` line (killed, out of memory,
//! node failure, a setup line that failed) leaves its run `interrupted`, with the job's
//! state and its output file in the run's error. `runner sweep --executor slurm` submits
//! interrupted runs again, and they resume from their checkpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::client::{self, SlurmClient};
use crate::engine::runlog::{self, LogState};
use crate::engine::EngineError;
use crate::store::{RunRow, RunStatus, Store};

/// What collecting did to one submitted run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Collected {
    pub run_id: i64,
    pub key: String,
    /// Records imported by this call.
    pub imported: usize,
    /// The run's status in the store afterwards.
    pub status: String,
    /// Its Slurm state (None when Slurm could not be asked).
    pub slurm_state: Option<String>,
    /// Why it ended, where it did not end done.
    pub error: Option<String>,
}

/// The Slurm state of each submitted run's task, asked before the logs are read (a task that
/// ended before the question has written its last line by then). `None` when Slurm cannot be
/// asked (no client, or it failed: `warn` says why).
fn task_states(
    client: Option<&SlurmClient>,
    runs: &[RunRow],
    warn: &mut Vec<String>,
) -> Option<BTreeMap<(i64, i64), String>> {
    let tasks: BTreeSet<(i64, i64)> = runs
        .iter()
        .filter_map(|r| Some((r.slurm_job_id?, r.slurm_task_id?)))
        .collect();
    let client = client?;
    match client.states(&tasks) {
        Ok(s) => Some(s),
        Err(e) => {
            warn.push(format!(
                "cannot ask Slurm for the tasks' states ({e}): runs still submitted stay so"
            ));
            None
        }
    }
}

/// The status a submitted run takes from its log and its task's Slurm state (None: it stays
/// submitted), with the error to record.
fn settle_as(
    run: &RunRow,
    state: &LogState,
    slurm: Option<&str>,
) -> Option<(RunStatus, Option<String>)> {
    let last = state.last.as_ref();
    if let Some((status, error, _)) = last.and_then(|l| l.finish.clone()) {
        if status != RunStatus::Interrupted {
            return Some((status, error));
        }
    }
    let slurm = slurm?;
    if client::is_alive(slurm) {
        return None;
    }
    let task = match (run.slurm_job_id, run.slurm_task_id) {
        (Some(j), Some(t)) => format!("Slurm task {j}_{t}"),
        _ => "its Slurm task".to_string(),
    };
    let log = run.slurm_log.as_deref().unwrap_or("(no log)");
    let why = match last {
        Some(l) => match &l.finish {
            Some(_) if l.requeued == Some(false) => format!(
                "interrupted; requeueing {task} failed ({slurm}); `runner sweep --executor slurm` submits it again from its checkpoint"
            ),
            Some(_) => format!(
                "interrupted ({task} {slurm}); `runner sweep --executor slurm` submits it again from its checkpoint"
            ),
            None => format!(
                "{task} ended ({slurm}) without a final record: killed, out of memory, a node failure or a setup line that failed; its log: {log}"
            ),
        },
        None => format!("{task} ended ({slurm}) before the run started; its log: {log}"),
    };
    Some((RunStatus::Interrupted, Some(why)))
}

/// Imports what the tasks of the submitted runs (of one sweep, or all) wrote, and settles the
/// runs whose tasks ended. Warnings (Slurm unreachable, unreadable logs) go to `warn`.
pub fn collect(
    store: &mut Store,
    client: Option<&SlurmClient>,
    sweep: Option<i64>,
    warn: &mut Vec<String>,
) -> Result<Vec<Collected>, EngineError> {
    let runs = store.slurm_runs(sweep, true)?;
    let states = task_states(client, &runs, warn);
    let mut out = Vec::new();
    for run in runs {
        let Some(path) = run.records_path.clone() else {
            continue;
        };
        let events = match runlog::read_events(Path::new(&path), 0) {
            Ok(e) => e,
            Err(e) => {
                warn.push(format!("run {}: {e}", run.id));
                continue;
            }
        };
        let mut state = LogState::default();
        let from = run.records_offset.max(0) as u64;
        let mut ops = Vec::new();
        let mut to = from;
        for (ev, end) in &events {
            state.apply(ev);
            if *end > from {
                ops.extend(ev.record_op());
                to = *end;
            }
        }
        let imported = ops.len();
        let applied = store.apply_records(run.id, &ops, from as i64, to as i64)?;
        let slurm = match (&states, run.slurm_job_id, run.slurm_task_id) {
            (Some(s), Some(j), Some(t)) => s.get(&(j, t)).cloned(),
            _ => None,
        };
        let mut c = Collected {
            run_id: run.id,
            key: run.key.clone(),
            imported: if applied { imported } else { 0 },
            status: run.status.clone(),
            slurm_state: slurm.clone(),
            error: None,
        };
        if let Some((status, error)) = settle_as(&run, &state, slurm.as_deref()) {
            if store.settle(run.id, status, error.as_deref())? {
                c.status = status.as_str().into();
                c.error = error;
            }
        }
        out.push(c);
    }
    Ok(out)
}

/// One row of `runner status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusRow {
    pub run_id: i64,
    pub key: String,
    /// The store's status.
    pub status: String,
    /// Slurm's state of the run's task (PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT,
    /// CANCELLED, ...), "gone" when Slurm no longer knows it, "unknown" when it cannot be asked.
    pub slurm_state: String,
    pub job_id: Option<i64>,
    pub task_id: Option<i64>,
    /// The last epoch the store holds (collected).
    pub last_epoch: Option<u32>,
    /// The task's output file.
    pub log: Option<String>,
}

/// Every run (of one sweep, or all) with its state: the runs submitted to Slurm with their
/// Slurm task's state, the others with `local`.
pub fn status(
    store: &Store,
    client: Option<&SlurmClient>,
    sweep: Option<i64>,
    warn: &mut Vec<String>,
) -> Result<Vec<StatusRow>, EngineError> {
    let runs = store.slurm_runs(sweep, false)?;
    let states = task_states(client, &runs, warn);
    let mut out = Vec::new();
    for r in runs {
        let slurm_state = match (&states, r.slurm_job_id, r.slurm_task_id) {
            (Some(s), Some(j), Some(t)) => s
                .get(&(j, t))
                .cloned()
                .unwrap_or_else(|| client::GONE.to_string()),
            (Some(_), _, _) => client::GONE.to_string(),
            (None, _, _) => "unknown".to_string(),
        };
        let last_epoch = store.epochs(r.id)?.last().map(|e| e.epoch);
        let status = r.shown_status();
        out.push(StatusRow {
            run_id: r.id,
            key: r.key,
            status,
            slurm_state,
            job_id: r.slurm_job_id,
            task_id: r.slurm_task_id,
            last_epoch,
            log: r.slurm_log,
        });
    }
    // and the runs trained on this machine (or another, through the same store): their
    // state is the store's
    let slurm_ids: std::collections::HashSet<i64> = out.iter().map(|r| r.run_id).collect();
    for r in store.runs(sweep)? {
        if slurm_ids.contains(&r.id) || r.records_path.is_some() {
            continue;
        }
        let last_epoch = store.epochs(r.id)?.last().map(|e| e.epoch);
        out.push(StatusRow {
            run_id: r.id,
            key: r.key.clone(),
            status: r.shown_status(),
            slurm_state: LOCAL.to_string(),
            job_id: None,
            task_id: None,
            last_epoch,
            log: None,
        });
    }
    out.sort_by_key(|r| r.run_id);
    Ok(out)
}

/// The `slurm_state` of a run that was never submitted to Slurm.
pub const LOCAL: &str = "local";
