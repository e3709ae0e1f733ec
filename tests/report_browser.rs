//! `runner report` in a real browser: Debian's `chromium`, headless, renders the report of a
//! small real sweep (a 2 x 2 grid over the learning rate and the seed, so it has seed groups)
//! and its DOM is read back (`--dump-dom`). The page records its own errors and blocked
//! requests on `<body>` (`data-errors`, `data-violations`); the test proves that capture with
//! pages that throw and that ask for a URL on purpose. Every section is there and drawn, the
//! charts hold the expected number of series, and the page's numbers are the store's
//! (`runner show`). `report --watch` rewrites the page when a run records an epoch, and the
//! open page reloads itself keeping its state. Screenshots go to the target folder for a
//! person to look at.
//!
//! Without a browser the tests skip with a reason, unless RUNNER_REQUIRE_BROWSER=1 (as
//! `.ci/run` sets), which makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::{s, Env};

const GRID: &str = r#"
[sweep]
mode = "grid"

[sweep.params]
"optimizer.lr" = [0.01, 0.2]
"train.seed" = [1, 2]
"#;

fn browser() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|b| {
            Command::new("which")
                .arg(b)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        });
    if found.is_none() {
        if std::env::var("RUNNER_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("RUNNER_REQUIRE_BROWSER=1, but no chromium on PATH");
        }
        eprintln!("skipped: no chromium on PATH (apt-get install chromium)");
    }
    found
}

fn headless(browser: &Path, extra: &[&str], page: &Path) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--virtual-time-budget=10000",
        ])
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap()
}

/// The page's DOM after its scripts ran.
fn dom(browser: &Path, page: &Path) -> String {
    let out = headless(browser, &["--dump-dom"], page);
    assert!(out.status.success(), "{}", common::stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn body_attr(dom: &str, name: &str) -> String {
    let body = &dom[dom.find("<body").unwrap()..];
    let body = &body[..body.find('>').unwrap()];
    let key = format!("{name}=\"");
    let at = body
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} on {body}"))
        + key.len();
    body[at..at + body[at..].find('"').unwrap()].to_string()
}

/// The element with `id` (its start tag to the end of the DOM).
fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    &dom[dom[..at].rfind('<').unwrap()..]
}

