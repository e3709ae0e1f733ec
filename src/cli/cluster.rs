//! The cluster commands: `runner sweep --executor slurm`, `runner exec` (what each array
//! task runs), `runner collect` and `runner status`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::output::{print_json, table, Format};
use super::train::{with_device, TrainOpts};
use super::{CliError, Global};
use crate::engine::executor::slurm::{collect, exec, merge_options, SlurmClient, SlurmExecutor};
use crate::engine::executor::{Executor, SweepOptions};
use crate::engine::progress::Reporter;
use crate::engine::run::RunOutcome;
use crate::engine::{signals, EngineError};
use crate::recipe::validate::{slurm_mem_ok, slurm_time_ok};
use crate::recipe::SlurmConfig;
use crate::store::{RunStatus, Store};

/// How often `--wait` collects.
const WAIT_POLL: Duration = Duration::from_secs(2);

/// An engine error with the exit code the contract gives it: the user's input (2), or a
/// failure at run time (1).
pub(crate) fn engine_error(e: EngineError) -> CliError {
    match &e {
        EngineError::Slurm(s) if s.is_invalid_input() => CliError::invalid(e),
        _ => CliError::failed(e),
    }
}

/// The Slurm options of `runner sweep`.
pub struct SlurmFlags {
    /// `--partition`, `--gpus-per-run`, ... (over the recipe's `[slurm]`).
    pub opts: SlurmConfig,
    pub wait: bool,
}

fn collect_into(
    store: &mut Store,
    client: Option<&SlurmClient>,
    sweep: Option<i64>,
    reporter: &Reporter,
) -> Result<Vec<collect::Collected>, CliError> {
    let mut warn = Vec::new();
    let got = collect::collect(store, client, sweep, &mut warn).map_err(engine_error)?;
    for w in warn {
        reporter.warn(&w);
    }
    Ok(got)
}

