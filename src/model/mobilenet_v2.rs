//! MobileNetV2 in torchvision's layout and parameter names: inverted residual blocks
//! (`features.i.conv.*`), ReLU6, width multiplier, `classifier.1` head.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::kernels::BnAct;

use super::face::{FaceModel, ForwardCtx};
use super::layers::{dropout, BatchNorm2d, Conv2d, ConvSpec, EmbedHead, Linear, WInit};

/// torchvision's `_make_divisible`: round `v` to a multiple of `divisor`, not below 90% of `v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// Everything that shapes a MobileNetV2.
#[derive(Debug, Clone)]
pub struct MobileNetV2Config {
    pub width_mult: f64,
    pub dropout: f64,
    pub embedding_dim: Option<usize>,
    pub embedding_norm: bool,
    pub num_classes: usize,
}

/// Conv + BatchNorm (+ optional activation), torchvision's `Conv2dNormActivation` (`.0`, `.1`).
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    /// `groups` == channels makes it depthwise; padding is `(k - 1) / 2`; `bn` = (eps, momentum).
    pub fn new(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        groups: usize,
        bn: (f64, f64),
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(
                vb.pp("0"),
                ConvSpec {
                    in_c,
                    out_c,
                    k,
                    stride,
                    padding: (k - 1) / 2,
                    groups,
                    bias: false,
                    init: WInit::KaimingFanOut,
                },
            )?,
            bn: BatchNorm2d::with_eps(vb.pp("1"), out_c, bn.0, bn.1)?,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        self.bn.forward(&self.conv.forward(x, ctx)?, ctx)
    }

    /// Conv + BatchNorm + ReLU6 (the BatchNorm and ReLU6 fused).
    pub fn forward_relu6(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        self.bn
            .forward_act(&self.conv.forward(x, ctx)?, BnAct::Relu6, ctx)
    }
}

struct InvertedResidual {
    expand: Option<ConvBn>,
    dw: ConvBn,
    project: Conv2d,
    project_bn: BatchNorm2d,
    residual: bool,
}

impl InvertedResidual {
    fn new(vb: VarBuilder, inp: usize, oup: usize, stride: usize, t: usize) -> Result<Self> {
        let hidden = inp * t;
        let vb = vb.pp("conv");
        let mut i = 0;
        let expand = if t != 1 {
            i += 1;
            Some(ConvBn::new(vb.pp("0"), inp, hidden, 1, 1, 1, BN)?)
        } else {
            None
        };
        let dw = ConvBn::new(vb.pp(i), hidden, hidden, 3, stride, hidden, BN)?;
        let mut spec = ConvSpec::plain(hidden, oup, 1, 1, WInit::KaimingFanOut);
        spec.padding = 0;
        let project = Conv2d::new(vb.pp(i + 1), spec)?;
        let project_bn = BatchNorm2d::new(vb.pp(i + 2), oup)?;
        Ok(Self {
            expand,
            dw,
            project,
            project_bn,
            residual: stride == 1 && inp == oup,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let y = match &self.expand {
            Some(e) => e.forward_relu6(x, ctx)?,
            None => x.clone(),
        };
        let y = self.dw.forward_relu6(&y, ctx)?;
        let y = self
            .project_bn
            .forward(&self.project.forward(&y, ctx)?, ctx)?;
        if self.residual {
            y + x
        } else {
            Ok(y)
        }
    }
}

/// MobileNetV2 with torchvision parameter names.
pub struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    last: ConvBn,
    head: EmbedHead,
    fc: Linear,
    dropout: f64,
    num_classes: usize,
}

/// BatchNorm (eps, momentum): PyTorch defaults.
const BN: (f64, f64) = (1e-5, 0.1);

const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

impl MobileNetV2 {
    pub fn new(vb: VarBuilder, cfg: &MobileNetV2Config) -> Result<Self> {
        let wm = cfg.width_mult;
        let f = vb.pp("features");
        let mut inp = make_divisible(32.0 * wm, 8);
        let last_c = make_divisible(1280.0 * wm.max(1.0), 8);
        let stem = ConvBn::new(f.pp(0), 3, inp, 3, 2, 1, BN)?;
        let mut blocks = Vec::new();
        let mut idx = 1;
        for (t, c, n, s) in SETTINGS {
            let oup = make_divisible(c as f64 * wm, 8);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                blocks.push(InvertedResidual::new(f.pp(idx), inp, oup, stride, t)?);
                inp = oup;
                idx += 1;
            }
        }
        let last = ConvBn::new(f.pp(idx), inp, last_c, 1, 1, 1, BN)?;
        let head = EmbedHead::new(&vb, last_c, cfg.embedding_dim, cfg.embedding_norm)?;
        let fc = Linear::new(
            vb.pp("classifier.1"),
            head.dim,
            cfg.num_classes,
            true,
            WInit::Normal(0.01),
        )?;
        Ok(Self {
            stem,
            blocks,
            last,
            head,
            fc,
            dropout: cfg.dropout,
            num_classes: cfg.num_classes,
        })
    }
}

impl FaceModel for MobileNetV2 {
    fn embed(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let mut x = self.stem.forward_relu6(x, ctx)?;
        ctx.record("features.0", &x);
        for (i, b) in self.blocks.iter().enumerate() {
            x = b.forward(&x, ctx)?;
            ctx.record(&format!("features.{}", i + 1), &x);
        }
        let x = self.last.forward_relu6(&x, ctx)?;
        ctx.record(&format!("features.{}", self.blocks.len() + 1), &x);
        let pooled = super::layers::global_avg_pool(&x)?;
        ctx.record("avgpool", &pooled);
        self.head.forward(&pooled, ctx)
    }

    fn classifier_logits_from_embedding(&self, e: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let e = dropout(e, self.dropout, ctx)?;
        let y = self.fc.forward(&e, ctx)?;
        ctx.record("classifier.1", &y);
        Ok(y)
    }

    fn embedding_dim(&self) -> usize {
        self.head.dim
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }
}
