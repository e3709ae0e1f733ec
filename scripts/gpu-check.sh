#!/usr/bin/env bash
# The GPU check: one command for a GPU machine with the NVIDIA driver, CUDA 13 libraries and
# PyTorch, but maybe no Rust. It runs a prebuilt `runner` (one binary; the parity checks are in
# it: `runner selftest`) and writes each result under $GPU_OUT as soon as it has it, so a run cut
# off still reports what it measured. docs/gpu.md says what each stage checks.
#
#   scripts/gpu-check.sh bundle [--arch sm_90] [--out DIR]   # here: build, strip, pack
#   scripts/gpu-check.sh [run]                               # there: the checks, < 6 minutes
#
# bundle: builds the CUDA binary (scripts/build-cuda.sh, CARGO_TARGET_DIR as usual), strips it
# and packs DIR/runner-gpu.tar.xz (under 60 MiB): bin/runner, this script, the recipes and
# templates, bench/pytorch_reference.py. On the GPU machine: `tar xf runner-gpu.tar.xz &&
# runner-gpu/scripts/gpu-check.sh`. (From a checkout instead, RUNNER=path/to/runner.)
#
# run, in order (each stage has a time limit; the whole stays under 6 minutes):
#   machine     nvidia-smi, the libraries the binary resolves
#   smoke       runner selftest --stage smoke: one op of each kind against the CPU (< 2 min)
#   parity      runner selftest --stage parity: every model family, forward, backward, one
#               SGD step, f32 / bf16 / f16, relative errors and cosines printed
#   quickstart  recipes/quickstart.toml on CUDA, f32 and bf16
#   epoch       bench/recipes/gpu_epoch_224.toml: one epoch at 224 px through the JPEG loader
#               (images/s), and the loader against cached batches (stalls)
#   throughput  ConvNeXt-T and ResNet-50, 224 px, batch 64: runner f32 and bf16, PyTorch eager
#               f32 and AMP bf16 channels-last (bench/pytorch_reference.py), peak GPU memory
# Results: $GPU_OUT/summary.md (the table, row by row), one file per stage, steps.txt (times);
# where $OUT is set (the device tool's folder), summary.md, steps.txt and results.tar.gz (all of
# it) are copied there after every stage.
# Environment: GPU_OUT (default gpu-out), DATA (generated images, default /tmp/runner-gpu-data),
# RUNNER, PYTHON (default python3), BUDGET_S (360).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MODE=${1:-run}
[ $# -gt 0 ] && shift

if [ "$MODE" = bundle ]; then
  set -e
  ARCH=sm_90
  DEST=$ROOT/target/gpu-bundle
  while [ $# -gt 0 ]; do
    case "$1" in
      --arch) ARCH=$2; shift 2 ;;
      --out) DEST=$2; shift 2 ;;
      *) echo "gpu-check.sh bundle: unknown argument $1" >&2; exit 2 ;;
    esac
  done
  TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
  scripts/build-cuda.sh --arch "$ARCH" --features "${FEATURES:-cuda}" -- --bin runner
  STAGE=$DEST/runner-gpu
  rm -rf "$STAGE"
  mkdir -p "$STAGE/bin" "$STAGE/scripts" "$STAGE/bench"
  strip -o "$STAGE/bin/runner" "$TARGET/release/runner"
  cp scripts/gpu-check.sh "$STAGE/scripts/"
  cp bench/pytorch_reference.py "$STAGE/bench/"
  cp -r bench/recipes "$STAGE/bench/"
  cp -r recipes templates "$STAGE/"
  git -C "$ROOT" rev-parse --short HEAD > "$STAGE/COMMIT" 2>/dev/null || echo unknown > "$STAGE/COMMIT"
  echo "$ARCH" > "$STAGE/ARCH"
  tar -C "$DEST" -cJf "$DEST/runner-gpu.tar.xz" runner-gpu
  SIZE=$(stat -c %s "$DEST/runner-gpu.tar.xz")
  echo "gpu-check.sh: $DEST/runner-gpu.tar.xz, $((SIZE / 1048576)) MiB ($ARCH, $(cat "$STAGE/COMMIT"))"
  if [ "$SIZE" -ge $((60 * 1048576)) ]; then
    echo "gpu-check.sh: the bundle is over 60 MiB" >&2
    exit 1
  fi
  exit 0
