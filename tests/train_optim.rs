//! Optimizer updates against PyTorch (tests/fixtures/reference/optimizers.json, and
//! tests/fixtures/optim_extra.json for SGD's dampening and AdamW's betas / eps; every step),
//! state save / load for exact resume, parameter grouping, gradient clipping.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use runner::recipe::{OptimizerConfig, OptimizerKind};
use runner::train::optim::{
    build, clip_grad_norm, grad_norm, grads_finite, param_groups, AdamW, AdamWParams, Optimizer,
    Sgd, SgdParams,
};
use serde_json::Value;

fn fixture() -> Value {
    read_json("tests/fixtures/reference/optimizers.json")
}

fn read_json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect(path)).expect("parse")
}

fn vec_f32(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn config(case: &Value) -> OptimizerConfig {
    let f = |k: &str| case.get(k).and_then(Value::as_f64);
    match case["kind"].as_str().expect("kind") {
        "sgd" => OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: f("lr"),
            momentum: f("momentum"),
            dampening: f("dampening"),
            nesterov: case["nesterov"].as_bool(),
            weight_decay: f("weight_decay"),
            ..OptimizerConfig::default()
        },
        "adamw" => OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: f("lr"),
            weight_decay: f("weight_decay"),
            betas: Some([f("beta1").expect("beta1"), f("beta2").expect("beta2")]),
            eps: f("eps"),
            ..OptimizerConfig::default()
        },
        k => panic!("unknown kind {k}"),
    }
}

/// The recipe's optimizer with the fused CPU kernels on or off.
fn build_with(cfg: &OptimizerConfig, vars: Vec<(String, Var)>, fused: bool) -> Box<dyn Optimizer> {
    let groups = param_groups(vars, cfg.weight_decay(), cfg.no_decay_norm_bias);
    match cfg.kind {
        OptimizerKind::Sgd => Box::new(
            Sgd::new(
                groups,
                SgdParams {
                    momentum: cfg.momentum(),
                    dampening: cfg.dampening(),
                    nesterov: cfg.nesterov(),
                },
            )
            .expect("sgd")
            .with_fused(fused),
        ),
        OptimizerKind::Adamw => {
            let [beta1, beta2] = cfg.betas();
            Box::new(
                AdamW::new(
                    groups,
                    AdamWParams {
                        beta1,
                        beta2,
                        eps: cfg.eps(),
                    },
                )
                .expect("adamw")
                .with_fused(fused),
            )
        }
    }
}

/// A GradStore holding `grad` for `var` (built through a real backward pass).
fn grads_for(var: &Var, grad: &[f32]) -> GradStore {
    let g = Tensor::new(grad, &Device::Cpu).expect("grad");
    let loss = (var.as_tensor() * &g)
        .and_then(|t| t.sum_all())
        .expect("loss");
    loss.backward().expect("backward")
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1e-2),
            "{what}[{i}]: {g} vs PyTorch {w}"
        );
    }
}

#[test]
fn every_case_matches_pytorch_after_every_step() {
    assert_cases_match(&fixture(), 4);
}

