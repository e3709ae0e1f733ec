#!/usr/bin/env bash
# Successive halving against the full grid on a real recipe: `recipes/quickstart_halving.toml`
# (9 runs x 20 epochs of the quick start) swept with its [sweep.prune] and without it
# (`--set sweep.prune.kind=none`), each in a fresh store, halving with each grace in $GRACES
# (default "2 3"; the recipe says 2). One JSON line per sweep on stdout: epochs trained, wall
# time, the best val_acc (the leaderboard's row: the epoch of a kept checkpoint) and its run,
# and every run's leaderboard val_acc, with the date, commit, CPU, ISA flags and the 1-minute
# load.
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
GRACES=${GRACES:-2 3}
for round in $(seq 1 "$ROUNDS"); do
  for variant in $(for g in $GRACES; do echo "halving:$g"; done) none:0; do
    mode=${variant%:*}
    grace=${variant#*:}
    dir="$WORK/$mode-$grace-$round"
    mkdir -p "$dir"
    # the data is generated once per store's cache; generate it before timing
    (cd "$dir" && "$RUNNER" --quiet data preview "$RECIPE" --out "$dir/preview.png" > /dev/null 2>&1)
    load=$(cut -d' ' -f1 /proc/loadavg)
    start=$(date +%s.%N)
    (cd "$dir" && "$RUNNER" --quiet --db store.db sweep "$RECIPE" \
      --set "checkpoint.dir=\"$dir/runs\"" --set "sweep.prune.kind=\"$mode\"" \
      --set "sweep.prune.grace_epochs=$((grace > 0 ? grace : 1))" > /dev/null)
    end=$(date +%s.%N)
    epochs=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM epochs').fetchone()[0])" "$dir/store.db")
    best=$(cd "$dir" && "$RUNNER" --db store.db leaderboard --metric val_acc --format json \
      | python3 -c "import json,sys; rs=json.load(sys.stdin); r=rs[0]; print(json.dumps({'run': r['id'], 'val_acc': r['val_acc'], 'epoch': r['epoch'], 'overrides': r['overrides']}) + ', \"runs_val_acc\": ' + json.dumps([{'overrides': x['overrides'], 'val_acc': x['val_acc'], 'epoch': x['epoch'], 'status': x['status']} for x in rs]))")
    printf '{"date": "%s", "commit": "%s", "cpu": "%s", "cores": %s, "isa": "%s", "load_1m": %s, "recipe": "recipes/quickstart_halving.toml", "round": %s, "prune": "%s", "grace_epochs": %s, "runs": 9, "epochs_trained": %s, "wall_seconds": %.1f, "best": %s}\n' \
      "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$COMMIT" "$CPU" "$(nproc)" "$ISA" "$load" "$round" \
      "$mode" "$grace" "$epochs" "$(echo "$end - $start" | bc)" "$best"
  done
done
