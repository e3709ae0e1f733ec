//! The planner: expands a recipe's sweep into fully resolved runs, each with its run key.

pub mod key;
pub mod sweep;

use std::collections::BTreeMap;
use std::path::Path;

use crate::recipe::{self, Composed, Override, Recipe, RecipeError};

/// One run the recipe asks for.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// 0-based position in the sweep.
    pub index: usize,
    pub key: String,
    /// The swept values of this run (dotted key -> value), as JSON.
    pub overrides: BTreeMap<String, serde_json::Value>,
    /// The resolved recipe (no `[sweep]`).
    pub recipe: Recipe,
    pub data_fingerprint: String,
}

/// A fingerprint of the data a recipe reads (see `crate::data::fingerprint_for`).
pub type Fingerprinter<'a> = dyn Fn(&Recipe) -> Result<String, String> + 'a;

/// Plans every run of the recipe at `path` with the command line's `--set` overrides.
pub fn plan_file(
    path: &Path,
    cli: &[Override],
    fingerprint: &Fingerprinter,
) -> Result<Vec<PlannedRun>, RecipeError> {
    plan(recipe::compose(path)?, cli, fingerprint)
}

/// Plans every run of a composed recipe. Runs with the same key are planned once.
pub fn plan(
    base: Composed,
    cli: &[Override],
    fingerprint: &Fingerprinter,
) -> Result<Vec<PlannedRun>, RecipeError> {
    let (_, top) = recipe::resolve(base.clone(), cli)?;
    let points = sweep::expand(top.sweep.as_ref());
    let mut runs: Vec<PlannedRun> = Vec::new();
    let mut fingerprints: BTreeMap<String, String> = BTreeMap::new();
    for point in points {
        let mut composed = base.clone();
        composed.table.remove("sweep");
        let mut ovs: Vec<Override> = point
            .iter()
            .map(|(k, v)| Override {
                key: k.clone(),
                value: v.clone(),
                raw: None,
                origin: base.origin_of(&format!("sweep.params.{k}")),
            })
            .collect();
        // The command line wins over swept values.
        ovs.extend(cli.iter().filter(|o| !o.key.starts_with("sweep")).cloned());
        let (_, recipe) = recipe::resolve(composed, &ovs)?;
        let data_key = serde_json::to_string(&recipe.data).unwrap_or_default();
        let fp = match fingerprints.get(&data_key) {
            Some(fp) => fp.clone(),
            None => {
                let fp = fingerprint(&recipe).map_err(|msg| {
                    let d = base.diagnostic("data.root", recipe::Focus::Value, msg);
                    RecipeError::Invalid(vec![d])
                })?;
                fingerprints.insert(data_key, fp.clone());
                fp
            }
        };
        let key = key::run_key(&recipe, &fp);
        if runs.iter().any(|r| r.key == key) {
            continue;
        }
        let overrides = point
            .iter()
            .map(|(k, _)| (k.clone(), lookup_json(&recipe, k)))
            .collect();
        runs.push(PlannedRun {
            index: runs.len(),
            key,
            overrides,
            recipe,
            data_fingerprint: fp,
        });
    }
    Ok(runs)
}

/// The value at a dotted key of a resolved recipe, as JSON (Null when absent).
pub fn lookup_json(recipe: &Recipe, dotted: &str) -> serde_json::Value {
    let v = serde_json::to_value(recipe).unwrap_or(serde_json::Value::Null);
    lookup_value(&v, dotted)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// The value at a dotted key (with `[i]` indices) of a JSON value.
pub fn lookup_value<'a>(v: &'a serde_json::Value, dotted: &str) -> Option<&'a serde_json::Value> {
    let mut cur = v;
    for part in dotted.split('.') {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        cur = cur.get(name)?;
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            cur = cur.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}
