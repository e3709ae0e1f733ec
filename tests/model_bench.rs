//! Throughput measurements (ignored by default; run by hand):
//! `cargo test --release --test model_bench -- --ignored --nocapture`.
//! The quick test checks that the benchmark functions run on tiny shapes.

mod common;

use candle_core::Device;
use common::model_cfg;
use runner::kernels::bench::{bench_conv, bench_depthwise};
use runner::model::bench::{bench_model, bench_model_vs_candle};
use runner::recipe::ModelKind;

#[test]
fn benchmarks_run_on_tiny_shapes() {
    let mut c = model_cfg(ModelKind::Convnext, None);
    c.depths = Some(vec![1, 1]);
    c.dims = Some(vec![8, 16]);
    let r = bench_model(&c, 4, (32, 32), 2, 1, &Device::Cpu).unwrap();
    assert!(r.images_per_sec > 0.0);
    let (a, b) = bench_model_vs_candle(&c, 4, (32, 32), 2, 1).unwrap();
    assert!(a.images_per_sec > 0.0 && b.images_per_sec > 0.0);
    let d = bench_depthwise(2, 4, 8, 8, 7, 1).unwrap();
    assert!(d.speedup_forward > 0.0 && d.speedup_backward > 0.0);
}

#[test]
#[ignore]
fn measure_depthwise_kernel() {
    for (n, c, h, w) in [(64, 96, 16, 16), (64, 192, 8, 8), (64, 80, 16, 16)] {
        let d = bench_depthwise(n, c, h, w, 7, 5).unwrap();
        println!("{}", serde_json::to_string(&d).unwrap());
    }
}

#[test]
#[ignore]
fn measure_dense_conv() {
    // ResNet-18 at 64 px: stem, layer1 3x3, layer2 3x3/2, 1x1/2 shortcut; ConvNeXt stem 4x4/4
    for (n, c, h, w, o, k, s, p) in [
        (64, 3, 64, 64, 64, 7, 2, 3),
        (64, 64, 16, 16, 64, 3, 1, 1),
        (64, 64, 16, 16, 128, 3, 2, 1),
        (64, 64, 16, 16, 128, 1, 2, 0),
        (64, 3, 64, 64, 96, 4, 4, 0),
    ] {
        let r = bench_conv(n, c, h, w, o, k, s, p, 3).unwrap();
        println!("{}", serde_json::to_string(&r).unwrap());
    }
}

#[test]
#[ignore]
fn measure_models() {
    let sel = std::env::var("BENCH_MODELS").unwrap_or_default();
    let mut small = model_cfg(ModelKind::Resnet, Some("18"));
    small.small_stem = false;
    let cases = [
        (
            "convnext_tiny",
            model_cfg(ModelKind::Convnext, Some("tiny")),
        ),
        (
            "convnext_nano",
            model_cfg(ModelKind::Convnext, Some("nano")),
        ),
        ("resnet18", small),
        ("mobilenet_v2", model_cfg(ModelKind::MobilenetV2, None)),
    ];
    for (name, c) in cases {
        if !sel.is_empty() && !sel.split(',').any(|s| s == name) {
            continue;
        }
        let steps = std::env::var("BENCH_STEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3);
        let (ours, candle) = bench_model_vs_candle(&c, 1000, (64, 64), 64, steps).unwrap();
        println!("{name} ours {}", serde_json::to_string(&ours).unwrap());
        println!("{name} candle {}", serde_json::to_string(&candle).unwrap());
    }
}
