//! The record log in a run's folder: what a Slurm task writes instead of the store (shared
//! file systems break SQLite's locking, so a task never opens `experiments.db`).
//!
//! `<run folder>/records.jsonl` holds one JSON object per line, appended and fsynced as each
//! record is made (so at least once per epoch): the epochs, checkpoints, verification scores
//! and skipped images the run would have written to the store, a `start` line per task
//! attempt (host, pid, Slurm job and task, restart count) and a `finish` line with the status
//! and exit code. The submitting machine writes a `snapshot` line first with what the store
//! holds of the run (a run interrupted on this machine and resumed on the cluster). Only
//! complete lines count: a line cut short by a kill is dropped when the log is next opened
//! for writing, and never read.
//!
//! `runner collect` replays the lines after the part it already imported into the store
//! (`Store::apply_records`, one transaction with the new offset), so importing twice, or while
//! the task still writes, neither duplicates nor loses a record.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::{Lineage, RunRecords};
use super::EngineError;
use crate::recipe::{InitFromRun, MetricMode};
use crate::store::{
    CheckpointRecord, DevPredictions, EpochMetrics, PackedDistribution, PhaseSeconds, RecordOp,
    RunStatus, VerificationRecord,
};
use crate::verify::ScoreDistribution;

/// The log's file name inside the run folder.
pub const LOG_FILE: &str = "records.jsonl";

/// Errors reading or writing a record log (each names the file).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a record of runner's run log: {msg}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// f64 as a JSON number, and the values JSON lacks (+-infinity, NaN) as text.
mod num {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_str(&v.to_string())
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(v) => Ok(v),
            NumOrText::Text(t) => t
                .parse::<f64>()
                .map_err(|_| serde::de::Error::custom(format!("not a number: {t}"))),
        }
    }

    pub mod opt {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(x) => super::serialize(x, s),
                None => s.serialize_none(),
            }
        }

        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super")] f64);

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

/// An epoch's metrics, as the log writes them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEpoch {
    pub epoch: u32,
    #[serde(with = "num")]
    pub lr: f64,
    #[serde(with = "num")]
    pub train_loss: f64,
    #[serde(with = "num")]
    pub train_acc: f64,
    #[serde(with = "num::opt", default)]
    pub val_loss: Option<f64>,
    #[serde(with = "num::opt", default)]
    pub val_acc: Option<f64>,
    #[serde(with = "num::opt", default)]
    pub verify_acc: Option<f64>,
    #[serde(with = "num")]
    pub images_per_sec: f64,
    #[serde(with = "num")]
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_seconds: Option<PhaseSeconds>,
}

impl From<&EpochMetrics> for LogEpoch {
    fn from(m: &EpochMetrics) -> Self {
        LogEpoch {
            epoch: m.epoch,
            lr: m.lr,
            train_loss: m.train_loss,
            train_acc: m.train_acc,
            val_loss: m.val_loss,
            val_acc: m.val_acc,
            verify_acc: m.verify_acc,
            images_per_sec: m.images_per_sec,
            seconds: m.seconds,
            phase_seconds: m.phase_seconds,
        }
    }
}

impl From<&LogEpoch> for EpochMetrics {
    fn from(m: &LogEpoch) -> Self {
        EpochMetrics {
            epoch: m.epoch,
            lr: m.lr,
            train_loss: m.train_loss,
            train_acc: m.train_acc,
            val_loss: m.val_loss,
            val_acc: m.val_acc,
            verify_acc: m.verify_acc,
            images_per_sec: m.images_per_sec,
            seconds: m.seconds,
            phase_seconds: m.phase_seconds,
        }
    }
}

/// A checkpoint file, as the log writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogCheckpoint {
    pub epoch: u32,
    pub path: String,
    #[serde(default)]
    pub metric_name: Option<String>,
    #[serde(with = "num::opt", default)]
    pub metric: Option<f64>,
    pub kept: bool,
}

impl LogCheckpoint {
    fn from_record(c: &CheckpointRecord) -> Self {
        LogCheckpoint {
            epoch: c.epoch,
            path: c.path.clone(),
            metric_name: c.metric_name.clone(),
            metric: c.metric,
            kept: c.kept,
        }
    }
    fn record(&self, run_id: i64) -> CheckpointRecord {
        CheckpointRecord {
            run_id,
            epoch: self.epoch,
            path: self.path.clone(),
            metric_name: self.metric_name.clone(),
            metric: self.metric,
            kept: self.kept,
        }
    }
}

