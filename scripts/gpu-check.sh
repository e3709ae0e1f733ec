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
# and packs DIR/runner-gpu.tar.xz (under 40 MiB): bin/runner and bin/runner-cudnn, this script, the recipes and
# templates, bench/pytorch_reference.py. On the GPU machine: `tar xf runner-gpu.tar.xz &&
# runner-gpu/scripts/gpu-check.sh`. (From a checkout instead, RUNNER=path/to/runner.)
#
# run, in order; each command has a time budget and the whole fits 5 minutes (300 s), the
# throughput table done within the first 2.5 minutes (`--dry-run` prints every command with its
# budget, on any machine):
#   environment  nvidia-smi, the driver's and NVRTC's CUDA versions (`runner selftest
#                --versions`, which says when NVRTC is newer than the driver), ldd, torch
#   smoke        runner selftest --stage smoke (under compute-sanitizer memcheck when present)
#   throughput   ConvNeXt-T and ResNet-50, 224 px, batch 64, bf16: runner (kernel launches per
#                step, GPU utilisation sampled meanwhile), then PyTorch AMP channels-last; peak
#                GPU memory
#   cudnn        the `cuda,cudnn` bundle's binary (bin/runner-cudnn): smoke, one throughput row
#   parity       runner selftest --stage parity: every model family, f32 / bf16 / f16
#   epoch        bench/recipes/gpu_epoch_224.toml: one epoch at 224 px through the JPEG loader
#   quickstart   recipes/quickstart.toml on CUDA, bf16
# Results: $GPU_OUT/summary.md (the table, row by row), one file per command, steps.txt
# (times); where $OUT is set (the device tool's folder), summary.md, steps.txt and
# results.tar.gz (all of it) are copied there after every stage.
# Environment: GPU_OUT (default gpu-out), DATA (generated images, default /tmp/runner-gpu-data),
# RUNNER, RUNNER_CUDNN, PYTHON (default: the first of python3, python with torch), BUDGET_S (300).
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
  STAGE=$DEST/runner-gpu
  rm -rf "$STAGE"
  mkdir -p "$STAGE/bin" "$STAGE/scripts" "$STAGE/bench"
  # two binaries from one target dir: `cuda` (im2col + cuBLAS convolutions), then `cuda,cudnn`
  # (the second rebuilds Candle and runner with cuDNN; Candle's nvcc-built kernels are kept)
  scripts/build-cuda.sh --arch "$ARCH" --features cuda -- --bin runner
  strip -o "$STAGE/bin/runner" "$TARGET/release/runner"
  scripts/build-cuda.sh --arch "$ARCH" --features cuda,cudnn -- --bin runner
  strip -o "$STAGE/bin/runner-cudnn" "$TARGET/release/runner"
  # no machine's paths in the bundle: the run path cut to $ORIGIN/lib:/usr/local/cuda/lib64
  # (the check finds the CUDA libraries through LD_LIBRARY_PATH, below)
  python3 scripts/cut-runpath.py "$STAGE/bin/runner" "$STAGE/bin/runner-cudnn"
  cp scripts/gpu-check.sh "$STAGE/scripts/"
  cp bench/pytorch_reference.py "$STAGE/bench/"
  cp -r bench/recipes "$STAGE/bench/"
  cp -r recipes templates "$STAGE/"
  git -C "$ROOT" rev-parse --short HEAD > "$STAGE/COMMIT" 2>/dev/null || echo unknown > "$STAGE/COMMIT"
  echo "$ARCH" > "$STAGE/ARCH"
  tar -C "$DEST" -cJf "$DEST/runner-gpu.tar.xz" runner-gpu
  SIZE=$(stat -c %s "$DEST/runner-gpu.tar.xz")
  echo "gpu-check.sh: $DEST/runner-gpu.tar.xz, $((SIZE / 1048576)) MiB ($ARCH, $(cat "$STAGE/COMMIT"))"
  if [ "$SIZE" -ge $((40 * 1048576)) ]; then
    echo "gpu-check.sh: the bundle is over 40 MiB" >&2
    exit 1
  fi
  exit 0
fi
DRY=0
if [ "$MODE" = --dry-run ]; then DRY=1; MODE=run; fi
if [ "$MODE" != run ]; then
  echo "gpu-check.sh: unknown mode $MODE (bundle, run or --dry-run)" >&2
  exit 2
fi

RESULTS=${GPU_OUT:-gpu-out}
DATA=${DATA:-/tmp/runner-gpu-data}
BUDGET_S=${BUDGET_S:-300}
START=$(date +%s)
# the Python that has torch (the PyTorch rows and the CUDA wheels' libraries), said aloud
if [ -z "${PYTHON:-}" ]; then
  for c in python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import torch' 2>/dev/null; then PYTHON=$c; break; fi
  done
  PYTHON=${PYTHON:-python3}
  echo "gpu-check.sh: PYTHON=$(command -v "$PYTHON" || echo "$PYTHON") ($("$PYTHON" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo 'no torch'))"
