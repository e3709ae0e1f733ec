//! Row types of the store.

use rusqlite::Row;
use serde::{Deserialize, Serialize};

/// A run's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Done,
    Failed,
    Diverged,
    Interrupted,
    /// Handed to Slurm by `runner sweep --executor slurm`: its task writes records into the
    /// run's folder and `runner collect` imports them. Busy for every other command.
    Submitted,
    /// Reached its rung of a halving sweep (`[sweep.prune]`) and waits for the rung's decision;
    /// its rung checkpoint is kept, so the sweep (or `resume`) continues it exactly.
    Paused,
    /// Stopped for good by `[sweep.prune]`, at the rung and epoch its `rungs` rows record; its
    /// checkpoint there is kept (a sweep without `[sweep.prune]` continues it).
    Pruned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Done => "done",
            RunStatus::Failed => "failed",
            RunStatus::Diverged => "diverged",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Submitted => "submitted",
            RunStatus::Paused => "paused",
            RunStatus::Pruned => "pruned",
        }
    }
    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "done" => RunStatus::Done,
            "failed" => RunStatus::Failed,
            "diverged" => RunStatus::Diverged,
            "interrupted" => RunStatus::Interrupted,
            "submitted" => RunStatus::Submitted,
            "paused" => RunStatus::Paused,
            "pruned" => RunStatus::Pruned,
            _ => return None,
        })
    }
}

/// How reading commands show a `running` run whose process is gone.
pub const STALE_STATUS: &str = "interrupted (stale)";

/// What is known of a run before it starts.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub key: String,
    /// The recipe file it came from.
    pub recipe: String,
    /// The resolved configuration (JSON).
    pub config: serde_json::Value,
    /// The swept values (JSON object).
    pub overrides: serde_json::Value,
    pub data_fingerprint: String,
    pub sweep_id: Option<i64>,
    pub parent_id: Option<i64>,
    pub resumed_from: Option<String>,
}

pub(crate) const RUN_COLUMNS: &str = "id, key, recipe, config, overrides, status, created, started, \
     finished, error, host, version, data_fingerprint, sweep_id, parent_id, resumed_from, pid, heartbeat, \
     init_from_run, init_from_checkpoint, slurm_job_id, slurm_task_id, slurm_log, records_path, \
     records_offset, slurm_sweep_id, dir, pid_start";

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub key: String,
    pub recipe: String,
    pub config: serde_json::Value,
    pub overrides: serde_json::Value,
    pub status: String,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub error: Option<String>,
    pub host: Option<String>,
    pub version: Option<String>,
    pub data_fingerprint: Option<String>,
    pub sweep_id: Option<i64>,
    pub parent_id: Option<i64>,
    pub resumed_from: Option<String>,
    pub pid: Option<i64>,
    pub heartbeat: Option<String>,
    /// The run whose checkpoint this one started from (`model.init_from = { recipe = ... }`).
    pub init_from_run: Option<i64>,
    pub init_from_checkpoint: Option<String>,
    /// The Slurm job (array) and task that train a submitted run, and the task's output file.
    pub slurm_job_id: Option<i64>,
    pub slurm_task_id: Option<i64>,
    pub slurm_log: Option<String>,
    /// The record log in the run's folder that its Slurm task appends to, and how many of
    /// its bytes `runner collect` has imported.
    pub records_path: Option<String>,
    pub records_offset: i64,
    /// The sweep that last submitted it to Slurm.
    pub slurm_sweep_id: Option<i64>,
    /// The run's folder (checkpoints; a Slurm task's record log), unique to this store.
    pub dir: Option<String>,
    /// The start time (clock ticks after boot, `/proc/<pid>/stat`) of the process that
    /// claimed the run: with `pid`, it tells a live claimant from a reused pid.
    pub pid_start: Option<i64>,
}

impl RunRow {
    pub(crate) fn from_row(r: &Row) -> rusqlite::Result<RunRow> {
        let json = |s: String| serde_json::from_str(&s).unwrap_or(serde_json::Value::Null);
        Ok(RunRow {
            id: r.get(0)?,
            key: r.get(1)?,
            recipe: r.get(2)?,
            config: json(r.get(3)?),
            overrides: json(r.get(4)?),
            status: r.get(5)?,
            created: r.get(6)?,
            started: r.get(7)?,
            finished: r.get(8)?,
            error: r.get(9)?,
            host: r.get(10)?,
            version: r.get(11)?,
            data_fingerprint: r.get(12)?,
            sweep_id: r.get(13)?,
            parent_id: r.get(14)?,
            resumed_from: r.get(15)?,
            pid: r.get(16)?,
            heartbeat: r.get(17)?,
            init_from_run: r.get(18)?,
            init_from_checkpoint: r.get(19)?,
            slurm_job_id: r.get(20)?,
            slurm_task_id: r.get(21)?,
            slurm_log: r.get(22)?,
            records_path: r.get(23)?,
            records_offset: r.get(24)?,
            slurm_sweep_id: r.get(25)?,
            dir: r.get(26)?,
            pid_start: r.get(27)?,
        })
    }

