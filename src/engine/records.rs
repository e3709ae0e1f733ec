//! Where a run's records go: every write `engine::run` makes while it trains (epochs,
//! checkpoints, verification, status) and the reads it makes of its own history, behind one
//! trait. The store implements it for runs trained on this machine; `runlog::RunLog` (the
//! append-only log in the run's folder) for runs a Slurm task trains, whose records
//! `runner collect` replays into the store. The training loop does not know which it has.

use std::path::PathBuf;

use super::EngineError;
use crate::recipe::InitFromRun;
use crate::store::{
    CheckpointRecord, DevPredictions, EpochMetrics, PhaseSeconds, RunStatus, Store,
    VerificationRecord,
};

/// The run a linked run (`runner resume`) continued, and the checkpoint it started from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lineage {
    pub parent_id: Option<i64>,
    pub resumed_from: Option<String>,
}

/// A run's records, written as it trains and read back on resume.
pub trait RunRecords {
    /// Records (or replaces, on resume) one epoch's metrics.
    fn record_epoch(&mut self, run_id: i64, m: &EpochMetrics) -> Result<(), EngineError>;
    /// Records a verification score (and the epoch's `verify_acc`).
    fn record_verification(&mut self, v: &VerificationRecord) -> Result<(), EngineError>;
    /// Records the dev predictions of an epoch whose checkpoint is kept (dropped with it).
    fn record_dev_predictions(
        &mut self,
        run_id: i64,
        p: &DevPredictions,
    ) -> Result<(), EngineError>;
    /// Records a written checkpoint.
    fn record_checkpoint(&mut self, c: &CheckpointRecord) -> Result<(), EngineError>;
    /// Marks the end-of-epoch checkpoint of `epoch` deleted.
    fn mark_checkpoint_deleted(&mut self, run_id: i64, epoch: u32) -> Result<(), EngineError>;
    /// Marks the checkpoint file at `path` deleted.
    fn mark_checkpoint_deleted_path(&mut self, run_id: i64, path: &str) -> Result<(), EngineError>;
    /// Where `epoch`'s wall time went, after its other records.
    fn record_phases(
        &mut self,
        run_id: i64,
        epoch: u32,
        phases: &PhaseSeconds,
    ) -> Result<(), EngineError>;
    /// Forgets the epochs after `after_epoch` (they are recomputed).
    fn truncate_epochs(&mut self, run_id: i64, after_epoch: u32) -> Result<(), EngineError>;
    /// Says the run's process is alive (where a heartbeat means anything).
    fn heartbeat(&mut self, run_id: i64) -> Result<(), EngineError>;
    /// The run's final (or interrupted) status, with the error where there is one.
    fn finish_run(
        &mut self,
        run_id: i64,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), EngineError>;
    /// Unreadable images first met in `epoch` (path, error).
    fn record_skipped_images(
        &mut self,
        run_id: i64,
        epoch: u32,
        images: &[(String, String)],
    ) -> Result<(), EngineError>;
    /// The run and checkpoint a `model.init_from = { recipe = ... }` run started from.
    fn set_init_from(
        &mut self,
        run_id: i64,
        parent: i64,
        checkpoint: &str,
    ) -> Result<(), EngineError>;

    /// The device the run trains on (`device_label`) and its thread count.
    fn record_device(
        &mut self,
        run_id: i64,
        device: &str,
        threads: usize,
    ) -> Result<(), EngineError>;

    /// A run's epochs, in epoch order.
    fn epochs(&self, run_id: i64) -> Result<Vec<EpochMetrics>, EngineError>;
    /// A run's checkpoints (kept and deleted), in epoch then write order.
    fn checkpoints(&self, run_id: i64) -> Result<Vec<CheckpointRecord>, EngineError>;
    /// The run a linked run continued.
    fn lineage(&self, run_id: i64) -> Result<Lineage, EngineError>;
    /// The parent run and checkpoint a `model.init_from = { recipe = ... }` run starts from.
    fn init_checkpoint(&self, link: &InitFromRun) -> Result<(i64, PathBuf), EngineError>;
}

impl RunRecords for Store {
    fn record_epoch(&mut self, run_id: i64, m: &EpochMetrics) -> Result<(), EngineError> {
        Ok(Store::record_epoch(self, run_id, m)?)
    }
    fn record_verification(&mut self, v: &VerificationRecord) -> Result<(), EngineError> {
        Ok(Store::record_verification(self, v)?)
    }
    fn record_dev_predictions(
        &mut self,
        run_id: i64,
        p: &DevPredictions,
    ) -> Result<(), EngineError> {
        Ok(Store::record_dev_predictions(self, run_id, p)?)
    }
    fn record_checkpoint(&mut self, c: &CheckpointRecord) -> Result<(), EngineError> {
        Store::record_checkpoint(self, c)?;
        Ok(())
    }
    fn mark_checkpoint_deleted(&mut self, run_id: i64, epoch: u32) -> Result<(), EngineError> {
        Ok(Store::mark_checkpoint_deleted(self, run_id, epoch)?)
    }
    fn mark_checkpoint_deleted_path(&mut self, run_id: i64, path: &str) -> Result<(), EngineError> {
        Ok(Store::mark_checkpoint_deleted_path(self, run_id, path)?)
    }
    fn record_phases(
        &mut self,
        run_id: i64,
        epoch: u32,
        phases: &PhaseSeconds,
    ) -> Result<(), EngineError> {
        Ok(Store::record_phases(self, run_id, epoch, phases)?)
    }
    fn truncate_epochs(&mut self, run_id: i64, after_epoch: u32) -> Result<(), EngineError> {
        Ok(Store::truncate_epochs(self, run_id, after_epoch)?)
    }
    fn heartbeat(&mut self, run_id: i64) -> Result<(), EngineError> {
        Ok(Store::heartbeat(self, run_id)?)
    }
    fn finish_run(
        &mut self,
        run_id: i64,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), EngineError> {
        Ok(Store::finish_run(self, run_id, status, error)?)
    }
    fn record_skipped_images(
        &mut self,
        run_id: i64,
        epoch: u32,
        images: &[(String, String)],
    ) -> Result<(), EngineError> {
        Ok(Store::record_skipped_images(self, run_id, epoch, images)?)
    }
    fn set_init_from(
        &mut self,
        run_id: i64,
        parent: i64,
        checkpoint: &str,
    ) -> Result<(), EngineError> {
        Ok(Store::set_init_from(self, run_id, parent, checkpoint)?)
    }
    fn record_device(
        &mut self,
        run_id: i64,
        device: &str,
        threads: usize,
    ) -> Result<(), EngineError> {
        Ok(Store::record_device(self, run_id, device, threads)?)
    }
    fn epochs(&self, run_id: i64) -> Result<Vec<EpochMetrics>, EngineError> {
        Ok(Store::epochs(self, run_id)?)
    }
    fn checkpoints(&self, run_id: i64) -> Result<Vec<CheckpointRecord>, EngineError> {
        Ok(Store::checkpoints(self, run_id)?)
    }
    fn lineage(&self, run_id: i64) -> Result<Lineage, EngineError> {
        let run = self.run(run_id)?;
        Ok(Lineage {
            parent_id: run.parent_id,
            resumed_from: run.resumed_from,
        })
    }
    fn init_checkpoint(&self, link: &InitFromRun) -> Result<(i64, PathBuf), EngineError> {
        super::picks::init_checkpoint(self, link)
    }
}
