//! MobileNetV3 Large / Small in torchvision's layout and parameter names: inverted residual
//! blocks with squeeze-excitation (`features.i.block.*`), hard-swish, `classifier.0/.3` head.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::face::{FaceModel, ForwardCtx};
use super::layers::{dropout, hardsigmoid, hardswish, Conv2d, ConvSpec, EmbedHead, Linear, WInit};
use super::mobilenet_v2::{make_divisible, ConvBn};

/// BatchNorm (eps, momentum) of torchvision's MobileNetV3.
const BN: (f64, f64) = (1e-3, 0.01);

/// One inverted-residual block: input, kernel, expanded, output channels, squeeze-excitation,
/// hard-swish (else ReLU), stride.
#[derive(Debug, Clone, Copy)]
pub struct BlockSpec {
    pub input: usize,
    pub kernel: usize,
    pub expanded: usize,
    pub out: usize,
    pub se: bool,
    pub hswish: bool,
    pub stride: usize,
}

/// torchvision's block tables.
pub fn blocks(large: bool) -> Vec<BlockSpec> {
    let b = |input, kernel, expanded, out, se, hswish, stride| BlockSpec {
        input,
        kernel,
        expanded,
        out,
        se,
        hswish,
        stride,
    };
    if large {
        vec![
            b(16, 3, 16, 16, false, false, 1),
            b(16, 3, 64, 24, false, false, 2),
            b(24, 3, 72, 24, false, false, 1),
            b(24, 5, 72, 40, true, false, 2),
            b(40, 5, 120, 40, true, false, 1),
            b(40, 5, 120, 40, true, false, 1),
            b(40, 3, 240, 80, false, true, 2),
            b(80, 3, 200, 80, false, true, 1),
            b(80, 3, 184, 80, false, true, 1),
            b(80, 3, 184, 80, false, true, 1),
            b(80, 3, 480, 112, true, true, 1),
            b(112, 3, 672, 112, true, true, 1),
            b(112, 5, 672, 160, true, true, 2),
            b(160, 5, 960, 160, true, true, 1),
            b(160, 5, 960, 160, true, true, 1),
        ]
    } else {
        vec![
            b(16, 3, 16, 16, true, false, 2),
            b(16, 3, 72, 24, false, false, 2),
            b(24, 3, 88, 24, false, false, 1),
            b(24, 5, 96, 40, true, true, 2),
            b(40, 5, 240, 40, true, true, 1),
            b(40, 5, 240, 40, true, true, 1),
            b(40, 5, 120, 48, true, true, 1),
            b(48, 5, 144, 48, true, true, 1),
            b(48, 5, 288, 96, true, true, 2),
            b(96, 5, 576, 96, true, true, 1),
            b(96, 5, 576, 96, true, true, 1),
        ]
    }
}

/// Everything that shapes a MobileNetV3.
#[derive(Debug, Clone)]
pub struct MobileNetV3Config {
    pub blocks: Vec<BlockSpec>,
    pub last_channel: usize,
    pub width_mult: f64,
    pub dropout: f64,
    pub embedding_dim: Option<usize>,
    pub embedding_norm: bool,
    pub num_classes: usize,
}

fn act(x: &Tensor, hswish: bool) -> Result<Tensor> {
    if hswish {
        hardswish(x)
    } else {
        x.relu()
    }
}

struct SqueezeExcitation {
    fc1: Conv2d,
    fc2: Conv2d,
}

