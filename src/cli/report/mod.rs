//! `runner report --out report.html`: one self-contained HTML file (its data, its script and
//! the chart library inlined; no network request) built from the store: the leaderboard
//! (sortable, filterable, the leaderboard's rule), learning curves of every selected run,
//! hyperparameters against the metric (parallel coordinates, slices, importance), seed groups
//! with 95% intervals, verification (ROC, DET, score histograms, accuracy against the
//! threshold, DIR at FPIR) and classification mistakes of the best runs, and a comparison of
//! chosen runs. `data.rs` builds the JSON the page draws, `faces.rs` its face-task part;
//! `stats.rs` its statistics; the page itself is `templates/report/`.

mod data;
mod faces;
mod stats;

use std::path::Path;

use super::leaderboard::Query;
use super::{CliError, Global};

const PAGE: &str = include_str!("../../../templates/report/page.html");
const SCRIPT: &str = include_str!("../../../templates/report/page.js");
/// Apache ECharts 6.1.0 (`dist/echarts.min.js` of the npm package; licence beside it).
const ECHARTS: &str = include_str!("../../../templates/report/vendor/echarts-6.1.0.min.js");

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Text safe inside a `<script>` element (no `</script>` or `<!--` can end or open it).
fn script_safe(s: &str) -> String {
    s.replace("</", "<\\/").replace("<!--", "<\\!--")
}

/// The page for `data` (the JSON `data::build` makes).
pub fn render(data: &serde_json::Value) -> String {
    let title = data["title"].as_str().unwrap_or("runner report");
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    PAGE.replace("{{title}}", &esc(title))
        .replace("{{echarts}}", &script_safe(ECHARTS))
        .replace("{{script}}", &script_safe(SCRIPT))
        .replace("{{data}}", &script_safe(&json))
}

/// How often an open page written by `report --watch` reloads itself.
pub const RELOAD_SECONDS: u32 = 3;

/// `runner report`: the runs `q` selects (as `leaderboard` selects them) into `out`, written
/// atomically (a temporary file, then a rename). With `watch`, again after every change to the
/// store (an epoch recorded, a run started or ended), until interrupted; the page then reloads
/// itself every few seconds, keeping its state in the URL.
pub fn run(g: &Global, q: &Query, out: &Path, watch: bool) -> Result<(), CliError> {
    let store = super::runs::open_store(g)?;
    write(&store, q, out, watch)?;
    if !watch {
        return Ok(());
    }
    let stop = crate::engine::signals::stop_flag();
    let mut seen = store.data_version()?;
    crate::errln!("watching {} (Ctrl-C stops)", store.path().display());
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = store.data_version()?;
        if now != seen {
            seen = now;
            write(&store, q, out, watch)?;
        }
    }
    // the last page: the store as it is now, and no more reloads (nothing rewrites it)
    write(&store, q, out, false)?;
    Err(CliError::interrupted(
        "report --watch stopped; the page no longer reloads",
    ))
}

/// Builds and writes the page once.
fn write(store: &crate::store::Store, q: &Query, out: &Path, watch: bool) -> Result<(), CliError> {
    let title = match (q.sweep, &q.recipe) {
        (Some(s), _) => format!("runner report: sweep {s}"),
        (None, Some(r)) => format!("runner report: {r}"),
        (None, None) => "runner report: all runs".to_string(),
    };
    let mut data = data::build(store, q, &title)?;
    if watch {
        data["reload_seconds"] = RELOAD_SECONDS.into();
    }
    let html = render(&data);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?;
    }
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, html)
        .and_then(|_| std::fs::rename(&tmp, out))
        .map_err(|e| CliError::failed(format!("{}: {e}", out.display())))?;
    crate::errln!(
        "wrote {} ({} run(s) ranked by {})",
        out.display(),
        data["runs"].as_array().map_or(0, |r| r.len()),
        q.metric
    );
    Ok(())
}
