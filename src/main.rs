//! The `runner` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runner::cli::{self, output::Format, CliError, Global};

#[derive(Parser)]
#[command(name = "runner", version, about = "Declarative, reproducible experiments for face recognition CNNs on Candle")]
struct Args {
    /// The experiment store (SQLite).
    #[arg(long, global = true, env = "RUNNER_DB", default_value = "experiments.db")]
    db: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a recipe; print the resolved configuration or the errors.
    Validate {
        recipe: PathBuf,
        /// Override a key: --set optimizer.lr=0.05
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Expand a recipe into runs: index, key, swept values, status in the store.
    Plan {
        recipe: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let g = Global { db: args.db };
    let result: Result<(), CliError> = match args.command {
        Command::Validate { recipe, set } => cli::validate::run(&recipe, &set),
        Command::Plan {
            recipe,
            set,
            format,
        } => cli::plan::run(&g, &recipe, &set, format),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code as u8)
        }
    }
}
