//! Weights for other libraries: the layout `runner export` writes (timm names for ConvNeXt,
//! torchvision names for ResNet and MobileNet, which candle-transformers' ConvNeXt and ResNet
//! also use), and the options of a model that those libraries cannot build. See
//! docs/interop.md.
//!
//! runner's own checkpoints keep one layout for every ConvNeXt (a Linear MLP in its blocks,
//! 2-D `mlp.fc1` / `mlp.fc2` weights); the export is where it becomes the layout of the timm
//! model with the same depths and dims. timm builds its atto, femto, pico and nano presets with
//! `conv_mlp=True`: the block MLP is a pair of 1x1 convolutions (4-D `[out, in, 1, 1]`
//! weights) after a LayerNorm over the channels, the same maths as runner's channels-last
//! LayerNorm and Linear layers. `model.init_from` reads both layouts
//! ([`super::weights::load_init_from`]).

use std::collections::HashMap;

use candle_core::Tensor;

use super::build::convnext_arch;
use super::{convnext, resnet, ModelError};
use crate::recipe::{BlockNorm, LossConfig, LossKind, ModelConfig, ModelKind};

/// timm's ConvNeXt presets built with `conv_mlp=True` (timm/models/convnext.py, and
/// candle-transformers' `convnext::Config::{atto, femto, pico, nano}`, `use_conv_mlp: true`).
pub const CONV_MLP_PRESETS: [&str; 4] = ["atto", "femto", "pico", "nano"];

/// The named ConvNeXt preset with these depths and dims, if any.
pub fn convnext_preset_of(depths: &[usize], dims: &[usize]) -> Option<&'static str> {
    ["atto", "femto", "pico", "nano", "tiny", "small", "base"]
        .into_iter()
        .find(|p| convnext::preset(p).is_some_and(|(d, w)| d == depths && w == dims))
}

/// Whether timm (and candle-transformers) build the ConvNeXt with these depths and dims with a
/// 1x1-conv MLP: true for the atto, femto, pico and nano architectures, however the recipe
/// named them (a preset, or the same `depths` and `dims` written out).
pub fn convnext_conv_mlp(depths: &[usize], dims: &[usize]) -> bool {
    convnext_preset_of(depths, dims).is_some_and(|p| CONV_MLP_PRESETS.contains(&p))
}

/// What [`export_weights`] produced.
#[derive(Debug)]
pub struct Exported {
    /// The tensors to write, by timm / torchvision name.
    pub tensors: HashMap<String, Tensor>,
    /// The names written in another shape than runner's checkpoints hold (the 1x1-conv MLP
    /// weights of a conv_mlp ConvNeXt), sorted.
    pub reshaped: Vec<String>,
    /// One line per option of this model that timm / torchvision / candle-transformers cannot
    /// represent, saying what the file holds instead and what to do.
    pub notes: Vec<String>,
}

/// True for the weight of a ConvNeXt block's MLP layer (`stages.i.blocks.j.mlp.fc1.weight`,
/// `...fc2.weight`).
fn is_block_mlp_weight(name: &str) -> bool {
    name.starts_with("stages.")
        && (name.ends_with(".mlp.fc1.weight") || name.ends_with(".mlp.fc2.weight"))
}

/// The model tensors of a checkpoint (`tensors`, runner's names and shapes) in the layout of
/// the timm / torchvision model `model` corresponds to: for a ConvNeXt with the depths and
/// dims of timm's atto, femto, pico or nano, each block's `mlp.fc1.weight` / `mlp.fc2.weight`
/// as a 1x1-conv weight `[out, in, 1, 1]`; everything else as it is. `loss` tells whether
/// the classifier was trained (see [`export_notes`]).
pub fn export_weights(
    model: &ModelConfig,
    loss: &LossConfig,
    mut tensors: HashMap<String, Tensor>,
) -> Result<Exported, ModelError> {
    let mut reshaped = Vec::new();
    if model.kind == ModelKind::Convnext {
        let (depths, dims) = convnext_arch(model)?;
        if convnext_conv_mlp(&depths, &dims) {
            for (name, t) in tensors.iter_mut() {
                if !is_block_mlp_weight(name) {
                    continue;
                }
                let (out, inp) = t.dims2().map_err(|_| ModelError::Config {
                    key: "model".into(),
                    msg: format!(
                        "{name}: expected a 2-D Linear weight in the checkpoint, found shape {:?}",
                        t.dims()
                    ),
                })?;
                *t = t.reshape((out, inp, 1, 1))?;
                reshaped.push(name.clone());
            }
            reshaped.sort();
        }
    }
    Ok(Exported {
        tensors,
        reshaped,
        notes: export_notes(model, loss)?,
    })
}

