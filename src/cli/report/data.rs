//! The report's data: one JSON document built from the store alone (the runs the leaderboard
//! query selects, ranked by its rule: one row, one epoch, one checkpoint), embedded in the page
//! for its script to draw. Nothing in it is computed from anything but the store's rows.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::stats;
use crate::cli::leaderboard::{self, differing_columns, Query, Ranked};
use crate::cli::CliError;
use crate::store::Store;

/// Whether a swept key is searched on a log scale: a `loguniform` distribution in the run's
/// recorded `[sweep]`, or positive values spanning at least a factor of 20.
fn log_scaled(key: &str, configs: &[&Value], values: &[f64]) -> bool {
    let declared = configs.iter().any(|c| {
        c.get("sweep")
            .and_then(|s| s.get("params"))
            .and_then(|p| p.get(key))
            .and_then(|d| d.get("loguniform"))
            .is_some()
    });
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    declared || (!values.is_empty() && lo > 0.0 && hi / lo >= 20.0)
}

/// A metric column, compactly: f32 little-endian in base64, NaN where there is no value (the
/// page decodes it to numbers and nulls). A few bytes per value instead of JSON's decimals, so
/// that 1,000 runs x 100 epochs stay a few megabytes.
fn f32_column(values: impl Iterator<Item = Option<f64>>) -> Value {
    use base64::Engine;
    let mut bytes = Vec::new();
    for v in values {
        bytes.extend_from_slice(&(v.map_or(f32::NAN, |v| v as f32)).to_le_bytes());
    }
    Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The report's data for the runs `q` selects.
pub fn build(store: &Store, q: &Query, title: &str) -> Result<Value, CliError> {
    let ranked = leaderboard::rank(store, q)?;
    let refs: Vec<&Ranked> = ranked.iter().collect();
    let columns = if refs.is_empty() {
        None
    } else {
        Some(differing_columns(&refs))
    };
    let maximize = leaderboard::maximize(&q.metric);
    let mut runs = Vec::new();
    let mut curves = serde_json::Map::new();
    let mut flats: Vec<BTreeMap<String, Value>> = Vec::new();
    let mut configs: Vec<Value> = Vec::new();
    for (rank, r) in ranked.iter().enumerate() {
        let run = store.run(r.row.id)?;
        let mut flat = BTreeMap::new();
        leaderboard::flatten_leaves(&run.config, "", &mut flat);
        let differs: serde_json::Map<String, Value> = match &columns {
            Some(c) => c
                .keys
                .iter()
                .zip(&c.values[rank])
                .map(|(k, v)| (k.clone(), v.clone().unwrap_or(Value::Null)))
                .collect(),
            None => Default::default(),
        };
        // the command that trains this run again: its recipe and the values its sweep set
        let mut command = format!("runner run {}", run.recipe);
        if let Some(o) = run.overrides.as_object() {
            for (k, v) in o {
                let text = toml::Value::try_from(v.clone())
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| v.to_string());
                command.push_str(&format!(" --set '{k}={text}'"));
            }
        }
        let epochs = store.epochs(run.id)?;
        let mut wall = 0.0;
        let col = |f: &dyn Fn(&crate::store::EpochMetrics) -> Option<f64>| -> Value {
            f32_column(epochs.iter().map(|e| f(e).filter(|v| v.is_finite())))
        };
        let walls = f32_column(epochs.iter().map(|e| {
            wall += e.seconds;
            Some(wall)
        }));
        curves.insert(
            run.id.to_string(),
            json!({
                "epoch": epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
                "wall_seconds": walls,
                "lr": col(&|e| Some(e.lr)),
                "train_loss": col(&|e| Some(e.train_loss)),
                "train_acc": col(&|e| Some(e.train_acc)),
                "val_loss": col(&|e| e.val_loss),
                "val_acc": col(&|e| e.val_acc),
                "verify_acc": col(&|e| e.verify_acc),
            }),
        );
        let rungs = store.rungs(run.id)?;
        runs.push(json!({
            "id": run.id,
            "key": run.key,
            "recipe": run.recipe,
            "status": r.row.status,
            "rank": rank + 1,
            "value": r.value,
            "epoch": r.row.epoch,
            "checkpoint": r.row.checkpoint,
            "metrics": r.row.metrics,
            "overrides": run.overrides,
            "differs": differs,
            "lineage": {
                "continues": run.parent_id,
                "starts_from": run.init_from_run,
                "init_checkpoint": run.init_from_checkpoint,
            },
            "rungs": rungs,
            "command": command,
        }));
        flats.push(flat);
        configs.push(run.config);
    }
    // the swept keys: those the runs' sweeps set
    let mut swept: Vec<String> = Vec::new();
    for r in &ranked {
        if let Some(o) = r.row.overrides.as_object() {
            for k in o.keys() {
                if !swept.contains(k) {
                    swept.push(k.clone());
                }
            }
        }
    }
    swept.sort();
    let config_refs: Vec<&Value> = configs.iter().collect();
    let mut keys = Vec::new();
    let mut importance = Vec::new();
    for k in &swept {
        let pairs: Vec<(Value, f64)> = flats
            .iter()
            .zip(&ranked)
            .filter_map(|(f, r)| f.get(k).map(|v| (v.clone(), r.value)))
            .collect();
        let numbers: Vec<f64> = pairs.iter().filter_map(|(v, _)| v.as_f64()).collect();
        let numeric = numbers.len() == pairs.len() && !pairs.is_empty();
        keys.push(json!({
            "key": k,
            "numeric": numeric,
            "log": numeric && log_scaled(k, &config_refs, &numbers),
        }));
        if pairs.len() >= 2 {
            importance.push(stats::importance(k, &pairs));
        }
    }
    // each run's configuration: the keys all runs share once (`base_config`), and per run the
    // keys where it differs from them
    let mut base_config: BTreeMap<String, Value> = flats.first().cloned().unwrap_or_default();
    base_config.retain(|k, v| flats.iter().all(|f| f.get(k) == Some(v)));
    for (run, flat) in runs.iter_mut().zip(&flats) {
        let own: serde_json::Map<String, Value> = flat
            .iter()
            .filter(|(k, _)| !base_config.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        run["config"] = Value::Object(own);
    }
    let seed_input: Vec<(i64, BTreeMap<String, Value>, f64)> = ranked
        .iter()
        .zip(&flats)
        .map(|(r, f)| (r.row.id, f.clone(), r.value))
        .collect();
    let groups = stats::seed_groups(&seed_input, maximize);
    // TPE studies with a run among these: each trial's value, in trial order
    let by_key: BTreeMap<&str, &Ranked> = ranked.iter().map(|r| (r.row.key.as_str(), r)).collect();
    let mut studies = Vec::new();
    for study in store.studies()? {
        let trials: Vec<Value> = store
            .trials(study.id)?
            .iter()
            .filter_map(|t| {
                by_key.get(t.run_key.as_str()).map(|r| {
                    json!({"number": t.number, "run": r.row.id, "value": r.value, "status": r.row.status})
                })
            })
            .collect();
        if !trials.is_empty() {
            studies.push(json!({"study": study.key, "batch": study.batch, "trials": trials}));
        }
    }
    // the runs the metric cannot rank (failed, diverged, still running), listed apart
    let ranked_ids: std::collections::HashSet<i64> = ranked.iter().map(|r| r.row.id).collect();
    let mut unranked = Vec::new();
    for r in store.best_over_epochs_rows(q.sweep)? {
        if ranked_ids.contains(&r.id) || q.recipe.as_deref().is_some_and(|p| p != r.recipe) {
            continue;
        }
        let error = store.run(r.id)?.error;
        unranked.push(json!({
            "id": r.id, "key": r.key, "status": r.status, "recipe": r.recipe,
            "overrides": r.overrides, "error": error,
        }));
    }
    Ok(json!({
        "title": title,
        "generated": crate::store::now(),
        "store": store.path().display().to_string(),
        "metric": q.metric,
        "maximize": maximize,
        "runs": runs,
        "base_config": base_config,
        "differs": columns.as_ref().map(|c| c.keys.clone()).unwrap_or_default(),
        "curves": curves,
        "sweep_keys": keys,
        "importance": importance,
        "seed_groups": groups,
        "unranked": unranked,
        "studies": studies,
        "faces": super::faces::build(store, &ranked)?,
        "groups": q.group_by.as_ref().map(|key| json!({
            "key": key,
            "rows": leaderboard::group_stats(&ranked, key, &q.metric),
        })),
    }))
}
