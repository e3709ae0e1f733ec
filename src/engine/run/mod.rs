//! One run, end to end: build data, model, optimizer, schedule and checkpoint policy from the
//! recipe; train epoch by epoch; validate; score verification; record every epoch, checkpoint
//! and score in the store; stop cleanly on Ctrl-C / SIGTERM; resume exactly from a checkpoint.
//!
//! Reproducibility: initial weights come from (seed, parameter name); the data order of an
//! epoch from (seed, epoch); each sample's augmentation from (seed, epoch, index); drop-path
//! masks from (seed, epoch, batch). Nothing depends on the thread count or on where a run was
//! interrupted, so a resumed run computes what an uninterrupted one would.

mod checkpoints;
mod epoch;

use epoch::EpochResult;
pub use epoch::{
    set_read_every_for_test, take_max_step_readbacks, take_steps_and_reads, GPU_READ_EVERY,
};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::batches::{BatchSource, Split};
use super::init::{named_vars, SeededVarMap};
use super::phases::{since, StoreClock, TimedRecords};
use super::progress::Reporter;
use super::records::RunRecords;
use super::verification::{score_verification, VerificationScore};
use super::EngineError;
use crate::data::loader::SkippedImage;
use crate::data::CourseData;
use crate::model::{FaceModel, ForwardCtx};
use crate::recipe::{InitFrom, ModelKind, Recipe, SchedulerKind};
use crate::store::{
    CheckpointRecord, DevPredictions, EpochMetrics, PhaseSeconds, RunStatus, VerificationRecord,
};
use crate::train::checkpoint::{
    assign_vars, read_checkpoint, remove_stale_temp, write_checkpoint, Checkpoint,
    CheckpointAction, CheckpointMeta, CheckpointPolicy, CheckpointingStrategy, SavedCheckpoint,
};
use crate::train::divergence::{DivergenceDecision, DivergenceGuard};
use crate::train::ema::ModelEma;
use crate::train::margin::MarginHead;
use crate::train::optim::{self, Optimizer};
use crate::train::precision::{GradScaler, MixedPrecision};
use crate::train::schedule::{self, Schedule};
use crate::train::{loss, Metrics};

/// Where a run starts.
#[derive(Debug, Clone)]
pub enum StartFrom {
    /// Fresh weights.
    Scratch,
    /// Continue this same run from one of its checkpoints (resume after an interruption).
    Continue(PathBuf),
    /// A new run linked to a parent, starting from the parent's checkpoint.
    Parent(PathBuf),
}

/// What to run.
pub struct RunRequest<'a> {
    pub run_id: i64,
    pub key: String,
    pub recipe: Recipe,
    pub start: StartFrom,
    /// The run's folder (its checkpoints), as the store recorded it for the run.
    pub dir: PathBuf,
    pub reporter: &'a Reporter,
    pub stop: Arc<AtomicBool>,
    /// Stop after this epoch (a rung of a halving sweep) with a kept checkpoint there, as
    /// status `paused`; the schedule still spans `train.epochs`, so continuing later is the
    /// same as never stopping.
    pub until_epoch: Option<u32>,
    /// Asked after each epoch with the run's values of `.0` (a metric name): true stops the
    /// run there, as `until_epoch` does (median stopping).
    pub early_stop: Option<(String, &'a dyn crate::plan::prune::EarlyStop)>,
}

/// How a run ended (failures are errors).
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Done(BTreeMap<String, f64>),
    Interrupted,
    Diverged(String),
    /// Reached `until_epoch` (its last epoch's metrics).
    Paused(BTreeMap<String, f64>),
}

pub use super::picks::{INTERRUPT_METRIC, RUNG_METRIC};

/// Progress inside an epoch, saved by an interrupt checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct PartialEpoch {
    epoch: u32,
    batches_done: usize,
    loss_sum: f64,
    correct: u64,
    seen: u64,
    seconds: f64,
}

