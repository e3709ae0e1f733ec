//! Margin-based face-recognition heads: ArcFace (additive angular margin) and CosFace (additive
//! cosine margin). Both compare L2-normalised embeddings with L2-normalised class weights and
//! return scaled logits for [`crate::train::loss::cross_entropy`]; with targets, the target
//! class's logit gets the margin (training), without, plain `s * cos` (evaluation).

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// Arg-max accuracy of logits (the eval logits `s * cos` rank classes like the cosines).
pub use crate::train::loss::accuracy;

/// Row-wise L2 normalisation from differentiable ops (`x / sqrt(sum x^2 + 1e-12)`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// `[batch, classes]` one-hot of `targets` in `dtype` (no gradient).
fn one_hot(targets: &Tensor, classes: usize, dtype: DType) -> Result<Tensor> {
    let ids = Tensor::arange(0u32, classes as u32, targets.device())?.unsqueeze(0)?;
    targets
        .to_dtype(DType::U32)?
        .unsqueeze(1)?
        .broadcast_eq(&ids)?
        .to_dtype(dtype)
}

/// Cosine similarities `[batch, classes]` of normalised embeddings and normalised weights.
fn cosines(embeddings: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let e = l2_normalize(embeddings)?;
    let w = l2_normalize(weight)?;
    e.matmul(&w.t()?)
}

/// Class weights initialised like insightface (normal, std 0.01).
fn class_weights(vb: &VarBuilder, embedding_dim: usize, num_classes: usize) -> Result<Tensor> {
    vb.get_with_hints(
        (num_classes, embedding_dim),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: 0.01,
        },
    )
}

/// ArcFace: target logit `s * cos(theta + m)` (insightface's non-easy margin: where
/// `theta + m > pi`, `s * (cos theta - m sin m)` keeps the logit monotonic).
#[derive(Debug, Clone)]
pub struct ArcFace {
    weight: Tensor,
    scale: f64,
    margin: f64,
}

