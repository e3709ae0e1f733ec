//! `[sweep]` (its points, `[sweep.prune]`) and `[slurm]`: how runs are expanded, stopped early
//! and placed; none of it is part of a run's key.

use serde::{Deserialize, Serialize};

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------- sweep

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SweepMode {
    #[default]
    Grid,
    Random,
    Zip,
    /// Optuna's TPE: each trial proposed from the results of the earlier ones.
    Tpe,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    #[serde(default)]
    pub mode: SweepMode,
    /// random, tpe: number of configurations to draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<u32>,
    /// random, tpe: seed of the draw (default 0).
    #[serde(default)]
    pub seed: u64,
    /// tpe: random trials first (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_trials: Option<u32>,
    /// Dotted recipe key -> values (a list; a choice in random and tpe modes) or a
    /// distribution (random and tpe modes).
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, SweepValues>,
    /// `[sweep.prune]`: stop losing runs early. Not part of any run's key: a promoted run is
    /// the same run as the point trained straight through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneConfig>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PruneKind {
    #[default]
    None,
    /// Synchronous successive halving, rung by rung.
    Halving,
    /// Optuna's MedianPruner: each run against the median of the runs done before it.
    Median,
}

/// `[sweep.prune]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    #[serde(default)]
    pub kind: PruneKind,
    /// The metric runs are compared by (default `checkpoint.monitor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Whether higher is better (default: `checkpoint.mode` when `metric` is the monitor,
    /// else the metric's own direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MetricMode>,
    /// The first rung's epoch.
    #[serde(default = "PruneConfig::default_grace")]
    pub grace_epochs: u32,
    /// Each rung keeps max(1, floor(n / factor)) runs; rungs at grace * factor^k.
    #[serde(default = "PruneConfig::default_factor")]
    pub reduction_factor: u32,
    /// median: no run stops before this many runs of the sweep are done.
    #[serde(default = "PruneConfig::default_startup")]
    pub startup_runs: u32,
}

impl PruneConfig {
    fn default_grace() -> u32 {
        1
    }
    fn default_factor() -> u32 {
        3
    }
    fn default_startup() -> u32 {
        5
    }

    /// The metric and whether higher is better, given the recipe's checkpoint section.
    pub fn objective(&self, checkpoint: &CheckpointConfig) -> (String, bool) {
        let metric = self
            .metric
            .clone()
            .unwrap_or_else(|| checkpoint.monitor.clone());
        let mode = self.mode.unwrap_or(if metric == checkpoint.monitor {
            checkpoint.mode
        } else if super::super::metrics::maximize(&metric) {
            MetricMode::Max
        } else {
            MetricMode::Min
        });
        (metric, mode == MetricMode::Max)
    }
}

/// The values a swept key takes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SweepValues {
    List(Vec<toml::Value>),
    Distribution(Distribution),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    Uniform([f64; 2]),
    Loguniform([f64; 2]),
    Int([i64; 2]),
    Choice(Vec<toml::Value>),
}

// ---------------------------------------------------------------- slurm

/// `[slurm]`: what `runner sweep --executor slurm` asks Slurm for, per run (one array task
/// each); the command line's options override it. Not part of the run key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// `--partition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// GPUs per run (`--gres=gpu:N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_per_run: Option<u32>,
    /// CPUs per run (`--cpus-per-task`), also the task's thread count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_run: Option<u32>,
    /// Memory per run (`--mem`, e.g. "16G").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// Time limit per run (`--time`, e.g. "12:00:00" or "2-00:00:00").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Runs of the array at once (`--array=0-(n-1)%K`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Further `sbatch` options, one per item (`"--account=lab"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sbatch_args: Vec<String>,
    /// Shell lines run before runner in each task (`module load ...`, environment activation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<String>,
}
