//! A run's training epoch: the steps (forward, backward, gradient check, clipping, update,
//! moving average), and the reads of their numbers from the device. Every read of a training
//! step goes through [`readback`]: one copy per step where the step must know its numbers
//! before its update (the f16 loss scaler skips overflowed steps; the CPU, where a read costs
//! nothing), one per [`GPU_READ_EVERY`] steps otherwise, the steps' numbers kept on the device
//! meanwhile and settled in order (the divergence guard then sees each step as it was).

use std::sync::atomic::Ordering;
use std::time::Instant;

use candle_core::{DType, Tensor};

use super::{mix, Runner};
use crate::engine::phases::since;
use crate::engine::progress::set_batch_message;
use crate::engine::EngineError;
use crate::model::ForwardCtx;
use crate::train::divergence::{DivergenceDecision, StepHealth};
use crate::train::loss;
use crate::train::optim;
use crate::train::precision::StepVerdict;

use super::PartialEpoch;

/// Steps whose numbers a CUDA run (f32, bf16) keeps on the device between reads: the host
/// queues this many steps' kernels without waiting for the GPU.
pub const GPU_READ_EVERY: usize = 16;

thread_local! {
    /// The most device reads any training step on this thread made (tests: at most one).
    static MAX_STEP_READBACKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Steps and reads of the training steps run on this thread.
    static STEPS_AND_READS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    /// Tests: the steps per read of runs trained on this thread, in place of the device's.
    static READ_EVERY: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Reads a step's numbers from the device in one copy: `parts` are tensors (on one device),
/// flattened and joined there in f64 and read back together; every read of a training step
/// goes through here.
fn readback(parts: &[Tensor]) -> Result<Vec<f64>, EngineError> {
    let flat = parts
        .iter()
        .map(|p| p.to_dtype(DType::F64)?.flatten_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&flat, 0)?.to_vec1::<f64>()?)
}

fn note_step_readbacks(n: u64) {
    MAX_STEP_READBACKS.with(|m| m.set(m.get().max(n)));
    STEPS_AND_READS.with(|c| {
        let (steps, reads) = c.get();
        c.set((steps + 1, reads + n))
    });
}

/// The most reads of a tensor's values into host memory (on CUDA, each a copy that waits for
/// the stream) that any training step run on this thread made since the last call, which
/// resets it. A step reads at most once: its loss, correct count and gradient checks together.
pub fn take_max_step_readbacks() -> u64 {
    MAX_STEP_READBACKS.with(|m| m.replace(0))
}

/// The training steps run on this thread and the reads they made, since the last call (which
/// resets both).
pub fn take_steps_and_reads() -> (u64, u64) {
    STEPS_AND_READS.with(|c| c.replace((0, 0)))
}

/// Tests: runs trained on this thread read their steps' numbers every `k` steps (`None`: as
/// the device decides), as a CUDA run does; a run with the f16 loss scaler still reads every
/// step.
pub fn set_read_every_for_test(k: Option<usize>) {
    READ_EVERY.with(|c| c.set(k));
}

pub(super) enum EpochResult {
    Finished(TrainStats),
    Interrupted,
    Diverged(String),
    RolledBack,
}

pub(super) struct TrainStats {
    pub loss: f64,
    pub acc: f64,
    pub images_per_sec: f64,
    pub seconds: f64,
    pub eval_start: Instant,
}

/// A step whose numbers are still on the device: `[loss, correct, grad_check..]` in f64.
struct PendingStep {
    step: u64,
    images: u64,
    lr: f64,
    values: Tensor,
}

/// The epoch's running totals, as the progress bar shows them.
struct Tally {
    loss_sum: f64,
    correct: u64,
    seen: u64,
    images_timed: u64,
}

impl Runner<'_, '_> {
    /// Steps per read of the step's numbers: 1 where the step needs them before its update
    /// (the f16 loss scaler) or where a read costs nothing (the CPU), else [`GPU_READ_EVERY`].
    fn read_every(&self) -> usize {
        if self.precision.scaler.enabled {
            return 1;
        }
        READ_EVERY
            .with(|c| c.get())
            .or(self.faults.read_every)
            .unwrap_or(if self.device.is_cpu() {
                1
            } else {
                GPU_READ_EVERY
            })
            .max(1)
    }