else
  echo "gpu-check.sh: PYTHON=$PYTHON (from the environment)"
fi
if [ -z "${RUNNER:-}" ]; then
  for c in bin/runner .gpubin/runner target/release/runner; do
    [ -e "$c" ] || [ -e "$c.xz" ] && { RUNNER=$c; break; }
  done
fi
RUNNER=${RUNNER:-bin/runner}
RUNNER_CUDNN=${RUNNER_CUDNN:-bin/runner-cudnn}
if [ "$DRY" = 0 ]; then
  mkdir -p "$RESULTS" "$DATA"
  RESULTS=$(cd "$RESULTS" && pwd)
  for r in "$RUNNER" "$RUNNER_CUDNN"; do
    if [ ! -e "$r" ] && [ -e "$r.xz" ]; then
      xz -dkf "$r.xz" 2>/dev/null || "$PYTHON" -c \
        "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[1][:-3],'wb'))" "$r.xz"
    fi
    chmod +x "$r" 2>/dev/null
  done
fi
# The CUDA libraries: found here, from PyTorch's nvidia wheels of $PYTHON (libnvrtc also
# needs its builtins beside it), then /usr/local/cuda/lib64.
NV=$("$PYTHON" -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
if [ -n "$NV" ]; then
  export LD_LIBRARY_PATH="$NV/cu13/lib:$NV/cudnn/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64"

# copies what there is so far into the device tool's $OUT (few files: it returns at most 8)
publish() {
  [ "$DRY" = 0 ] && [ -n "${OUT:-}" ] && [ -d "$OUT" ] && [ "$OUT" != "$RESULTS" ] || return 0
  cp "$RESULTS/summary.md" "$RESULTS/steps.txt" "$OUT/" 2>/dev/null
  tar -C "$RESULTS" --exclude='*.db*' -czf "$OUT/results.tar.gz" . 2>/dev/null
}
PLANNED=0
log() {
  if [ "$DRY" = 1 ]; then echo "== $* (starts by ${PLANNED} s)"; return; fi
  publish; echo "== $* ($(( $(date +%s) - START )) s)" | tee -a "$RESULTS/steps.txt"
}
# seconds a command may take: its own budget, or what is left of the whole
limit() { local left=$(( BUDGET_S - ($(date +%s) - START) - 5 )); [ "$left" -lt "$1" ] && echo $(( left > 0 ? left : 1 )) || echo "$1"; }
# step BUDGET OUTFILE CMD...: runs CMD with its time budget, output to $RESULTS/OUTFILE, and
# appends its exit status there; --dry-run prints it with its budget instead
step() {
  local budget=$1 out=$2; shift 2
  PLANNED=$(( PLANNED + budget ))
  if [ "$DRY" = 1 ]; then printf '  %4s s  %s > %s\n' "$budget" "$*" "$out"; return 0; fi
  timeout "$(limit "$budget")" "$@" > "$RESULTS/$out" 2>&1
  local rc=$?
  echo "rc=$rc" >> "$RESULTS/$out"
  return $rc
}
row() { [ "$DRY" = 1 ] || echo "$*" >> "$RESULTS/summary.md"; }
rc_of() { tail -1 "$RESULTS/$1" 2>/dev/null | sed 's/^rc=//'; }
# one table row from a runner or PyTorch JSON result (file $1), labelled $2 $3
table_row() {
  [ "$DRY" = 1 ] && return 0
  "$PYTHON" - "$RESULTS/$1" "$2" "$3" "${4:-}" >> "$RESULTS/summary.md" 2>>"$RESULTS/steps.txt" <<'PY'
import json, sys
path, who, setting, util = sys.argv[1:5]
try:
    text = open(path).read()
    start = text.find("{")
    d = json.loads(text[start:text.rfind("}") + 1]) if start >= 0 else None
except Exception as e:
    d = None
if not d:
    print(f"| {who} | {setting} | failed (see {path.split('/')[-1]}) | | | | | | |")
else:
    f = lambda k: f"{d[k]:.1f}" if isinstance(d.get(k), (int, float)) else ""
    print(f"| {who} | {setting} | {f('images_per_sec')} | {f('forward_ms')} | {f('backward_ms')} | {f('step_ms')} | {f('gpu_peak_mb')} | {f('launches_per_step')} | {util} |")
PY
}
# the mean and peak GPU utilisation of a sampling file (one percentage per line)
util_of() { [ "$DRY" = 1 ] || awk '{s+=$1; if ($1>m) m=$1; n++} END {if (n) printf "%.0f%% mean, %d%% peak (%d samples)", s/n, m, n}' "$RESULTS/$1" 2>/dev/null; }
# `bench train --loader` JSON: "L vs C img/s, ratio R"
loader_summary() {
  [ "$DRY" = 1 ] && return 0
  "$PYTHON" - "$RESULTS/$1" 2>/dev/null <<'PY' || echo failed
import json, sys
t = open(sys.argv[1]).read()
l = json.loads(t[t.find("{"):t.rfind("}") + 1])["loader"]
print("%.0f vs %.0f img/s, ratio %.2f" % (l["loader_images_per_sec"], l["cached_images_per_sec"], l["ratio"]))
PY
}
# runner bench train for one net in bf16 with GPU utilisation sampled meanwhile
runner_row() {
  local bin=$1 net=$2 tag=$3
  local sampler=""
  if [ "$DRY" = 0 ] && command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > "$RESULTS/util-$tag-$net.txt" 2>/dev/null &
    sampler=$!
  fi
  step 20 "bench-$tag-$net-bf16.json" "$bin" bench train "bench/recipes/$net.toml" --device cuda \
    --set train.precision=\"bf16\" --set data.image_size=224 --steps 10 --format json
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  table_row "bench-$tag-$net-bf16.json" "$tag" "$net 224 px, bf16" "$(util_of "util-$tag-$net.txt")"
}

log "environment"
if [ "$DRY" = 0 ]; then
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
    echo "cores: $(nproc)"; echo "runner: $RUNNER ($(cat COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null))"
    ldd "$RUNNER" | grep -E "cuda|cublas|curand|nvrtc|cudnn|not found"
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
  } > "$RESULTS/machine.txt" 2>&1
  row "# GPU check, $(date -u +%Y-%m-%d), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  row ""
