//! `runner leaderboard`: runs ranked by a metric, one row per run and **one epoch** per row
//! (the epoch whose kept checkpoint `eval`, `export`, `match`, `resume` and `best` use; see
//! `Store::leaderboard_rows`), with every configuration key that differs among the listed runs
//! as columns, a `--where` filter (parsed by `store::filter`, never pasted into SQL) and
//! `--group-by` aggregation (mean and standard deviation over, e.g., seeds).
//! `--best-over-epochs` shows the per-metric extremes over epochs instead, labelled so.

use std::collections::BTreeMap;

use super::output::{cell_in, csv, num_in, print_json, table, Format};
use super::{CliError, Global};
use crate::store::{filter, LeaderRow, Store};

/// What to rank and how.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub metric: String,
    pub top: Option<usize>,
    pub filter: Option<String>,
    pub group_by: Option<String>,
    pub recipe: Option<String>,
    pub sweep: Option<i64>,
    /// Per-metric extremes over epochs instead of one epoch per row.
    pub best_over_epochs: bool,
}

pub use crate::store::maximize;

/// A ranked run.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub row: LeaderRow,
    pub value: f64,
}

/// Keys a filter or `--group-by` can name besides config paths and metrics.
const RUN_FIELDS: [&str; 7] = [
    "id",
    "key",
    "status",
    "recipe",
    "epochs",
    "epoch",
    "checkpoint",
];

/// Ranks the store's runs: best first; runs without the metric are left out.
pub fn rank(store: &Store, q: &Query) -> Result<Vec<Ranked>, CliError> {
    if !crate::recipe::validate::METRICS.contains(&q.metric.as_str()) {
        return Err(CliError::invalid(format!(
            "--metric: unknown metric `{}` (expected one of: {})",
            q.metric,
            crate::recipe::validate::METRICS.join(", ")
        )));
    }
    let expr = match &q.filter {
        Some(text) => {
            Some(filter::parse(text).map_err(|e| CliError::invalid(format!("--where: {e}")))?)
        }
        None => None,
    };
    if let Some(id) = q.sweep {
        if !store.sweep_exists(id)? {
            return Err(CliError::invalid(format!(
                "--sweep {id}: no such sweep in {} (`sqlite3 {} \"SELECT * FROM sweeps\"` lists them)",
                store.path().display(),
                store.path().display()
            )));
        }
    }
    let rows = if q.best_over_epochs {
        store.best_over_epochs_rows(q.sweep)?
    } else {
        store.leaderboard_rows(q.sweep, &q.metric)?
    };
    if let Some(e) = &expr {
        for key in e.keys() {
            check_key(&rows, "--where", key)?;
        }
    }
    if let Some(key) = &q.group_by {
        check_key(&rows, "--group-by", key)?;
    }
    let mut recipe = q.recipe.as_deref().map(RecipeMatch::new);
    let mut ranked: Vec<Ranked> = Vec::new();
    let mut recipe_seen = false;
    for row in rows {
        if let Some(m) = recipe.as_mut() {
            if !m.matches(&row.recipe) {
                continue;
            }
            recipe_seen = true;
        }
        let Some(value) = row
            .metrics
            .get(&q.metric)
            .copied()
            .filter(|v| v.is_finite())
        else {
            continue;
        };
        if let Some(e) = &expr {
            let mut config: Option<serde_json::Value> = None;
            let lookup =
                |key: &str| -> Option<serde_json::Value> { lookup(&row, key, &mut config) };
            let keep = filter::evaluate(e, &lookup_cell(lookup));
            if !keep {
                continue;
            }
        }
        ranked.push(Ranked { row, value });
    }
    if let Some(m) = &recipe {
        if !recipe_seen && m.canonical.is_none() {
            return Err(CliError::invalid(format!(
                "--recipe {}: no such file, and no run in the store was planned from it",
                m.typed
            )));
        }
    }
    let max = maximize(&q.metric);
    ranked.sort_by(|a, b| {
        let o = a.value.total_cmp(&b.value);
        (if max { o.reverse() } else { o }).then(a.row.id.cmp(&b.row.id))
    });
    Ok(ranked)
}

