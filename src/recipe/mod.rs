//! Recipes: the TOML schema, fragment composition, `--set` overrides and validation with spans.

pub mod compose;
pub mod error;
pub mod overrides;
pub mod schema;
pub mod validate;

use std::path::Path;

pub use compose::{compose, Composed};
pub use error::{Diagnostic, Origin, RecipeError};
pub use overrides::Override;
pub use schema::*;

/// Applies `overrides` (in order) to a composed recipe and types it, then checks ranges.
/// - An override written as a bare word or number that the schema wants as a string (e.g.
///   `model.preset=18`) is retried as its text; if that fails too, the first error is the one
///   reported.
/// - An override that changes a table's `kind` (`optimizer.kind=sgd`, or a swept
///   `transforms.train[0].kind`) drops the options the files wrote for the old kind that the new
///   one does not take (`optimizer.betas`), as composing a fragment with another `kind` does;
///   the options both kinds take (`optimizer.lr`) are kept.
pub fn resolve(
    mut composed: Composed,
    overrides: &[Override],
) -> Result<(Composed, Recipe), RecipeError> {
    let mut overrides = overrides.to_vec();
    let mut retried: Option<(String, RecipeError)> = None;
    loop {
        let mut c = composed.clone();
        for ov in &overrides {
            overrides::apply(&mut c, ov)?;
        }
        let (err, typed) = match validate::type_check(&c) {
            Ok(recipe) => match validate::check(&recipe, &c) {
                Ok(()) => return Ok((c, recipe)),
                Err(e) => (e, true),
            },
            Err(e) => (e, false),
        };
        let RecipeError::Invalid(diags) = &err else {
            return Err(err);
        };
        if let Some(stale) = diags
            .iter()
            .find_map(|d| stale_option_of_old_kind(&d.key, &composed, &overrides))
        {
            if overrides::remove(&mut composed, &stale) {
                continue;
            }
        }
        let key = diags.first().map(|d| d.key.clone()).unwrap_or_default();
        if let Some((k, first)) = retried.take() {
            if k == key && !typed {
                // The text did not type either: the value's own error says more.
                return Err(first);
            }
        }
        let retry = (!typed).then(|| {
            overrides.iter_mut().find(|o| {
                o.key == key && !matches!(o.value, toml::Value::String(_)) && o.raw.is_some()
            })
        });
        match retry.flatten() {
            Some(o) => {
                o.value = toml::Value::String(o.raw.clone().unwrap_or_default());
                retried = Some((key, err));
            }
            None => return Err(err),
        }
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
