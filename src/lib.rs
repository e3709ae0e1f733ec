//! runner: a declarative, reproducible experiment runner for face recognition CNNs on Candle.
//!
//! Data flows one way: recipe -> plan -> store -> train -> verify -> query. Each module owns
//! one of those steps; `src/main.rs` only parses arguments and calls into `cli`.

pub mod cli;
pub mod console;
pub mod data;
pub mod engine;
pub mod kernels;
pub mod model;
pub mod plan;
pub mod recipe;
pub mod store;
pub mod train;
pub mod verify;
