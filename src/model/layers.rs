//! Shared layers written from differentiable Candle ops: conv (depthwise through the project
//! kernel), linear, BatchNorm2d with train-mode statistics, LayerNorm (last dim / channels),
//! drop path, dropout, activations, and the embedding + classifier head.
//!
//! Mixed precision: parameters are f32 Vars; conv and linear layers cast them to the input's
//! dtype (a no-op in f32; in bf16 / f16 the cast's backward brings the gradient back to f32),
//! and the norms compute in f32 and return the input's dtype, as PyTorch's autocast does (on
//! CUDA their kernels read the bf16 / f16 input and keep statistics and parameters in f32; on
//! the CPU the input is cast to f32 and back).

use candle_core::{DType, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use rand::Rng;

use super::face::ForwardCtx;
use crate::kernels::batchnorm::{batch_norm_add_relu, batch_norm_eval_act};
use crate::kernels::channels_last::{bias_nchw, to_nchw, to_nhwc};
use crate::kernels::gpu::runs_on_gpu;
use crate::kernels::layernorm::layer_norm_channels;
use crate::kernels::{
    batch_norm_train_act, conv1x1, conv2d_im2col, depthwise_conv2d, layer_norm_last, linear, BnAct,
    DwParams,
};

pub type Result<T> = candle_core::Result<T>;

/// Weight initialisation of a conv / linear layer.
#[derive(Debug, Clone, Copy)]
pub enum WInit {
    /// Normal with this standard deviation (timm uses 0.02).
    Normal(f64),
    /// Kaiming normal, fan-out, ReLU gain (torchvision ResNet / MobileNet convs).
    KaimingFanOut,
    /// PyTorch's default: uniform(+-1/sqrt(fan_in)) for weight and bias.
    TorchDefault,
}

fn weight_init(init: WInit, fan_in: usize, fan_out: usize) -> (Init, Init) {
    match init {
        WInit::Normal(s) => (Init::Randn { mean: 0., stdev: s }, Init::Const(0.)),
        WInit::KaimingFanOut => (
            Init::Randn {
                mean: 0.,
                stdev: (2.0 / fan_out.max(1) as f64).sqrt(),
            },
            Init::Const(0.),
        ),
        WInit::TorchDefault => {
            let b = 1.0 / (fan_in.max(1) as f64).sqrt();
            (
                Init::Uniform { lo: -b, up: b },
                Init::Uniform { lo: -b, up: b },
            )
        }
    }
}

/// 2-D convolution, NCHW. Depthwise (groups == in == out) runs the project kernel.
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

/// Arguments of [`Conv2d::new`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub in_c: usize,
    pub out_c: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub bias: bool,
    pub init: WInit,
}

impl ConvSpec {
    /// A plain (groups 1) convolution without bias, "same"-style padding `k / 2`.
    pub fn plain(in_c: usize, out_c: usize, k: usize, stride: usize, init: WInit) -> Self {
        Self {
            in_c,
            out_c,
            k,
            stride,
            padding: k / 2,
            groups: 1,
            bias: false,
            init,
        }
    }
}

