//! `runner runs`, `runner show RUN`, `runner best`, `runner compare RUN RUN`: reading runs back.

use super::output::{cell, fmt_lr, fmt_num, print_json, table, Format};
use super::{CliError, Global};
use crate::store::{EpochMetrics, PhaseSeconds, RunRow, Store};

/// Opens an existing store (reading commands never create one).
pub fn open_store(g: &Global) -> Result<Store, CliError> {
    if !g.db.exists() {
        return Err(CliError::invalid(format!(
            "{}: no experiment store here yet (run `runner sweep RECIPE` first, or pass --db)",
            g.db.display()
        )));
    }
    Ok(Store::open(&g.db)?)
}

/// `runner runs`.
pub fn list(g: &Global, format: Format) -> Result<(), CliError> {
    let store = open_store(g)?;
    let runs = store.runs(None)?;
    match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = runs
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "id": r.id, "key": r.key, "status": r.shown_status(), "recipe": r.recipe,
                        "started": r.started, "finished": r.finished,
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(list));
        }
        _ => {
            let headers: Vec<String> = [
                "id", "key", "status", "recipe", "started", "finished", "parent",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.key.clone(),
                        r.shown_status(),
                        r.recipe.clone(),
                        r.started.clone().unwrap_or_else(|| "-".into()),
                        r.finished.clone().unwrap_or_else(|| "-".into()),
                        r.parent_id
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            if format == Format::Csv {
                crate::out!("{}", super::output::csv(&headers, &rows));
            } else {
                crate::outln!("{}", table(&headers, &rows));
            }
        }
    }
    Ok(())
}

/// The `show` document of a run (the contract's JSON).
pub fn show_json(store: &Store, run: &RunRow) -> Result<serde_json::Value, CliError> {
    let epochs = store.epochs(run.id)?;
    let checkpoints = store.checkpoints(run.id)?;
    let verification = store.verification(run.id)?;
    let skipped = store.skipped_images(run.id)?;
    let rungs = store.rungs(run.id)?;
    Ok(serde_json::json!({
        "id": run.id,
        "key": run.key,
        "status": run.shown_status(),
        "recipe": run.recipe,
        "config": run.config,
        "overrides": run.overrides,
        "started": run.started,
        "finished": run.finished,
        "error": run.error,
        "host": run.host,
        "version": run.version,
        "data_fingerprint": run.data_fingerprint,
        "resumed_from": run.resumed_from,
        "dir": run.dir,
        "epochs": epochs,
        "checkpoints": checkpoints,
        "verification": verification,
        "skipped_images": skipped,
        "rungs": rungs,
        "parent": run.parent_id,
        "init_from_run": run.init_from_run.map(|id| serde_json::json!({
            "id": id,
            "checkpoint": run.init_from_checkpoint,
        })),
    }))
}