/// The options of `model` (and a margin `loss`) that timm / torchvision / candle-transformers
/// cannot represent, one line each; empty for the presets with the defaults. `runner export`
/// prints them as warnings; docs/interop.md lists them.
pub fn export_notes(model: &ModelConfig, loss: &LossConfig) -> Result<Vec<String>, ModelError> {
    let mut notes = Vec::new();
    match model.kind {
        ModelKind::Convnext => {
            let (depths, dims) = convnext_arch(model)?;
            if model.block_norm == BlockNorm::Batch {
                notes.push(
                    "model.block_norm = \"batch\": timm's and candle-transformers' ConvNeXt blocks \
                     use LayerNorm; no model there computes this one (candle-transformers would \
                     even load the BatchNorm weight and bias as a LayerNorm's without an error \
                     and ignore the running statistics)"
                        .to_string(),
                );
            }
            if depths.len() != 4 {
                notes.push(format!(
                    "a {}-stage ConvNeXt (depths {depths:?}): timm's and candle-transformers' \
                     ConvNeXt have four stages",
                    depths.len()
                ));
            } else if convnext_preset_of(&depths, &dims).is_none() {
                notes.push(format!(
                    "depths {depths:?} / dims {dims:?} are no timm preset: timm builds it as \
                     ConvNeXt(depths=..., dims=...) (conv_mlp=False, the layout written); \
                     candle-transformers builds only its presets"
                ));
            }
        }
        ModelKind::Resnet => {
            let p = model.preset.as_deref().unwrap_or("18");
            let bottleneck = resnet::preset(p).map(|(b, _)| b).unwrap_or(false);
            let depths = model
                .depths
                .clone()
                .or_else(|| resnet::preset(p).map(|(_, d)| d))
                .unwrap_or_default();
            if model.small_stem {
                notes.push(
                    "model.small_stem = true: conv1 is a 3x3/1 convolution with no max-pool; \
                     torchvision's and candle-transformers' ResNets have the 7x7/2 stem and \
                     max-pool (in torchvision, replace conv1 with a 3x3/1 conv and maxpool with \
                     nn.Identity() before loading; candle-transformers cannot load it)"
                        .to_string(),
                );
            }
            if model
                .dims
                .as_deref()
                .is_some_and(|w| w != [64, 128, 256, 512])
            {
                notes.push(format!(
                    "model.dims = {:?}: torchvision's and candle-transformers' ResNets have \
                     stage widths [64, 128, 256, 512]; no model there has these",
                    model.dims.as_deref().unwrap_or_default()
                ));
            }
            let is_preset = ["18", "34", "50", "101", "152"]
                .into_iter()
                .any(|q| resnet::preset(q) == Some((bottleneck, depths.clone())));
            if !is_preset {
                notes.push(format!(
                    "depths {depths:?} are no torchvision preset: torchvision builds it as \
                     ResNet({}, {depths:?}); candle-transformers builds only ResNet-18/34/50/101/152",
                    if bottleneck { "Bottleneck" } else { "BasicBlock" }
                ));
            }
        }
        ModelKind::MobilenetV2 | ModelKind::MobilenetV3 => {}
    }
    if let Some(d) = model.embedding_dim {
        let fc = match model.kind {
            ModelKind::Convnext => "head.fc",
            ModelKind::Resnet => "fc",
            ModelKind::MobilenetV2 => "classifier.1",
            ModelKind::MobilenetV3 => "classifier.3",
        };
        notes.push(format!(
            "model.embedding_dim = {d}: the projection `embed.weight` / `embed.bias` between the \
             pooled features and the classifier has no timm / torchvision / candle-transformers \
             equivalent, and `{fc}` takes {d} inputs; load the backbone alone (strict=False, or \
             candle-transformers' *_no_final_layer) and apply `embed` and `{fc}` yourself"
        ));
    }
    if loss.kind != LossKind::CrossEntropy {
        notes.push(format!(
            "loss.kind = \"{}\": the classifier was not trained (the class weights are \
             `margin_head.weight`, a key these libraries do not have: drop it, or load with \
             strict=False); use the embedding, not the logits",
            match loss.kind {
                LossKind::Arcface => "arcface",
                _ => "cosface",
            }
        ));
    }
    Ok(notes)
}
