//! The Slurm executor: a sweep handed to a Slurm cluster as job arrays, one task per run.
//!
//! On the submitting machine, `runner sweep --executor slurm` collects what earlier tasks
//! wrote, marks the runs left `submitted` in the store (so they get their ids and folders),
//! writes a snapshot of what the store holds of each into the run folder's record log, a
//! manifest of the runs and an sbatch script per array, and submits them with `sbatch
//! --parsable` (a pipeline's parents first, their children `--dependency=afterok` on them).
//! Each task runs `runner exec` (`exec.rs`), which trains its run with the run folder's log
//! as its records; `runner collect` (`collect.rs`) imports the logs into the store. The
//! store stays the only SQL writer, on the submitting machine: SQLite's locking does not
//! survive shared file systems.

pub mod client;
pub mod collect;
pub mod exec;
pub mod manifest;
pub mod rungs;
pub mod script;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{new_run, Executor, SummaryRow, SweepOutcome, STALE_AFTER};
use crate::engine::progress::Reporter;
use crate::engine::runlog::{self, InitSource, LogCheckpoint, LogEvent};
use crate::engine::EngineError;
use crate::plan::PlannedRun;
use crate::recipe::SlurmConfig;
use crate::store::{RunStatus, Store, Submit};

pub use client::SlurmClient;
use manifest::{Manifest, ManifestRun, MANIFEST_VERSION};
use script::ScriptSpec;

/// Errors of the Slurm executor; `is_invalid_input` tells the user's input (exit status 2,
/// nothing submitted) from a failure at run time (1).
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "`sbatch` is not on PATH: run `runner sweep --executor slurm` on a machine with the Slurm \
         client (a cluster's login node), or put it on PATH (often `module load slurm`); \
         `--dry-run` prints the script without it"
    )]
    NoSbatch,
    #[error(
        "unknown Slurm partition `{partition}`: this cluster has {known} (`sinfo -s` lists them); \
         pass --partition NAME or set `partition` in the recipe's [slurm] table"
    )]
    UnknownPartition { partition: String, known: String },
    #[error(
        "cannot write run folders under {dir}: {msg}; set `checkpoint.dir` (or run from a folder) \
         that this user can write and that the compute nodes share"
    )]
    Unwritable { dir: PathBuf, msg: String },
    #[error("sbatch refuses the job array: {0} (check --partition, --time, --mem, --gpus-per-run, --sbatch-arg)")]
    Refused(String),
    #[error("sbatch failed: {0}")]
    Submit(String),
    #[error("{command}: {msg}")]
    Command { command: String, msg: String },
    #[error("{path}: {msg}")]
    Manifest { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
}

impl SlurmError {
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            SlurmError::NoSbatch
                | SlurmError::UnknownPartition { .. }
                | SlurmError::Unwritable { .. }
                | SlurmError::Refused(_)
                | SlurmError::Manifest { .. }
                | SlurmError::Invalid(_)
        )
    }
}

/// The `[slurm]` table of a recipe with the command line's options over it.
pub fn merge_options(recipe: Option<&SlurmConfig>, flags: &SlurmConfig) -> SlurmConfig {
    let mut o = recipe.cloned().unwrap_or_default();
    if flags.partition.is_some() {
        o.partition = flags.partition.clone();
    }
    if flags.gpus_per_run.is_some() {
        o.gpus_per_run = flags.gpus_per_run;
    }
    if flags.cpus_per_run.is_some() {
        o.cpus_per_run = flags.cpus_per_run;
    }
    if flags.mem.is_some() {
        o.mem = flags.mem.clone();
    }
    if flags.time.is_some() {
        o.time = flags.time.clone();
    }
    if flags.max_parallel.is_some() {
        o.max_parallel = flags.max_parallel;
    }
    o.sbatch_args.extend(flags.sbatch_args.iter().cloned());
    o.setup.extend(flags.setup.iter().cloned());
    o
}

