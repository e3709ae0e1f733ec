//! Checkpoint policy (keep best / keep last / every n, resume) and the checkpoint file
//! (round trip, truncation and corruption errors, atomic rename).

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use runner::recipe::{CheckpointConfig, MetricMode};
use runner::train::checkpoint::{
    assign_vars, read_checkpoint, remove_stale_temp, temp_path, write_checkpoint, CheckpointAction,
    CheckpointMeta, CheckpointPolicy, CheckpointingStrategy, SavedCheckpoint,
};
use runner::train::Metrics;
use std::collections::{BTreeMap, HashMap};

use CheckpointAction::{Delete, Save};

fn cfg(keep_best: u32, keep_last: u32, every: u32, mode: MetricMode) -> CheckpointConfig {
    CheckpointConfig {
        dir: "runs".into(),
        monitor: "val_acc".into(),
        mode,
        keep_best,
        keep_last,
        every,
    }
}

fn m(v: f64) -> Metrics {
    Metrics::from([("val_acc".to_string(), v), ("train_loss".to_string(), 1.0)])
}

/// Runs a policy over `accs` (epochs 1..), returning the actions of each epoch.
fn drive(p: &mut CheckpointPolicy, accs: &[f64]) -> Vec<Vec<CheckpointAction>> {
    accs.iter()
        .enumerate()
        .map(|(i, &a)| p.actions(i as u32 + 1, &m(a), i + 1 == accs.len()))
        .collect()
}

fn kept(p: &CheckpointPolicy) -> Vec<u32> {
    p.saved().iter().map(|c| c.epoch).collect()
}

#[test]
fn defaults_keep_best_and_last() {
    let mut p = CheckpointPolicy::from_config(&CheckpointConfig::default());
    let acts = drive(&mut p, &[0.1, 0.5, 0.3, 0.4, 0.2]);
    assert_eq!(acts[0], vec![Save]);
    assert_eq!(acts[1], vec![Save, Delete(1)]);
    assert_eq!(acts[2], vec![Save]); // 2 is best, 3 is last
    assert_eq!(acts[3], vec![Save, Delete(3)]);
    assert_eq!(acts[4], vec![Save, Delete(4)]);
    assert_eq!(kept(&p), vec![2, 5]);
    assert_eq!(p.best("val_acc", MetricMode::Max), Some(2));
    assert_eq!(p.latest(), Some(5));
}

#[test]
fn every_n_saves_on_schedule_and_always_the_last_epoch() {
    // keep_best = 0: only every-n and the last epoch; keep_last 2.
    let mut p = CheckpointPolicy::from_config(&cfg(0, 2, 3, MetricMode::Max));
    let acts = drive(&mut p, &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]);
    let saved: Vec<u32> = acts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.contains(&Save))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    assert_eq!(saved, vec![3, 6, 8]);
    assert_eq!(acts[7], vec![Save, Delete(3)]);
    assert_eq!(kept(&p), vec![6, 8]);
}

#[test]
fn keep_best_k_in_min_mode_saves_off_schedule_improvements() {
    let mut c = cfg(2, 1, 100, MetricMode::Min);
    c.monitor = "val_loss".into();
    let mut p = CheckpointPolicy::from_config(&c);
    let losses = [1.0, 0.8, 0.9, 0.7, 0.95, 0.6];
    let acts: Vec<Vec<CheckpointAction>> = losses
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let metrics = Metrics::from([("val_loss".to_string(), l)]);
            p.actions(i as u32 + 1, &metrics, i + 1 == losses.len())
        })
        .collect();
    assert_eq!(acts[0], vec![Save]);
    assert_eq!(acts[1], vec![Save]);
    assert_eq!(acts[2], vec![Save, Delete(1)]); // 0.9 beats 1.0: best two are 2, 3
    assert_eq!(acts[3], vec![Save, Delete(3)]); // best two 4, 2
    assert_eq!(acts[4], Vec::<CheckpointAction>::new()); // 0.95: not among the best, not every
    assert_eq!(acts[5], vec![Save, Delete(2)]); // best two 6, 4
    assert_eq!(kept(&p), vec![4, 6]);
}