/// A verification score, as the log writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogVerification {
    pub epoch: u32,
    pub split: String,
    pub metric: String,
    #[serde(with = "num::opt", default)]
    pub threshold: Option<f64>,
    #[serde(with = "num")]
    pub accuracy: f64,
    #[serde(with = "num::opt", default)]
    pub accuracy_known: Option<f64>,
    #[serde(with = "num::opt", default)]
    pub impostor_rejection: Option<f64>,
    /// The scores behind it (absent in logs written before store version 11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<PackedDistribution>,
}

/// A task attempt's identity: where and as which Slurm task it ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    pub host: String,
    pub pid: u32,
    pub at: String,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub task_id: Option<i64>,
    /// Slurm's restart count (0 the first time; a requeued task counts on).
    #[serde(default)]
    pub restart: u32,
    /// The epoch the attempt starts after (0: from scratch).
    #[serde(default)]
    pub from_epoch: u32,
}

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogEvent {
    /// What the store held of the run when it was submitted (written by the submitting
    /// machine; already in the store).
    Snapshot {
        status: String,
        epochs: Vec<LogEpoch>,
        checkpoints: Vec<LogCheckpoint>,
        #[serde(default)]
        parent_id: Option<i64>,
        #[serde(default)]
        resumed_from: Option<String>,
        at: String,
    },
    Start(Attempt),
    Epoch(LogEpoch),
    Verification(LogVerification),
    DevPredictions(DevPredictions),
    Checkpoint(LogCheckpoint),
    CheckpointDeleted {
        epoch: u32,
    },
    CheckpointDeletedPath {
        path: String,
    },
    Truncate {
        after: u32,
    },
    Phases {
        epoch: u32,
        phases: PhaseSeconds,
    },
    SkippedImages {
        epoch: u32,
        images: Vec<(String, String)>,
    },
    InitFrom {
        run: i64,
        checkpoint: String,
    },
    Device {
        device: String,
        threads: usize,
    },
    /// The attempt's end: the run's status (done, failed, diverged, interrupted), the error,
    /// the exit code it leaves with.
    Finish {
        status: String,
        #[serde(default)]
        error: Option<String>,
        exit_code: i32,
        at: String,
    },
    /// After an interruption by SIGUSR1 (Slurm's warning before the time limit): whether
    /// `scontrol requeue` took the task back.
    Requeue {
        ok: bool,
        message: String,
        at: String,
    },
}

impl LogEvent {
    /// The store record this line replays as (none for the lines that only the collector
    /// interprets: snapshot, finish, requeue).
    pub fn record_op(&self) -> Option<RecordOp> {
        Some(match self {
            LogEvent::Snapshot { .. } | LogEvent::Finish { .. } | LogEvent::Requeue { .. } => {
                return None
            }
            LogEvent::Start(a) => RecordOp::Started {
                host: a.host.clone(),
                at: a.at.clone(),
            },
            LogEvent::Epoch(e) => RecordOp::Epoch(e.into()),
            LogEvent::Verification(v) => RecordOp::Verification(VerificationRecord {
                run_id: 0,
                epoch: v.epoch,
                split: v.split.clone(),
                metric: v.metric.clone(),
                threshold: v.threshold,
                accuracy: v.accuracy,
                accuracy_known: v.accuracy_known,
                impostor_rejection: v.impostor_rejection,
                // a distribution that does not decode is left out, the score kept
                distribution: v
                    .distribution
                    .as_ref()
                    .and_then(|p| ScoreDistribution::try_from(p).ok()),
            }),
            LogEvent::DevPredictions(p) => RecordOp::DevPredictions(p.clone()),
            LogEvent::Checkpoint(c) => RecordOp::Checkpoint(c.record(0)),
            LogEvent::CheckpointDeleted { epoch } => RecordOp::CheckpointDeleted { epoch: *epoch },
            LogEvent::CheckpointDeletedPath { path } => {
                RecordOp::CheckpointDeletedPath { path: path.clone() }
            }
            LogEvent::Truncate { after } => RecordOp::TruncateEpochs { after: *after },
            LogEvent::Phases { epoch, phases } => RecordOp::Phases {
                epoch: *epoch,
                phases: *phases,
            },
            LogEvent::SkippedImages { epoch, images } => RecordOp::SkippedImages {
                epoch: *epoch,
                images: images.clone(),
            },
            LogEvent::InitFrom { run, checkpoint } => RecordOp::InitFrom {
                run: *run,
                checkpoint: checkpoint.clone(),
            },
            LogEvent::Device { device, threads } => RecordOp::Device {
                device: device.clone(),
                threads: *threads,
            },
        })
    }
}

