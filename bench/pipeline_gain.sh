#!/usr/bin/env bash
# Pretrained against from-scratch face verification on the small built-in face set
# (docs/pipelines.md has the results): recipes/faces_finetune.toml against
# recipes/faces_scratch.toml, each side with the same tuning effort (its own learning rate and
# epochs, chosen on unknown_dev), then fresh seeds over two pretrainings, and the same
# comparison for the choices that matter on small data. Run by hand; the steps are in
# bench/pipeline_gain.py's header. It keeps its store, data and checkpoints in $WORK (default
# ./pipeline-gain), so a second run trains only what is missing, and writes one JSON line per
# run, with the machine, date, commit and load, to $OUT (default
# bench/results/DATE/COMMIT/pipeline.jsonl). `bench/summarize.py --docs` makes the tables.
#
#   cargo build --release && bench/pipeline_gain.sh
#   bench/pipeline_gain.sh --dry-run                  # the plan: grid, seeds, variants
#   LRS="1e-3 4e-3" EPOCHS="20 40" TUNE_SEEDS="0 1" EVAL_SEEDS="3 4" PRETRAIN_SEEDS="0 1" \
#     VARIANTS="base tta" bench/pipeline_gain.sh
#   PRETRAIN_EPOCHS=2 ...                             # a short pretraining: the mechanics only
set -euo pipefail
exec python3 "$(dirname "$0")/pipeline_gain.py" "$@"
