//! Checkpoint policy, burn-train style: small rules that compose. Each rule says whether it
//! wants an epoch saved and which saved checkpoints it wants kept; the composed
//! [`CheckpointPolicy`] saves when any rule asks (and always at the last epoch) and deletes a
//! checkpoint only when no rule keeps it. The newest checkpoint is always kept (resume needs
//! it). Rules are stateless: the policy's whole state is the list of saved checkpoints, so it
//! is rebuilt on resume with [`CheckpointPolicy::resume`].
//!
//! Epoch numbers are 1-based (epoch `e` = the state after `e` completed epochs).

use crate::recipe::{CheckpointConfig, MetricMode};
use crate::train::Metrics;
use std::collections::{BTreeMap, BTreeSet};

/// What the loop must do at the end of an epoch, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointAction {
    /// Write the checkpoint of the epoch just finished.
    Save,
    /// Delete the checkpoint of this epoch.
    Delete(u32),
}

/// A checkpoint on disk: its epoch and that epoch's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedCheckpoint {
    pub epoch: u32,
    pub metrics: BTreeMap<String, f64>,
}

/// Anything that turns the end of an epoch into checkpoint actions.
pub trait CheckpointingStrategy {
    fn actions(&mut self, epoch: u32, metrics: &Metrics, is_last: bool) -> Vec<CheckpointAction>;
}

/// One small, stateless rule of a policy.
pub trait CheckpointRule: std::fmt::Debug + Send {
    /// Whether this rule wants `epoch` (with `metrics`) saved, given the checkpoints already
    /// saved (`saved`, oldest first, not including `epoch`).
    fn wants_save(&self, epoch: u32, metrics: &Metrics, saved: &[SavedCheckpoint]) -> bool;
    /// The epochs among `saved` (oldest first) this rule wants kept.
    fn keep(&self, saved: &[SavedCheckpoint]) -> BTreeSet<u32>;
}

/// Keep the `n` most recent checkpoints (saves nothing by itself).
#[derive(Debug, Clone)]
pub struct KeepLastN(pub u32);

impl CheckpointRule for KeepLastN {
    fn wants_save(&self, _: u32, _: &Metrics, _: &[SavedCheckpoint]) -> bool {
        false
    }
    fn keep(&self, saved: &[SavedCheckpoint]) -> BTreeSet<u32> {
        let mut epochs: Vec<u32> = saved.iter().map(|c| c.epoch).collect();
        epochs.sort_unstable();
        epochs.iter().rev().take(self.0 as usize).copied().collect()
    }
}

/// Save every `n` epochs (epochs `n, 2n, ...`); keeps nothing by itself.
#[derive(Debug, Clone)]
pub struct EveryN(pub u32);

impl CheckpointRule for EveryN {
    fn wants_save(&self, epoch: u32, _: &Metrics, _: &[SavedCheckpoint]) -> bool {
        self.0 > 0 && epoch.is_multiple_of(self.0)
    }
    fn keep(&self, _: &[SavedCheckpoint]) -> BTreeSet<u32> {
        BTreeSet::new()
    }
}

/// Save an epoch whose monitored metric ranks among the best `n` so far, and keep the best
/// `n` checkpoints. Ties go to the earlier epoch; a missing or NaN metric never ranks.
#[derive(Debug, Clone)]
pub struct KeepBestN {
    pub metric: String,
    pub mode: MetricMode,
    pub n: u32,
}

impl KeepBestN {
    fn value(&self, metrics: &BTreeMap<String, f64>) -> Option<f64> {
        metrics.get(&self.metric).copied().filter(|v| !v.is_nan())
    }
    /// `a` strictly better than `b`.
    fn better(&self, a: f64, b: f64) -> bool {
        match self.mode {
            MetricMode::Max => a > b,
            MetricMode::Min => a < b,
        }
    }
    /// Saved epochs with a metric, best first (ties: earlier first).
    fn ranked(&self, saved: &[SavedCheckpoint]) -> Vec<(u32, f64)> {
        let mut r: Vec<(u32, f64)> = saved
            .iter()
            .filter_map(|c| self.value(&c.metrics).map(|v| (c.epoch, v)))
            .collect();
        r.sort_by(|a, b| {
            if self.better(a.1, b.1) {
                std::cmp::Ordering::Less
            } else if self.better(b.1, a.1) {
                std::cmp::Ordering::Greater
            } else {
                a.0.cmp(&b.0)
            }
        });
        r
    }
}