/// `runner sweep RECIPE --executor slurm`.
pub fn sweep(
    g: &Global,
    recipe: &Path,
    sweep_opts: &SweepOptions,
    flags: SlurmFlags,
    dry_run: bool,
    o: TrainOpts,
) -> Result<(), CliError> {
    if sweep_opts.jobs.is_some() {
        return Err(CliError::invalid(
            "--jobs runs trials in parallel on this machine; on Slurm, --max-parallel says how many array tasks run at once",
        ));
    }
    if sweep_opts.fail_fast {
        return Err(CliError::invalid(
            "--fail-fast stops a local sweep at its first failed run; Slurm runs every task of the array (drop --fail-fast)",
        ));
    }
    let sets = with_device(&o.sets, &o.device);
    let mut runs = super::plan::plan_recipe(recipe, &sets)?;
    let mut search = super::plan::search_of(recipe, &sets)?;
    // a search plans its trials as it goes: its first trial stands for them in the checks
    let parents = runs.clone();
    if let Some(sr) = search.as_mut() {
        let first = crate::plan::sampler::Sampler::propose(&sr.sampler(), 0, &[]);
        runs.push(sr.planned(0, &first, &crate::data::fingerprint_for)?);
    }
    let prune = super::sweep::prune_plan(recipe, &sets)?;
    if search.is_some() && prune.is_some() {
        return Err(CliError::invalid(
            "sweep.mode = \"tpe\" with [sweep.prune] runs on the local executor in this version: \
             on Slurm, drop the pruning (--set sweep.prune.kind=none) or run the sweep without \
             --executor slurm",
        ));
    }
    if prune.as_ref().is_some_and(|p| !p.by_rungs()) {
        return Err(CliError::invalid(
            "[sweep.prune] kind = \"median\" runs on the local executor in this version: on \
             Slurm, use kind = \"halving\", drop it (--set sweep.prune.kind=none), or run the \
             sweep without --executor slurm",
        ));
    }
    if prune.is_some() && sweep_opts.max_runs.is_some() {
        return Err(CliError::invalid(
            "--max-runs does not combine with [sweep.prune] kind = \"halving\": it submits rung by rung",
        ));
    }
    let from_recipe = runs
        .iter()
        .find(|r| r.target)
        .and_then(|r| r.recipe.slurm.clone());
    let opts = merge_options(from_recipe.as_ref(), &flags.opts);
    if let Some(t) = flags.opts.time.as_deref().filter(|t| !slurm_time_ok(t)) {
        return Err(CliError::invalid(format!(
            "--time {t}: not a Slurm time limit (MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"
        )));
    }
    if let Some(m) = flags.opts.mem.as_deref().filter(|m| !slurm_mem_ok(m)) {
        return Err(CliError::invalid(format!(
            "--mem {m}: not a Slurm memory size (a number with an optional unit K, M, G or T: 16G)"
        )));
    }
    if opts.gpus_per_run.is_some_and(|n| n > 0)
        && runs.iter().any(|r| r.recipe.train.device == "cpu")
    {
        o.reporter.warn(
            "--gpus-per-run asks Slurm for GPUs, but the runs train on train.device = \"cpu\" (add --device cuda)",
        );
    }
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::failed(format!("cannot read the working directory: {e}")))?;
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| CliError::failed(format!("cannot find the runner binary: {e}")))?;
    let mut executor = SlurmExecutor {
        opts,
        retry_failed: sweep_opts.retry_failed,
        max_runs: sweep_opts.max_runs,
        client: SlurmClient,
        exe,
        workdir: cwd,
        until_epoch: None,
        continue_stopped: false,
        sweep_id: None,
    };
    if dry_run {
        let store = if g.db.exists() {
            Some(Store::open(&g.db)?)
        } else {
            None
        };
        let text = executor
            .dry_run(store.as_ref(), &runs)
            .map_err(engine_error)?;
        crate::out!("{text}");
        return Ok(());
    }
    // nothing is recorded or submitted unless sbatch, the partition, the run folders and
    // the options are right
    executor.client = SlurmClient::find().map_err(|e| engine_error(e.into()))?;
    executor.check(&runs).map_err(|e| engine_error(e.into()))?;
    let mut store = Store::open(&g.db)?;
    for c in collect_into(&mut store, Some(&executor.client), None, &o.reporter)? {
        if c.status != RunStatus::Submitted.as_str() {
            o.reporter.info(&format!(
                "collected run {}: {}{}",
                c.run_id,
                c.status,
                c.error.map(|e| format!(" ({e})")).unwrap_or_default()
            ));
        }
    }
    // the data is prepared here, once (the built-in set generated), not by racing tasks
    super::sweep::check_data(g, recipe, &sets, &runs, &o.reporter)?;
    if let Some(search) = search {
        let batch = executor.opts.max_parallel.unwrap_or(1).max(1) as usize;
        if let Some(b) = store.find_study(&search.study_key)?.map(|s| s.batch) {
            if b as usize != batch {
                return Err(CliError::invalid(format!(
                    "this TPE study proposes its trials in batches of {b} (trial k sees only the batches before its own): continue it with --max-parallel {b}"
                )));
            }
        }
        return sweep_search(
            recipe, &parents, search, batch, executor, flags.wait, &mut store, &o,
        );
    }
    if let Some(plan) = prune {
        return sweep_halving(recipe, &runs, &plan, executor, flags.wait, &mut store, &o);
    }
    let outcome = executor
        .run_sweep(
            &mut store,
            &recipe.display().to_string(),
            &runs,
            &o.reporter,
        )
        .map_err(engine_error)?;
    let submitted: Vec<&str> = outcome
        .rows
        .iter()
        .filter(|r| r.action.starts_with("submitted"))
        .map(|r| r.key.as_str())
        .collect();
    let skipped: Vec<&str> = outcome
        .rows
        .iter()
        .filter(|r| !r.action.starts_with("submitted"))
        .map(|r| r.key.as_str())
        .collect();
    let rows: Vec<Vec<String>> = outcome
        .rows
        .iter()
        .map(|r| {
            vec![
                if r.parent {
                    "parent".into()
                } else {
                    r.index.to_string()
                },
                r.run_id
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.key.clone(),
                r.status.clone(),
                r.action.clone(),
            ]
        })
        .collect();
    let headers: Vec<String> = ["#", "run", "key", "status", "action"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    o.reporter.info(&table(&headers, &rows));
    match outcome.job_id {
        Some(job) => o.reporter.info(&format!(
            "sweep {}: {} run(s) submitted as job {job}, {} not; `runner status {}` shows them, `runner collect {}` imports their records",
            outcome.sweep_id,
            submitted.len(),
            skipped.len(),
            outcome.sweep_id,
            outcome.sweep_id
        )),
        None => o.reporter.info(&format!(
            "sweep {}: nothing to submit ({} run(s) done, submitted or not startable)",
            outcome.sweep_id,
            skipped.len()
        )),
    }
    let mut json = serde_json::json!({
        "sweep_id": outcome.sweep_id,
        "job_id": outcome.job_id,
        "submitted": submitted,
        "skipped": skipped,
    });
    if o.format != Format::Json {
        if let Some(job) = outcome.job_id {
            crate::outln!("{job}");
        }
    }
    if !flags.wait || outcome.job_id.is_none() {
        if o.format == Format::Json {
            print_json(&json);
        }
        return Ok(());
    }
    // --wait: collect until none of the sweep's runs is left submitted
    let stop = signals::stop_flag();
    loop {
        collect_into(
            &mut store,
            Some(&executor.client),
            Some(outcome.sweep_id),
            &o.reporter,
        )?;
        let left = store.slurm_runs(Some(outcome.sweep_id), true)?;
        if left.is_empty() {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            return Err(CliError::failed(format!(
                "stopped waiting; the tasks go on (`runner status {0}`, `runner collect {0}`)",
                outcome.sweep_id
            )));
        }
        std::thread::sleep(WAIT_POLL);
    }
    let ended = store.slurm_runs(Some(outcome.sweep_id), false)?;
    let bad: Vec<String> = ended
        .iter()
        .filter(|r| r.status != RunStatus::Done.as_str())
        .map(|r| format!("run {} {}", r.id, r.status))
        .collect();
    json["runs"] = ended
        .iter()
        .map(|r| serde_json::json!({"run_id": r.id, "key": r.key, "status": r.status}))
        .collect();
    if o.format == Format::Json {
        print_json(&json);
    } else {
        o.reporter.info(&format!(
            "sweep {}: every task ended; {}",
            outcome.sweep_id,
            if bad.is_empty() {
                "all done".to_string()
            } else {
                bad.join(", ")
            }
        ));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "{} run(s) not done: {} (`runner status {}`)",
            bad.len(),
            bad.join(", "),
            outcome.sweep_id
        )))
    }
}

