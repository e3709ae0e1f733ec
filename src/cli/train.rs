//! `runner run`, `runner sweep` and `runner resume`: training from recipes and checkpoints.

use std::path::Path;

use super::output::{cell, fmt_num, print_json, table, Format};
use super::{parse_sets, CliError, Global};
use crate::engine::executor::{
    new_run, start_for, Executor, Heartbeat, LocalExecutor, SweepOptions, STALE_AFTER,
};
use crate::engine::preflight::Preflight;
use crate::engine::progress::Reporter;
use crate::engine::{execute, RunOutcome, RunRequest, StartFrom};
use crate::recipe::{Composed, Origin, Override, Recipe};
use crate::store::{Claim, NewRun, RunStatus, Store};

/// Options shared by the training commands.
pub struct TrainOpts {
    pub sets: Vec<String>,
    pub device: Option<String>,
    pub format: Format,
    pub reporter: Reporter,
}

pub(crate) fn with_device(sets: &[String], device: &Option<String>) -> Vec<String> {
    let mut s = sets.to_vec();
    if let Some(d) = device {
        s.push(format!("train.device=\"{d}\""));
    }
    s
}

fn print_outcome(store: &Store, id: i64, o: &TrainOpts) -> Result<(), CliError> {
    let run = store.run(id)?;
    let epochs = store.epochs(id)?;
    let metrics = epochs
        .last()
        .map(crate::engine::run::metrics_map)
        .unwrap_or_default();
    match o.format {
        Format::Json => print_json(&serde_json::json!({
            "id": run.id, "key": run.key, "status": run.status, "metrics": metrics,
        })),
        _ => {
            o.reporter
                .run_finished(run.id, &run.key, &run.status, &metrics);
            crate::outln!("{}", run.id);
        }
    }
    Ok(())
}

fn outcome_code(outcome: &Result<RunOutcome, crate::engine::EngineError>) -> Result<(), CliError> {
    match outcome {
        Ok(RunOutcome::Done(_)) => Ok(()),
        Ok(RunOutcome::Interrupted) => Err(CliError::interrupted(
            "interrupted: a checkpoint was written; `runner run` the same recipe (or `runner sweep`) resumes it",
        )),
        Ok(RunOutcome::Diverged(why)) => Err(CliError::failed(format!("diverged: {why}"))),
        Ok(RunOutcome::Paused(_)) => Ok(()),
        Err(e) => Err(CliError::failed(e)),
    }
}

/// The keys among `keys` whose run is done in the store (those are not trained again, so their
/// data need not be read, nor the built-in set regenerated, to check them). Opens the store
/// once, and creates none.
pub(crate) fn done_keys<'a>(
    g: &Global,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<std::collections::HashSet<String>, CliError> {
    let mut done = std::collections::HashSet::new();
    if !g.db.exists() {
        return Ok(done);
    }
    let store = Store::open(&g.db)?;
    for key in keys {
        if store.status_of_key(key)? == Some(crate::store::RunStatus::Done) {
            done.insert(key.to_string());
        }
    }
    Ok(done)
}

