//! The training engine: loss, optimizers, schedulers, checkpoints, divergence handling.
//!
//! Everything here is a pure, reusable component; the loop composes them. Nothing here knows
//! which model or data set it trains.

pub mod checkpoint;
pub mod divergence;
pub mod ema;
mod error;
pub mod loss;
pub mod margin;
pub mod optim;
pub mod precision;
pub mod schedule;

pub use error::TrainError;

/// Metrics logged at the end of an epoch, by contract name (`train_loss`, `val_acc`, `lr`, ...).
pub type Metrics = std::collections::HashMap<String, f64>;