#[test]
fn dampening_and_adamw_betas_match_pytorch_after_every_step() {
    let fx = read_json("tests/fixtures/optim_extra.json");
    assert_cases_match(&fx, 3);
    let dampened = fx["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["dampening"].as_f64().is_some_and(|d| d > 0.0))
        .count();
    assert_eq!(dampened, 2);
}

fn assert_cases_match(fx: &Value, expected_cases: usize) {
    let cases = fx["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), expected_cases);
    for fused in [true, false] {
        for case in cases {
            let name = format!("{} (fused {fused})", case["name"].as_str().expect("name"));
            let cfg = config(case);
            let p0 = Tensor::new(vec_f32(&case["p0"]).as_slice(), &Device::Cpu).expect("p0");
            let var = Var::from_tensor(&p0).expect("var");
            // rank 1 would get no decay with no_decay_norm_bias; the fixture decays it.
            let mut opt = build_with(&cfg, vec![("w".into(), var.clone())], fused);
            let grads = case["grads"].as_array().expect("grads");
            let after = case["params_after_each_step"].as_array().expect("after");
            for (k, (g, want)) in grads.iter().zip(after).enumerate() {
                let store = grads_for(&var, &vec_f32(g));
                opt.step(&store, cfg.lr()).expect("step");
                let got = var.as_tensor().to_vec1::<f32>().expect("params");
                assert_close(&got, &vec_f32(want), &format!("{name} step {}", k + 1));
            }
        }
    }
}

#[test]
fn fused_and_tensor_paths_agree_bit_for_bit_and_state_is_a_snapshot() {
    let mut rng = runner::engine::init::TensorRng::new(37);
    let dev = Device::Cpu;
    let p0 = rng.randn(0f32, 1.0, (300, 257), &dev).expect("p0");
    let grads: Vec<Tensor> = (0..4)
        .map(|_| rng.randn(0f32, 1.0, (300, 257), &dev).expect("g"))
        .collect();
    let cfgs = [
        OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: Some(0.1),
            momentum: Some(0.9),
            dampening: Some(0.1),
            weight_decay: Some(5e-4),
            ..OptimizerConfig::default()
        },
        OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: Some(0.1),
            momentum: Some(0.9),
            nesterov: Some(true),
            weight_decay: Some(1e-4),
            ..OptimizerConfig::default()
        },
        OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: Some(0.1),
            weight_decay: Some(1e-2),
            ..OptimizerConfig::default()
        },
        OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: Some(1e-3),
            ..OptimizerConfig::default()
        },
    ];
    for cfg in cfgs {
        let mut finals = Vec::new();
        for fused in [true, false] {
            let var = Var::from_tensor(&p0).expect("var");
            let mut opt = build_with(&cfg, vec![("w".into(), var.clone())], fused);
            let mut snapshot = None;
            for (k, g) in grads.iter().enumerate() {
                let store = (var.as_tensor() * g)
                    .and_then(|t| t.sum_all())
                    .and_then(|l| l.backward())
                    .expect("backward");
                opt.step(&store, cfg.lr()).expect("step");
                if k == 1 {
                    let st = opt.state_tensors().expect("state");
                    let copy: Vec<(String, Vec<f32>)> = st
                        .iter()
                        .filter(|(k, _)| !k.ends_with(".step"))
                        .map(|(k, t)| {
                            (
                                k.clone(),
                                t.flatten_all().and_then(|t| t.to_vec1()).expect("v"),
                            )
                        })
                        .collect();
                    snapshot = Some((st, copy));
                }
            }
            // Later in-place steps must not have changed the saved state.
            let (st, copy) = snapshot.expect("snapshot");
            for (k, v) in copy {
                let now: Vec<f32> = st[&k].flatten_all().and_then(|t| t.to_vec1()).expect("now");
                assert_eq!(now, v, "{:?} {k} changed after being saved", cfg.kind);
            }
            finals.push(
                var.as_tensor()
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .expect("p"),
            );
        }
        assert_eq!(finals[0], finals[1], "{:?}: fused vs tensor ops", cfg.kind);
    }
}

#[test]
fn state_round_trip_continues_identically() {
    let fx = fixture();
    for case in fx["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let cfg = config(case);
        let grads: Vec<Vec<f32>> = case["grads"]
            .as_array()
            .expect("grads")
            .iter()
            .map(vec_f32)
            .collect();
        let p0 = Tensor::new(vec_f32(&case["p0"]).as_slice(), &Device::Cpu).expect("p0");

        let straight = Var::from_tensor(&p0).expect("var");
        let mut a = build(&cfg, vec![("w".into(), straight.clone())]).expect(name);
        for g in &grads {
            a.step(&grads_for(&straight, g), cfg.lr()).expect("step");
        }

        let first = Var::from_tensor(&p0).expect("var");
        let mut b = build(&cfg, vec![("w".into(), first.clone())]).expect(name);
        for g in &grads[..2] {
            b.step(&grads_for(&first, g), cfg.lr()).expect("step");
        }
        let state = b.state_tensors().expect("state");
        if cfg.momentum() != 0.0 || cfg.kind == OptimizerKind::Adamw {
            assert!(!state.is_empty(), "{name}: state must not be empty");
        }
        let second = Var::from_tensor(first.as_tensor()).expect("var");
        let mut c = build(&cfg, vec![("w".into(), second.clone())]).expect(name);
        c.load_state_tensors(&state).expect("load");
        for g in &grads[2..] {
            c.step(&grads_for(&second, g), cfg.lr()).expect("step");
        }
        assert_eq!(
            straight.as_tensor().to_vec1::<f32>().expect("a"),
            second.as_tensor().to_vec1::<f32>().expect("c"),
            "{name}: resumed optimizer must match bit for bit"
        );
    }
}

