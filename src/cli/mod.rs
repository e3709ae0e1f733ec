//! Subcommand implementations: the only place that prints. Each returns a `CliError` whose
//! exit code follows the contract (1 run-time failure, 2 invalid input).

pub mod bench;
pub mod cluster;
pub mod data;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod leaderboard;
pub mod output;
pub mod plan;
pub mod report;
pub mod runs;
pub mod selftest;
pub mod sweep;
pub mod train;
pub mod validate;
pub mod watch;

use std::path::PathBuf;

/// An error with the exit code the contract gives it.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    /// A recipe's problems, each shown in place (`message` has them one per line).
    pub diagnostics: Vec<crate::recipe::Diagnostic>,
}

impl CliError {
    /// Invalid input: exit status 2.
    pub fn invalid(message: impl std::fmt::Display) -> CliError {
        CliError {
            code: 2,
            message: message.to_string(),
            diagnostics: Vec::new(),
        }
    }
    /// Interrupted (Ctrl-C, SIGTERM, a closed output): exit status 130, as shells report a
    /// command SIGINT ended. The run was checkpointed and is `interrupted`.
    pub fn interrupted(message: impl std::fmt::Display) -> CliError {
        CliError {
            code: 130,
            message: message.to_string(),
            diagnostics: Vec::new(),
        }
    }
    /// A run-time failure: exit status 1.
    pub fn failed(message: impl std::fmt::Display) -> CliError {
        CliError {
            code: 1,
            message: message.to_string(),
            diagnostics: Vec::new(),
        }
    }
}

impl From<crate::recipe::RecipeError> for CliError {
    fn from(e: crate::recipe::RecipeError) -> Self {
        let mut err = CliError::invalid(&e);
        if let crate::recipe::RecipeError::Invalid(d) = e {
            err.diagnostics = d;
        }
        err
    }
}

impl From<crate::store::StoreError> for CliError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NoSuchRun(_) | crate::store::StoreError::Ambiguous { .. } => {
                CliError::invalid(e)
            }
            other => CliError::failed(other),
        }
    }
}

impl From<crate::engine::preflight::PreflightError> for CliError {
    fn from(e: crate::engine::preflight::PreflightError) -> Self {
        if e.is_invalid_input() {
            CliError::invalid(e)
        } else {
            CliError::failed(e)
        }
    }
}

/// A preflight error of a recipe as the user sees it. A data folder that is missing or not in
/// the course layout points at `data.root` where the recipe (or `--set`) wrote it, with the
/// expected tree and how a relative root is resolved; the rest as they are.
pub(crate) fn preflight_error(
    recipe: &std::path::Path,
    sets: &[String],
    e: crate::engine::preflight::PreflightError,
) -> CliError {
    use crate::data::DataError;
    use crate::engine::preflight::PreflightError;
    let PreflightError::Data(
        data @ (DataError::MissingFolder(_)
        | DataError::MissingFile(_)
        | DataError::Layout { .. }
        | DataError::Csv { .. }),
    ) = &e
    else {
        return CliError::from(e);
    };
    let message = format!("the data folder is not in the course layout: {data}");
    let loaded = parse_sets(sets)
        .ok()
        .and_then(|overrides| crate::recipe::load(recipe, &overrides).ok());
    let Some((composed, _)) = loaded else {
        return CliError::invalid(format!(
            "data.root: {message}\n{}",
            crate::data::check::LAYOUT_HELP
        ));
    };
    let origin = composed
        .origins
        .get("data.root")
        .cloned()
        .unwrap_or_else(|| crate::recipe::Origin::file_start(recipe));
    let mut d = crate::recipe::compose::pointed(
        &composed.sources,
        origin,
        "data.root",
        crate::recipe::error::Focus::Value,
        message,
    );
    d.help = Some(crate::data::check::LAYOUT_HELP.to_string());
    let mut err = CliError::invalid(format!("data.root: {}", d.message));
    err.diagnostics = vec![d];
    err
}

/// Options every command shares.
#[derive(Debug, Clone)]
pub struct Global {
    pub db: PathBuf,
}

/// `--sweep KEY=V1,V2,...` as the `--set sweep.params."KEY"=[V1, V2, ...]` it stands for,
/// after `sets`: the values are split on top-level commas (not inside brackets, braces or
/// quotes) and each is read as `--set` reads a value (TOML, else text).
pub fn with_sweep_axes(sets: &[String], sweeps: &[String]) -> Result<Vec<String>, CliError> {
    let mut out = sets.to_vec();
    for text in sweeps {
        let Some((key, values)) = text.split_once('=') else {
            return Err(CliError::invalid(format!(
                "--sweep {text}: expected KEY=V1,V2,... (e.g. --sweep 'optimizer.lr=1e-3,2e-3')"
            )));
        };
        let key = key.trim().trim_matches('"');
        if key.is_empty() || key.contains('"') {
            return Err(CliError::invalid(format!(
                "--sweep {text}: expected a dotted recipe key before `=`"
            )));
        }
        let parts = split_top_level(values);
        if parts.iter().all(|p| p.trim().is_empty()) {
            return Err(CliError::invalid(format!(
                "--sweep {text}: no values after `=`"
            )));
        }
        let list: Vec<String> = parts
            .iter()
            .map(|p| crate::recipe::overrides::parse_value(p.trim()).to_string())
            .collect();
        out.push(format!("sweep.params.\"{key}\"=[{}]", list.join(", ")));
    }
    Ok(out)
}

/// `text` split on the commas outside brackets, braces and quotes.
fn split_top_level(text: &str) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    let (mut depth, mut quote) = (0i32, None::<char>);
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// Parses `--set` arguments; every malformed one is reported.
pub fn parse_sets(sets: &[String]) -> Result<Vec<crate::recipe::Override>, CliError> {
    use crate::recipe::{Override, RecipeError};
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for s in sets {
        match Override::parse(s) {
            Ok(o) => out.push(o),
            Err(RecipeError::Invalid(d)) => errors.extend(d),
            Err(e) => return Err(e.into()),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(RecipeError::Invalid(errors).into())
    }
}