/// Matches the recipe path a run recorded (as it was typed, relative to where `runner` ran)
/// against the one asked for: the same string, or the same file once both are resolved.
struct RecipeMatch {
    typed: String,
    canonical: Option<std::path::PathBuf>,
    seen: std::collections::HashMap<String, bool>,
}

impl RecipeMatch {
    fn new(typed: &str) -> Self {
        RecipeMatch {
            typed: typed.to_string(),
            canonical: std::fs::canonicalize(typed).ok(),
            seen: Default::default(),
        }
    }

    fn matches(&mut self, recorded: &str) -> bool {
        if recorded == self.typed {
            return true;
        }
        let Some(wanted) = &self.canonical else {
            return false;
        };
        *self
            .seen
            .entry(recorded.to_string())
            .or_insert_with(|| std::fs::canonicalize(recorded).is_ok_and(|p| p == *wanted))
    }
}

/// Refuses a key that no run can have: not a metric, not a run field, and absent from every
/// run's configuration (a typo would otherwise silently match nothing). An empty store
/// accepts any key.
fn check_key(rows: &[LeaderRow], option: &str, key: &str) -> Result<(), CliError> {
    if key.is_empty() {
        return Err(CliError::invalid(format!("{option}: empty key")));
    }
    let metrics = crate::recipe::validate::METRICS;
    if rows.is_empty() || metrics.contains(&key) || RUN_FIELDS.contains(&key) {
        return Ok(());
    }
    let mut first_config = None;
    for row in rows {
        let Ok(config) = serde_json::from_str::<serde_json::Value>(&row.config_text) else {
            continue;
        };
        if config_path(&config, key).is_some() {
            return Ok(());
        }
        first_config.get_or_insert(config);
    }
    let mut candidates: Vec<String> = metrics
        .iter()
        .chain(RUN_FIELDS.iter())
        .map(|s| s.to_string())
        .collect();
    if let Some(c) = &first_config {
        flatten_keys(c, "", &mut candidates);
    }
    let hint = crate::recipe::error::did_you_mean(key, candidates.iter().map(String::as_str))
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default();
    Err(CliError::invalid(format!(
        "{option}: unknown key `{key}`: no run's configuration has it, and it is not a metric \
         ({}) or a run field ({}){hint}",
        metrics.join(", "),
        RUN_FIELDS.join(", ")
    )))
}

/// Every dotted path of a JSON configuration (`model.dims.0`), leaves and tables alike.
fn flatten_keys(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let path = join(k);
                out.push(path.clone());
                flatten_keys(child, &path, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let path = join(&i.to_string());
                out.push(path.clone());
                flatten_keys(child, &path, out);
            }
        }
        _ => {}
    }
}

/// A dotted key in a run's configuration: `model.dims.0` (the filter's spelling) or
/// `model.dims[0]` (the `--set` spelling).
fn config_path<'a>(config: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    filter::json_path(config, key).or_else(|| crate::plan::lookup_value(config, key))
}

/// Adapts a FnMut lookup (which caches the parsed config) to the filter's `Fn` interface.
fn lookup_cell<'a>(
    f: impl FnMut(&str) -> Option<serde_json::Value> + 'a,
) -> impl Fn(&str) -> Option<serde_json::Value> + 'a {
    let cell = std::cell::RefCell::new(f);
    move |k| (cell.borrow_mut())(k)
}

fn lookup(
    row: &LeaderRow,
    key: &str,
    config: &mut Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    if let Some(v) = row.metrics.get(key) {
        return Some(serde_json::json!(v));
    }
    match key {
        "id" => return Some(serde_json::json!(row.id)),
        "key" => return Some(serde_json::json!(row.key)),
        "status" => return Some(serde_json::json!(row.status)),
        "recipe" => return Some(serde_json::json!(row.recipe)),
        "epochs" => return Some(serde_json::json!(row.epochs)),
        "epoch" => return row.epoch.map(|e| serde_json::json!(e)),
        "checkpoint" => return row.checkpoint.as_ref().map(|c| serde_json::json!(c)),
        _ => {}
    }
    if config.is_none() {
        *config = Some(serde_json::from_str(&row.config_text).unwrap_or(serde_json::Value::Null));
    }
    config.as_ref().and_then(|c| config_path(c, key).cloned())
}

