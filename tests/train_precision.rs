//! Mixed precision through the real training engine. bf16 / f16 are meant for CUDA (the
//! recipe validation refuses them on the CPU, where they only add casts); the engine itself
//! runs them on any device, so these tests train a tiny ConvNeXt on the CPU through
//! `engine::execute` with the precision set after validation.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::Env;
use runner::engine::progress::Reporter;
use runner::engine::{execute, RunOutcome, RunRequest, StartFrom};
use runner::recipe::Precision;
use runner::store::{NewRun, Store};
use runner::train::checkpoint::read_checkpoint;

fn train(env: &Env, precision: Precision) -> (Store, i64, RunOutcome) {
    train_with(env, precision, |_| {})
}

fn train_with(
    env: &Env,
    precision: Precision,
    edit: impl FnOnce(&mut runner::recipe::Recipe),
) -> (Store, i64, RunOutcome) {
    let path = env.recipe("mp", "");
    let (_, mut recipe) = runner::recipe::load(&path, &[]).unwrap();
    recipe.train.epochs = 2;
    recipe.train.precision = precision;
    edit(&mut recipe);
    let mut store = Store::open(&env.db()).unwrap();
    let key = format!("mp-{precision:?}");
    let run_id = store
        .create_claimed(&NewRun {
            key: key.clone(),
            recipe: path.display().to_string(),
            config: serde_json::to_value(&recipe).unwrap(),
            overrides: serde_json::json!({}),
            data_fingerprint: String::new(),
            sweep_id: None,
            parent_id: None,
            resumed_from: None,
        })
        .unwrap();
    let reporter = Reporter::silent();
    let dir = store.run_dir(run_id).unwrap();
    let outcome = execute(
        &mut store,
        RunRequest {
            run_id,
            key,
            recipe,
            start: StartFrom::Scratch,
            dir,
            reporter: &reporter,
            stop: Arc::new(AtomicBool::new(false)),
            until_epoch: None,
            early_stop: None,
        },
    )
    .unwrap();
    (store, run_id, outcome)
}

#[test]
fn bf16_and_f16_runs_train_and_record_finite_metrics() {
    let env = Env::new();
    let (store, id32, out) = train(&env, Precision::F32);
    assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
    let e32 = store.epochs(id32).unwrap();
    drop(store);
    for p in [Precision::Bf16, Precision::F16] {
        let (store, id, out) = train(&env, p);
        assert!(matches!(out, RunOutcome::Done(_)), "{p:?}: {out:?}");
        let epochs = store.epochs(id).unwrap();
        assert_eq!(epochs.len(), 2, "{p:?}");
        for (e, f) in epochs.iter().zip(&e32) {
            assert!(
                e.train_loss.is_finite() && e.val_loss.unwrap().is_finite(),
                "{p:?}: {e:?}"
            );
            // same data, same seed, same init: the low-precision run follows the f32 one
            assert!(
                (e.train_loss - f.train_loss).abs() < 0.1 * f.train_loss,
                "{p:?} epoch {}: train loss {} against f32's {}",
                e.epoch,
                e.train_loss,
                f.train_loss
            );
        }
        // the checkpoint keeps f32 master weights, and f16's loss scale for an exact resume
        let ck = store
            .checkpoints(id)
            .unwrap()
            .into_iter()
            .find(|c| c.kept)
            .expect("a kept checkpoint");
        let ck = read_checkpoint(std::path::Path::new(&ck.path)).unwrap();
        assert!(ck
            .model
            .values()
            .all(|t| t.dtype() == candle_core::DType::F32));
        let scaler = ck.meta.extra.get("grad_scaler");
        assert_eq!(scaler.is_some(), p == Precision::F16, "{p:?}: {scaler:?}");
        if let Some(s) = scaler {
            let scale = s["scale"].as_f64().unwrap();
            assert!(scale > 0.0 && scale <= 65536.0, "{s}");
        }
    }
}

#[test]
fn a_training_step_makes_at_most_one_readback() {
    // the engine's own step (every read of a tensor's values counted by the vendored
    // candle-core, per thread): f32, bf16 and f16 (loss scaling), with and without clipping
    for (precision, clip) in [
        (Precision::F32, None),
        (Precision::F32, Some(1.0)),
        (Precision::Bf16, Some(1.0)),
        (Precision::F16, None),
    ] {
        let env = Env::new();
        runner::engine::run::take_max_step_readbacks();
        let (_, _, out) = train_with(&env, precision, |r| r.train.grad_clip = clip);
        assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
        let most = runner::engine::run::take_max_step_readbacks();
        assert_eq!(
            most, 1,
            "{precision:?} clip {clip:?}: a step read the device {most} times"
        );
    }
}

#[test]
fn deferred_readbacks_read_once_per_k_steps_and_train_the_same_bits() {
    // A CUDA run (f32, bf16) reads its steps' numbers every GPU_READ_EVERY steps; the CPU
    // runs that path here with k = 4 and must train exactly what the read-every-step path
    // trains, with a quarter of the reads; f16 (its loss scaler) still reads every step.
    let epochs_of = |precision: Precision, clip: Option<f64>, k: Option<usize>| {
        let env = Env::new();
        runner::engine::run::set_read_every_for_test(k);
        runner::engine::run::take_steps_and_reads();
        runner::engine::run::take_max_step_readbacks();
        let (store, id, out) = train_with(&env, precision, |r| r.train.grad_clip = clip);
        runner::engine::run::set_read_every_for_test(None);
        assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
        let (steps, reads) = runner::engine::run::take_steps_and_reads();
        assert!(runner::engine::run::take_max_step_readbacks() <= 1);
        let e: Vec<[u64; 4]> = store
            .epochs(id)
            .unwrap()
            .iter()
            .map(|e| {
                [
                    e.train_loss.to_bits(),
                    e.train_acc.to_bits(),
                    e.val_loss.unwrap().to_bits(),
                    e.val_acc.unwrap().to_bits(),
                ]
            })
            .collect();
        (e, steps, reads)
    };
    let mut unclipped = None;
    for clip in [None, Some(0.5)] {
        let (every, steps, reads) = epochs_of(Precision::F32, clip, None);
        // clipping at 0.5 changes this run (so both paths clip, and alike)
        assert_ne!(Some(&every), unclipped.as_ref(), "clip {clip:?}");
        unclipped.get_or_insert(every.clone());
        assert_eq!(reads, steps, "clip {clip:?}: the CPU reads every step");
        let (deferred, steps4, reads4) = epochs_of(Precision::F32, clip, Some(4));
        assert_eq!(steps4, steps);
        // two epochs, each read every 4 steps and at its end
        let per_epoch = steps / 2;
        assert_eq!(
            reads4,
            2 * per_epoch.div_ceil(4),
            "clip {clip:?}: {steps} steps"
        );
        assert_eq!(
            deferred, every,
            "clip {clip:?}: the same epochs, bit for bit"
        );
    }
    let (_, steps, reads) = epochs_of(Precision::F16, None, Some(4));
    assert_eq!(reads, steps, "f16 reads every step");
}
