//! The data module's error type: every variant names the file, folder or key at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data folder not found: {0}")]
    MissingFolder(PathBuf),
    #[error("data file not found: {0}")]
    MissingFile(PathBuf),
    #[error("invalid data layout at {path}: {msg}")]
    Layout { path: PathBuf, msg: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode image {path}: {msg}")]
    BadImage { path: PathBuf, msg: String },
    #[error("cannot encode image {path}: {msg}")]
    Encode { path: PathBuf, msg: String },
    #[error("bad CSV {path}: {msg}")]
    Csv { path: PathBuf, msg: String },
    #[error("invalid transform `{kind}`: {msg}")]
    Transform { kind: String, msg: String },
    #[error("invalid data parameter `{key}`: {msg}")]
    Param { key: String, msg: String },
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("data loader stopped: {0}")]
    Loader(String),
}

impl DataError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
    /// Whether the user's data or settings are at fault (exit status 2) rather than a file
    /// that failed to read or write at run time (1).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            DataError::MissingFolder(_)
                | DataError::MissingFile(_)
                | DataError::Layout { .. }
                | DataError::Csv { .. }
                | DataError::Param { .. }
        )
    }

    pub fn layout(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        DataError::Layout {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn transform(kind: &str, msg: impl Into<String>) -> Self {
        DataError::Transform {
            kind: kind.to_string(),
            msg: msg.into(),
        }
    }
    pub fn param(key: &str, msg: impl Into<String>) -> Self {
        DataError::Param {
            key: key.to_string(),
            msg: msg.into(),
        }
    }
}