fi
if [ "$MODE" != run ]; then
  echo "gpu-check.sh: unknown mode $MODE (bundle or run)" >&2
  exit 2
fi

RESULTS=${GPU_OUT:-gpu-out}
DATA=${DATA:-/tmp/runner-gpu-data}
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-360}
mkdir -p "$RESULTS" "$DATA"
RESULTS=$(cd "$RESULTS" && pwd)
START=$(date +%s)
if [ -z "${RUNNER:-}" ]; then
  for c in bin/runner .gpubin/runner target/release/runner; do
    [ -e "$c" ] || [ -e "$c.xz" ] && { RUNNER=$c; break; }
  done
fi
RUNNER=${RUNNER:-bin/runner}
if [ ! -e "$RUNNER" ] && [ -e "$RUNNER.xz" ]; then
  xz -dkf "$RUNNER.xz" 2>/dev/null || "$PYTHON" -c \
    "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[1][:-3],'wb'))" "$RUNNER.xz"
fi
chmod +x "$RUNNER" 2>/dev/null
# The CUDA libraries: PyTorch's nvidia wheels (libnvrtc also needs its builtins beside it)
NV=$("$PYTHON" -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
if [ -n "$NV" ]; then
  export LD_LIBRARY_PATH="$NV/cu13/lib:$NV/cudnn/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64"

# copies what there is so far into the device tool's $OUT (few files: it returns at most 8)
publish() {
  [ -n "${OUT:-}" ] && [ -d "$OUT" ] && [ "$OUT" != "$RESULTS" ] || return 0
  cp "$RESULTS/summary.md" "$RESULTS/steps.txt" "$OUT/" 2>/dev/null
  tar -C "$RESULTS" --exclude='*.db*' -czf "$OUT/results.tar.gz" . 2>/dev/null
}
log() { publish; echo "== $* ($(( $(date +%s) - START )) s)" | tee -a "$RESULTS/steps.txt"; }
# seconds a stage may take: its own limit, or what is left of the budget
limit() { local left=$(( BUDGET_S - ($(date +%s) - START) - 5 )); [ "$left" -lt "$1" ] && echo $(( left > 0 ? left : 1 )) || echo "$1"; }
row() { echo "$*" >> "$RESULTS/summary.md"; }
# one table row from a runner or PyTorch JSON result (file $1), labelled $2 $3
table_row() {
  "$PYTHON" - "$1" "$2" "$3" >> "$RESULTS/summary.md" 2>>"$RESULTS/steps.txt" <<'PY'
import json, sys
path, who, setting = sys.argv[1:4]
try:
    text = open(path).read()
    start = text.find("{")
    d = json.loads(text[start:text.rfind("}") + 1]) if start >= 0 else None
except Exception as e:
    d = None
if not d:
    print(f"| {who} | {setting} | failed (see {path.split('/')[-1]}) | | | | |")
else:
    f = lambda k: f"{d[k]:.1f}" if isinstance(d.get(k), (int, float)) else ""
    print(f"| {who} | {setting} | {f('images_per_sec')} | {f('forward_ms')} | {f('backward_ms')} | {f('step_ms')} | {f('gpu_peak_mb')} |")
PY
}

# "L vs C img/s, ratio R" from `bench train --loader` JSON
loader_summary() {
  "$PYTHON" - "$1" 2>/dev/null <<'PY' || echo failed
import json, sys
t = open(sys.argv[1]).read()
l = json.loads(t[t.find("{"):t.rfind("}") + 1])["loader"]
print("%.0f vs %.0f img/s, ratio %.2f" % (l["loader_images_per_sec"], l["cached_images_per_sec"], l["ratio"]))
PY
}

log "machine"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
  echo "cores: $(nproc)"; echo "runner: $RUNNER ($(cat COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null))"
  ldd "$RUNNER" | grep -E "cuda|cublas|curand|nvrtc|cudnn|not found"
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
} > "$RESULTS/machine.txt" 2>&1
row "# GPU check, $(date -u +%Y-%m-%d), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
row ""