impl Conv2d {
    pub fn new(vb: VarBuilder, s: ConvSpec) -> Result<Self> {
        let cin_g = s.in_c / s.groups;
        let (wi, bi) = weight_init(s.init, cin_g * s.k * s.k, s.out_c / s.groups * s.k * s.k);
        let weight = vb.get_with_hints((s.out_c, cin_g, s.k, s.k), "weight", wi)?;
        let bias = if s.bias {
            Some(vb.get_with_hints(s.out_c, "bias", bi)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride: s.stride,
            padding: s.padding,
            groups: s.groups,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let y = self.forward_no_bias(x, ctx)?;
        match &self.bias {
            Some(b) => bias_nchw(&y, b),
            None => Ok(y),
        }
    }

    /// The convolution without its bias (for callers that fuse the bias into the next op).
    pub fn forward_no_bias(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let (out_c, cin_g, kh, kw) = self.weight.dims4()?;
        let weight = &self.weight.to_dtype(x.dtype())?;
        let depthwise = self.groups > 1 && cin_g == 1 && out_c == self.groups;
        let pointwise = self.groups == 1 && kh == 1 && kw == 1 && self.stride == 1;
        if pointwise && self.padding == 0 {
            if let Some(y) = conv1x1(x, weight, None)? {
                ctx.count((y.elem_count() * cin_g) as u64, &y);
                return Ok(y);
            }
        }
        let y = if depthwise {
            depthwise_conv2d(
                x,
                weight,
                DwParams {
                    stride: (self.stride, self.stride),
                    padding: (self.padding, self.padding),
                },
            )?
        } else if self.groups == 1
            && self.padding == 0
            && kh == kw
            && kh == self.stride
            && !crate::kernels::reference_mode()
        {
            patchify(x, weight)?
        } else if self.groups == 1 {
            conv2d_im2col(x, weight, self.stride, self.padding)?
        } else {
            x.conv2d(weight, self.padding, self.stride, 1, self.groups)?
        };
        ctx.count((y.elem_count() * cin_g * kh * kw) as u64, &y);
        Ok(y)
    }
}

/// A convolution whose kernel equals its stride, without padding (1x1 pointwise, ConvNeXt's
/// 4x4/4 stem and 2x2/2 downsampling) as one matrix product over non-overlapping patches:
/// exact, and its backward is two matrix products (Candle's conv backward is a naive loop).
/// Trailing rows / columns that do not fill a patch are dropped, as a convolution does.
fn patchify(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (o, _, k, _) = weight.dims4()?;
    let (oh, ow) = (h / k, w / k);
    let x = if oh * k != h || ow * k != w {
        x.narrow(2, 0, oh * k)?.narrow(3, 0, ow * k)?
    } else {
        x.clone()
    };
    let cols = if k == 1 {
        x.permute((0, 2, 3, 1))?.reshape((n * oh * ow, c))?
    } else {
        x.reshape((n, c, oh, k, ow, k))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((n * oh * ow, c * k * k))?
    };
    let wm = weight.reshape((o, c * k * k))?;
    cols.matmul(&wm.t()?)?
        .reshape((n, oh, ow, o))?
        .permute((0, 3, 1, 2))?
        .contiguous()
}

/// Fully connected layer over the last dimension, weight `(out, in)`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(vb: VarBuilder, in_f: usize, out_f: usize, bias: bool, init: WInit) -> Result<Self> {
        let (wi, bi) = weight_init(init, in_f, out_f);
        let weight = vb.get_with_hints((out_f, in_f), "weight", wi)?;
        let bias = if bias {
            Some(vb.get_with_hints(out_f, "bias", bi)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        self.product(x, self.bias.as_ref(), ctx)
    }

    /// `x @ weight^T` without the bias (for callers that fuse the bias into the next op).
    pub fn forward_no_bias(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        self.product(x, None, ctx)
    }

    /// `x @ weight^T (+ bias)` over the last dimension: on CPU f32 the project op (bias fused
    /// into the product, its gradient summed in the weight-gradient pass), else Candle's.
    fn product(&self, x: &Tensor, bias: Option<&Tensor>, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let (out_f, in_f) = self.weight.dims2()?;
        let dims = x.dims().to_vec();
        let rows = x.elem_count() / in_f;
        let weight = self.weight.to_dtype(x.dtype())?;
        let x2 = x.reshape((rows, in_f))?;
        let y = match linear(&x2, &weight, bias)? {
            Some(y) => y,
            None => {
                let y = x2.matmul(&weight.t()?)?;
                match bias {
                    Some(b) => crate::kernels::add_param(&y, b)?,
                    None => y,
                }
            }
        };
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = out_f;
        }
        let y = y.reshape(out_dims)?;
        ctx.count((rows * in_f * out_f) as u64, &y);
        Ok(y)
    }
}

/// BatchNorm over the channels of NCHW input. Train mode normalises with the batch statistics
/// (biased variance) and updates the running stats in place (unbiased variance), like PyTorch.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm2d {
    /// PyTorch defaults: eps 1e-5, momentum 0.1.
    pub fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        Self::with_eps(vb, c, 1e-5, 0.1)
    }

    pub fn with_eps(vb: VarBuilder, c: usize, eps: f64, momentum: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(c, "weight", Init::Const(1.))?,
            bias: vb.get_with_hints(c, "bias", Init::Const(0.))?,
            running_mean: vb.get_with_hints(c, "running_mean", Init::Const(0.))?,
            running_var: vb.get_with_hints(c, "running_var", Init::Const(1.))?,
            num_batches_tracked: vb.get_with_hints_dtype(
                (),
                "num_batches_tracked",
                Init::Const(0.),
                DType::I64,
            )?,
            eps,
            momentum,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        self.forward_act(x, BnAct::None, ctx)
    }

    /// BatchNorm followed by `act` (fused into the same passes in train mode on CPU f32).
    pub fn forward_act(&self, x: &Tensor, act: BnAct, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let y = if runs_on_gpu(x) {
            self.forward_f32(x, act, ctx)?
        } else {
            in_f32(x, |x| self.forward_f32(x, act, ctx))?
        };
        ctx.count(0, &y);
        Ok(y)
    }

    /// `relu(self(x) + residual)`, a ResNet block's last BatchNorm with its shortcut: one op
    /// on CPU f32 (the BatchNorm's output is not kept for backward; the same values bit for
    /// bit), else the BatchNorm and [`add_relu`](crate::kernels::add_relu).
    pub fn forward_add_relu(
        &self,
        x: &Tensor,
        residual: &Tensor,
        ctx: &mut ForwardCtx,
    ) -> Result<Tensor> {
        let running = (!ctx.train).then_some((&self.running_mean, &self.running_var));
        if ctx.train {
            let (n, _, h, wd) = x.dims4()?;
            if n * h * wd < 2 {
                candle_core::bail!(
                    "BatchNorm2d in train mode needs more than one value per channel"
                )
            }
        }
        let fused = batch_norm_add_relu(x, residual, &self.weight, &self.bias, self.eps, running)?;
        let Some((y, mean, var)) = fused else {
            return crate::kernels::add_relu(&self.forward(x, ctx)?, residual);
        };
        if ctx.train {
            let (n, _, h, wd) = x.dims4()?;
            self.update_running(&mean, &var, n * h * wd)?;
        }
        ctx.count(0, &y);
        Ok(y)
    }

    fn forward_f32(&self, x: &Tensor, act: BnAct, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let shape = (1, c, 1, 1);
        let w = self.weight.reshape(shape)?;
        let b = self.bias.reshape(shape)?;
        let y = if ctx.train {
            let (n, _, h, wd) = x.dims4()?;
            let count = n * h * wd;
            if count < 2 {
                candle_core::bail!(
                    "BatchNorm2d in train mode needs more than one value per channel"
                )
            }
            let (y, mean, var) = batch_norm_train_act(x, &self.weight, &self.bias, self.eps, act)?;
            self.update_running(&mean, &var, count)?;
            y
        } else if let Some(y) = batch_norm_eval_act(
            x,
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
            self.eps,
            act,
        )? {
            y
        } else {
            let rm = self.running_mean.detach().reshape(shape)?;
            let rv = self.running_var.detach().reshape(shape)?;
            let scale = ((rv + self.eps)?.sqrt()?.recip()? * w)?;
            act.apply_tensor(
                x.broadcast_sub(&rm)?
                    .broadcast_mul(&scale)?
                    .broadcast_add(&b)?,
            )?
        };
        Ok(y)
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let m = self.momentum;
        let mean = mean.detach().flatten_all()?;
        let unbiased = (var.detach().flatten_all()? * (count as f64 / (count - 1) as f64))?;
        let dt = self.running_mean.dtype();
        let new_mean = ((self.running_mean.detach() * (1.0 - m))? + (mean.to_dtype(dt)? * m)?)?;
        let new_var = ((self.running_var.detach() * (1.0 - m))? + (unbiased.to_dtype(dt)? * m)?)?;
        if self.running_mean.is_variable() {
            Var::from_tensor(&self.running_mean)?.set(&new_mean)?;
            Var::from_tensor(&self.running_var)?.set(&new_var)?;
        }
        if self.num_batches_tracked.is_variable() {
            let nb = (self.num_batches_tracked.to_dtype(DType::F64)? + 1.0)?
                .to_dtype(self.num_batches_tracked.dtype())?;
            Var::from_tensor(&self.num_batches_tracked)?.set(&nb)?;
        }
        Ok(())
    }
}

