//! `runner plan RECIPE`: the runs a recipe expands into, with their keys and store status.

use std::path::Path;

use super::output::{cell_in, print_json, table, Format};
use super::{parse_sets, CliError, Global};
use crate::plan::PlannedRun;
use crate::store::Store;

/// Plans a recipe (validating it) with the data fingerprints the data module computes.
pub fn plan_recipe(recipe: &Path, sets: &[String]) -> Result<Vec<PlannedRun>, CliError> {
    let overrides = parse_sets(sets)?;
    Ok(crate::plan::plan_file(
        recipe,
        &overrides,
        &crate::data::fingerprint_for,
    )?)
}

/// The recipe's search (`sweep.mode = "tpe"`), None for other sweeps.
pub fn search_of(
    recipe: &Path,
    sets: &[String],
) -> Result<Option<crate::plan::search::Search>, CliError> {
    let overrides = parse_sets(sets)?;
    Ok(crate::plan::search::Search::of_file(
        recipe,
        &overrides,
        &crate::data::fingerprint_for,
    )?)
}

/// Whether the recipe's sweep is a search (its trials proposed as it runs).
pub fn is_search(recipe: &Path, sets: &[String]) -> Result<bool, CliError> {
    let (_, top) = crate::recipe::load(recipe, &parse_sets(sets)?)?;
    Ok(top
        .sweep
        .is_some_and(|s| s.mode == crate::recipe::SweepMode::Tpe))
}

/// What `plan` says of a search: how many of its trials are proposed so far.
struct SearchNote {
    proposed: usize,
    trials: usize,
}

/// The runs `plan` lists and `plan --cost` prices. A search's trials are proposed as the sweep
/// runs, so its runs are the parents and the trials recorded in the store; with `fill`, the
/// trials not proposed yet are planned from random draws of the space (for the cost: the
/// model, size and epochs they train).
fn plan_runs(
    g: &Global,
    recipe: &Path,
    sets: &[String],
    fill: bool,
) -> Result<(Vec<PlannedRun>, Option<SearchNote>), CliError> {
    let mut runs = plan_recipe(recipe, sets)?;
    let Some(mut search) = search_of(recipe, sets)? else {
        return Ok((runs, None));
    };
    let fp = &crate::data::fingerprint_for;
    let recorded = match g.db.exists() {
        true => {
            let store = Store::open(&g.db)?;
            match store.find_study(&search.study_key)? {
                Some(study) => store.trials(study.id)?,
                None => Vec::new(),
            }
        }
        false => Vec::new(),
    };
    let trials = search.trials;
    let proposed = recorded.iter().filter(|t| t.number < trials).count();
    for t in recorded.iter().filter(|t| t.number < trials) {
        runs.push(search.planned(t.number, &t.params, fp)?);
    }
    if fill {
        let random = crate::plan::sampler::RandomSampler {
            space: search.space.clone(),
            seed: search.seed,
        };
        for k in 0..search.trials {
            if !recorded.iter().any(|t| t.number == k) {
                let params = crate::plan::sampler::Sampler::propose(&random, k, &[]);
                runs.push(search.planned(k, &params, fp)?);
            }
        }
    }
    Ok((
        runs,
        Some(SearchNote {
            proposed,
            trials: search.trials,
        }),
    ))
}

pub fn run(g: &Global, recipe: &Path, sets: &[String], format: Format) -> Result<(), CliError> {
    let (runs, search) = plan_runs(g, recipe, sets, false)?;
    // Reading status must not create a store as a side effect of planning.
    let store = if g.db.exists() {
        Some(Store::open(&g.db)?)
    } else {
        None
    };
    let mut statuses = Vec::new();
    for r in &runs {
        let s = match &store {
            Some(s) => s
                .run_by_key(&r.key)?
                .map(|run| run.shown_status())
                .unwrap_or_else(|| "new".into()),
            None => "new".into(),
        };
        statuses.push(s);
    }
    // parents (`model.init_from = { recipe = ... }`) are listed first, marked as such
    let pipeline = runs.iter().any(|r| !r.target);
    match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = runs
                .iter()
                .zip(&statuses)
                .map(|(r, s)| {
                    let mut j = serde_json::json!({
                        "index": r.index,
                        "key": r.key,
                        "overrides": r.overrides,
                        "status": s,
                    });
                    if pipeline {
                        j["recipe"] = r.recipe_path.display().to_string().into();
                        j["parent"] = (!r.target).into();
                        j["init_from"] = r.parent_key().into();
                    }
                    j
                })
                .collect();
            print_json(&serde_json::Value::Array(list));
        }
        Format::Table | Format::Csv => {
            let swept: Vec<String> = runs
                .iter()
                .find(|r| r.target)
                .map(|r| r.overrides.keys().cloned().collect())
                .unwrap_or_default();
            let mut headers = vec!["#".to_string(), "key".to_string()];
            if pipeline {
                headers.extend(["recipe".to_string(), "starts from".to_string()]);
            }
            headers.extend(swept.iter().cloned());
            headers.push("status".to_string());
            let rows: Vec<Vec<String>> = runs
                .iter()
                .zip(&statuses)
                .map(|(r, s)| {
                    let index = if r.target {
                        r.index.to_string()
                    } else {
                        "parent".into()
                    };
                    let mut row = vec![index, r.key.clone()];
                    if pipeline {
                        row.push(r.recipe_path.display().to_string());
                        row.push(r.parent_key().unwrap_or("-").to_string());
                    }
                    row.extend(swept.iter().map(|k| {
                        r.overrides
                            .get(k)
                            .map(|v| cell_in(v, format))
                            .unwrap_or_else(|| "-".into())
                    }));
                    row.push(s.to_string());
                    row
                })
                .collect();
            if format == Format::Csv {
                crate::out!("{}", super::output::csv(&headers, &rows));
            } else {
                crate::outln!("{}", table(&headers, &rows));
                let done = statuses.iter().filter(|s| **s == "done").count();
                let parents = runs.iter().filter(|r| !r.target).count();
                crate::errln!(
                    "{} run(s) planned{}, {} already done",
                    runs.len() - parents,
                    if parents > 0 {
                        format!(" after {parents} they start from")
                    } else {
                        String::new()
                    },
                    done
                );
                if let Some(n) = search {
                    crate::errln!(
                        "sweep.mode = \"tpe\": {} of {} trials proposed so far; `runner sweep` proposes each from the results of the trials before its batch",
                        n.proposed,
                        n.trials
                    );
                }
            }
        }
    }
    Ok(())
}

