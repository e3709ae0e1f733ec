//! `runner bench train | data | model | matching | leaderboard`: measured numbers, with the
//! machine they ran on.

use std::path::Path;
use std::time::Instant;

use super::output::{print_json, Format};
use super::{parse_sets, CliError, Global};

fn show(v: &serde_json::Value, format: Format) {
    match format {
        Format::Json => print_json(v),
        _ => {
            let mut rows = Vec::new();
            super::runs::flatten("", v, &mut rows);
            for (k, v) in rows {
                crate::outln!("{k:<28} {}", super::output::cell(&v));
            }
        }
    }
}

/// A one-line description of this machine (CPU model, cores).
pub fn machine() -> String {
    let cpu = crate::engine::cpu_model();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {cores} cores")
}

/// The 1-minute load average before a measurement (it lags, and counts the benchmark itself).
fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
}

fn num_classes(r: &crate::recipe::Recipe) -> usize {
    r.model.num_classes.unwrap_or(if r.data.root == "synth" {
        r.data.synth.identities
    } else {
        100
    })
}

/// One training step on random input; with `loader`, also training on the recipe's real data
/// through the loader against the same batches cached in memory.
pub fn train(
    recipe: &Path,
    sets: &[String],
    steps: usize,
    loader: bool,
    profile: bool,
    format: Format,
) -> Result<(), CliError> {
    let (_, r) = crate::recipe::load_for_bench(recipe, &parse_sets(sets)?)?;
    let b = crate::engine::bench::bench_train(&r, num_classes(&r), steps.max(1), profile)
        .map_err(CliError::failed)?;
    let mut v = serde_json::to_value(&b).unwrap_or_default();
    if loader {
        let lb =
            crate::engine::bench::bench_loader(&r, steps.max(1), 3).map_err(CliError::failed)?;
        v["loader"] = serde_json::to_value(&lb).unwrap_or_default();
    }
    v["machine"] = machine().into();
    v["load_1m"] = load_1m().into();
    match (&b.ops, format) {
        (Some(ops), f) if f != Format::Json => {
            // the operations as a table of their own, after the rest
            if let Some(o) = v.as_object_mut() {
                o.remove("ops");
            }
            show(&v, format);
            crate::outln!();
            crate::outln!(
                "{:<28} {:>8} {:>10} {:>7}",
                "operation",
                "calls",
                "ms/step",
                "share"
            );
            for op in ops {
                crate::outln!(
                    "{:<28} {:>8.0} {:>10.2} {:>6.1}%",
                    op.op,
                    op.calls_per_step,
                    op.ms_per_step,
                    op.share * 100.0
                );
            }
        }
        _ => show(&v, format),
    }
    Ok(())
}

/// The typical training pipeline (RandomResizedCrop, flip, ColorJitter, Normalize) at 64 and
/// 224 px with 1 and 2 threads, then the recipe's own training pipeline on its data.
pub fn data(recipe: &Path, sets: &[String], format: Format) -> Result<(), CliError> {
    let (_, r) = crate::recipe::load(recipe, &parse_sets(sets)?)?;
    let work = std::env::temp_dir().join("runner-bench-data");
    let typical = crate::data::bench::bench_data(&work, &[64, 224], &[1, 2], 512)
        .map_err(CliError::failed)?;
    let root = crate::data::resolve_root(&r.data).map_err(CliError::failed)?;
    let data = crate::data::CourseData::open(&root).map_err(CliError::failed)?;
    let paths: Vec<_> = data.train.iter().map(|s| s.path.clone()).collect();
    let threads = r
        .data
        .num_workers
        .unwrap_or_else(rayon::current_num_threads);
    let (n, secs) = crate::data::bench::bench_pipeline(
        &paths,
        &r.transforms.train,
        threads,
        r.train.batch_size,
    )
    .map_err(CliError::failed)?;
    let v = serde_json::json!({
        "typical": typical,
        "recipe": {
            "pipeline": r.transforms.train.iter().map(|t| t.kind_name()).collect::<Vec<_>>(),
            "images": n,
            "threads": threads,
            "seconds": secs,
            "images_per_sec": n as f64 / secs.max(1e-9),
        },
        "machine": machine(),
    });
    show(&v, format);
    Ok(())
}

/// The recipe's model with the project's kernels against plain Candle ops (alternating steps,
/// so machine load affects both alike), and the depthwise 7x7 kernel alone against Candle's
/// grouped `conv2d`, forward and backward.
pub fn model(recipe: &Path, sets: &[String], format: Format) -> Result<(), CliError> {
    let (_, r) = crate::recipe::load_for_bench(recipe, &parse_sets(sets)?)?;
    let size = r.data.image_size as usize;
    let (ours, plain) = crate::model::bench::bench_model_vs_candle(
        &r.model,
        num_classes(&r),
        (size, size),
        r.train.batch_size,
        3,
    )
    .map_err(CliError::failed)?;
    let dw =
        crate::kernels::bench::bench_depthwise(64, 96, 16, 16, 7, 5).map_err(CliError::failed)?;
    let v = serde_json::json!({
        "model": {
            "runner_kernels": ours,
            "plain_candle": plain,
            "speedup": ours.images_per_sec / plain.images_per_sec.max(1e-12),
        },
        "depthwise_7x7": dw,
        "machine": machine(),
    });
    show(&v, format);
    Ok(())
}