/// Where a sweep's manifests, scripts and task output files go: `<checkpoint.dir>/slurm/
/// <folder>/` (`sweep-<id>-<store folder tag>`, `Store::sweep_folder_name`), beside the run
/// folders (both must be on a file system the nodes share).
pub fn sweep_dir(workdir: &Path, runs: &[PlannedRun], sweep: &str) -> PathBuf {
    let ckpt = runs
        .iter()
        .find(|r| r.target)
        .or(runs.first())
        .map(|r| r.recipe.checkpoint.dir.clone())
        .unwrap_or_else(|| "runs".into());
    workdir.join(ckpt).join("slurm").join(sweep)
}

/// A run to submit, with the array (level) it goes in: 0 for runs that start from nothing
/// being submitted now, k + 1 for the children of a run at level k.
#[derive(Clone)]
struct ToSubmit<'r> {
    /// Its row in the summary.
    row: usize,
    run: &'r PlannedRun,
    id: i64,
    previous: Option<RunStatus>,
    level: usize,
    init_from: Option<InitSource>,
    /// Its record log.
    records: String,
}

/// Hands a sweep's runs to Slurm.
pub struct SlurmExecutor {
    pub opts: SlurmConfig,
    pub retry_failed: bool,
    pub max_runs: Option<usize>,
    pub client: SlurmClient,
    /// The runner binary the tasks run (this one: it must be on a shared path).
    pub exe: PathBuf,
    /// The working directory the tasks run in (this one).
    pub workdir: PathBuf,
    /// Halving: the rung epoch every run of this submission trains to (None: to the end).
    pub until_epoch: Option<u32>,
    /// Halving: submit `paused` (promoted) runs too, continuing from their rung checkpoints.
    pub continue_stopped: bool,
    /// The sweep to record the submission under (None: a new one).
    pub sweep_id: Option<i64>,
}

impl SlurmExecutor {
    /// The checks before anything is recorded or submitted: the partition exists, the run
    /// folders can be written, and `sbatch --test-only` accepts the options.
    pub fn check(&self, runs: &[PlannedRun]) -> Result<(), SlurmError> {
        if let Some(p) = &self.opts.partition {
            let known = self.client.partitions()?;
            if !known.iter().any(|k| k == p) {
                return Err(SlurmError::UnknownPartition {
                    partition: p.clone(),
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                });
            }
        }
        let mut dirs: Vec<PathBuf> = runs
            .iter()
            .map(|r| self.workdir.join(&r.recipe.checkpoint.dir))
            .collect();
        dirs.dedup();
        for dir in dirs {
            probe_writable(&dir)?;
        }
        let dir = sweep_dir(&self.workdir, runs, "sweep-N");
        let text = script::render(&ScriptSpec {
            sweep_id: 0,
            recipe: "",
            tasks: runs.len().max(1),
            opts: &self.opts,
            dir: &dir,
            workdir: &self.workdir,
            exe: &self.exe,
            manifest: &dir.join("array-0.json"),
            dependency: None,
        });
        self.client.test_only(&text).map_err(SlurmError::Refused)
    }

