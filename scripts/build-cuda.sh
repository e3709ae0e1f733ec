#!/usr/bin/env bash
# Builds runner with CUDA on a machine without a GPU or a CUDA toolkit: CUDA 13.0's nvcc,
# headers and libraries come from pinned PyPI wheels in a private venv, and a stub of the
# driver library (libcuda.so, generated from cuda.h, never to be copied to a GPU machine)
# satisfies the linker. On a machine with the CUDA toolkit installed, plain
# `CUDA_COMPUTE_CAP=90 cargo build --release --features cuda` does the same (docs/gpu.md).
#
#   scripts/build-cuda.sh [--arch sm_80|sm_86|sm_89|sm_90] [--features cuda|cuda,cudnn]
#                         [--setup-only] [-- extra cargo arguments]
#
# --arch        the GPU's compute capability (default sm_90: H100 / H200; sm_80: A100;
#               sm_89: L4 / L40 / RTX 40xx). Candle's own kernels are compiled for it by nvcc;
#               the project's kernels are compiled at run time for whatever GPU runs them.
# --features    cargo features (default `cuda`; `cuda,cudnn` also needs libcudnn at run time)
# --setup-only  install the toolchain and write $RUNNER_CUDA_HOME/env.sh, build nothing
#
# Environment: RUNNER_CUDA_HOME (default /var/tmp/runner-cuda) holds the venv (~1.7 GB) and
# the link directory; CARGO_TARGET_DIR as usual (default target/). The binary lands in
# $CARGO_TARGET_DIR/release/runner and looks for the CUDA libraries next to itself (lib/),
# then in /usr/local/cuda, then in a PyTorch venv's nvidia wheels; docs/gpu.md says more.
#
# `source $RUNNER_CUDA_HOME/env.sh` gives a shell the same variables, plus an
# LD_LIBRARY_PATH (wheels + driver stub) under which the binary starts without a GPU: enough
# for `runner selftest --compile-only` (NVRTC needs no GPU).
set -euo pipefail

ARCH=sm_90
FEATURES=cuda
SETUP_ONLY=
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=${2:?--arch needs a value}; shift 2 ;;
    --arch=*) ARCH=${1#--arch=}; shift ;;
    --features) FEATURES=${2:?--features needs a value}; shift 2 ;;
    --features=*) FEATURES=${1#--features=}; shift ;;
    --setup-only) SETUP_ONLY=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "build-cuda.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$ARCH" in
  sm_80|sm_86|sm_87|sm_89|sm_90) CAP=${ARCH#sm_} ;;
  *) echo "build-cuda.sh: --arch must be sm_80, sm_86, sm_87, sm_89 or sm_90, not $ARCH" >&2; exit 2 ;;
esac

HOME_DIR=${RUNNER_CUDA_HOME:-/var/tmp/runner-cuda}
VENV=$HOME_DIR/venv
mkdir -p "$HOME_DIR"

# 1. CUDA 13.0 toolchain and link-time libraries from PyPI. Pin 13.0.x: the GPU machines'
#    driver (580) is CUDA 13.0 and refuses PTX of a newer ISA, and cudarc picks its driver API
#    bindings from `nvcc --version`. About 1 GB of wheels, half a minute on a fast link.
WHEELS="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35 nvidia-cublas==13.0.0.19 nvidia-cudnn-cu13==9.13.0.50"
STAMP=$HOME_DIR/wheels.txt
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WHEELS" ]; then
  echo "build-cuda.sh: installing the CUDA 13.0 wheels into $VENV" >&2
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $WHEELS
  echo "$WHEELS" > "$STAMP"
fi
NV=$("$VENV/bin/python" -c 'import nvidia; print(list(nvidia.__path__)[0])')

# 2. The link directory: unversioned names of the libraries cudarc and candle-kernels link
#    (-lcuda -lcublas -lcublasLt -lcurand -lnvrtc -lcudart [-lcudnn]), and a stub libcuda.so
#    (SONAME libcuda.so.1) with every cu* entry point of cuda.h returning an error: no wheel
#    ships the driver library, which comes with the NVIDIA driver on a GPU machine.
L=$HOME_DIR/cudaroot/lib
mkdir -p "$L"
for f in cudart.so.13 nvrtc.so.13 curand.so.10 cublas.so.13 cublasLt.so.13; do
  ln -sf "$NV/cu13/lib/lib$f" "$L/lib${f%.so.*}.so"
done
ln -sf "$NV/cudnn/lib/libcudnn.so.9" "$L/libcudnn.so"
STUB=$HOME_DIR/stub
if [ ! -f "$STUB/libcuda.so.1" ]; then
  mkdir -p "$STUB"
  gcc -E -P -I"$NV/cu13/include" "$NV/cu13/include/cuda.h" | tr '\n' ' ' \
    | grep -oE 'CUresult\s+cu[A-Za-z0-9_]+\s*\(' | sed -E 's/CUresult\s+//; s/\s*\(//' | sort -u \
    | awk '{print "int " $1 "(void){return 999;}"}' > "$STUB/cuda_stub.c"
  gcc -shared -fPIC -o "$STUB/libcuda.so.1" -Wl,-soname,libcuda.so.1 "$STUB/cuda_stub.c"
fi
ln -sf "$STUB/libcuda.so.1" "$L/libcuda.so"

# 3. The environment of the build, also written to env.sh for other cargo commands on the same
#    target dir (CI's `cargo test --features cuda`): the same RUSTFLAGS, or cargo rebuilds all.
#    The rpath is where the binary looks for the CUDA libraries on the GPU machine: next to it
#    (lib/), the toolkit, then a PyTorch venv's nvidia wheels.
RPATH='$ORIGIN/lib:/usr/local/cuda/lib64:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib'
cat > "$HOME_DIR/env.sh" <<ENVEOF
# written by scripts/build-cuda.sh: the CUDA build environment (nvcc and libraries from wheels)
export PATH="$NV/cu13/bin:\$PATH"
export CUDA_ROOT="$HOME_DIR/cudaroot"
export CUDA_COMPUTE_CAP=$CAP
export CUDAFORGE_THREADS=\${CUDAFORGE_THREADS:-$(nproc)}
export RUSTFLAGS="\${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,${RPATH//\$/\\\$}"
# the binary starts here (no GPU) with the wheels' libraries and the driver stub
export LD_LIBRARY_PATH="$NV/cu13/lib:$NV/cudnn/lib:$STUB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENVEOF
if [ -n "$SETUP_ONLY" ]; then
  echo "build-cuda.sh: toolchain ready ($NV); source $HOME_DIR/env.sh" >&2
  exit 0
fi

cd "$(dirname "$0")/.."
export PATH="$NV/cu13/bin:$PATH"          # nvcc 13.0.88, for candle-kernels and cudarc
export CUDA_ROOT="$HOME_DIR/cudaroot"     # cudarc: -L $CUDA_ROOT/lib
export CUDA_COMPUTE_CAP=$CAP              # there is no nvidia-smi to ask; 90 builds sm_90a
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,$RPATH"
echo "build-cuda.sh: cargo build --release --features $FEATURES for $ARCH" >&2
cargo build --release --features "$FEATURES" "$@"