    pub fn status(&self) -> Option<RunStatus> {
        RunStatus::parse(&self.status)
    }

    /// Whether the run says `running` but its process is gone: on this host, the process
    /// (pid and start time) no longer exists; on another, its heartbeat is older than
    /// `STALE_AFTER`. Submitted runs are never stale (their Slurm task holds them).
    pub fn is_stale(&self) -> bool {
        self.status == "running"
            && super::lifecycle::claimant_gone(
                self.host.as_deref(),
                self.pid,
                self.pid_start,
                self.heartbeat.as_deref(),
            )
    }

    /// The status as reading commands show it: a stale `running` run is
    /// `interrupted (stale)` (nothing is written; the next `sweep`, `run` or `resume` of it
    /// continues it).
    pub fn shown_status(&self) -> String {
        if self.is_stale() {
            STALE_STATUS.to_string()
        } else {
            self.status.clone()
        }
    }
}

/// One epoch's metrics (names as in the contract).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_acc: Option<f64>,
    pub images_per_sec: f64,
    pub seconds: f64,
    /// Where the epoch's wall time went (absent for epochs recorded before store version 6).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub phase_seconds: Option<PhaseSeconds>,
}

/// An epoch's wall time by phase, in seconds. The phases do not overlap: `train` is the
/// training steps without the time spent waiting for the loader (`loader_wait`, training and
/// dev loaders both), `eval` the dev pass without its loader wait, `verify` the open-set
/// verification, `checkpoint` writing and deleting checkpoint files, `store` the run's
/// records (database or Slurm record log). The epoch's `seconds` covers training, dev and
/// verification (the first four); checkpoints and records come after it. Progress output, the
/// scheduler and the divergence check of the weights are in no phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSeconds {
    pub train: f64,
    pub eval: f64,
    pub verify: f64,
    pub checkpoint: f64,
    pub store: f64,
    pub loader_wait: f64,
}

impl PhaseSeconds {
    /// The names of the phases, in the order `show` prints them.
    pub const NAMES: [&'static str; 6] = [
        "train",
        "loader_wait",
        "eval",
        "verify",
        "checkpoint",
        "store",
    ];

    /// The phases' values, in the order of `NAMES`.
    pub fn values(&self) -> [f64; 6] {
        [
            self.train,
            self.loader_wait,
            self.eval,
            self.verify,
            self.checkpoint,
            self.store,
        ]
    }

    pub fn total(&self) -> f64 {
        self.values().iter().sum()
    }
}

impl EpochMetrics {
    pub(crate) fn from_row(r: &Row) -> rusqlite::Result<EpochMetrics> {
        Ok(EpochMetrics {
            epoch: r.get(0)?,
            lr: r.get::<_, Option<f64>>(1)?.unwrap_or(f64::NAN),
            train_loss: r.get::<_, Option<f64>>(2)?.unwrap_or(f64::NAN),
            train_acc: r.get::<_, Option<f64>>(3)?.unwrap_or(f64::NAN),
            val_loss: r.get(4)?,
            val_acc: r.get(5)?,
            verify_acc: r.get(6)?,
            images_per_sec: r.get::<_, Option<f64>>(7)?.unwrap_or(0.0),
            seconds: r.get::<_, Option<f64>>(8)?.unwrap_or(0.0),
            // written by this program as JSON; anything else reads as "not measured"
            phase_seconds: r
                .get::<_, Option<String>>(9)?
                .and_then(|t| serde_json::from_str(&t).ok()),
        })
    }

    /// The value of a metric by its contract name.
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "lr" => Some(self.lr),
            "train_loss" => Some(self.train_loss),
            "train_acc" => Some(self.train_acc),
            "val_loss" => self.val_loss,
            "val_acc" => self.val_acc,
            "verify_acc" => self.verify_acc,
            "images_per_sec" => Some(self.images_per_sec),
            _ => None,
        }
    }
}

/// A checkpoint file of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointRecord {
    #[serde(skip)]
    pub run_id: i64,
    pub epoch: u32,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric_name: Option<String>,
    pub metric: Option<f64>,
    pub kept: bool,
}

impl CheckpointRecord {
    pub(crate) fn from_row(r: &Row) -> rusqlite::Result<CheckpointRecord> {
        Ok(CheckpointRecord {
            run_id: r.get(0)?,
            epoch: r.get(1)?,
            path: r.get(2)?,
            metric_name: r.get(3)?,
            metric: r.get(4)?,
            kept: r.get::<_, i64>(5)? != 0,
        })
    }
}

/// An image a run skipped as unreadable (`data.on_bad_image = "skip"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedImageRecord {
    pub path: String,
    pub error: String,
    /// The epoch it was first met in.
    pub epoch: u32,
}

