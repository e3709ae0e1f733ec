//! Scheduler lr sequences against PyTorch (tests/fixtures/reference/schedulers.json), state
//! round trips, per-iteration warm-up and the lr scale.

use runner::recipe::{PlateauMode, SchedulerConfig, SchedulerKind, ThresholdMode};
use runner::train::schedule::{build, Schedule};
use runner::train::Metrics;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference/schedulers.json"
    );
    let text = std::fs::read_to_string(path).expect("read schedulers.json");
    serde_json::from_str(&text).expect("parse schedulers.json")
}

fn f(case: &Value, key: &str) -> Option<f64> {
    case.get(key).and_then(Value::as_f64)
}
fn u(case: &Value, key: &str) -> Option<u32> {
    case.get(key).and_then(Value::as_u64).map(|v| v as u32)
}

fn config(case: &Value) -> SchedulerConfig {
    let kind = case["kind"].as_str().expect("kind");
    let mut cfg = SchedulerConfig {
        kind: match kind {
            "step" => SchedulerKind::Step,
            "multistep" => SchedulerKind::Multistep,
            "cosine" | "warmup_cosine" => SchedulerKind::Cosine,
            "plateau" => SchedulerKind::Plateau,
            other => panic!("unknown fixture kind {other}"),
        },
        step_size: u(case, "step_size"),
        gamma: f(case, "gamma"),
        milestones: case.get("milestones").map(|m| {
            m.as_array()
                .expect("milestones")
                .iter()
                .map(|v| v.as_u64().expect("milestone") as u32)
                .collect()
        }),
        t_max: u(case, "t_max"),
        eta_min: f(case, "eta_min"),
        warmup_epochs: u(case, "warmup_epochs").unwrap_or(0),
        warmup_start_factor: f(case, "warmup_start_factor"),
        factor: f(case, "factor"),
        patience: u(case, "patience"),
        threshold: f(case, "threshold"),
        cooldown: u(case, "cooldown"),
        min_lr: f(case, "min_lr"),
        ..SchedulerConfig::default()
    };
    cfg.mode = case.get("mode").map(|m| match m.as_str() {
        Some("max") => PlateauMode::Max,
        _ => PlateauMode::Min,
    });
    cfg.threshold_mode = case.get("threshold_mode").map(|m| match m.as_str() {
        Some("abs") => ThresholdMode::Abs,
        _ => ThresholdMode::Rel,
    });
    cfg
}

fn metrics_for(case: &Value, epoch: usize) -> Metrics {
    let mut m = Metrics::new();
    if let Some(v) = case.get("val_losses") {
        m.insert("val_loss".into(), v[epoch].as_f64().expect("val loss"));
    }
    m.insert("train_loss".into(), 1.0);
    m
}

fn run_case(case: &Value, sched: &mut Schedule, from: usize) -> Vec<f64> {
    let epochs = case["epochs"].as_u64().expect("epochs") as usize;
    let mut lrs = Vec::new();
    for e in from..epochs {
        lrs.push(sched.lr());
        sched.step_epoch(&metrics_for(case, e)).expect("step");
    }
    lrs
}

#[test]
fn every_fixture_case_matches_pytorch_exactly() {
    let fx = fixture();
    let base = fx["base_lr"].as_f64().expect("base_lr");
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 6);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let epochs = case["epochs"].as_u64().expect("epochs") as u32;
        let mut sched = build(&config(case), base, epochs).expect(name);
        let got = run_case(case, &mut sched, 0);
        let want: Vec<f64> = case["lrs"]
            .as_array()
            .expect("lrs")
            .iter()
            .map(|v| v.as_f64().expect("lr"))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}");
        for (e, (g, w)) in got.iter().zip(&want).enumerate() {
            // Bit for bit in f64, up to serde_json's default float parser, which may read the
            // fixture's decimal one ulp off (without its `float_roundtrip` feature).
            assert!(
                (g - w).abs() <= 2.0 * f64::EPSILON * w.abs(),
                "{name} epoch {e}: got {g:e}, PyTorch {w:e}"
            );
        }
    }
}

#[test]
fn state_round_trip_resumes_every_case_identically() {
    let fx = fixture();
    let base = fx["base_lr"].as_f64().expect("base_lr");
    for case in fx["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let epochs = case["epochs"].as_u64().expect("epochs") as u32;
        let cfg = config(case);
        let mut straight = build(&cfg, base, epochs).expect(name);
        let all = run_case(case, &mut straight, 0);
        for stop in 1..epochs as usize {
            let mut first = build(&cfg, base, epochs).expect(name);
            for e in 0..stop {
                first.step_epoch(&metrics_for(case, e)).expect("step");
            }
            let state = serde_json::to_string(&first.state()).expect("encode");
            let mut resumed = build(&cfg, base, epochs).expect(name);
            resumed
                .load_state(&serde_json::from_str(&state).expect("decode"))
                .expect("load");
            let rest = run_case(case, &mut resumed, stop);
            assert_eq!(&all[stop..], &rest[..], "{name} resumed at {stop}");
        }
    }
}