    /// Judges one step from its numbers (unless `judge` is false: a step the f16 loss scaler
    /// skipped): `Some` ends the epoch (diverged, or rolled back); else the step counts in
    /// `tally`.
    fn settle(
        &mut self,
        (epoch, step): (u32, u64),
        values: &[f64],
        images: u64,
        tally: &mut Tally,
        judge: bool,
    ) -> Result<Option<EpochResult>, EngineError> {
        let clip = self.req.recipe.train.grad_clip.is_some();
        let mut loss_v = values[0];
        if self.faults.nan_at_step == Some(step) {
            self.faults.nan_at_step = None;
            loss_v = f64::NAN;
        }
        let (grads_finite, grad_norm) = optim::grad_summary(&values[2..], clip);
        let health = StepHealth {
            epoch,
            step,
            loss: loss_v,
            grads_finite: grad_norm.map_or(grads_finite, |g| g.is_finite()),
            grad_norm,
        };
        let can_rollback = self.policy.latest().is_some();
        let decision = if judge {
            self.guard.check(&health, can_rollback)
        } else {
            DivergenceDecision::Continue
        };
        match decision {
            DivergenceDecision::Continue => {}
            DivergenceDecision::Diverged { reason } => {
                self.step = step;
                return Ok(Some(EpochResult::Diverged(reason)));
            }
            DivergenceDecision::Rollback {
                new_lr_scale,
                reason,
                ..
            } => {
                // the steps after the bad one are undone with it
                self.step = step;
                self.rollback(new_lr_scale, &reason)?;
                return Ok(Some(EpochResult::RolledBack));
            }
        }
        tally.loss_sum += loss_v * images as f64;
        tally.correct += values[1] as u64;
        tally.seen += images;
        tally.images_timed += images;
        Ok(None)
    }

    /// Reads the pending steps' numbers in one copy and settles them in order: the learning
    /// rate of each step settled, or what ends the epoch.
    fn flush(
        &mut self,
        epoch: u32,
        pending: &mut Vec<PendingStep>,
        tally: &mut Tally,
    ) -> Result<Result<Vec<f64>, EpochResult>, EngineError> {
        if pending.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let tensors: Vec<Tensor> = pending.iter().map(|p| p.values.clone()).collect();
        let values = readback(&tensors)?;
        let width = values.len() / pending.len();
        let mut lrs = Vec::with_capacity(pending.len());
        for (i, p) in std::mem::take(pending).into_iter().enumerate() {
            let v = &values[i * width..(i + 1) * width];
            if let Some(end) = self.settle((epoch, p.step), v, p.images, tally, true)? {
                return Ok(Err(end));
            }
            lrs.push(p.lr);
        }
        Ok(Ok(lrs))
    }