/// Runs the request, recording its final status (done, diverged, interrupted, or failed with
/// the error text) where its records go: the store, or the run folder's log of a Slurm task.
pub fn execute(store: &mut dyn RunRecords, req: RunRequest) -> Result<RunOutcome, EngineError> {
    let run_id = req.run_id;
    let result = {
        let mut timed = TimedRecords::new(&mut *store);
        let clock = timed.clock();
        Runner::new(&mut timed, req, clock).and_then(|mut r| r.run())
    };
    match &result {
        Ok(RunOutcome::Done(_)) => store.finish_run(run_id, RunStatus::Done, None)?,
        Ok(RunOutcome::Interrupted) => store.finish_run(run_id, RunStatus::Interrupted, None)?,
        Ok(RunOutcome::Paused(_)) => store.finish_run(run_id, RunStatus::Paused, None)?,
        Ok(RunOutcome::Diverged(why)) => {
            store.finish_run(run_id, RunStatus::Diverged, Some(why))?
        }
        Err(e) => store.finish_run(run_id, RunStatus::Failed, Some(&e.to_string()))?,
    }
    result
}

/// The weights' moving average (`train.ema`) and the model built on it, which evaluates it.
struct EmaNet {
    avg: ModelEma,
    model: Box<dyn FaceModel>,
    head: Option<MarginHead>,
}

struct Runner<'a, 's> {
    store: &'s mut dyn RunRecords,
    req: RunRequest<'a>,
    device: Device,
    data: CourseData,
    varmap: VarMap,
    model: Box<dyn FaceModel>,
    head: Option<MarginHead>,
    /// With `train.ema`: what dev metrics, verification and checkpoints' `ema` section use.
    ema: Option<EmaNet>,
    optimizer: Box<dyn Optimizer>,
    schedule: Schedule,
    policy: CheckpointPolicy,
    guard: DivergenceGuard,
    train_src: BatchSource,
    eval_src: BatchSource,
    ckpt_dir: PathBuf,
    /// Epochs completed.
    epoch: u32,
    partial: Option<PartialEpoch>,
    step: u64,
    /// Compute dtype and (f16) loss scaler.
    precision: MixedPrecision,
    faults: Faults,
    /// Unreadable images already reported and recorded (`data.on_bad_image = "skip"`).
    reported_skips: BTreeSet<PathBuf>,
    /// The last evaluation's dev predictions: (dev index, predicted class) per image read.
    dev_predictions: Vec<(usize, u32)>,
    /// Time spent in `store` calls, and the current epoch's phases so far.
    store_clock: StoreClock,
    phases: PhaseSeconds,
}

/// Fault injection for tests and debugging, from the environment:
/// `RUNNER_STOP_AFTER_STEPS=N` stops as Ctrl-C would after N optimizer steps of this process;
/// `RUNNER_INJECT_NAN_AT_STEP=N` makes the loss of global step N NaN (once);
/// `RUNNER_STEP_DELAY_MS=N` sleeps N ms after each optimizer step (a slow run, for tests that
/// must catch a run in the middle: signals, cancelled Slurm tasks);
/// `RUNNER_READ_EVERY=K` reads the steps' numbers every K steps, as a CUDA run does, on any
/// device (but every step under the f16 loss scaler).
#[derive(Debug, Default)]
struct Faults {
    stop_after_steps: Option<u64>,
    nan_at_step: Option<u64>,
    step_delay_ms: Option<u64>,
    read_every: Option<usize>,
    steps_here: u64,
}

impl Faults {
    fn from_env() -> Faults {
        let get = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        Faults {
            stop_after_steps: get("RUNNER_STOP_AFTER_STEPS"),
            nan_at_step: get("RUNNER_INJECT_NAN_AT_STEP"),
            step_delay_ms: get("RUNNER_STEP_DELAY_MS"),
            read_every: get("RUNNER_READ_EVERY").map(|k| k as usize),
            steps_here: 0,
        }
    }
}

