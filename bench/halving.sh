#!/usr/bin/env bash
# Successive halving against the full grid on a real recipe: `recipes/quickstart_halving.toml`
# (9 runs x 20 epochs of the quick start) swept with its [sweep.prune] and without it
# (`--set sweep.prune.kind=none`), each in a fresh store. One JSON line per sweep on stdout:
# epochs trained, wall time, the best val_acc (the leaderboard's row: the epoch of a kept
# checkpoint) and its run, with the date, commit, CPU, ISA flags and the 1-minute load.
#   bench/halving.sh [ROUNDS] > bench/results/DATE/halving-COMMIT.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-1}
RUNNER=${RUNNER:-target/release/runner}
[ -x "$RUNNER" ] || cargo build --release --quiet
RUNNER=$(realpath "$RUNNER")
RECIPE=$(realpath recipes/quickstart_halving.toml)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
COMMIT=$(git rev-parse --short HEAD)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
ISA=$(grep -o -w 'avx512f\|avx2\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ' | sed 's/ $//')
for round in $(seq 1 "$ROUNDS"); do
  for mode in halving none; do
    dir="$WORK/$mode-$round"
    mkdir -p "$dir"
    # the data is generated once per store's cache; generate it before timing
    (cd "$dir" && "$RUNNER" --quiet data preview "$RECIPE" --out "$dir/preview.png" > /dev/null)
    load=$(cut -d' ' -f1 /proc/loadavg)
    start=$(date +%s.%N)
    (cd "$dir" && "$RUNNER" --quiet --db store.db sweep "$RECIPE" \
      --set "checkpoint.dir=\"$dir/runs\"" --set "sweep.prune.kind=\"$mode\"" > /dev/null)
    end=$(date +%s.%N)
    epochs=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM epochs').fetchone()[0])" "$dir/store.db")
    best=$(cd "$dir" && "$RUNNER" --db store.db leaderboard --metric val_acc --top 1 --format json \
      | python3 -c "import json,sys; r=json.load(sys.stdin)[0]; print(json.dumps({'run': r['id'], 'val_acc': r['val_acc'], 'epoch': r['epoch'], 'overrides': r['overrides']}))")
    printf '{"date": "%s", "commit": "%s", "cpu": "%s", "cores": %s, "isa": "%s", "load_1m": %s, "recipe": "recipes/quickstart_halving.toml", "round": %s, "prune": "%s", "runs": 9, "epochs_trained": %s, "wall_seconds": %.1f, "best": %s}\n' \
      "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$COMMIT" "$CPU" "$(nproc)" "$ISA" "$load" "$round" \
      "$mode" "$epochs" "$(echo "$end - $start" | bc)" "$best"
  done
done