/// One step of a sweep submitted array by array (halving's rungs, a TPE study's batches).
enum ArrayStep {
    /// Submit these runs as one array (each to `until`, or to the end), described by `info`
    /// in the JSON and by `label` in the log.
    Submit {
        label: String,
        until: Option<u32>,
        runs: Vec<crate::plan::PlannedRun>,
        info: serde_json::Value,
    },
    /// Runs of the current array still train: what it waits for.
    Waiting(String),
    /// Nothing left.
    Finished,
}

/// Drives a sweep that goes array by array from the submitting machine: without `--wait` it
/// takes the step the store's state asks for (submit the next array, or say what it waits
/// for) and returns; with `--wait` it goes on, collecting, deciding and submitting, until
/// `next` says it is finished. JSON: `{sweep_id, job_id, arrays, finished, runs}`.
fn drive_arrays(
    recipe: &Path,
    sweep_id: i64,
    mut executor: SlurmExecutor,
    wait: bool,
    store: &mut Store,
    o: &TrainOpts,
    mut next: impl FnMut(&mut Store) -> Result<ArrayStep, CliError>,
) -> Result<(), CliError> {
    let recipe_text = recipe.display().to_string();
    executor.sweep_id = Some(sweep_id);
    let stop = signals::stop_flag();
    let mut arrays: Vec<serde_json::Value> = Vec::new();
    let finished = loop {
        if !arrays.is_empty() || wait {
            collect_into(store, Some(&executor.client), None, &o.reporter)?;
        }
        match next(store)? {
            ArrayStep::Finished => break true,
            ArrayStep::Waiting(what) if !wait || stop.load(Ordering::SeqCst) => {
                o.reporter.info(&format!(
                    "sweep {sweep_id}: {what}; `runner sweep {} --executor slurm` again (or --wait) goes on when they end",
                    recipe.display()
                ));
                break false;
            }
            ArrayStep::Waiting(_) => std::thread::sleep(WAIT_POLL),
            ArrayStep::Submit {
                label,
                until,
                runs,
                mut info,
            } => {
                executor.until_epoch = until;
                let outcome = executor
                    .run_sweep(store, &recipe_text, &runs, &o.reporter)
                    .map_err(engine_error)?;
                let submitted: Vec<&str> = outcome
                    .rows
                    .iter()
                    .filter(|r| r.action.starts_with("submitted"))
                    .map(|r| r.key.as_str())
                    .collect();
                let Some(job) = outcome.job_id else {
                    return Err(CliError::failed(format!(
                        "{label}: none of its {} run(s) could be submitted: {}",
                        runs.len(),
                        outcome
                            .rows
                            .iter()
                            .map(|r| format!("{} {}", r.key, r.action))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                o.reporter.info(&format!(
                    "sweep {sweep_id}: {label} ({} run(s) to {}) submitted as job {job}",
                    submitted.len(),
                    until.map_or("the last epoch".to_string(), |e| format!("epoch {e}"))
                ));
                info["job_id"] = job.into();
                info["runs"] = submitted.into();
                arrays.push(info);
                if !wait {
                    break false;
                }
            }
        }
    };
    let rows: Vec<serde_json::Value> = store
        .runs(Some(sweep_id))?
        .iter()
        .map(|r| serde_json::json!({"run_id": r.id, "key": r.key, "status": r.status}))
        .collect();
    let json = serde_json::json!({
        "sweep_id": sweep_id,
        "job_id": arrays.last().map(|a| a["job_id"].clone()),
        "arrays": arrays,
        "finished": finished,
        "runs": rows,
    });
    if o.format == Format::Json {
        print_json(&json);
    } else if finished {
        o.reporter.info(&format!(
            "sweep {sweep_id}: every run is through (`runner leaderboard --sweep {sweep_id}`)"
        ));
    }
    Ok(())
}

/// The runs a sweep's runs start from must be done before it goes array by array.
fn parents_done(
    store: &Store,
    runs: &[crate::plan::PlannedRun],
    what: &str,
) -> Result<(), CliError> {
    for p in runs.iter().filter(|r| !r.target) {
        if store.status_of_key(&p.key)? != Some(RunStatus::Done) {
            return Err(CliError::invalid(format!(
                "{what} on Slurm starts once the runs its runs start from are done: train {} first (runner sweep {} --executor slurm)",
                p.recipe_path.display(),
                p.recipe_path.display()
            )));
        }
    }
    Ok(())
}

/// A halving sweep on Slurm: one job array per rung (`slurm::rungs`).
fn sweep_halving(
    recipe: &Path,
    runs: &[crate::plan::PlannedRun],
    plan: &crate::plan::prune::PrunePlan,
    mut executor: SlurmExecutor,
    wait: bool,
    store: &mut Store,
    o: &TrainOpts,
) -> Result<(), CliError> {
    use crate::engine::executor::slurm::rungs::{next_step, RungStep};
    parents_done(store, runs, "halving")?;
    let sweep_id = store.create_sweep(
        &recipe.display().to_string(),
        runs.iter().filter(|r| r.target).count(),
    )?;
    executor.continue_stopped = true;
    let reporter = &o.reporter;
    drive_arrays(recipe, sweep_id, executor, wait, store, o, |store| {
        Ok(
            match next_step(store, sweep_id, runs, plan, reporter).map_err(engine_error)? {
                RungStep::Finished => ArrayStep::Finished,
                RungStep::Waiting { rung, left } => ArrayStep::Waiting(format!(
                    "rung {} waits for {left} run(s) still on Slurm",
                    rung + 1
                )),
                RungStep::Submit {
                    rung,
                    until,
                    runs: picked,
                } => ArrayStep::Submit {
                    label: format!("rung {}", rung + 1),
                    until,
                    runs: picked.iter().map(|&i| runs[i].clone()).collect(),
                    info: serde_json::json!({"rung": rung, "until_epoch": until}),
                },
            },
        )
    })
}

/// A TPE search on Slurm: one job array per batch of `batch` trials (`--max-parallel`), each
/// proposed once the batches before it have ended (`search::next_batch`).
#[allow(clippy::too_many_arguments)]
fn sweep_search(
    recipe: &Path,
    parents: &[crate::plan::PlannedRun],
    mut search: crate::plan::search::Search,
    batch: usize,
    executor: SlurmExecutor,
    wait: bool,
    store: &mut Store,
    o: &TrainOpts,
) -> Result<(), CliError> {
    use crate::engine::executor::search::{next_batch, SearchStep};
    parents_done(store, parents, "a TPE search")?;
    let recipe_text = recipe.display().to_string();
    let sweep_id = store.create_sweep(&recipe_text, search.trials)?;
    drive_arrays(recipe, sweep_id, executor, wait, store, o, |store| {
        let step = next_batch(
            store,
            &recipe_text,
            &mut search,
            batch,
            &crate::data::fingerprint_for,
        )
        .map_err(engine_error)?;
        Ok(match step {
            SearchStep::Finished => ArrayStep::Finished,
            SearchStep::Waiting { start, left } => ArrayStep::Waiting(format!(
                "the batch of trials {start}-{} waits for {left} trial(s) still on Slurm",
                start + batch - 1
            )),
            SearchStep::Train { start, runs } => {
                let trials: Vec<usize> = runs.iter().map(|r| r.index).collect();
                ArrayStep::Submit {
                    label: format!("trials {start}-{}", start + batch - 1),
                    until: None,
                    runs,
                    info: serde_json::json!({"batch": start / batch, "trials": trials}),
                }
            }
        })
    })
}

/// `runner exec MANIFEST --index I`.
pub fn run_exec(manifest: &Path, index: usize, reporter: &Reporter) -> Result<(), CliError> {
    signals::install_usr1();
    let report = exec::exec(
        manifest,
        index,
        reporter,
        signals::stop_flag(),
        &signals::usr1_received,
    )
    .map_err(engine_error)?;
    let label = format!("run {} ({})", report.run_id, report.key);
    match (&report.outcome, &report.requeued) {
        (Ok(RunOutcome::Done(_)), _) => {
            reporter.info(&format!("{label}: done"));
            Ok(())
        }
        (Ok(RunOutcome::Paused(_)), _) => {
            reporter.info(&format!("{label}: paused at its rung"));
            Ok(())
        }
        (Ok(RunOutcome::Interrupted), Some(Ok(()))) => Err(CliError::failed(format!(
            "{label}: SIGUSR1 (time limit near): checkpointed and requeued; the task starts again from the checkpoint"
        ))),
        (Ok(RunOutcome::Interrupted), Some(Err(e))) => Err(CliError::failed(format!(
            "{label}: SIGUSR1: checkpointed, but the requeue failed ({e}); `runner sweep --executor slurm` submits it again"
        ))),
        (Ok(RunOutcome::Interrupted), None) => Err(CliError::failed(format!(
            "{label}: interrupted: a checkpoint was written; it resumes when submitted again"
        ))),
        (Ok(RunOutcome::Diverged(why)), _) => {
            Err(CliError::failed(format!("{label}: diverged: {why}")))
        }
        (Err(e), _) => Err(CliError::failed(format!("{label}: failed: {e}"))),
    }
}

fn check_sweep(store: &Store, sweep: Option<i64>) -> Result<(), CliError> {
    match sweep {
        Some(s) if !store.sweep_exists(s)? => Err(CliError::invalid(format!(
            "no sweep {s} in the store (`runner runs` lists the runs and their sweeps)"
        ))),
        _ => Ok(()),
    }
}

/// `runner collect [SWEEP]`.
pub fn run_collect(
    g: &Global,
    sweep: Option<i64>,
    format: Format,
    reporter: &Reporter,
) -> Result<(), CliError> {
    let mut store = super::runs::open_store(g)?;
    check_sweep(&store, sweep)?;
    let client = SlurmClient::find().ok();
    if client.is_none() {
        reporter.warn(
            "`sbatch` is not on PATH: the records are imported, but no run is settled without Slurm's job states",
        );
    }
    let got = collect_into(&mut store, client.as_ref(), sweep, reporter)?;
    if format == Format::Json {
        print_json(&serde_json::to_value(&got).unwrap_or_default());
        return Ok(());
    }
    let headers: Vec<String> = ["run", "key", "imported", "status", "slurm", "error"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows: Vec<Vec<String>> = got
        .iter()
        .map(|c| {
            vec![
                c.run_id.to_string(),
                c.key.clone(),
                c.imported.to_string(),
                c.status.clone(),
                c.slurm_state.clone().unwrap_or_else(|| "-".into()),
                c.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        crate::outln!("{}", table(&headers, &rows));
    }
    reporter.info(&format!(
        "collected {} record(s) of {} submitted run(s)",
        got.iter().map(|c| c.imported).sum::<usize>(),
        got.len()
    ));
    Ok(())
}

/// `runner status [SWEEP]`.
pub fn run_status(
    g: &Global,
    sweep: Option<i64>,
    format: Format,
    reporter: &Reporter,
) -> Result<(), CliError> {
    let store = super::runs::open_store(g)?;
    check_sweep(&store, sweep)?;
    let client = SlurmClient::find().ok();
    let mut warn = Vec::new();
    let rows = collect::status(&store, client.as_ref(), sweep, &mut warn).map_err(engine_error)?;
    if client.is_none() && rows.iter().any(|r| r.slurm_state != collect::LOCAL) {
        reporter.warn("`sbatch` is not on PATH: Slurm states are unknown");
    }
    for w in warn {
        reporter.warn(&w);
    }
    if format == Format::Json {
        print_json(&serde_json::to_value(&rows).unwrap_or_default());
        return Ok(());
    }
    let headers: Vec<String> = [
        "run", "key", "status", "slurm", "job", "task", "epoch", "log",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.run_id.to_string(),
                r.key.clone(),
                r.status.clone(),
                r.slurm_state.clone(),
                opt(r.job_id),
                opt(r.task_id),
                opt(r.last_epoch.map(i64::from)),
                r.log.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if format == Format::Csv {
        crate::out!("{}", super::output::csv(&headers, &cells));
    } else {
        crate::outln!("{}", table(&headers, &cells));
    }
    Ok(())
}