/// Prints a run as a human-readable report.
pub fn print_run(store: &Store, run: &RunRow) -> Result<(), CliError> {
    crate::outln!(
        "run {}  key {}  status {}",
        run.id,
        run.key,
        run.shown_status()
    );
    crate::outln!("recipe   {}", run.recipe);
    if let Some(p) = run.parent_id {
        crate::outln!(
            "parent   run {p}{}",
            run.resumed_from
                .as_ref()
                .map(|c| format!(" (from {c})"))
                .unwrap_or_default()
        );
    }
    if let Some(p) = run.init_from_run {
        crate::outln!(
            "init     from run {p}{}",
            run.init_from_checkpoint
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
    }
    crate::outln!(
        "started  {}   finished {}",
        run.started.as_deref().unwrap_or("-"),
        run.finished.as_deref().unwrap_or("-")
    );
    if let Some(e) = &run.error {
        crate::outln!("error    {e}");
    }
    if let Some(o) = run.overrides.as_object().filter(|o| !o.is_empty()) {
        let swept: Vec<String> = o.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect();
        crate::outln!("swept    {}", swept.join("  "));
    }
    if let Some(dir) = &run.dir {
        crate::outln!("folder   {dir}");
    }
    for r in store.rungs(run.id)? {
        crate::outln!(
            "rung {}   epoch {}  {} {}  {}",
            r.rung + 1,
            r.epoch,
            r.metric,
            r.value.map(fmt_num).unwrap_or_else(|| "-".into()),
            r.decision
        );
    }
    // the resolved configuration, one `key = value` a line (what `--set` takes)
    let mut config = Vec::new();
    flatten("", &run.config, &mut config);
    let config: Vec<String> = config
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| format!("  {k} = {}", cell(&v)))
        .collect();
    if !config.is_empty() {
        crate::outln!("config\n{}", config.join("\n"));
    }
    let epochs = store.epochs(run.id)?;
    if !epochs.is_empty() {
        let headers: Vec<String> = [
            "epoch",
            "lr",
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc",
            "verify_acc",
            "img/s",
            "seconds",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let opt = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "-".into());
        let rows: Vec<Vec<String>> = epochs
            .iter()
            .map(|e| {
                vec![
                    e.epoch.to_string(),
                    fmt_lr(e.lr),
                    fmt_num(e.train_loss),
                    fmt_num(e.train_acc),
                    opt(e.val_loss),
                    opt(e.val_acc),
                    opt(e.verify_acc),
                    format!("{:.1}", e.images_per_sec),
                    format!("{:.1}", e.seconds),
                ]
            })
            .collect();
        crate::outln!("\n{}", table(&headers, &rows));
        print_phases(&epochs);
    }
    let checkpoints = store.checkpoints(run.id)?;
    if !checkpoints.is_empty() {
        crate::outln!("\ncheckpoints:");
        for c in checkpoints {
            crate::outln!(
                "  epoch {:>3}  {}  {}={}  {}",
                c.epoch,
                if c.kept { "kept   " } else { "deleted" },
                c.metric_name.as_deref().unwrap_or("metric"),
                c.metric.map(fmt_num).unwrap_or_else(|| "-".into()),
                c.path
            );
        }
    }
    let ver = store.verification(run.id)?;
    if !ver.is_empty() {
        crate::outln!("\nverification:");
        for v in ver {
            crate::outln!(
                "  epoch {:>3}  {}  {}  accuracy {}  threshold {}  known {}  impostor rejection {}",
                v.epoch,
                v.split,
                v.metric,
                fmt_num(v.accuracy),
                v.threshold.map(fmt_num).unwrap_or_else(|| "-".into()),
                v.accuracy_known.map(fmt_num).unwrap_or_else(|| "-".into()),
                v.impostor_rejection
                    .map(fmt_num)
                    .unwrap_or_else(|| "-".into()),
            );
        }
    }
    let skipped = store.skipped_images(run.id)?;
    if !skipped.is_empty() {
        crate::outln!(
            "\nskipped unreadable images (data.on_bad_image = \"skip\"): {}",
            skipped.len()
        );
        for s in skipped {
            crate::outln!("  epoch {:>3}  {}  {}", s.epoch, s.path, s.error);
        }
    }
    Ok(())
}

/// `runner show RUN`.
/// Where each epoch's wall time went, in seconds (epochs recorded before store version 6 have
/// no phases and are left out; nothing is printed when none has them).
fn print_phases(epochs: &[EpochMetrics]) {
    let timed: Vec<(&EpochMetrics, &PhaseSeconds)> = epochs
        .iter()
        .filter_map(|e| e.phase_seconds.as_ref().map(|p| (e, p)))
        .collect();
    if timed.is_empty() {
        return;
    }
    let mut headers = vec!["epoch".to_string()];
    headers.extend(PhaseSeconds::NAMES.iter().map(|s| s.to_string()));
    headers.push("total".into());
    let rows: Vec<Vec<String>> = timed
        .iter()
        .map(|(e, p)| {
            let mut row = vec![e.epoch.to_string()];
            row.extend(p.values().iter().map(|v| format!("{v:.2}")));
            row.push(format!("{:.2}", p.total()));
            row
        })
        .collect();
    crate::outln!("\nphase seconds:\n{}", table(&headers, &rows));
}

