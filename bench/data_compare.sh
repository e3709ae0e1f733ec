#!/usr/bin/env bash
# runner's data pipeline against torchvision + PIL on the same JPEG files (run by hand, on a
# quiet machine): decode + RandomResizedCrop + horizontal flip + ColorJitter(0.4, 0.4, 0.4) +
# ToTensor + Normalize, batches of 64, 512 images, at 64 px (from 64 px JPEGs) and 224 px
# (from 256 px JPEGs), 1 and 2 threads (runner) or DataLoader workers (torchvision; 1 = in
# process). ROUNDS interleaved rounds of `runner bench data recipes/quickstart.toml` (which
# writes the JPEGs), then bench/torchvision_data.py at both sizes, plain and with
# THP_MEM_ALLOC_ENABLE=1 (PyTorch's huge-page switch); summarize.py takes torchvision's better
# setting per case. One JSON line per measurement to $OUT (default
# bench/results/DATE/COMMIT/data.jsonl) with the machine, date, commit and load.
#
#   bench/pytorch-env.sh && cargo build --release && bench/data_compare.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNNER=${RUNNER:-$REPO/target/release/runner}
PYTHON=${PYTHON:-$REPO/.venv-bench/bin/python}
ROUNDS=${ROUNDS:-3}
if ! "$PYTHON" -c 'import torchvision' 2>/dev/null; then
  echo "data_compare.sh: $PYTHON has no torchvision; run bench/pytorch-env.sh (or set PYTHON)" >&2
  exit 2
fi
. "$REPO/bench/machine.sh"
OUT=$(results_file data.jsonl)
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
IMAGES=${TMPDIR:-/tmp}/runner-bench-data
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# emit SIDE ROUND LOAD DATE JSON: one tagged line
emit() {
  python3 - "$@" "$COMMIT" "$CPU_MODEL" "$(nproc)" "$CPU_FLAGS" <<'PY' | tee -a "$OUT"
import json, sys
side, rnd, load, date, body, commit, cpu, cores, isa = sys.argv[1:]
b = json.loads(body)
cases = b["typical"]["cases"] if "typical" in b else b["cases"]
stages = b["typical"]["stages"] if "typical" in b else [b["stages"]]
print(json.dumps({"kind": "data", "side": side, "round": int(rnd), "cases": cases,
                  "stages": stages, "framework": b.get("torch"), "date": date, "commit": commit,
                  "load": float(load), "machine": f"{cpu}, {cores} cores", "cpu": cpu,
                  "cores": int(cores), "isa": isa}))
PY
}
now() { date -u +%FT%TZ; }
load() { cut -d' ' -f1 /proc/loadavg; }

for round in $(seq 0 $((ROUNDS - 1))); do
  l=$(load); d=$(now)
  emit runner "$round" "$l" "$d" "$(cd "$WORK" && "$RUNNER" --quiet bench data "$REPO/recipes/quickstart.toml" --format json)"
  for spec in "64 64" "224 256"; do
    read -r size src <<<"$spec"
    dir=$(ls -d "$IMAGES"/bench-"$src"-*/classification/train | head -n1)
    for thp in 0 1; do
      side=torchvision
      envs=(env -u THP_MEM_ALLOC_ENABLE)
      [ "$thp" = 1 ] && side=torchvision_thp && envs=(env THP_MEM_ALLOC_ENABLE=1)
      l=$(load); d=$(now)
      body=$("${envs[@]}" "$PYTHON" "$REPO/bench/torchvision_data.py" --images "$dir" --size "$size" --count 512)
      emit "$side" "$round" "$l" "$d" "$body"
    done
  done
done
echo "data_compare.sh: wrote $OUT" >&2
