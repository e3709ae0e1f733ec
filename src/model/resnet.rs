//! ResNet 18/34/50 in torchvision's layout and parameter names (7x7/2 stem, 3x3/2 max-pool,
//! basic / bottleneck blocks, `layerN.i.*`, `fc`), with an optional 3x3/1 small-image stem.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::face::{FaceModel, ForwardCtx};
use super::layers::{dropout, BatchNorm2d, Conv2d, ConvSpec, EmbedHead, Linear, WInit};
use crate::kernels::{max_pool2d, BnAct, PoolParams};

const INIT: WInit = WInit::KaimingFanOut;

/// Block type and per-stage block counts of the torchvision presets.
pub fn preset(name: &str) -> Option<(bool, Vec<usize>)> {
    match name {
        "18" => Some((false, vec![2, 2, 2, 2])),
        "34" => Some((false, vec![3, 4, 6, 3])),
        "50" => Some((true, vec![3, 4, 6, 3])),
        "101" => Some((true, vec![3, 4, 23, 3])),
        "152" => Some((true, vec![3, 8, 36, 3])),
        _ => None,
    }
}

/// Everything that shapes a ResNet.
#[derive(Debug, Clone)]
pub struct ResNetConfig {
    pub bottleneck: bool,
    pub depths: Vec<usize>,
    /// Stage widths before expansion (torchvision: 64, 128, 256, 512).
    pub widths: Vec<usize>,
    pub small_stem: bool,
    pub dropout: f64,
    pub embedding_dim: Option<usize>,
    pub embedding_norm: bool,
    pub num_classes: usize,
}

