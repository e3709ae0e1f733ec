//! `runner report --out report.html`: one self-contained HTML page (template in
//! templates/report.html, embedded at build time): the leaderboard, learning curves of the top
//! runs as inline SVG, and each run's configuration.

use std::fmt::Write;
use std::path::Path;

use super::output::fmt_num;
use super::{CliError, Global};
use crate::store::EpochMetrics;

const TEMPLATE: &str = include_str!("../../templates/report.html");
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
const TOP_CURVES: usize = 5;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG line chart of one metric for several runs.
fn chart(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, pad) = (320.0, 200.0, 36.0);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if pts.is_empty() {
        return String::new();
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in &pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1e-9;
    }
    let sx = |x: f64| pad + (x - x0) / (x1 - x0) * (w - 2.0 * pad);
    let sy = |y: f64| h - pad - (y - y0) / (y1 - y0) * (h - 2.0 * pad);
    let mut svg = format!(
        r##"<figure><svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">
<rect x="{pad}" y="{pad}" width="{}" height="{}" fill="none" stroke="#ccc"/>
<text x="{pad}" y="{}" font-size="10">{}</text><text x="{pad}" y="{}" font-size="10">{}</text>
<text x="{}" y="{}" font-size="10" text-anchor="end">epoch {}</text>"##,
        w - 2.0 * pad,
        h - 2.0 * pad,
        pad - 4.0,
        esc(&fmt_num(y1)),
        h - pad + 12.0,
        esc(&fmt_num(y0)),
        w - pad,
        h - pad + 12.0,
        x1
    );
    for (i, (_, s)) in series.iter().enumerate() {
        let d: Vec<String> = s
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        if !d.is_empty() {
            let _ = write!(
                svg,
                r##"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"##,
                COLORS[i % COLORS.len()],
                d.join(" ")
            );
        }
    }
    let _ = write!(
        svg,
        "</svg><figcaption>{}</figcaption></figure>",
        esc(title)
    );
    svg
}

/// A run's swept values: `optimizer.lr=0.01, train.seed=1`.
fn swept_values(overrides: &serde_json::Value) -> String {
    overrides
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k}={}", super::output::cell(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

