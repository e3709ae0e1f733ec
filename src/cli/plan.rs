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

pub fn run(g: &Global, recipe: &Path, sets: &[String], format: Format) -> Result<(), CliError> {
    let runs = plan_recipe(recipe, sets)?;
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
            }
        }
    }
    Ok(())
}