/// 1x1 conv + BatchNorm projection shortcut (`downsample.0`, `downsample.1`).
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl Downsample {
    fn new(vb: VarBuilder, in_c: usize, out_c: usize, stride: usize) -> Result<Self> {
        let mut spec = ConvSpec::plain(in_c, out_c, 1, stride, INIT);
        spec.padding = 0;
        Ok(Self {
            conv: Conv2d::new(vb.pp("0"), spec)?,
            bn: BatchNorm2d::new(vb.pp("1"), out_c)?,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        self.bn.forward(&self.conv.forward(x, ctx)?, ctx)
    }
}

/// torchvision's BasicBlock: conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut, ReLU.
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<Downsample>,
}

impl BasicBlock {
    pub fn new(vb: VarBuilder, in_c: usize, out_c: usize, stride: usize) -> Result<Self> {
        Ok(Self {
            conv1: Conv2d::new(
                vb.pp("conv1"),
                ConvSpec::plain(in_c, out_c, 3, stride, INIT),
            )?,
            bn1: BatchNorm2d::new(vb.pp("bn1"), out_c)?,
            conv2: Conv2d::new(vb.pp("conv2"), ConvSpec::plain(out_c, out_c, 3, 1, INIT))?,
            bn2: BatchNorm2d::new(vb.pp("bn2"), out_c)?,
            downsample: if stride != 1 || in_c != out_c {
                Some(Downsample::new(vb.pp("downsample"), in_c, out_c, stride)?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let y = self
            .bn1
            .forward_act(&self.conv1.forward(x, ctx)?, BnAct::Relu, ctx)?;
        let y = self.conv2.forward(&y, ctx)?;
        let id = match &self.downsample {
            Some(d) => d.forward(x, ctx)?,
            None => x.clone(),
        };
        self.bn2.forward_add_relu(&y, &id, ctx)
    }
}

/// torchvision's Bottleneck (v1.5: stride on the 3x3 conv), expansion 4.
pub struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    conv3: Conv2d,
    bn3: BatchNorm2d,
    downsample: Option<Downsample>,
}

impl Bottleneck {
    pub fn new(vb: VarBuilder, in_c: usize, width: usize, stride: usize) -> Result<Self> {
        let out_c = width * 4;
        let mut c1 = ConvSpec::plain(in_c, width, 1, 1, INIT);
        c1.padding = 0;
        let mut c3 = ConvSpec::plain(width, out_c, 1, 1, INIT);
        c3.padding = 0;
        Ok(Self {
            conv1: Conv2d::new(vb.pp("conv1"), c1)?,
            bn1: BatchNorm2d::new(vb.pp("bn1"), width)?,
            conv2: Conv2d::new(
                vb.pp("conv2"),
                ConvSpec::plain(width, width, 3, stride, INIT),
            )?,
            bn2: BatchNorm2d::new(vb.pp("bn2"), width)?,
            conv3: Conv2d::new(vb.pp("conv3"), c3)?,
            bn3: BatchNorm2d::new(vb.pp("bn3"), out_c)?,
            downsample: if stride != 1 || in_c != out_c {
                Some(Downsample::new(vb.pp("downsample"), in_c, out_c, stride)?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let y = self
            .bn1
            .forward_act(&self.conv1.forward(x, ctx)?, BnAct::Relu, ctx)?;
        let y = self
            .bn2
            .forward_act(&self.conv2.forward(&y, ctx)?, BnAct::Relu, ctx)?;
        let y = self.conv3.forward(&y, ctx)?;
        let id = match &self.downsample {
            Some(d) => d.forward(x, ctx)?,
            None => x.clone(),
        };
        self.bn3.forward_add_relu(&y, &id, ctx)
    }
}

enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

/// The stem: conv1 + bn1 + ReLU (+ 3x3/2 max-pool unless small).
pub struct Stem {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    pool: bool,
}

impl Stem {
    /// `vb` is the model root (`conv1.*`, `bn1.*`).
    pub fn new(vb: &VarBuilder, out_c: usize, small: bool) -> Result<Self> {
        let spec = if small {
            ConvSpec::plain(3, out_c, 3, 1, INIT)
        } else {
            ConvSpec::plain(3, out_c, 7, 2, INIT)
        };
        Ok(Self {
            conv1: Conv2d::new(vb.pp("conv1"), spec)?,
            bn1: BatchNorm2d::new(vb.pp("bn1"), out_c)?,
            pool: !small,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let y = self
            .bn1
            .forward_act(&self.conv1.forward(x, ctx)?, BnAct::Relu, ctx)?;
        if self.pool {
            max_pool2d(&y, PoolParams::square(3, 2, 1))
        } else {
            Ok(y)
        }
    }
}

/// ResNet with torchvision parameter names.
pub struct ResNet {
    stem: Stem,
    layers: Vec<Vec<Block>>,
    head: EmbedHead,
    fc: Linear,
    dropout: f64,
    num_classes: usize,
}

impl ResNet {
    pub fn new(vb: VarBuilder, cfg: &ResNetConfig) -> Result<Self> {
        if cfg.depths.len() != cfg.widths.len() || cfg.depths.is_empty() {
            candle_core::bail!("resnet: depths and widths must have the same non-zero length")
        }
        let stem = Stem::new(&vb, 64, cfg.small_stem)?;
        let mut in_c = 64;
        let mut layers = Vec::new();
        for (li, (&depth, &width)) in cfg.depths.iter().zip(&cfg.widths).enumerate() {
            let lvb = vb.pp(format!("layer{}", li + 1));
            let mut blocks = Vec::new();
            for bi in 0..depth {
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                let b = if cfg.bottleneck {
                    let b = Bottleneck::new(lvb.pp(bi), in_c, width, stride)?;
                    in_c = width * 4;
                    Block::Bottleneck(b)
                } else {
                    let b = BasicBlock::new(lvb.pp(bi), in_c, width, stride)?;
                    in_c = width;
                    Block::Basic(b)
                };
                blocks.push(b);
            }
            layers.push(blocks);
        }
        let head = EmbedHead::new(&vb, in_c, cfg.embedding_dim, cfg.embedding_norm)?;
        let fc = Linear::new(
            vb.pp("fc"),
            head.dim,
            cfg.num_classes,
            true,
            WInit::TorchDefault,
        )?;
        Ok(Self {
            stem,
            layers,
            head,
            fc,
            dropout: cfg.dropout,
            num_classes: cfg.num_classes,
        })
    }
}

impl FaceModel for ResNet {
    fn embed(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let mut x = self.stem.forward(x, ctx)?;
        ctx.record("conv1+bn1", &x);
        for (li, blocks) in self.layers.iter().enumerate() {
            for (bi, b) in blocks.iter().enumerate() {
                x = match b {
                    Block::Basic(b) => b.forward(&x, ctx)?,
                    Block::Bottleneck(b) => b.forward(&x, ctx)?,
                };
                ctx.record(&format!("layer{}.{bi}", li + 1), &x);
            }
        }
        let pooled = super::layers::global_avg_pool(&x)?;
        ctx.record("avgpool", &pooled);
        self.head.forward(&pooled, ctx)
    }

    fn classifier_logits_from_embedding(&self, e: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let e = dropout(e, self.dropout, ctx)?;
        let y = self.fc.forward(&e, ctx)?;
        ctx.record("fc", &y);
        Ok(y)
    }

    fn embedding_dim(&self) -> usize {
        self.head.dim
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }
}
