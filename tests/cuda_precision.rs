//! CUDA only (`cargo test --release --features cuda --test cuda_precision`; compiled to nothing
//! without the feature; each test skips with a one-line message where no GPU opens, as in CI):
//! every model family on the GPU, in f32, bf16 and f16, against the same seeded model in f32
//! on the CPU: logits, and an f32 gradient for every master weight that points where the
//! CPU's does. Then a few bf16 / f16 SGD steps on a fixed batch lower the loss. On a GPU
//! machine without Rust, `runner selftest` runs the same comparisons from the binary.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use common::cosine;
use runner::engine::init::SeededVarMap;
use runner::model::{build, is_buffer, FaceModel, ForwardCtx};
use runner::recipe::{ModelConfig, Precision};
use runner::train::loss::cross_entropy;
use runner::train::precision::{MixedPrecision, StepVerdict};

fn configs() -> Vec<(&'static str, ModelConfig)> {
    common::model_families()
}

/// The GPU, or `None` after a one-line message where none opens.
fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            let e = e.to_string();
            eprintln!(
                "skipped: no CUDA GPU here ({})",
                e.lines().next().unwrap_or("")
            );
            None
        }
    }
}

fn norm(t: &Tensor) -> f64 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt()
}

struct Built {
    varmap: VarMap,
    model: Box<dyn FaceModel>,
}

fn built(c: &ModelConfig, dev: &Device) -> Built {
    let seeded = SeededVarMap::new(VarMap::new(), 11);
    let varmap = seeded.varmap.clone();
    let model = build(c, 7, seeded.var_builder(dev)).unwrap();
    Built { varmap, model }
}

fn batch(dev: &Device) -> (Tensor, Tensor) {
    let xs: Vec<f32> = (0..16 * 3 * 64 * 64)
        .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let x = Tensor::from_vec(xs, (16, 3, 64, 64), dev).unwrap();
    let y = Tensor::new(&[1u32, 3, 6, 0, 2, 5, 4, 1, 0, 6, 3, 2, 5, 4, 1, 0], dev).unwrap();
    (x, y)
}