/// The latest attempt of a run and how it ended, if it did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptState {
    pub attempt: Attempt,
    /// (status, error, exit code) of its `finish` line.
    pub finish: Option<(RunStatus, Option<String>, i32)>,
    /// Its `requeue` line: whether Slurm took the task back.
    pub requeued: Option<bool>,
}

/// A run's records as the log tells them: what `engine::run` reads back on resume, and what
/// `runner collect` and `runner status` need.
#[derive(Debug, Clone, Default)]
pub struct LogState {
    pub epochs: BTreeMap<u32, EpochMetrics>,
    /// In write order.
    pub checkpoints: Vec<LogCheckpoint>,
    pub lineage: Lineage,
    /// The latest attempt (None: no task has started it since it was submitted).
    pub last: Option<AttemptState>,
    /// Task attempts, counted over the whole log.
    pub attempts: usize,
}

impl LogState {
    /// Applies one line.
    pub fn apply(&mut self, ev: &LogEvent) {
        match ev {
            LogEvent::Snapshot {
                epochs,
                checkpoints,
                parent_id,
                resumed_from,
                ..
            } => {
                self.epochs = epochs.iter().map(|e| (e.epoch, e.into())).collect();
                self.checkpoints = checkpoints.clone();
                self.lineage = Lineage {
                    parent_id: *parent_id,
                    resumed_from: resumed_from.clone(),
                };
                self.last = None;
            }
            LogEvent::Start(a) => {
                self.attempts += 1;
                self.last = Some(AttemptState {
                    attempt: a.clone(),
                    finish: None,
                    requeued: None,
                });
            }
            LogEvent::Epoch(e) => {
                self.epochs.insert(e.epoch, e.into());
            }
            LogEvent::Verification(v) => {
                if let Some(e) = self.epochs.get_mut(&v.epoch) {
                    e.verify_acc = Some(v.accuracy);
                }
            }
            LogEvent::Checkpoint(c) => self.checkpoints.push(c.clone()),
            LogEvent::CheckpointDeleted { epoch } => {
                for c in self.checkpoints.iter_mut() {
                    if c.epoch == *epoch
                        && c.metric_name.as_deref() != Some(super::run::INTERRUPT_METRIC)
                        && c.metric_name.as_deref() != Some(super::run::RUNG_METRIC)
                    {
                        c.kept = false;
                    }
                }
            }
            LogEvent::CheckpointDeletedPath { path } => {
                for c in self.checkpoints.iter_mut().filter(|c| &c.path == path) {
                    c.kept = false;
                }
            }
            LogEvent::Truncate { after } => self.epochs.retain(|e, _| e <= after),
            LogEvent::Phases { epoch, phases } => {
                if let Some(e) = self.epochs.get_mut(epoch) {
                    e.phase_seconds = Some(*phases);
                }
            }
            LogEvent::SkippedImages { .. }
            | LogEvent::InitFrom { .. }
            | LogEvent::Device { .. }
            | LogEvent::DevPredictions(_) => {}
            LogEvent::Finish {
                status,
                error,
                exit_code,
                ..
            } => {
                let status = RunStatus::parse(status).unwrap_or(RunStatus::Failed);
                let last = self.last.get_or_insert_with(Default::default);
                last.finish = Some((status, error.clone(), *exit_code));
            }
            LogEvent::Requeue { ok, .. } => {
                if let Some(last) = self.last.as_mut() {
                    last.requeued = Some(*ok);
                }
            }
        }
    }

    /// The checkpoints as the store orders them: by epoch, then write order.
    pub fn checkpoint_records(&self, run_id: i64) -> Vec<CheckpointRecord> {
        let mut v: Vec<CheckpointRecord> =
            self.checkpoints.iter().map(|c| c.record(run_id)).collect();
        v.sort_by_key(|c| c.epoch);
        v
    }

    /// The last epoch recorded.
    pub fn last_epoch(&self) -> Option<u32> {
        self.epochs.keys().next_back().copied()
    }
}

/// The complete lines of a log from byte `from`: each event with the byte offset just after
/// its line. A missing file has none.
pub fn read_events(path: &Path, from: u64) -> Result<Vec<(LogEvent, u64)>, LogError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    file.seek(SeekFrom::Start(from)).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_err(path))?;
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut line_no = 0usize;
    while let Some(len) = bytes[start..].iter().position(|b| *b == b'\n') {
        line_no += 1;
        let line = &bytes[start..start + len];
        start += len + 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let ev: LogEvent = serde_json::from_slice(line).map_err(|e| LogError::Corrupt {
            path: path.to_path_buf(),
            line: line_no,
            msg: e.to_string(),
        })?;
        out.push((ev, from + start as u64));
    }
    Ok(out)
}