impl<'a, 's> Runner<'a, 's> {
    fn new(
        store: &'s mut dyn RunRecords,
        req: RunRequest<'a>,
        store_clock: StoreClock,
    ) -> Result<Self, EngineError> {
        let r = &req.recipe;
        let device = super::device(&r.train.device)?;
        store.record_device(
            req.run_id,
            &super::device_label(&device),
            rayon::current_num_threads(),
        )?;
        let root = crate::data::resolve_root(&r.data)?;
        let data = CourseData::open(&root)?;
        if data.train.is_empty() {
            return Err(EngineError::Other(format!(
                "{}: no training images in classification/train",
                root.display()
            )));
        }
        check_plateau_monitor(r, &data, &root)?;
        let num_classes = super::preflight::num_classes(r, &data)
            .map_err(|e| EngineError::Other(e.to_string()))?;
        let seeded = SeededVarMap::new(VarMap::new(), r.train.seed);
        let (model, head) = build_net(r, num_classes, seeded.var_builder(&device))?;
        let varmap = seeded.varmap.clone();
        if let StartFrom::Scratch = &req.start {
            load_init_from(store, &req, &varmap)?;
        }
        let kind = r.model.kind;
        let optimizer = optim::build_with_classifier(&r.optimizer, named_vars(&varmap), &|name| {
            crate::model::is_classifier(kind, name)
        })?;
        let ema = match r.train.ema.decay() {
            Some(decay) => {
                let averaged = SeededVarMap::new(VarMap::new(), r.train.seed);
                let (model, head) = build_net(r, num_classes, averaged.var_builder(&device))?;
                let avg = ModelEma::new(decay, averaged.varmap.clone(), &varmap)?;
                Some(EmaNet { avg, model, head })
            }
            None => None,
        };
        let schedule = schedule::build(&r.scheduler, r.optimizer.lr(), r.train.epochs)?;
        let policy = CheckpointPolicy::from_config(&r.checkpoint);
        let guard = DivergenceGuard::from_config(&r.train);
        let train_src = BatchSource::new(&data, Split::Train, r, &device)?;
        let eval_src = BatchSource::new(&data, Split::Dev, r, &device)?;
        let ckpt_dir = req.dir.clone();
        let precision = MixedPrecision::new(r.train.precision);
        let mut runner = Runner {
            store,
            req,
            device,
            data,
            varmap,
            model,
            head,
            ema,
            optimizer,
            schedule,
            policy,
            guard,
            train_src,
            eval_src,
            ckpt_dir,
            epoch: 0,
            partial: None,
            step: 0,
            precision,
            faults: Faults::from_env(),
            reported_skips: BTreeSet::new(),
            dev_predictions: Vec::new(),
            store_clock,
            phases: PhaseSeconds::default(),
        };
        match runner.req.start.clone() {
            StartFrom::Scratch => {}
            StartFrom::Continue(path) => runner.restore(&path, true)?,
            StartFrom::Parent(path) => runner.restore(&path, false)?,
        }
        Ok(runner)
    }

    fn label(&self) -> String {
        format!("run {}", self.req.run_id)
    }

    /// The model (and margin head) that dev metrics and verification evaluate: the moving
    /// average with `train.ema`, else the trained weights.
    fn eval_net(&self) -> (&dyn FaceModel, Option<&MarginHead>) {
        match &self.ema {
            Some(e) => (e.model.as_ref(), e.head.as_ref()),
            None => (self.model.as_ref(), self.head.as_ref()),
        }
    }

