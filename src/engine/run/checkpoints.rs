//! A run's checkpoints: writing them (end of epoch, and mid-epoch on interrupt), restoring a
//! run from one (weights, optimizer, schedule, divergence state, progress), rolling back to
//! the last good one, and deleting those the policy drops.

use super::*;

impl<'a, 's> Runner<'a, 's> {
    /// Loads a checkpoint: weights, optimizer, schedule, divergence state, epoch.
    pub(super) fn restore(&mut self, path: &Path, same_run: bool) -> Result<(), EngineError> {
        let ck = read_checkpoint(path)?;
        // name the file: the state may be of another model or optimizer
        let in_file = |e: crate::train::TrainError| crate::train::TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: e.to_string(),
        };
        assign_vars(&self.varmap, &ck.model).map_err(&in_file)?;
        self.optimizer
            .load_state_tensors(&ck.optim)
            .map_err(&in_file)?;
        self.restore_ema(&ck).map_err(in_file)?;
        self.epoch = ck.meta.epoch;
        let parent_recipe: Option<Recipe> = serde_json::from_value(ck.meta.recipe.clone()).ok();
        let new = &self.req.recipe;
        let same_lr = parent_recipe
            .as_ref()
            .is_some_and(|p| p.optimizer.lr() == new.optimizer.lr());
        // More epochs change nothing before them, unless cosine's default t_max follows them.
        let same_schedule = same_lr
            && parent_recipe.as_ref().is_some_and(|p| {
                p.scheduler == new.scheduler
                    && (p.train.epochs == new.train.epochs || !new.scheduler.depends_on_epochs())
            });
        if same_run || same_schedule {
            self.schedule.load_state(&ck.meta.scheduler)?;
        } else {
            // A linked run with another lr or schedule: its own schedule, replayed to this
            // epoch on the metrics its ancestry recorded (ReduceLROnPlateau reads them).
            for (e, m) in self.lineage_metrics(self.epoch)?.iter().enumerate() {
                self.schedule.step_epoch(m).map_err(|err| {
                    EngineError::Other(format!(
                        "cannot replay the new schedule to epoch {} of the parent run: epoch {}: {err}",
                        self.epoch,
                        e + 1
                    ))
                })?;
            }
        }
        if let Some(s) = ck.meta.extra.get("grad_scaler") {
            if let Ok(s) = serde_json::from_value::<GradScaler>(s.clone()) {
                if s.enabled == self.precision.scaler.enabled {
                    self.precision.scaler = s;
                }
            }
        }
        // Steps count on through linked runs, as epochs do.
        self.step = ck
            .meta
            .extra
            .get("step")
            .and_then(|s| s.as_u64())
            .unwrap_or(0);
        // The rollbacks so far and their lr scale carry on (the policy, factor and maximum are
        // the recipe's); a linked run given a new lr starts from that lr, unscaled.
        if let Some(g) = ck.meta.extra.get("divergence") {
            if let Ok(g) = serde_json::from_value::<DivergenceGuard>(g.clone()) {
                self.guard.rollbacks = g.rollbacks;
                if same_run || same_lr {
                    self.guard.lr_scale = g.lr_scale;
                }
                self.schedule.set_lr_scale(self.guard.lr_scale);
            }
        }
        if same_run {
            // The run's checkpoints stay in one directory, wherever it is resumed from; a
            // write that a crash cut short left a temporary file there.
            if let Some(dir) = path.parent() {
                self.ckpt_dir = dir.to_path_buf();
            }
            for stale in remove_stale_temp(&self.ckpt_dir)? {
                self.req.reporter.info(&format!(
                    "{}: removed {}, a checkpoint write cut short",
                    self.label(),
                    stale.display()
                ));
            }
            self.partial = ck
                .meta
                .extra
                .get("partial")
                .and_then(|p| serde_json::from_value(p.clone()).ok());
            // Epochs after the checkpoint are recomputed; forget what was recorded of them.
            self.store.truncate_epochs(self.req.run_id, self.epoch)?;
            let saved = self.saved_checkpoints()?;
            self.policy = CheckpointPolicy::resume(&self.req.recipe.checkpoint, saved);
            for e in self.policy.truncate_after(self.epoch) {
                self.delete_checkpoint(e)?;
            }
        }
        self.req.reporter.info(&format!(
            "{}: resuming from {} (epoch {}{})",
            self.label(),
            path.display(),
            self.epoch,
            self.partial
                .as_ref()
                .map(|p| format!(", {} batches into epoch {}", p.batches_done, p.epoch))
                .unwrap_or_default()
        ));
        Ok(())
    }

    /// The moving average a checkpoint kept, or (a checkpoint of a run without one) the
    /// checkpoint's weights as its start.
    pub(super) fn restore_ema(&mut self, ck: &Checkpoint) -> Result<(), crate::train::TrainError> {
        match &self.ema {
            Some(e) if !ck.ema.is_empty() => e.avg.load(&ck.ema),
            Some(e) => e.avg.set(&self.varmap),
            None => Ok(()),
        }
    }

    /// The metrics of epochs 1..=`upto` as the ancestry of this linked run recorded them, each
    /// epoch from the run that trained it (an epoch nobody recorded has none).
    pub(super) fn lineage_metrics(&self, upto: u32) -> Result<Vec<Metrics>, EngineError> {
        let mut by_epoch: BTreeMap<u32, Metrics> = BTreeMap::new();
        let mut run = self.store.lineage(self.req.run_id)?;
        let mut limit = upto;
        while let (Some(parent_id), true) = (run.parent_id, limit > 0) {
            let parent = self.store.lineage(parent_id)?;
            // The parent's own epochs start after the checkpoint it was resumed from.
            let start = match (parent.parent_id, &parent.resumed_from) {
                (Some(grandparent), Some(path)) => self
                    .store
                    .checkpoints(grandparent)?
                    .iter()
                    .find(|c| &c.path == path)
                    .map_or(0, |c| c.epoch),
                _ => 0,
            };
            for e in self.store.epochs(parent_id)? {
                if e.epoch > start && e.epoch <= limit {
                    by_epoch
                        .entry(e.epoch)
                        .or_insert_with(|| metrics_map(&e).into_iter().collect());
                }
            }
            limit = start;
            run = parent;
        }
        Ok((1..=upto)
            .map(|e| by_epoch.remove(&e).unwrap_or_default())
            .collect())
    }

    /// This run's kept end-of-epoch checkpoints with their epochs' metrics.
    pub(super) fn saved_checkpoints(&self) -> Result<Vec<SavedCheckpoint>, EngineError> {
        let epochs = self.store.epochs(self.req.run_id)?;
        let mut out = Vec::new();
        for c in self.store.checkpoints(self.req.run_id)? {
            if !c.kept || is_extra(&c) {
                continue;
            }
            let metrics = epochs
                .iter()
                .find(|e| e.epoch == c.epoch)
                .map(metrics_map)
                .unwrap_or_default();
            out.push(SavedCheckpoint {
                epoch: c.epoch,
                metrics,
            });
        }
        Ok(out)
    }

    pub(super) fn rollback(&mut self, lr_scale: f64, reason: &str) -> Result<(), EngineError> {
        let Some(epoch) = self.policy.latest() else {
            return Err(EngineError::Other(format!(
                "cannot roll back ({reason}): no checkpoint"
            )));
        };
        let path = self.stored_checkpoint_path(epoch)?;
        self.req.reporter.info(&format!(
            "{}: {reason}; rolling back to epoch {epoch} with lr scale {lr_scale}",
            self.label()
        ));
        let guard = self.guard.clone();
        let ck = read_checkpoint(&path)?;
        assign_vars(&self.varmap, &ck.model)?;
        self.optimizer.load_state_tensors(&ck.optim)?;
        self.restore_ema(&ck)?;
        self.schedule.load_state(&ck.meta.scheduler)?;
        // The guard keeps counting across rollbacks: it is not restored from the checkpoint.
        self.guard = guard;
        self.schedule.set_lr_scale(lr_scale);
        self.epoch = ck.meta.epoch;
        self.partial = None;
        self.store.truncate_epochs(self.req.run_id, self.epoch)?;
        for e in self.policy.truncate_after(self.epoch) {
            self.delete_checkpoint(e)?;
        }
        Ok(())
    }

    pub(super) fn checkpoint_path(&self, epoch: u32) -> PathBuf {
        self.ckpt_dir.join(format!("epoch-{epoch:04}.safetensors"))
    }

    /// Where this run's kept end-of-epoch checkpoint of `epoch` is, as the store recorded it
    /// when it was written.
    pub(super) fn stored_checkpoint_path(&self, epoch: u32) -> Result<PathBuf, EngineError> {
        Ok(self
            .store
            .checkpoints(self.req.run_id)?
            .into_iter()
            .rev()
            .find(|c| c.epoch == epoch && c.kept && !is_extra(c))
            .map_or_else(|| self.checkpoint_path(epoch), |c| PathBuf::from(c.path)))
    }

    pub(super) fn checkpoint(
        &self,
        metrics: &BTreeMap<String, f64>,
    ) -> Result<Checkpoint, EngineError> {
        let model = named_vars(&self.varmap)
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        let mut extra = serde_json::json!({
            "divergence": self.guard,
            "step": self.step,
            "num_classes": self.model.num_classes(),
        });
        if self.precision.scaler.enabled {
            extra["grad_scaler"] = serde_json::to_value(&self.precision.scaler).unwrap_or_default();
        }
        if let Some(p) = &self.partial {
            extra["partial"] = serde_json::to_value(p).unwrap_or_default();
        }
        Ok(Checkpoint {
            meta: CheckpointMeta {
                epoch: self.epoch,
                run_key: self.req.key.clone(),
                scheduler: self.schedule.state(),
                rng: serde_json::json!({
                    "scheme": "chacha8 from (seed, epoch, sample|batch)",
                    "seed": self.req.recipe.train.seed,
                }),
                recipe: serde_json::to_value(&self.req.recipe).unwrap_or_default(),
                metrics: metrics.clone(),
                extra,
            },
            model,
            optim: self.optimizer.state_tensors()?,
            ema: match &self.ema {
                Some(e) => e.avg.tensors()?,
                None => Default::default(),
            },
        })
    }

    pub(super) fn save_checkpoint(
        &mut self,
        epoch: u32,
        metrics: &BTreeMap<String, f64>,
    ) -> Result<(), EngineError> {
        let path = self.checkpoint_path(epoch);
        write_checkpoint(&path, &self.checkpoint(metrics)?)?;
        let monitor = &self.req.recipe.checkpoint.monitor;
        self.store.record_checkpoint(&CheckpointRecord {
            run_id: self.req.run_id,
            epoch,
            path: path.display().to_string(),
            metric_name: Some(monitor.clone()),
            metric: metrics.get(monitor).copied(),
            kept: true,
        })?;
        self.record_dev_predictions(epoch)?;
        Ok(())
    }

    /// Records the last evaluation's dev predictions as `epoch`'s (its checkpoint is kept;
    /// they are dropped with it).
    fn record_dev_predictions(&mut self, epoch: u32) -> Result<(), EngineError> {
        if self.dev_predictions.is_empty() {
            return Ok(());
        }
        let dev = &self.data.dev;
        let paths: Vec<String> = self
            .dev_predictions
            .iter()
            .map(|&(i, _)| dev[i].path.display().to_string())
            .collect();
        let truth: Vec<u32> = self
            .dev_predictions
            .iter()
            .map(|&(i, _)| dev[i].label as u32)
            .collect();
        let predicted: Vec<u32> = self.dev_predictions.iter().map(|&(_, p)| p).collect();
        let p =
            DevPredictions::capped(epoch, self.data.classes.clone(), &paths, &truth, &predicted);
        self.store.record_dev_predictions(self.req.run_id, &p)
    }

    /// A checkpoint of the current state (mid-epoch or between epochs) written on interrupt.
    pub(super) fn save_interrupt_checkpoint(&mut self) -> Result<(), EngineError> {
        let path = self.ckpt_dir.join(format!(
            "interrupt-epoch-{:04}-step-{:08}.safetensors",
            self.epoch, self.step
        ));
        write_checkpoint(&path, &self.checkpoint(&BTreeMap::new())?)?;
        self.store.record_checkpoint(&CheckpointRecord {
            run_id: self.req.run_id,
            epoch: self.epoch,
            path: path.display().to_string(),
            metric_name: Some(INTERRUPT_METRIC.into()),
            metric: None,
            kept: true,
        })?;
        Ok(())
    }

    /// Interrupt checkpoints are superseded by the next end-of-epoch state.
    pub(super) fn drop_interrupt_checkpoints(&mut self) -> Result<(), EngineError> {
        for c in self.store.checkpoints(self.req.run_id)? {
            if c.kept && c.metric_name.as_deref() == Some(INTERRUPT_METRIC) {
                let _ = std::fs::remove_file(&c.path);
                self.store
                    .mark_checkpoint_deleted_path(self.req.run_id, &c.path)?;
            }
        }
        Ok(())
    }

    /// Keeps this epoch's end state whatever the policy does later: a row labelled
    /// `RUNG_METRIC` on the policy's file of the epoch, or its own file when the policy wrote
    /// none.
    pub(super) fn pin_rung_checkpoint(
        &mut self,
        epoch: u32,
        metrics: &BTreeMap<String, f64>,
    ) -> Result<(), EngineError> {
        let path = if self.policy.saved().iter().any(|c| c.epoch == epoch) {
            self.stored_checkpoint_path(epoch)?
        } else {
            let path = self
                .ckpt_dir
                .join(format!("rung-epoch-{epoch:04}.safetensors"));
            write_checkpoint(&path, &self.checkpoint(metrics)?)?;
            path
        };
        let monitor = &self.req.recipe.checkpoint.monitor;
        self.store.record_checkpoint(&CheckpointRecord {
            run_id: self.req.run_id,
            epoch,
            path: path.display().to_string(),
            metric_name: Some(RUNG_METRIC.into()),
            metric: metrics.get(monitor).copied(),
            kept: true,
        })?;
        Ok(())
    }

    pub(super) fn delete_checkpoint(&mut self, epoch: u32) -> Result<(), EngineError> {
        let path = self.stored_checkpoint_path(epoch)?;
        // a rung's pin on the same file keeps it
        let pinned = self.store.checkpoints(self.req.run_id)?.iter().any(|c| {
            c.kept && c.metric_name.as_deref() == Some(RUNG_METRIC) && Path::new(&c.path) == path
        });
        if pinned {
            self.store.mark_checkpoint_deleted(self.req.run_id, epoch)?;
            return Ok(());
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(EngineError::Other(format!(
                    "{}: cannot delete checkpoint: {e}",
                    path.display()
                )))
            }
        }
        self.store.mark_checkpoint_deleted(self.req.run_id, epoch)?;
        Ok(())
    }
}

/// A checkpoint the policy does not own: an interrupt's or a rung's.
fn is_extra(c: &CheckpointRecord) -> bool {
    matches!(
        c.metric_name.as_deref(),
        Some(INTERRUPT_METRIC) | Some(RUNG_METRIC)
    )
}
