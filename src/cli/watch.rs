//! `runner watch DIR`: a queue folder. Recipes already there and every recipe file that
//! appears or changes (debounced) are validated and swept in turn; invalid recipes are
//! reported and skipped; Ctrl-C stops cleanly (the current run checkpoints first).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use super::{CliError, Global};
use crate::engine::executor::{execute_sweep, SweepOptions};
use crate::engine::progress::Reporter;
use crate::store::Store;

const DEBOUNCE: Duration = Duration::from_millis(800);

fn is_recipe(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "toml") && p.is_file()
}

fn digest(p: &Path) -> Option<String> {
    std::fs::read(p)
        .ok()
        .map(|b| hex::encode(Sha256::digest(&b)))
}

pub fn run(
    g: &Global,
    dir: &Path,
    device: Option<String>,
    reporter: &Reporter,
) -> Result<(), CliError> {
    if !dir.is_dir() {
        return Err(CliError::invalid(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    // Absolute, as the watcher reports changed files: one recipe is one path, whichever way
    // the folder was named (`runner watch queue/` and an event for /abs/queue/a.toml).
    let dir = &std::fs::canonicalize(dir)
        .map_err(|e| CliError::invalid(format!("{}: {e}", dir.display())))?;
    let stop = crate::engine::signals::stop_flag();
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    })
    .map_err(|e| CliError::failed(format!("{}: cannot watch: {e}", dir.display())))?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| CliError::failed(format!("{}: cannot watch: {e}", dir.display())))?;
    let mut done: HashMap<PathBuf, String> = HashMap::new();
    let mut pending: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_recipe(p))
        .collect();
    pending.sort();
    let mut last_event = Instant::now();
    reporter.info(&format!(
        "watching {} for recipes (Ctrl-C to stop)",
        dir.display()
    ));
    while !stop.load(Ordering::SeqCst) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(p) => {
                if p.extension().is_some_and(|e| e == "toml") && !pending.contains(&p) {
                    pending.push(p);
                }
                last_event = Instant::now();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if pending.is_empty() || last_event.elapsed() < DEBOUNCE {
            continue;
        }
        let batch: Vec<PathBuf> = std::mem::take(&mut pending);
        for path in batch {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if !is_recipe(&path) {
                continue;
            }
            let Some(d) = digest(&path) else { continue };
            if done.get(&path) == Some(&d) {
                continue;
            }
            done.insert(path.clone(), d);
            process(g, &path, &device, reporter, &stop);
        }
    }
    reporter.info("watch stopped");
    Ok(())
}

fn process(
    g: &Global,
    path: &Path,
    device: &Option<String>,
    reporter: &Reporter,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let sets: Vec<String> = device
        .iter()
        .map(|d| format!("train.device=\"{d}\""))
        .collect();
    let runs = match super::plan::plan_recipe(path, &sets) {
        Ok(r) => r,
        Err(e) if !e.diagnostics.is_empty() => {
            reporter.diagnostics(&e.diagnostics, None);
            reporter.error(&format!("skipping invalid recipe {}", path.display()), None);
            return;
        }
        Err(e) => {
            reporter.error(
                &format!("skipping invalid recipe {}: {}", path.display(), e.message),
                None,
            );
            return;
        }
    };
    let mut preflight = crate::engine::preflight::Preflight::default();
    let done = super::train::done_keys(g, runs.iter().map(|r| r.key.as_str())).unwrap_or_default();
    let unusable = runs
        .iter()
        .filter(|r| !done.contains(&r.key))
        .find_map(|r| preflight.check(&r.recipe).err());
    if let Some(e) = unusable {
        reporter.error(&format!("skipping {}: {e}", path.display()), None);
        return;
    }
    for n in preflight.generated_notices() {
        reporter.info(&n);
    }
    reporter.info(&format!("{}: {} run(s)", path.display(), runs.len()));
    // a recipe's [sweep.prune] holds here as under `runner sweep`
    let opts = SweepOptions {
        prune: super::sweep::prune_plan(path, &sets).unwrap_or_default(),
        ..Default::default()
    };
    let result = Store::open(&g.db)
        .map_err(|e| e.to_string())
        .and_then(|mut store| {
            execute_sweep(
                &mut store,
                &path.display().to_string(),
                &runs,
                &opts,
                reporter,
                stop.clone(),
            )
            .map_err(|e| e.to_string())
        });
    match result {
        Ok(rows) => {
            let done = rows.iter().filter(|r| r.status == "done").count();
            let pruned = rows.iter().filter(|r| r.status == "pruned").count();
            reporter.info(&format!(
                "{}: {done}/{} run(s) done{}",
                path.display(),
                rows.len(),
                if pruned > 0 {
                    format!(", {pruned} pruned")
                } else {
                    String::new()
                }
            ));
        }
        Err(e) => reporter.error(&format!("{}: sweep failed: {e}", path.display()), None),
    }
}