    fn run(&mut self) -> Result<RunOutcome, EngineError> {
        let epochs = self.req.recipe.train.epochs;
        let mut last: BTreeMap<String, f64> = BTreeMap::new();
        while self.epoch < epochs {
            let epoch = self.epoch + 1;
            self.phases = PhaseSeconds::default();
            let store_at_start = self.store_clock.seconds();
            self.store.heartbeat(self.req.run_id)?;
            let lr = self.schedule.lr();
            let train = match self.train_epoch(epoch)? {
                EpochResult::Finished(t) => t,
                EpochResult::Interrupted => return Ok(RunOutcome::Interrupted),
                EpochResult::Diverged(why) => return Ok(RunOutcome::Diverged(why)),
                EpochResult::RolledBack => continue,
            };
            let eval_started = Instant::now();
            let wait_before_eval = self.phases.loader_wait;
            let (val_loss, val_acc) = self.evaluate()?;
            self.phases.eval = since(eval_started) - (self.phases.loader_wait - wait_before_eval);
            // The last updates of an epoch are checked by no later step: check the weights
            // they left, and the validation loss, before anything is recorded or saved.
            if let Some(reason) = self.unhealthy_after_epoch(epoch, val_loss)? {
                match self.guard.diverged(reason, self.policy.latest().is_some()) {
                    DivergenceDecision::Continue => {}
                    DivergenceDecision::Diverged { reason } => {
                        return Ok(RunOutcome::Diverged(reason))
                    }
                    DivergenceDecision::Rollback {
                        new_lr_scale,
                        reason,
                        ..
                    } => {
                        self.rollback(new_lr_scale, &reason)?;
                        continue;
                    }
                }
            }
            let verify = self.verification_due(epoch, epochs);
            let mut metrics = EpochMetrics {
                epoch,
                lr,
                train_loss: train.loss,
                train_acc: train.acc,
                val_loss,
                val_acc,
                verify_acc: None,
                images_per_sec: train.images_per_sec,
                seconds: 0.0,
                phase_seconds: None,
            };
            let score = if verify {
                let verify_started = Instant::now();
                let score = self.verify()?;
                self.phases.verify = since(verify_started);
                score
            } else {
                None
            };
            metrics.verify_acc = score.as_ref().map(|s| s.metrics.accuracy);
            metrics.seconds = train.seconds + train.eval_start.elapsed().as_secs_f64();
            self.store.record_epoch(self.req.run_id, &metrics)?;
            let skipped = score.as_ref().map(|s| &s.skipped[..]).unwrap_or(&[]);
            self.report_skipped(epoch, skipped)?;
            if let Some(s) = &score {
                self.store.record_verification(&VerificationRecord {
                    run_id: self.req.run_id,
                    epoch,
                    split: "verify-dev".into(),
                    metric: s.metric.clone(),
                    // SQLite keeps +-infinity ("accept or reject every unknown"); NaN is NULL.
                    threshold: Some(s.threshold).filter(|t| !t.is_nan()),
                    accuracy: s.metrics.accuracy,
                    accuracy_known: s.metrics.accuracy_known,
                    impostor_rejection: s.metrics.impostor_rejection,
                    distribution: s.distribution.clone(),
                })?;
            }
            self.req
                .reporter
                .epoch_done(&self.label(), epochs, &metrics);
            let m = metrics_map(&metrics);
            let hm: Metrics = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
            self.schedule.step_epoch(&hm)?;
            self.epoch = epoch;
            self.partial = None;
            let checkpoint_started = Instant::now();
            let store_before_checkpoint = self.store_clock.seconds();
            for action in self.policy.actions(epoch, &hm, epoch == epochs) {
                match action {
                    CheckpointAction::Save => self.save_checkpoint(epoch, &m)?,
                    CheckpointAction::Delete(e) => self.delete_checkpoint(e)?,
                }
            }
            self.drop_interrupt_checkpoints()?;
            // the checkpoint records' writes are the store's time
            self.phases.checkpoint =
                since(checkpoint_started) - (self.store_clock.seconds() - store_before_checkpoint);
            self.phases.store = self.store_clock.seconds() - store_at_start;
            let phases = self.phases;
            self.store.record_phases(self.req.run_id, epoch, &phases)?;
            let stop_early = match &self.req.early_stop {
                Some((metric, rule)) if epoch < epochs => {
                    let values: Vec<Option<f64>> = self
                        .store
                        .epochs(self.req.run_id)?
                        .iter()
                        .filter(|e| e.epoch <= epoch)
                        .map(|e| metrics_map(e).get(metric).copied())
                        .collect();
                    rule.stop(epoch, &values)
                }
                _ => false,
            };
            if (self.req.until_epoch == Some(epoch) || stop_early) && epoch < epochs {
                self.pin_rung_checkpoint(epoch, &m)?;
                return Ok(RunOutcome::Paused(m));
            }
            last = m;
            if self.req.stop.load(Ordering::SeqCst) && epoch < epochs {
                // The epoch's checkpoint (if the policy wrote one) may not exist: write one.
                if !self.policy.saved().iter().any(|c| c.epoch == epoch) {
                    self.save_interrupt_checkpoint()?;
                }
                return Ok(RunOutcome::Interrupted);
            }
        }
        Ok(RunOutcome::Done(last))
    }

    /// Warns about, and records in the store, the unreadable images skipped for the first
    /// time: by the training and dev loaders, and by verification (`extra`).
    fn report_skipped(&mut self, epoch: u32, extra: &[SkippedImage]) -> Result<(), EngineError> {
        let mut all = self.train_src.skipped();
        all.extend(self.eval_src.skipped());
        all.extend_from_slice(extra);
        let mut new = Vec::new();
        for s in all {
            if self.reported_skips.insert(s.path.clone()) {
                self.req.reporter.warn(&format!(
                    "{}: skipped unreadable image {s} (data.on_bad_image = \"skip\")",
                    self.label()
                ));
                new.push((s.path.display().to_string(), s.error));
            }
        }
        self.store
            .record_skipped_images(self.req.run_id, epoch, &new)?;
        Ok(())
    }

