//! `runner run`, `runner sweep` and `runner resume`: training from recipes and checkpoints.

use std::path::Path;

use super::output::{print_json, Format};
use super::{parse_sets, CliError, Global};
use crate::engine::executor::{new_run, start_for, Heartbeat, STALE_AFTER};
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
    let runs = if super::plan::is_search(recipe, &sets)? {
        crate::plan::plan_search_point(
            recipe,
            &super::parse_sets(&sets)?,
            &crate::data::fingerprint_for,
        )?
    } else {
        super::plan::plan_recipe(recipe, &sets)?
    };
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
