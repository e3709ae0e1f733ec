//! `runner validate RECIPE`: prints the resolved configuration or the errors. Every sweep
//! point is resolved and checked too, so a swept key that does not exist is caught here.

use std::path::Path;

use super::{parse_sets, CliError};

pub fn run(
    recipe: &Path,
    sets: &[String],
    reporter: &crate::engine::progress::Reporter,
) -> Result<(), CliError> {
    let overrides = parse_sets(sets)?;
    // planning first: it reports the recipe's errors with every swept key's own
    let runs = super::plan::plan_recipe(recipe, sets)?;
    let (composed, resolved) = crate::recipe::load(recipe, &overrides)?;
    // the data, as `run` would check it before recording a run (the built-in set is not
    // generated for this)
    let mut preflight = crate::engine::preflight::Preflight::with_reporter(reporter);
    for r in &runs {
        preflight
            .check_data(&r.recipe)
            .map_err(|e| super::preflight_error(recipe, sets, e))?;
    }
    for w in preflight.take_warnings() {
        crate::errln!("warning: {w}");
    }
    let parents = runs.iter().filter(|r| !r.target).count();
    let runs: Vec<_> = runs.into_iter().filter(|r| r.target).collect();
    let text = toml::to_string_pretty(&resolved).map_err(CliError::failed)?;
    crate::errln!(
        "{}: valid ({} file{} composed, {} run{}{})",
        recipe.display(),
        composed.files.len(),
        if composed.files.len() == 1 { "" } else { "s" },
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        if parents > 0 {
            format!(", starting from {parents} run(s) of other recipes")
        } else {
            String::new()
        }
    );
    crate::outln!("{text}");
    Ok(())
}
