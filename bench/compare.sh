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
#   bench/compare.sh --dry-run                        # the plan: candidates, rounds, no timing
#
# PyTorch at its best: before a row's rounds, one screening round (SCREEN=1; SCREEN=0 skips
# it) times every PyTorch configuration found here, eager NCHW and channels-last (with
# CHANNELS_LAST=1), each with glibc malloc and with jemalloc and tcmalloc preloaded
# (LD_PRELOAD; Debian's libjemalloc2 and libtcmalloc-minimal4, or JEMALLOC / TCMALLOC paths),
# as lines with "screen": true. The fastest becomes the row's `pytorch_best` side in every
# round (its "config", e.g. "channels_last+jemalloc"), beside PyTorch's default (`pytorch`:
# NCHW, malloc). Every line records the machine (CPU model, cores, ISA flags), the CPU time
# the process used over its wall time, and the steal time of the whole machine meanwhile, so
# that summarize.py can set noisy measurements apart.
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
SCREEN=${SCREEN:-1}
# rows (NET:SIZExBATCH) where PyTorch also runs under torch.compile (inductor), one round at the
# end, as information: compile time (the warm-up step) excluded from images/s and stated
# (COMPILE= with nothing after it: none)
COMPILE=${COMPILE-"resnet18:64x64 convnext_nano:64x64"}
JEMALLOC=${JEMALLOC:-/usr/lib/x86_64-linux-gnu/libjemalloc.so.2}
TCMALLOC=${TCMALLOC:-/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4}

# PyTorch's configurations: LAYOUT+ALLOCATOR, with the allocators this machine has
ALLOCATORS="malloc"
[ -f "$JEMALLOC" ] && ALLOCATORS="$ALLOCATORS jemalloc"
[ -f "$TCMALLOC" ] && ALLOCATORS="$ALLOCATORS tcmalloc"
LAYOUTS="nchw"
[ "$CHANNELS_LAST" = 1 ] && LAYOUTS="nchw channels_last"
CONFIGS=""
for layout in $LAYOUTS; do
  for alloc in $ALLOCATORS; do CONFIGS="$CONFIGS $layout+$alloc"; done
done

if [ "${1:-}" = "--dry-run" ]; then
  echo "compare.sh plan: nets [$NETS], shapes [$SHAPES], $ROUNDS rounds of $STEPS steps"
  if [ "$SCREEN" = 1 ]; then
    echo "  screening per row, one round:$CONFIGS"
  fi
  echo "  each round: runner, PyTorch default (nchw+malloc), PyTorch's screened best"
  echo "  allocators found: $ALLOCATORS (jemalloc: $JEMALLOC, tcmalloc: $TCMALLOC)"
  [ "$ALLOCATORS" = malloc ] && echo "  (no jemalloc or tcmalloc here: apt-get install libjemalloc2 libtcmalloc-minimal4)"
  echo "  torch.compile (information, one round): ${COMPILE:-none}"
  echo "  whole run: E2E=$E2E, $E2E_EPOCHS epochs"
  exit 0
fi
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
# dirty: a tracked file differs from the commit (new untracked files, such as the output file
# itself, do not change what is measured)
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && COMMIT="$COMMIT+dirty"

load() { cut -d' ' -f1 /proc/loadavg; }
# the machine's total and steal jiffies (/proc/stat's first line)
jiffies() { awk '/^cpu /{t=0; for (i=2; i<=NF; i++) t+=$i; print t, $9; exit}' /proc/stat; }
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
CPU_FLAGS=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512[a-z_0-9]*|amx[a-z_0-9]*)$' | sort | tr '\n' ' ' | sed 's/ $//')
MACHINE="\"cpu\": \"$CPU_MODEL\", \"cores\": $(nproc), \"isa\": \"$CPU_FLAGS\","

# tag LINE SIDE ROUND LOAD RSS_KB EXTRA: the measurement's JSON with the tags in front
tag() {
  local line=$1 side=$2 round=$3 l=$4 rss=$5 extra=$6
  printf '%s\n' "$line" | tr -d '\n' | sed "s/^{/{\"side\": \"$side\", \"round\": $round, \"load\": $l, \"max_rss_mb\": $(awk "BEGIN{print $rss/1024}"), \"commit\": \"$COMMIT\", \"date\": \"$(date -u +%FT%TZ)\", $extra/"
  echo
}