    /// The optimizer's parameters, fixed for the run (a rollback sets their values in place).
    fn optimizer_vars(&self) -> Vec<candle_core::Var> {
        self.optimizer
            .params()
            .iter()
            .map(|p| p.var.clone())
            .collect()
    }

    /// What is non-finite at the end of an epoch: the weights, or the validation loss.
    fn unhealthy_after_epoch(
        &self,
        epoch: u32,
        val_loss: Option<f64>,
    ) -> Result<Option<String>, EngineError> {
        let vars = self.optimizer_vars();
        let mut what = Vec::new();
        if !optim::vars_finite(&vars)? {
            what.push("non-finite weights".to_string());
        }
        if let Some(v) = val_loss.filter(|v| !v.is_finite()) {
            what.push(format!("validation loss = {v}"));
        }
        Ok((!what.is_empty()).then(|| {
            format!(
                "epoch {epoch} (after step {}): {}",
                self.step.saturating_sub(1),
                what.join(", ")
            )
        }))
    }

    fn verification_due(&self, epoch: u32, epochs: u32) -> bool {
        let v = &self.req.recipe.verification;
        if !v.enabled || !self.data.has_verification() {
            return false;
        }
        epoch == epochs || (v.every > 0 && epoch.is_multiple_of(v.every))
    }

    fn verify(&mut self) -> Result<Option<VerificationScore>, EngineError> {
        let score = score_verification(
            self.eval_net().0,
            &self.data,
            &self.req.recipe,
            &self.device,
        )?;
        Ok(Some(score))
    }

    /// Training logits. `frozen`: the backbone runs in eval mode (BatchNorm statistics
    /// frozen, no drop path) and no gradient reaches it (`train.freeze_backbone_epochs`);
    /// `no_margin`: a margin head gives plain scaled cosines (`loss.margin_warmup_epochs`).
    fn train_logits(
        &self,
        x: &Tensor,
        labels: &Tensor,
        ctx: &mut ForwardCtx,
        frozen: bool,
        no_margin: bool,
    ) -> Result<Tensor, EngineError> {
        let targets = (!no_margin).then_some(labels);
        let embedding = if frozen {
            candle_core::no_grad(|| self.model.embed(x, &mut ForwardCtx::eval()))?
        } else {
            self.model.embed(x, ctx)?
        };
        Ok(match &self.head {
            None => self.precision.output(
                &self
                    .model
                    .classifier_logits_from_embedding(&embedding, ctx)?,
            )?,
            Some(head) => head.forward(&self.precision.output(&embedding)?, targets)?,
        })
    }

    /// Eval-mode logits of the evaluated net (`eval_net`), recording no graph (as under
    /// PyTorch's `no_grad`).
    fn eval_logits(&self, x: &Tensor) -> Result<Tensor, EngineError> {
        let mut ctx = ForwardCtx::eval();
        let (model, head) = self.eval_net();
        candle_core::no_grad(|| {
            Ok(match head {
                None => self.precision.output(&model.forward(x, &mut ctx)?)?,
                Some(head) => {
                    let e = self.precision.output(&model.embed(x, &mut ctx)?)?;
                    head.forward(&e, None)?
                }
            })
        })
    }

    fn evaluate(&mut self) -> Result<(Option<f64>, Option<f64>), EngineError> {
        if self.eval_src.is_empty() {
            return Ok((None, None));
        }
        let smoothing = self.req.recipe.loss.label_smoothing;
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0u64, 0u64);
        self.dev_predictions.clear();
        let mut batches_iter = self.eval_src.epoch(0, 0)?;
        loop {
            let waiting = Instant::now();
            let next = batches_iter.next();
            self.phases.loader_wait += since(waiting);
            let Some(item) = next else { break };
            let (_, batch) = item?;
            let images = self.precision.input(&batch.images)?;
            let logits = self.eval_logits(&images)?.detach();
            let l = loss::cross_entropy(&logits, &batch.labels, smoothing)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            let n = batch.labels.dim(0)? as u64;
            loss_sum += l * n as f64;
            let predicted = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
            // the true classes are the dev set's own (the batch's labels, without a read)
            let dev = &self.data.dev;
            correct += batch
                .indices
                .iter()
                .zip(&predicted)
                .filter(|(&i, &p)| dev[i].label as u32 == p)
                .count() as u64;
            self.dev_predictions
                .extend(batch.indices.iter().copied().zip(predicted));
            seen += n;
        }
        if seen == 0 {
            return Ok((None, None)); // every dev image skipped as unreadable: nothing measured
        }
        Ok((
            Some(loss_sum / seen as f64),
            Some(correct as f64 / seen as f64),
        ))
    }
}

