//! Checks of how a run trains and is planned: loss, optimizer, scheduler, training,
//! checkpoint and verification sections, the sweep, and the Slurm table.

use super::*;

impl Checker<'_> {
    pub(super) fn slurm(&mut self, s: &SlurmConfig) {
        if let Some(n) = s.cpus_per_run {
            self.require(n >= 1, "slurm.cpus_per_run", "must be >= 1");
        }
        if let Some(n) = s.max_parallel {
            self.require(n >= 1, "slurm.max_parallel", "must be >= 1");
        }
        if let Some(t) = &s.time {
            self.require(
                slurm_time_ok(t),
                "slurm.time",
                "must be a Slurm time limit: MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS",
            );
        }
        if let Some(m) = &s.mem {
            self.require(
                slurm_mem_ok(m),
                "slurm.mem",
                "must be a Slurm memory size: a number with an optional unit K, M, G or T (\"16G\")",
            );
        }
        if let Some(p) = &s.partition {
            self.require(
                !p.is_empty() && !p.contains(char::is_whitespace),
                "slurm.partition",
                "must be a partition name",
            );
        }
        for (i, a) in s.sbatch_args.iter().enumerate() {
            if !a.starts_with('-') || a.contains('\n') {
                self.fail(
                    &format!("slurm.sbatch_args[{i}]"),
                    "must be one sbatch option, such as \"--account=lab\"",
                );
            }
        }
        for (i, l) in s.setup.iter().enumerate() {
            if l.contains('\n') {
                self.fail(
                    &format!("slurm.setup[{i}]"),
                    "must be one shell line (give each line as its own item)",
                );
            }
        }
    }

    pub(super) fn loss(&mut self, l: &LossConfig) {
        self.unit_open("loss.label_smoothing", l.label_smoothing);
        let margin_loss = l.kind != LossKind::CrossEntropy;
        self.not_for(
            !margin_loss && l.scale.is_some(),
            "loss.scale",
            "cross_entropy",
        );
        self.not_for(
            !margin_loss && l.margin.is_some(),
            "loss.margin",
            "cross_entropy",
        );
        if margin_loss {
            self.positive("loss.scale", l.scale());
            self.require(l.margin() >= 0.0, "loss.margin", "must be >= 0");
        }
        self.not_for(
            !margin_loss && l.margin_warmup_epochs > 0,
            "loss.margin_warmup_epochs",
            "cross_entropy",
        );
    }

    pub(super) fn optimizer(&mut self, o: &OptimizerConfig) {
        self.positive("optimizer.lr", o.lr());
        if let Some(s) = o.backbone_lr_scale {
            self.require(
                s.is_finite() && s >= 0.0,
                "optimizer.backbone_lr_scale",
                &format!("must be >= 0 (got {s}; 0 trains the classifier alone)"),
            );
        }
        self.require(
            o.weight_decay() >= 0.0,
            "optimizer.weight_decay",
            "must be >= 0",
        );
        match o.kind {
            OptimizerKind::Sgd => {
                self.not_for(o.betas.is_some(), "optimizer.betas", "sgd");
                self.not_for(o.eps.is_some(), "optimizer.eps", "sgd");
                self.require(o.momentum() >= 0.0, "optimizer.momentum", "must be >= 0");
                self.require(o.dampening() >= 0.0, "optimizer.dampening", "must be >= 0");
                if o.nesterov() && (o.momentum() <= 0.0 || o.dampening() != 0.0) {
                    self.fail_reading(
                        "optimizer.nesterov",
                        &["optimizer.momentum", "optimizer.dampening"],
                        "Nesterov momentum requires momentum > 0 and dampening = 0 (as in PyTorch)",
                    );
                }
            }
            OptimizerKind::Adamw => {
                self.not_for(o.momentum.is_some(), "optimizer.momentum", "adamw");
                self.not_for(o.dampening.is_some(), "optimizer.dampening", "adamw");
                self.not_for(o.nesterov.is_some(), "optimizer.nesterov", "adamw");
                let [b1, b2] = o.betas();
                self.require(
                    (0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2),
                    "optimizer.betas",
                    "each beta must be in [0, 1)",
                );
                self.positive("optimizer.eps", o.eps());
            }
        }
    }

    pub(super) fn scheduler(&mut self, s: &SchedulerConfig, epochs: u32) {
        use SchedulerKind as K;
        let kind = sched_str(s.kind);
        self.not_for(
            s.kind != K::Step && s.step_size.is_some(),
            "scheduler.step_size",
            kind,
        );
        self.not_for(
            !matches!(s.kind, K::Step | K::Multistep) && s.gamma.is_some(),
            "scheduler.gamma",
            kind,
        );
        self.not_for(
            s.kind != K::Multistep && s.milestones.is_some(),
            "scheduler.milestones",
            kind,
        );
        self.not_for(
            s.kind != K::Cosine && s.t_max.is_some(),
            "scheduler.t_max",
            kind,
        );
        self.not_for(
            s.kind != K::Cosine && s.eta_min.is_some(),
            "scheduler.eta_min",
            kind,
        );
        let plateau_keys = [
            ("mode", s.mode.is_some()),
            ("factor", s.factor.is_some()),
            ("patience", s.patience.is_some()),
            ("threshold", s.threshold.is_some()),
            ("threshold_mode", s.threshold_mode.is_some()),
            ("cooldown", s.cooldown.is_some()),
            ("min_lr", s.min_lr.is_some()),
            ("eps", s.eps.is_some()),
            ("monitor", s.monitor.is_some()),
        ];
        for (name, set) in plateau_keys {
            self.not_for(
                s.kind != K::Plateau && set,
                &format!("scheduler.{name}"),
                kind,
            );
        }
        match s.kind {
            K::Step => match s.step_size {
                None => self.fail("scheduler.step_size", "required for kind `step`"),
                Some(v) => self.require(v >= 1, "scheduler.step_size", "must be >= 1"),
            },
            K::Multistep => match &s.milestones {
                None => self.fail("scheduler.milestones", "required for kind `multistep`"),
                Some(m) => {
                    self.require(!m.is_empty(), "scheduler.milestones", "must not be empty");
                    self.require(
                        m.windows(2).all(|w| w[0] < w[1]),
                        "scheduler.milestones",
                        &format!("must be strictly increasing (got {m:?})"),
                    );
                }
            },
            K::Cosine => {
                if let Some(t) = s.t_max {
                    self.require(t >= 1, "scheduler.t_max", "must be >= 1");
                }
                self.require(s.eta_min() >= 0.0, "scheduler.eta_min", "must be >= 0");
            }
            K::Plateau => {
                let f = s.factor();
                self.require(
                    f > 0.0 && f < 1.0,
                    "scheduler.factor",
                    &format!("must satisfy 0 < factor < 1 (got {f})"),
                );
                self.require(s.threshold() >= 0.0, "scheduler.threshold", "must be >= 0");
                self.require(s.min_lr() >= 0.0, "scheduler.min_lr", "must be >= 0");
                if !METRICS.contains(&s.monitor()) {
                    self.fail(
                        "scheduler.monitor",
                        format!(
                            "unknown metric `{}` (expected one of: {})",
                            s.monitor(),
                            METRICS.join(", ")
                        ),
                    );
                }
            }
            K::None => {}
        }
        if matches!(s.kind, K::Step | K::Multistep) {
            self.positive("scheduler.gamma", s.gamma());
        }
        if let Some(f) = s.warmup_start_factor {
            self.require(
                f > 0.0 && f <= 1.0,
                "scheduler.warmup_start_factor",
                "must be in (0, 1]",
            );
        }
        if s.warmup_epochs >= epochs && s.warmup_epochs > 0 {
            self.fail_reading(
                "scheduler.warmup_epochs",
                &["train.epochs"],
                format!("must be smaller than train.epochs ({epochs})"),
            );
        }
    }

    pub(super) fn train(&mut self, t: &TrainConfig) {
        self.require(t.epochs >= 1, "train.epochs", "must be >= 1");
        self.require(t.batch_size >= 1, "train.batch_size", "must be >= 1");
        if let Some(g) = t.grad_clip {
            self.positive("train.grad_clip", g);
        }
        self.require(
            t.rollback_factor > 0.0 && t.rollback_factor < 1.0,
            "train.rollback_factor",
            "must satisfy 0 < factor < 1",
        );
        let dev_ok = t.device == "cpu"
            || t.device == "auto"
            || t.device == "cuda"
            || t.device
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<usize>().is_ok());
        self.require(
            dev_ok,
            "train.device",
            "must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"",
        );
        match t.ema {
            Ema::Enabled(true) => self.fail(
                "train.ema",
                "give the decay of the moving average (e.g. 0.999), or false",
            ),
            Ema::Decay(d) => self.require(
                d > 0.0 && d < 1.0,
                "train.ema",
                &format!("the decay must be in (0, 1) (got {d})"),
            ),
            Ema::Enabled(false) => {}
        }
        if t.freeze_backbone_epochs > 0 {
            self.require(
                t.freeze_backbone_epochs < t.epochs,
                "train.freeze_backbone_epochs",
                &format!(
                    "must be smaller than train.epochs ({}): the backbone would never train",
                    t.epochs
                ),
            );
        }
        if t.precision != Precision::F32 && t.device == "cpu" {
            self.fail_reading(
                "train.precision",
                &["train.device"],
                "bf16 / f16 mixed precision needs a CUDA device; use \"f32\" on the CPU",
            );
        }
    }

    pub(super) fn checkpoint(&mut self, c: &CheckpointConfig) {
        self.require(c.every >= 1, "checkpoint.every", "must be >= 1");
        if c.keep_best + c.keep_last < 1 {
            self.fail_reading(
                "checkpoint.keep_last",
                &["checkpoint.keep_best"],
                "keep_best + keep_last must be >= 1 (a run needs a checkpoint to resume from)",
            );
        }
        if !METRICS.contains(&c.monitor.as_str()) {
            let msg = format!("unknown metric `{}`", c.monitor);
            let help = suggestion(&c.monitor, METRICS.iter().copied());
            self.report("checkpoint.monitor", Focus::Value, msg, help);
        }
        self.require(!c.dir.is_empty(), "checkpoint.dir", "must not be empty");
    }

    /// ReduceLROnPlateau steps every epoch, so its metric must be logged every epoch:
    /// `verify_acc` only is when verification is scored every epoch.
    pub(super) fn plateau_monitor_logged(&mut self, r: &Recipe) {
        let v = &r.verification;
        if r.scheduler.kind == SchedulerKind::Plateau
            && r.scheduler.monitor() == "verify_acc"
            && !(v.enabled && (v.every == 1 || r.train.epochs == 1))
        {
            self.fail_reading(
                "scheduler.monitor",
                &["verification", "train.epochs"],
                format!(
                    "`verify_acc` is scored only every `verification.every` epochs ({}; 0 = at the \
                     end{}), but ReduceLROnPlateau steps every epoch: set verification.every = 1 \
                     or monitor another metric",
                    v.every,
                    if v.enabled { "" } else { ", and verification.enabled = false" }
                ),
            );
        }
    }

    pub(super) fn verification(&mut self, v: &VerificationConfig) {
        if let ThresholdSpec::Fixed(t) = v.threshold {
            self.require(t.is_finite(), "verification.threshold", "must be finite");
        }
    }

    pub(super) fn sweep(&mut self, s: &SweepConfig) {
        if s.params.is_empty() {
            self.fail_reading(
                "sweep.params",
                &["sweep.params"],
                "a [sweep] needs at least one parameter",
            );
        }
        let searched = matches!(s.mode, SweepMode::Random | SweepMode::Tpe);
        match (searched, s.trials) {
            (true, None) => self.fail("sweep.trials", "required for modes `random` and `tpe`"),
            (true, Some(0)) => self.fail("sweep.trials", "must be >= 1"),
            (false, Some(_)) => {
                self.fail("sweep.trials", "only applies to modes `random` and `tpe`")
            }
            _ => {}
        }
        if s.startup_trials.is_some() && s.mode != SweepMode::Tpe {
            self.fail(
                "sweep.startup_trials",
                "only applies to mode `tpe` (its random trials before TPE takes over)",
            );
        }
        let mut zip_len: Option<(String, usize)> = None;
        for (key, values) in &s.params {
            let k = format!("sweep.params.{key}");
            if key == "slurm" || key.starts_with("slurm.") {
                self.fail(
                    &k,
                    "the [slurm] options hold for every run of a sweep: set them in [slurm] or on the command line",
                );
            }
            match values {
                SweepValues::List(l) => {
                    if l.is_empty() {
                        self.fail(&k, "the list of values is empty");
                    }
                    if s.mode == SweepMode::Zip {
                        match &zip_len {
                            None => zip_len = Some((key.clone(), l.len())),
                            Some((other, n)) if *n != l.len() => {
                                let msg = format!(
                                    "zip needs lists of equal length: {} has {}, `{other}` has {n}",
                                    key,
                                    l.len()
                                );
                                self.fail(&k, msg);
                            }
                            _ => {}
                        }
                    }
                }
                SweepValues::Distribution(d) => {
                    if !searched {
                        self.fail(
                            &k,
                            "distributions need mode = \"random\" or \"tpe\"; grid and zip take lists",
                        );
                    }
                    match d {
                        Distribution::Uniform(r) => self.ordered(&k, *r),
                        Distribution::Loguniform(r) => {
                            self.ordered(&k, *r);
                            self.require(r[0] > 0.0, &k, "loguniform bounds must be > 0");
                        }
                        Distribution::Int([a, b]) => self.require(
                            a <= b,
                            &k,
                            &format!("must be [min, max] with min <= max (got [{a}, {b}])"),
                        ),
                        Distribution::Choice(c) => {
                            self.require(!c.is_empty(), &k, "the choice list is empty")
                        }
                    }
                }
            }
        }
    }

    /// `[sweep.prune]`: a metric every rung logs, a factor that shrinks, a first rung before
    /// the last epoch.
    pub(super) fn prune(&mut self, p: &PruneConfig, r: &Recipe) {
        if p.kind == PruneKind::None {
            return;
        }
        let (metric, _) = p.objective(&r.checkpoint);
        if !METRICS.contains(&metric.as_str()) {
            let key = if p.metric.is_some() {
                "sweep.prune.metric"
            } else {
                "checkpoint.monitor"
            };
            let msg = format!("unknown metric `{metric}`");
            let help = suggestion(&metric, METRICS.iter().copied());
            self.report(key, Focus::Value, msg, help);
        } else if metric == "verify_acc" && !(r.verification.enabled && r.verification.every == 1) {
            self.fail_reading(
                "sweep.prune.metric",
                &["verification"],
                "`verify_acc` is scored only every `verification.every` epochs, but every rung \
                 compares runs by it: set verification.every = 1 or prune by another metric",
            );
        }
        self.require(
            p.reduction_factor >= 2,
            "sweep.prune.reduction_factor",
            "must be >= 2 (each rung keeps 1/factor of the runs)",
        );
        self.require(
            p.grace_epochs >= 1,
            "sweep.prune.grace_epochs",
            "must be >= 1",
        );
        if p.grace_epochs >= 1 && p.grace_epochs >= r.train.epochs {
            self.fail_reading(
                "sweep.prune.grace_epochs",
                &["train.epochs"],
                format!(
                    "must be below train.epochs ({}): the first rung must come before the end",
                    r.train.epochs
                ),
            );
        }
    }
}
