//! `runner sweep RECIPE`: plans the recipe, checks the options and the data, trains the runs
//! not done (here one after another, rung by rung under halving, or in child processes with
//! `--jobs`), and prints the summary and the leaderboard of the sweep.

use std::path::Path;

use super::output::{cell, fmt_num, print_json, table, Format};
use super::train::{done_keys, with_device, TrainOpts};
use super::{parse_sets, CliError, Global};
use crate::engine::executor::{Executor, LocalExecutor, SummaryRow, SweepOptions};
use crate::engine::preflight::Preflight;
use crate::store::Store;

/// `runner sweep RECIPE`.
pub fn run(
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
    if let Some(search) = super::plan::search_of(recipe, &sets)? {
        return run_search(g, recipe, &sets, opts, runs, search, o);
    }
    let opts = &checked_options(recipe, &sets, opts, &runs, &o)?;
    check_data(g, recipe, &sets, &runs, &o.reporter)?;
    let mut store = Store::open(&g.db)?;
    let started = std::time::Instant::now();
    let rows = execute(g, recipe, &sets, &runs, opts, &mut store, &o)?;
    print_summary(g, &store, &runs, &rows, &o, started)?;
    exit_status(&rows, opts)
}

/// `runner sweep` of a search (`sweep.mode = "tpe"`): its trials proposed and trained batch by
/// batch (B = `--jobs`, else 1; a study keeps the B it started with).
fn run_search(
    g: &Global,
    recipe: &Path,
    sets: &[String],
    opts: &SweepOptions,
    parents: Vec<crate::plan::PlannedRun>,
    mut search: crate::plan::search::Search,
    o: TrainOpts,
) -> Result<(), CliError> {
    let mut opts = opts.clone();
    opts.prune = prune_plan(recipe, sets)?;
    if opts.jobs.is_some() && opts.prune.is_some() {
        return Err(CliError::invalid(
            "--jobs does not combine with [sweep.prune] in this version: drop one (--set sweep.prune.kind=none trains every trial in full)",
        ));
    }
    let batch = opts.jobs.as_ref().map_or(1, |j| j.jobs);
    let mut store = Store::open(&g.db)?;
    if let Some(b) = store.find_study(&search.study_key)?.map(|s| s.batch) {
        if b as usize != batch {
            let how = if b == 1 {
                "without --jobs".to_string()
            } else {
                format!("with --jobs {b}")
            };
            return Err(CliError::invalid(format!(
                "this TPE study proposes its trials in batches of {b} (trial k sees only the batches before its own): continue it {how}, or start another study (another sweep.seed)"
            )));
        }
    }
    // the data: the parents' and a first trial's (the data is the same for every trial unless
    // a data key is swept, and each run checks its own)
    let mut check = parents.clone();
    let first = crate::plan::sampler::Sampler::propose(&search.sampler(), 0, &[]);
    check.push(search.planned(0, &first, &crate::data::fingerprint_for)?);
    check_data(g, recipe, sets, &check, &o.reporter)?;
    let started = std::time::Instant::now();
    let stop = crate::engine::signals::stop_flag();
    let recipe_text = recipe.display().to_string();
    // with --jobs, each trial of a batch in a child process on a slot; else here
    let jobs = opts.jobs.as_ref().map(job_slots).transpose()?;
    let exe = jobs.as_ref().map(|(_, e)| e.clone()).unwrap_or_default();
    let command = |run: &crate::plan::PlannedRun,
                   slot: &crate::engine::executor::parallel::Slot| {
        child_run_command(&exe, g, recipe, sets, run, slot)
    };
    let execution = match &jobs {
        Some((slots, _)) => crate::engine::executor::search::BatchExecution::Children {
            slots,
            command: &command,
        },
        None => crate::engine::executor::search::BatchExecution::Here,
    };
    let outcome = crate::engine::executor::search::execute_search(
        &mut store,
        &recipe_text,
        &parents,
        &mut search,
        &crate::data::fingerprint_for,
        batch,
        execution,
        &opts,
        &o.reporter,
        stop,
    )
    .map_err(CliError::failed)?;
    print_summary(g, &store, &outcome.runs, &outcome.outcome.rows, &o, started)?;
    exit_status(&outcome.outcome.rows, &opts)
}

/// The sweep's options with its `[sweep.prune]`, refusing the combinations this version does
/// not run (status 2), and warning about a first rung inside the warm-up.
fn checked_options(
    recipe: &Path,
    sets: &[String],
    opts: &SweepOptions,
    runs: &[crate::plan::PlannedRun],
    o: &TrainOpts,
) -> Result<SweepOptions, CliError> {
    let mut opts = opts.clone();
    opts.prune = prune_plan(recipe, sets)?;
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
    Ok(opts)
}

/// The device slots of `--jobs` (the cores split among CPU jobs) and this binary, which the
/// children run.
fn job_slots(
    j: &crate::engine::executor::JobsOptions,
) -> Result<
    (
        Vec<crate::engine::executor::parallel::Slot>,
        std::path::PathBuf,
    ),
    CliError,
> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slots =
        crate::engine::executor::parallel::slots(j.jobs, &j.devices, j.threads_per_run, cores)
            .map_err(CliError::invalid)?;
    let exe = std::env::current_exe().map_err(CliError::failed)?;
    Ok((slots, exe))
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

/// Trains the runs: in child processes on slots with `--jobs`, else here (one after another,
/// or rung by rung under halving).
fn execute(
    g: &Global,
    recipe: &Path,
    sets: &[String],
    runs: &[crate::plan::PlannedRun],
    opts: &SweepOptions,
    store: &mut Store,
    o: &TrainOpts,
) -> Result<Vec<SummaryRow>, CliError> {
    let rows = match &opts.jobs {
        Some(j) => {
            let (slots, exe) = job_slots(j)?;
            let command =
                |run: &crate::plan::PlannedRun, slot: &crate::engine::executor::parallel::Slot| {
                    child_run_command(&exe, g, recipe, sets, run, slot)
                };
            crate::engine::executor::parallel::execute_parallel(
                store,
                &recipe.display().to_string(),
                runs,
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
                .run_sweep(store, &recipe.display().to_string(), runs, &o.reporter)
                .map_err(CliError::failed)?
                .rows
        }
    };
    Ok(rows)
}

/// The sweep's summary: a row per planned run (JSON: one object each) and, in a table, the
/// counts and the leaderboard of the runs it planned.
fn print_summary(
    g: &Global,
    store: &Store,
    runs: &[crate::plan::PlannedRun],
    rows: &[SummaryRow],
    o: &TrainOpts,
    started: std::time::Instant,
) -> Result<(), CliError> {
    let pipeline = runs.iter().any(|r| !r.target);
    let swept: Vec<String> = runs
        .iter()
        .find(|r| r.target)
        .map(|r| r.overrides.keys().cloned().collect())
        .unwrap_or_default();
    let mut best = Vec::new();
    for r in rows {
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
        let worked = rows.iter().filter(|r| r.worked()).count();
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
    Ok(())
}

/// Exit 130 when interrupted, 1 when a run failed or diverged, else 0.
fn exit_status(rows: &[SummaryRow], opts: &SweepOptions) -> Result<(), CliError> {
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

/// `runner sweep RECIPE --clean-pruned`: deletes the checkpoint files of the planned runs that a
/// pruned sweep stopped (status `pruned`), marking them deleted in the store; their epochs and
/// rung decisions stay. Prints how many files and bytes went.
pub fn clean_pruned(
    g: &Global,
    recipe: &Path,
    sets: &[String],
    format: Format,
    reporter: &crate::engine::progress::Reporter,
) -> Result<(), CliError> {
    let runs = super::plan::plan_recipe(recipe, sets)?;
    let mut store = super::runs::open_store(g)?;
    let (mut files, mut bytes, mut cleaned) = (0usize, 0u64, Vec::new());
    for run in runs.iter().filter(|r| r.target) {
        let Some(row) = store.run_by_key(&run.key)? else {
            continue;
        };
        if row.status() != Some(crate::store::RunStatus::Pruned) {
            continue;
        }
        let mut removed = 0;
        for c in store.checkpoints(row.id)?.into_iter().filter(|c| c.kept) {
            let path = Path::new(&c.path);
            let size = std::fs::metadata(path).map(|m| m.len()).ok();
            match std::fs::remove_file(path) {
                Ok(()) => {
                    files += 1;
                    bytes += size.unwrap_or(0);
                    removed += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(CliError::failed(format!("{}: {e}", path.display())));
                }
            }
            store.mark_checkpoint_deleted_path(row.id, &c.path)?;
        }
        cleaned.push(serde_json::json!({"id": row.id, "key": row.key, "files": removed}));
    }
    if format == Format::Json {
        print_json(&serde_json::json!({
            "runs": cleaned, "files": files, "bytes": bytes,
        }));
    } else {
        reporter.info(&format!(
            "deleted {files} checkpoint file(s) ({:.1} MiB) of {} pruned run(s)",
            bytes as f64 / (1024.0 * 1024.0),
            cleaned.len()
        ));
    }
    Ok(())
}

/// The data of every planned run not done, checked before any run row exists (the built-in set
/// generated here, once), with the notices and warnings said: `sweep`, local or on Slurm.
pub(crate) fn check_data(
    g: &Global,
    recipe: &Path,
    sets: &[String],
    runs: &[crate::plan::PlannedRun],
    reporter: &crate::engine::progress::Reporter,
) -> Result<(), CliError> {
    let mut preflight = Preflight::with_reporter(reporter);
    let done = done_keys(g, runs.iter().map(|r| r.key.as_str()))?;
    for r in runs.iter().filter(|r| !done.contains(&r.key)) {
        preflight
            .check(&r.recipe)
            .map_err(|e| super::preflight_error(recipe, sets, e))?;
    }
    for n in preflight.generated_notices() {
        reporter.info(&n);
    }
    for w in preflight.take_warnings() {
        reporter.warn(&w);
    }
    Ok(())
}
