#!/usr/bin/env bash
# Interleaved runner / PyTorch training-step timing on this machine (run by hand, not in CI).
# For each net: runner, torch, runner, torch (ROUNDS pairs), one JSON line per measurement on
# stdout, tagged with the side, the round and the 1-minute load average before it.
#
#   bench/pytorch-env.sh && bench/compare.sh   # make .venv-bench once, then all four nets
#   NETS="resnet18" ROUNDS=3 STEPS=10 bench/compare.sh
#   SIZE=224 BATCH=32 bench/compare.sh
#   PYTHON=/path/to/python bench/compare.sh    # any Python with bench/requirements.txt
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNER=${RUNNER:-target/release/runner}
PYTHON=${PYTHON:-.venv-bench/bin/python}
SIZE=${SIZE:-64}
BATCH=${BATCH:-64}
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
NETS=${NETS:-"resnet18 mobilenet_v2 convnext_nano convnext_t"}
ROUNDS=${ROUNDS:-2}
STEPS=${STEPS:-5}

load() { cut -d' ' -f1 /proc/loadavg; }

for net in $NETS; do
  for round in $(seq 1 "$ROUNDS"); do
    l=$(load)
    "$RUNNER" bench train "bench/recipes/$net.toml" --steps "$STEPS" --format json \
      --set data.image_size="$SIZE" --set train.batch_size="$BATCH" \
      | tr -d '\n' \
      | sed "s/^{/{\"side\": \"runner\", \"net\": \"$net\", \"round\": $round, \"load\": $l, /"
    echo
    l=$(load)
    "$PYTHON" bench/pytorch_reference.py --net "$net" --steps "$STEPS" --size "$SIZE" --batch "$BATCH" \
      | sed "s/^{/{\"side\": \"pytorch\", \"round\": $round, \"load\": $l, /"
  done
done