/// The `data-series` counts of the charts inside #`id` (up to the next heading).
fn series_in(dom: &str, id: &str) -> Vec<usize> {
    let part = element(dom, id);
    let end = ["<h2", "<h3"]
        .iter()
        .filter_map(|h| part.find(h))
        .min()
        .unwrap_or(part.len());
    let part = &part[..end];
    part.match_indices("data-series=\"")
        .map(|(i, m)| {
            let rest = &part[i + m.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
        .collect()
}

fn sweep_and_report(env: &Env) -> PathBuf {
    let r = env.recipe("r.toml", GRID);
    // verified every epoch, so that each run has scores at its leaderboard epoch
    let out = env.run(&[
        "sweep",
        s(&r),
        "--set",
        "train.epochs=2",
        "--set",
        "verification.every=1",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let page = env.path("report.html");
    let out = env.run(&["report", "--out", s(&page)]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    page
}

#[test]
fn the_report_renders_every_section_without_errors_or_requests() {
    let Some(b) = browser() else { return };
    let env = Env::new();
    let page = sweep_and_report(&env);
    let d = dom(&b, &page);
    assert_eq!(
        body_attr(&d, "data-rendered"),
        "1",
        "the page script did not finish"
    );
    assert_eq!(
        body_attr(&d, "data-errors"),
        "0",
        "{}",
        element(&d, "page-errors")
    );
    assert_eq!(
        body_attr(&d, "data-violations"),
        "0",
        "{}",
        element(&d, "page-errors")
    );
    // the sections the contract names that this version draws, each drawn
    for id in [
        "leaderboard",
        "curves",
        "parallel-coordinates",
        "slices",
        "importance",
        "seed-groups",
        "roc",
        "det",
        "score-histogram",
        "dir-fpir",
        "confusions",
        "compare",
    ] {
        assert!(element(&d, id).len() > 40, "#{id} is empty");
    }
    // verification: a curve per run in ROC, DET, accuracy against threshold and DIR at FPIR
    // (every run has known and unknown faces); genuine and impostor of the chosen run; the
    // per-identity accuracy of the best run
    for id in ["det", "threshold", "dir-fpir"] {
        assert_eq!(series_in(&d, id), vec![4], "#{id}");
    }
    // (DET sits beside ROC, before the next heading)
    assert_eq!(series_in(&d, "roc"), vec![4, 4]);
    assert_eq!(series_in(&d, "score-histogram"), vec![2]);
    assert_eq!(series_in(&d, "confusions"), vec![1]);
    // the accuracy the page computes at each run's threshold from the faces' best matches is
    // the verification accuracy the store recorded
    let check = element(&d, "threshold");
    let check = &check[check.find("data-check=\"").unwrap() + 12..];
    let check: serde_json::Value =
        serde_json::from_str(&check[..check.find('"').unwrap()].replace("&quot;", "\"")).unwrap();
    assert_eq!(check.as_array().unwrap().len(), 4);
    for c in check.as_array().unwrap() {
        let show = env.json(&["show", &c["run"].to_string(), "--format", "json"]);
        let v = show["verification"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["epoch"] == c["epoch"])
            .unwrap();
        assert_eq!(c["accuracy_at_threshold"], v["accuracy"], "{c} vs {v}");
    }
    // thumbnails of the best run's mistakes, as images the page holds
    let mistakes = element(&d, "verification-mistakes");
    let mistakes = &mistakes[..mistakes.find("<h2").unwrap()];
    assert!(
        mistakes.contains("<img src=\"data:image/jpeg;base64,"),
        "{mistakes}"
    );
    // 4 runs: one row each, the best highlighted
    let lb = element(&d, "leaderboard");
    let lb = &lb[..lb.find("</table>").unwrap()];
    assert_eq!(lb.matches("data-run=").count(), 4);
    assert_eq!(lb.matches("class=\"best\"").count(), 1);
    // a curve chart per metric with values, each with the 4 runs; one slice per swept key;
    // parallel coordinates and importance one series each
    let curves = series_in(&d, "curves");
    assert!(curves.len() >= 5, "{curves:?}");
    assert!(curves.iter().all(|&n| n == 4), "{curves:?}");
    assert_eq!(series_in(&d, "slices"), vec![1, 1]);
    let pc = element(&d, "parallel-coordinates");
    assert!(pc.starts_with("<div") && pc[..pc.find('>').unwrap()].contains("data-series=\"1\""));
    // two seed groups (lr 0.01 and 0.2, 2 seeds each), the leader marked
    let sg = element(&d, "seed-groups");
    let sg = &sg[..sg.find("</table>").unwrap()];
    assert!(
        sg.contains("leader")
            && sg.contains("optimizer.lr=0.01")
            && sg.contains("optimizer.lr=0.2"),
        "{sg}"
    );
    // screenshots, for a person to look at
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("report.png");
    let out = headless(
        &b,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,3600",
        ],
        &page,
    );
    assert!(
        out.status.success() && png.is_file(),
        "{}",
        common::stderr(&out)
    );
    eprintln!("screenshot: {}", png.display());
}

#[test]
fn a_charts_csv_is_the_points_it_draws() {
    let Some(b) = browser() else { return };
    let env = Env::new();
    let page = sweep_and_report(&env);
    let html = std::fs::read_to_string(&page).unwrap();
    // the page's own CSV of its validation-accuracy chart, read back through the DOM
    let probe = env.path("csv.html");
    std::fs::write(
        &probe,
        html.replace(
            "</body>",
            "<script>document.body.setAttribute('data-csv', window.__reportCsv('validation accuracy'));</script></body>",
        ),
    )
    .unwrap();
    let d = dom(&b, &probe);
    let csv = body_attr(&d, "data-csv").replace("&quot;", "\"");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("series,x,y"));
    // one row per run and epoch: 4 runs x 2 epochs, each run's val_acc as `runner show` has it
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 8, "{csv}");
    for r in common::report_data(&html)["runs"].as_array().unwrap() {
        let show = env.json(&["show", &r["id"].to_string(), "--format", "json"]);
        for e in show["epochs"].as_array().unwrap() {
            let v = e["val_acc"].as_f64().unwrap() as f32;
            let row = format!("\"run {}\",{},", r["id"], e["epoch"]);
            let line = rows
                .iter()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("{row} in {csv}"));
            let drawn: f32 = line[row.len()..].parse().unwrap();
            assert_eq!(drawn, v, "{line}");
        }
    }
}

#[test]
fn the_capture_sees_a_page_that_throws_and_one_that_asks_for_a_url() {
    let Some(b) = browser() else { return };
    let env = Env::new();
    let page = sweep_and_report(&env);
    let html = std::fs::read_to_string(&page).unwrap();
    let throws = env.path("throws.html");
    std::fs::write(
        &throws,
        html.replace(
            "</body>",
            "<script>throw new Error(\"on purpose\")</script></body>",
        ),
    )
    .unwrap();
    let d = dom(&b, &throws);
    assert_eq!(body_attr(&d, "data-errors"), "1");
    assert!(element(&d, "page-errors").contains("on purpose"));
    let fetches = env.path("fetches.html");
    std::fs::write(
        &fetches,
        html.replace("</body>", "<img src=\"http://127.0.0.1:9/x.png\"></body>"),
    )
    .unwrap();
    let d = dom(&b, &fetches);
    assert_eq!(
        body_attr(&d, "data-violations"),
        "1",
        "{}",
        element(&d, "page-errors")
    );
}

#[test]
fn group_by_adds_the_leaderboards_groups_to_the_page() {
    let Some(b) = browser() else { return };
    let env = Env::new();
    let page = sweep_and_report(&env);
    let out = env.run(&["report", "--out", s(&page), "--group-by", "optimizer.lr"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    // the numbers are `leaderboard --group-by`'s
    let data = common::report_data(&std::fs::read_to_string(&page).unwrap());
    let cli = env.json(&[
        "leaderboard",
        "--group-by",
        "optimizer.lr",
        "--format",
        "json",
    ]);
    let rows = data["groups"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), cli.as_array().unwrap().len());
    for (r, c) in rows.iter().zip(cli.as_array().unwrap()) {
        assert_eq!(
            (&r["value"], &r["runs"], &r["mean"]),
            (&c["value"], &c["runs"], &c["mean"])
        );
    }
    let d = dom(&b, &page);
    assert_eq!(body_attr(&d, "data-errors"), "0");
    assert_eq!(element(&d, "groups").matches("data-group=").count(), 2);
    // a key no run has is refused, naming it
    let bad = env.run(&["report", "--out", s(&page), "--group-by", "optimizer.lrr"]);
    common::assert_invalid(&bad, &["--group-by", "optimizer.lrr"]);
}

#[test]
fn the_pages_numbers_are_the_stores() {
    // no browser needed: the numbers are the embedded data the page draws
    let env = Env::new();
    let page = sweep_and_report(&env);
    let data = common::report_data(&std::fs::read_to_string(&page).unwrap());
    let board = env.json(&["leaderboard", "--format", "json"]);
    let runs = data["runs"].as_array().unwrap();
    assert_eq!(runs.len(), board.as_array().unwrap().len());
    for (r, row) in runs.iter().zip(board.as_array().unwrap()) {
        assert_eq!(r["id"], row["id"], "the leaderboard's order");
        assert_eq!(r["epoch"], row["epoch"]);
        assert_eq!(r["checkpoint"], row["checkpoint"]);
        let show = env.json(&["show", &r["id"].to_string(), "--format", "json"]);
        let epochs = show["epochs"].as_array().unwrap();
        let at = epochs.iter().find(|e| e["epoch"] == r["epoch"]).unwrap();
        for m in ["val_acc", "val_loss", "train_loss"] {
            assert_eq!(r["metrics"][m], at[m], "run {} {m}", r["id"]);
        }
        // the curves: f32 little-endian in base64, NaN for no value
        let curve = &data["curves"][r["id"].to_string()];
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(curve["val_acc"].as_str().unwrap())
            .unwrap();
        let drawn: Vec<f32> = bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let stored: Vec<f32> = epochs
            .iter()
            .map(|e| e["val_acc"].as_f64().map_or(f32::NAN, |v| v as f32))
            .collect();
        assert_eq!(drawn.len(), stored.len());
        for (d, s) in drawn.iter().zip(&stored) {
            assert!(
                d == s || (d.is_nan() && s.is_nan()),
                "run {} val_acc {d} vs {s}",
                r["id"]
            );
        }
    }
    // the face task: each run's verification at its leaderboard epoch, and its dev predictions
    let faces = &data["faces"];
    let verification = faces["verification"].as_array().unwrap();
    assert_eq!(verification.len(), 4, "every run was verified every epoch");
    for (v, r) in verification.iter().zip(runs) {
        assert_eq!((&v["run"], &v["epoch"]), (&r["id"], &r["epoch"]));
        let show = env.json(&["show", &v["run"].to_string(), "--format", "json"]);
        let stored = show["verification"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["epoch"] == v["epoch"])
            .unwrap();
        assert_eq!(v["accuracy"], stored["accuracy"]);
        // cosine: the score threshold is the similarity threshold `show` prints
        assert_eq!(v["score_threshold"], stored["threshold"]);
        // every face against each of the 4 known identities, once
        let count = |k: &str| -> u64 {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .sum()
        };
        let probes = v["probes_total"].as_u64().unwrap();
        assert_eq!(count("genuine") + count("impostor"), probes * 4, "{v}");
        assert!(count("genuine") > 0 && count("genuine") < probes);
    }
    let classification = faces["classification"].as_array().unwrap();
    assert_eq!(
        classification.len(),
        4,
        "each leaderboard epoch has a kept checkpoint"
    );
    for (c, r) in classification.iter().zip(runs) {
        assert_eq!((&c["run"], &c["epoch"]), (&r["id"], &r["epoch"]));
        // the predictions kept with the checkpoint score the epoch's validation accuracy
        assert_eq!(c["accuracy"], r["metrics"]["val_acc"], "{c}");
        let worst: u64 = c["worst"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["total"].as_u64().unwrap())
            .sum();
        assert_eq!(worst, c["images"].as_u64().unwrap());
    }
}

/// Starts `runner report --watch --out PAGE` and waits for its first page.
fn start_watch(env: &Env, page: &Path) -> std::process::Child {
    let child = env
        .cmd()
        .args(["report", "--watch", "--out", s(page)])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !page.is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "no page from report --watch"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

fn runs_on(page: &Path) -> usize {
    let html = std::fs::read_to_string(page).unwrap_or_default();
    if !html.contains("report-data") {
        return 0;
    }
    common::report_data(&html)["runs"]
        .as_array()
        .map_or(0, |r| r.len())
}

fn interrupt(child: &mut std::process::Child) -> Option<i32> {
    // SAFETY: kill(2) with a child's pid and SIGINT has no memory effects.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    child.wait().unwrap().code()
}

#[test]
fn report_watch_rewrites_the_page_when_a_run_records_an_epoch() {
    let env = Env::new();
    let page = sweep_and_report(&env);
    std::fs::remove_file(&page).unwrap();
    let mut watch = start_watch(&env, &page);
    assert_eq!(runs_on(&page), 4);
    assert!(std::fs::read_to_string(&page)
        .unwrap()
        .contains("\"reload_seconds\""));
    let one = env.recipe("one.toml", "");
    let out = env.run(&[
        "run",
        s(&one),
        "--set",
        "train.epochs=1",
        "--set",
        "train.seed=9",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while runs_on(&page) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the page was not rewritten"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Ctrl-C: a last page that no longer reloads, exit 130
    assert_eq!(interrupt(&mut watch), Some(130));
    let last = std::fs::read_to_string(&page).unwrap();
    assert!(!last.contains("\"reload_seconds\""));
    assert_eq!(
        common::report_data(&last)["runs"].as_array().unwrap().len(),
        5
    );
}

#[test]
fn a_page_from_report_watch_reloads_itself_and_keeps_its_state() {
    let Some(b) = browser() else { return };
    let env = Env::new();
    let page = sweep_and_report(&env);
    std::fs::remove_file(&page).unwrap();
    let mut watch = start_watch(&env, &page);
    // the page, opened with a filter in its URL state (one run's key), reloads on its timer
    // while the watch runs; once the watch stops, the last page it wrote stops reloading
    let data = common::report_data(&std::fs::read_to_string(&page).unwrap());
    let key = data["runs"][1]["key"].as_str().unwrap().to_string();
    let state = format!("%7B%22filter%22%3A%22{key}%22%7D");
    let url = format!("file://{}#{state}", page.display());
    let browser = Command::new(&b)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=10000",
            "--dump-dom",
            &url,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(interrupt(&mut watch), Some(130));
    let out = browser.wait_with_output().unwrap();
    let d = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && d.contains("<body"), "no DOM: {d}");
    let reloads: u32 = body_attr(&d, "data-reloads").parse().unwrap();
    assert!(reloads >= 1, "the page never reloaded");
    let kept = format!("&quot;filter&quot;:&quot;{key}&quot;");
    assert!(
        body_attr(&d, "data-state").contains(&kept),
        "{}",
        body_attr(&d, "data-state")
    );
    assert_eq!(body_attr(&d, "data-errors"), "0");
    // the filter applied after the reloads: only that run's row is shown
    let lb = element(&d, "leaderboard");
    let lb = &lb[..lb.find("</table>").unwrap()];
    assert_eq!(lb.matches("data-run=").count(), 1, "{lb}");
    assert!(lb.contains(&key));
}

#[test]
fn bench_report_writes_the_page_of_a_generated_store() {
    let env = Env::new();
    let page = env.path("scale.html");
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/quickstart.toml");
    let out = env.json(&[
        "bench",
        "report",
        "--recipe",
        s(&recipe),
        "--runs",
        "20",
        "--epochs",
        "3",
        "--out",
        s(&page),
        "--format",
        "json",
    ]);
    assert_eq!(out["runs"], 20);
    assert_eq!(
        out["bytes"].as_u64().unwrap(),
        std::fs::metadata(&page).unwrap().len()
    );
    let data = common::report_data(&std::fs::read_to_string(&page).unwrap());
    assert_eq!(data["runs"].as_array().unwrap().len(), 20);
    // four learning rates x five seeds: four seed groups of five
    let groups = data["seed_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 4, "{groups:?}");
    assert!(groups.iter().all(|g| g["n"] == 5));
}
