//! A run's records as it trains: epochs, checkpoints, verification, skipped images, and the
//! import of a Slurm task's records. Each write is one transaction; the `*_tx` functions are
//! shared by the store's methods and `apply_records`.

use super::*;

impl Store {
    /// Records the run and checkpoint a run started from (`model.init_from = { recipe = ... }`).
    pub fn set_init_from(
        &mut self,
        id: i64,
        parent: i64,
        checkpoint: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| set_init_from_tx(tx, id, parent, checkpoint))
    }

    /// The device a run trains on and its thread count (each attempt's: the last wins).
    pub fn record_device(
        &mut self,
        run_id: i64,
        device: &str,
        threads: usize,
    ) -> Result<(), StoreError> {
        self.write(|tx| record_device_tx(tx, run_id, device, threads))
    }

    /// Records (or replaces, on resume) one epoch's metrics.
    pub fn record_epoch(&mut self, run_id: i64, m: &EpochMetrics) -> Result<(), StoreError> {
        self.write(|tx| record_epoch_tx(tx, run_id, m))
    }

    /// Where an epoch's wall time went (the epoch's row exists: it is written first).
    pub fn record_phases(
        &mut self,
        run_id: i64,
        epoch: u32,
        phases: &PhaseSeconds,
    ) -> Result<(), StoreError> {
        self.write(|tx| record_phases_tx(tx, run_id, epoch, phases))
    }

    /// Deletes epochs after `epoch` (a resume from an earlier checkpoint recomputes them).
    pub fn truncate_epochs(&mut self, run_id: i64, after_epoch: u32) -> Result<(), StoreError> {
        self.write(|tx| truncate_epochs_tx(tx, run_id, after_epoch))
    }

    /// Records a written checkpoint.
    pub fn record_checkpoint(&mut self, c: &CheckpointRecord) -> Result<i64, StoreError> {
        self.write(|tx| record_checkpoint_tx(tx, c))
    }

    /// Marks a run's checkpoint of `epoch` as deleted.
    pub fn mark_checkpoint_deleted(&mut self, run_id: i64, epoch: u32) -> Result<(), StoreError> {
        self.write(|tx| mark_checkpoint_deleted_tx(tx, run_id, epoch))
    }

    /// Marks a checkpoint file (by path) as deleted.
    pub fn mark_checkpoint_deleted_path(
        &mut self,
        run_id: i64,
        path: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| mark_checkpoint_deleted_path_tx(tx, run_id, path))
    }

    /// Records images a run skipped as unreadable, first met in `epoch` (an image already
    /// recorded for the run keeps its first record).
    pub fn record_skipped_images(
        &mut self,
        run_id: i64,
        epoch: u32,
        images: &[(String, String)],
    ) -> Result<(), StoreError> {
        if images.is_empty() {
            return Ok(());
        }
        self.write(|tx| record_skipped_images_tx(tx, run_id, epoch, images))
    }

    /// Records a verification score.
    pub fn record_verification(&mut self, v: &VerificationRecord) -> Result<(), StoreError> {
        self.write(|tx| record_verification_tx(tx, v))
    }

    /// Imports the records a submitted run's task appended to its log: `ops` are the complete
    /// records between byte `from` and byte `to`. One transaction with the new offset, applied
    /// only when the store's offset is still `from` (no other `collect` imported them
    /// meanwhile); returns whether they were applied.
    pub fn apply_records(
        &mut self,
        run_id: i64,
        ops: &[RecordOp],
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE runs SET records_offset = ?3 WHERE id = ?1 AND records_offset = ?2",
                params![run_id, from, to],
            )?;
            if n != 1 {
                return Ok(false);
            }
            for op in ops {
                match op {
                    RecordOp::Epoch(m) => record_epoch_tx(tx, run_id, m)?,
                    RecordOp::Verification(v) => record_verification_tx(
                        tx,
                        &VerificationRecord {
                            run_id,
                            ..v.clone()
                        },
                    )?,
                    RecordOp::DevPredictions(p) => {
                        super::details::record_dev_predictions_tx(tx, run_id, p)?
                    }
                    RecordOp::Checkpoint(c) => {
                        record_checkpoint_tx(tx, &CheckpointRecord { run_id, ..c.clone() })?;
                    }
                    RecordOp::CheckpointDeleted { epoch } => {
                        mark_checkpoint_deleted_tx(tx, run_id, *epoch)?
                    }
                    RecordOp::CheckpointDeletedPath { path } => {
                        mark_checkpoint_deleted_path_tx(tx, run_id, path)?
                    }
                    RecordOp::TruncateEpochs { after } => truncate_epochs_tx(tx, run_id, *after)?,
                    RecordOp::Phases { epoch, phases } => {
                        record_phases_tx(tx, run_id, *epoch, phases)?
                    }
                    RecordOp::SkippedImages { epoch, images } => {
                        record_skipped_images_tx(tx, run_id, *epoch, images)?
                    }
                    RecordOp::InitFrom { run, checkpoint } => {
                        set_init_from_tx(tx, run_id, *run, checkpoint)?
                    }
                    RecordOp::Device { device, threads } => {
                        record_device_tx(tx, run_id, device, *threads)?
                    }
                    RecordOp::Started { host, at } => {
                        tx.execute(
                            "UPDATE runs SET host = ?2, started = COALESCE(started, ?3) WHERE id = ?1",
                            params![run_id, host, at],
                        )?;
                    }
                }
            }
            Ok(true)
        })
    }
}

