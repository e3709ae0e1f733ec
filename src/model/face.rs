//! The interface every face model exposes (`FaceModel`) and the per-call forward context
//! (train/eval mode, deterministic RNG for drop path and dropout, optional shape trace).

use candle_core::{Result, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One traced layer output (used by `inspect`).
#[derive(Debug, Clone)]
pub struct TraceEntry {
    pub name: String,
    pub shape: Vec<usize>,
}

/// Collected while `ForwardCtx::trace` is `Some`: layer outputs, multiply-accumulates and the
/// number of activation elements produced (all for the batch that ran).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub layers: Vec<TraceEntry>,
    pub macs: u64,
    pub activation_elems: u64,
}

/// State of one forward call.
#[derive(Debug, Clone)]
pub struct ForwardCtx {
    /// Train mode: BatchNorm uses batch statistics and updates running stats; drop path and
    /// dropout are active.
    pub train: bool,
    /// Source of drop-path / dropout masks (deterministic given the seed).
    pub rng: ChaCha8Rng,
    /// When set, layers record their outputs and MACs here.
    pub trace: Option<Trace>,
}

impl ForwardCtx {
    /// Train mode with masks drawn from `seed`.
    pub fn train(seed: u64) -> Self {
        Self {
            train: true,
            rng: ChaCha8Rng::seed_from_u64(seed),
            trace: None,
        }
    }

    /// Eval mode.
    pub fn eval() -> Self {
        Self {
            train: false,
            rng: ChaCha8Rng::seed_from_u64(0),
            trace: None,
        }
    }

    /// Records a named layer output when tracing.
    pub fn record(&mut self, name: &str, t: &Tensor) {
        if let Some(tr) = self.trace.as_mut() {
            tr.layers.push(TraceEntry {
                name: name.to_string(),
                shape: t.dims().to_vec(),
            });
        }
    }

    /// Adds MACs and activation elements when tracing.
    pub fn count(&mut self, macs: u64, out: &Tensor) {
        if let Some(tr) = self.trace.as_mut() {
            tr.macs += macs;
            tr.activation_elems += out.elem_count() as u64;
        }
    }
}

/// A face-recognition network: an embedding and a classifier over it.
pub trait FaceModel: Send {
    /// The fixed-length embedding `(N, embedding_dim)` before the classifier.
    fn embed(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor>;

    /// Classifier logits from an embedding computed by `embed`.
    fn classifier_logits_from_embedding(
        &self,
        emb: &Tensor,
        ctx: &mut ForwardCtx,
    ) -> Result<Tensor>;

    /// Logits `(N, num_classes)`.
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let e = self.embed(x, ctx)?;
        self.classifier_logits_from_embedding(&e, ctx)
    }

    /// Size of the embedding.
    fn embedding_dim(&self) -> usize;

    /// Number of classes of the classifier.
    fn num_classes(&self) -> usize;
}
