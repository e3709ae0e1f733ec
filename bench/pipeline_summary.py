"""The pipeline-gain tables from bench/pipeline_gain.py's JSON lines (standard library only).

Used by bench/pipeline_gain.py (which setting each side keeps) and by `bench/summarize.py
--docs` (docs/pipelines.md's tables and the README's sentence). Each side's setting is chosen
here from the tuning lines alone, so the docs and the run agree by construction.
"""
import statistics
from collections import defaultdict

VARIANT_NAMES = {
    "base": "**base** (`faces_finetune` / `faces_scratch` as shipped)",
    "embed": "128-d embedding + BatchNorm (`model.embedding_dim = 128`, "
             "`model.embedding_norm = true`; pretrainings of its own)",
    "arcface": "ArcFace (`loss.kind = \"arcface\"`, `scale = 32`, `margin = 0.3`)",
    "arcface_warmup": "ArcFace after 4 epochs without the margin "
                      "(`loss.margin_warmup_epochs = 4`)",
    "tta": "flip TTA (`verification.tta = true`)",
    "gallery_max": "gallery of best images (`verification.gallery = \"max\"`)",
}


def mean(xs):
    return statistics.mean(xs)


def sd(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def runs(lines, phase, variant="base"):
    return [x for x in lines if x.get("kind") == "run" and x["phase"] == phase
            and x["variant"] == variant]


def grid(lines, start):
    """(lr, epochs) -> the tuning runs of one side."""
    g = defaultdict(list)
    for x in runs(lines, "tune"):
        if x["start"] == start:
            g[(x["lr"], x["epochs"])].append(x)
    return g


def choose(lines, start):
    """The side's setting: the best mean verification on unknown_dev over the tuning seeds;
    ties go to the better mean dev classification, then fewer epochs, then the smaller rate."""
    g = grid(lines, start)
    if not g:
        raise SystemExit(f"pipeline_summary: no tuning runs for the {start} side")
    return max(g, key=lambda k: (round(mean([x["verify_dev"] for x in g[k]]), 9),
                                 round(mean([x["val_acc"] for x in g[k]]), 9), -k[1], -k[0]))


def chosen(lines):
    """Each side's setting by `choose`, checked against the `choice` lines the run recorded:
    a rule changed since the run would describe runs that were not made."""
    out = {s: choose(lines, s) for s in ("pretrained", "scratch")}
    for x in lines:
        if x.get("kind") == "choice" and (x["lr"], x["epochs"]) != out[x["start"]]:
            raise SystemExit(f"pipeline_summary: the run chose lr {x['lr']:g}, {x['epochs']} "
                             f"epochs for the {x['start']} side, the rule now chooses lr "
                             f"{out[x['start']][0]:g}, {out[x['start']][1]} epochs")
    return out


def pm(xs):
    return f"{mean(xs):.3f} ± {sd(xs):.3f}"


def tuning_table(lines):
    """Per side, the grid's mean verification on unknown_dev (and dev classification), the
    kept setting in bold."""
    out = []
    for start in ("pretrained", "scratch"):
        g = grid(lines, start)
        lrs = sorted({k[0] for k in g})
        eps = sorted({k[1] for k in g})
        best = choose(lines, start)
        seeds = sorted({x["seed"] for xs in g.values() for x in xs})
        out += [f"{'Fine-tune' if start == 'pretrained' else 'From scratch'} (seeds "
                f"{', '.join(map(str, seeds))}): mean verification on `unknown_dev` / mean dev "
                "classification", "",
                "| learning rate | " + " | ".join(f"{e} epochs" for e in eps) + " |",
                "| --- |" + " --- |" * len(eps)]
        for lr in lrs:
            cells = []
            for e in eps:
                xs = g.get((lr, e), [])
                if not xs:
                    cells.append("")
                    continue
                c = (f"{mean([x['verify_dev'] for x in xs]):.3f} / "
                     f"{mean([x['val_acc'] for x in xs]):.3f}")
                cells.append(f"**{c}**" if (lr, e) == best else c)
            out.append(f"| {lr:g} | " + " | ".join(cells) + " |")
        out.append("")
    return out[:-1]


def results_table(lines):
    """Per variant and side, at each side's kept setting: mean ± sample std (n - 1)."""
    kept = chosen(lines)
    out = ["| variant (`--set` on both recipes) | start | runs | verification, `unknown_test` "
           "(headline) | verification, `unknown_dev` (optimistic) | dev classification |",
           "| --- | --- | --- | --- | --- | --- |"]
    variants = [v for v in VARIANT_NAMES if runs(lines, "eval", v)]
    for v in variants:
        for start in ("pretrained", "scratch"):
            xs = [x for x in runs(lines, "eval", v) if x["start"] == start]
            if not xs:
                continue
            lr, ep = kept[start]
            name = VARIANT_NAMES[v] if start == "pretrained" else ""
            bold = v == "base"
            t = pm([x["verify_test"] for x in xs])
            out.append(f"| {name} | {start} (lr {lr:g}, {ep} epochs) | {len(xs)} | "
                       + (f"**{t}**" if bold else t) + f" | {pm([x['verify_dev'] for x in xs])}"
                       f" | {pm([x['val_acc'] for x in xs])} |")
    return out


def pretrain_text(lines):
    pre = [x for x in lines if x.get("kind") == "pretrain"]
    parts = []
    for v in ("base", "embed"):
        xs = [x for x in pre if x["variant"] == v]
        if not xs:
            continue
        what = "`recipes/pretrain_synth.toml`" if v == "base" else \
            "`bench/pipeline/pretrain_embed.toml`"
        seeds = ", ".join(str(x["pretrain_seed"]) for x in xs)
        accs = ", ".join("%.3f" % x["val_acc"] for x in xs)
        mins = ", ".join("%.1f" % (x["train_s"] / 60) for x in xs)
        parts.append(f"{what} with `train.seed` = {seeds}: best dev accuracy {accs} on its "
                     f"2,000 identities, training time {mins} min")
    return "Pretrainings: " + "; ".join(parts) + "."


def gain(lines):
    """(pretrained runs, scratch runs) of the base variant's evaluation."""
    xs = runs(lines, "eval")
    return ([x for x in xs if x["start"] == "pretrained"],
            [x for x in xs if x["start"] == "scratch"])


def gain_text(lines):
    pre, scr = gain(lines)
    t_pre, t_scr = [x["verify_test"] for x in pre], [x["verify_test"] for x in scr]
    d_pre, d_scr = [x["verify_dev"] for x in pre], [x["verify_dev"] for x in scr]
    above = sum(1 for a in t_pre for b in t_scr if a > b)
    npre = len({x["pretrain_seed"] for x in pre})
    return (f"On `unknown_test` (the headline: threshold tuned on `unknown_dev`, these people "
            f"seen by no choice made) verification goes from **{mean(t_scr):.3f} ± "
            f"{sd(t_scr):.3f}** from scratch to **{mean(t_pre):.3f} ± {sd(t_pre):.3f}** "
            f"fine-tuned ({len(scr)} and {len(pre)} runs, the fine-tune's over {npre} "
            f"pretrainings; {above} of {len(t_pre) * len(t_scr)} pairs of a fine-tuned and a "
            f"scratch run have the fine-tune ahead); on `unknown_dev`, whose own threshold and "
            f"setting choice make it optimistic, from {mean(d_scr):.3f} to {mean(d_pre):.3f}. "
            "Chance (answering `n000000` for every unknown) is 0.333.")


def readme_text(lines):
    pre, scr = gain(lines)
    t_pre, t_scr = [x["verify_test"] for x in pre], [x["verify_test"] for x in scr]
    npre = len({x["pretrain_seed"] for x in pre})
    day = min(x["date"] for x in lines)[:10]
    kept = chosen(lines)
    return (f"Pretrained on 2,000 synthetic identities, then fine-tuned on 40 unseen ones, "
            f"verification on held-out people (`unknown_test`, threshold from `unknown_dev`) "
            f"goes from {mean(t_scr):.3f} ± {sd(t_scr):.3f} from scratch to {mean(t_pre):.3f} ± "
            f"{sd(t_pre):.3f} ({len(scr)} and {len(pre)} runs, {npre} pretrainings, {day}), "
            f"each side with its own learning rate and epochs tuned on `unknown_dev` (scratch: "
            f"{kept['scratch'][0]:g}, {kept['scratch'][1]} epochs; fine-tune: "
            f"{kept['pretrained'][0]:g}, {kept['pretrained'][1]} epochs). The people come "
            "from the same generator as the pretraining set, so real faces will gain less "
            "([docs/pipelines.md](docs/pipelines.md)).")