#[test]
fn lr_scale_multiplies_and_survives_state() {
    let cfg = SchedulerConfig {
        kind: SchedulerKind::Step,
        step_size: Some(2),
        ..SchedulerConfig::default()
    };
    let mut s = build(&cfg, 0.1, 10).expect("build");
    s.scale_lr(0.5);
    assert_eq!(s.lr(), 0.05);
    s.step_epoch(&Metrics::new()).expect("step");
    s.step_epoch(&Metrics::new()).expect("step");
    assert!((s.lr() - 0.005).abs() < 1e-15);
    let mut t = build(&cfg, 0.1, 10).expect("build");
    t.load_state(&s.state()).expect("load");
    assert_eq!(t.lr_scale(), 0.5);
    assert_eq!(t.lr(), s.lr());
}

#[test]
fn per_iteration_warmup_rises_linearly_and_meets_the_epoch_values() {
    let cfg = SchedulerConfig {
        kind: SchedulerKind::None,
        warmup_epochs: 2,
        warmup_start_factor: Some(0.2),
        warmup_per_iteration: true,
        ..SchedulerConfig::default()
    };
    let mut s = build(&cfg, 1.0, 5).expect("build");
    assert!((s.lr_at(0, 4) - 0.2).abs() < 1e-12);
    assert!((s.lr_at(2, 4) - 0.4).abs() < 1e-12);
    s.step_epoch(&Metrics::new()).expect("step");
    assert!((s.lr() - 0.6).abs() < 1e-12);
    assert!((s.lr_at(2, 4) - 0.8).abs() < 1e-12);
    s.step_epoch(&Metrics::new()).expect("step");
    assert_eq!(s.lr(), 1.0);
    assert_eq!(s.lr_at(3, 4), 1.0);
    // Without per-iteration warm-up the lr is flat within an epoch.
    let flat = SchedulerConfig {
        warmup_per_iteration: false,
        ..cfg
    };
    let s = build(&flat, 1.0, 5).expect("build");
    assert_eq!(s.lr_at(3, 4), s.lr());
}

#[test]
fn plateau_names_a_missing_metric() {
    let cfg = SchedulerConfig {
        kind: SchedulerKind::Plateau,
        monitor: Some("val_acc".into()),
        ..SchedulerConfig::default()
    };
    let mut s = build(&cfg, 0.1, 5).expect("build");
    let mut m = Metrics::new();
    m.insert("val_loss".into(), 1.0);
    let err = s.step_epoch(&m).expect_err("missing metric").to_string();
    assert!(err.contains("val_acc") && err.contains("val_loss"), "{err}");
}

#[test]
fn bad_configs_name_their_key() {
    let cases = [
        (
            SchedulerConfig {
                kind: SchedulerKind::Step,
                ..SchedulerConfig::default()
            },
            "scheduler.step_size",
        ),
        (
            SchedulerConfig {
                kind: SchedulerKind::Multistep,
                milestones: Some(vec![5, 3]),
                ..SchedulerConfig::default()
            },
            "scheduler.milestones",
        ),
        (
            SchedulerConfig {
                kind: SchedulerKind::Cosine,
                warmup_epochs: 5,
                ..SchedulerConfig::default()
            },
            "scheduler.t_max",
        ),
        (
            SchedulerConfig {
                kind: SchedulerKind::Plateau,
                factor: Some(1.5),
                ..SchedulerConfig::default()
            },
            "scheduler.factor",
        ),
    ];
    for (cfg, key) in cases {
        let err = build(&cfg, 0.1, 5).expect_err(key).to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn loading_another_kind_is_refused() {
    let step = build(
        &SchedulerConfig {
            kind: SchedulerKind::Step,
            step_size: Some(2),
            ..SchedulerConfig::default()
        },
        0.1,
        5,
    )
    .expect("step");
    let mut cos = build(
        &SchedulerConfig {
            kind: SchedulerKind::Cosine,
            ..SchedulerConfig::default()
        },
        0.1,
        5,
    )
    .expect("cosine");
    let err = cos.load_state(&step.state()).expect_err("kind").to_string();
    assert!(err.contains("step") && err.contains("cosine"), "{err}");
}
