//! Face CNNs (ConvNeXt, ResNet, MobileNet) as plain Candle modules with train/eval modes.

pub mod bench;
pub mod build;
pub mod convnext;
pub mod face;
pub mod inspect;
pub mod interop;
pub mod layers;
pub mod mobilenet_v2;
pub mod mobilenet_v3;
pub mod resnet;
pub mod weights;

pub use build::{build, convnext_arch, min_input_reason, min_input_side};
pub use face::{FaceModel, ForwardCtx, Trace, TraceEntry};
pub use inspect::{inspect, InspectReport, LayerInfo};
pub use weights::{
    count_params, count_varmap, is_buffer, load_init_from, load_init_from_partial, LoadReport,
    ShapeRecorder,
};

/// Errors of model construction and weight files.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid [model] config: {key}: {msg}")]
    Config { key: String, msg: String },
    #[error("cannot read weights {path}: {msg}")]
    Io { path: String, msg: String },
    #[error("weights {path} do not fit the model: missing {missing:?}, mismatched {mismatched:?}")]
    Load {
        path: String,
        missing: Vec<String>,
        mismatched: Vec<String>,
    },
    #[error("variable map lock poisoned")]
    Poisoned,
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
