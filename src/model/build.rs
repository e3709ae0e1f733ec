//! The model factory: resolves a recipe's `[model]` (preset, depths, dims, ...) into one of the
//! families and builds it on a `VarBuilder`.

use candle_nn::VarBuilder;

use super::convnext::{self, ConvNext, ConvNextConfig};
use super::face::FaceModel;
use super::mobilenet_v2::{MobileNetV2, MobileNetV2Config};
use super::mobilenet_v3::{self, MobileNetV3, MobileNetV3Config};
use super::resnet::{self, ResNet, ResNetConfig};
use super::ModelError;
use crate::recipe::{ModelConfig, ModelKind};

fn bad(key: &str, msg: String) -> ModelError {
    ModelError::Config {
        key: key.to_string(),
        msg,
    }
}

/// Builds the network described by `cfg` with a `num_classes`-way classifier (the caller
/// resolves `cfg.num_classes` against the data). Parameters are created through `vb` (timm
/// names for ConvNeXt, torchvision names for ResNet / MobileNet).
pub fn build(
    cfg: &ModelConfig,
    num_classes: usize,
    vb: VarBuilder,
) -> Result<Box<dyn FaceModel>, ModelError> {
    crate::kernels::tune_allocator();
    if num_classes == 0 {
        return Err(bad("model.num_classes", "must be positive".into()));
    }
    if let Some(0) = cfg.embedding_dim {
        return Err(bad("model.embedding_dim", "must be positive".into()));
    }
    if !(0.0..1.0).contains(&cfg.drop_path) {
        return Err(bad(
            "model.drop_path",
            format!("{} is not in [0, 1)", cfg.drop_path),
        ));
    }
    if !(0.0..1.0).contains(&cfg.dropout) {
        return Err(bad(
            "model.dropout",
            format!("{} is not in [0, 1)", cfg.dropout),
        ));
    }
    let preset = cfg.preset.as_deref();
    match cfg.kind {
        ModelKind::Convnext => {
            let (depths, dims) = convnext_arch(cfg)?;
            let c = ConvNextConfig {
                depths,
                dims,
                block_norm: cfg.block_norm,
                layer_scale: cfg.layer_scale.init_value(),
                drop_path: cfg.drop_path,
                dropout: cfg.dropout,
                embedding_dim: cfg.embedding_dim,
                num_classes,
            };
            Ok(Box::new(ConvNext::new(vb, &c)?))
        }
        ModelKind::Resnet => {
            let p = preset.unwrap_or("18");
            let (bottleneck, mut depths) = resnet::preset(p).ok_or_else(|| {
                bad(
                    "model.preset",
                    format!("unknown ResNet preset {p:?} (18, 34, 50, 101, 152)"),
                )
            })?;
            if let Some(d) = &cfg.depths {
                depths = d.clone();
            }
            let widths = match &cfg.dims {
                Some(d) => d.clone(),
                None => vec![64, 128, 256, 512],
            };
            if depths.len() != widths.len() || widths.is_empty() || widths.contains(&0) {
                return Err(bad(
                    "model.dims",
                    format!("depths {depths:?} and dims {widths:?} must be non-empty, positive and of equal length"),
                ));
            }
            let c = ResNetConfig {
                bottleneck,
                depths,
                widths,
                small_stem: cfg.small_stem,
                dropout: cfg.dropout,
                embedding_dim: cfg.embedding_dim,
                num_classes,
            };
            Ok(Box::new(ResNet::new(vb, &c)?))
        }
        ModelKind::MobilenetV2 => {
            check_width(cfg.width_mult)?;
            let c = MobileNetV2Config {
                width_mult: cfg.width_mult,
                dropout: cfg.dropout,
                embedding_dim: cfg.embedding_dim,
                num_classes,
            };
            Ok(Box::new(MobileNetV2::new(vb, &c)?))
        }
        ModelKind::MobilenetV3 => {
            check_width(cfg.width_mult)?;
            let p = preset.unwrap_or("large");
            let large = match p {
                "large" => true,
                "small" => false,
                _ => {
                    return Err(bad(
                        "model.preset",
                        format!("unknown MobileNetV3 preset {p:?} (large, small)"),
                    ))
                }
            };
            let c = MobileNetV3Config {
                blocks: mobilenet_v3::blocks(large),
                last_channel: if large { 1280 } else { 1024 },
                width_mult: cfg.width_mult,
                dropout: cfg.dropout,
                embedding_dim: cfg.embedding_dim,
                num_classes,
            };
            Ok(Box::new(MobileNetV3::new(vb, &c)?))
        }
    }
}

/// The depths and dims of the ConvNeXt `cfg` describes: its preset's (tiny without one),
/// with `depths` / `dims` given in the recipe taking their place.
pub fn convnext_arch(cfg: &ModelConfig) -> Result<(Vec<usize>, Vec<usize>), ModelError> {
    let (mut depths, mut dims) = match cfg.preset.as_deref() {
        Some(p) => convnext::preset(p).ok_or_else(|| {
            bad(
                "model.preset",
                format!(
                    "unknown ConvNeXt preset {p:?} (atto, femto, pico, nano, tiny, small, base)"
                ),
            )
        })?,
        None => convnext::preset("tiny").unwrap_or_default(),
    };
    if let Some(d) = &cfg.depths {
        depths = d.clone();
    }
    if let Some(d) = &cfg.dims {
        dims = d.clone();
    }
    if depths.len() != dims.len() || dims.is_empty() || dims.contains(&0) {
        return Err(bad(
            "model.dims",
            format!("depths {depths:?} and dims {dims:?} must be non-empty, positive and of equal length"),
        ));
    }
    Ok((depths, dims))
}

/// The smallest input side, in pixels, the network `cfg` describes can run on.
///
/// ConvNeXt's 4x4/4 stem and 2x2/2 downsamplings (one per stage after the first) have no
/// padding and floor the side, so a side under `4 * 2^(stages - 1)` (32 for the four-stage
/// presets) leaves an empty feature map. ResNet's and MobileNet's strided convolutions and
/// max-pool are padded (`out = (in - 1) / stride + 1` for 3x3 / pad 1 at stride 2, 7x7 / pad
/// 3, 5x5 / pad 2), so every side keeps at least one pixel: 1.
pub fn min_input_side(cfg: &ModelConfig) -> u32 {
    match cfg.kind {
        ModelKind::Convnext => {
            let stages = match (&cfg.depths, cfg.preset.as_deref()) {
                (Some(d), _) => d.len(),
                (None, Some(p)) => convnext::preset(p).map(|(d, _)| d.len()).unwrap_or(4),
                (None, None) => 4,
            };
            convnext::min_input_side(stages)
        }
        ModelKind::Resnet | ModelKind::MobilenetV2 | ModelKind::MobilenetV3 => 1,
    }
}

/// How [`min_input_side`] comes about, for error messages.
pub fn min_input_reason(cfg: &ModelConfig) -> String {
    match cfg.kind {
        ModelKind::Convnext => {
            let min = min_input_side(cfg);
            let downs = (min / 4).trailing_zeros();
            format!(
                "this ConvNeXt ({} stages: a 4x4/4 stem and {downs} 2x2/2 downsamplings) needs >= {min} px",
                downs + 1
            )
        }
        _ => "this model needs >= 1 px".into(),
    }
}

fn check_width(w: f64) -> Result<(), ModelError> {
    if w > 0.0 && w.is_finite() {
        Ok(())
    } else {
        Err(bad("model.width_mult", format!("{w} must be positive")))
    }
}
