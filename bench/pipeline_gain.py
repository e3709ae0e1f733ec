#!/usr/bin/env python3
"""Pretrained against from-scratch face verification, each side tuned alike (standard library).

Run by bench/pipeline_gain.sh (its header says how). What it does, in order:

1. Pretraining: `recipes/pretrain_synth.toml` once per pretraining seed (PRETRAIN_SEEDS,
   `train.seed` of the parent run), each a run of its own.
2. Tuning, the same for both sides: every (learning rate, epochs) of the grid LRS x EPOCHS,
   for `recipes/faces_finetune.toml` (from the first pretraining) and for
   `recipes/faces_scratch.toml`, with TUNE_SEEDS each. Each side keeps the setting with the
   best mean verification accuracy on `unknown_dev` over those seeds (ties: the better mean dev
   classification, then fewer epochs, then the smaller rate); `unknown_test` takes no part.
3. Evaluation at each side's own setting, on seeds the tuning did not use: the fine-tune for
   every pretraining seed x EVAL_SEEDS, the scratch side with as many seeds (SCRATCH_SEEDS), so
   that the fine-tune's spread includes the pretraining's. Then every variant of VARIANTS
   (`--set` flags on both recipes, or the 128-d embedding recipes with pretrainings of their
   own) at the same settings.

Every run is scored by `runner eval RUN --split verify-dev` and `--split verify-test` (the
checkpoint with the best dev classification accuracy; the threshold tuned on `unknown_dev`),
and written as one JSON line to OUT, with the machine, the date, the commit and the load. The
store, the data and the checkpoints stay in WORK, so a second invocation trains only what is
missing. bench/pipeline_summary.py (through `bench/summarize.py --docs`) makes the tables.
"""
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import pipeline_summary  # noqa: E402  (bench/ is not a package)

RUNNER = os.environ.get("RUNNER", os.path.join(REPO, "target", "release", "runner"))
WORK = os.path.abspath(os.environ.get("WORK", "pipeline-gain"))
LRS = os.environ.get("LRS", "5e-4 1e-3 2e-3 4e-3 8e-3").split()
EPOCHS = [int(x) for x in os.environ.get("EPOCHS", "10 20 40 80").split()]
TUNE_SEEDS = [int(x) for x in os.environ.get("TUNE_SEEDS", "0 1 2").split()]
EVAL_SEEDS = [int(x) for x in os.environ.get("EVAL_SEEDS", "3 4 5").split()]
PRETRAIN_SEEDS = [int(x) for x in os.environ.get("PRETRAIN_SEEDS", "0 1").split()]
# a shorter pretraining (epochs), for a quick look at the mechanics only; unset: the recipe's
PRETRAIN_EPOCHS = os.environ.get("PRETRAIN_EPOCHS")
VARIANTS = os.environ.get(
    "VARIANTS", "base arcface arcface_warmup tta gallery_max embed").split()
n_eval = len(PRETRAIN_SEEDS) * len(EVAL_SEEDS)
SCRATCH_SEEDS = [int(x) for x in os.environ.get(
    "SCRATCH_SEEDS", " ".join(str(EVAL_SEEDS[0] + i) for i in range(n_eval))).split()]

# variant -> --set flags on both sides (the embed variant has recipes of its own instead)
SETS = {
    "base": [],
    "embed": [],
    "arcface": ["loss.kind=\"arcface\"", "loss.scale=32", "loss.margin=0.3"],
    "arcface_warmup": ["loss.kind=\"arcface\"", "loss.scale=32", "loss.margin=0.3",
                       "loss.margin_warmup_epochs=4"],
    "tta": ["verification.tta=true"],
    "gallery_max": ["verification.gallery=\"max\""],
}


def recipes(variant):
    """(pretraining, fine-tune, scratch) recipe files of a variant."""
    if variant == "embed":
        p = os.path.join(HERE, "pipeline")
        return (os.path.join(p, "pretrain_embed.toml"), os.path.join(p, "finetune_embed.toml"),
                os.path.join(p, "scratch_embed.toml"))
    r = os.path.join(REPO, "recipes")
    return (os.path.join(r, "pretrain_synth.toml"), os.path.join(r, "faces_finetune.toml"),
            os.path.join(r, "faces_scratch.toml"))