/// `runner run RECIPE`.
pub fn run(g: &Global, recipe: &Path, force: bool, o: TrainOpts) -> Result<(), CliError> {
    let sets = with_device(&o.sets, &o.device);
    let runs = super::plan::plan_recipe(recipe, &sets)?;
    let (parents, targets): (Vec<_>, Vec<_>) = runs.into_iter().partition(|r| !r.target);
    let [planned] = targets.as_slice() else {
        return Err(CliError::invalid(format!(
            "{}: the recipe plans {} runs; `runner run` trains one (fix the swept keys with --set, or use `runner sweep`)",
            recipe.display(),
            targets.len()
        )));
    };
    // the data and the model must fit before a run is recorded
    let mut preflight = Preflight::with_reporter(&o.reporter);
    let done = done_keys(
        g,
        parents
            .iter()
            .chain(std::iter::once(planned))
            .map(|r| r.key.as_str()),
    )?;
    let checked = |e| super::preflight_error(recipe, &sets, e);
    for p in parents.iter().filter(|p| !done.contains(&p.key)) {
        preflight.check(&p.recipe).map_err(checked)?;
    }
    if force || !done.contains(&planned.key) {
        preflight.check(&planned.recipe).map_err(checked)?;
    }
    for n in preflight.generated_notices() {
        o.reporter.info(&n);
    }
    for w in preflight.take_warnings() {
        o.reporter.warn(&w);
    }
    let mut store = Store::open(&g.db)?;
    // the runs this one starts from (`model.init_from = { recipe = ... }`) first
    crate::engine::executor::train_parents(
        &mut store,
        &parents,
        &o.reporter,
        crate::engine::signals::stop_flag(),
    )
    .map_err(CliError::failed)?;
    let record = new_run(&recipe.display().to_string(), planned, None);
    let (id, start) = if force {
        let id = store.create_claimed(&record)?;
        (id, StartFrom::Scratch)
    } else {
        match store.claim_key(&record, STALE_AFTER, true, false)? {
            Claim::Done(id) => {
                o.reporter.info(&format!(
                    "run {id} with key {} is already done (--force trains a fresh one)",
                    planned.key
                ));
                return print_outcome(&store, id, &o);
            }
            Claim::Busy(id) => {
                return Err(CliError::failed(format!(
                    "run {id} with key {} is being trained by another live process",
                    planned.key
                )))
            }
            Claim::Submitted(id) => {
                return Err(CliError::failed(format!(
                    "run {id} with key {} is submitted to Slurm: `runner status` shows its task, `runner collect` imports its records",
                    planned.key
                )))
            }
            Claim::Finished {
                id,
                status: status @ (RunStatus::Paused | RunStatus::Pruned),
            } => {
                let epoch = store.epochs(id)?.last().map(|e| e.epoch).unwrap_or(0);
                o.reporter.info(&format!(
                    "run {id} with key {} is {} at epoch {epoch} by a pruned sweep: `runner resume {id}` continues it, as does `runner sweep` of its recipe ({})",
                    planned.key,
                    status.as_str(),
                    if status == RunStatus::Paused {
                        "the rung's decision is pending"
                    } else {
                        "without [sweep.prune], to train.epochs"
                    }
                ));
                return print_outcome(&store, id, &o);
            }
            Claim::Finished { id, .. } | Claim::Claimed { id, resumed: false } => {
                (id, StartFrom::Scratch)
            }
            Claim::Claimed { id, resumed: true } => (
                id,
                start_for(&mut store, id, true).map_err(CliError::failed)?,
            ),
        }
    };
    let _hb = Heartbeat::start(&g.db, id);
    let dir = store.run_dir(id)?;
    let outcome = execute(
        &mut store,
        RunRequest {
            run_id: id,
            key: planned.key.clone(),
            recipe: planned.recipe.clone(),
            start,
            dir,
            reporter: &o.reporter,
            stop: crate::engine::signals::stop_flag(),
            until_epoch: None,
            early_stop: None,
        },
    );
    print_outcome(&store, id, &o)?;
    outcome_code(&outcome)
}