pub fn matching(unknowns: usize, known: usize, dim: usize, format: Format) -> Result<(), CliError> {
    let b = crate::verify::bench_matching(unknowns, known, dim).map_err(CliError::failed)?;
    let mut v = serde_json::to_value(&b).unwrap_or_default();
    v["machine"] = machine().into();
    show(&v, format);
    Ok(())
}

/// Fills a temporary store with `runs` runs of 10 epochs each (a checkpoint row per epoch, the
/// best and the last kept), then times the leaderboard: one epoch per row, the same with a
/// `--where` filter, and `--best-over-epochs`.
/// `runner bench report`: a store of `runs` synthetic runs of `epochs` epochs, each with the
/// resolved configuration of `recipe` (learning rate, drop path and seed varied: groups of five
/// seeds), and the time and size of its report.
pub fn report(
    recipe: &std::path::Path,
    runs: usize,
    epochs: u32,
    out: &std::path::Path,
    format: Format,
) -> Result<(), CliError> {
    let (_, base) = crate::recipe::load(recipe, &[])?;
    let mut base = serde_json::to_value(&base).map_err(CliError::failed)?;
    base["sweep"] = serde_json::Value::Null;
    let dir = std::env::temp_dir().join(format!("runner-bench-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(CliError::failed)?;
    let db = dir.join("bench.db");
    let started = Instant::now();
    let mut store = crate::store::Store::open(&db)?;
    let config = |i: usize| {
        let mut c = base.clone();
        let lr = 1e-4 * (1 + (i / 5) % 50) as f64;
        let drop_path = ((i / 250) % 4) as f64 * 0.05;
        c["optimizer"]["lr"] = lr.into();
        c["model"]["drop_path"] = drop_path.into();
        c["train"]["seed"] = ((i % 5) as i64).into();
        c["train"]["epochs"] = epochs.into();
        let swept = serde_json::json!({
            "optimizer.lr": lr, "model.drop_path": drop_path, "train.seed": i % 5,
        });
        (c, swept)
    };
    crate::store::bench_fill_with(&mut store, runs, epochs, &config)?;
    let fill = started.elapsed().as_secs_f64();
    drop(store);
    let g = Global { db: db.clone() };
    let t = Instant::now();
    let q = super::leaderboard::Query {
        metric: "val_acc".into(),
        ..Default::default()
    };
    super::report::run(&g, &q, out, false)?;
    let build = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    let result = serde_json::json!({
        "runs": runs,
        "epochs": epochs,
        "recipe": recipe.display().to_string(),
        "bytes": bytes,
        "fill_seconds": fill,
        "build_seconds": build,
        "out": out.display().to_string(),
    });
    match format {
        Format::Json => super::output::print_json(&result),
        _ => crate::outln!(
            "report of {runs} runs x {epochs} epochs: {:.1} MB, built in {build:.2} s (store filled in {fill:.1} s)",
            bytes as f64 / 1e6
        ),
    }
    Ok(())
}

pub fn leaderboard(runs: usize, format: Format) -> Result<(), CliError> {
    let dir = std::env::temp_dir().join(format!("runner-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(CliError::failed)?;
    let db = dir.join("bench.db");
    let started = Instant::now();
    let mut store = crate::store::Store::open(&db)?;
    crate::store::bench_fill(&mut store, runs, 10)?;
    let fill = started.elapsed().as_secs_f64();
    let g = Global { db: db.clone() };
    let t = Instant::now();
    let q = super::leaderboard::Query {
        metric: "val_acc".into(),
        top: Some(10),
        ..Default::default()
    };
    let r1 = super::leaderboard::rank(&crate::store::Store::open(&g.db)?, &q)?;
    let plain = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let q = super::leaderboard::Query {
        filter: Some("optimizer.lr < 0.05 and val_acc > 0.5".into()),
        ..q
    };
    let r2 = super::leaderboard::rank(&crate::store::Store::open(&g.db)?, &q)?;
    let filtered = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let q = super::leaderboard::Query {
        filter: None,
        best_over_epochs: true,
        ..q
    };
    super::leaderboard::rank(&crate::store::Store::open(&g.db)?, &q)?;
    let over_epochs = t.elapsed().as_secs_f64() * 1e3;
    let b = crate::engine::bench::LeaderboardBench {
        runs,
        epochs_per_run: 10,
        fill_seconds: fill,
        leaderboard_ms: plain,
        filtered_leaderboard_ms: filtered,
        best_over_epochs_ms: over_epochs,
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut v = serde_json::to_value(&b).unwrap_or_default();
    v["ranked"] = r1.len().into();
    v["ranked_filtered"] = r2.len().into();
    v["machine"] = machine().into();
    v["load_1m"] = load_1m().into();
    show(&v, format);
    Ok(())
}