/// LayerNorm over the last dimension, from basic ops (so it has a backward).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(vb: VarBuilder, c: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(c, "weight", Init::Const(1.))?,
            bias: vb.get_with_hints(c, "bias", Init::Const(0.))?,
            eps,
        })
    }

    /// Normalises over the last dimension (fused op with backward on CPU f32 and on CUDA).
    pub fn forward_last(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let y = if runs_on_gpu(x) {
            layer_norm_last(x, &self.weight, &self.bias, self.eps)?
        } else {
            in_f32(x, |x| {
                layer_norm_last(x, &self.weight, &self.bias, self.eps)
            })?
        };
        ctx.count(0, &y);
        Ok(y)
    }

    /// Normalises over the channels of NCHW input (timm's LayerNorm2d).
    pub fn forward_channels(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        if let Some(y) = layer_norm_channels(x, &self.weight, &self.bias, self.eps)? {
            ctx.count(0, &y);
            return Ok(y);
        }
        if x.device().is_cpu() && x.dtype() == DType::F32 && !crate::kernels::reference_mode() {
            // channels-last copy, the fused LayerNorm, and back
            let y = to_nhwc(x)?;
            let y = layer_norm_last(&y, &self.weight, &self.bias, self.eps)?;
            let y = to_nchw(&y)?;
            ctx.count(0, &y);
            return Ok(y);
        }
        let y = in_f32(x, |x| {
            let mean = x.mean_keepdim(1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(1)?;
            xc.broadcast_div(&(var + self.eps)?.sqrt()?)?
                .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
                .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
        })?;
        ctx.count(0, &y);
        Ok(y)
    }
}

