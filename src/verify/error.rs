//! The verification module's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `verify`. Messages name the input at fault.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{what}: empty input")]
    Empty { what: &'static str },
    #[error("{what}: lengths differ ({left} vs {right})")]
    LengthMismatch {
        what: &'static str,
        left: usize,
        right: usize,
    },
    #[error("embeddings: {len} values do not form rows of dimension {dim}")]
    BadShape { len: usize, dim: usize },
    #[error("embeddings: dimension {left} does not match dimension {right}")]
    DimMismatch { left: usize, right: usize },
    #[error("{what}: non-finite value at row {row}")]
    NonFinite { what: &'static str, row: usize },
    #[error("gallery: identity `{0}` is the no-match label and cannot be a known identity")]
    ReservedIdentity(String),
    #[error("{what}: needs {needs}")]
    Degenerate {
        what: &'static str,
        needs: &'static str,
    },
    #[error("{what}: {value} is out of range ({range})")]
    OutOfRange {
        what: &'static str,
        value: f64,
        range: &'static str,
    },
    #[error("submission: duplicate id `{0}`")]
    DuplicateId(String),
    #[error("submission: empty id at row {0}")]
    EmptyId(usize),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{path}: bad header {found:?}, expected `id,label`")]
    BadHeader { path: PathBuf, found: Vec<String> },
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}
