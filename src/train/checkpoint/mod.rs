//! Checkpoints: which epochs to save and delete ([`policy`]) and the atomic, validated
//! single-file format ([`io`]).

pub mod io;
pub mod policy;

pub use io::{
    assign_vars, check_model_shapes, read_checkpoint, remove_stale_temp, temp_path,
    write_checkpoint, Checkpoint, CheckpointMeta,
};
pub use policy::{
    CheckpointAction, CheckpointPolicy, CheckpointRule, CheckpointingStrategy, EveryN, KeepBestN,
    KeepLastN, SavedCheckpoint,
};