/// `runner leaderboard`.
pub fn run(g: &Global, q: &Query, format: Format) -> Result<(), CliError> {
    if !g.db.exists() {
        return Err(CliError::invalid(format!(
            "{}: no experiment store here yet (run `runner sweep RECIPE` first, or pass --db)",
            g.db.display()
        )));
    }
    if q.top == Some(0) {
        return Err(CliError::invalid("--top: must be at least 1"));
    }
    let store = Store::open(&g.db)?;
    let ranked = rank(&store, q)?;
    if let Some(key) = &q.group_by {
        return print_groups(&ranked, key, q, format);
    }
    let shown: Vec<&Ranked> = ranked.iter().take(q.top.unwrap_or(usize::MAX)).collect();
    let columns = differing_columns(&shown);
    // runs of pruned sweeps: the last rung each reached (1-based), shown when any has one
    let rungs: Vec<Option<u32>> = shown
        .iter()
        .map(|r| Ok(store.rungs(r.row.id)?.last().map(|d| d.rung + 1)))
        .collect::<Result<_, CliError>>()?;
    let rung_column = rungs.iter().any(Option::is_some);
    let metrics = crate::recipe::validate::METRICS;
    let label = |m: &str| {
        if q.best_over_epochs {
            format!("best_over_epochs.{m}")
        } else {
            m.to_string()
        }
    };
    match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = shown
                .iter()
                .zip(&columns.values)
                .zip(&rungs)
                .map(|((r, differs), rung)| {
                    let mut o = serde_json::Map::new();
                    o.insert("id".into(), r.row.id.into());
                    o.insert("key".into(), r.row.key.clone().into());
                    o.insert("status".into(), r.row.status.clone().into());
                    o.insert("rung".into(), (*rung).into());
                    let values: serde_json::Map<String, serde_json::Value> = r
                        .row
                        .metrics
                        .iter()
                        .map(|(m, v)| (m.clone(), serde_json::json!(v)))
                        .collect();
                    if q.best_over_epochs {
                        o.insert("best_over_epochs".into(), values.into());
                    } else {
                        o.insert("epoch".into(), r.row.epoch.into());
                        o.insert("checkpoint".into(), r.row.checkpoint.clone().into());
                        o.extend(values);
                    }
                    o.insert("overrides".into(), r.row.overrides.clone());
                    let differs: serde_json::Map<String, serde_json::Value> = columns.keys
                        [..columns.differing]
                        .iter()
                        .zip(differs)
                        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                        .collect();
                    o.insert("differs".into(), differs.into());
                    serde_json::Value::Object(o)
                })
                .collect();
            print_json(&serde_json::Value::Array(list));
        }
        Format::Table | Format::Csv => {
            let mut headers = vec![
                "rank".to_string(),
                "id".into(),
                "key".into(),
                "status".into(),
            ];
            if rung_column {
                headers.push("rung".into());
            }
            if !q.best_over_epochs {
                headers.push("epoch".into());
            }
            headers.extend(columns.keys.iter().cloned());
            let shown_metrics: Vec<&str> = metrics
                .iter()
                .copied()
                .filter(|m| *m != "lr" && shown.iter().any(|r| r.row.metrics.contains_key(*m)))
                .collect();
            headers.extend(shown_metrics.iter().map(|m| {
                // the ranking metric is starred in the table; CSV headers stay plain names
                if *m == q.metric && format == Format::Table {
                    format!("{}*", label(m))
                } else {
                    label(m)
                }
            }));
            if !q.best_over_epochs {
                headers.push("checkpoint".into());
            }
            let rows: Vec<Vec<String>> = shown
                .iter()
                .zip(&columns.values)
                .zip(&rungs)
                .enumerate()
                .map(|(i, ((r, differs), rung))| {
                    let mut row = vec![
                        (i + 1).to_string(),
                        r.row.id.to_string(),
                        r.row.key.clone(),
                        r.row.status.clone(),
                    ];
                    if rung_column {
                        row.push(rung.map_or("-".into(), |n| n.to_string()));
                    }
                    if !q.best_over_epochs {
                        row.push(r.row.epoch.map_or("-".into(), |e| e.to_string()));
                    }
                    row.extend(differs.iter().map(|v| {
                        v.as_ref()
                            .map(|v| cell_in(v, format))
                            .unwrap_or_else(|| "-".into())
                    }));
                    row.extend(shown_metrics.iter().map(|m| {
                        r.row
                            .metrics
                            .get(*m)
                            .map(|v| num_in(*v, format))
                            .unwrap_or_else(|| "-".into())
                    }));
                    if !q.best_over_epochs {
                        row.push(match &r.row.checkpoint {
                            Some(p) if format == Format::Table => short_path(p),
                            Some(p) => p.clone(),
                            None => "-".into(),
                        });
                    }
                    row
                })
                .collect();
            if format == Format::Csv {
                crate::out!("{}", csv(&headers, &rows));
            } else if rows.is_empty() {
                match &q.filter {
                    Some(f) => {
                        crate::errln!("no run with a recorded `{}` matches --where {f}", q.metric)
                    }
                    None => crate::errln!("no run has a recorded `{}` yet", q.metric),
                }
            } else {
                crate::outln!("{}", table(&headers, &rows));
            }
        }
    }
    Ok(())
}

