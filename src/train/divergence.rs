//! Divergence policy: a non-finite loss or gradient stops the step; the recipe's
//! `train.on_divergence` says whether the run fails or rolls back to its last good checkpoint
//! with the lr scaled by `rollback_factor` (at most `max_rollbacks` times).

use crate::recipe::{DivergencePolicy, TrainConfig};
use serde::{Deserialize, Serialize};

/// What one training step looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepHealth {
    pub epoch: u32,
    /// Step index within the run (or the epoch; only reported).
    pub step: u64,
    pub loss: f64,
    pub grads_finite: bool,
    /// The global gradient norm, if computed.
    pub grad_norm: Option<f64>,
}

impl StepHealth {
    pub fn is_healthy(&self) -> bool {
        self.loss.is_finite() && self.grads_finite && self.grad_norm.is_none_or(f64::is_finite)
    }

    fn describe(&self) -> String {
        let mut what = Vec::new();
        if !self.loss.is_finite() {
            what.push(format!("loss = {}", self.loss));
        }
        if !self.grads_finite {
            what.push("non-finite gradient".to_string());
        }
        if let Some(n) = self.grad_norm.filter(|n| !n.is_finite()) {
            what.push(format!("gradient norm = {n}"));
        }
        format!(
            "epoch {} step {}: {}",
            self.epoch,
            self.step,
            what.join(", ")
        )
    }
}

/// The guard's verdict on a step.
#[derive(Debug, Clone, PartialEq)]
pub enum DivergenceDecision {
    /// Apply the step.
    Continue,
    /// Stop: mark the run `diverged` with this reason.
    Diverged { reason: String },
    /// Skip the step, reload the last good checkpoint, and multiply the lr by the schedule's
    /// new scale `new_lr_scale` (cumulative: `rollback_factor ^ rollbacks`).
    Rollback {
        new_lr_scale: f64,
        rollbacks: u32,
        reason: String,
    },
}

/// Tracks rollbacks across a run. Its state (`rollbacks`, `lr_scale`) belongs in checkpoints'
/// `extra` so a resumed run keeps counting; a rollback must NOT restore it from the checkpoint
/// it reloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DivergenceGuard {
    pub policy: DivergencePolicy,
    pub rollback_factor: f64,
    pub max_rollbacks: u32,
    pub rollbacks: u32,
    pub lr_scale: f64,
}

impl DivergenceGuard {
    pub fn new(policy: DivergencePolicy, rollback_factor: f64, max_rollbacks: u32) -> Self {
        DivergenceGuard {
            policy,
            rollback_factor,
            max_rollbacks,
            rollbacks: 0,
            lr_scale: 1.0,
        }
    }

    pub fn from_config(cfg: &TrainConfig) -> Self {
        DivergenceGuard::new(cfg.on_divergence, cfg.rollback_factor, cfg.max_rollbacks)
    }

    /// Judges a step. `can_rollback`: a good checkpoint exists to return to.
    pub fn check(&mut self, health: &StepHealth, can_rollback: bool) -> DivergenceDecision {
        if health.is_healthy() {
            return DivergenceDecision::Continue;
        }
        self.diverged(health.describe(), can_rollback)
    }

    /// The policy's answer to a divergence found outside a step (non-finite weights or
    /// validation loss at the end of an epoch); `reason` says what and where.
    pub fn diverged(&mut self, reason: String, can_rollback: bool) -> DivergenceDecision {
        match self.policy {
            DivergencePolicy::Fail => DivergenceDecision::Diverged { reason },
            DivergencePolicy::Rollback if !can_rollback => DivergenceDecision::Diverged {
                reason: format!("{reason} (no checkpoint to roll back to)"),
            },
            DivergencePolicy::Rollback if self.rollbacks >= self.max_rollbacks => {
                DivergenceDecision::Diverged {
                    reason: format!(
                        "{reason} (after {} rollback(s), the maximum)",
                        self.rollbacks
                    ),
                }
            }
            DivergencePolicy::Rollback => {
                self.rollbacks += 1;
                self.lr_scale *= self.rollback_factor;
                DivergenceDecision::Rollback {
                    new_lr_scale: self.lr_scale,
                    rollbacks: self.rollbacks,
                    reason,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(loss: f64, grads_finite: bool) -> StepHealth {
        StepHealth {
            epoch: 2,
            step: 17,
            loss,
            grads_finite,
            grad_norm: None,
        }
    }

    #[test]
    fn healthy_steps_continue() {
        let mut g = DivergenceGuard::new(DivergencePolicy::Fail, 0.5, 3);
        assert_eq!(
            g.check(&step(1.5, true), true),
            DivergenceDecision::Continue
        );
        let mut h = step(1.5, true);
        h.grad_norm = Some(3.0);
        assert_eq!(g.check(&h, false), DivergenceDecision::Continue);
    }

    #[test]
    fn fail_policy_reports_the_step_and_values() {
        let mut g = DivergenceGuard::new(DivergencePolicy::Fail, 0.5, 3);
        match g.check(&step(f64::NAN, true), true) {
            DivergenceDecision::Diverged { reason } => {
                assert!(reason.contains("epoch 2 step 17"), "{reason}");
                assert!(reason.contains("loss = NaN"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        let mut h = step(1.0, true);
        h.grad_norm = Some(f64::INFINITY);
        match g.check(&h, true) {
            DivergenceDecision::Diverged { reason } => assert!(reason.contains("inf"), "{reason}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn rollback_scales_lr_until_the_limit() {
        let mut g = DivergenceGuard::new(DivergencePolicy::Rollback, 0.5, 2);
        let bad = step(1.0, false);
        assert_eq!(
            g.check(&bad, true),
            DivergenceDecision::Rollback {
                new_lr_scale: 0.5,
                rollbacks: 1,
                reason: "epoch 2 step 17: non-finite gradient".into()
            }
        );
        match g.check(&bad, true) {
            DivergenceDecision::Rollback {
                new_lr_scale,
                rollbacks,
                ..
            } => {
                assert_eq!(new_lr_scale, 0.25);
                assert_eq!(rollbacks, 2);
            }
            d => panic!("{d:?}"),
        }
        match g.check(&bad, true) {
            DivergenceDecision::Diverged { reason } => {
                assert!(reason.contains("after 2 rollback(s)"), "{reason}")
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn rollback_without_checkpoint_diverges() {
        let mut g = DivergenceGuard::new(DivergencePolicy::Rollback, 0.5, 3);
        match g.check(&step(f64::INFINITY, true), false) {
            DivergenceDecision::Diverged { reason } => {
                assert!(reason.contains("no checkpoint"), "{reason}")
            }
            d => panic!("{d:?}"),
        }
        assert_eq!(g.rollbacks, 0);
    }

    #[test]
    fn guard_state_round_trips_and_reads_config() {
        let cfg = TrainConfig {
            on_divergence: DivergencePolicy::Rollback,
            rollback_factor: 0.1,
            max_rollbacks: 5,
            ..TrainConfig::default()
        };
        let mut g = DivergenceGuard::from_config(&cfg);
        g.check(&step(f64::NAN, true), true);
        let json = serde_json::to_value(&g).expect("serialize");
        let back: DivergenceGuard = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, g);
        assert!((back.lr_scale - 0.1).abs() < 1e-15);
    }
}