/// A run's state from its whole log.
pub fn read_state(path: &Path) -> Result<LogState, LogError> {
    let mut state = LogState::default();
    for (ev, _) in read_events(path, 0)? {
        state.apply(&ev);
    }
    Ok(state)
}

/// Opens a log for appending, creating it (and its folder); a last line cut short by a kill
/// is cut off, so that the next line starts on a line of its own.
fn open_for_append(path: &Path) -> Result<File, LogError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len > 0 {
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
        file.read_to_end(&mut bytes).map_err(io_err(path))?;
        if bytes.last() != Some(&b'\n') {
            let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64).map_err(io_err(path))?;
        }
    }
    Ok(file)
}

/// Appends one line and makes it durable.
fn append_line(file: &mut File, path: &Path, ev: &LogEvent) -> Result<u64, LogError> {
    let mut line = serde_json::to_vec(ev).map_err(|e| LogError::Corrupt {
        path: path.to_path_buf(),
        line: 0,
        msg: e.to_string(),
    })?;
    line.push(b'\n');
    file.write_all(&line).map_err(io_err(path))?;
    file.sync_data().map_err(io_err(path))?;
    Ok(file.metadata().map_err(io_err(path))?.len())
}

/// Appends the submitting machine's snapshot of a run to its log; returns the log's length
/// after it (the part the store holds).
pub fn write_snapshot(path: &Path, snapshot: &LogEvent) -> Result<u64, LogError> {
    let mut file = open_for_append(path)?;
    append_line(&mut file, path, snapshot)
}

/// Where a run that starts from another run's checkpoint finds it, from a Slurm task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum InitSource {
    /// The parent was done when the run was submitted: its checkpoint, chosen then.
    Checkpoint { run_id: i64, path: String },
    /// The parent was submitted with it (an earlier job array this one depends on): chosen
    /// from the parent's own log when the task starts.
    Log {
        run_id: i64,
        records: String,
        #[serde(default)]
        mode: MetricMode,
    },
}

/// The record log of one run, written by the Slurm task that trains it.
pub struct RunLog {
    path: PathBuf,
    file: File,
    run_id: i64,
    state: LogState,
    init: Option<InitSource>,
}

impl RunLog {
    /// Opens (creating) the log of `run_id` at `path` and reads what it holds.
    pub fn open(path: &Path, run_id: i64, init: Option<InitSource>) -> Result<RunLog, LogError> {
        let file = open_for_append(path)?;
        let state = read_state(path)?;
        Ok(RunLog {
            path: path.to_path_buf(),
            file,
            run_id,
            state,
            init,
        })
    }