#[test]
fn a_checkpoint_is_deleted_only_when_no_rule_keeps_it() {
    let mut p = CheckpointPolicy::from_config(&cfg(1, 3, 1, MetricMode::Max));
    let acts = drive(&mut p, &[0.9, 0.1, 0.2, 0.3, 0.4]);
    // epoch 1 stays as best even after falling out of the last three.
    assert!(acts.iter().flatten().all(|a| *a != Delete(1)));
    assert_eq!(acts[4], vec![Save, Delete(2)]);
    assert_eq!(kept(&p), vec![1, 3, 4, 5]);
}

#[test]
fn missing_or_nan_metric_never_counts_as_best() {
    let mut p = CheckpointPolicy::from_config(&cfg(1, 1, 1, MetricMode::Max));
    p.actions(1, &Metrics::new(), false);
    p.actions(2, &m(f64::NAN), false);
    assert_eq!(p.best("val_acc", MetricMode::Max), None);
    let a = p.actions(3, &m(0.2), false);
    assert_eq!(a, vec![Save, Delete(2)]);
    assert_eq!(p.best("val_acc", MetricMode::Max), Some(3));
}

#[test]
fn resumed_policy_decides_like_the_uninterrupted_one() {
    let accs = [0.3, 0.6, 0.2, 0.5, 0.7, 0.1, 0.4];
    let c = cfg(2, 1, 2, MetricMode::Max);
    let mut straight = CheckpointPolicy::from_config(&c);
    let all = drive(&mut straight, &accs);
    for stop in 1..accs.len() {
        let mut first = CheckpointPolicy::from_config(&c);
        for (i, &a) in accs[..stop].iter().enumerate() {
            first.actions(i as u32 + 1, &m(a), false);
        }
        // What the store knows: the kept epochs and their metrics.
        let saved: Vec<SavedCheckpoint> = first
            .saved()
            .iter()
            .map(|s| SavedCheckpoint {
                epoch: s.epoch,
                metrics: s.metrics.clone(),
            })
            .rev()
            .collect();
        let mut resumed = CheckpointPolicy::resume(&c, saved);
        for (i, &a) in accs.iter().enumerate().skip(stop) {
            let got = resumed.actions(i as u32 + 1, &m(a), i + 1 == accs.len());
            assert_eq!(got, all[i], "resumed after {stop}, epoch {}", i + 1);
        }
        assert_eq!(kept(&resumed), kept(&straight));
    }
}

#[test]
fn truncate_after_forgets_later_checkpoints() {
    let mut p = CheckpointPolicy::from_config(&cfg(3, 3, 1, MetricMode::Max));
    drive(&mut p, &[0.1, 0.2, 0.3, 0.4]);
    assert_eq!(kept(&p), vec![2, 3, 4]);
    assert_eq!(p.truncate_after(2), vec![3, 4]);
    assert_eq!(kept(&p), vec![2]);
}

// ------------------------------------------------------------------ file

fn sample(dir: &std::path::Path) -> (VarMap, runner::train::checkpoint::Checkpoint) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    vb.get_with_hints(
        (3, 4),
        "fc.weight",
        Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        },
    )
    .expect("w");
    vb.get_with_hints(3, "fc.bias", Init::Const(0.5))
        .expect("b");
    let model: HashMap<String, Tensor> = vm
        .data()
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().expect("copy")))
        .collect();
    let optim = HashMap::from([
        (
            "fc.weight.exp_avg".to_string(),
            Tensor::ones((3, 4), DType::F32, &Device::Cpu).expect("t"),
        ),
        (
            "fc.weight.step".to_string(),
            Tensor::new(&[7i64], &Device::Cpu).expect("t"),
        ),
    ]);
    let meta = CheckpointMeta {
        epoch: 3,
        run_key: "abc123".into(),
        scheduler: serde_json::json!({"kind": "step", "lr_scale": "0.5"}),
        rng: serde_json::json!({"data": [1, 2, 3]}),
        recipe: serde_json::json!({"train": {"epochs": 4}, "dir": dir.display().to_string()}),
        metrics: BTreeMap::from([
            ("val_acc".to_string(), 0.1 + 0.2),
            ("val_loss".to_string(), 1.0 / 3.0),
            ("bad".to_string(), f64::NAN),
        ]),
        extra: serde_json::json!({"rollbacks": 1}),
    };
    (
        vm,
        runner::train::checkpoint::Checkpoint {
            meta,
            model,
            optim,
            ema: Default::default(),
        },
    )
}