/// A path as a table shows it: relative to the working directory when it is under it.
fn short_path(p: &str) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            std::path::Path::new(p)
                .strip_prefix(&cwd)
                .ok()
                .map(|r| r.display().to_string())
        })
        .unwrap_or_else(|| p.to_string())
}

/// The configuration keys a listing shows: every key whose value differs among the listed
/// runs (whoever set it: a sweep, `--set`, another recipe), then the swept keys that do not,
/// with each run's real value (`None` where its configuration lacks the key).
pub struct DifferingColumns {
    pub keys: Vec<String>,
    /// How many of `keys` (the first ones) differ among the runs; the rest are swept keys
    /// the runs agree on.
    pub differing: usize,
    /// Per run, in the order of the runs: its value of each key.
    pub values: Vec<Vec<Option<serde_json::Value>>>,
}

/// Configuration subtrees that describe the plan, not the run: the `[sweep]` table itself
/// (the swept values are in the keys it sets).
const NOT_COMPARED: [&str; 1] = ["sweep"];

/// Computes `DifferingColumns` for listed runs.
pub fn differing_columns(shown: &[&Ranked]) -> DifferingColumns {
    let flat: Vec<BTreeMap<String, serde_json::Value>> = shown
        .iter()
        .map(|r| {
            let config: serde_json::Value =
                serde_json::from_str(&r.row.config_text).unwrap_or(serde_json::Value::Null);
            let mut out = BTreeMap::new();
            flatten_leaves(&config, "", &mut out);
            out
        })
        .collect();
    let mut all: std::collections::BTreeSet<&String> = Default::default();
    for f in &flat {
        all.extend(f.keys());
    }
    let mut keys: Vec<String> = all
        .into_iter()
        .filter(|k| {
            let first = flat[0].get(*k);
            flat.iter().any(|f| f.get(*k) != first)
        })
        .cloned()
        .collect();
    let differing = keys.len();
    // swept keys stay shown even where the listed runs agree on them (e.g. `--top 1`)
    let mut swept: std::collections::BTreeSet<String> = Default::default();
    for r in shown {
        if let Some(o) = r.row.overrides.as_object() {
            swept.extend(o.keys().cloned());
        }
    }
    for k in swept {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let values = shown
        .iter()
        .zip(&flat)
        .map(|(r, f)| {
            keys.iter()
                .map(|k| {
                    f.get(k)
                        .cloned()
                        .or_else(|| r.row.overrides.get(k).cloned())
                })
                .collect()
        })
        .collect();
    DifferingColumns {
        keys,
        differing,
        values,
    }
}

/// A configuration's leaves by dotted key (`optimizer.lr`); lists are one value
/// (`model.dims`).
pub(crate) fn flatten_leaves(
    v: &serde_json::Value,
    prefix: &str,
    out: &mut BTreeMap<String, serde_json::Value>,
) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                if prefix.is_empty() && NOT_COMPARED.contains(&k.as_str()) {
                    continue;
                }
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_leaves(child, &path, out);
            }
        }
        serde_json::Value::Null if prefix.is_empty() => {}
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// One group of `leaderboard --group-by` (and the report's): the key's value, its runs and
/// the mean and sample standard deviation of their ranking values.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupStat {
    #[serde(skip)]
    pub label: String,
    pub value: serde_json::Value,
    pub runs: usize,
    pub mean: f64,
    pub std: f64,
    pub run_ids: Vec<i64>,
}

