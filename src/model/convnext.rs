//! ConvNeXt (timm layout and parameter names): 4x4/4 stem + LayerNorm2d, stages of blocks
//! (depthwise 7x7, norm, 1x1 expand x4, exact GELU, 1x1 project, layer scale, drop path),
//! LayerNorm2d + 2x2/2 conv downsampling, and a pooled, normed head.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::face::{FaceModel, ForwardCtx};
use super::layers::{
    drop_path, drop_path_mask, dropout, BatchNorm2d, Conv2d, ConvSpec, EmbedHead, LayerNorm,
    Linear, WInit,
};
use crate::kernels::channels_last::{
    add_nhwc_to_nchw, bias_gelu, nchw_bias_to_nhwc, scale_add_to_nchw,
};
use crate::kernels::depthwise_nhwc::depthwise_nhwc_from_nchw;
use crate::kernels::gelu_erf;
use crate::recipe::BlockNorm;

/// Depths and dims of timm's named ConvNeXt presets.
pub fn preset(name: &str) -> Option<(Vec<usize>, Vec<usize>)> {
    let (d, w): (&[usize], &[usize]) = match name {
        "atto" => (&[2, 2, 6, 2], &[40, 80, 160, 320]),
        "femto" => (&[2, 2, 6, 2], &[48, 96, 192, 384]),
        "pico" => (&[2, 2, 6, 2], &[64, 128, 256, 512]),
        "nano" => (&[2, 2, 8, 2], &[80, 160, 320, 640]),
        "tiny" => (&[3, 3, 9, 3], &[96, 192, 384, 768]),
        "small" => (&[3, 3, 27, 3], &[96, 192, 384, 768]),
        "base" => (&[3, 3, 27, 3], &[128, 256, 512, 1024]),
        _ => return None,
    };
    Some((d.to_vec(), w.to_vec()))
}

/// The smallest input side a ConvNeXt of `stages` stages runs on: its 4x4/4 stem and the
/// 2x2/2 downsampling of every later stage floor the side, so anything smaller leaves a 0x0
/// feature map.
pub fn min_input_side(stages: usize) -> u32 {
    4u32 << stages.saturating_sub(1).min(24)
}

/// Everything that shapes a ConvNeXt.
#[derive(Debug, Clone)]
pub struct ConvNextConfig {
    pub depths: Vec<usize>,
    pub dims: Vec<usize>,
    pub block_norm: BlockNorm,
    /// Initial layer-scale gamma, `None` = no layer scale.
    pub layer_scale: Option<f64>,
    pub drop_path: f64,
    pub dropout: f64,
    pub embedding_dim: Option<usize>,
    pub embedding_norm: bool,
    pub num_classes: usize,
}

const LN_EPS: f64 = 1e-6;
const W_INIT: WInit = WInit::Normal(0.02);

enum BlockNormLayer {
    Layer(LayerNorm),
    Batch(BatchNorm2d),
}

struct Block {
    conv_dw: Conv2d,
    norm: BlockNormLayer,
    fc1: Linear,
    fc2: Linear,
    gamma: Option<Tensor>,
    drop_path: f64,
    name: String,
}