/// `runner sweep RECIPE`.
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    g: &Global,
    recipe: &Path,
    opts: &SweepOptions,
    dry_run: bool,
    o: TrainOpts,
) -> Result<(), CliError> {
    let sets = with_device(&o.sets, &o.device);
    let runs = super::plan::plan_recipe(recipe, &sets)?;
    if dry_run {
        super::plan::run(g, recipe, &sets, o.format)?;
        if o.format != Format::Json {
            crate::outln!();
            super::plan::cost(g, recipe, &sets, false, o.format)?;
        }
        return Ok(());
    }
    let mut opts = opts.clone();
    opts.prune = prune_plan(recipe, &sets)?;
    if opts.jobs.is_some() && opts.prune.is_some() {
        return Err(CliError::invalid(
            "--jobs does not combine with [sweep.prune] in this version: drop one (--set sweep.prune.kind=none trains every run in full)",
        ));
    }
    if opts.prune.as_ref().is_some_and(|p| p.by_rungs()) && opts.max_runs.is_some() {
        return Err(CliError::invalid(
            "--max-runs does not combine with [sweep.prune] kind = \"halving\": it trains rung by rung (interrupt it with Ctrl-C, and the same command continues it)",
        ));
    }
    if let (Some(p), Some(first)) = (&opts.prune, runs.iter().find(|r| r.target)) {
        let warmup = first.recipe.scheduler.warmup_epochs;
        if p.config.grace_epochs < warmup {
            o.reporter.warn(&format!(
                "sweep.prune.grace_epochs = {} is shorter than the warm-up ({warmup} epochs): the first rung compares runs still warming up",
                p.config.grace_epochs
            ));
        }
    }
    let opts = &opts;
    let mut preflight = Preflight::with_reporter(&o.reporter);
    let done = done_keys(g, runs.iter().map(|r| r.key.as_str()))?;
    for r in runs.iter().filter(|r| !done.contains(&r.key)) {
        preflight
            .check(&r.recipe)
            .map_err(|e| super::preflight_error(recipe, &sets, e))?;
    }
    for n in preflight.generated_notices() {
        o.reporter.info(&n);
    }
    for w in preflight.take_warnings() {
        o.reporter.warn(&w);
    }
    let mut store = Store::open(&g.db)?;
    let started = std::time::Instant::now();
    let pipeline = runs.iter().any(|r| !r.target);
    let rows = match &opts.jobs {
        Some(j) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let slots = crate::engine::executor::parallel::slots(
                j.jobs,
                &j.devices,
                j.threads_per_run,
                cores,
            )
            .map_err(CliError::invalid)?;
            let exe = std::env::current_exe().map_err(CliError::failed)?;
            let command =
                |run: &crate::plan::PlannedRun, slot: &crate::engine::executor::parallel::Slot| {
                    child_run_command(&exe, g, recipe, &sets, run, slot)
                };
            crate::engine::executor::parallel::execute_parallel(
                &mut store,
                &recipe.display().to_string(),
                &runs,
                opts,
                &slots,
                &command,
                &o.reporter,
                crate::engine::signals::stop_flag(),
            )
            .map_err(CliError::failed)?
            .rows
        }
        None => {
            let mut executor = LocalExecutor {
                opts: opts.clone(),
                stop: crate::engine::signals::stop_flag(),
            };
            executor
                .run_sweep(
                    &mut store,
                    &recipe.display().to_string(),
                    &runs,
                    &o.reporter,
                )
                .map_err(CliError::failed)?
                .rows
        }
    };
    let swept: Vec<String> = runs
        .iter()
        .find(|r| r.target)
        .map(|r| r.overrides.keys().cloned().collect())
        .unwrap_or_default();
    let mut best = Vec::new();
    for r in &rows {
        // each the leaderboard row's value: the best among the epochs with a kept checkpoint
        let row_value = |id: i64, metric: &str| -> Result<f64, CliError> {
            Ok(store
                .row_epoch(id, metric)?
                .and_then(|row| row.metrics.get(metric).copied())
                .unwrap_or(f64::NAN))
        };
        let b = match r.run_id {
            Some(id) => (row_value(id, "val_acc")?, row_value(id, "verify_acc")?),
            None => (f64::NAN, f64::NAN),
        };
        best.push(b);
    }
    if o.format == Format::Json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .zip(&best)
            .map(|(r, (v, ver))| {
                let mut j = serde_json::to_value(r).unwrap_or_default();
                j["best_val_acc"] = if v.is_finite() {
                    (*v).into()
                } else {
                    serde_json::Value::Null
                };
                j["best_verify_acc"] = if ver.is_finite() {
                    (*ver).into()
                } else {
                    serde_json::Value::Null
                };
                j
            })
            .collect();
        print_json(&serde_json::Value::Array(list));
    } else {
        let mut headers = vec!["#".to_string(), "run".into(), "key".into()];
        if pipeline {
            headers.push("recipe".into());
        }
        headers.extend(swept.iter().cloned());
        headers.extend(
            [
                "status",
                "action",
                "best val_acc",
                "best verify_acc",
                "time",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let f = |x: f64| {
            if x.is_finite() {
                fmt_num(x)
            } else {
                "-".into()
            }
        };
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .zip(&best)
            .map(|(r, (v, ver))| {
                let mut row = vec![
                    if r.parent {
                        "parent".into()
                    } else {
                        r.index.to_string()
                    },
                    r.run_id
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "-".into()),
                    r.key.clone(),
                ];
                if pipeline {
                    row.push(r.recipe.clone());
                }
                row.extend(
                    swept
                        .iter()
                        .map(|k| r.overrides.get(k).map(cell).unwrap_or_else(|| "-".into())),
                );
                row.extend([
                    r.status.clone(),
                    r.action.clone(),
                    f(*v),
                    f(*ver),
                    format!("{:.1}s", r.seconds),
                ]);
                row
            })
            .collect();
        crate::outln!("{}", table(&headers, &table_rows));
        let worked = rows
            .iter()
            .filter(|r| r.action == "trained" || r.action == "resumed")
            .count();
        let not_started = rows
            .iter()
            .filter(|r| r.action.starts_with("not started"))
            .count();
        o.reporter.info(&format!(
            "sweep of {} run(s): {worked} trained or resumed, {} already there or busy, {not_started} not started; {:.1}s",
            rows.len(),
            rows.len() - worked - not_started,
            started.elapsed().as_secs_f64()
        ));
        // End with the leaderboard of the runs this sweep planned.
        if let Some(sweep_id) = rows.first().map(|r| r.sweep_id) {
            let q = super::leaderboard::Query {
                metric: "val_acc".into(),
                top: Some(10),
                sweep: Some(sweep_id),
                ..Default::default()
            };
            crate::outln!();
            o.reporter.info(&format!(
                "leaderboard of sweep {sweep_id} (`runner leaderboard --sweep {sweep_id}`):"
            ));
            super::leaderboard::run(g, &q, Format::Table)?;
        }
    }
    let failed = rows
        .iter()
        .filter(|r| r.status == "failed" || r.status == "diverged")
        .count();
    if rows.iter().any(|r| r.status == "interrupted") {
        return Err(CliError::interrupted(
            "sweep interrupted: run the same command again to resume it",
        ));
    }
    if failed > 0 && opts.fail_fast {
        return Err(CliError::failed(format!(
            "{failed} run(s) failed or diverged (--fail-fast)"
        )));
    }
    if failed > 0 {
        // Exit 1, as `runner run` does for such a run; the others were still trained.
        return Err(CliError::failed(format!(
            "{failed} run(s) failed or diverged (see the summary); `--retry-failed` reruns them"
        )));
    }
    Ok(())
}

