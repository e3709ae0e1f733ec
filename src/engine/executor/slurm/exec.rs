//! `runner exec MANIFEST --index I`: what each array task runs. It trains run I of the
//! manifest with the run folder's record log as its records (never the store), resuming from
//! the newest checkpoint the log names when an earlier attempt left one. SIGTERM (`scancel`,
//! preemption) stops it after the current step with a checkpoint, as Ctrl-C does; SIGUSR1
//! (Slurm's warning before the time limit) does the same and then requeues the task with
//! `scontrol requeue`, so that it starts again from that checkpoint.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::client::SlurmClient;
use super::manifest::Manifest;
use super::SlurmError;
use crate::engine::executor::start_for;
use crate::engine::progress::Reporter;
use crate::engine::run::{execute, RunOutcome, RunRequest, StartFrom};
use crate::engine::runlog::{Attempt, LogEvent, RunLog};
use crate::engine::EngineError;

/// How a task ended.
#[derive(Debug)]
pub struct ExecReport {
    pub run_id: i64,
    pub key: String,
    /// The run's outcome (its `finish` record says the same).
    pub outcome: Result<RunOutcome, EngineError>,
    /// After SIGUSR1: whether `scontrol requeue` took the task back (None: not asked).
    pub requeued: Option<Result<(), String>>,
}

impl ExecReport {
    /// The task's exit status: 0 when the run is done, or paused at the rung it was asked to
    /// reach (a child array's `afterok` waits for it), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            Ok(RunOutcome::Done(_) | RunOutcome::Paused(_)) => 0,
            _ => 1,
        }
    }
}

fn env_i64(name: &str) -> Option<i64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Trains run `index` of the manifest at `path`. `usr1` is raised by SIGUSR1 (which also
/// raises `stop`).
pub fn exec(
    path: &Path,
    index: usize,
    reporter: &Reporter,
    stop: Arc<AtomicBool>,
    usr1: &dyn Fn() -> bool,
) -> Result<ExecReport, EngineError> {
    let manifest = Manifest::read(path)?;
    let n = manifest.runs.len();
    let run = manifest.runs.into_iter().nth(index).ok_or_else(|| {
        SlurmError::Invalid(format!(
            "--index {index}: {} has {n} run(s) (0 to {})",
            path.display(),
            n.saturating_sub(1)
        ))
    })?;
    // the recipe's relative paths mean what they meant where the sweep was submitted
    std::env::set_current_dir(&manifest.workdir).map_err(|e| SlurmError::Io {
        path: manifest.workdir.clone().into(),
        msg: format!("cannot work in the submitting folder: {e}"),
    })?;
    let mut log = RunLog::open(Path::new(&run.records), run.run_id, run.init_from.clone())?;
    // the run's folder is the one its record log is in (the store recorded it at submission)
    let run_dir = Path::new(&run.records)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let resumed = !log.state().epochs.is_empty() || !log.state().checkpoints.is_empty();
    let start = start_for(&mut log, run.run_id, resumed)?;
    let from_epoch = match &start {
        StartFrom::Continue(p) => log
            .state()
            .checkpoints
            .iter()
            .rev()
            .find(|c| Path::new(&c.path) == p.as_path())
            .map_or(0, |c| c.epoch),
        _ => 0,
    };
    let job_id = std::env::var("SLURM_ARRAY_JOB_ID")
        .or_else(|_| std::env::var("SLURM_JOB_ID"))
        .ok();
    let task_id = env_i64("SLURM_ARRAY_TASK_ID");
    log.append(LogEvent::Start(Attempt {
        host: crate::store::hostname(),
        pid: std::process::id(),
        at: crate::store::now(),
        job_id: job_id.clone(),
        task_id,
        restart: env_i64("SLURM_RESTART_COUNT").unwrap_or(0) as u32,
        from_epoch,
    }))?;
    reporter.info(&format!(
        "run {} ({}) of sweep {}: {} on {}, records in {}",
        run.run_id,
        run.key,
        manifest.sweep_id,
        match &start {
            StartFrom::Continue(p) => format!("resuming from {}", p.display()),
            _ => "starting".to_string(),
        },
        crate::store::hostname(),
        log.path().display()
    ));
    let outcome = execute(
        &mut log,
        RunRequest {
            run_id: run.run_id,
            key: run.key.clone(),
            recipe: run.recipe,
            start,
            dir: run_dir,
            reporter,
            stop,
            until_epoch: run.until_epoch,
            early_stop: None,
        },
    );
    let requeued = match (&outcome, usr1()) {
        (Ok(RunOutcome::Interrupted), true) => {
            let result = match &job_id {
                Some(job) => SlurmClient.requeue(job, task_id),
                None => Err("not a Slurm task (no SLURM_JOB_ID)".to_string()),
            };
            log.append(LogEvent::Requeue {
                ok: result.is_ok(),
                message: match &result {
                    Ok(()) => "requeued after SIGUSR1 (time limit near)".into(),
                    Err(e) => e.clone(),
                },
                at: crate::store::now(),
            })?;
            Some(result)
        }
        _ => None,
    };
    Ok(ExecReport {
        run_id: run.run_id,
        key: run.key,
        outcome,
        requeued,
    })
}
