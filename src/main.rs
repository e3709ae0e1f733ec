//! The `runner` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runner::cli::{
    self,
    output::{Format, ReportFormat},
    CliError, Global,
};
use runner::engine::progress::{LogFormat, Reporter};

mod args;
use args::{BenchCommand, DataCommand, ExecutorArg, FromCkpt, SlurmArgs};

#[derive(Parser)]
#[command(
    name = "runner",
    version,
    about = "Declarative, reproducible experiments for face recognition CNNs on Candle"
)]
struct Args {
    /// The experiment store (SQLite).
    #[arg(
        long,
        global = true,
        env = "RUNNER_DB",
        default_value = "experiments.db",
        help_heading = "Global options"
    )]
    db: PathBuf,
    /// Print nothing but errors and results.
    #[arg(long, global = true, help_heading = "Global options")]
    quiet: bool,
    /// Progress as text (bars and lines) or JSON lines on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, help_heading = "Global options")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Sets {
    /// Override a recipe key, typed by the schema: --set optimizer.lr=0.05 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(clap::Args, Clone)]
struct SweepAxes {
    /// Sweep a key over values split on top-level commas (Hydra's multirun): --sweep
    /// 'optimizer.lr=1e-3,2e-3'; each adds a grid axis, or replaces the recipe's axis for that
    /// key (repeatable).
    #[arg(long = "sweep", value_name = "KEY=V1,V2,...")]
    sweep: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a recipe; print the resolved configuration or the errors.
    Validate {
        /// The recipe file (TOML).
        recipe: PathBuf,
        #[command(flatten)]
        sets: Sets,
        #[command(flatten)]
        axes: SweepAxes,
    },
    /// Expand a recipe into runs: index, key, swept values, status in the store.
    Plan {
        /// The recipe file (TOML).
        recipe: PathBuf,
        #[command(flatten)]
        sets: Sets,
        #[command(flatten)]
        axes: SweepAxes,
        /// Accepted, as `sweep --dry-run` takes it: `plan` never trains anything.
        #[arg(long)]
        dry_run: bool,
        /// Print what the runs not done cost: epochs x images x seconds per image from earlier
        /// runs of the same model, size, precision, device and threads, per device.
        #[arg(long)]
        cost: bool,
        /// With --cost: a short `bench train` where no earlier run matches.
        #[arg(long, requires = "cost")]
        measure: bool,
        /// Output format: an aligned table, JSON or CSV.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Train one run (a recipe whose sweep yields one point).
    Run {
        /// The recipe file (TOML); its sweep must yield one run (fix swept keys with --set).
        recipe: PathBuf,
        #[command(flatten)]
        sets: Sets,
        /// auto, cpu, cuda or cuda:N (same as --set train.device=...).
        #[arg(long)]
        device: Option<String>,
        /// Train a fresh run even if one with the same key is done.
        #[arg(long)]
        force: bool,
        /// Output: the run id (table) or {id, key, status, metrics} (json).
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Plan a recipe and train every run not yet done, one after another.
    Sweep {
        /// The recipe file (TOML).
        recipe: PathBuf,
        #[command(flatten)]
        sets: Sets,
        #[command(flatten)]
        axes: SweepAxes,
        /// auto, cpu, cuda or cuda:N (same as --set train.device=...).
        #[arg(long)]
        device: Option<String>,
        /// Train at most N runs in this invocation.
        #[arg(long)]
        max_runs: Option<usize>,
        /// Show the plan; train nothing.
        #[arg(long)]
        dry_run: bool,
        /// Rerun failed and diverged runs.
        #[arg(long)]
        retry_failed: bool,
        /// Stop at the first failed or diverged run.
        #[arg(long)]
        fail_fast: bool,
        /// Train nothing: delete the checkpoint files of the sweep's pruned runs (they can no
        /// longer be resumed; their records stay).
        #[arg(long, conflicts_with_all = ["dry_run", "jobs"])]
        clean_pruned: bool,
        /// Where the runs train: here, one after another, or on a Slurm cluster as a job
        /// array (docs/cluster.md).
        #[arg(long, value_enum, default_value_t = ExecutorArg::Local)]
        executor: ExecutorArg,
        /// Train N runs at once here, each in its own process (docs/sweeps.md).
        #[arg(long)]
        jobs: Option<usize>,
        /// With --jobs: the device of each job, e.g. cuda:0,cuda:1, cuda:0,cuda:0 or cpu,cpu.
        #[arg(long, value_delimiter = ',', requires = "jobs")]
        devices: Vec<String>,
        /// With --jobs: threads per run (default: the cores split evenly among the jobs).
        #[arg(long, requires = "jobs")]
        threads_per_run: Option<usize>,
        #[command(flatten)]
        slurm: SlurmArgs,
        /// Output: the summary and leaderboard (table) or one object per run (json).
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// What each task of a Slurm job array runs: trains run I of the manifest, writing its
    /// records into the run's folder (never into the store).
    Exec {
        /// The job array's manifest (written by `runner sweep --executor slurm`).
        manifest: PathBuf,
        /// The run of the manifest to train (the array task id).
        #[arg(long)]
        index: usize,
    },
    /// Import the records of Slurm tasks into the store (idempotent).
    Collect {
        /// Only this sweep's runs (default: every submitted run).
        sweep: Option<i64>,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Runs submitted to Slurm: store status, Slurm state, job and task, last epoch, log.
    Status {
        /// Only this sweep's runs (default: every run ever submitted).
        sweep: Option<i64>,
        /// Output format: an aligned table, JSON or CSV.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Continue a run (or the best run) from its checkpoint as a new, linked run.
    Resume {
        /// Run id or key (prefix).
        run: Option<String>,
        /// Continue the best run of the leaderboard.
        #[arg(long, conflicts_with = "run")]
        best: bool,
        /// The metric of the leaderboard row whose checkpoint --from best continues (default:
        /// the run's checkpoint.monitor; with --best, also the metric that ranks the runs,
        /// default val_acc).
        #[arg(long)]
        metric: Option<String>,
        /// Which checkpoint: the leaderboard row's (best by --metric among the kept ones), or
        /// the last kept one.
        #[arg(long, value_enum, default_value_t = FromCkpt::Best)]
        from: FromCkpt,
        /// The new total number of epochs.
        #[arg(long)]
        epochs: Option<u32>,
        /// Train a fresh linked run even if this resume (same run, checkpoint and settings)
        /// is already done.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        sets: Sets,
        /// auto, cpu, cuda or cuda:N (same as --set train.device=...).
        #[arg(long)]
        device: Option<String>,
        /// Output: the new run id (table) or {id, key, status, metrics} (json).
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// List every run in the store.
    Runs {
        /// Output format: an aligned table, JSON or CSV.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One run: configuration, per-epoch metrics, checkpoints, verification, parent.
    Show {
        /// Run id or key (prefix).
        run: String,
        /// Output format: text or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Runs ranked by a metric: one row per run, one epoch per row (the best by the metric
    /// among the epochs with a kept checkpoint), with that checkpoint.
    Leaderboard {
        /// The metric that ranks the runs and picks each row's epoch (train_loss, train_acc, val_loss, val_acc, verify_acc, lr).
        #[arg(long, default_value = "val_acc")]
        metric: String,
        /// Show only the N best rows.
        #[arg(long)]
        top: Option<usize>,
        /// Filter: e.g. 'model.kind = "convnext" and optimizer.lr < 0.1'.
        #[arg(long = "where", value_name = "EXPR")]
        filter: Option<String>,
        /// Aggregate by a config key (mean and standard deviation).
        #[arg(long)]
        group_by: Option<String>,
        /// Only runs planned from this recipe file (as given to `sweep` / `run`).
        #[arg(long, conflicts_with = "sweep")]
        recipe: Option<String>,
        /// Only this sweep id.
        #[arg(long)]
        sweep: Option<i64>,
        /// Each metric's best over the run's epochs (each from its own epoch, no one
        /// checkpoint scores them together) instead of one epoch per row.
        #[arg(long)]
        best_over_epochs: bool,
        /// Output format: an aligned table, JSON or CSV.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The top run of the leaderboard, as `show` prints it, with its row's epoch and checkpoint.
    Best {
        /// The metric that ranks the runs (as `leaderboard --metric`).
        #[arg(long, default_value = "val_acc")]
        metric: String,
        /// Output format: text or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Two runs side by side: configuration differences and best metrics.
    Compare {
        /// The first run: id or key (prefix).
        a: String,
        /// The second run: id or key (prefix).
        b: String,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Metrics of a run or checkpoint on a split; optionally the course's submission CSV.
    Eval {
        /// Run id / key prefix, or a checkpoint file.
        target: String,
        /// What to score: dev or test (classification), verify-dev or verify-test (open-set verification), pairs (a pairs list).
        #[arg(long, value_enum)]
        split: cli::eval::Split,
        /// Write the course CSV (id,label) here.
        #[arg(long)]
        submission: Option<PathBuf>,
        /// The pairs list for --split pairs (`img1 img2 same` per line).
        #[arg(long)]
        pairs: Option<PathBuf>,
        /// Which checkpoint of a run: its leaderboard row's for this metric (default: the
        /// run's checkpoint.monitor).
        #[arg(long)]
        metric: Option<String>,
        /// Output format: text or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Write a run's (or checkpoint's) model weights as safetensors with timm/torchvision
    /// names and layout (docs/interop.md).
    Export {
        /// Run id / key prefix (its leaderboard row's checkpoint), or a checkpoint file.
        target: String,
        /// The safetensors file to write.
        #[arg(long)]
        out: PathBuf,
        /// Which checkpoint of a run: its leaderboard row's for this metric (default: the
        /// run's checkpoint.monitor).
        #[arg(long)]
        metric: Option<String>,
    },
    /// For each image, the best identity of a gallery folder and its score.
    Match {
        /// Run id / key prefix, or a checkpoint file.
        target: String,
        /// A folder of identity folders.
        #[arg(long)]
        gallery: PathBuf,
        /// The images to identify: files, or folders of images.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Which checkpoint of a run: its leaderboard row's for this metric (default: the
        /// run's checkpoint.monitor).
        #[arg(long)]
        metric: Option<String>,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// The built-in synthetic data set, data statistics and augmentation previews.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Layers, output shapes, parameters, MACs and memory of a recipe's model.
    Inspect {
        /// The recipe file (TOML).
        recipe: PathBuf,
        /// Number of classes (default: from the recipe or its data).
        #[arg(long)]
        classes: Option<usize>,
        #[command(flatten)]
        sets: Sets,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Benchmarks: training step, data pipeline, model kernels, matching.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Run every recipe that appears or changes in a folder.
    Watch {
        /// The folder to watch for recipe files.
        dir: PathBuf,
        /// auto, cpu, cuda or cuda:N for every run (same as --set train.device=...).
        #[arg(long)]
        device: Option<String>,
    },
    /// The GPU path checked against the CPU on this machine: one op of each kind, then every
    /// model family (forward, gradients, one SGD step) in f32, bf16 and f16.
    Selftest {
        /// The CUDA device to check (cuda or cuda:N).
        #[arg(long, default_value = "cuda")]
        device: String,
        /// smoke: one op of each kind (f32, bf16); parity: every model family (f32, bf16,
        /// f16); all: both.
        #[arg(long, value_enum, default_value_t = runner::engine::selftest::Stages::All)]
        stage: runner::engine::selftest::Stages,
        /// Only NVRTC-compile every kernel source for --arch (needs no GPU).
        #[arg(long)]
        compile_only: bool,
        /// Only print the CUDA version the driver supports and NVRTC's (needs no GPU), and say
        /// when NVRTC is newer than the driver.
        #[arg(long)]
        versions: bool,
        /// Architectures for --compile-only (sm_80, sm_89, sm_90, ...).
        #[arg(long, value_delimiter = ',', default_value = "sm_80,sm_90")]
        arch: Vec<String>,
        /// Output: one line per check (table) or one JSON object per check.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// A self-contained HTML report: leaderboard, learning curves, configurations.
    Report {
        /// Only the runs this sweep planned.
        #[arg(long)]
        sweep: Option<i64>,
        /// Only runs planned from this recipe file (as `leaderboard --recipe`).
        #[arg(long, conflicts_with = "sweep")]
        recipe: Option<String>,
        /// Filter, as `leaderboard --where`: e.g. 'optimizer.lr < 0.1'.
        #[arg(long = "where", value_name = "EXPR")]
        filter: Option<String>,
        /// Also a table of the runs grouped by a config key (mean and standard deviation), as
        /// `leaderboard --group-by`.
        #[arg(long)]
        group_by: Option<String>,
        /// The metric that ranks the runs (as `leaderboard --metric`).
        #[arg(long, default_value = "val_acc")]
        metric: String,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
        /// Rewrite the file after every change to the store (each epoch of each run) until
        /// Ctrl-C; the open page reloads itself and keeps its state.
        #[arg(long)]
        watch: bool,
    },
}

/// Whether the raw arguments ask for `--log-format json` (read before clap, for its errors).
fn wants_json_log() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--log-format=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--log-format" && w[1] == "json")
}

fn main() -> ExitCode {
    // A closed pipe (`runner run ... | head -1`) must not kill a training run: writes then fail
    // with EPIPE, and `runner::console` drops the output and stops the run as an interrupt
    // does. (Child processes get the default disposition back: std resets it on spawn.)
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // Before any thread starts: it sets an environment variable.
    runner::kernels::candle_elementwise_single_thread();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            if code != 0 && wants_json_log() {
                // a usage error under `--log-format json` is an error event like any other
                let message = e.to_string();
                Reporter::new(false, LogFormat::Json).error(message.trim_end(), Some(2));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(code);
        }
    };
    let g = Global { db: args.db };
    let reporter = Reporter::new(args.quiet, args.log_format);
    let train_opts = |sets: &Sets, device: Option<String>, format: Format| cli::train::TrainOpts {
        sets: sets.set.clone(),
        device,
        format,
        reporter: reporter.clone(),
    };
    let result: Result<(), CliError> = match args.command {
        Command::Validate { recipe, sets, axes } => cli::with_sweep_axes(&sets.set, &axes.sweep)
            .and_then(|sets| cli::validate::run(&recipe, &sets, &reporter)),
        Command::Plan {
            recipe,
            sets,
            axes,
            dry_run: _,
            cost,
            measure,
            format,
        } => cli::with_sweep_axes(&sets.set, &axes.sweep).and_then(|sets| {
            if cost {
                cli::plan::cost(&g, &recipe, &sets, measure, format)
            } else {
                cli::plan::run(&g, &recipe, &sets, format)
            }
        }),
        Command::Run {
            recipe,
            sets,
            device,
            force,
            format,
        } => cli::train::run(&g, &recipe, force, train_opts(&sets, device, format.into())),
        Command::Sweep {
            recipe,
            sets,
            axes,
            device,
            max_runs,
            dry_run,
            retry_failed,
            fail_fast,
            clean_pruned,
            executor,
            jobs,
            devices,
            threads_per_run,
            slurm,
            format,
        } => {
            let opts = runner::engine::executor::SweepOptions {
                max_runs,
                retry_failed,
                fail_fast,
                prune: None,
                jobs: jobs.map(|jobs| runner::engine::executor::JobsOptions {
                    jobs,
                    devices,
                    threads_per_run,
                }),
            };
            match cli::with_sweep_axes(&sets.set, &axes.sweep) {
                Err(e) => Err(e),
                Ok(set) if clean_pruned => {
                    cli::sweep::clean_pruned(&g, &recipe, &set, format.into(), &reporter)
                }
                Ok(set) => {
                    let o = train_opts(&Sets { set }, device, format.into());
                    match executor {
                        ExecutorArg::Local => match slurm.given().as_slice() {
                            [] => cli::sweep::run(&g, &recipe, &opts, dry_run, o),
                            given => Err(CliError::invalid(format!(
                                "{} {} --executor slurm",
                                given.join(", "),
                                if given.len() == 1 { "needs" } else { "need" }
                            ))),
                        },
                        ExecutorArg::Slurm => {
                            let flags = cli::cluster::SlurmFlags {
                                opts: slurm.config(),
                                wait: slurm.wait,
                            };
                            cli::cluster::sweep(&g, &recipe, &opts, flags, dry_run, o)
                        }
                    }
                }
            }
        }
        Command::Exec { manifest, index } => cli::cluster::run_exec(&manifest, index, &reporter),
        Command::Collect { sweep, format } => {
            cli::cluster::run_collect(&g, sweep, format.into(), &reporter)
        }
        Command::Status { sweep, format } => cli::cluster::run_status(&g, sweep, format, &reporter),
        Command::Resume {
            run,
            best,
            metric,
            from,
            epochs,
            force,
            sets,
            device,
            format,
        } => {
            let target = match (run, best) {
                (Some(r), false) => Ok(cli::train::ResumeTarget::Run(r)),
                (None, true) => Ok(cli::train::ResumeTarget::Best),
                _ => Err(CliError::invalid("resume: give a RUN or --best")),
            };
            target.and_then(|t| {
                cli::train::resume(
                    &g,
                    cli::train::ResumeArgs {
                        target: t,
                        from_best: from == FromCkpt::Best,
                        metric,
                        epochs,
                        force,
                    },
                    train_opts(&sets, device, format.into()),
                )
            })
        }
        Command::Runs { format } => cli::runs::list(&g, format),
        Command::Show { run, format } => cli::runs::show(&g, &run, format.into()),
        Command::Leaderboard {
            metric,
            top,
            filter,
            group_by,
            recipe,
            sweep,
            best_over_epochs,
            format,
        } => {
            let q = cli::leaderboard::Query {
                metric,
                top,
                filter,
                group_by,
                recipe,
                sweep,
                best_over_epochs,
            };
            cli::leaderboard::run(&g, &q, format)
        }
        Command::Best { metric, format } => cli::leaderboard::best(&g, &metric, format.into()),
        Command::Compare { a, b, format } => cli::runs::compare(&g, &a, &b, format.into()),
        Command::Eval {
            target,
            split,
            submission,
            pairs,
            metric,
            format,
        } => cli::eval::eval(
            &g,
            &target,
            split,
            submission.as_deref(),
            pairs.as_deref(),
            metric.as_deref(),
            format.into(),
            &reporter,
        ),
        Command::Export {
            target,
            out,
            metric,
        } => cli::export::run(&g, &target, metric.as_deref(), &out, &reporter),
        Command::Match {
            target,
            gallery,
            images,
            metric,
            format,
        } => cli::eval::match_images(
            &g,
            &target,
            &gallery,
            &images,
            metric.as_deref(),
            format.into(),
            &reporter,
        ),
        Command::Data { command } => match command {
            DataCommand::Synth {
                out,
                identities,
                images_per_identity,
                verify_identities,
                impostors,
                size,
                seed,
                difficulty,
            } => {
                let cfg = runner::recipe::SynthConfig {
                    identities,
                    images_per_identity,
                    verify_identities,
                    impostors,
                    size,
                    seed,
                    difficulty: difficulty.into(),
                };
                cli::data::synth(&out, &cfg, &reporter)
            }
            DataCommand::Stats { dir, format } => cli::data::stats(&dir, format),
            DataCommand::Baseline {
                recipe,
                sets,
                format,
            } => cli::data::baseline(&recipe, &sets.set, format.into()),
            DataCommand::Preview {
                recipe,
                out,
                count,
                sets,
            } => cli::data::preview(&recipe, &sets.set, &out, count),
        },
        Command::Inspect {
            recipe,
            classes,
            sets,
            format,
        } => cli::inspect::run(&recipe, &sets.set, classes, format.into()),
        Command::Bench { command } => match command {
            BenchCommand::Train {
                recipe,
                device,
                steps,
                loader,
                profile,
                sets,
                format,
            } => {
                let mut sets = sets.set;
                if let Some(d) = device {
                    sets.push(format!("train.device=\"{d}\""));
                }
                cli::bench::train(&recipe, &sets, steps, loader, profile, format.into())
            }
            BenchCommand::Data {
                recipe,
                sets,
                format,
            } => cli::bench::data(&recipe, &sets.set, format.into()),
            BenchCommand::Model {
                recipe,
                sets,
                format,
            } => cli::bench::model(&recipe, &sets.set, format.into()),
            BenchCommand::Matching {
                unknowns,
                known,
                dim,
                format,
            } => cli::bench::matching(unknowns, known, dim, format.into()),
            BenchCommand::Leaderboard { runs, format } => {
                cli::bench::leaderboard(runs, format.into())
            }
            BenchCommand::Report {
                recipe,
                runs,
                epochs,
                out,
                format,
            } => cli::bench::report(&recipe, runs, epochs, &out, format.into()),
        },
        Command::Watch { dir, device } => cli::watch::run(&g, &dir, device, &reporter),
        Command::Report {
            sweep,
            recipe,
            filter,
            group_by,
            metric,
            out,
            watch,
        } => {
            let q = cli::leaderboard::Query {
                metric,
                sweep,
                recipe,
                filter,
                group_by,
                ..Default::default()
            };
            cli::report::run(&g, &q, &out, watch)
        }
        Command::Selftest {
            device,
            stage,
            compile_only,
            versions,
            arch,
            format,
        } => {
            if versions {
                cli::selftest::versions()
            } else {
                cli::selftest::run(&device, stage, compile_only, &arch, format.into())
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.code.clamp(1, 255);
            if e.diagnostics.is_empty() {
                reporter.error(&e.message, Some(code));
            } else {
                reporter.diagnostics(&e.diagnostics, Some(code));
            }
            ExitCode::from(code as u8)
        }
    }
}