/// The `runner run` that trains one planned run of a sweep in a child process on `slot`: the
/// sweep's `--set`s, the run's swept values, the slot's device, and its thread count as
/// `RAYON_NUM_THREADS` (Candle's CPU thread count is per process).
fn child_run_command(
    exe: &Path,
    g: &Global,
    recipe: &Path,
    sets: &[String],
    run: &crate::plan::PlannedRun,
    slot: &crate::engine::executor::parallel::Slot,
) -> std::process::Command {
    let mut c = std::process::Command::new(exe);
    c.arg("--db")
        .arg(&g.db)
        .arg("--quiet")
        .arg("run")
        .arg(recipe);
    for s in sets {
        c.arg("--set").arg(s);
    }
    for (k, v) in &run.overrides {
        let text = toml::Value::try_from(v.clone())
            .map(|t| t.to_string())
            .unwrap_or_else(|_| v.to_string());
        c.arg("--set").arg(format!("{k}={text}"));
    }
    c.arg("--set")
        .arg(format!("train.device=\"{}\"", slot.device));
    c.env("RAYON_NUM_THREADS", slot.threads.to_string());
    c
}

/// The recipe's `[sweep.prune]`, resolved (None without one).
pub fn prune_plan(
    recipe: &Path,
    sets: &[String],
) -> Result<Option<crate::plan::prune::PrunePlan>, CliError> {
    let (_, top) = crate::recipe::load(recipe, &parse_sets(sets)?)?;
    Ok(crate::plan::prune::PrunePlan::of(&top))
}

