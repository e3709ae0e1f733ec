//! The training engine: loss, optimizers, schedulers, checkpoints, the loop.
