//! `runner leaderboard`: runs ranked by their best epoch's metric, with the swept values as
//! columns, a `--where` filter (parsed by `store::filter`, never pasted into SQL) and
//! `--group-by` aggregation (mean and standard deviation over, e.g., seeds).

use std::collections::BTreeMap;

use super::output::{cell, csv, fmt_num, print_json, table, Format};
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
}

/// Whether larger is better for a metric.
pub fn maximize(metric: &str) -> bool {
    !metric.ends_with("loss")
}

/// A ranked run.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub row: LeaderRow,
    pub value: f64,
}

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
    let rows = store.leaderboard_rows(q.sweep)?;
    let mut ranked: Vec<Ranked> = Vec::new();
    for row in rows {
        if q.recipe.as_ref().is_some_and(|r| *r != row.recipe) {
            continue;
        }
        let Some(value) = row.best.get(&q.metric).copied().filter(|v| v.is_finite()) else {
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
    let max = maximize(&q.metric);
    ranked.sort_by(|a, b| {
        let o = a.value.total_cmp(&b.value);
        (if max { o.reverse() } else { o }).then(a.row.id.cmp(&b.row.id))
    });
    Ok(ranked)
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
    if let Some(v) = row.best.get(key) {
        return Some(serde_json::json!(v));
    }
    match key {
        "id" => return Some(serde_json::json!(row.id)),
        "key" => return Some(serde_json::json!(row.key)),
        "status" => return Some(serde_json::json!(row.status)),
        "recipe" => return Some(serde_json::json!(row.recipe)),
        "epochs" => return Some(serde_json::json!(row.epochs)),
        _ => {}
    }
    if config.is_none() {
        *config = Some(serde_json::from_str(&row.config_text).unwrap_or(serde_json::Value::Null));
    }
    config
        .as_ref()
        .and_then(|c| crate::plan::lookup_value(c, key).cloned())
}

/// `runner leaderboard`.
pub fn run(g: &Global, q: &Query, format: Format) -> Result<(), CliError> {
    if !g.db.exists() {
        return Err(CliError::invalid(format!(
            "{}: no experiment store here yet (run `runner sweep RECIPE` first, or pass --db)",
            g.db.display()
        )));
    }
    let store = Store::open(&g.db)?;
    let ranked = rank(&store, q)?;
    if let Some(key) = &q.group_by {
        return print_groups(&ranked, key, q, format);
    }
    let shown: Vec<&Ranked> = ranked.iter().take(q.top.unwrap_or(usize::MAX)).collect();
    let swept: Vec<String> = {
        let mut keys = std::collections::BTreeSet::new();
        for r in &shown {
            if let Some(o) = r.row.overrides.as_object() {
                keys.extend(o.keys().cloned());
            }
        }
        keys.into_iter().collect()
    };
    let metrics = crate::recipe::validate::METRICS;
    match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = shown
                .iter()
                .map(|r| {
                    let mut o = serde_json::Map::new();
                    o.insert("id".into(), r.row.id.into());
                    o.insert("key".into(), r.row.key.clone().into());
                    o.insert("status".into(), r.row.status.clone().into());
                    for (m, v) in &r.row.best {
                        o.insert(m.clone(), serde_json::json!(v));
                    }
                    o.insert("overrides".into(), r.row.overrides.clone());
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
            headers.extend(swept.iter().cloned());
            let shown_metrics: Vec<&str> = metrics
                .iter()
                .copied()
                .filter(|m| *m != "lr" && shown.iter().any(|r| r.row.best.contains_key(*m)))
                .collect();
            headers.extend(shown_metrics.iter().map(|m| {
                if *m == q.metric {
                    format!("{m}*")
                } else {
                    m.to_string()
                }
            }));
            let rows: Vec<Vec<String>> = shown
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut row = vec![
                        (i + 1).to_string(),
                        r.row.id.to_string(),
                        r.row.key.clone(),
                        r.row.status.clone(),
                    ];
                    row.extend(swept.iter().map(|k| {
                        r.row
                            .overrides
                            .get(k)
                            .map(cell)
                            .unwrap_or_else(|| "-".into())
                    }));
                    row.extend(shown_metrics.iter().map(|m| {
                        r.row
                            .best
                            .get(*m)
                            .map(|v| fmt_num(*v))
                            .unwrap_or_else(|| "-".into())
                    }));
                    row
                })
                .collect();
            if format == Format::Csv {
                print!("{}", csv(&headers, &rows));
            } else if rows.is_empty() {
                match &q.filter {
                    Some(f) => {
                        eprintln!("no run with a recorded `{}` matches --where {f}", q.metric)
                    }
                    None => eprintln!("no run has a recorded `{}` yet", q.metric),
                }
            } else {
                println!("{}", table(&headers, &rows));
            }
        }
    }
    Ok(())
}

fn print_groups(ranked: &[Ranked], key: &str, q: &Query, format: Format) -> Result<(), CliError> {
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in ranked {
        let mut config = None;
        // The exact value (cells round numbers for display; 0.00151 and 0.00154 are two groups).
        let v = lookup(&r.row, key, &mut config)
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "-".into());
        groups.entry(v).or_default().push(r.value);
    }
    let mut stats: Vec<(String, usize, f64, f64)> = groups
        .into_iter()
        .map(|(k, vals)| {
            let n = vals.len();
            let mean = vals.iter().sum::<f64>() / n as f64;
            let var = if n > 1 {
                vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
            } else {
                0.0
            };
            (k, n, mean, var.sqrt())
        })
        .collect();
    let max = maximize(&q.metric);
    stats.sort_by(|a, b| {
        let o = a.2.total_cmp(&b.2);
        if max {
            o.reverse()
        } else {
            o
        }
    });
    stats.truncate(q.top.unwrap_or(usize::MAX));
    match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = stats
                .iter()
                .map(|(k, n, m, s)| {
                    serde_json::json!({ key: k, "runs": n, "mean": m, "std": s, "metric": q.metric })
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
                .map(|(k, n, m, s)| vec![k.clone(), n.to_string(), fmt_num(*m), fmt_num(*s)])
                .collect();
            if format == Format::Csv {
                print!("{}", csv(&headers, &rows));
            } else {
                println!("{}", table(&headers, &rows));
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
        Format::Json => print_json(&super::runs::show_json(&store, &run)?),
        _ => super::runs::print_run(&store, &run)?,
    }
    Ok(())
}