/// Stochastic depth: in train mode zeroes whole samples with probability `p` and scales the
/// kept ones by `1 / (1 - p)`; identity otherwise.
pub fn drop_path(x: &Tensor, p: f64, ctx: &mut ForwardCtx) -> Result<Tensor> {
    match drop_path_mask(x, p, ctx)? {
        Some(mask) => x.broadcast_mul(&mask),
        None => Ok(x.clone()),
    }
}

/// The per-sample factors [`drop_path`] multiplies `x` by, shape `(N, 1, ..)` in `x`'s dtype
/// (0 or `1 / keep`, drawn from the forward's RNG), or `None` where it is the identity (eval
/// mode, `p <= 0`).
pub fn drop_path_mask(x: &Tensor, p: f64, ctx: &mut ForwardCtx) -> Result<Option<Tensor>> {
    if !ctx.train || p <= 0.0 {
        return Ok(None);
    }
    let n = x.dim(0)?;
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if ctx.rng.random::<f64>() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect();
    let mut shape = vec![1usize; x.rank()];
    shape[0] = n;
    Ok(Some(
        Tensor::from_vec(mask, shape, x.device())?.to_dtype(x.dtype())?,
    ))
}

/// Element-wise dropout (train mode only).
pub fn dropout(x: &Tensor, p: f64, ctx: &mut ForwardCtx) -> Result<Tensor> {
    if !ctx.train || p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            if ctx.rng.random::<f64>() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

/// ReLU6 = min(max(x, 0), 6).
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    x.relu()?.minimum(6f64)
}

/// Hard sigmoid = relu6(x + 3) / 6.
pub fn hardsigmoid(x: &Tensor) -> Result<Tensor> {
    relu6(&(x + 3.0)?)? / 6.0
}

/// Hard swish = x * relu6(x + 3) / 6.
pub fn hardswish(x: &Tensor) -> Result<Tensor> {
    x * hardsigmoid(x)?
}

/// Spatial mean of NCHW input: `(N, C)`, accumulated in f32.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    in_f32(x, |x| x.mean((2, 3)))
}

/// Runs `f` on `x` in f32 and returns its result in `x`'s dtype (the identity in f32): the
/// norms and reductions of a bf16 / f16 forward, whose statistics need f32's precision.
pub fn in_f32(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let dt = x.dtype();
    if dt == DType::F32 {
        return f(x);
    }
    f(&x.to_dtype(DType::F32)?)?.to_dtype(dt)
}

/// Optional projection of pooled features to `embedding_dim` (`embed.*`), then the classifier.
#[derive(Debug, Clone)]
pub struct EmbedHead {
    pub embed: Option<Linear>,
    /// `model.embedding_norm`: BatchNorm over the embedding (BatchNorm1d), named `embed_norm`.
    pub norm: Option<BatchNorm2d>,
    pub dim: usize,
}

impl EmbedHead {
    /// `vb` is the model root; the projection is named `embed.weight` / `embed.bias`, the norm
    /// `embed_norm.*`.
    pub fn new(
        vb: &VarBuilder,
        features: usize,
        embedding_dim: Option<usize>,
        norm: bool,
    ) -> Result<Self> {
        let (embed, dim) = match embedding_dim {
            Some(d) => (
                Some(Linear::new(
                    vb.pp("embed"),
                    features,
                    d,
                    true,
                    WInit::TorchDefault,
                )?),
                d,
            ),
            None => (None, features),
        };
        let norm = if norm {
            Some(BatchNorm2d::new(vb.pp("embed_norm"), dim)?)
        } else {
            None
        };
        Ok(Self { embed, norm, dim })
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let mut y = match &self.embed {
            Some(l) => {
                let y = l.forward(x, ctx)?;
                ctx.record("embed", &y);
                y
            }
            None => x.clone(),
        };
        if let Some(bn) = &self.norm {
            let (n, d) = y.dims2()?;
            y = bn
                .forward(&y.reshape((n, d, 1, 1))?, ctx)?
                .reshape((n, d))?;
            ctx.record("embed_norm", &y);
        }
        Ok(y)
    }
}