    /// The scripts `run_sweep` would submit (for `--dry-run`), from the store's statuses
    /// (nothing is written): a text with each array's runs and script.
    pub fn dry_run(
        &self,
        store: Option<&Store>,
        runs: &[PlannedRun],
    ) -> Result<String, EngineError> {
        let status = |key: &str| -> Result<Option<RunStatus>, EngineError> {
            Ok(match store {
                Some(s) => s.status_of_key(key)?,
                None => None,
            })
        };
        let mut levels: BTreeMap<String, usize> = BTreeMap::new();
        let mut arrays: Vec<Vec<&PlannedRun>> = Vec::new();
        let mut submitted = 0usize;
        for run in runs {
            if self.max_runs.is_some_and(|m| submitted >= m) {
                break;
            }
            let s = status(&run.key)?;
            let wanted = match s {
                None | Some(RunStatus::Queued) | Some(RunStatus::Interrupted) => true,
                Some(RunStatus::Failed) | Some(RunStatus::Diverged) => self.retry_failed,
                _ => false,
            };
            if !wanted {
                continue;
            }
            let level = match run.parent_key() {
                Some(k) => match levels.get(k) {
                    Some(l) => l + 1,
                    None if status(k)? == Some(RunStatus::Done) => 0,
                    None => continue,
                },
                None => 0,
            };
            levels.insert(run.key.clone(), level);
            if arrays.len() <= level {
                arrays.resize_with(level + 1, Vec::new);
            }
            arrays[level].push(run);
            submitted += 1;
        }
        if arrays.is_empty() {
            return Ok("nothing to submit: every run is done, submitted or failed\n".into());
        }
        let dir = sweep_dir(&self.workdir, runs, "sweep-NEW");
        let mut out = String::new();
        for (level, array) in arrays.iter().enumerate() {
            out.push_str(&format!(
                "# array {level}: {} run(s): {}\n",
                array.len(),
                array
                    .iter()
                    .map(|r| r.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            out.push_str(&script::render(&ScriptSpec {
                sweep_id: 0,
                recipe: &array[0].recipe_path.display().to_string(),
                tasks: array.len(),
                opts: &self.opts,
                dir: &dir,
                workdir: &self.workdir,
                exe: &self.exe,
                manifest: &dir.join(format!("array-{level}.json")),
                dependency: (level > 0).then(|| format!("afterok:JOB_OF_ARRAY_{}", level - 1)),
            }));
            out.push('\n');
        }
        Ok(out)
    }

    /// Decides what becomes of each planned run and marks those to submit `submitted`.
    fn mark<'r>(
        &self,
        store: &mut Store,
        sweep_id: i64,
        runs: &'r [PlannedRun],
        rows: &mut Vec<SummaryRow>,
    ) -> Result<Vec<ToSubmit<'r>>, EngineError> {
        let mut out: Vec<ToSubmit> = Vec::new();
        let mut level_of: BTreeMap<String, (usize, i64, String)> = BTreeMap::new();
        for run in runs {
            let mut row = SummaryRow::planned(sweep_id, run);
            if self.max_runs.is_some_and(|m| out.len() >= m) {
                not_started(store, &mut row, "--max-runs".into())?;
                rows.push(row);
                continue;
            }
            // a run that starts from another: its parent is done, or submitted with it
            let (level, init_from) = match run.parent_key() {
                None => (0, None),
                Some(k) => match level_of.get(k) {
                    Some((l, pid, records)) => (
                        l + 1,
                        Some(InitSource::Log {
                            run_id: *pid,
                            records: records.clone(),
                            mode: parent_mode(runs, k),
                        }),
                    ),
                    None => match store.run_by_key(k)? {
                        Some(p) if p.status() == Some(RunStatus::Done) => {
                            let link = run
                                .recipe
                                .model
                                .init_from
                                .as_ref()
                                .and_then(|i| i.run())
                                .cloned();
                            let resolved = match link {
                                Some(link) => crate::engine::picks::init_checkpoint(store, &link),
                                None => Err(EngineError::Other("no parent link".into())),
                            };
                            match resolved {
                                Ok((pid, path)) => (
                                    0,
                                    Some(InitSource::Checkpoint {
                                        run_id: pid,
                                        path: path.display().to_string(),
                                    }),
                                ),
                                Err(e) => {
                                    not_started(store, &mut row, e.to_string())?;
                                    rows.push(row);
                                    continue;
                                }
                            }
                        }
                        Some(p) => {
                            not_started(
                                store,
                                &mut row,
                                format!("parent run {} {}", p.id, p.status),
                            )?;
                            rows.push(row);
                            continue;
                        }
                        None => {
                            not_started(store, &mut row, "parent not trained".into())?;
                            rows.push(row);
                            continue;
                        }
                    },
                },
            };
            let record = new_run(&run.recipe_path.display().to_string(), run, Some(sweep_id));
            let submit = store.submit_key_continuing(
                &record,
                STALE_AFTER,
                self.retry_failed,
                self.continue_stopped,
            )?;
            let id = match submit {
                Submit::Submitted { id, .. }
                | Submit::Done(id)
                | Submit::Busy(id)
                | Submit::AlreadySubmitted(id)
                | Submit::Finished { id, .. } => id,
            };
            if run.target {
                store.add_to_sweep(sweep_id, id)?;
            }
            row.run_id = Some(id);
            match submit {
                Submit::Submitted { previous, .. } => {
                    row.status = RunStatus::Submitted.as_str().into();
                    let existing = store.run(id)?.records_path;
                    let records = match existing {
                        Some(p) => p,
                        None => store
                            .run_dir(id)?
                            .join(runlog::LOG_FILE)
                            .display()
                            .to_string(),
                    };
                    level_of.insert(run.key.clone(), (level, id, records.clone()));
                    out.push(ToSubmit {
                        row: rows.len(),
                        run,
                        id,
                        previous,
                        level,
                        init_from,
                        records,
                    });
                }
                Submit::Done(_) => {
                    row.status = "done".into();
                    row.action = "skipped (done)".into();
                }
                Submit::Busy(_) => {
                    row.status = "running".into();
                    row.action = "skipped (running elsewhere)".into();
                }
                Submit::AlreadySubmitted(_) => {
                    let r = store.run(id)?;
                    row.status = r.status.clone();
                    row.action = match (r.slurm_job_id, r.slurm_task_id) {
                        (Some(j), Some(t)) => format!("skipped (submitted, job {j}_{t})"),
                        _ => "skipped (submitted)".into(),
                    };
                }
                Submit::Finished { status, .. } => {
                    row.status = status.as_str().into();
                    row.action = "skipped (use --retry-failed)".into();
                }
            }
            rows.push(row);
        }
        Ok(out)
    }

    /// Writes a run's snapshot into its log and records where the log is.
    fn prepare_log(&self, store: &mut Store, t: &ToSubmit) -> Result<(), EngineError> {
        let run = store.run(t.id)?;
        let snapshot = LogEvent::Snapshot {
            status: t
                .previous
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "new".into()),
            epochs: store.epochs(t.id)?.iter().map(Into::into).collect(),
            checkpoints: store
                .checkpoints(t.id)?
                .iter()
                .map(|c| LogCheckpoint {
                    epoch: c.epoch,
                    path: c.path.clone(),
                    metric_name: c.metric_name.clone(),
                    metric: c.metric,
                    kept: c.kept,
                })
                .collect(),
            parent_id: run.parent_id,
            resumed_from: run.resumed_from,
            at: crate::store::now(),
        };
        let offset = runlog::write_snapshot(Path::new(&t.records), &snapshot)?;
        store.set_records(t.id, &t.records, offset as i64)?;
        Ok(())
    }