#[test]
fn every_family_on_cuda_matches_the_cpu_in_f32_bf16_and_f16() {
    let Some(gpu) = gpu() else { return };
    // Eval mode checks every parameter's gradient; train mode (batch statistics, whose
    // BatchNorm weight gradients are sums that cancel to noise in bf16) the whole gradient.
    for ((what, c), train) in configs()
        .into_iter()
        .flat_map(|c| [(c.clone(), false), (c, true)])
    {
        let ctx = || {
            if train {
                ForwardCtx::train(5)
            } else {
                ForwardCtx::eval()
            }
        };
        let cpu = built(&c, &Device::Cpu);
        let (x, y) = batch(&Device::Cpu);
        let logits_ref = cpu.model.forward(&x, &mut ctx()).unwrap();
        let g_ref = cross_entropy(&logits_ref, &y, 0.1)
            .unwrap()
            .backward()
            .unwrap();
        for p in [Precision::F32, Precision::Bf16, Precision::F16] {
            let m = built(&c, &gpu);
            let (xg, yg) = batch(&gpu);
            let mut mp = MixedPrecision::new(p);
            let logits = mp
                .output(
                    &m.model
                        .forward(&mp.input(&xg).unwrap(), &mut ctx())
                        .unwrap(),
                )
                .unwrap();
            let cos = cosine(&logits, &logits_ref);
            let loss = cross_entropy(&logits, &yg, 0.1).unwrap();
            let vars = m.varmap.all_vars();
            let mut tries = 0;
            let grads = loop {
                let mut g = mp.backward(&loss).unwrap();
                if mp.after_backward(&mut g, &vars, 1.0).unwrap() == StepVerdict::Apply {
                    break g;
                }
                tries += 1;
                assert!(tries < 8, "{what} {p:?}: overflow at every scale");
            };
            // in 16 bits and eval mode, the CPU's own step in the same precision (which sums in
            // f32 everywhere) is each parameter's yardstick
            let own = (p != Precision::F32 && !train).then(|| {
                let mc = built(&c, &Device::Cpu);
                let mut mpc = MixedPrecision::new(p);
                let lg = mpc
                    .output(
                        &mc.model
                            .forward(&mpc.input(&x).unwrap(), &mut ctx())
                            .unwrap(),
                    )
                    .unwrap();
                let l = cross_entropy(&lg, &y, 0.1).unwrap();
                let vars = mc.varmap.all_vars();
                let mut tries = 0;
                let g = loop {
                    let mut g = mpc.backward(&l).unwrap();
                    if mpc.after_backward(&mut g, &vars, 1.0).unwrap() == StepVerdict::Apply {
                        break g;
                    }
                    tries += 1;
                    assert!(
                        tries < 8,
                        "{what} {p:?} on the CPU: overflow at every scale"
                    );
                };
                (mc, g)
            });
            let data = m.varmap.data().lock().unwrap();
            let data_ref = cpu.varmap.data().lock().unwrap();
            let (mut worst, mut all, mut all_ref) = (1f64, Vec::new(), Vec::new());
            for (name, var) in data.iter() {
                if is_buffer(name) {
                    continue;
                }
                let g = grads
                    .get(var)
                    .unwrap_or_else(|| panic!("{what} {p:?}: no gradient for {name}"));
                assert_eq!(g.dtype(), DType::F32, "{what} {p:?}: {name}");
                let gr = g_ref.get(&data_ref[name]).unwrap();
                let (n, nr) = (norm(g), norm(gr));
                assert!(n.is_finite(), "{what} {p:?}: {name} not finite");
                // per parameter: f32 exactly; f16 in eval mode. bf16 keeps 8 bits, and the gradients
                // of norm weights are sums that cancel, so only the whole gradient is compared.
                let per_param = p == Precision::F32 || (p == Precision::F16 && !train);
                if nr > 1e-5 && per_param {
                    let cs = cosine(g, gr);
                    let tol = if p == Precision::F32 { 0.999 } else { 0.5 };
                    assert!(cs > tol, "{what} {p:?}: gradient of {name}: cosine {cs}");
                    let ntol = if p == Precision::F32 { 1e-3 } else { 0.5 };
                    assert!(
                        (n - nr).abs() < ntol * nr,
                        "{what} {p:?}: norm of {name}: {n} vs {nr}"
                    );
                    worst = worst.min(cs);
                }
                if let (Some((mc, gc)), true) = (&own, nr > 1e-5) {
                    let dc = mc.varmap.data().lock().unwrap();
                    let own_cos = cosine(gc.get(&dc[name]).unwrap(), gr);
                    let dev_cos = cosine(g, gr);
                    // a bias or layer-scale gradient summed in 16 bits falls well below
                    assert!(
                        dev_cos >= own_cos.min(0.999) - 0.02,
                        "{what} {p:?}: gradient of {name}: cosine {dev_cos} on CUDA, {own_cos} on the CPU in the same precision"
                    );
                }
                all.push(g.to_device(&Device::Cpu).unwrap().flatten_all().unwrap());
                all_ref.push(gr.flatten_all().unwrap());
            }
            let cos_all = cosine(
                &Tensor::cat(&all, 0).unwrap(),
                &Tensor::cat(&all_ref, 0).unwrap(),
            );
            eprintln!("{what} {p:?} train={train} on CUDA: logits cosine {cos:.5}, all-gradient cosine {cos_all:.5}, worst parameter cosine {worst:.4}");
            assert!(cos > 0.99, "{what} {p:?}: logits cosine {cos}");
            // bf16's error is ~8x f16's (8 against 11 mantissa bits): seen on the CPU's bf16
            // path, MobileNetV2's whole-gradient cosine is 0.91 where f16's is 0.999
            let tol_all = if p == Precision::Bf16 { 0.85 } else { 0.95 };
            assert!(
                cos_all > tol_all,
                "{what} {p:?}: all-gradient cosine {cos_all}"
            );
        }
    }
}

#[test]
fn a_few_low_precision_sgd_steps_on_cuda_lower_the_loss() {
    let Some(gpu) = gpu() else { return };
    let (_, c) = configs().remove(0);
    for p in [Precision::Bf16, Precision::F16] {
        let m = built(&c, &gpu);
        let (x, y) = batch(&gpu);
        let mut mp = MixedPrecision::new(p);
        let vars = m.varmap.all_vars();
        let mut losses = Vec::new();
        for step in 0..30 {
            let logits = mp
                .output(
                    &m.model
                        .forward(&mp.input(&x).unwrap(), &mut ForwardCtx::train(step))
                        .unwrap(),
                )
                .unwrap();
            let loss = cross_entropy(&logits, &y, 0.0).unwrap();
            let lv = loss
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            losses.push(lv);
            let mut g = mp.backward(&loss).unwrap();
            if mp.after_backward(&mut g, &vars, lv).unwrap() == StepVerdict::Apply {
                for v in &vars {
                    if let Some(gv) = g.get(v) {
                        v.set(&(v.as_tensor() - (gv * 0.02).unwrap()).unwrap())
                            .unwrap();
                    }
                }
            }
        }
        eprintln!("{p:?} losses on CUDA: {losses:.3?}");
        assert!(losses.iter().all(|l| l.is_finite()), "{p:?}: {losses:?}");
        let last: f64 = losses[25..].iter().sum::<f64>() / 5.0;
        assert!(last < 0.8 * losses[0], "{p:?}: {losses:?}");
    }
}
