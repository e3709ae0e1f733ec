#!/usr/bin/env bash
# GPU check, run by hand on a CUDA machine from the repository root. Expects CUDA builds in
# .gpubin/: `runner` (cargo build --release --features cuda) and `cuda_precision` (the test
# binary of tests/cuda_precision.rs, same feature); see ../shared/cuda/ for building them on a
# machine without a GPU. Writes everything under $OUT (default ./gpu-out), step by step, so
# that a timeout still leaves the finished parts.
set -uo pipefail
OUT=${OUT:-gpu-out}
B=${B:-.gpubin}
mkdir -p "$OUT"
log() { echo "== $* ($(date -u +%H:%M:%S))" | tee -a "$OUT/steps.txt"; }
unpack() {  # .xz copies travel under the device tool's size limit
  [ -f "$1.xz" ] || return 0
  xz -dkf "$1.xz" 2>/dev/null || python3 -c \
    "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[1][:-3],'wb'))" "$1.xz"
}
unpack "$B/runner"
unpack "$B/cuda_precision"
chmod +x "$B"/runner "$B"/cuda_precision 2>/dev/null
if ! ldd "$B/runner" | grep -q "libcublas.so.13 => /"; then
  NV=$(python3 -c 'import nvidia;print(list(nvidia.__path__)[0])' 2>/dev/null || true)
  [ -n "$NV" ] && export LD_LIBRARY_PATH=$NV/cu13/lib:$NV/cudnn/lib:${LD_LIBRARY_PATH:-}
fi
log machine
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; ldd "$B/runner" | grep -E "cuda|cublas|curand|nvrtc|not found"; } > "$OUT/machine.txt" 2>&1
log tests
"$B/cuda_precision" --test-threads 1 --nocapture > "$OUT/tests.txt" 2>&1
echo "rc=$?" >> "$OUT/tests.txt"
log quickstart
for p in f32 bf16 f16; do
  t0=$(date +%s.%N)
  "$B/runner" --db "$OUT/quickstart.db" run recipes/quickstart.toml \
    --set train.device=cuda --set train.precision=$p --format json --quiet \
    > "$OUT/quickstart-$p.json" 2> "$OUT/quickstart-$p.err"
  echo "rc=$? wall_s=$(awk "BEGIN{print $(date +%s.%N) - $t0}")" >> "$OUT/quickstart-$p.err"
done
log bench
for case in 64:resnet18 64:mobilenet_v2 64:convnext_nano 64:convnext_t 224:resnet18 224:convnext_t; do
  size=${case%%:*}; net=${case#*:}
  for p in f32 bf16 f16; do
    echo "{\"net\":\"$net\",\"size\":$size,\"precision\":\"$p\",\"result\":" >> "$OUT/bench.jsonl"
    timeout 45 "$B/runner" bench train "bench/recipes/$net.toml" --set train.device=cuda \
      --set train.precision=$p --set data.image_size=$size --steps 5 --format json \
      >> "$OUT/bench.jsonl" 2>> "$OUT/bench.err" || echo "null" >> "$OUT/bench.jsonl"
    echo "}" >> "$OUT/bench.jsonl"
  done
done
log done