def seeded_recipes(variant, pretrain_seed):
    """Recipe files in WORK: the variant's pretraining with `train.seed = pretrain_seed`, and
    its fine-tune starting from that run (a recipe's parent takes no --set)."""
    pre, fine, _ = recipes(variant)
    pre_s = os.path.join(WORK, f"pretrain_{variant}_s{pretrain_seed}.toml")
    fine_s = os.path.join(WORK, f"finetune_{variant}_s{pretrain_seed}.toml")
    with open(pre_s, "w") as f:
        f.write(f"use = [{json.dumps(pre)}]\n\n[train]\nseed = {pretrain_seed}\n")
        if PRETRAIN_EPOCHS:
            f.write(f"epochs = {int(PRETRAIN_EPOCHS)}\n")
    with open(fine_s, "w") as f:
        f.write(f"use = [{json.dumps(fine)}]\n\n[model]\ninit_from = {{ recipe = "
                f"{json.dumps(os.path.basename(pre_s))}, pick = \"best\" }}\n")
    return pre_s, fine_s


def sh(*args):
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"pipeline_gain: `{' '.join(args)}` exited {p.returncode}:\n{p.stderr}")
    return p.stdout


def runner(*args):
    return sh(RUNNER, "--db", "pipeline.db", "--quiet", *args)


def machine():
    model, flags = "unknown", []
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = sorted(x for x in line.split(":", 1)[1].split()
                               if x in ("avx2", "fma") or x.startswith(("avx512", "amx")))
    return {"machine": f"{model}, {os.cpu_count()} cores", "cpu": model,
            "cores": os.cpu_count(), "isa": " ".join(flags)}


def commit():
    try:
        c = sh("git", "-C", REPO, "rev-parse", "--short", "HEAD").strip()
        dirty = sh("git", "-C", REPO, "status", "--porcelain", "--untracked-files=no").strip()
        return c + ("+dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


MACHINE, COMMIT = None, None


def stamp():
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"date": now, "commit": COMMIT, "load": load, **MACHINE}


def train(recipe, sets):
    """Trains (or finds done) one run; its id, wall seconds of this call, and `runner show`."""
    args = ["run", recipe, "--format", "json"]
    for s in sets:
        args += ["--set", s]
    t0 = time.monotonic()
    out = json.loads(runner(*args))
    wall = time.monotonic() - t0
    show = json.loads(runner("show", str(out["id"]), "--format", "json"))
    return out["id"], wall, show


def score(run_id):
    dev = json.loads(runner("eval", str(run_id), "--split", "verify-dev", "--format", "json"))
    test = json.loads(runner("eval", str(run_id), "--split", "verify-test", "--format", "json"))
    return dev, test


def summary_of(show):
    epochs = [e for e in show["epochs"] if e.get("val_acc") is not None]
    best = max(epochs, key=lambda e: e["val_acc"]) if epochs else {}
    return {"val_acc": best.get("val_acc"), "train_s": round(sum(
        e.get("seconds", 0.0) for e in show["epochs"]), 2)}


def emit(out, line):
    out.write(json.dumps(line) + "\n")
    out.flush()
    print(json.dumps(line), flush=True)


def run_line(out, phase, variant, start, recipe, lr, epochs, seed, pretrain_seed):
    sets = [f"optimizer.lr={lr}", f"train.epochs={epochs}", f"train.seed={seed}"]
    sets += SETS[variant]
    run_id, wall, show = train(recipe, sets)
    dev, test = score(run_id)
    emit(out, {"kind": "run", "phase": phase, "variant": variant, "start": start,
               "lr": float(lr), "epochs": epochs, "seed": seed, "pretrain_seed": pretrain_seed,
               "run": run_id, "key": show["key"], "best_epoch": dev["epoch"],
               "verify_dev": dev["accuracy"], "verify_test": test["accuracy"],
               "threshold": dev["threshold"], **summary_of(show),
               "wall_s": round(wall, 2), **stamp()})


def pretrain_line(out, variant, pretrain_seed):
    pre_s, fine_s = seeded_recipes(variant, pretrain_seed)
    run_id, wall, show = train(pre_s, [])
    emit(out, {"kind": "pretrain", "variant": variant, "pretrain_seed": pretrain_seed,
               "run": run_id, "key": show["key"], "verify_dev": next(
                   (v["accuracy"] for v in reversed(show["verification"])
                    if v.get("split", "verify-dev") == "verify-dev" and "accuracy" in v), None),
               **summary_of(show), "wall_s": round(wall, 2), **stamp()})
    return fine_s