#[test]
fn bad_state_is_refused_with_the_key() {
    let cfg = OptimizerConfig {
        kind: OptimizerKind::Sgd,
        momentum: Some(0.9),
        ..OptimizerConfig::default()
    };
    let var = Var::zeros(3, DType::F32, &Device::Cpu).expect("var");
    let mut opt = build(&cfg, vec![("w".into(), var)]).expect("build");
    let mut state = std::collections::HashMap::new();
    state.insert(
        "w.momentum_buffer".to_string(),
        Tensor::zeros(4, DType::F32, &Device::Cpu).expect("t"),
    );
    let err = opt
        .load_state_tensors(&state)
        .expect_err("shape")
        .to_string();
    assert!(err.contains("w.momentum_buffer"), "{err}");
    state.clear();
    state.insert(
        "other.momentum_buffer".to_string(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).expect("t"),
    );
    let err = opt
        .load_state_tensors(&state)
        .expect_err("unknown")
        .to_string();
    assert!(err.contains("other.momentum_buffer"), "{err}");
}

#[test]
fn buffers_are_skipped_and_norms_biases_get_no_decay() {
    let dev = Device::Cpu;
    let v = |shape: &[usize]| Var::zeros(shape, DType::F32, &dev).expect("var");
    let vars = vec![
        ("conv.weight".to_string(), v(&[4, 3, 3, 3])),
        ("conv.bias".to_string(), v(&[4])),
        ("bn.weight".to_string(), v(&[4])),
        ("bn.running_mean".to_string(), v(&[4])),
        ("bn.running_var".to_string(), v(&[4])),
        ("bn.num_batches_tracked".to_string(), v(&[])),
        ("stages.0.gamma".to_string(), v(&[4])),
        ("fc.weight".to_string(), v(&[2, 4])),
    ];
    let groups = param_groups(vars.clone(), 0.05, true);
    let names: Vec<(&str, f64)> = groups
        .iter()
        .map(|p| (p.name.as_str(), p.weight_decay))
        .collect();
    assert_eq!(
        names,
        vec![
            ("bn.weight", 0.0),
            ("conv.bias", 0.0),
            ("conv.weight", 0.05),
            ("fc.weight", 0.05),
            ("stages.0.gamma", 0.0),
        ]
    );
    let all = param_groups(vars.clone(), 0.05, false);
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|p| p.weight_decay == 0.05));

    // A buffer is never touched by a step.
    let cfg = OptimizerConfig {
        kind: OptimizerKind::Adamw,
        lr: Some(0.1),
        no_decay_norm_bias: true,
        ..OptimizerConfig::default()
    };
    let mut opt = build(&cfg, vars.clone()).expect("build");
    assert_eq!(opt.params().len(), 5);
    let loss = vars
        .iter()
        .map(|(_, v)| {
            (v.as_tensor() + 1.0)
                .and_then(|t| t.sum_all())
                .expect("sum")
        })
        .reduce(|a, b| (a + b).expect("add"))
        .expect("loss");
    let grads = loss.backward().expect("backward");
    opt.step(&grads, 0.1).expect("step");
    let rm = vars[3].1.as_tensor().to_vec1::<f32>().expect("rm");
    assert_eq!(rm, vec![0.0; 4]);
    let w = vars[0]
        .1
        .as_tensor()
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("w");
    assert!(w.iter().all(|x| *x != 0.0));
}