pub fn run(g: &Global, sweep: Option<i64>, metric: &str, out: &Path) -> Result<(), CliError> {
    let store = super::runs::open_store(g)?;
    let q = super::leaderboard::Query {
        metric: metric.to_string(),
        sweep,
        ..Default::default()
    };
    let ranked = super::leaderboard::rank(&store, &q)?;
    // One row per run, one epoch per row (the leaderboard's rule), with every configuration
    // key that differs among the runs.
    let refs: Vec<&super::leaderboard::Ranked> = ranked.iter().collect();
    let columns = super::leaderboard::differing_columns(&refs);
    let mut lb = String::from(
        "<table><tr><th>rank</th><th>run</th><th>key</th><th>status</th><th>epoch</th>",
    );
    for k in &columns.keys {
        let _ = write!(lb, "<th>{}</th>", esc(k));
    }
    for m in crate::recipe::validate::METRICS
        .iter()
        .filter(|m| **m != "lr")
    {
        let _ = write!(lb, "<th>{}</th>", esc(m));
    }
    lb.push_str("<th>checkpoint</th></tr>");
    for (i, (r, differs)) in ranked.iter().zip(&columns.values).enumerate() {
        let _ = write!(
            lb,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            i + 1,
            r.row.id,
            esc(&r.row.key),
            esc(&r.row.status),
            r.row.epoch.map_or("-".into(), |e| e.to_string()),
        );
        for v in differs {
            let v = v
                .as_ref()
                .map(super::output::cell)
                .unwrap_or_else(|| "-".into());
            let _ = write!(lb, "<td>{}</td>", esc(&v));
        }
        for m in crate::recipe::validate::METRICS
            .iter()
            .filter(|m| **m != "lr")
        {
            let v = r
                .row
                .metrics
                .get(*m)
                .map(|v| fmt_num(*v))
                .unwrap_or_else(|| "-".into());
            let _ = write!(lb, "<td>{}</td>", esc(&v));
        }
        let _ = write!(
            lb,
            "<td>{}</td></tr>",
            esc(r.row.checkpoint.as_deref().unwrap_or("-"))
        );
    }
    lb.push_str("</table>");
    // Runs the metric cannot rank (failed, diverged, still running) are listed too.
    let ranked_ids: std::collections::HashSet<i64> = ranked.iter().map(|r| r.row.id).collect();
    let unranked: Vec<_> = store
        .best_over_epochs_rows(sweep)?
        .into_iter()
        .filter(|r| !ranked_ids.contains(&r.id))
        .collect();
    if !unranked.is_empty() {
        let _ = write!(
            lb,
            "<h3>Runs without a recorded {}</h3><table><tr><th>run</th><th>key</th><th>status</th><th>swept values</th><th>error</th></tr>",
            esc(metric)
        );
        for r in &unranked {
            let error = store.run(r.id)?.error.unwrap_or_default();
            let cells = [
                r.id.to_string(),
                r.key.clone(),
                r.status.clone(),
                swept_values(&r.overrides),
                error,
            ];
            lb.push_str("<tr>");
            for c in cells {
                let _ = write!(lb, "<td>{}</td>", esc(&c));
            }
            lb.push_str("</tr>");
        }
        lb.push_str("</table>");
    }
    let top: Vec<_> = ranked.iter().take(TOP_CURVES).collect();
    let mut curves_of: Vec<(String, Vec<EpochMetrics>)> = Vec::new();
    let mut legend = String::new();
    for (i, r) in top.iter().enumerate() {
        let _ = write!(
            legend,
            r##"<span style="color:{}">&#9632; run {} ({})</span>"##,
            COLORS[i % COLORS.len()],
            r.row.id,
            esc(&r.row.key)
        );
        curves_of.push((format!("run {}", r.row.id), store.epochs(r.row.id)?));
    }
    let series = |f: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(String, Vec<(f64, f64)>)> {
        curves_of
            .iter()
            .map(|(n, es)| {
                (
                    n.clone(),
                    es.iter()
                        .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
                        .collect(),
                )
            })
            .collect()
    };
    let mut curves = String::new();
    curves.push_str(&chart("train loss", &series(&|e| Some(e.train_loss))));
    curves.push_str(&chart("validation loss", &series(&|e| e.val_loss)));
    curves.push_str(&chart("train accuracy", &series(&|e| Some(e.train_acc))));
    curves.push_str(&chart("validation accuracy", &series(&|e| e.val_acc)));
    curves.push_str(&chart("verification accuracy", &series(&|e| e.verify_acc)));
    curves.push_str(&chart("learning rate", &series(&|e| Some(e.lr))));
    let mut configs = String::new();
    let ids = ranked
        .iter()
        .map(|r| r.row.id)
        .chain(unranked.iter().map(|r| r.id));
    for id in ids {
        let run = store.run(id)?;
        let pretty = serde_json::to_string_pretty(&run.config).unwrap_or_default();
        // lineage: the run it started from (init_from) and the run it continued (resume)
        let mut lineage = Vec::new();
        if let Some(p) = run.init_from_run {
            lineage.push(format!(
                "starts from run {p}{}",
                run.init_from_checkpoint
                    .as_ref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            ));
        }
        if let Some(p) = run.parent_id {
            lineage.push(format!("continues run {p}"));
        }
        let lineage = if lineage.is_empty() {
            String::new()
        } else {
            format!(" &mdash; {}", esc(&lineage.join("; ")))
        };
        let _ = write!(
            configs,
            "<details><summary>run {} ({}) {}{}</summary><pre>{}</pre></details>",
            run.id,
            esc(&run.key),
            esc(&run.recipe),
            lineage,
            esc(&pretty)
        );
    }
    let title = match sweep {
        Some(s) => format!("runner report: sweep {s}"),
        None => "runner report: all runs".to_string(),
    };
    let meta = format!(
        "{} run(s) ranked by {}; store {}; generated {}",
        ranked.len(),
        metric,
        g.db.display(),
        crate::store::now()
    );
    let html = TEMPLATE
        .replace("{{title}}", &esc(&title))
        .replace("{{meta}}", &esc(&meta))
        .replace("{{leaderboard}}", &lb)
        .replace("{{legend}}", &legend)
        .replace("{{curves}}", &curves)
        .replace("{{configs}}", &configs);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?;
    }
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, html)
        .and_then(|_| std::fs::rename(&tmp, out))
        .map_err(|e| CliError::failed(format!("{}: {e}", out.display())))?;
    crate::errln!("wrote {}", out.display());
    Ok(())
}