pub fn show(g: &Global, reference: &str, format: Format) -> Result<(), CliError> {
    let store = open_store(g)?;
    let id = store.resolve_run(reference)?;
    let run = store.run(id)?;
    match format {
        Format::Json => print_json(&show_json(&store, &run)?),
        _ => print_run(&store, &run)?,
    }
    Ok(())
}

/// `runner compare A B`: configuration differences and metrics side by side.
pub fn compare(g: &Global, a: &str, b: &str, format: Format) -> Result<(), CliError> {
    let store = open_store(g)?;
    let ra = store.run(store.resolve_run(a)?)?;
    let rb = store.run(store.resolve_run(b)?)?;
    let mut fa = Vec::new();
    flatten("", &ra.config, &mut fa);
    let mut fb = Vec::new();
    flatten("", &rb.config, &mut fb);
    let ma: std::collections::BTreeMap<_, _> = fa.into_iter().collect();
    let mb: std::collections::BTreeMap<_, _> = fb.into_iter().collect();
    let keys: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    let mut diffs = Vec::new();
    for k in keys {
        let va = ma.get(k).cloned().unwrap_or(serde_json::Value::Null);
        let vb = mb.get(k).cloned().unwrap_or(serde_json::Value::Null);
        if va != vb {
            diffs.push((k.clone(), va, vb));
        }
    }
    let best = |id: i64| -> Result<std::collections::BTreeMap<String, f64>, CliError> {
        let epochs = store.epochs(id)?;
        let mut out = std::collections::BTreeMap::new();
        for m in crate::recipe::validate::METRICS {
            let vals = epochs
                .iter()
                .filter_map(|e| e.get(m))
                .filter(|v| v.is_finite());
            let v = if m.ends_with("loss") {
                vals.fold(None, |acc: Option<f64>, v| {
                    Some(acc.map_or(v, |a| a.min(v)))
                })
            } else if *m == "lr" {
                epochs.last().map(|e| e.lr)
            } else {
                vals.fold(None, |acc: Option<f64>, v| {
                    Some(acc.map_or(v, |a| a.max(v)))
                })
            };
            if let Some(v) = v {
                out.insert(m.to_string(), v);
            }
        }
        Ok(out)
    };
    let (ba, bb) = (best(ra.id)?, best(rb.id)?);
    if format == Format::Json {
        let d: Vec<serde_json::Value> = diffs
            .iter()
            .map(|(k, a, b)| serde_json::json!({"key": k, "a": a, "b": b}))
            .collect();
        print_json(&serde_json::json!({
            "a": {"id": ra.id, "key": ra.key, "status": ra.shown_status(), "best": ba},
            "b": {"id": rb.id, "key": rb.key, "status": rb.shown_status(), "best": bb},
            "config_differences": d,
        }));
        return Ok(());
    }
    let headers = vec![
        "".to_string(),
        format!("run {} ({})", ra.id, ra.key),
        format!("run {} ({})", rb.id, rb.key),
    ];
    let mut rows = vec![vec!["status".into(), ra.shown_status(), rb.shown_status()]];
    for (k, a, b) in &diffs {
        rows.push(vec![k.clone(), cell(a), cell(b)]);
    }
    for m in crate::recipe::validate::METRICS {
        if ba.contains_key(*m) || bb.contains_key(*m) {
            let format = if *m == "lr" { fmt_lr } else { fmt_num };
            let f = |x: Option<&f64>| x.map(|v| format(*v)).unwrap_or_else(|| "-".into());
            // the lr row is the last epoch's lr (a "best" lr means nothing)
            let label = if *m == "lr" {
                "last lr".to_string()
            } else {
                format!("best {m}")
            };
            rows.push(vec![label, f(ba.get(*m)), f(bb.get(*m))]);
        }
    }
    crate::outln!("{}", table(&headers, &rows));
    if diffs.is_empty() {
        crate::errln!("the two runs have the same configuration");
    }
    Ok(())
}

/// Flattens a JSON object into dotted keys and leaf values.
pub fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}
