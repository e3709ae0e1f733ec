#!/usr/bin/env bash
# Re-checks every PyTorch / torchvision / timm / Pillow fixture under tests/fixtures/ against
# the pinned stack of bench/requirements.txt: makes .venv-bench if needed
# (bench/pytorch-env.sh), regenerates the fixtures and fails if any file changed
# (tests/fixtures/regenerate.sh --check), then appends one JSON line with the result, the
# date, the commit, the machine and the library versions to
# bench/results/<UTC date>/fixtures-check-<commit>.jsonl (commit it: the docs quote it).
#
#   bench/check-fixtures.sh
#
# CI does not run this (it has no PyTorch, and the test that would, tests/fixtures_reference.rs,
# skips there; .ci/run says so): run it by hand after touching a fixture or the requirements.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=$(bench/pytorch-env.sh)
export PYTHON
commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain -- tests/fixtures | head -c1)
if [ -n "$dirty" ]; then
  echo "check-fixtures: tests/fixtures has uncommitted changes; commit or stash them first" >&2
  exit 2
fi
start=$(date +%s)
status=passed
if ! tests/fixtures/regenerate.sh --check; then
  status=failed
fi
seconds=$(( $(date +%s) - start ))
out="bench/results/$(date -u +%Y-%m-%d)/fixtures-check-$commit.jsonl"
mkdir -p "$(dirname "$out")"
"$PYTHON" - "$status" "$seconds" "$commit" >> "$out" <<'PY'
import datetime, json, os, platform, sys
import PIL, timm, torch, torchvision
status, seconds, commit = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cpu, flags = "unknown", []
try:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
except OSError:
    pass
isa = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))
print(json.dumps({
    "bench": "fixtures-check", "status": status, "seconds": seconds, "commit": commit,
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "cpu": cpu, "cores": os.cpu_count(), "isa": isa, "load": os.getloadavg()[0],
    "python": platform.python_version(), "torch": torch.__version__,
    "torchvision": torchvision.__version__, "timm": timm.__version__, "pillow": PIL.__version__,
}))
PY
echo "check-fixtures: $status in $seconds s; recorded in $out"
[ "$status" = passed ]