/// The network a recipe trains: the model, and a margin loss's head (its class weights under
/// `margin_head`), built on one `VarBuilder`.
pub fn build_net(
    r: &Recipe,
    num_classes: usize,
    vb: candle_nn::VarBuilder,
) -> Result<(Box<dyn FaceModel>, Option<MarginHead>), EngineError> {
    let model = crate::model::build(&r.model, num_classes, vb.clone())?;
    let head = MarginHead::build(
        &r.loss,
        vb.pp(crate::model::MARGIN_HEAD_PREFIX),
        model.embedding_dim(),
        num_classes,
    )?;
    Ok((model, head))
}

/// Loads the weights a fresh run starts from (`model.init_from`): a weights file, or the
/// checkpoint of the parent run the planner linked (recorded as the run's `init_from_run`).
/// The classifier is created afresh when it does not fit (another identity count), with a
/// one-line notice; the rest must fit.
fn load_init_from(
    store: &mut dyn RunRecords,
    req: &RunRequest,
    varmap: &VarMap,
) -> Result<(), EngineError> {
    let kind: ModelKind = req.recipe.model.kind;
    let label = format!("run {}", req.run_id);
    match &req.recipe.model.init_from {
        None => {}
        Some(InitFrom::Weights(path)) => {
            let report = crate::model::load_file_for_transfer(varmap, Path::new(path), kind)?;
            if let Some(n) = report.fresh_notice(path) {
                req.reporter.info(&format!("{label}: {n}"));
            }
        }
        Some(InitFrom::Run(link)) => {
            let (parent, path) = store.init_checkpoint(link)?;
            let ck = read_checkpoint(&path)?;
            let source = format!("run {parent} ({})", path.display());
            let report = crate::model::load_for_transfer(varmap, ck.weights(), &source, kind)?;
            store.set_init_from(req.run_id, parent, &path.display().to_string())?;
            req.reporter.info(&format!(
                "{label}: starting from run {parent}'s {} checkpoint (epoch {}{}): {}",
                link.pick.name(),
                ck.meta.epoch,
                if ck.ema.is_empty() {
                    ""
                } else {
                    ", the weights' moving average"
                },
                path.display()
            ));
            if let Some(n) = report.fresh_notice(&format!("run {parent}'s checkpoint")) {
                req.reporter.info(&format!("{label}: {n}"));
            }
        }
    }
    Ok(())
}

/// A stable 64-bit mix of seeds (SplitMix64 steps).
pub fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut x = a ^ 0x9E37_79B9_7F4A_7C15;
    for v in [b, c] {
        x = x.wrapping_add(v).wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
    }
    x
}

/// ReduceLROnPlateau reads its metric every epoch: the data set must produce it.
fn check_plateau_monitor(r: &Recipe, data: &CourseData, root: &Path) -> Result<(), EngineError> {
    if r.scheduler.kind != SchedulerKind::Plateau {
        return Ok(());
    }
    let monitor = r.scheduler.monitor();
    let missing = match monitor {
        "val_loss" | "val_acc" if data.dev.is_empty() => Some("no dev images (classification/dev)"),
        "verify_acc" if !data.has_verification() => {
            Some("no verification data (verification/known and unknown_dev)")
        }
        _ => None,
    };
    match missing {
        Some(why) => Err(EngineError::Other(format!(
            "scheduler.monitor = \"{monitor}\" is never logged: {} has {why}",
            root.display()
        ))),
        None => Ok(()),
    }
}

/// An epoch's metrics by contract name (finite values only).
pub fn metrics_map(m: &EpochMetrics) -> BTreeMap<String, f64> {
    crate::recipe::validate::METRICS
        .iter()
        .filter_map(|k| {
            m.get(k)
                .filter(|v| v.is_finite())
                .map(|v| (k.to_string(), v))
        })
        .collect()
}