#[test]
fn clipping_follows_pytorch() {
    let dev = Device::Cpu;
    let a = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &dev).expect("a")).expect("a");
    let b = Var::from_tensor(&Tensor::new(&[[2f32]], &dev).expect("b")).expect("b");
    let make = || {
        let ga = Tensor::new(&[3f32, 0.0], &dev).expect("ga");
        let gb = Tensor::new(&[[4f32]], &dev).expect("gb");
        let l = ((a.as_tensor() * &ga).and_then(|t| t.sum_all()).expect("la")
            + (b.as_tensor() * &gb).and_then(|t| t.sum_all()).expect("lb"))
        .expect("loss");
        l.backward().expect("backward")
    };
    let vars = vec![a.clone(), b.clone()];
    let mut grads = make();
    assert!((grad_norm(&grads, &vars).expect("norm") - 5.0).abs() < 1e-6);
    let total = clip_grad_norm(&mut grads, &vars, 1.0).expect("clip");
    assert!((total - 5.0).abs() < 1e-6);
    let coef = 1.0 / (5.0 + 1e-6);
    let ga = grads
        .get(a.as_tensor())
        .expect("ga")
        .to_vec1::<f32>()
        .expect("ga");
    assert!((ga[0] as f64 - 3.0 * coef).abs() < 1e-6);
    assert!((grad_norm(&grads, &vars).expect("norm") - 1.0).abs() < 1e-5);
    // Under the limit: untouched.
    let mut grads = make();
    clip_grad_norm(&mut grads, &vars, 10.0).expect("clip");
    let ga = grads
        .get(a.as_tensor())
        .expect("ga")
        .to_vec1::<f32>()
        .expect("ga");
    assert_eq!(ga, vec![3.0, 0.0]);
    assert!(grads_finite(&grads, &vars).expect("finite"));
}

#[test]
fn non_finite_gradients_are_detected() {
    let dev = Device::Cpu;
    let a = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &dev).expect("a")).expect("a");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let g = Tensor::new(&[0.5f32, bad], &dev).expect("g");
        let grads = (a.as_tensor() * &g)
            .and_then(|t| t.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        assert!(!grads_finite(&grads, std::slice::from_ref(&a)).expect("check"));
        let mut grads = grads;
        let n = clip_grad_norm(&mut grads, std::slice::from_ref(&a), 1.0).expect("clip");
        assert!(!n.is_finite());
    }
    // Huge but finite gradients are finite (no overflow in the check).
    let g = Tensor::new(&[3e38f32, 3e38], &dev).expect("g");
    let grads = (a.as_tensor() * &g)
        .and_then(|t| t.sum_all())
        .and_then(|l| l.backward())
        .expect("backward");
    assert!(grads_finite(&grads, std::slice::from_ref(&a)).expect("check"));
}

#[test]
fn clipping_on_the_device_gives_the_host_clippings_bits() {
    use runner::train::optim::{clip_on_device, clip_with_norm, grad_probes, grad_summary};
    let dev = Device::Cpu;
    let a = Var::from_tensor(&Tensor::new(&[1f32, 2.0, 3.0], &dev).expect("a")).expect("a");
    let b = Var::from_tensor(&Tensor::new(&[[2f32]], &dev).expect("b")).expect("b");
    let vars = vec![a.clone(), b.clone()];
    let grads_of = |ga: [f32; 3], gb: f32| {
        let ga = Tensor::new(&ga, &dev).expect("ga");
        let gb = Tensor::new(&[[gb]], &dev).expect("gb");
        ((a.as_tensor() * &ga).and_then(|t| t.sum_all()).expect("la")
            + (b.as_tensor() * &gb).and_then(|t| t.sum_all()).expect("lb"))
        .expect("loss")
        .backward()
        .expect("backward")
    };
    let values = |g: &candle_core::backprop::GradStore| -> Vec<Vec<f32>> {
        vars.iter()
            .map(|v| {
                g.get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect()
    };
    // over the limit (clipped), under it (untouched), and non-finite (untouched)
    for (ga, gb, max) in [
        ([3.1f32, -0.7, 2.9], 4.3f32, 1.0),
        ([3.1, -0.7, 2.9], 4.3, 100.0),
        ([f32::INFINITY, 1.0, 0.0], 1.0, 1.0),
        ([f32::NAN, 1.0, 0.0], 1.0, 1.0),
    ] {
        let mut host = grads_of(ga, gb);
        let check = grad_probes(&host, &vars)
            .expect("check")
            .expect("gradients");
        let read = check
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let norm = grad_summary(&read, true).1.expect("norm");
        clip_with_norm(&mut host, &vars, max, norm).expect("clip");
        let mut device = grads_of(ga, gb);
        clip_on_device(&mut device, &vars, max, &check).expect("clip on device");
        let bits =
            |v: Vec<Vec<f32>>| -> Vec<u32> { v.concat().iter().map(|x| x.to_bits()).collect() };
        assert_eq!(
            bits(values(&device)),
            bits(values(&host)),
            "{ga:?} {gb} max {max}"
        );
    }
}