/// `runner plan RECIPE --cost [--measure]` (and `sweep --dry-run`): what the plan costs, per
/// run and per device, from earlier runs' epochs in the store (or a short benchmark).
pub fn cost(
    g: &Global,
    recipe: &Path,
    sets: &[String],
    measure: bool,
    format: Format,
) -> Result<(), CliError> {
    let (runs, search) = plan_runs(g, recipe, sets, true)?;
    if let (Some(n), true) = (&search, format != Format::Json) {
        crate::errln!(
            "sweep.mode = \"tpe\": the cost counts all {} trials ({} proposed so far; the others as drawn at random, for their model, size and epochs)",
            n.trials,
            n.proposed
        );
    }
    let store = if g.db.exists() {
        Some(Store::open(&g.db)?)
    } else {
        None
    };
    let costs =
        crate::engine::cost::plan_cost(store.as_ref(), &runs, measure).map_err(CliError::failed)?;
    // per device: runs, epochs, hours (None when a run's rate is unknown)
    let mut devices: std::collections::BTreeMap<String, (usize, u64, Option<f64>)> =
        Default::default();
    for c in costs.iter().filter(|c| c.epochs > 0) {
        let e = devices.entry(c.device.clone()).or_insert((0, 0, Some(0.0)));
        e.0 += 1;
        e.1 += u64::from(c.epochs);
        e.2 = match (e.2, c.seconds) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    // halving: the rung schedule's epochs against the full grid's, for the runs not started
    let (_, top) = crate::recipe::load(recipe, &parse_sets(sets)?)?;
    let halving = crate::plan::prune::PrunePlan::of(&top)
        .filter(|p| p.by_rungs())
        .map(|p| {
            let targets: Vec<&crate::engine::cost::RunCost> = costs
                .iter()
                .zip(&runs)
                .filter(|(_, r)| r.target)
                .map(|(c, _)| c)
                .collect();
            let epochs = top.train.epochs;
            let pruner = p.pruner();
            let rungs = pruner.rungs(epochs);
            let full = targets.len() as u64 * u64::from(epochs);
            let budget =
                crate::engine::executor::halving_budget(targets.len(), &rungs, epochs, &*pruner);
            let full_seconds: Option<f64> = targets
                .iter()
                .map(|c| {
                    c.seconds_per_image
                        .map(|s| s * c.train_images as f64 * f64::from(epochs))
                })
                .sum();
            (
                rungs,
                full,
                budget,
                full_seconds.map(|s| s * budget as f64 / full.max(1) as f64),
            )
        });
    let hours = |s: Option<f64>| s.map(|s| s / 3600.0);
    if format == Format::Json {
        let mut doc = serde_json::json!({
            "runs": costs,
            "devices": devices.iter().map(|(d, (n, e, s))| serde_json::json!({
                "device": d, "runs": n, "epochs": e, "hours": hours(*s),
            })).collect::<Vec<_>>(),
        });
        if let Some((rungs, full, budget, seconds)) = &halving {
            doc["halving"] = serde_json::json!({
                "rungs": rungs, "epochs_full": full, "epochs": budget, "hours": hours(*seconds),
            });
        }
        print_json(&doc);
        return Ok(());
    }
    let headers: Vec<String> = ["device", "runs", "epochs", "time", "rate from"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|(d, (n, e, s))| {
            let source = costs
                .iter()
                .find(|c| &c.device == d && c.epochs > 0)
                .map(|c| match &c.source {
                    crate::engine::cost::RateSource::EarlierRuns { runs, epochs } => {
                        format!("{runs} earlier run(s), {epochs} epochs")
                    }
                    crate::engine::cost::RateSource::Measured { steps } => {
                        format!("bench train, {steps} steps (training only)")
                    }
                    crate::engine::cost::RateSource::Unknown => {
                        "no earlier run matches (--measure)".into()
                    }
                })
                .unwrap_or_default();
            vec![
                d.clone(),
                n.to_string(),
                e.to_string(),
                s.map_or("?".into(), duration),
                source,
            ]
        })
        .collect();
    if rows.is_empty() {
        crate::errln!("nothing to train: every planned run is done");
    } else {
        crate::outln!("{}", table(&headers, &rows));
    }
    if let Some((rungs, full, budget, seconds)) = halving {
        crate::outln!(
            "with halving (rungs at epochs {}): {budget} of {full} epochs{}",
            rungs
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            seconds.map_or(String::new(), |s| format!(", {}", duration(s)))
        );
    }
    Ok(())
}

/// Seconds as `12.3 s`, `4.5 min` or `6.78 h`.
fn duration(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.2} h", s / 3600.0)
    }
}
