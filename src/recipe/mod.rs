//! Recipes: the TOML schema, fragment composition, `--set` overrides and validation with spans.

pub mod compose;
pub mod error;
pub mod metrics;
pub mod overrides;
pub mod render;
pub mod schema;
pub mod validate;

use std::path::Path;

pub use compose::{compose, Composed};
pub use error::{Diagnostic, Focus, Origin, RecipeError, Spans};
pub use overrides::Override;
pub use schema::*;

/// Applies `overrides` (in order) to a composed recipe and types it, then checks ranges,
/// reporting every problem found (see `validate`).
/// - An override written as a bare word or number that the schema wants as a string (e.g.
///   `model.preset=18`) is retried as its text; if that fails to type too, the first error is
///   the one reported.
/// - An override that changes a table's `kind` (`optimizer.kind=sgd`, or a swept
///   `transforms.train[0].kind`) drops the options the files wrote for the old kind that the new
///   one does not take (`optimizer.betas`), as composing a fragment with another `kind` does;
///   the options both kinds take (`optimizer.lr`) are kept.
pub fn resolve(
    mut composed: Composed,
    overrides: &[Override],
) -> Result<(Composed, Recipe), RecipeError> {
    // a recipe with a fragment missing: checking the rest would judge holes
    if !composed.complete {
        return Err(RecipeError::Invalid(composed.problems.clone()));
    }
    let mut overrides = overrides.to_vec();
    // key -> the first error of an override retried as its text
    let mut retried: std::collections::BTreeMap<String, Vec<Diagnostic>> = Default::default();
    loop {
        let mut c = composed.clone();
        let mut errors = Vec::new();
        for ov in &overrides {
            match overrides::apply(&mut c, ov) {
                Ok(()) => {}
                Err(RecipeError::Invalid(d)) => errors.extend(d),
                Err(other) => return Err(other),
            }
        }
        let found = validate::validate(&c);
        if let (Some(recipe), true) = (found.recipe, errors.is_empty()) {
            if c.problems.is_empty() {
                return Ok((c, recipe));
            }
        }
        errors.extend(found.errors);
        if let Some(stale) = errors
            .iter()
            .find_map(|d| stale_option_of_old_kind(&d.key, &composed, &overrides))
        {
            if overrides::remove(&mut composed, &stale) {
                continue;
            }
        }
        // The text of a value that did not type, for the overrides not tried that way yet.
        let mut again = false;
        for o in overrides.iter_mut() {
            let untyped = found.type_errors.contains(&o.key);
            if untyped && !matches!(o.value, toml::Value::String(_)) && o.raw.is_some() {
                o.value = toml::Value::String(o.raw.clone().unwrap_or_default());
                let first = errors.iter().filter(|d| d.key == o.key).cloned().collect();
                retried.insert(o.key.clone(), first);
                again = true;
            }
        }
        if again {
            continue;
        }
        // A retried text that did not type either: the value's own error says more.
        let mut out = Vec::new();
        for d in errors {
            match retried.get(&d.key) {
                Some(first) if found.type_errors.contains(&d.key) => out.extend(first.clone()),
                _ => out.push(d),
            }
        }
        let mut out = validate::ordered(out, &c);
        // composing's errors (a fragment replaced by its nearest name) first
        out.splice(0..0, c.problems.iter().cloned());
        // command-line errors in the order of their flags
        let flag_rank = |d: &Diagnostic| match &d.origin {
            Origin::CommandLine { flag } => overrides
                .iter()
                .position(|o| matches!(&o.origin, Origin::CommandLine { flag: f } if f == flag))
                .unwrap_or(usize::MAX),
            Origin::File { .. } => 0,
        };
        out.sort_by_key(flag_rank);
        return Err(RecipeError::Invalid(out));
    }
}

/// `key` when it is an option a file wrote (`optimizer.betas`) in a table whose `kind` an
/// override changes (`optimizer.kind=sgd`), and no override sets it.
fn stale_option_of_old_kind(
    key: &str,
    composed: &Composed,
    overrides: &[Override],
) -> Option<String> {
    let (table, name) = key.rsplit_once('.')?;
    let kind_key = format!("{table}.kind");
    if name == "kind" || overrides.iter().any(|o| o.key == key) {
        return None;
    }
    let old_kind = overrides::get(&composed.table, &kind_key)?;
    let new_kind = overrides.iter().rev().find(|o| o.key == kind_key)?;
    let changed = new_kind.value != *old_kind;
    (changed && overrides::get(&composed.table, key).is_some()).then(|| key.to_string())
}

/// Reads, composes, overrides and validates a recipe file.
pub fn load(path: &Path, overrides: &[Override]) -> Result<(Composed, Recipe), RecipeError> {
    resolve(compose(path)?, overrides)
}

/// `load` for the benchmarks: a `data.image_size` override sets the size to measure at,
/// whatever the transforms output (they are not run on random input), so it is applied after
/// validation and checked only against the model's minimum input.
pub fn load_for_bench(
    path: &Path,
    overrides: &[Override],
) -> Result<(Composed, Recipe), RecipeError> {
    let (sizes, rest): (Vec<&Override>, Vec<&Override>) =
        overrides.iter().partition(|o| o.key == "data.image_size");
    let rest: Vec<Override> = rest.into_iter().cloned().collect();
    let (composed, mut recipe) = load(path, &rest)?;
    if let Some(ov) = sizes.last() {
        let min = crate::model::min_input_side(&recipe.model).max(8);
        let fail = |msg: String| {
            let d = compose::pointed(
                &composed.sources,
                ov.origin.clone(),
                &ov.key,
                Focus::Value,
                &msg,
            );
            RecipeError::Invalid(vec![d])
        };
        let size = ov
            .value
            .as_integer()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| fail("expected a whole number of pixels".into()))?;
        if size < min {
            return Err(fail(format!(
                "must be >= {min} (got {size}): {}",
                crate::model::min_input_reason(&recipe.model)
            )));
        }
        recipe.data.image_size = size;
    }
    Ok((composed, recipe))
}
