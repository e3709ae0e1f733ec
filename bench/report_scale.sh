#!/usr/bin/env bash
# The report at scale: `runner bench report` (a generated store of RUNS runs x EPOCHS epochs with
# the quick start's configuration, its learning rate, drop path and seed varied) writes the
# page and times it; then Debian's chromium, headless, renders it ROUNDS times and the page's
# own clock says when its script finished (body[data-render-ms], from navigation start, with
# per-section marks). One JSON line: date, commit, CPU, ISA flags, load, size, build time,
# render times.
#
#   bash bench/report_scale.sh [RUNS] [EPOCHS] [ROUNDS] >> bench/results/DATE/report-scale-COMMIT.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000}; epochs=${2:-100}; rounds=${3:-3}
cargo build --release --quiet >&2
out=$(mktemp -d)/report.html
bench=$(./target/release/runner bench report --runs "$runs" --epochs "$epochs" --out "$out" --format json 2>/dev/null)
renders=()
marks=""
for _ in $(seq "$rounds"); do
  dom=$(timeout 300 chromium --headless --no-sandbox --disable-gpu --dump-dom "file://$out" 2>/dev/null)
  ms=$(printf '%s' "$dom" | grep -o 'data-render-ms="[0-9]*"' | head -1 | grep -o '[0-9]*')
  errors=$(printf '%s' "$dom" | grep -o 'data-errors="[0-9]*"' | head -1 | grep -o '[0-9]*')
  marks=$(printf '%s' "$dom" | grep -o 'data-marks="[^"]*"' | head -1 | sed 's/data-marks="//; s/"$//; s/&quot;/"/g')
  [ "$errors" = "0" ] || { echo "report_scale: the page logged $errors error(s)" >&2; exit 1; }
  renders+=("$ms")
done
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
isa=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|amx|fma)' | paste -sd, -)
printf '{"date": "%s", "commit": "%s", "cpu": "%s", "cores": %s, "isa": "%s", "load_1m": %s, "chromium": "%s", "bench": %s, "render_ms": [%s], "last_marks": %s}\n' \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(git rev-parse --short HEAD)" "$cpu" "$(nproc)" "$isa" \
  "$(cut -d' ' -f1 /proc/loadavg)" "$(chromium --version 2>/dev/null | tr -d '\n')" \
  "$(printf '%s' "$bench" | tr -d '\n')" "$(IFS=,; echo "${renders[*]}")" "${marks:-null}"
rm -rf "$(dirname "$out")"