log "smoke"
timeout "$(limit 110)" "$RUNNER" selftest --stage smoke > "$RESULTS/smoke.txt" 2>&1
rc=$?; echo "rc=$rc" >> "$RESULTS/smoke.txt"
row "- smoke (one op of each kind vs the CPU): $(tail -2 "$RESULTS/smoke.txt" | head -1) (rc $rc)"

log "parity"
timeout "$(limit 100)" "$RUNNER" selftest --stage parity > "$RESULTS/parity.txt" 2>&1
rc=$?; echo "rc=$rc" >> "$RESULTS/parity.txt"
row "- parity (model families vs the CPU): $(tail -2 "$RESULTS/parity.txt" | head -1) (rc $rc)"

log "quickstart"
for p in f32 bf16; do
  t0=$(date +%s.%N)
  timeout "$(limit 60)" "$RUNNER" --db "$RESULTS/quickstart.db" run recipes/quickstart.toml --force \
    --set train.device=\"cuda\" --set train.precision=\"$p\" --set data.cache_dir=\""$DATA"\" \
    --format json --quiet > "$RESULTS/quickstart-$p.json" 2> "$RESULTS/quickstart-$p.err"
  rc=$?
  wall=$(awk "BEGIN{print $(date +%s.%N) - $t0}")
  metrics=$("$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); m=d.get("metrics",{}); print(", ".join(f"{k} {v}" for k,v in m.items() if k in ("val_acc","verify_acc")))' "$RESULTS/quickstart-$p.json" 2>/dev/null)
  row "- quick start on CUDA, $p: rc $rc, ${wall%.*} s, $metrics"
done

log "epoch"
timeout "$(limit 120)" "$RUNNER" --db "$RESULTS/epoch.db" run bench/recipes/gpu_epoch_224.toml --force \
  --set data.cache_dir=\""$DATA"\" > "$RESULTS/epoch.txt" 2>&1
rc=$?
row "- one epoch at 224 px (ConvNeXt-T course model, bf16, JPEG loader): rc $rc, $(grep -o '[0-9.]* img/s' "$RESULTS/epoch.txt" | tail -1)"
timeout "$(limit 60)" "$RUNNER" bench train bench/recipes/gpu_epoch_224.toml --loader --steps 10 \
  --set data.cache_dir=\""$DATA"\" --format json > "$RESULTS/epoch-loader.json" 2>&1
row "- loader vs cached batches (1.0 = no stalls): $(loader_summary "$RESULTS/epoch-loader.json")"

log "throughput"
row ""
row "| side | net, precision | img/s | forward ms | backward ms | step ms | GPU peak MiB |"
row "| --- | --- | --- | --- | --- | --- | --- |"
for net in convnext_t resnet50; do
  for p in f32 bf16; do
    timeout "$(limit 60)" "$RUNNER" bench train "bench/recipes/$net.toml" --device cuda \
      --set train.precision=\"$p\" --set data.image_size=224 --steps 10 --format json \
      > "$RESULTS/bench-runner-$net-$p.json" 2>&1
    table_row "$RESULTS/bench-runner-$net-$p.json" runner "$net 224 px, $p"
  done
  if "$PYTHON" -c "import torch, torchvision" 2>/dev/null; then
    timeout "$(limit 90)" "$PYTHON" bench/pytorch_reference.py --net "$net" --device cuda \
      --size 224 --batch 64 --steps 10 --warmup 3 > "$RESULTS/bench-torch-$net-f32.json" 2>&1
    table_row "$RESULTS/bench-torch-$net-f32.json" "PyTorch eager" "$net 224 px, f32"
    timeout "$(limit 90)" "$PYTHON" bench/pytorch_reference.py --net "$net" --device cuda \
      --size 224 --batch 64 --steps 10 --warmup 3 --amp bf16 --channels-last \
      > "$RESULTS/bench-torch-$net-amp.json" 2>&1
    table_row "$RESULTS/bench-torch-$net-amp.json" "PyTorch AMP channels-last" "$net 224 px, bf16"
  else
    row "| PyTorch | $net | not installed for $PYTHON | | | | |"
  fi
done
log "done"
publish
cat "$RESULTS/summary.md"