    /// Takes back the submissions of `left` (sbatch refused them, or their files could not
    /// be written).
    fn take_back(store: &mut Store, left: &[ToSubmit], why: &str) {
        for t in left {
            let _ = store.unsubmit(t.id, t.previous, why);
        }
    }
}

/// Marks a summary row `not started (why)`, with the run's status in the store.
fn not_started(store: &Store, row: &mut SummaryRow, why: String) -> Result<(), EngineError> {
    row.action = format!("not started ({why})");
    if let Some(s) = store.status_of_key(&row.key)? {
        row.status = s.as_str().into();
    }
    Ok(())
}

/// A parent run's `checkpoint.mode` (its recipe is in the plan).
fn parent_mode(runs: &[PlannedRun], key: &str) -> crate::recipe::MetricMode {
    runs.iter()
        .find(|r| r.key == key)
        .map(|r| r.recipe.checkpoint.mode)
        .unwrap_or_default()
}

/// Creates `dir` and writes and removes a file in it.
fn probe_writable(dir: &Path) -> Result<(), SlurmError> {
    let fail = |e: std::io::Error| SlurmError::Unwritable {
        dir: dir.to_path_buf(),
        msg: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".runner-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

impl Executor for SlurmExecutor {
    fn run_sweep(
        &mut self,
        store: &mut Store,
        recipe_path: &str,
        runs: &[PlannedRun],
        reporter: &Reporter,
    ) -> Result<SweepOutcome, EngineError> {
        let targets = runs.iter().filter(|r| r.target).count();
        let sweep_id = match self.sweep_id {
            Some(id) => id,
            None => store.create_sweep(recipe_path, targets)?,
        };
        let mut rows = Vec::new();
        let marked = self.mark(store, sweep_id, runs, &mut rows)?;
        let mut outcome = SweepOutcome {
            sweep_id,
            rows,
            job_id: None,
        };
        if marked.is_empty() {
            return Ok(outcome);
        }
        let dir = sweep_dir(&self.workdir, runs, &store.sweep_folder_name(sweep_id));
        let levels = marked.iter().map(|t| t.level).max().unwrap_or(0) + 1;
        let mut previous_job: Option<i64> = None;
        for level in 0..levels {
            let array: Vec<&ToSubmit> = marked.iter().filter(|t| t.level == level).collect();
            let result = (|| -> Result<i64, EngineError> {
                let mut entries = Vec::new();
                for t in &array {
                    self.prepare_log(store, t)?;
                    entries.push(ManifestRun {
                        run_id: t.id,
                        key: t.run.key.clone(),
                        recipe_file: t.run.recipe_path.display().to_string(),
                        recipe: t.run.recipe.clone(),
                        records: t.records.clone(),
                        init_from: t.init_from.clone(),
                        until_epoch: self.until_epoch,
                    });
                }
                let manifest_path = dir.join(format!("array-{level}.json"));
                Manifest {
                    version: MANIFEST_VERSION,
                    sweep_id,
                    recipe: recipe_path.to_string(),
                    workdir: self.workdir.display().to_string(),
                    runs: entries,
                }
                .write(&manifest_path)?;
                let text = script::render(&ScriptSpec {
                    sweep_id,
                    recipe: recipe_path,
                    tasks: array.len(),
                    opts: &self.opts,
                    dir: &dir,
                    workdir: &self.workdir,
                    exe: &self.exe,
                    manifest: &manifest_path,
                    dependency: previous_job.map(|j| format!("afterok:{j}")),
                });
                let script_path = dir.join(format!("array-{level}.sbatch"));
                manifest::write_file(&script_path, &text)?;
                Ok(self.client.submit(&script_path)?)
            })();
            let job = match result {
                Ok(job) => job,
                Err(e) => {
                    let left: Vec<ToSubmit> = marked
                        .iter()
                        .filter(|t| t.level >= level)
                        .cloned()
                        .collect();
                    Self::take_back(store, &left, &format!("not submitted: {e}"));
                    return Err(e);
                }
            };
            let tasks: Vec<(i64, i64, String)> = array
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        t.id,
                        i as i64,
                        script::task_log(&dir, job, i as i64).display().to_string(),
                    )
                })
                .collect();
            store.record_submission(sweep_id, job, &tasks)?;
            for (i, t) in array.iter().enumerate() {
                outcome.rows[t.row].action = format!("submitted (job {job}_{i})");
            }
            reporter.info(&format!(
                "sweep {sweep_id}: submitted {} run(s) as Slurm job array {job}{} ({})",
                array.len(),
                previous_job
                    .map(|p| format!(", after job {p} (afterok)"))
                    .unwrap_or_default(),
                dir.join(format!("array-{level}.sbatch")).display()
            ));
            previous_job = Some(job);
        }
        outcome.job_id = previous_job;
        Ok(outcome)
    }
}
