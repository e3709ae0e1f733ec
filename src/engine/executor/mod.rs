//! Executors: where a sweep's planned runs are trained. One interface, two executors:
//! `local` trains them one after another on this machine (claims, heartbeat, resume);
//! `slurm` hands them to a Slurm cluster as a job array whose tasks write their records into
//! each run's folder (`runner exec`), collected into the store by `runner collect`. Either
//! way the store stays the only SQL writer, on the machine that runs `runner sweep`.

mod halving;
pub mod local;
pub mod parallel;
pub mod search;
pub mod slurm;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::progress::Reporter;
use super::EngineError;
use crate::plan::PlannedRun;
use crate::store::Store;

pub use halving::budget as halving_budget;
pub use local::{
    latest_checkpoint, new_run, start_for, train_parents, Heartbeat, JobsOptions, SweepOptions,
    STALE_AFTER,
};

/// One line of a sweep's summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryRow {
    /// The sweep this invocation recorded (`runner leaderboard --sweep ID`).
    pub sweep_id: i64,
    pub index: usize,
    pub key: String,
    /// The recipe file of the run (a parent's is the file `model.init_from` names).
    pub recipe: String,
    /// A run the sweep's own runs start from (`model.init_from = { recipe = ... }`).
    pub parent: bool,
    pub run_id: Option<i64>,
    pub overrides: BTreeMap<String, serde_json::Value>,
    pub status: String,
    /// What this invocation did: "trained", "resumed", "submitted (job 12_3)", "skipped
    /// (done)", "skipped (running elsewhere)", "not started (...)", ...
    pub action: String,
    pub seconds: f64,
}

impl SummaryRow {
    /// Whether this invocation trained the run (from scratch, resumed, to a rung, or until
    /// it was pruned).
    pub fn worked(&self) -> bool {
        ["trained", "resumed", "pruned"]
            .iter()
            .any(|w| self.action.starts_with(w))
    }

    /// The row of a planned run before anything is done with it.
    pub fn planned(sweep_id: i64, run: &PlannedRun) -> SummaryRow {
        SummaryRow {
            sweep_id,
            index: run.index,
            key: run.key.clone(),
            recipe: run.recipe_path.display().to_string(),
            parent: !run.target,
            run_id: None,
            overrides: run.overrides.clone(),
            status: "planned".into(),
            action: String::new(),
            seconds: 0.0,
        }
    }
}

/// What an executor did with a sweep.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    pub sweep_id: i64,
    /// One row per planned run, in plan order (parents first).
    pub rows: Vec<SummaryRow>,
    /// The Slurm job id of the array the sweep's own runs were submitted as (None: local, or
    /// nothing submitted).
    pub job_id: Option<i64>,
}

/// Trains, or hands over, every planned run of a sweep that is not done.
pub trait Executor {
    /// Records the sweep in the store and executes its runs (`runs` in plan order: the runs a
    /// recipe's runs start from come first).
    fn run_sweep(
        &mut self,
        store: &mut Store,
        recipe_path: &str,
        runs: &[PlannedRun],
        reporter: &Reporter,
    ) -> Result<SweepOutcome, EngineError>;
}

/// Trains a recorded sweep's runs on this machine: rung by rung under halving, else one after
/// another (with median stopping when asked).
fn train_here(
    store: &mut Store,
    sweep_id: i64,
    runs: &[PlannedRun],
    opts: &SweepOptions,
    reporter: &Reporter,
    stop: Arc<AtomicBool>,
) -> Result<Vec<SummaryRow>, EngineError> {
    match opts.prune.as_ref().filter(|p| p.by_rungs()) {
        Some(plan) => halving::train_halving(store, sweep_id, runs, plan, opts, reporter, stop),
        None => local::train_planned(store, sweep_id, runs, opts, reporter, stop),
    }
}

/// Runs every planned run not yet done, one after another: the parents a recipe's runs
/// start from first (the plan's order). A run whose parent is not done is not started.
pub fn execute_sweep(
    store: &mut Store,
    recipe_path: &str,
    runs: &[PlannedRun],
    opts: &SweepOptions,
    reporter: &Reporter,
    stop: Arc<AtomicBool>,
) -> Result<Vec<SummaryRow>, EngineError> {
    let sweep_id = local::sweep_for(store, recipe_path, runs)?;
    train_here(store, sweep_id, runs, opts, reporter, stop)
}

/// Today's sweep loop behind the executor interface: every run on this machine, in order.
pub struct LocalExecutor {
    pub opts: SweepOptions,
    pub stop: Arc<AtomicBool>,
}

impl Executor for LocalExecutor {
    fn run_sweep(
        &mut self,
        store: &mut Store,
        recipe_path: &str,
        runs: &[PlannedRun],
        reporter: &Reporter,
    ) -> Result<SweepOutcome, EngineError> {
        let sweep_id = local::sweep_for(store, recipe_path, runs)?;
        let rows = train_here(
            store,
            sweep_id,
            runs,
            &self.opts,
            reporter,
            self.stop.clone(),
        )?;
        Ok(SweepOutcome {
            sweep_id,
            rows,
            job_id: None,
        })
    }
}