/// A verification score of a run at an epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerificationRecord {
    #[serde(skip)]
    pub run_id: i64,
    pub epoch: u32,
    pub split: String,
    pub metric: String,
    /// The decision threshold; +-infinity when tuning found accepting (or rejecting) every
    /// unknown best (JSON: "inf" / "-inf", as `eval` prints it).
    #[serde(serialize_with = "number_or_infinity")]
    pub threshold: Option<f64>,
    pub accuracy: f64,
    pub accuracy_known: Option<f64>,
    pub impostor_rejection: Option<f64>,
    /// The scores behind it (recorded in `verification_scores`; read with
    /// `Store::score_distributions`, not with the record).
    #[serde(skip)]
    pub distribution: Option<crate::verify::ScoreDistribution>,
}

impl VerificationRecord {
    pub(crate) fn from_row(r: &Row) -> rusqlite::Result<VerificationRecord> {
        Ok(VerificationRecord {
            run_id: r.get(0)?,
            epoch: r.get(1)?,
            split: r.get(2)?,
            metric: r.get(3)?,
            threshold: r.get(4)?,
            accuracy: r.get(5)?,
            accuracy_known: r.get(6)?,
            impostor_rejection: r.get(7)?,
            distribution: None,
        })
    }
}

/// A number as JSON, and +-infinity (which JSON lacks) as the text "inf" / "-inf".
fn number_or_infinity<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) => f64_or_infinity(x, s),
        None => s.serialize_none(),
    }
}

/// [`number_or_infinity`] for a plain `f64` (thresholds that may be +-infinity).
pub(crate) fn f64_or_infinity<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_infinite() {
        s.serialize_str(&v.to_string())
    } else {
        s.serialize_f64(*v)
    }
}

/// A run's leaderboard row: one epoch of it (`Store::leaderboard_rows`), or its per-metric
/// extremes over epochs (`Store::best_over_epochs_rows`, where `epoch` is `None`).
#[derive(Debug, Clone)]
pub struct LeaderRow {
    pub id: i64,
    pub key: String,
    /// As reading commands show it (`interrupted (stale)` for a running run whose process
    /// is gone).
    pub status: String,
    pub recipe: String,
    pub sweep_id: Option<i64>,
    pub overrides: serde_json::Value,
    /// The resolved configuration as stored (JSON text), parsed only when needed.
    pub config_text: String,
    /// The metrics by name: at the row's epoch, or the extremes over epochs.
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// The row's epoch.
    pub epoch: Option<u32>,
    /// The kept checkpoint of that epoch (absent: the run has no kept checkpoint with the
    /// ranking metric, and the row is its last epoch).
    pub checkpoint: Option<String>,
    /// How many epochs the run recorded.
    pub epochs: i64,
}

/// The outcome of claiming a run key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This process holds the run now; `resumed` when it had started before.
    Claimed { id: i64, resumed: bool },
    /// The key already finished successfully.
    Done(i64),
    /// Another live process is running it.
    Busy(i64),
    /// It is submitted to Slurm (`runner collect` imports what its task records).
    Submitted(i64),
    /// It failed or diverged (and retrying was not asked for).
    Finished { id: i64, status: RunStatus },
}

/// The outcome of handing a run key to Slurm (`Store::submit_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// The run is `submitted` now; `previous` is its status before (None for a new run).
    Submitted {
        id: i64,
        previous: Option<RunStatus>,
    },
    /// The key already finished successfully.
    Done(i64),
    /// A live local process is training it.
    Busy(i64),
    /// Already submitted (and not collected as ended).
    AlreadySubmitted(i64),
    /// It failed or diverged (and retrying was not asked for).
    Finished { id: i64, status: RunStatus },
}

/// One record of a run's history, as a run writes it (to the store, or to its folder's log
/// that `runner collect` replays with `Store::apply_records`).
#[derive(Debug, Clone, PartialEq)]
pub enum RecordOp {
    Epoch(EpochMetrics),
    Verification(VerificationRecord),
    /// The dev predictions at an epoch whose checkpoint is kept.
    DevPredictions(super::DevPredictions),
    Checkpoint(CheckpointRecord),
    /// The end-of-epoch checkpoint of this epoch was deleted.
    CheckpointDeleted {
        epoch: u32,
    },
    /// The checkpoint file at this path was deleted.
    CheckpointDeletedPath {
        path: String,
    },
    /// Epochs after this one are recomputed (a resume from an earlier checkpoint).
    TruncateEpochs {
        after: u32,
    },
    SkippedImages {
        epoch: u32,
        images: Vec<(String, String)>,
    },
    InitFrom {
        run: i64,
        checkpoint: String,
    },
    /// Where an epoch's time went (written after the epoch's other records).
    Phases {
        epoch: u32,
        phases: PhaseSeconds,
    },
    /// The device the run trains on and its thread count.
    Device {
        device: String,
        threads: usize,
    },
    /// A Slurm task started the run on `host` at `at`.
    Started {
        host: String,
        at: String,
    },
}
