//! runner's TPE against its random search on Branin, 30 trials, 10 of them random first, in
//! blocks of 20 seeds: one JSON line per block (as bench/tpe_branin.py does for Optuna), with
//! the commit and date `bench/tpe_branin.sh` passes in, the CPU, its ISA flags and the load.
//!
//!     bash bench/tpe_branin.sh FIRST LAST > bench/results/DATE/tpe-branin-runner-COMMIT.jsonl

#[path = "../tests/support/branin.rs"]
mod branin;

use runner::plan::sampler::{RandomSampler, TpeSampler};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (first, last) = match args[..] {
        [a, b, ..] => (a, b),
        _ => (0, 100),
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let flags: Vec<String> = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("flags"))
                .map(|l| l.to_string())
        })
        .unwrap_or_default()
        .split_whitespace()
        .filter(|f| f.starts_with("avx") || f.starts_with("amx") || *f == "fma")
        .map(|f| format!("\"{f}\""))
        .collect();
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| "unknown".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("0");
    let mut start = first;
    while start < last {
        let mut rows = Vec::new();
        let mut wins = 0;
        for seed in start..start + 20 {
            let random = branin::best_of(
                &RandomSampler {
                    space: branin::space(),
                    seed: seed + 1000,
                },
                30,
            );
            let tpe = branin::best_of(&TpeSampler::new(branin::space(), seed, false), 30);
            wins += usize::from(tpe < random);
            rows.push(format!(
                "{{\"seed\":{seed},\"random\":{random},\"tpe\":{tpe}}}"
            ));
        }
        println!(
            "{{\"date\":\"{}\",\"commit\":\"{}\",\"cpu\":\"{cpu}\",\"isa\":[{}],\"load_1m\":{load},\"seeds\":[{start},{}],\"trials\":30,\"startup_trials\":10,\"tpe_wins\":{wins},\"runs\":[{}]}}",
            env("RUNNER_DATE"),
            env("RUNNER_COMMIT"),
            flags.join(","),
            start + 20,
            rows.join(",")
        );
        start += 20;
    }
}
