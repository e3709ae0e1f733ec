#!/usr/bin/env bash
# The header pass of `runner validate` / `run` / `sweep` (every image's header read before a
# run exists, data.on_bad_image = "fail") on a folder of about 20,000 images: `validate` with
# "fail" (layout + header pass) against "skip" (layout only), page cache warm, and cold when
# this user may drop the caches (root). One JSON line per measurement on stdout, with the
# date, commit, CPU and the 1-minute load.
#   bench/header_pass.sh [ROUNDS] > bench/results/DATE/header-pass-COMMIT.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
RUNNER=${RUNNER:-target/release/runner}
[ -x "$RUNNER" ] || cargo build --release --quiet
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$RUNNER" data synth --out "$WORK/faces" --identities 500 --images-per-identity 40 \
  --verify-identities 50 --impostors 25 --size 64 > /dev/null 2>&1
IMAGES=$(find "$WORK/faces" -name '*.jpg' | wc -l)
printf '[data]\nroot = "%s"\nimage_size = 64\n[model]\nkind = "resnet"\npreset = "18"\n' \
  "$WORK/faces" > "$WORK/r.toml"
COMMIT=$(git rev-parse --short HEAD)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
ISA=$(grep -o -w 'avx512f\|avx2\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ' | sed 's/ $//')
drop() { [ "$1" = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches; } || true; }
CACHES="warm"
if [ -w /proc/sys/vm/drop_caches ]; then CACHES="warm cold"; fi
for round in $(seq 1 "$ROUNDS"); do
  for cache in $CACHES; do
    for policy in fail skip; do
      "$RUNNER" validate "$WORK/r.toml" --set "data.on_bad_image=\"$policy\"" > /dev/null 2>&1  # warm-up
      drop "$cache"
      load=$(cut -d' ' -f1 /proc/loadavg)
      start=$(date +%s.%N)
      "$RUNNER" validate "$WORK/r.toml" --set "data.on_bad_image=\"$policy\"" > /dev/null 2>&1
      end=$(date +%s.%N)
      printf '{"date": "%s", "commit": "%s", "cpu": "%s", "cores": %s, "isa": "%s", "load_1m": %s, "images": %s, "round": %s, "cache": "%s", "on_bad_image": "%s", "validate_seconds": %.3f}\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$COMMIT" "$CPU" "$(nproc)" "$ISA" "$load" "$IMAGES" \
        "$round" "$cache" "$policy" "$(echo "$end - $start" | bc)"
    done
  done
done
