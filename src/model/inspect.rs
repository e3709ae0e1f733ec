//! `runner inspect`: a model's traced layers with output shapes and parameter counts, total and
//! trainable parameters, multiply-accumulates per image and an activation-memory estimate.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;

use super::face::{ForwardCtx, Trace};
use super::weights::{is_buffer, ShapeRecorder};
use super::{build, ModelError};
use crate::recipe::ModelConfig;

/// One traced layer (a stem, block, downsampling layer or head piece).
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub name: String,
    /// Output shape for one image.
    pub out_shape: Vec<usize>,
    /// Parameters under this name (buffers excluded).
    pub params: usize,
}

/// What `inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub input_shape: Vec<usize>,
    pub layers: Vec<LayerInfo>,
    pub params_total: usize,
    pub params_trainable: usize,
    /// BatchNorm running statistics (saved, not trained).
    pub buffers: usize,
    /// Multiply-accumulates of convolutions and linear layers for one image.
    pub macs: u64,
    /// Estimate of the float32 activations a training step keeps for backward (outputs of
    /// every conv, linear and norm layer) for `batch` images.
    pub memory_per_batch_bytes: u64,
    pub batch: usize,
}

/// Builds the model without allocating its weights for the counts, and runs one zero-weight
/// image through it (eval mode) to trace shapes and MACs.
pub fn inspect(
    cfg: &ModelConfig,
    num_classes: usize,
    input_hw: (usize, usize),
    batch: usize,
) -> Result<InspectReport, ModelError> {
    let rec = ShapeRecorder::default();
    build(cfg, num_classes, rec.var_builder())?;
    let entries = rec.entries();
    let params_total = rec.param_count();
    let buffers: usize = entries
        .iter()
        .filter(|(n, _)| is_buffer(n) && !n.ends_with("num_batches_tracked"))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();

    let dev = Device::Cpu;
    let model = build(cfg, num_classes, VarBuilder::zeros(DType::F32, &dev))?;
    let x = Tensor::zeros((1, 3, input_hw.0, input_hw.1), DType::F32, &dev)?;
    let mut ctx = ForwardCtx::eval();
    ctx.trace = Some(Trace::default());
    model.forward(&x, &mut ctx)?;
    let trace = ctx.trace.unwrap_or_default();

    let layers = trace
        .layers
        .iter()
        .map(|l| {
            let prefixes: Vec<String> = l.name.split('+').map(|p| format!("{p}.")).collect();
            let params = entries
                .iter()
                .filter(|(n, _)| !is_buffer(n) && prefixes.iter().any(|p| n.starts_with(p)))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            LayerInfo {
                name: l.name.clone(),
                out_shape: l.shape.iter().skip(1).copied().collect(),
                params,
            }
        })
        .collect();
    Ok(InspectReport {
        input_shape: vec![3, input_hw.0, input_hw.1],
        layers,
        params_total,
        params_trainable: params_total,
        buffers,
        macs: trace.macs,
        memory_per_batch_bytes: (trace.activation_elems + (3 * input_hw.0 * input_hw.1) as u64)
            * 4
            * batch as u64,
        batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{BlockNorm, LayerScale, ModelKind};

    #[test]
    fn resnet18_inspect_matches_known_numbers() {
        let cfg = ModelConfig {
            kind: ModelKind::Resnet,
            preset: Some("18".into()),
            depths: None,
            dims: None,
            block_norm: BlockNorm::Layer,
            layer_scale: LayerScale::Init(1e-6),
            drop_path: 0.0,
            dropout: 0.0,
            small_stem: false,
            width_mult: 1.0,
            embedding_dim: None,
            embedding_norm: false,
            num_classes: None,
            init_from: None,
        };
        let r = inspect(&cfg, 1000, (224, 224), 8).unwrap();
        assert_eq!(r.params_total, 11_689_512); // torchvision resnet18
                                                // torchvision resnet18 at 224 px: 1.814 GMACs (conv + fc)
        assert!(
            (r.macs as f64 / 1.8142e9 - 1.0).abs() < 0.01,
            "macs {}",
            r.macs
        );
        let names: Vec<&str> = r.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"conv1+bn1"));
        assert_eq!(r.layers[0].out_shape, vec![64, 56, 56]);
        assert_eq!(
            r.layers.last().map(|l| l.out_shape.clone()),
            Some(vec![1000])
        );
        let per_layer: usize = r.layers.iter().map(|l| l.params).sum();
        assert_eq!(per_layer, r.params_total);
        assert!(r.memory_per_batch_bytes > 0);
    }
}