# measure SIDE ROUND EXTRA CMD...: runs CMD under GNU time, prints its tagged JSON line with
# the process's CPU time over its wall time and the machine's steal share meanwhile
measure() {
  local side=$1 round=$2 extra=$3
  shift 3
  local l out rss start end j0 j1 cpu
  l=$(load)
  j0=$(jiffies)
  start=$(date +%s.%N)
  out=$(/usr/bin/time -o "$WORK/rss" -f '%M %U %S' "$@")
  end=$(date +%s.%N)
  j1=$(jiffies)
  read -r rss user sys < <(tail -n1 "$WORK/rss")
  cpu=$(awk "BEGIN{w = $end - $start; print (w > 0 ? ($user + $sys) / w : 0)}")
  steal=$(awk -v a="$j0" -v b="$j1" 'BEGIN{split(a, x, " "); split(b, y, " "); t = y[1] - x[1]; print (t > 0 ? (y[2] - x[2]) / t : 0)}')
  tag "$out" "$side" "$round" "$l" "$rss" "$extra $MACHINE \"cpu_over_wall\": $cpu, \"steal\": $steal, \"process_wall_s\": $(awk "BEGIN{print $end - $start}"),"
}

# torch_cmd CONFIG ARGS...: sets TORCH_CMD to the command of PyTorch's step benchmark in a
# configuration (LAYOUT+ALLOCATOR: the allocator preloaded, the layout as a flag)
torch_cmd() {
  local config=$1
  shift
  local layout=${config%+*} alloc=${config#*+}
  TORCH_CMD=(env)
  case $alloc in
    jemalloc) TORCH_CMD+=(LD_PRELOAD="$JEMALLOC") ;;
    tcmalloc) TORCH_CMD+=(LD_PRELOAD="$TCMALLOC") ;;
  esac
  TORCH_CMD+=("$PYTHON" bench/pytorch_reference.py "$@")
  [ "$layout" = channels_last ] && TORCH_CMD+=(--channels-last)
  return 0
}

if [ "$E2E_ONLY" != 1 ]; then
  for shape in $SHAPES; do
    size=${shape%x*}
    batch=${shape#*x}
    for net in $NETS; do
      extra="\"net\": \"$net\", \"size\": $size, \"batch\": $batch,"
      args=(--net "$net" --steps "$STEPS" --size "$size" --batch "$batch")
      best="nchw+malloc"
      if [ "$SCREEN" = 1 ]; then
        # one round over PyTorch's configurations; the fastest is the row's best
        best_ips=0
        for config in $CONFIGS; do
          torch_cmd "$config" "${args[@]}"
          line=$(measure pytorch 0 "$extra \"screen\": true, \"config\": \"$config\"," "${TORCH_CMD[@]}")
          echo "$line"
          ips=$(printf '%s' "$line" | "$PYTHON" -c "import json,sys; print(json.load(sys.stdin)['images_per_sec'])")
          if awk "BEGIN{exit !($ips > $best_ips)}"; then
            best=$config
            best_ips=$ips
          fi
        done
      fi
      for round in $(seq 1 "$ROUNDS"); do
        measure runner "$round" "$extra" \
          "$RUNNER" bench train "bench/recipes/$net.toml" --steps "$STEPS" --format json \
          --set data.image_size="$size" --set train.batch_size="$batch"
        torch_cmd nchw+malloc "${args[@]}"
        measure pytorch "$round" "$extra \"config\": \"nchw+malloc\"," "${TORCH_CMD[@]}"
        if [ "$best" != nchw+malloc ]; then
          torch_cmd "$best" "${args[@]}"
          measure pytorch_best "$round" "$extra \"config\": \"$best\"," "${TORCH_CMD[@]}"
        fi
      done
    done
  done
fi

if [ "$E2E_ONLY" != 1 ]; then
  for row in $COMPILE; do
    net=${row%%:*}
    shape=${row#*:}
    size=${shape%x*}
    batch=${shape#*x}
    extra="\"net\": \"$net\", \"size\": $size, \"batch\": $batch, \"info\": true,"
    measure pytorch_compile 0 "$extra" "$PYTHON" bench/pytorch_reference.py --net "$net" \
      --steps "$STEPS" --size "$size" --batch "$batch" --compile
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