def plan():
    """The runs, in order, as (phase, variant, start, lr, epochs, seed, pretrain_seed)."""
    tune = [("tune", "base", start, lr, ep, s, PRETRAIN_SEEDS[0] if start == "pretrained"
             else None) for start in ("pretrained", "scratch") for lr in LRS for ep in EPOCHS
            for s in TUNE_SEEDS]
    evals = []
    for variant in VARIANTS:
        if variant not in SETS:
            raise SystemExit(f"pipeline_gain: unknown variant {variant} (known: {', '.join(SETS)})")
        evals += [("eval", variant, "pretrained", None, None, s, p)
                  for p in PRETRAIN_SEEDS for s in EVAL_SEEDS]
        evals += [("eval", variant, "scratch", None, None, s, None) for s in SCRATCH_SEEDS]
    return tune, evals


def main(argv):
    global MACHINE, COMMIT
    tune, evals = plan()
    if argv[:1] == ["--dry-run"]:
        print(f"pipeline_gain plan: pretraining seeds {PRETRAIN_SEEDS}; tuning grid lr {LRS} x "
              f"epochs {EPOCHS} x seeds {TUNE_SEEDS} on both sides ({len(tune)} runs, the "
              f"fine-tune from pretraining seed {PRETRAIN_SEEDS[0]}), each side's best by mean "
              f"verification on unknown_dev; evaluation of {VARIANTS} at each side's setting: "
              f"fine-tune {len(PRETRAIN_SEEDS)} pretrainings x seeds {EVAL_SEEDS}, scratch "
              f"seeds {SCRATCH_SEEDS} ({len(evals)} runs)")
        return 0
    if argv:
        raise SystemExit("usage: bench/pipeline_gain.sh [--dry-run]")
    MACHINE, COMMIT = machine(), commit()
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out_path = os.path.abspath(os.environ.get("OUT") or os.path.join(
        REPO, "bench", "results", day, COMMIT.replace("+dirty", ""), "pipeline.jsonl"))
    os.makedirs(WORK, exist_ok=True)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    os.chdir(WORK)
    with open(out_path, "w") as out:
        emit(out, {"kind": "header", "lrs": [float(x) for x in LRS], "epochs": EPOCHS,
                   "tune_seeds": TUNE_SEEDS, "eval_seeds": EVAL_SEEDS,
                   "scratch_seeds": SCRATCH_SEEDS, "pretrain_seeds": PRETRAIN_SEEDS,
                   "variants": VARIANTS, "pretrain_epochs": PRETRAIN_EPOCHS and int(PRETRAIN_EPOCHS),
                   "runner": sh(RUNNER, "--version").strip(),
                   "threads": int(os.environ.get("RAYON_NUM_THREADS") or os.cpu_count()),
                   **stamp()})
        fine = {}
        for p in PRETRAIN_SEEDS:
            fine[("base", p)] = pretrain_line(out, "base", p)
        for phase, variant, start, lr, ep, s, p in tune:
            recipe = fine[("base", p)] if start == "pretrained" else recipes(variant)[2]
            run_line(out, phase, variant, start, recipe, lr, ep, s, p)
        out.flush()
        with open(out_path) as f:
            lines = [json.loads(x) for x in f]
        chosen = {start: pipeline_summary.choose(lines, start)
                  for start in ("pretrained", "scratch")}
        for start, (lr, ep) in chosen.items():
            emit(out, {"kind": "choice", "start": start, "lr": lr, "epochs": ep, **stamp()})
        for phase, variant, start, _, _, s, p in evals:
            lr, ep = chosen[start]
            family = "embed" if variant == "embed" else "base"  # whose pretraining
            if start == "pretrained" and (family, p) not in fine:
                fine[(family, p)] = pretrain_line(out, family, p)
            recipe = fine[(family, p)] if start == "pretrained" else recipes(variant)[2]
            run_line(out, phase, variant, start, recipe, lr, ep, s, p)
    print(f"pipeline_gain: wrote {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