fi
step 10 versions.txt "$RUNNER" selftest --versions
row "- versions: $(head -2 "$RESULTS/versions.txt" 2>/dev/null | tr '\n' ' ')"

log "smoke"
SANITIZER=()
command -v compute-sanitizer >/dev/null 2>&1 && SANITIZER=(compute-sanitizer --tool memcheck --error-exitcode 3)
step 45 smoke.txt "${SANITIZER[@]}" "$RUNNER" selftest --stage smoke
row "- smoke (one op of each kind vs the CPU${SANITIZER:+, under memcheck}): $(tail -3 "$RESULTS/smoke.txt" 2>/dev/null | head -1) (rc $(rc_of smoke.txt))"

log "throughput"
row ""
row "| side | net, precision | img/s | forward ms | backward ms | step ms | GPU peak MiB | launches / step | GPU utilisation |"
row "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for net in convnext_t resnet50; do
  runner_row "$RUNNER" "$net" runner
  if [ "$DRY" = 1 ] || "$PYTHON" -c "import torch, torchvision" 2>/dev/null; then
    step 25 "bench-torch-$net-amp.json" "$PYTHON" bench/pytorch_reference.py --net "$net" --device cuda \
      --size 224 --batch 64 --steps 10 --warmup 3 --amp bf16 --channels-last
    table_row "bench-torch-$net-amp.json" "PyTorch AMP channels-last" "$net 224 px, bf16"
  else
    row "| PyTorch | $net | not installed for $PYTHON | | | | | | |"
  fi
done

log "cudnn"
if [ "$DRY" = 1 ] || [ -e "$RUNNER_CUDNN" ]; then
  step 20 smoke-cudnn.txt "$RUNNER_CUDNN" selftest --stage smoke
  row "- smoke, cuda,cudnn build: $(tail -3 "$RESULTS/smoke-cudnn.txt" 2>/dev/null | head -1) (rc $(rc_of smoke-cudnn.txt))"
  runner_row "$RUNNER_CUDNN" resnet50 runner-cudnn
else
  row "- no cuda,cudnn binary ($RUNNER_CUDNN)"
fi

log "parity"
step 45 parity.txt "$RUNNER" selftest --stage parity
row "- parity (model families vs the CPU): $(tail -3 "$RESULTS/parity.txt" 2>/dev/null | head -1) (rc $(rc_of parity.txt))"

log "epoch"
step 40 epoch.txt "$RUNNER" --db "$RESULTS/epoch.db" run bench/recipes/gpu_epoch_224.toml --force \
  --set data.cache_dir=\""$DATA"\"
row "- one epoch at 224 px (ConvNeXt-T course model, bf16, JPEG loader): rc $(rc_of epoch.txt), $(grep -o '[0-9.]* img/s' "$RESULTS/epoch.txt" 2>/dev/null | tail -1)"

log "quickstart"
step 25 quickstart-bf16.json "$RUNNER" --db "$RESULTS/quickstart.db" run recipes/quickstart.toml --force \
  --set train.device=\"cuda\" --set train.precision=\"bf16\" --set data.cache_dir=\""$DATA"\" \
  --format json --quiet
row "- quick start on CUDA, bf16: rc $(rc_of quickstart-bf16.json)"

if [ "$DRY" = 1 ]; then
  echo "== total: ${PLANNED} s of a ${BUDGET_S} s budget"
  exit 0
fi
log "done"
publish
cat "$RESULTS/summary.md"
