#!/usr/bin/env bash
# The README's results table, measured (run by hand, on a quiet machine): the quick start
# (`runner sweep recipes/quickstart.toml` in an empty folder, so the wall time includes the
# data generation, 20 epochs and the verification) and recipes/synth_default.toml, ROUNDS times
# each in a fresh folder, with `runner data baseline` (raw pixels and chance) of each recipe.
# One JSON line per round to $OUT (default bench/results/DATE/COMMIT/quickstart.jsonl) with the
# leaderboard's best row, the wall seconds, the machine, date, commit and load; `bench/
# summarize.py --docs` writes the README's table and docs/results.md from it. The metrics are
# deterministic at a thread count, so the rounds must agree on them (summarize.py checks).
#
#   cargo build --release && bench/quickstart.sh
#   ROUNDS=1 RECIPES="quickstart" bench/quickstart.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNNER=${RUNNER:-$REPO/target/release/runner}
ROUNDS=${ROUNDS:-3}
RECIPES=${RECIPES:-"quickstart synth_default"}
. "$REPO/bench/machine.sh"
OUT=$(results_file quickstart.jsonl)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for round in $(seq 0 $((ROUNDS - 1))); do
  for recipe in $RECIPES; do
    dir="$WORK/$recipe-$round"
    mkdir -p "$dir"
    load=$(cut -d' ' -f1 /proc/loadavg)
    date=$(date -u +%FT%TZ)
    start=$(date +%s.%N)
    (cd "$dir" && "$RUNNER" --quiet sweep "$REPO/recipes/$recipe.toml" --format json >/dev/null)
    end=$(date +%s.%N)
    board=$(cd "$dir" && "$RUNNER" --quiet leaderboard --format json)
    # the verification of the row's checkpoint on unknown_dev (threshold tuned there), as
    # `runner eval` gives it: the leaderboard row has one only where the recipe verified at
    # that epoch
    top=$(python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])' <<<"$board")
    verify=$(cd "$dir" && "$RUNNER" --quiet eval "$top" --split verify-dev --format json)
    base=$(cd "$dir" && "$RUNNER" --quiet data baseline "$REPO/recipes/$recipe.toml" --format json)
    python3 - "$recipe" "$round" "$load" "$date" "$COMMIT" "$CPU_MODEL" "$(nproc)" "$CPU_FLAGS" \
      "$(awk "BEGIN{print $end - $start}")" "$board" "$base" "${RAYON_NUM_THREADS:-$(nproc)}" \
      "$verify" <<'PY' | tee -a "$OUT"
import json, sys
recipe, rnd, load, date, commit, cpu, cores, isa, wall, board, base, threads, verify = sys.argv[1:]
row = json.loads(board)[0]
v = json.loads(verify)
keep = ("id", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "verify_acc")
print(json.dumps({"kind": "quickstart", "recipe": recipe, "round": int(rnd), "wall_s": float(wall),
                  "threads": int(threads), "best": {k: row.get(k) for k in keep},
                  "verify_dev": {k: v.get(k) for k in ("accuracy", "epoch", "threshold")},
                  "baseline": {k: v for k, v in json.loads(base).items() if k != "skipped_images"},
                  "date": date, "commit": commit, "load": float(load),
                  "machine": f"{cpu}, {cores} cores", "cpu": cpu, "cores": int(cores), "isa": isa}))
PY
  done
done
echo "quickstart.sh: wrote $OUT" >&2
