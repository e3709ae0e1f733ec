//! A search sweep (`sweep.mode = "tpe"`): its study's identity, its space, its sampler, and the
//! planned run of each trial. The planner cannot list a search's runs up front: trial k is
//! proposed from the results of the trials before its batch (read from the store by the
//! executor), then planned here like any sweep point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::sampler::{Param, Space, TpeSampler};
use super::{identity, plan_point, Fingerprinter, Parents, PlannedRun};
use crate::recipe::{self, Composed, Distribution, Override, RecipeError, SweepMode, SweepValues};

/// A recipe's search, ready to plan trials.
pub struct Search {
    base: Composed,
    cli: Vec<Override>,
    /// The swept keys, sorted, with their values (the space's order).
    values: Vec<(String, SweepValues)>,
    pub space: Space,
    /// The study's identity: the config and `[sweep]` without `trials`, and the data.
    pub study_key: String,
    pub trials: usize,
    pub seed: u64,
    pub startup_trials: usize,
    /// The objective: `checkpoint.monitor` at the leaderboard's epoch, higher better when
    /// `maximize`.
    pub metric: String,
    pub maximize: bool,
    /// `train.epochs` of the recipe.
    pub epochs: u32,
    parents: Parents,
    fingerprints: BTreeMap<String, String>,
}

impl Search {
    /// The search of the recipe at `path` with the command line's overrides; None when its
    /// sweep is not a search.
    pub fn of_file(
        path: &Path,
        cli: &[Override],
        fingerprint: &Fingerprinter,
    ) -> Result<Option<Search>, RecipeError> {
        let base = recipe::compose(path)?;
        let (_, top) = recipe::resolve(base.clone(), cli)?;
        let Some(sweep) = top.sweep.clone().filter(|s| s.mode == SweepMode::Tpe) else {
            return Ok(None);
        };
        let values: Vec<(String, SweepValues)> = sweep.params.clone().into_iter().collect();
        let space = values.iter().map(|(k, v)| (k.clone(), param(v))).collect();
        let data = fingerprint(&top).map_err(|msg| {
            RecipeError::Invalid(vec![base.diagnostic(
                "data.root",
                recipe::Focus::Value,
                msg,
            )])
        })?;
        let mut identity_sweep = sweep.clone();
        identity_sweep.trials = None;
        let mut h = Sha256::new();
        h.update(super::key::canonical_config(&top).to_string().as_bytes());
        h.update(b"\0");
        h.update(
            serde_json::to_string(&identity_sweep)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(b"\0");
        h.update(data.as_bytes());
        let study_key = hex::encode(&h.finalize()[..8]);
        Ok(Some(Search {
            base,
            cli: cli.to_vec(),
            values,
            space,
            study_key,
            trials: sweep.trials.unwrap_or(0) as usize,
            seed: sweep.seed,
            startup_trials: sweep.startup_trials.unwrap_or(10) as usize,
            metric: top.checkpoint.monitor.clone(),
            maximize: top.checkpoint.mode == recipe::MetricMode::Max,
            epochs: top.train.epochs,
            parents: Parents::default(),
            fingerprints: BTreeMap::new(),
        }))
    }

    /// The recipe file.
    pub fn file(&self) -> &Path {
        &self.base.file
    }

    /// The sampler of this search (Optuna's TPE defaults, the recipe's seed and startup
    /// trials).
    pub fn sampler(&self) -> TpeSampler {
        let mut s = TpeSampler::new(self.space.clone(), self.seed, self.maximize);
        s.startup_trials = self.startup_trials;
        s
    }

    /// The run trial `number` plans with `params` (the sampler's representation): the sweep
    /// point of those values, planned as any point is (`index` = the trial's number).
    pub fn planned(
        &mut self,
        number: usize,
        params: &[f64],
        fingerprint: &Fingerprinter,
    ) -> Result<PlannedRun, RecipeError> {
        let point: super::sweep::Point = self
            .values
            .iter()
            .zip(params)
            .map(|((k, v), &x)| (k.clone(), value(v, x)))
            .collect();
        let mut stack: Vec<PathBuf> = vec![identity(&self.base.file)];
        let mut run = plan_point(
            &self.base,
            &self.cli,
            &point,
            fingerprint,
            &mut stack,
            &mut self.parents,
            &mut self.fingerprints,
        )?;
        run.index = number;
        Ok(run)
    }
}

/// The sampler's parameter of a swept key: a list is a categorical choice.
fn param(v: &SweepValues) -> Param {
    match v {
        SweepValues::List(l) | SweepValues::Distribution(Distribution::Choice(l)) => {
            Param::Categorical { n: l.len() }
        }
        SweepValues::Distribution(Distribution::Uniform([a, b])) => Param::Float {
            low: *a,
            high: *b,
            log: false,
        },
        SweepValues::Distribution(Distribution::Loguniform([a, b])) => Param::Float {
            low: *a,
            high: *b,
            log: true,
        },
        SweepValues::Distribution(Distribution::Int([a, b])) => Param::Int { low: *a, high: *b },
    }
}

/// The recipe value of a sampled parameter.
fn value(v: &SweepValues, x: f64) -> toml::Value {
    match v {
        SweepValues::List(l) | SweepValues::Distribution(Distribution::Choice(l)) => {
            l[(x as usize).min(l.len().saturating_sub(1))].clone()
        }
        SweepValues::Distribution(Distribution::Int(_)) => toml::Value::Integer(x.round() as i64),
        SweepValues::Distribution(_) => toml::Value::Float(x),
    }
}