impl SqueezeExcitation {
    fn new(vb: VarBuilder, c: usize, squeeze: usize) -> Result<Self> {
        let spec = |i, o| ConvSpec {
            in_c: i,
            out_c: o,
            k: 1,
            stride: 1,
            padding: 0,
            groups: 1,
            bias: true,
            init: WInit::KaimingFanOut,
        };
        Ok(Self {
            fc1: Conv2d::new(vb.pp("fc1"), spec(c, squeeze))?,
            fc2: Conv2d::new(vb.pp("fc2"), spec(squeeze, c))?,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let s = super::layers::in_f32(x, |x| x.mean_keepdim((2, 3)))?;
        let s = self.fc1.forward(&s, ctx)?.relu()?;
        let s = hardsigmoid(&self.fc2.forward(&s, ctx)?)?;
        // the gate's gradient, a sum over the image, in f32
        crate::kernels::mul_param(x, &s)
    }
}

struct Block {
    expand: Option<ConvBn>,
    dw: ConvBn,
    se: Option<SqueezeExcitation>,
    project: ConvBn,
    hswish: bool,
    residual: bool,
}

impl Block {
    fn new(vb: VarBuilder, s: BlockSpec, wm: f64) -> Result<Self> {
        let adj = |c: usize| make_divisible(c as f64 * wm, 8);
        let (inp, exp, out) = (adj(s.input), adj(s.expanded), adj(s.out));
        let vb = vb.pp("block");
        let mut i = 0;
        let expand = if exp != inp {
            i += 1;
            Some(ConvBn::new(vb.pp(0), inp, exp, 1, 1, 1, BN)?)
        } else {
            None
        };
        let dw = ConvBn::new(vb.pp(i), exp, exp, s.kernel, s.stride, exp, BN)?;
        i += 1;
        let se = if s.se {
            let sq = make_divisible((exp / 4) as f64, 8);
            let se = SqueezeExcitation::new(vb.pp(i), exp, sq)?;
            i += 1;
            Some(se)
        } else {
            None
        };
        let project = ConvBn::new(vb.pp(i), exp, out, 1, 1, 1, BN)?;
        Ok(Self {
            expand,
            dw,
            se,
            project,
            hswish: s.hswish,
            residual: s.stride == 1 && inp == out,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let y = match &self.expand {
            Some(e) => act(&e.forward(x, ctx)?, self.hswish)?,
            None => x.clone(),
        };
        let y = act(&self.dw.forward(&y, ctx)?, self.hswish)?;
        let y = match &self.se {
            Some(se) => se.forward(&y, ctx)?,
            None => y,
        };
        let y = self.project.forward(&y, ctx)?;
        if self.residual {
            y + x
        } else {
            Ok(y)
        }
    }
}

/// MobileNetV3 with torchvision parameter names.
pub struct MobileNetV3 {
    stem: ConvBn,
    blocks: Vec<Block>,
    last: ConvBn,
    hidden: Linear,
    head: EmbedHead,
    fc: Linear,
    dropout: f64,
    num_classes: usize,
}

impl MobileNetV3 {
    pub fn new(vb: VarBuilder, cfg: &MobileNetV3Config) -> Result<Self> {
        let wm = cfg.width_mult;
        let adj = |c: usize| make_divisible(c as f64 * wm, 8);
        let f = vb.pp("features");
        let first = cfg.blocks.first().map(|b| b.input).unwrap_or(16);
        let stem = ConvBn::new(f.pp(0), 3, adj(first), 3, 2, 1, BN)?;
        let mut blocks = Vec::new();
        for (i, s) in cfg.blocks.iter().enumerate() {
            blocks.push(Block::new(f.pp(i + 1), *s, wm)?);
        }
        let last_in = adj(cfg.blocks.last().map(|b| b.out).unwrap_or(first));
        let last_out = 6 * last_in;
        let last = ConvBn::new(f.pp(cfg.blocks.len() + 1), last_in, last_out, 1, 1, 1, BN)?;
        let last_channel = adj(cfg.last_channel);
        let hidden = Linear::new(
            vb.pp("classifier.0"),
            last_out,
            last_channel,
            true,
            WInit::Normal(0.01),
        )?;
        let head = EmbedHead::new(&vb, last_channel, cfg.embedding_dim, cfg.embedding_norm)?;
        let fc = Linear::new(
            vb.pp("classifier.3"),
            head.dim,
            cfg.num_classes,
            true,
            WInit::Normal(0.01),
        )?;
        Ok(Self {
            stem,
            blocks,
            last,
            hidden,
            head,
            fc,
            dropout: cfg.dropout,
            num_classes: cfg.num_classes,
        })
    }
}

impl FaceModel for MobileNetV3 {
    /// The 1280 (Small: 1024) features after `classifier.0` + hard-swish (the pre-logits),
    /// optionally projected to `embedding_dim`.
    fn embed(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let mut x = hardswish(&self.stem.forward(x, ctx)?)?;
        ctx.record("features.0", &x);
        for (i, b) in self.blocks.iter().enumerate() {
            x = b.forward(&x, ctx)?;
            ctx.record(&format!("features.{}", i + 1), &x);
        }
        let x = hardswish(&self.last.forward(&x, ctx)?)?;
        ctx.record(&format!("features.{}", self.blocks.len() + 1), &x);
        let pooled = super::layers::global_avg_pool(&x)?;
        let h = hardswish(&self.hidden.forward(&pooled, ctx)?)?;
        ctx.record("classifier.0", &h);
        self.head.forward(&h, ctx)
    }

    fn classifier_logits_from_embedding(&self, e: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let e = dropout(e, self.dropout, ctx)?;
        let y = self.fc.forward(&e, ctx)?;
        ctx.record("classifier.3", &y);
        Ok(y)
    }

    fn embedding_dim(&self) -> usize {
        self.head.dim
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }
}
