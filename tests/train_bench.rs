//! Timings of the training components at ResNet-18 scale (11.7M parameters); run by hand:
//! `cargo test --release --test train_bench -- --ignored --nocapture`.

use candle_core::{DType, Device, Tensor, Var};
use runner::recipe::{OptimizerConfig, OptimizerKind};
use runner::train::checkpoint::{read_checkpoint, write_checkpoint, Checkpoint, CheckpointMeta};
use runner::train::optim::{build, clip_grad_norm, grads_finite};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

fn params() -> Vec<(String, Var)> {
    // 12 tensors of ~1M each (~11.7M in all, ResNet-18's count).
    (0..12)
        .map(|i| {
            let t = Tensor::randn(0f32, 0.1, (1024, 952), &Device::Cpu).expect("randn");
            (
                format!("layer{i}.weight"),
                Var::from_tensor(&t).expect("var"),
            )
        })
        .collect()
}

#[test]
#[ignore]
fn bench_components() {
    let vars = params();
    let plain: Vec<Var> = vars.iter().map(|(_, v)| v.clone()).collect();
    let n: usize = plain.iter().map(|v| v.elem_count()).sum();
    let loss = plain
        .iter()
        .map(|v| v.as_tensor().sqr().and_then(|t| t.sum_all()).expect("sq"))
        .reduce(|a, b| (a + b).expect("add"))
        .expect("loss");
    let mut grads = loss.backward().expect("backward");
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adamw] {
        let cfg = OptimizerConfig {
            kind,
            momentum: Some(0.9),
            weight_decay: Some(5e-4),
            ..OptimizerConfig::default()
        };
        let cfg = if kind == OptimizerKind::Adamw {
            OptimizerConfig {
                momentum: None,
                ..cfg
            }
        } else {
            cfg
        };
        let mut opt = build(&cfg, vars.clone()).expect("build");
        opt.step(&grads, 0.01).expect("warm");
        let t = Instant::now();
        for _ in 0..5 {
            opt.step(&grads, 0.01).expect("step");
        }
        println!(
            "{kind:?} step, {n} params: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3 / 5.0
        );
        if kind == OptimizerKind::Adamw {
            let dir = tempfile::tempdir().expect("dir");
            let path = dir.path().join("ck.safetensors");
            let ck = Checkpoint {
                meta: CheckpointMeta {
                    epoch: 1,
                    run_key: "k".into(),
                    scheduler: serde_json::Value::Null,
                    rng: serde_json::Value::Null,
                    recipe: serde_json::Value::Null,
                    metrics: BTreeMap::new(),
                    extra: serde_json::Value::Null,
                },
                model: vars
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                    .collect::<HashMap<_, _>>(),
                optim: opt.state_tensors().expect("state"),
                ema: Default::default(),
            };
            let t = Instant::now();
            write_checkpoint(&path, &ck).expect("write");
            let w = t.elapsed().as_secs_f64();
            let size = std::fs::metadata(&path).expect("meta").len();
            let t = Instant::now();
            read_checkpoint(&path).expect("read");
            println!(
                "checkpoint ({:.0} MB, model + AdamW state): write {:.0} ms, read+verify {:.0} ms",
                size as f64 / 1e6,
                w * 1e3,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    let t = Instant::now();
    let total = clip_grad_norm(&mut grads, &plain, 1.0).expect("clip");
    println!(
        "clip_grad_norm: {:.1} ms (norm {total:.1})",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    assert!(grads_finite(&grads, &plain).expect("finite"));
    println!("grads_finite: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let _ = DType::F32;
}
