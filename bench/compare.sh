#!/usr/bin/env bash
# Interleaved runner / PyTorch timing on this machine (run by hand, not in CI): training steps
# per net and shape, and (E2E=1) a whole training run. One JSON line per measurement on stdout,
# tagged with the side, the shape, the round, the 1-minute load average before it, and the
# process's peak RSS as wait4/getrusage reports it (`/usr/bin/time -f %M`, the same way for
# both sides: a fresh process doing its warm-up step and timed steps). bench/summarize.py
# turns the lines into the benchmark table (medians of the rounds).
#
#   bench/pytorch-env.sh && bench/compare.sh | tee compare.jsonl   # everything, 5 rounds
#   bench/summarize.py compare.jsonl
#   NETS="resnet18" SHAPES="64x64" ROUNDS=3 STEPS=10 E2E=0 bench/compare.sh
#   CHANNELS_LAST=0 bench/compare.sh                  # without PyTorch's channels-last lines
#   E2E_ONLY=1 E2E_EPOCHS=30 bench/compare.sh         # only the whole-run rows
#   PYTHON=/path/to/python bench/compare.sh           # any Python with bench/requirements.txt
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNER=${RUNNER:-target/release/runner}
PYTHON=${PYTHON:-.venv-bench/bin/python}
NETS=${NETS:-"resnet18 resnet50 mobilenet_v2 convnext_nano convnext_t"}
# SIZExBATCH: the issue's two shapes (64 px batch 64, 224 px batch 32)
SHAPES=${SHAPES:-"64x64 224x32"}
ROUNDS=${ROUNDS:-5}
STEPS=${STEPS:-5}
CHANNELS_LAST=${CHANNELS_LAST:-1}
E2E=${E2E:-1}
E2E_ONLY=${E2E_ONLY:-0}
E2E_EPOCHS=${E2E_EPOCHS:-30}
WORK=${WORK:-target/bench-compare}
if ! "$PYTHON" -c "import torch, torchvision, timm" >/dev/null 2>&1; then
  echo "compare.sh: no PyTorch at $PYTHON (torch, torchvision and timm are needed)." >&2
  echo "  run bench/pytorch-env.sh first (it installs bench/requirements.txt into .venv-bench)," >&2
  echo "  or set PYTHON to a Python that has them" >&2
  exit 2
fi
if [ ! -x "$RUNNER" ]; then
  echo "compare.sh: $RUNNER not found; build it first (cargo build --release) or set RUNNER" >&2
  exit 2
fi
if [ ! -x /usr/bin/time ]; then
  echo "compare.sh: /usr/bin/time (GNU time) is needed for the peak RSS; apt-get install time" >&2
  exit 2
fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RUNNER=$(cd "$(dirname "$RUNNER")" && pwd)/$(basename "$RUNNER")
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain 2>/dev/null)" ] && COMMIT="$COMMIT+dirty"

load() { cut -d' ' -f1 /proc/loadavg; }

# tag LINE SIDE ROUND LOAD RSS_KB EXTRA: the measurement's JSON with the tags in front
tag() {
  local line=$1 side=$2 round=$3 l=$4 rss=$5 extra=$6
  printf '%s\n' "$line" | tr -d '\n' | sed "s/^{/{\"side\": \"$side\", \"round\": $round, \"load\": $l, \"max_rss_mb\": $(awk "BEGIN{print $rss/1024}"), \"commit\": \"$COMMIT\", \"date\": \"$(date -u +%FT%TZ)\", $extra/"
  echo
}

# measure SIDE ROUND EXTRA CMD...: runs CMD under GNU time, prints its tagged JSON line
measure() {
  local side=$1 round=$2 extra=$3
  shift 3
  local l out rss start end
  l=$(load)
  start=$(date +%s.%N)
  out=$(/usr/bin/time -o "$WORK/rss" -f %M "$@")
  end=$(date +%s.%N)
  rss=$(tail -n1 "$WORK/rss")
  tag "$out" "$side" "$round" "$l" "$rss" "$extra \"process_wall_s\": $(awk "BEGIN{print $end - $start}"),"
}

if [ "$E2E_ONLY" != 1 ]; then
  for shape in $SHAPES; do
    size=${shape%x*}
    batch=${shape#*x}
    for net in $NETS; do
      for round in $(seq 1 "$ROUNDS"); do
        extra="\"net\": \"$net\", \"size\": $size, \"batch\": $batch,"
        measure runner "$round" "$extra" \
          "$RUNNER" bench train "bench/recipes/$net.toml" --steps "$STEPS" --format json \
          --set data.image_size="$size" --set train.batch_size="$batch"
        measure pytorch "$round" "$extra" \
          "$PYTHON" bench/pytorch_reference.py --net "$net" --steps "$STEPS" --size "$size" \
          --batch "$batch"
        if [ "$CHANNELS_LAST" = 1 ]; then
          measure pytorch_channels_last "$round" "$extra" \
            "$PYTHON" bench/pytorch_reference.py --net "$net" --steps "$STEPS" --size "$size" \
            --batch "$batch" --channels-last
        fi
      done
    done
  done
fi

if [ "$E2E" = 1 ] || [ "$E2E_ONLY" = 1 ]; then
  # one data folder for both sides, generated once (not timed)
  faces="$WORK/e2e-faces"
  if [ ! -d "$faces" ]; then
    "$RUNNER" --quiet data synth --out "$faces" --identities 40 --images-per-identity 24 \
      --verify-identities 20 --impostors 10 --size 64 >/dev/null
  fi
  extra="\"net\": \"e2e_resnet18\", \"size\": 64, \"batch\": 32, \"epochs\": $E2E_EPOCHS,"
  for round in $(seq 1 "$ROUNDS"); do
    rm -rf "$WORK/e2e-runner" "$WORK/e2e-torch"
    mkdir -p "$WORK/e2e-runner"
    l=$(load)
    start=$(date +%s.%N)
    /usr/bin/time -o "$WORK/rss" -f %M "$RUNNER" --db "$WORK/e2e-runner/e2e.db" --quiet run \
      bench/recipes/e2e_resnet18.toml --set data.root="$faces" \
      --set checkpoint.dir="$WORK/e2e-runner/runs" --set train.epochs="$E2E_EPOCHS" \
      --format json >"$WORK/e2e-runner/out.json"
    end=$(date +%s.%N)
    rss=$(tail -n1 "$WORK/rss")
    id=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$WORK/e2e-runner/out.json")
    line=$("$RUNNER" --db "$WORK/e2e-runner/e2e.db" show "$id" --format json | "$PYTHON" -c "
import json, sys
show = json.load(sys.stdin)
eps = show['epochs']
names = ['train', 'loader_wait', 'eval', 'verify', 'checkpoint', 'store']
phases = {n: sum(e['phase_seconds'][n] for e in eps) for n in names}
last = eps[-1]
print(json.dumps({'framework': 'runner', 'process_wall_s': $end - $start, 'phase_seconds': phases,
                  'train_loss': last['train_loss'], 'train_acc': last['train_acc'],
                  'val_loss': last['val_loss'], 'val_acc': last['val_acc'],
                  'verify_acc': last.get('verify_acc')}))")
    tag "$line" runner "$round" "$l" "$rss" "$extra"
    measure pytorch "$round" "$extra" \
      "$PYTHON" bench/pytorch_e2e.py --data "$faces" --out "$WORK/e2e-torch" --epochs "$E2E_EPOCHS"
  done
fi
