//! Progress on stderr: an `indicatif` bar per epoch (loss, accuracy, lr, images/s, ETA) under
//! an optional sweep bar, a compact line per finished epoch; `--quiet` prints nothing but
//! errors, `--log-format json` prints one JSON object per event instead of bars.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::store::EpochMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where and how progress is shown.
#[derive(Clone)]
pub struct Reporter {
    quiet: bool,
    format: LogFormat,
    multi: MultiProgress,
    /// The sweep's bar while a sweep runs: every finished epoch moves it.
    sweep: std::sync::Arc<std::sync::Mutex<Option<ProgressBar>>>,
}

impl Reporter {
    pub fn new(quiet: bool, format: LogFormat) -> Reporter {
        let target = if quiet || format == LogFormat::Json {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Reporter {
            quiet,
            format,
            multi: MultiProgress::with_draw_target(target),
            sweep: Default::default(),
        }
    }

    /// A reporter that shows nothing (tests, library use).
    pub fn silent() -> Reporter {
        Reporter::new(true, LogFormat::Text)
    }

    /// A line on stderr: above the bars on a terminal, plain otherwise (indicatif draws
    /// nothing, `println` included, when stderr is not a terminal: a log file, a Slurm job).
    fn line(&self, text: impl AsRef<str>) {
        if self.multi.is_hidden() {
            crate::errln!("{}", text.as_ref());
        } else {
            // the bars are cleared, the line written whole (newline included), the bars
            // redrawn below it (`println` leaves the cursor at the line's end once no bar is left)
            self.multi.suspend(|| crate::errln!("{}", text.as_ref()));
        }
    }

    /// A free-form line (or a JSON event).
    pub fn info(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match self.format {
            LogFormat::Text => {
                self.line(msg);
            }
            LogFormat::Json => {
                crate::errln!("{}", serde_json::json!({"event": "info", "message": msg}))
            }
        }
    }

    /// A warning: `warning: ...` (or a JSON event with `"event": "warning"`).
    pub fn warn(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match self.format {
            LogFormat::Text => {
                self.line(format!("warning: {msg}"));
            }
            LogFormat::Json => {
                crate::errln!(
                    "{}",
                    serde_json::json!({"event": "warning", "message": msg})
                )
            }
        }
    }

    /// An error: `error: ...` (or a JSON event `{"event": "error", "message", "code"}`), shown
    /// even with `--quiet`. `code` is the exit status it leads to, if it ends the command.
    /// A recipe's problems: each shown in place (with colour on a terminal, unless `NO_COLOR`
    /// is set), or one JSON `error` event each, the last carrying the exit status `code`.
    pub fn diagnostics(&self, diags: &[crate::recipe::Diagnostic], code: Option<i32>) {
        use std::io::IsTerminal;
        match self.format {
            LogFormat::Text => {
                let styled =
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                self.line(crate::recipe::render::render_all(diags, styled));
            }
            LogFormat::Json => {
                for (i, d) in diags.iter().enumerate() {
                    let last = i + 1 == diags.len();
                    let event = crate::recipe::render::json_event(d, code.filter(|_| last));
                    crate::errln!("{event}");
                }
            }
        }
    }

    pub fn error(&self, msg: &str, code: Option<i32>) {
        match self.format {
            LogFormat::Text => self.line(format!("error: {msg}")),
            LogFormat::Json => crate::errln!(
                "{}",
                serde_json::json!({"event": "error", "message": msg, "code": code})
            ),
        }
    }

    /// How a run ended: `run ID (KEY) STATUS: metric value ...` (or a JSON event
    /// `{"event": "run_finished", "id", "key", "status", "metrics"}`).
    pub fn run_finished(
        &self,
        id: i64,
        key: &str,
        status: &str,
        metrics: &std::collections::BTreeMap<String, f64>,
    ) {
        if self.quiet {
            return;
        }
        match self.format {
            LogFormat::Text => {
                let m: Vec<String> = metrics
                    .iter()
                    .map(|(k, v)| match k.as_str() {
                        "lr" => format!("lr {}", crate::console::fmt_lr(*v)),
                        _ => format!("{k} {}", crate::console::fmt_num(*v)),
                    })
                    .collect();
                let metrics = if m.is_empty() {
                    String::new()
                } else {
                    format!(": {}", m.join("  "))
                };
                self.line(format!("run {id} ({key}) {status}{metrics}"));
            }
            LogFormat::Json => crate::errln!(
                "{}",
                serde_json::json!({
                    "event": "run_finished", "id": id, "key": key, "status": status,
                    "metrics": metrics,
                })
            ),
        }
    }

    /// The bar of a sweep: epochs done out of the epochs to train, the run in its message.
    /// Each finished epoch moves it, and it is redrawn every second, so its elapsed time and
    /// ETA move while a run trains.
    pub fn sweep_bar(&self, epochs: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(epochs));
        bar.set_style(
            ProgressStyle::with_template("sweep {bar:30.green/white} {pos}/{len} epochs  elapsed {elapsed_precise}  ETA {eta_precise}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        if !self.multi.is_hidden() {
            bar.enable_steady_tick(std::time::Duration::from_secs(1));
        }
        *self.sweep.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
        bar
    }

    /// Progress of a long task counted in `unit`s (`data synth`'s images): a bar on a
    /// terminal, and otherwise a plain line at every tenth of the way; nothing with `--quiet`
    /// or JSON logs. Safe to move from worker threads.
    pub fn task(&self, what: &str, unit: &str, total: u64) -> TaskProgress {
        let bar = (!self.quiet && self.format == LogFormat::Text && !self.multi.is_hidden())
            .then(|| {
                let bar = self.multi.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(&format!(
                        "{what} {{bar:30.cyan/blue}} {{pos}}/{{len}} {unit}  {{elapsed}}  ETA {{eta}}"
                    ))
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar
            });
        TaskProgress {
            what: what.to_string(),
            unit: unit.to_string(),
            total,
            bar,
            lines: !self.quiet && self.format == LogFormat::Text && self.multi.is_hidden(),
            tenth: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Clears the sweep's bar.
    pub fn finish_sweep_bar(&self) {
        if let Some(bar) = self.sweep.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
    }

    /// The bar of one epoch.
    pub fn epoch_bar(&self, run: &str, epoch: u32, epochs: u32, batches: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(batches));
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{run} epoch {epoch}/{epochs} {{bar:25.cyan/blue}} {{pos}}/{{len}} {{msg}} ETA {{eta}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    }

    /// The line printed when an epoch ends (and the sweep's bar moved on).
    pub fn epoch_done(&self, run: &str, epochs: u32, m: &EpochMetrics) {
        if let Some(bar) = self
            .sweep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            bar.inc(1);
        }
        if self.quiet {
            return;
        }
        match self.format {
            LogFormat::Json => {
                let mut v = serde_json::to_value(m).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("event".into(), "epoch".into());
                    o.insert("run".into(), run.into());
                }
                crate::errln!("{v}");
            }
            LogFormat::Text => {
                let opt =
                    |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
                let mut line = format!(
                    "{run} epoch {:>3}/{epochs}  lr {}  train loss {:.4} acc {:.4}  val loss {} acc {}",
                    m.epoch,
                    crate::console::fmt_lr(m.lr),
                    m.train_loss,
                    m.train_acc,
                    opt(m.val_loss),
                    opt(m.val_acc)
                );
                if let Some(v) = m.verify_acc {
                    line.push_str(&format!("  verify {v:.4}"));
                }
                line.push_str(&format!(
                    "  {:.0} img/s  {:.1}s",
                    m.images_per_sec, m.seconds
                ));
                self.line(line);
            }
        }
    }
}

/// Updates an epoch bar's message.
pub fn set_batch_message(bar: &ProgressBar, loss: f64, acc: f64, lr: f64, images_per_sec: f64) {
    bar.set_message(format!(
        "loss {loss:.4} acc {acc:.3} lr {} {images_per_sec:.0} img/s",
        crate::console::fmt_lr(lr)
    ));
}

/// A long task's progress (`Reporter::task`).
pub struct TaskProgress {
    what: String,
    unit: String,
    total: u64,
    bar: Option<ProgressBar>,
    /// Plain lines (stderr is not a terminal).
    lines: bool,
    /// The last tenth reported as a line.
    tenth: std::sync::atomic::AtomicU64,
}

impl TaskProgress {
    /// `done` of the total are finished.
    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if self.lines && self.total > 0 {
            let tenth = done * 10 / self.total;
            let before = self
                .tenth
                .fetch_max(tenth, std::sync::atomic::Ordering::Relaxed);
            if tenth > before {
                crate::errln!(
                    "{}: {done}/{} {} ({}%)",
                    self.what,
                    self.total,
                    self.unit,
                    tenth * 10
                );
            }
        }
    }

    /// Done: the bar is cleared.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
