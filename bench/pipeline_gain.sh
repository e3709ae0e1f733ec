#!/usr/bin/env bash
# Pretrained vs from-scratch face verification on the small built-in face set
# (docs/pipelines.md has the results): recipes/faces_finetune.toml against
# recipes/faces_scratch.toml, 3 seeds each, and the same comparison for the choices that
# matter on small data. Run by hand, from anywhere; it keeps its store, data and checkpoints
# in $WORK (default ./pipeline-gain), so a second run reuses every run already done.
#
#   cargo build --release && bench/pipeline_gain.sh
#   SEEDS="0 1 2 3 4" VARIANTS="base tta" bench/pipeline_gain.sh
#
# Prints one JSON line per (variant, start) with the mean and sample std (n - 1) over the
# seeds of: verify_acc (accuracy on unknown_dev, threshold tuned there, end of training),
# verify_test (unknown_test, with that threshold: `runner eval RUN --split verify-test`) and
# val_acc (the best epoch's classification accuracy on dev).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNNER=${RUNNER:-$REPO/target/release/runner}
WORK=${WORK:-pipeline-gain}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"base embed arcface arcface_warmup tta gallery_max"}
mkdir -p "$WORK"
cd "$WORK"
R() { "$RUNNER" --db pipeline.db --quiet "$@"; }

# variant -> fine-tune recipe, scratch recipe, extra --set flags
recipes() {
  case "$1" in
    embed) echo "$REPO/bench/pipeline/finetune_embed.toml $REPO/bench/pipeline/scratch_embed.toml" ;;
    *) echo "$REPO/recipes/faces_finetune.toml $REPO/recipes/faces_scratch.toml" ;;
  esac
}
sets() {
  case "$1" in
    base | embed) ;;
    arcface) echo 'loss.kind="arcface" loss.scale=32 loss.margin=0.3' ;;
    arcface_warmup) echo 'loss.kind="arcface" loss.scale=32 loss.margin=0.3 loss.margin_warmup_epochs=4' ;;
    tta) echo 'verification.tta=true' ;;
    gallery_max) echo 'verification.gallery="max"' ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

for variant in $VARIANTS; do
  read -r finetune scratch <<<"$(recipes "$variant")"
  for start in pretrained scratch; do
    recipe=$finetune
    [ "$start" = scratch ] && recipe=$scratch
    verify=()
    verify_test=()
    val=()
    for seed in $SEEDS; do
      args=(run "$recipe" --set "train.seed=$seed" --format json)
      for s in $(sets "$variant"); do args+=(--set "$s"); done
      out=$(R "${args[@]}")
      id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$out")
      show=$(R show "$id" --format json)
      verify+=("$(python3 -c 'import json,sys; e=json.load(sys.stdin)["epochs"]; print([x["verify_acc"] for x in e if x.get("verify_acc") is not None][-1])' <<<"$show")")
      val+=("$(python3 -c 'import json,sys; e=json.load(sys.stdin)["epochs"]; print(max(x["val_acc"] for x in e if x.get("val_acc") is not None))' <<<"$show")")
      verify_test+=("$(R eval "$id" --split verify-test --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')")
    done
    python3 - "$variant" "$start" "${#verify[@]}" "${verify[@]}" "${verify_test[@]}" "${val[@]}" <<'EOF'
import json, statistics, sys
variant, start, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
vals = [float(x) for x in sys.argv[4:]]
cols = {"verify_acc": vals[:n], "verify_test": vals[n:2 * n], "val_acc": vals[2 * n:]}
row = {"variant": variant, "start": start, "seeds": n}
for k, v in cols.items():
    row[k] = round(statistics.mean(v), 4)
    row[k + "_std"] = round(statistics.stdev(v), 4) if n > 1 else 0.0
    row[k + "_runs"] = v
print(json.dumps(row), flush=True)
EOF
  done
done