#[test]
fn checkpoint_round_trips_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub/epoch_3.safetensors");
    let (vm, ck) = sample(dir.path());
    write_checkpoint(&path, &ck).expect("write");
    assert!(path.exists());
    assert!(!temp_path(&path).exists());
    let back = read_checkpoint(&path).expect("read");
    let mut want_meta = ck.meta.clone();
    want_meta.metrics.remove("bad");
    assert_eq!(back.meta, want_meta);
    for (name, t) in &ck.model {
        let b = back.model[name]
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("b");
        let a = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("a");
        assert_eq!(a, b, "{name}");
    }
    assert_eq!(
        back.optim["fc.weight.step"].to_vec1::<i64>().expect("step"),
        vec![7]
    );
    // Loading into a fresh model of the same shape restores the weights.
    let vm2 = VarMap::new();
    let vb2 = VarBuilder::from_varmap(&vm2, DType::F32, &Device::Cpu);
    vb2.get_with_hints((3, 4), "fc.weight", Init::Const(0.0))
        .expect("w");
    vb2.get_with_hints(3, "fc.bias", Init::Const(0.0))
        .expect("b");
    assert_vars_ne(&vm, &vm2);
    assign_vars(&vm2, &back.model).expect("assign");
    let a = vm.data().lock().expect("l")["fc.weight"]
        .as_tensor()
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("a");
    let b = vm2.data().lock().expect("l")["fc.weight"]
        .as_tensor()
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("b");
    assert_eq!(a, b);
    // A model with another shape is refused, naming the tensor.
    let vm3 = VarMap::new();
    let vb3 = VarBuilder::from_varmap(&vm3, DType::F32, &Device::Cpu);
    vb3.get_with_hints((4, 4), "fc.weight", Init::Const(0.0))
        .expect("w");
    vb3.get_with_hints(3, "fc.bias", Init::Const(0.0))
        .expect("b");
    let err = assign_vars(&vm3, &back.model)
        .expect_err("shape")
        .to_string();
    assert!(err.contains("fc.weight"), "{err}");
}

fn assert_vars_ne(a: &VarMap, b: &VarMap) {
    let x = a.data().lock().expect("l")["fc.bias"]
        .as_tensor()
        .to_vec1::<f32>()
        .expect("x");
    let y = b.data().lock().expect("l")["fc.bias"]
        .as_tensor()
        .to_vec1::<f32>()
        .expect("y");
    assert_ne!(x, y);
}

#[test]
fn overwrite_replaces_the_file_atomically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("last.safetensors");
    let (_, mut ck) = sample(dir.path());
    write_checkpoint(&path, &ck).expect("write");
    ck.meta.epoch = 4;
    write_checkpoint(&path, &ck).expect("overwrite");
    assert_eq!(read_checkpoint(&path).expect("read").meta.epoch, 4);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["last.safetensors".to_string()]);
}

#[test]
fn a_crash_mid_write_leaves_the_old_file_and_a_removable_temp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("last.safetensors");
    let (_, ck) = sample(dir.path());
    write_checkpoint(&path, &ck).expect("write");
    // What a kill between write and rename leaves behind: a partial temp file.
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(temp_path(&path), &bytes[..bytes.len() / 3]).expect("partial");
    assert_eq!(
        read_checkpoint(&path).expect("old file intact").meta.epoch,
        3
    );
    assert_eq!(
        remove_stale_temp(dir.path()).expect("clean"),
        vec![temp_path(&path)]
    );
    assert!(!temp_path(&path).exists());
    assert!(remove_stale_temp(&dir.path().join("none"))
        .expect("missing")
        .is_empty());
}

#[test]
fn truncated_file_gives_a_clear_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ck.safetensors");
    let (_, ck) = sample(dir.path());
    write_checkpoint(&path, &ck).expect("write");
    let bytes = std::fs::read(&path).expect("read");
    for cut in [0, 5, 8, 40, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).expect("truncate");
        let err = read_checkpoint(&path).expect_err("truncated").to_string();
        assert!(err.contains("ck.safetensors"), "cut {cut}: {err}");
        assert!(err.contains("truncated or corrupt"), "cut {cut}: {err}");
    }
}