/// The ranked runs grouped by the exact value of `key` (cells round numbers for display;
/// 0.00151 and 0.00154 are two groups), best mean first for `metric`.
pub fn group_stats(ranked: &[Ranked], key: &str, metric: &str) -> Vec<GroupStat> {
    let mut groups: BTreeMap<String, (serde_json::Value, Vec<f64>, Vec<i64>)> = BTreeMap::new();
    for r in ranked {
        let mut config = None;
        let value = lookup(&r.row, key, &mut config).unwrap_or(serde_json::Value::Null);
        let label = match &value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        let g = groups
            .entry(label)
            .or_insert_with(|| (value, Vec::new(), Vec::new()));
        g.1.push(r.value);
        g.2.push(r.row.id);
    }
    let mut stats: Vec<GroupStat> = groups
        .into_iter()
        .map(|(label, (value, vals, run_ids))| {
            let n = vals.len();
            let mean = vals.iter().sum::<f64>() / n as f64;
            let var = if n > 1 {
                vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
            } else {
                0.0
            };
            GroupStat {
                label,
                value,
                runs: n,
                mean,
                std: var.sqrt(),
                run_ids,
            }
        })
        .collect();
    let max = maximize(metric);
    stats.sort_by(|a, b| {
        let o = a.mean.total_cmp(&b.mean);
        if max {
            o.reverse()
        } else {
            o
        }
    });
    stats
}

fn print_groups(ranked: &[Ranked], key: &str, q: &Query, format: Format) -> Result<(), CliError> {
    let mut stats: Vec<(String, serde_json::Value, usize, f64, f64)> =
        group_stats(ranked, key, &q.metric)
            .into_iter()
            .map(|g| (g.label, g.value, g.runs, g.mean, g.std))
            .collect();
    stats.truncate(q.top.unwrap_or(usize::MAX));
    match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = stats
                .iter()
                .map(|(_, value, n, m, s)| {
                    serde_json::json!({
                        "group_by": key, "value": value, "runs": n, "mean": m, "std": s,
                        "metric": q.metric
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(list));
        }
        _ => {
            let headers = vec![
                key.to_string(),
                "runs".into(),
                format!("mean {}", q.metric),
                format!("std {}", q.metric),
            ];
            let rows: Vec<Vec<String>> = stats
                .iter()
                .map(|(label, _, n, m, s)| {
                    vec![
                        label.clone(),
                        n.to_string(),
                        num_in(*m, format),
                        num_in(*s, format),
                    ]
                })
                .collect();
            if format == Format::Csv {
                crate::out!("{}", csv(&headers, &rows));
            } else {
                crate::outln!("{}", table(&headers, &rows));
            }
        }
    }
    Ok(())
}

/// `runner best`: the top run by `metric`, as `show` prints it.
pub fn best(g: &Global, metric: &str, format: Format) -> Result<(), CliError> {
    let store = super::runs::open_store(g)?;
    let q = Query {
        metric: metric.to_string(),
        top: Some(1),
        ..Default::default()
    };
    let ranked = rank(&store, &q)?;
    let top = ranked
        .first()
        .ok_or_else(|| CliError::failed(format!("no run has a recorded `{metric}` yet")))?;
    let run = store.run(top.row.id)?;
    match format {
        Format::Json => {
            let mut v = super::runs::show_json(&store, &run)?;
            v["leaderboard"] = serde_json::json!({
                "metric": metric, "value": top.value, "epoch": top.row.epoch,
                "checkpoint": top.row.checkpoint,
            });
            print_json(&v)
        }
        _ => {
            super::runs::print_run(&store, &run)?;
            crate::outln!(
                "\nleaderboard row (--metric {metric}): epoch {}, {metric} {}, checkpoint {}",
                top.row.epoch.map_or("-".into(), |e| e.to_string()),
                super::output::fmt_num(top.value),
                top.row.checkpoint.as_deref().unwrap_or("none kept")
            );
        }
    }
    Ok(())
}
