#!/usr/bin/env bash
# Creates .venv-bench (in the repository root) with the pinned PyTorch stack of
# bench/requirements.txt, once; run it again after the requirements change. Prints the Python
# to use. The comparison and fixture scripts default to that Python.
#
#   bench/pytorch-env.sh                 # then: bench/compare.sh
#   TORCH_INDEX=https://download.pytorch.org/whl/cpu bench/pytorch-env.sh   # CPU-only wheels
#   BASE_PYTHON=python3.12 bench/pytorch-env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-bench}
BASE_PYTHON=${BASE_PYTHON:-python3}
REQ=bench/requirements.txt
STAMP="$VENV/.requirements"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && cmp -s "$REQ" "$STAMP"; then
  echo "$VENV/bin/python"
  exit 0
fi
if ! command -v "$BASE_PYTHON" >/dev/null 2>&1; then
  echo "pytorch-env: $BASE_PYTHON not found; install Python 3.10-3.13 or set BASE_PYTHON" >&2
  exit 2
fi
echo "pytorch-env: installing $REQ into $VENV (PyPI's torch brings CUDA libraries: several GB)" >&2
"$BASE_PYTHON" -m venv "$VENV"
extra=()
[ -n "${TORCH_INDEX:-}" ] && extra=(--extra-index-url "$TORCH_INDEX")
"$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
"$VENV/bin/python" -m pip install --quiet "${extra[@]}" -r "$REQ" >&2
"$VENV/bin/python" -c "import torch, torchvision, timm, PIL; print('pytorch-env: torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'Pillow', PIL.__version__)" >&2
cp "$REQ" "$STAMP"
echo "$VENV/bin/python"
