#!/usr/bin/env bash
# runner's TPE (`sweep.mode = "tpe"`, through the library's sampler interface) against its
# random search on Branin: 30 trials, 10 random first, seeds FIRST..LAST (default 0..1000) in
# blocks of 20; one JSON line per block. bench/tpe_branin.py does the same for Optuna.
#
#   bash bench/tpe_branin.sh 0 1000 > bench/results/DATE/tpe-branin-runner-COMMIT.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example tpe_branin >&2
RUNNER_COMMIT=$(git rev-parse --short HEAD) RUNNER_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
    ./target/release/examples/tpe_branin "${1:-0}" "${2:-1000}"
