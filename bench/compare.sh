#!/usr/bin/env bash
# Interleaved runner / PyTorch training-step timing on this machine (run by hand, not in CI).
# For each net: runner, torch, runner, torch (ROUNDS pairs), one JSON line per measurement on
# stdout, tagged with the side, the round and the 1-minute load average before it.
#
#   bench/compare.sh                       # all four nets, 2 rounds, 5 steps
#   NETS="resnet18" ROUNDS=3 STEPS=10 bench/compare.sh
#   PYTHON=/path/to/python bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNER=${RUNNER:-target/release/runner}
PYTHON=${PYTHON:-/tmp/tvenv/bin/python}
NETS=${NETS:-"resnet18 mobilenet_v2 convnext_nano convnext_t"}
ROUNDS=${ROUNDS:-2}
STEPS=${STEPS:-5}

load() { cut -d' ' -f1 /proc/loadavg; }

for net in $NETS; do
  for round in $(seq 1 "$ROUNDS"); do
    l=$(load)
    "$RUNNER" bench train "bench/recipes/$net.toml" --steps "$STEPS" --format json \
      | tr -d '\n' \
      | sed "s/^{/{\"side\": \"runner\", \"net\": \"$net\", \"round\": $round, \"load\": $l, /"
    echo
    l=$(load)
    "$PYTHON" bench/pytorch_reference.py --net "$net" --steps "$STEPS" \
      | sed "s/^{/{\"side\": \"pytorch\", \"round\": $round, \"load\": $l, /"
  done
done
