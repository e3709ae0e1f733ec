//! Run keys: a stable hash of a run's resolved configuration in canonical form (sorted keys,
//! defaults filled in, cosmetic and placement-only fields removed) plus its data fingerprint.

use sha2::{Digest, Sha256};

use crate::recipe::{OptimizerKind, Recipe, SchedulerKind};

/// The configuration that defines what a run computes, as canonical JSON.
pub fn canonical_config(recipe: &Recipe) -> serde_json::Value {
    let mut r = recipe.clone();
    // Cosmetic or placement-only: the same computation whatever their value.
    r.name = None;
    r.description = None;
    r.sweep = None;
    r.slurm = None;
    r.data.num_workers = None;
    // an image size taken from the eval transforms hashes as the default it had before
    if r.data.image_size_from_eval {
        r.data.image_size = crate::recipe::schema::default_image_size();
    }
    r.data.cache_dir = None;
    r.train.device = String::new();
    r.checkpoint.dir = String::new();
    if r.data.root == "synth" {
        // The synth parameters define the data; the fingerprint covers them.
    } else {
        r.data.synth = Default::default();
    }
    // One spelling per padding (`4`, `[4, 4]` and `[4, 4, 4, 4]` are the same crop).
    for t in r
        .transforms
        .train
        .iter_mut()
        .chain(r.transforms.eval.iter_mut())
    {
        if let crate::recipe::TransformSpec::RandomCrop { padding, .. } = t {
            *padding = padding.simplest();
        }
    }
    // Fill defaults so that writing a default explicitly gives the same key.
    let o = &mut r.optimizer;
    o.lr = Some(o.lr());
    o.weight_decay = Some(o.weight_decay());
    match o.kind {
        OptimizerKind::Sgd => {
            o.momentum = Some(o.momentum());
            o.dampening = Some(o.dampening());
            o.nesterov = Some(o.nesterov());
        }
        OptimizerKind::Adamw => {
            o.betas = Some(o.betas());
            o.eps = Some(o.eps());
        }
    }
    let s = &mut r.scheduler;
    if s.warmup_epochs > 0 {
        s.warmup_start_factor = Some(s.warmup_start_factor());
    } else {
        s.warmup_start_factor = None;
        s.warmup_per_iteration = false;
    }
    match s.kind {
        SchedulerKind::Step | SchedulerKind::Multistep => s.gamma = Some(s.gamma()),
        SchedulerKind::Cosine => s.eta_min = Some(s.eta_min()),
        SchedulerKind::Plateau => {
            s.mode = Some(s.mode());
            s.factor = Some(s.factor());
            s.patience = Some(s.patience());
            s.threshold = Some(s.threshold());
            s.threshold_mode = Some(s.threshold_mode());
            s.cooldown = Some(s.cooldown());
            s.min_lr = Some(s.min_lr());
            s.eps = Some(s.plateau_eps());
            s.monitor = Some(s.monitor().to_string());
        }
        SchedulerKind::None => {}
    }
    // A run that starts from another recipe's run: that run's key (which covers its own
    // parents) and the pick, not where the parent recipe file lies.
    if let Some(crate::recipe::InitFrom::Run(link)) = r.model.init_from.as_mut() {
        link.recipe = String::new();
    }
    let l = &mut r.loss;
    if l.kind != crate::recipe::LossKind::CrossEntropy {
        l.scale = Some(l.scale());
        l.margin = Some(l.margin());
    }
    // serde_json's map is ordered by key: the serialisation is canonical.
    serde_json::to_value(&r).unwrap_or(serde_json::Value::Null)
}

/// The run key: 16 hex digits of sha256(canonical config, data fingerprint).
pub fn run_key(recipe: &Recipe, data_fingerprint: &str) -> String {
    let canon = canonical_config(recipe);
    let mut h = Sha256::new();
    h.update(canon.to_string().as_bytes());
    h.update(b"\n");
    h.update(data_fingerprint.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// The key of a linked run that `runner resume` makes: sha256(canonical config, data
/// fingerprint, the parent run's key, the epoch of the parent's checkpoint it starts from).
/// A resume of the same run from the same checkpoint with the same settings has this key
/// again (so it is not trained twice), and never the key of a run trained from scratch with
/// the same configuration (whose first epochs followed another schedule).
pub fn resumed_run_key(
    recipe: &Recipe,
    data_fingerprint: &str,
    parent_key: &str,
    start_epoch: u32,
) -> String {
    let canon = canonical_config(recipe);
    let mut h = Sha256::new();
    h.update(canon.to_string().as_bytes());
    h.update(b"\n");
    h.update(data_fingerprint.as_bytes());
    h.update(format!("\nresumed from {parent_key} epoch {start_epoch}").as_bytes());
    hex::encode(&h.finalize()[..8])
}