impl ArcFace {
    /// Class weights at `vb.pp(..)` + `weight`, shape `[num_classes, embedding_dim]`.
    pub fn new(
        vb: VarBuilder,
        embedding_dim: usize,
        num_classes: usize,
        scale: f64,
        margin: f64,
    ) -> Result<Self> {
        Ok(ArcFace {
            weight: class_weights(&vb, embedding_dim, num_classes)?,
            scale,
            margin,
        })
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// Logits `[batch, classes]`; `targets` (training) applies the margin to the target class.
    pub fn forward(&self, embeddings: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
        let cos = cosines(embeddings, &self.weight)?;
        let Some(targets) = targets else {
            return cos * self.scale;
        };
        let (cos_m, sin_m) = (self.margin.cos(), self.margin.sin());
        let th = (std::f64::consts::PI - self.margin).cos();
        let mm = (std::f64::consts::PI - self.margin).sin() * self.margin;
        // sin theta, clamped away from 0 so the gradient stays finite at cos = +-1.
        let sin = (1.0 - cos.sqr()?)?.clamp(1e-12, 1.0)?.sqrt()?;
        let phi = ((&cos * cos_m)? - (sin * sin_m)?)?;
        let use_phi = cos.gt(th)?.to_dtype(cos.dtype())?.detach();
        let fallback = (&cos - mm)?;
        let phi = ((&use_phi * &phi)? + ((1.0 - &use_phi)? * fallback)?)?;
        let hot = one_hot(targets, cos.dim(1)?, cos.dtype())?;
        let mixed = ((&hot * &phi)? + ((1.0 - &hot)? * &cos)?)?;
        mixed * self.scale
    }
}

/// CosFace: target logit `s * (cos theta - m)`.
#[derive(Debug, Clone)]
pub struct CosFace {
    weight: Tensor,
    scale: f64,
    margin: f64,
}

impl CosFace {
    pub fn new(
        vb: VarBuilder,
        embedding_dim: usize,
        num_classes: usize,
        scale: f64,
        margin: f64,
    ) -> Result<Self> {
        Ok(CosFace {
            weight: class_weights(&vb, embedding_dim, num_classes)?,
            scale,
            margin,
        })
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn forward(&self, embeddings: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
        let cos = cosines(embeddings, &self.weight)?;
        let Some(targets) = targets else {
            return cos * self.scale;
        };
        let hot = one_hot(targets, cos.dim(1)?, cos.dtype())?;
        (cos - (hot * self.margin)?)? * self.scale
    }
}

/// Either margin head, as a recipe's `loss.kind` picks it.
#[derive(Debug, Clone)]
pub enum MarginHead {
    ArcFace(ArcFace),
    CosFace(CosFace),
}

impl MarginHead {
    /// `None` for plain cross-entropy (the model's own classifier gives the logits).
    pub fn build(
        cfg: &crate::recipe::LossConfig,
        vb: VarBuilder,
        embedding_dim: usize,
        num_classes: usize,
    ) -> Result<Option<Self>> {
        use crate::recipe::LossKind;
        Ok(match cfg.kind {
            LossKind::CrossEntropy => None,
            LossKind::Arcface => Some(MarginHead::ArcFace(ArcFace::new(
                vb,
                embedding_dim,
                num_classes,
                cfg.scale(),
                cfg.margin(),
            )?)),
            LossKind::Cosface => Some(MarginHead::CosFace(CosFace::new(
                vb,
                embedding_dim,
                num_classes,
                cfg.scale(),
                cfg.margin(),
            )?)),
        })
    }
    pub fn forward(&self, embeddings: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
        match self {
            MarginHead::ArcFace(h) => h.forward(embeddings, targets),
            MarginHead::CosFace(h) => h.forward(embeddings, targets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    fn head_inputs() -> Result<(Tensor, Tensor, Device)> {
        let dev = Device::Cpu;
        let emb = Tensor::new(&[[1f64, 0.0, 0.0], [0.0, 2.0, 0.0], [0.3, 0.3, 0.9]], &dev)?;
        let t = Tensor::new(&[0u32, 1, 2], &dev)?;
        Ok((emb, t, dev))
    }

    fn set_weight(vm: &VarMap, w: &[[f64; 3]; 4]) -> Result<()> {
        let data = vm.data().lock().expect("varmap lock");
        let v = data.get("head.weight").expect("weight var");
        v.set(&Tensor::new(w, v.device())?)
    }

    const W: [[f64; 3]; 4] = [
        [2.0, 0.0, 0.0],
        [0.6, 0.8, 0.0],
        [0.0, 0.0, 1.0],
        [-1.0, 1.0, 1.0],
    ];

    #[test]
    fn arcface_matches_the_formula() -> Result<()> {
        let (emb, t, dev) = head_inputs()?;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &dev);
        let head = ArcFace::new(vb.pp("head"), 3, 4, 64.0, 0.5)?;
        set_weight(&vm, &W)?;
        let eval = head.forward(&emb, None)?.to_vec2::<f64>()?;
        let train = head.forward(&emb, Some(&t))?.to_vec2::<f64>()?;
        // row 0: embedding (1,0,0) vs class 0 (1,0,0): cos 1 -> theta 0 -> cos(0.5)
        // (up to the sin clamp: sin >= 1e-6, so within 64 * 1e-6).
        assert!((eval[0][0] - 64.0).abs() < 1e-9);
        assert!((train[0][0] - 64.0 * 0.5f64.cos()).abs() < 1e-4);
        // row 1: (0,1,0) vs class 1 (0.6,0.8,0): cos 0.8.
        let theta = 0.8f64.acos();
        assert!((train[1][1] - 64.0 * (theta + 0.5).cos()).abs() < 1e-9);
        // non-target logits unchanged.
        assert!((train[1][0] - eval[1][0]).abs() < 1e-12);
        assert!((train[2][3] - eval[2][3]).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn cosface_subtracts_margin_and_trains() -> Result<()> {
        let (emb, t, dev) = head_inputs()?;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &dev);
        let head = CosFace::new(vb.pp("head"), 3, 4, 30.0, 0.35)?;
        set_weight(&vm, &W)?;
        let eval = head.forward(&emb, None)?.to_vec2::<f64>()?;
        let train = head.forward(&emb, Some(&t))?.to_vec2::<f64>()?;
        assert!((train[1][1] - (eval[1][1] - 30.0 * 0.35)).abs() < 1e-9);
        assert!((train[1][2] - eval[1][2]).abs() < 1e-12);
        // Gradients reach the class weights and the embeddings.
        let e = Var::from_tensor(&emb)?;
        let loss = crate::train::loss::cross_entropy(&head.forward(&e, Some(&t))?, &t, 0.0)?;
        let grads = loss.backward()?;
        let vars = vm.all_vars();
        assert!(grads.get(&vars[0]).is_some());
        assert!(grads.get(e.as_tensor()).is_some());
        Ok(())
    }

    #[test]
    fn arcface_gradient_is_finite_at_cos_one() -> Result<()> {
        let (emb, t, dev) = head_inputs()?;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &dev);
        let head = ArcFace::new(vb.pp("head"), 3, 4, 64.0, 0.5)?;
        set_weight(&vm, &W)?;
        let loss = crate::train::loss::cross_entropy(&head.forward(&emb, Some(&t))?, &t, 0.0)?;
        let grads = loss.backward()?;
        let g = grads.get(&vm.all_vars()[0]).expect("grad");
        let s = g.sqr()?.sum_all()?.to_scalar::<f64>()?;
        assert!(s.is_finite());
        Ok(())
    }
}