    pub fn state(&self) -> &LogState {
        &self.state
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a line and applies it to the state.
    pub fn append(&mut self, ev: LogEvent) -> Result<(), LogError> {
        append_line(&mut self.file, &self.path, &ev)?;
        self.state.apply(&ev);
        Ok(())
    }

    fn own(&self, run_id: i64, what: &str) -> Result<(), EngineError> {
        if run_id == self.run_id {
            Ok(())
        } else {
            Err(EngineError::Other(format!(
                "a Slurm task reads the records of its own run only (run {}), not the {what} of run {run_id}",
                self.run_id
            )))
        }
    }
}

impl RunRecords for RunLog {
    fn record_epoch(&mut self, _run_id: i64, m: &EpochMetrics) -> Result<(), EngineError> {
        Ok(self.append(LogEvent::Epoch(m.into()))?)
    }
    fn record_verification(&mut self, v: &VerificationRecord) -> Result<(), EngineError> {
        Ok(self.append(LogEvent::Verification(LogVerification {
            epoch: v.epoch,
            split: v.split.clone(),
            metric: v.metric.clone(),
            threshold: v.threshold,
            accuracy: v.accuracy,
            accuracy_known: v.accuracy_known,
            impostor_rejection: v.impostor_rejection,
            distribution: v.distribution.as_ref().map(PackedDistribution::from),
        }))?)
    }
    fn record_dev_predictions(
        &mut self,
        _run_id: i64,
        p: &DevPredictions,
    ) -> Result<(), EngineError> {
        Ok(self.append(LogEvent::DevPredictions(p.clone()))?)
    }
    fn record_checkpoint(&mut self, c: &CheckpointRecord) -> Result<(), EngineError> {
        let mut c = LogCheckpoint::from_record(c);
        c.kept = true;
        Ok(self.append(LogEvent::Checkpoint(c))?)
    }
    fn mark_checkpoint_deleted(&mut self, _run_id: i64, epoch: u32) -> Result<(), EngineError> {
        Ok(self.append(LogEvent::CheckpointDeleted { epoch })?)
    }
    fn mark_checkpoint_deleted_path(
        &mut self,
        _run_id: i64,
        path: &str,
    ) -> Result<(), EngineError> {
        Ok(self.append(LogEvent::CheckpointDeletedPath { path: path.into() })?)
    }
    fn record_phases(
        &mut self,
        _run_id: i64,
        epoch: u32,
        phases: &PhaseSeconds,
    ) -> Result<(), EngineError> {
        Ok(self.append(LogEvent::Phases {
            epoch,
            phases: *phases,
        })?)
    }
    fn truncate_epochs(&mut self, _run_id: i64, after_epoch: u32) -> Result<(), EngineError> {
        Ok(self.append(LogEvent::Truncate { after: after_epoch })?)
    }
    fn heartbeat(&mut self, _run_id: i64) -> Result<(), EngineError> {
        // Slurm knows whether the task lives; the log needs no heartbeat.
        Ok(())
    }
    fn finish_run(
        &mut self,
        _run_id: i64,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), EngineError> {
        Ok(self.append(LogEvent::Finish {
            status: status.as_str().into(),
            error: error.map(str::to_string),
            exit_code: if status == RunStatus::Done { 0 } else { 1 },
            at: crate::store::now(),
        })?)
    }
    fn record_skipped_images(
        &mut self,
        _run_id: i64,
        epoch: u32,
        images: &[(String, String)],
    ) -> Result<(), EngineError> {
        if images.is_empty() {
            return Ok(());
        }
        Ok(self.append(LogEvent::SkippedImages {
            epoch,
            images: images.to_vec(),
        })?)
    }
    fn set_init_from(
        &mut self,
        _run_id: i64,
        parent: i64,
        checkpoint: &str,
    ) -> Result<(), EngineError> {
        Ok(self.append(LogEvent::InitFrom {
            run: parent,
            checkpoint: checkpoint.into(),
        })?)
    }
    fn record_device(
        &mut self,
        _run_id: i64,
        device: &str,
        threads: usize,
    ) -> Result<(), EngineError> {
        Ok(self.append(LogEvent::Device {
            device: device.into(),
            threads,
        })?)
    }
    fn epochs(&self, run_id: i64) -> Result<Vec<EpochMetrics>, EngineError> {
        self.own(run_id, "epochs")?;
        Ok(self.state.epochs.values().cloned().collect())
    }
    fn checkpoints(&self, run_id: i64) -> Result<Vec<CheckpointRecord>, EngineError> {
        self.own(run_id, "checkpoints")?;
        Ok(self.state.checkpoint_records(run_id))
    }
    fn lineage(&self, run_id: i64) -> Result<Lineage, EngineError> {
        self.own(run_id, "lineage")?;
        Ok(self.state.lineage.clone())
    }
    fn init_checkpoint(&self, link: &InitFromRun) -> Result<(i64, PathBuf), EngineError> {
        match &self.init {
            Some(InitSource::Checkpoint { run_id, path }) => Ok((*run_id, PathBuf::from(path))),
            Some(InitSource::Log {
                run_id,
                records,
                mode,
            }) => {
                let parent = read_state(Path::new(records))?;
                let done = parent
                    .last
                    .as_ref()
                    .and_then(|l| l.finish.as_ref())
                    .is_some_and(|f| f.0 == RunStatus::Done);
                if !done {
                    return Err(EngineError::Other(format!(
                        "model.init_from: run {run_id} of {} is not done (its records: {records})",
                        link.recipe
                    )));
                }
                let path = super::picks::pick_checkpoint(
                    parent.checkpoint_records(*run_id),
                    link.pick,
                    *mode,
                )
                .ok_or_else(|| {
                    EngineError::Other(format!(
                        "model.init_from: run {run_id} of {} has no checkpoint on disk",
                        link.recipe
                    ))
                })?;
                Ok((*run_id, path))
            }
            None => Err(EngineError::Other(format!(
                "model.init_from: the manifest names no run of {} to start from",
                link.recipe
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cut_short_is_dropped_and_numbers_survive_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run-1").join(LOG_FILE);
        let mut log = RunLog::open(&path, 1, None).unwrap();
        let m = EpochMetrics {
            epoch: 1,
            lr: 0.1 + 0.2,
            train_loss: f64::INFINITY,
            train_acc: 1.0 / 3.0,
            val_loss: Some(f64::NAN),
            val_acc: None,
            verify_acc: Some(2.0f64.sqrt()),
            images_per_sec: 1e-300,
            seconds: 5e-324,
            phase_seconds: None,
        };
        log.record_epoch(1, &m).unwrap();
        let phases = PhaseSeconds {
            train: 0.1 + 0.2,
            loader_wait: 1e-9,
            ..PhaseSeconds::default()
        };
        log.record_phases(1, 1, &phases).unwrap();
        assert_eq!(log.epochs(1).unwrap()[0].phase_seconds, Some(phases));
        drop(log);
        // a kill in the middle of a write
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"event\":\"epoch\",\"epo").unwrap();
        drop(f);
        let events = read_events(&path, 0).unwrap();
        assert_eq!(events.len(), 2, "the partial line is not read");
        assert!(matches!(
            events[1].0.record_op(),
            Some(RecordOp::Phases { epoch: 1, .. })
        ));
        let mut log = RunLog::open(&path, 1, None).unwrap();
        let got = &log.epochs(1).unwrap()[0];
        assert_eq!(got.lr.to_bits(), m.lr.to_bits());
        assert_eq!(got.train_loss, f64::INFINITY);
        assert!(got.val_loss.unwrap().is_nan());
        assert_eq!(got.train_acc.to_bits(), m.train_acc.to_bits());
        assert_eq!(got.verify_acc, m.verify_acc);
        assert_eq!(got.seconds.to_bits(), m.seconds.to_bits());
        // the phases line replays onto the epoch, read back from the file
        assert_eq!(got.phase_seconds, Some(phases));
        log.truncate_epochs(1, 0).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "the cut line was removed:\n{text}");
        assert!(read_state(&path).unwrap().epochs.is_empty());
    }

    #[test]
    fn verification_details_and_dev_predictions_replay_exactly_and_old_lines_still_read() {
        use crate::verify::{ProbeTop1, WrongDecision};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run-1").join(LOG_FILE);
        let mut log = RunLog::open(&path, 1, None).unwrap();
        let v = VerificationRecord {
            run_id: 1,
            epoch: 2,
            split: "verify-dev".into(),
            metric: "cosine".into(),
            threshold: Some(f64::INFINITY),
            accuracy: 1.0 / 3.0,
            accuracy_known: None,
            impostor_rejection: Some(1.0),
            distribution: Some(ScoreDistribution {
                lo: -1.0,
                hi: 1.0,
                genuine: vec![1, 0, 2],
                impostor: vec![0, 5, 0],
                probes: vec![ProbeTop1 {
                    score: 0.1 + 0.2,
                    correct: false,
                    known: true,
                }],
                probes_total: 1,
                score_threshold: f64::INFINITY,
                wrong: vec![WrongDecision {
                    id: "a.jpg".into(),
                    truth: "n000001".into(),
                    decided: "n000000".into(),
                    score: 0.3,
                    path: None,
                }],
                wrong_total: 1,
            }),
        };
        log.record_verification(&v).unwrap();
        let p = DevPredictions::capped(
            2,
            vec!["n000001".into(), "n000002".into()],
            &["x.jpg".into(), "y.jpg".into()],
            &[0, 1],
            &[1, 1],
        );
        log.record_dev_predictions(1, &p).unwrap();
        // a verification line as a log before store version 11 wrote it
        let old = "{\"event\":\"verification\",\"epoch\":3,\"split\":\"verify-dev\",\"metric\":\"cosine\",\"accuracy\":0.5}\n";
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(old.as_bytes()).unwrap();
        drop(f);
        let ops: Vec<RecordOp> = read_events(&path, 0)
            .unwrap()
            .iter()
            .filter_map(|(e, _)| e.record_op())
            .collect();
        assert_eq!(ops.len(), 3);
        assert_eq!(
            ops[0],
            RecordOp::Verification(VerificationRecord { run_id: 0, ..v })
        );
        assert_eq!(ops[1], RecordOp::DevPredictions(p));
        match &ops[2] {
            RecordOp::Verification(o) => assert_eq!((o.epoch, o.distribution.is_none()), (3, true)),
            other => panic!("{other:?}"),
        }
    }
}