/// What `runner resume` continues.
pub enum ResumeTarget {
    Run(String),
    /// The leaderboard's top run by `--metric` (default val_acc).
    Best,
}

/// `runner resume`'s arguments.
pub struct ResumeArgs {
    pub target: ResumeTarget,
    /// From the leaderboard row's checkpoint (else the last kept one).
    pub from_best: bool,
    pub metric: Option<String>,
    pub epochs: Option<u32>,
    /// A fresh linked run even if the same resume is done.
    pub force: bool,
}

/// `runner resume RUN|--best`: continues a run from a checkpoint as a new linked run, keyed
/// by its configuration, data, the parent run's key and the start epoch, so that the same
/// resume again prints the run it made (trains nothing; `--force` for a fresh one) or
/// continues it where it was interrupted.
pub fn resume(g: &Global, a: ResumeArgs, o: TrainOpts) -> Result<(), CliError> {
    if !a.from_best && a.metric.is_some() && matches!(a.target, ResumeTarget::Run(_)) {
        return Err(CliError::invalid(
            "--metric picks the leaderboard row's checkpoint: it goes with --from best \
             (or with --best, where it ranks the runs)",
        ));
    }
    let mut store = super::runs::open_store(g)?;
    let engine_err = |e: crate::engine::EngineError| match e {
        crate::engine::EngineError::Store(s) => CliError::from(s),
        other => CliError::invalid(other),
    };
    let (parent_id, metric) = match a.target {
        ResumeTarget::Run(r) => (store.resolve_run(&r)?, a.metric.clone()),
        ResumeTarget::Best => {
            let metric = a.metric.clone().unwrap_or_else(|| "val_acc".into());
            let q = super::leaderboard::Query {
                metric: metric.clone(),
                top: Some(1),
                ..Default::default()
            };
            let ranked = super::leaderboard::rank(&store, &q)?;
            let id = ranked.first().map(|r| r.row.id).ok_or_else(|| {
                // As `runner best` says it: a state of the store, not a bad argument.
                CliError::failed(format!("no run has a recorded `{}` yet", q.metric))
            })?;
            (id, Some(metric))
        }
    };
    let parent = store.run(parent_id)?;
    let parent_recipe: Recipe = serde_json::from_value(parent.config.clone()).map_err(|e| {
        CliError::failed(format!(
            "run {parent_id}: stored configuration unreadable: {e}"
        ))
    })?;
    let (ck_epoch, ck_path) = if a.from_best {
        let row = crate::engine::restore::row_checkpoint(&store, parent_id, metric.as_deref())
            .map_err(engine_err)?;
        (row.epoch, row.path)
    } else {
        let last = store
            .checkpoints(parent_id)?
            .into_iter()
            .rfind(|c| {
                c.kept
                    && Path::new(&c.path).is_file()
                    && c.metric_name.as_deref() != Some(crate::engine::run::INTERRUPT_METRIC)
            })
            .ok_or_else(|| {
                CliError::invalid(format!("run {parent_id} has no checkpoint to resume from"))
            })?;
        (last.epoch, std::path::PathBuf::from(last.path))
    };
    // The parent's resolved configuration, with the new total epochs and --set on top.
    let mut table: toml::Table = toml::Table::try_from(&parent_recipe)
        .map_err(|e| CliError::failed(format!("run {parent_id}: {e}")))?;
    table.remove("sweep");
    let composed = Composed {
        file: format!("run {parent_id}").into(),
        table,
        origins: Default::default(),
        files: Vec::new(),
        sources: Default::default(),
        problems: Vec::new(),
        complete: true,
    };
    let mut overrides: Vec<Override> = parse_sets(&with_device(&o.sets, &o.device))?;
    if let Some(n) = a.epochs {
        if n <= ck_epoch {
            return Err(CliError::invalid(format!(
                "--epochs {n}: must be more than the checkpoint's {ck_epoch} epochs (N is the new total)"
            )));
        }
        overrides.push(Override {
            key: "train.epochs".into(),
            value: toml::Value::Integer(n as i64),
            raw: None,
            origin: Origin::CommandLine {
                flag: format!("--epochs {n}"),
            },
        });
    }
    let (_, recipe) = crate::recipe::resolve(composed, &overrides)?;
    if recipe.train.epochs <= ck_epoch {
        return Err(CliError::invalid(format!(
            "the checkpoint is at epoch {ck_epoch} and the run has {} epochs: pass --epochs N with N > {ck_epoch}",
            recipe.train.epochs
        )));
    }
    let fp = parent.data_fingerprint.clone().unwrap_or_default();
    let key = crate::plan::key::resumed_run_key(&recipe, &fp, &parent.key, ck_epoch);
    let record = NewRun {
        key: key.clone(),
        recipe: parent.recipe.clone(),
        config: serde_json::to_value(&recipe).unwrap_or_default(),
        overrides: parent.overrides.clone(),
        data_fingerprint: fp,
        sweep_id: None,
        parent_id: Some(parent_id),
        resumed_from: Some(ck_path.display().to_string()),
    };
    // The same resume again: its run, if done, is printed; if interrupted, continued.
    let done = !a.force && store.status_of_key(&key)? == Some(crate::store::RunStatus::Done);
    if !done {
        // a corrupt checkpoint, or a model it does not fit, is refused before the run exists
        let mut preflight = Preflight::with_reporter(&o.reporter);
        preflight.check(&recipe)?;
        preflight.check_checkpoint(&recipe, &ck_path)?;
    }
    let from_parent = StartFrom::Parent(ck_path.clone());
    let (id, start) = if a.force {
        (store.create_claimed(&record)?, from_parent)
    } else {
        match store.claim_key(&record, STALE_AFTER, true, false)? {
            Claim::Done(id) => {
                o.reporter.info(&format!(
                    "run {id} (key {key}) already continued run {parent_id} from its epoch-{ck_epoch} checkpoint to {} epochs; nothing to train (--force trains a fresh one)",
                    recipe.train.epochs
                ));
                return print_outcome(&store, id, &o);
            }
            Claim::Busy(id) => {
                return Err(CliError::failed(format!(
                    "run {id} (key {key}) is being trained by another live process"
                )))
            }
            Claim::Submitted(id) => {
                return Err(CliError::failed(format!(
                    "run {id} (key {key}) is submitted to Slurm"
                )))
            }
            Claim::Finished { id, .. } | Claim::Claimed { id, resumed: false } => (id, from_parent),
            Claim::Claimed { id, resumed: true } => {
                // its own newest checkpoint, or the parent's when it wrote none
                match start_for(&mut store, id, true).map_err(CliError::failed)? {
                    StartFrom::Scratch => (id, from_parent),
                    own => (id, own),
                }
            }
        }
    };
    match &start {
        StartFrom::Continue(p) => o.reporter.info(&format!(
            "run {id}: resuming this continuation of run {parent_id} from {}",
            p.display()
        )),
        _ => o.reporter.info(&format!(
            "run {id}: continuing run {parent_id} from its epoch-{ck_epoch} checkpoint to {} epochs",
            recipe.train.epochs
        )),
    }
    let _hb = Heartbeat::start(&g.db, id);
    let dir = store.run_dir(id)?;
    let outcome = execute(
        &mut store,
        RunRequest {
            run_id: id,
            key,
            recipe,
            start,
            dir,
            reporter: &o.reporter,
            stop: crate::engine::signals::stop_flag(),
            until_epoch: None,
            early_stop: None,
        },
    );
    print_outcome(&store, id, &o)?;
    outcome_code(&outcome)
}
