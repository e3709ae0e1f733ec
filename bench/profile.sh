#!/usr/bin/env bash
# Where a training step's time goes, runner against PyTorch at its best (run by hand, on a quiet
# machine): `runner bench train --profile` (every operation of the timed steps) and
# bench/pytorch_reference.py --profile (torch.profiler's top-level operators) in ROUNDS
# interleaved rounds per row, PyTorch in CONFIG (default channels_last+tcmalloc, the
# configuration bench/compare.sh's screening chose on 9 of 10 rows on 2026-12-08). One JSON
# line per measurement to $OUT (default bench/results/DATE/COMMIT/profile.jsonl) with the
# machine, date, commit and load; `bench/summarize.py --profile FILE` groups the operations
# (convolutions, BatchNorm with its activation, forward and backward) side by side.
#
#   bench/pytorch-env.sh && cargo build --release && bench/profile.sh
#   ROWS="resnet50:64x64" ROUNDS=1 CONFIG=nchw+malloc bench/profile.sh
#   BEFORE=/path/to/older/runner BEFORE_COMMIT=abc1234 bench/profile.sh   # also an older build,
#                                        # as side runner_before in every round (before / after)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNNER=${RUNNER:-$REPO/target/release/runner}
PYTHON=${PYTHON:-$REPO/.venv-bench/bin/python}
ROWS=${ROWS:-"mobilenet_v2:64x64 resnet50:64x64"}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-5}
CONFIG=${CONFIG:-channels_last+tcmalloc}
TCMALLOC=${TCMALLOC:-/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4}
JEMALLOC=${JEMALLOC:-/usr/lib/x86_64-linux-gnu/libjemalloc.so.2}
if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
  echo "profile.sh: $PYTHON has no torch; run bench/pytorch-env.sh (or set PYTHON)" >&2
  exit 2
fi
layout=${CONFIG%+*}
alloc=${CONFIG#*+}
PT_ARGS=()
[ "$layout" = channels_last ] && PT_ARGS+=(--channels-last)
PRELOAD=""
case "$alloc" in
  malloc) ;;
  tcmalloc) PRELOAD=$TCMALLOC ;;
  jemalloc) PRELOAD=$JEMALLOC ;;
  *) echo "profile.sh: CONFIG=$CONFIG: the allocator is malloc, jemalloc or tcmalloc" >&2; exit 2 ;;
esac
if [ -n "$PRELOAD" ] && [ ! -f "$PRELOAD" ]; then
  echo "profile.sh: $PRELOAD not found (apt-get install libtcmalloc-minimal4 libjemalloc2)" >&2
  exit 2
fi
. "$REPO/bench/machine.sh"
OUT=$(results_file profile.jsonl)
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

emit() { # SIDE NET SIZE BATCH ROUND LOAD DATE JSON
  local commit=$COMMIT
  [ "$1" = runner_before ] && commit=${BEFORE_COMMIT:-unknown}
  python3 - "$@" "$commit" "$CPU_MODEL" "$(nproc)" "$CPU_FLAGS" "$CONFIG" <<'PY' | tee -a "$OUT"
import json, sys
side, net, size, batch, rnd, load, date, body, commit, cpu, cores, isa, config = sys.argv[1:]
b = json.loads(body)
keep = ("images_per_sec", "forward_ms", "backward_ms", "step_ms", "threads", "framework", "ops")
line = {"kind": "profile", "side": side, "net": net, "size": int(size), "batch": int(batch),
        "round": int(rnd), **{k: b[k] for k in keep if k in b}, "date": date, "commit": commit,
        "load": float(load), "machine": f"{cpu}, {cores} cores", "cpu": cpu, "cores": int(cores),
        "isa": isa}
if side == "pytorch":
    line["config"] = config
print(json.dumps(line))
PY
}

for round in $(seq 0 $((ROUNDS - 1))); do
  for row in $ROWS; do
    net=${row%%:*}; shape=${row#*:}; size=${shape%x*}; batch=${shape#*x}
    l=$(cut -d' ' -f1 /proc/loadavg); d=$(date -u +%FT%TZ)
    body=$(cd "$WORK" && RAYON_NUM_THREADS=2 "$RUNNER" --quiet bench train "$REPO/bench/recipes/$net.toml" \
      --set "data.image_size=$size" --set "train.batch_size=$batch" --steps "$STEPS" --profile --format json)
    emit runner "$net" "$size" "$batch" "$round" "$l" "$d" "$body"
    if [ -n "${BEFORE:-}" ]; then
      l=$(cut -d' ' -f1 /proc/loadavg); d=$(date -u +%FT%TZ)
      body=$(cd "$WORK" && RAYON_NUM_THREADS=2 "$BEFORE" --quiet bench train "$REPO/bench/recipes/$net.toml" \
        --set "data.image_size=$size" --set "train.batch_size=$batch" --steps "$STEPS" --profile --format json)
      emit runner_before "$net" "$size" "$batch" "$round" "$l" "$d" "$body"
    fi
    l=$(cut -d' ' -f1 /proc/loadavg); d=$(date -u +%FT%TZ)
    body=$(LD_PRELOAD=$PRELOAD "$PYTHON" "$REPO/bench/pytorch_reference.py" --net "$net" --size "$size" \
      --batch "$batch" --steps "$STEPS" --threads 2 "${PT_ARGS[@]}" --profile 2>/dev/null)
    emit pytorch "$net" "$size" "$batch" "$round" "$l" "$d" "$body"
  done
done
echo "profile.sh: wrote $OUT" >&2