#[test]
fn flipped_bit_in_the_weights_fails_the_checksum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ck.safetensors");
    let (_, ck) = sample(dir.path());
    write_checkpoint(&path, &ck).expect("write");
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    std::fs::write(&path, &bytes).expect("write");
    let err = read_checkpoint(&path).expect_err("corrupt").to_string();
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn a_plain_safetensors_file_is_not_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weights.safetensors");
    let t = Tensor::zeros(2, DType::F32, &Device::Cpu).expect("t");
    candle_core::safetensors::save(&HashMap::from([("w".to_string(), t)]), &path).expect("save");
    let err = read_checkpoint(&path).expect_err("not ours").to_string();
    assert!(err.contains("not a runner checkpoint"), "{err}");
    let missing = dir.path().join("nope.safetensors");
    let err = read_checkpoint(&missing).expect_err("missing").to_string();
    assert!(err.contains("nope.safetensors"), "{err}");
}

#[test]
fn optimizer_state_resumes_bit_for_bit_through_a_checkpoint_file() {
    let mut rng = runner::engine::init::TensorRng::new(35);
    use candle_core::Var;
    use runner::recipe::{OptimizerConfig, OptimizerKind};
    use runner::train::optim::build;

    let dir = tempfile::tempdir().expect("tempdir");
    let dev = Device::Cpu;
    let p0 = rng.randn(0f32, 1.0, (5, 7), &dev).expect("p0");
    let b0 = rng.randn(0f32, 1.0, 7, &dev).expect("b0");
    let grads: Vec<(Tensor, Tensor)> = (0..4)
        .map(|_| {
            (
                rng.randn(0f32, 1.0, (5, 7), &dev).expect("g"),
                rng.randn(0f32, 1.0, 7, &dev).expect("g"),
            )
        })
        .collect();
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adamw] {
        let cfg = OptimizerConfig {
            kind,
            lr: Some(0.05),
            momentum: (kind == OptimizerKind::Sgd).then_some(0.9),
            weight_decay: Some(1e-3),
            no_decay_norm_bias: true,
            ..OptimizerConfig::default()
        };
        let fresh = || {
            let w = Var::from_tensor(&p0).expect("w");
            let b = Var::from_tensor(&b0).expect("b");
            let opt = build(
                &cfg,
                vec![
                    ("fc.weight".into(), w.clone()),
                    ("fc.bias".into(), b.clone()),
                ],
            )
            .expect("build");
            (w, b, opt)
        };
        let step =
            |w: &Var, b: &Var, opt: &mut Box<dyn runner::train::optim::Optimizer>, k: usize| {
                let (gw, gb) = &grads[k];
                let loss = ((w.as_tensor() * gw).and_then(|t| t.sum_all()).expect("lw")
                    + (b.as_tensor() * gb).and_then(|t| t.sum_all()).expect("lb"))
                .expect("loss");
                opt.step(&loss.backward().expect("backward"), cfg.lr())
                    .expect("step");
            };
        let (w1, b1, mut o1) = fresh();
        for k in 0..4 {
            step(&w1, &b1, &mut o1, k);
        }
        let (w2, b2, mut o2) = fresh();
        for k in 0..2 {
            step(&w2, &b2, &mut o2, k);
        }
        let path = dir.path().join(format!("{kind:?}.safetensors"));
        let ck = runner::train::checkpoint::Checkpoint {
            meta: CheckpointMeta {
                epoch: 2,
                run_key: "k".into(),
                scheduler: serde_json::Value::Null,
                rng: serde_json::Value::Null,
                recipe: serde_json::Value::Null,
                metrics: BTreeMap::new(),
                extra: serde_json::Value::Null,
            },
            model: HashMap::from([
                ("fc.weight".to_string(), w2.as_tensor().clone()),
                ("fc.bias".to_string(), b2.as_tensor().clone()),
            ]),
            optim: o2.state_tensors().expect("state"),
            ema: Default::default(),
        };
        write_checkpoint(&path, &ck).expect("write");
        let back = read_checkpoint(&path).expect("read");
        let (w3, b3, mut o3) = fresh();
        w3.set(&back.model["fc.weight"]).expect("set w");
        b3.set(&back.model["fc.bias"]).expect("set b");
        o3.load_state_tensors(&back.optim).expect("load");
        for k in 2..4 {
            step(&w3, &b3, &mut o3, k);
        }
        let v = |t: &Var| {
            t.as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("v")
        };
        assert_eq!(v(&w1), v(&w3), "{kind:?} weight");
        assert_eq!(v(&b1), v(&b3), "{kind:?} bias");
    }
}
