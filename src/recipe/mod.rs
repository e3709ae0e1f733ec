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
/// An override written as a bare word or number that the schema wants as a string (e.g.
/// `model.preset=18`) is retried as its text.
pub fn resolve(
    mut composed: Composed,
    overrides: &[Override],
) -> Result<(Composed, Recipe), RecipeError> {
    let mut overrides = overrides.to_vec();
    loop {
        let mut c = composed.clone();
        for ov in &overrides {
            overrides::apply(&mut c, ov)?;
        }
        match validate::type_check(&c) {
            Ok(recipe) => {
                validate::check(&recipe, &c)?;
                composed = c;
                return Ok((composed, recipe));
            }
            Err(err) => {
                let RecipeError::Invalid(diags) = &err else {
                    return Err(err);
                };
                let key = diags.first().map(|d| d.key.clone()).unwrap_or_default();
                let retry = overrides.iter_mut().find(|o| {
                    o.key == key && !matches!(o.value, toml::Value::String(_)) && o.raw.is_some()
                });
                match retry {
                    Some(o) => o.value = toml::Value::String(o.raw.clone().unwrap_or_default()),
                    None => return Err(err),
                }
            }
        }
    }
}

/// Reads, composes, overrides and validates a recipe file.
pub fn load(path: &Path, overrides: &[Override]) -> Result<(Composed, Recipe), RecipeError> {
    resolve(compose(path)?, overrides)
}
