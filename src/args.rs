//! The `runner` binary's argument types beside `main.rs` (clap): the `data` and `bench`
//! subcommands, the Slurm options of `sweep`, and small choices. Not part of the library.

use std::path::PathBuf;

use clap::Subcommand;
use runner::cli::{
    self,
    output::{Format, ReportFormat},
};

use crate::Sets;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExecutorArg {
    Local,
    Slurm,
}

/// `runner sweep --executor slurm` options (over the recipe's `[slurm]` table).
#[derive(clap::Args, Clone, Default)]
pub(crate) struct SlurmArgs {
    /// Slurm partition.
    #[arg(long, value_name = "P")]
    pub(crate) partition: Option<String>,
    /// GPUs per run (--gres=gpu:N).
    #[arg(long, value_name = "N")]
    pub(crate) gpus_per_run: Option<u32>,
    /// CPUs per run (--cpus-per-task), also each task's thread count.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) cpus_per_run: Option<u32>,
    /// Memory per run (--mem), e.g. 16G.
    #[arg(long, value_name = "M")]
    pub(crate) mem: Option<String>,
    /// Time limit per run (--time), e.g. 12:00:00.
    #[arg(long, value_name = "T")]
    pub(crate) time: Option<String>,
    /// Runs at once (--array=0-(n-1)%K).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_parallel: Option<u32>,
    /// A further sbatch option (repeatable): --sbatch-arg=--account=lab.
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) sbatch_arg: Vec<String>,
    /// Wait for every task to end, collecting as they go.
    #[arg(long)]
    pub(crate) wait: bool,
}

impl SlurmArgs {
    /// The flags given, by name (they need `--executor slurm`).
    pub(crate) fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut add = |on: bool, name| {
            if on {
                v.push(name)
            }
        };
        add(self.partition.is_some(), "--partition");
        add(self.gpus_per_run.is_some(), "--gpus-per-run");
        add(self.cpus_per_run.is_some(), "--cpus-per-run");
        add(self.mem.is_some(), "--mem");
        add(self.time.is_some(), "--time");
        add(self.max_parallel.is_some(), "--max-parallel");
        add(!self.sbatch_arg.is_empty(), "--sbatch-arg");
        add(self.wait, "--wait");
        v
    }

    pub(crate) fn config(&self) -> runner::recipe::SlurmConfig {
        runner::recipe::SlurmConfig {
            partition: self.partition.clone(),
            gpus_per_run: self.gpus_per_run,
            cpus_per_run: self.cpus_per_run,
            mem: self.mem.clone(),
            time: self.time.clone(),
            max_parallel: self.max_parallel,
            sbatch_args: self.sbatch_arg.clone(),
            setup: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FromCkpt {
    Best,
    Last,
}

#[derive(Subcommand)]
pub(crate) enum DataCommand {
    /// Write the synthetic face data set in the course layout.
    Synth {
        /// Folder to write the data set to (must not exist yet).
        #[arg(long)]
        out: PathBuf,
        /// Identities in classification (train and dev).
        #[arg(long, default_value_t = 100)]
        identities: usize,
        /// Images per classification identity (split between train and dev).
        #[arg(long, default_value_t = 20)]
        images_per_identity: usize,
        /// Known identities in verification (each with gallery and unknown images).
        #[arg(long, default_value_t = 50)]
        verify_identities: usize,
        /// Impostor identities among the unknowns (their answer is n000000).
        #[arg(long, default_value_t = 25)]
        impostors: usize,
        /// Image size in pixels (square).
        #[arg(long, default_value_t = 64)]
        size: u32,
        /// Seed: the same seed writes the same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How far apart identities are and how much each image varies.
        #[arg(long, value_enum, default_value_t = cli::data::DifficultyArg::Medium)]
        difficulty: cli::data::DifficultyArg,
    },
    /// Identities, images per split, image sizes, class balance.
    Stats {
        /// A data folder in the course layout.
        dir: PathBuf,
        /// table / json: the summary; csv: one row per split and identity with its image count.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Raw-pixel and chance baselines of a recipe's data (classification and verification).
    Baseline {
        /// The recipe file (TOML) whose data to measure.
        recipe: PathBuf,
        #[command(flatten)]
        sets: Sets,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// A grid of training images after augmentation.
    Preview {
        /// The recipe file (TOML) whose training transforms to show.
        recipe: PathBuf,
        /// PNG file to write the grid of augmented training images to.
        #[arg(long)]
        out: PathBuf,
        /// How many augmented images the grid shows.
        #[arg(long, default_value_t = 32)]
        count: usize,
        #[command(flatten)]
        sets: Sets,
    },
}

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// One training step on random input at the recipe's size and batch.
    Train {
        /// The recipe file (TOML): model, size, batch and precision of the step.
        recipe: PathBuf,
        /// auto, cpu, cuda or cuda:N (same as --set train.device=...).
        #[arg(long)]
        device: Option<String>,
        /// Training steps to time (after a warm-up step).
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Also train on the recipe's real data: through the loader against cached batches.
        #[arg(long)]
        loader: bool,
        /// Also time every operation of the timed steps (the CPU side of torch.profiler's
        /// operator table): calls, milliseconds and share of a step, longest first.
        #[arg(long)]
        profile: bool,
        #[command(flatten)]
        sets: Sets,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Decoded + augmented images per second of the recipe's training pipeline.
    Data {
        /// The recipe file (TOML) whose data pipeline to time.
        recipe: PathBuf,
        #[command(flatten)]
        sets: Sets,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Model forward+backward+step throughput and the depthwise kernel against Candle's.
    Model {
        /// The recipe file (TOML) whose model to time.
        recipe: PathBuf,
        #[command(flatten)]
        sets: Sets,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Open-set matching throughput (unknowns x known identities).
    Matching {
        /// Unknown faces to match.
        #[arg(long, default_value_t = 10_000)]
        unknowns: usize,
        /// Known identities in the gallery.
        #[arg(long, default_value_t = 10_000)]
        known: usize,
        /// Embedding size.
        #[arg(long, default_value_t = 512)]
        dim: usize,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Leaderboard latency over a store filled with synthetic runs.
    Leaderboard {
        /// Runs in the synthetic store (10 epochs each).
        #[arg(long, default_value_t = 100_000)]
        runs: usize,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// `runner report` of a generated store: its size and build time (bench/report_scale.sh
    /// adds the render time in a browser).
    Report {
        /// The recipe whose resolved configuration every synthetic run has (its learning
        /// rate, drop path and seed varied).
        #[arg(long, default_value = "recipes/quickstart.toml")]
        recipe: PathBuf,
        /// Runs in the synthetic store.
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        /// Epochs per run.
        #[arg(long, default_value_t = 100)]
        epochs: u32,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
}
