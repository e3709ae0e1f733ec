//! Recipe errors: every diagnostic names the file, the line and column where known, and the key.

use std::fmt;
use std::path::PathBuf;

/// Where a key was written: a file and a 1-based line and column, or the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File {
        path: PathBuf,
        line: usize,
        col: usize,
    },
    CommandLine,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Origin::File { path, line, col } => write!(f, "{}:{}:{}", path.display(), line, col),
            Origin::CommandLine => f.write_str("--set"),
        }
    }
}

/// One problem with a recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Where the offending key was written (the recipe file itself when unknown).
    pub origin: Origin,
    /// The dotted key, e.g. `optimizer.lr` or `transforms.train[1].size`; empty for file-level errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.origin, self.key, self.message)
        }
    }
}

/// Why a recipe could not be loaded. Every variant is invalid input (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}: cannot read recipe: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: is a directory, not a recipe file")]
    IsDirectory { path: PathBuf },
    #[error("{path}: not valid UTF-8 (byte {offset}); recipes are UTF-8 TOML")]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("{}", join(.0))]
    Invalid(Vec<Diagnostic>),
}

fn join(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl RecipeError {
    pub fn one(origin: Origin, key: impl Into<String>, message: impl Into<String>) -> Self {
        RecipeError::Invalid(vec![Diagnostic {
            origin,
            key: key.into(),
            message: message.into(),
        }])
    }

    /// The diagnostics (file-level errors become one diagnostic).
    pub fn diagnostics(&self) -> Vec<String> {
        match self {
            RecipeError::Invalid(d) => d.iter().map(|d| d.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|i| before[i + 1..].chars().count())
        .unwrap_or_else(|| before.chars().count())
        + 1;
    (line, col)
}

/// The closest candidate to `word` when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
