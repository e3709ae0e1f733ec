//! Recipes: the TOML schema, fragment composition, `--set` overrides and validation with spans.

pub mod schema;
pub use schema::*;