impl Block {
    fn new(
        vb: VarBuilder,
        dim: usize,
        cfg: &ConvNextConfig,
        dp: f64,
        name: String,
    ) -> Result<Self> {
        let conv_dw = Conv2d::new(
            vb.pp("conv_dw"),
            ConvSpec {
                in_c: dim,
                out_c: dim,
                k: 7,
                stride: 1,
                padding: 3,
                groups: dim,
                bias: true,
                init: W_INIT,
            },
        )?;
        let norm = match cfg.block_norm {
            BlockNorm::Layer => BlockNormLayer::Layer(LayerNorm::new(vb.pp("norm"), dim, LN_EPS)?),
            BlockNorm::Batch => BlockNormLayer::Batch(BatchNorm2d::new(vb.pp("norm"), dim)?),
        };
        let fc1 = Linear::new(vb.pp("mlp").pp("fc1"), dim, 4 * dim, true, W_INIT)?;
        let fc2 = Linear::new(vb.pp("mlp").pp("fc2"), 4 * dim, dim, true, W_INIT)?;
        let gamma = match cfg.layer_scale {
            Some(v) => Some(vb.get_with_hints(dim, "gamma", candle_nn::Init::Const(v))?),
            None => None,
        };
        Ok(Self {
            conv_dw,
            norm,
            fc1,
            fc2,
            gamma,
            drop_path: dp,
            name,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        // The biases, GELU and layer scale are fused with their neighbours
        // (kernels::channels_last): one pass each, per-channel gradients reduced in the same
        // pass, and no strided permute in the backward.
        // channels-last for the norm and the pointwise MLP, as timm does
        let y = match (&self.norm, &self.conv_dw.bias) {
            (BlockNormLayer::Layer(ln), Some(b)) if self.conv_dw.stride == 1 => {
                // the depthwise conv itself channels-last (vectorised over the channels,
                // whatever the plane size), its bias fused
                let w = self.conv_dw.weight.to_dtype(x.dtype())?;
                let y = depthwise_nhwc_from_nchw(x, &w, b)?;
                let (_, _, kh, kw) = w.dims4()?;
                ctx.count((y.elem_count() * kh * kw) as u64, &y);
                ln.forward_last(&y, ctx)?
            }
            (BlockNormLayer::Layer(ln), _) => {
                let y = self.conv_dw.forward_no_bias(x, ctx)?;
                let y = match &self.conv_dw.bias {
                    Some(b) => nchw_bias_to_nhwc(&y, b)?,
                    None => y.permute((0, 2, 3, 1))?.contiguous()?,
                };
                ln.forward_last(&y, ctx)?
            }
            (BlockNormLayer::Batch(bn), _) => {
                let y = self.conv_dw.forward_no_bias(x, ctx)?;
                let c = y.dim(1)?;
                let y = match &self.conv_dw.bias {
                    Some(b) => crate::kernels::add_param(&y, &b.reshape((1, c, 1, 1))?)?,
                    None => y,
                };
                bn.forward(&y, ctx)?.permute((0, 2, 3, 1))?.contiguous()?
            }
        };
        let y = self.fc1.forward_no_bias(&y, ctx)?;
        let y = match &self.fc1.bias {
            Some(b) => bias_gelu(&y, b)?,
            None => gelu_erf(&y)?,
        };
        if let (Some(b), Some(g)) = (&self.fc2.bias, &self.gamma) {
            // the whole tail in one op: the scaled and dropped tensors are never kept
            let z = self.fc2.forward_no_bias(&y, ctx)?;
            let mask = drop_path_mask(&z, self.drop_path, ctx)?;
            let y = scale_add_to_nchw(x, &z, b, g, mask.as_ref())?;
            ctx.record(&self.name, &y);
            return Ok(y);
        }
        let y = match (&self.fc2.bias, &self.gamma) {
            (_, Some(g)) => {
                let y = self.fc2.forward(&y, ctx)?;
                crate::kernels::mul_param(&y, g)?
            }
            (_, None) => self.fc2.forward(&y, ctx)?,
        };
        let y = drop_path(&y, self.drop_path, ctx)?;
        let y = add_nhwc_to_nchw(x, &y)?;
        ctx.record(&self.name, &y);
        Ok(y)
    }
}

struct Stage {
    downsample: Option<(LayerNorm, Conv2d)>,
    blocks: Vec<Block>,
}

/// ConvNeXt with timm parameter names (`stem.0`, `stages.i.blocks.j.*`, `head.norm`, `head.fc`).
pub struct ConvNext {
    stem_conv: Conv2d,
    stem_norm: LayerNorm,
    stages: Vec<Stage>,
    head_norm: LayerNorm,
    head: EmbedHead,
    fc: Linear,
    dropout: f64,
    num_classes: usize,
}

impl ConvNext {
    pub fn new(vb: VarBuilder, cfg: &ConvNextConfig) -> Result<Self> {
        if cfg.depths.len() != cfg.dims.len() || cfg.dims.is_empty() {
            candle_core::bail!(
                "convnext: depths ({}) and dims ({}) must have the same non-zero length",
                cfg.depths.len(),
                cfg.dims.len()
            )
        }
        let stem_conv = Conv2d::new(
            vb.pp("stem.0"),
            ConvSpec {
                in_c: 3,
                out_c: cfg.dims[0],
                k: 4,
                stride: 4,
                padding: 0,
                groups: 1,
                bias: true,
                init: W_INIT,
            },
        )?;
        let stem_norm = LayerNorm::new(vb.pp("stem.1"), cfg.dims[0], LN_EPS)?;
        let total: usize = cfg.depths.iter().sum();
        let rate = |i: usize| {
            if total > 1 {
                cfg.drop_path * i as f64 / (total - 1) as f64
            } else {
                0.0
            }
        };
        let mut stages = Vec::new();
        let mut idx = 0;
        for (si, (&depth, &dim)) in cfg.depths.iter().zip(&cfg.dims).enumerate() {
            let svb = vb.pp(format!("stages.{si}"));
            let downsample = if si > 0 {
                let prev = cfg.dims[si - 1];
                let dvb = svb.pp("downsample");
                Some((
                    LayerNorm::new(dvb.pp("0"), prev, LN_EPS)?,
                    Conv2d::new(
                        dvb.pp("1"),
                        ConvSpec {
                            in_c: prev,
                            out_c: dim,
                            k: 2,
                            stride: 2,
                            padding: 0,
                            groups: 1,
                            bias: true,
                            init: W_INIT,
                        },
                    )?,
                ))
            } else {
                None
            };
            let mut blocks = Vec::new();
            for bi in 0..depth {
                blocks.push(Block::new(
                    svb.pp(format!("blocks.{bi}")),
                    dim,
                    cfg,
                    rate(idx),
                    format!("stages.{si}.blocks.{bi}"),
                )?);
                idx += 1;
            }
            stages.push(Stage { downsample, blocks });
        }
        let last = *cfg.dims.last().unwrap_or(&0);
        let head_norm = LayerNorm::new(vb.pp("head.norm"), last, LN_EPS)?;
        let head = EmbedHead::new(&vb, last, cfg.embedding_dim, cfg.embedding_norm)?;
        let fc = Linear::new(vb.pp("head.fc"), head.dim, cfg.num_classes, true, W_INIT)?;
        Ok(Self {
            stem_conv,
            stem_norm,
            stages,
            head_norm,
            head,
            fc,
            dropout: cfg.dropout,
            num_classes: cfg.num_classes,
        })
    }

    /// Pooled, head-normed features (timm's `forward_head(pre_logits=True)`).
    pub fn pre_logits(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let min = min_input_side(self.stages.len()) as usize;
        if h < min || w < min {
            candle_core::bail!(
                "convnext: a {h}x{w} input is too small for this {}-stage ConvNeXt (it needs at least {min}x{min}: a 4x4/4 stem and {} 2x2/2 downsamplings)",
                self.stages.len(),
                self.stages.len().saturating_sub(1)
            )
        }
        let x = self.stem_conv.forward(x, ctx)?;
        let mut x = self.stem_norm.forward_channels(&x, ctx)?;
        ctx.record("stem", &x);
        for (si, st) in self.stages.iter().enumerate() {
            if let Some((ln, conv)) = &st.downsample {
                x = conv.forward(&ln.forward_channels(&x, ctx)?, ctx)?;
                ctx.record(&format!("stages.{si}.downsample"), &x);
            }
            for b in &st.blocks {
                x = b.forward(&x, ctx)?;
            }
        }
        let pooled = super::layers::global_avg_pool(&x)?;
        let y = self.head_norm.forward_last(&pooled, ctx)?;
        ctx.record("head.norm", &y);
        Ok(y)
    }
}

impl FaceModel for ConvNext {
    fn embed(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let p = self.pre_logits(x, ctx)?;
        self.head.forward(&p, ctx)
    }

    fn classifier_logits_from_embedding(&self, e: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let e = dropout(e, self.dropout, ctx)?;
        let y = self.fc.forward(&e, ctx)?;
        ctx.record("head.fc", &y);
        Ok(y)
    }

    fn embedding_dim(&self) -> usize {
        self.head.dim
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }
}
