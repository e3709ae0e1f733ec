# Sourced by bench/quickstart.sh, data_compare.sh and profile.sh (with REPO set): what every
# raw line records. COMMIT is the checkout's short hash, with "+dirty" when a tracked file
# differs from it (new untracked files, such as the output itself, do not change what is
# measured); CPU_MODEL and CPU_FLAGS (the SIMD flags: AVX2, FMA, AVX-512, AMX) come from
# /proc/cpuinfo. `results_file NAME` is $OUT if set, else bench/results/DATE/COMMIT/NAME.
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  COMMIT="$COMMIT+dirty"
fi
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
CPU_FLAGS=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512[a-z_0-9]*|amx[a-z_0-9]*)$' | sort | tr '\n' ' ' | sed 's/ $//')
results_file() {
  echo "${OUT:-$REPO/bench/results/$(date -u +%F)/${COMMIT%+dirty}/$1}"
}