fn record_epoch_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    m: &EpochMetrics,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO epochs (run_id, epoch, lr, train_loss, train_acc, val_loss,
            val_acc, verify_acc, images_per_sec, seconds, phase_seconds)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            run_id,
            m.epoch,
            m.lr,
            m.train_loss,
            m.train_acc,
            m.val_loss,
            m.val_acc,
            m.verify_acc,
            m.images_per_sec,
            m.seconds,
            m.phase_seconds.as_ref().map(phases_json)
        ],
    )?;
    tx.execute(
        "UPDATE runs SET heartbeat = ?2 WHERE id = ?1 AND status = 'running'",
        params![run_id, now()],
    )?;
    Ok(())
}

fn phases_json(p: &PhaseSeconds) -> String {
    serde_json::to_string(p).expect("six numbers serialize")
}

fn record_phases_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    epoch: u32,
    p: &PhaseSeconds,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE epochs SET phase_seconds = ?3 WHERE run_id = ?1 AND epoch = ?2",
        params![run_id, epoch, phases_json(p)],
    )?;
    Ok(())
}

fn truncate_epochs_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    after_epoch: u32,
) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM epochs WHERE run_id = ?1 AND epoch > ?2",
        params![run_id, after_epoch],
    )?;
    tx.execute(
        "DELETE FROM verification WHERE run_id = ?1 AND epoch > ?2",
        params![run_id, after_epoch],
    )?;
    super::details::truncate_details_tx(tx, run_id, after_epoch)?;
    Ok(())
}

fn record_checkpoint_tx(tx: &rusqlite::Transaction, c: &CheckpointRecord) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO checkpoints (run_id, epoch, path, metric_name, metric, kept, created)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
        params![c.run_id, c.epoch, c.path, c.metric_name, c.metric, now()],
    )?;
    Ok(tx.last_insert_rowid())
}

fn mark_checkpoint_deleted_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    epoch: u32,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE checkpoints SET kept = 0 WHERE run_id = ?1 AND epoch = ?2
           AND (metric_name IS NULL OR metric_name NOT IN ('interrupt', 'rung'))",
        params![run_id, epoch],
    )?;
    super::details::drop_dev_predictions_tx(tx, run_id, epoch)?;
    Ok(())
}

fn mark_checkpoint_deleted_path_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    path: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE checkpoints SET kept = 0 WHERE run_id = ?1 AND path = ?2",
        params![run_id, path],
    )?;
    Ok(())
}

fn record_skipped_images_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    epoch: u32,
    images: &[(String, String)],
) -> rusqlite::Result<()> {
    let mut st = tx.prepare(
        "INSERT OR IGNORE INTO skipped_images (run_id, path, error, epoch)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (path, error) in images {
        st.execute(params![run_id, path, error, epoch])?;
    }
    Ok(())
}

fn record_verification_tx(
    tx: &rusqlite::Transaction,
    v: &VerificationRecord,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO verification (run_id, epoch, split, metric, threshold, accuracy,
            accuracy_known, impostor_rejection, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            v.run_id,
            v.epoch,
            v.split,
            v.metric,
            v.threshold,
            v.accuracy,
            v.accuracy_known,
            v.impostor_rejection,
            now()
        ],
    )?;
    tx.execute(
        "UPDATE epochs SET verify_acc = ?3 WHERE run_id = ?1 AND epoch = ?2",
        params![v.run_id, v.epoch, v.accuracy],
    )?;
    if let Some(d) = &v.distribution {
        super::details::record_score_distribution_tx(
            tx,
            &super::ScoreDistributionRecord {
                run_id: v.run_id,
                epoch: v.epoch,
                split: v.split.clone(),
                distribution: d.clone(),
            },
        )?;
    }
    Ok(())
}

fn set_init_from_tx(
    tx: &rusqlite::Transaction,
    id: i64,
    parent: i64,
    checkpoint: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE runs SET init_from_run = ?2, init_from_checkpoint = ?3 WHERE id = ?1",
        params![id, parent, checkpoint],
    )?;
    Ok(())
}

fn record_device_tx(
    tx: &rusqlite::Transaction,
    run_id: i64,
    device: &str,
    threads: usize,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE runs SET device = ?2, threads = ?3 WHERE id = ?1",
        params![run_id, device, threads as i64],
    )?;
    Ok(())
}
