//! The training engine's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the training components.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A recipe value the engine cannot use (`key` is the dotted recipe key).
    #[error("invalid recipe value `{key}`: {msg}")]
    Config { key: String, msg: String },
    /// A metric the scheduler or checkpoint policy monitors was not logged.
    #[error(
        "metric `{name}` is monitored by {by} but was not logged this epoch (logged: {logged})"
    )]
    MissingMetric {
        name: String,
        by: String,
        logged: String,
    },
    /// Saved optimizer state that does not fit the optimizer's parameters.
    #[error("optimizer state: {0}")]
    OptimizerState(String),
    /// Saved model weights that do not fit the model's variables.
    #[error("model state: {0}")]
    ModelState(String),
    /// Saved scheduler state that does not fit the scheduler.
    #[error("scheduler state: {0}")]
    SchedulerState(String),
    /// A checkpoint file that cannot be written, read or trusted.
    #[error("checkpoint {}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl TrainError {
    pub(crate) fn config(key: &str, msg: impl Into<String>) -> Self {
        TrainError::Config {
            key: key.to_string(),
            msg: msg.into(),
        }
    }
}