    pub(super) fn train_epoch(&mut self, epoch: u32) -> Result<EpochResult, EngineError> {
        let r = &self.req.recipe;
        let seed = r.train.seed;
        let smoothing = r.loss.label_smoothing;
        let total_epochs = r.train.epochs;
        let grad_clip = r.train.grad_clip;
        let per_iter = r.scheduler.warmup_per_iteration;
        let frozen = epoch <= r.train.freeze_backbone_epochs;
        let no_margin = epoch <= r.loss.margin_warmup_epochs;
        let read_every = self.read_every();
        let (mut tally, mut prior_seconds, start_batch) =
            match self.partial.take().filter(|p| p.epoch == epoch) {
                Some(p) => (
                    Tally {
                        loss_sum: p.loss_sum,
                        correct: p.correct,
                        seen: p.seen,
                        images_timed: 0,
                    },
                    p.seconds,
                    p.batches_done,
                ),
                None => (
                    Tally {
                        loss_sum: 0.0,
                        correct: 0,
                        seen: 0,
                        images_timed: 0,
                    },
                    0.0,
                    0,
                ),
            };
        let batches = self.train_src.num_batches();
        let bar = self
            .req
            .reporter
            .epoch_bar(&self.label(), epoch, total_epochs, batches as u64);
        bar.set_position(start_batch as u64);
        let started = Instant::now();
        let vars = self.optimizer_vars();
        let mut batches_iter = self.train_src.epoch(epoch, start_batch)?;
        let mut loader_wait = 0.0;
        let mut pending: Vec<PendingStep> = Vec::with_capacity(read_every);
        loop {
            let waiting = Instant::now();
            let next = batches_iter.next();
            loader_wait += since(waiting);
            let Some(item) = next else { break };
            let (b, batch) = item?;
            let lr = if per_iter {
                self.schedule.lr_at(b, batches)
            } else {
                self.schedule.lr()
            };
            // the step's reads of device values, from its forward to its settling
            let reads_before = candle_core::readback_audit::count();
            let mut ctx = ForwardCtx::train(mix(seed, epoch as u64, b as u64));
            let images = self.precision.input(&batch.images)?;
            let logits = self.train_logits(&images, &batch.labels, &mut ctx, frozen, no_margin)?;
            let loss_t = loss::cross_entropy(&logits, &batch.labels, smoothing)?;
            let n = batch.labels.dim(0)? as u64;
            let mut grads = self.precision.backward(&loss_t)?;
            self.precision.unscale(&mut grads, &vars)?;
            // The step's numbers, gathered on the device: the loss, the correct count, and each
            // gradient's sum of squares and non-finite count (one fused pass).
            let mut parts = vec![
                loss_t.to_dtype(DType::F64)?,
                loss::correct_tensor(&logits, &batch.labels)?.to_dtype(DType::F64)?,
            ];
            let check = optim::grad_probes(&grads, &vars)?;
            parts.extend(check.clone());
            let step = self.step;
            if read_every == 1 {
                // read now: the loss scaler and the guard judge the step before its update
                let values = readback(&parts)?;
                let (grads_finite, grad_norm) =
                    optim::grad_summary(&values[2..], grad_clip.is_some());
                let loss_v = if self.faults.nan_at_step == Some(step) {
                    f64::NAN
                } else {
                    values[0]
                };
                let verdict = self.precision.after_check(grads_finite, loss_v);
                let judge = verdict == StepVerdict::Apply;
                if let Some(end) = self.settle((epoch, step), &values, n, &mut tally, judge)? {
                    bar.finish_and_clear();
                    return Ok(end);
                }
                if verdict == StepVerdict::Apply {
                    if let (Some(max), Some(norm)) = (grad_clip, grad_norm) {
                        optim::clip_with_norm(&mut grads, &vars, max, norm)?;
                    }
                    self.optimizer.step(&grads, lr)?;
                }
            } else {
                // update now, judge later: a bad step is undone by the guard's rollback
                if let (Some(max), Some(check)) = (grad_clip, &check) {
                    optim::clip_on_device(&mut grads, &vars, max, check)?;
                }
                self.optimizer.step(&grads, lr)?;
                let values = Tensor::cat(
                    &parts
                        .iter()
                        .map(|p| p.to_dtype(DType::F64)?.flatten_all())
                        .collect::<candle_core::Result<Vec<_>>>()?,
                    0,
                )?;
                pending.push(PendingStep {
                    step,
                    images: n,
                    lr,
                    values,
                });
            }
            self.step += 1;
            if let Some(e) = &self.ema {
                // timm: after every update, with the count of updates so far
                e.avg.update(&self.varmap, self.step)?;
            }
            self.faults.steps_here += 1;
            if self.faults.stop_after_steps == Some(self.faults.steps_here) {
                self.req.stop.store(true, Ordering::SeqCst);
            }
            let stopping = self.req.stop.load(Ordering::SeqCst) && b + 1 < batches;
            let mut settled = vec![lr];
            if read_every > 1 {
                settled.clear();
                if pending.len() >= read_every || b + 1 == batches || stopping {
                    match self.flush(epoch, &mut pending, &mut tally)? {
                        Ok(lrs) => settled = lrs,
                        Err(end) => {
                            note_step_readbacks(
                                candle_core::readback_audit::count() - reads_before,
                            );
                            bar.finish_and_clear();
                            return Ok(end);
                        }
                    }
                }
            }
            note_step_readbacks(candle_core::readback_audit::count() - reads_before);
            if let Some(ms) = self.faults.step_delay_ms {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            let elapsed = started.elapsed().as_secs_f64();
            for lr in settled {
                bar.inc(1);
                set_batch_message(
                    &bar,
                    tally.loss_sum / tally.seen.max(1) as f64,
                    tally.correct as f64 / tally.seen.max(1) as f64,
                    lr,
                    tally.images_timed as f64 / elapsed.max(1e-9),
                );
            }
            if stopping {
                self.partial = Some(PartialEpoch {
                    epoch,
                    batches_done: b + 1,
                    loss_sum: tally.loss_sum,
                    correct: tally.correct,
                    seen: tally.seen,
                    seconds: prior_seconds + elapsed,
                });
                bar.finish_and_clear();
                self.save_interrupt_checkpoint()?;
                return Ok(EpochResult::Interrupted);
            }
        }
        // steps left unread when the loader ended early
        if let Err(end) = self.flush(epoch, &mut pending, &mut tally)? {
            bar.finish_and_clear();
            return Ok(end);
        }
        bar.finish_and_clear();
        if tally.seen == 0 {
            // nothing trained: every image skipped as unreadable, or no full batch
            return Err(EngineError::Other(format!(
                "epoch {epoch}: no training image was read ({} skipped as unreadable, or fewer \
                 than one batch of train.batch_size = {} images)",
                self.train_src.skipped().len(),
                self.req.recipe.train.batch_size
            )));
        }
        let elapsed = started.elapsed().as_secs_f64();
        prior_seconds += elapsed;
        self.phases.loader_wait += loader_wait;
        self.phases.train = elapsed - loader_wait;
        Ok(EpochResult::Finished(TrainStats {
            loss: tally.loss_sum / tally.seen.max(1) as f64,
            acc: tally.correct as f64 / tally.seen.max(1) as f64,
            images_per_sec: tally.images_timed as f64 / elapsed.max(1e-9),
            seconds: prior_seconds,
            eval_start: Instant::now(),
        }))
    }
}