impl CheckpointRule for KeepBestN {
    fn wants_save(&self, _epoch: u32, metrics: &Metrics, saved: &[SavedCheckpoint]) -> bool {
        if self.n == 0 {
            return false;
        }
        let Some(v) = metrics.get(&self.metric).copied().filter(|v| !v.is_nan()) else {
            return false;
        };
        let ranked = self.ranked(saved);
        ranked.len() < self.n as usize
            || ranked
                .get(self.n as usize - 1)
                .is_some_and(|&(_, worst_kept)| self.better(v, worst_kept))
    }
    fn keep(&self, saved: &[SavedCheckpoint]) -> BTreeSet<u32> {
        self.ranked(saved)
            .into_iter()
            .take(self.n as usize)
            .map(|(e, _)| e)
            .collect()
    }
}

/// The composed policy: rules plus the checkpoints saved so far.
#[derive(Debug)]
pub struct CheckpointPolicy {
    rules: Vec<Box<dyn CheckpointRule>>,
    saved: Vec<SavedCheckpoint>,
}

impl CheckpointPolicy {
    pub fn new(rules: Vec<Box<dyn CheckpointRule>>) -> Self {
        CheckpointPolicy {
            rules,
            saved: Vec::new(),
        }
    }

    /// The recipe's policy: `KeepBestN(monitor, mode, keep_best)`, `KeepLastN(keep_last)`,
    /// `EveryN(every)`.
    pub fn from_config(cfg: &CheckpointConfig) -> Self {
        CheckpointPolicy::new(vec![
            Box::new(KeepBestN {
                metric: cfg.monitor.clone(),
                mode: cfg.mode,
                n: cfg.keep_best,
            }),
            Box::new(KeepLastN(cfg.keep_last)),
            Box::new(EveryN(cfg.every)),
        ])
    }

    /// The recipe's policy continuing a run whose checkpoints on disk are `saved`.
    pub fn resume(cfg: &CheckpointConfig, saved: Vec<SavedCheckpoint>) -> Self {
        let mut p = CheckpointPolicy::from_config(cfg);
        p.saved = saved;
        p.saved.sort_by_key(|c| c.epoch);
        p.saved.dedup_by_key(|c| c.epoch);
        p
    }

    /// The checkpoints currently kept, oldest first.
    pub fn saved(&self) -> &[SavedCheckpoint] {
        &self.saved
    }

    /// The newest kept checkpoint's epoch.
    pub fn latest(&self) -> Option<u32> {
        self.saved.iter().map(|c| c.epoch).max()
    }

    /// The best kept checkpoint's epoch by `metric` / `mode` (ties: earlier), if any has it.
    pub fn best(&self, metric: &str, mode: MetricMode) -> Option<u32> {
        let rule = KeepBestN {
            metric: metric.to_string(),
            mode,
            n: 1,
        };
        rule.ranked(&self.saved).first().map(|&(e, _)| e)
    }

    /// Forgets checkpoints after `epoch` (a rollback returned to `epoch`); returns their epochs
    /// so the loop can delete them.
    pub fn truncate_after(&mut self, epoch: u32) -> Vec<u32> {
        let gone: Vec<u32> = self
            .saved
            .iter()
            .filter(|c| c.epoch > epoch)
            .map(|c| c.epoch)
            .collect();
        self.saved.retain(|c| c.epoch <= epoch);
        gone
    }
}

impl CheckpointingStrategy for CheckpointPolicy {
    fn actions(&mut self, epoch: u32, metrics: &Metrics, is_last: bool) -> Vec<CheckpointAction> {
        let previous: Vec<SavedCheckpoint> = self
            .saved
            .iter()
            .filter(|c| c.epoch != epoch)
            .cloned()
            .collect();
        let save = is_last
            || self
                .rules
                .iter()
                .any(|r| r.wants_save(epoch, metrics, &previous));
        if !save {
            return Vec::new();
        }
        self.saved = previous;
        self.saved.push(SavedCheckpoint {
            epoch,
            metrics: metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        });
        self.saved.sort_by_key(|c| c.epoch);
        let mut kept: BTreeSet<u32> = self
            .rules
            .iter()
            .flat_map(|r| r.keep(&self.saved))
            .collect();
        kept.insert(epoch); // the newest checkpoint is always kept
        let mut actions = vec![CheckpointAction::Save];
        self.saved.retain(|c| {
            let keep = kept.contains(&c.epoch);
            if !keep {
                actions.push(CheckpointAction::Delete(c.epoch));
            }
            keep
        });
        actions
    }
}
