"""Side-by-side operator groups of a training step from bench/profile.sh's JSON lines
(standard library only; `bench/summarize.py --profile FILE` and the docs blocks).

runner's operations and PyTorch's top-level operators are put in the same groups: the
convolutions (forward, backward), BatchNorm with its activation (runner fuses ReLU / ReLU6 into
the BatchNorm; PyTorch runs them as their own operators), the rest, and the time outside every
operation. Milliseconds per step, medians over the rounds.
"""
import statistics
from collections import defaultdict

GROUPS = ["convolutions, forward", "convolutions, backward",
          "BatchNorm + activation, forward", "BatchNorm + activation, backward",
          "optimizer and other operations", "outside the operations"]


def group(side, op):
    o = op.lower()
    if op.startswith("(outside"):
        return GROUPS[5]
    if side.startswith("runner"):
        conv = o.startswith(("conv", "depthwise"))
        bn = o.startswith("batch-norm")
    else:
        conv = "convolution" in o or o.startswith(("aten::conv", "aten::_conv", "aten::mkldnn_conv"))
        bn = ("batchnorm" in o or "batch_norm" in o or "hardtanh" in o or "relu" in o
              or "threshold" in o)
    bwd = "bwd" in o or "backward" in o
    if conv:
        return GROUPS[1 if bwd else 0]
    if bn:
        return GROUPS[3 if bwd else 2]
    return GROUPS[4]


def rows(lines):
    """(net, size, batch) -> side -> group -> [ms per round]; and -> side -> [images/s]."""
    groups = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    speed = defaultdict(lambda: defaultdict(list))
    for x in lines:
        if x.get("kind") != "profile" or "ops" not in x:
            continue
        key = (x["net"], x["size"], x["batch"])
        per = defaultdict(float)
        for op in x["ops"]:
            per[group(x["side"], op["op"])] += op["ms_per_step"]
        for g in GROUPS:
            groups[key][x["side"]][g].append(per[g])
        speed[key][x["side"]].append(x["images_per_sec"])
    return groups, speed


def table(lines):
    groups, speed = rows(lines)
    config = sorted({x.get("config") for x in lines if x.get("side") == "pytorch"} - {None})
    out = []
    for key in sorted(groups):
        net, size, batch = key
        g = groups[key]
        before = "runner_before" in g
        med = lambda side, name: statistics.median(g[side][name]) if g[side][name] else None
        out += [f"{net}, {size} px, batch {batch} (PyTorch {', '.join(config)}): milliseconds "
                "per step, median of the rounds", "",
                "| group |" + (" runner before |" if before else "")
                + " runner | PyTorch | time, runner / PyTorch |",
                "| --- |" + (" --- |" if before else "") + " --- | --- | --- |"]
        for name in GROUPS:
            r, p = med("runner", name), med("pytorch", name)
            cells = ([f"{med('runner_before', name):.1f}"] if before else []) + [
                f"{r:.1f}", f"{p:.1f}", f"{r / p:.2f}" if p else ""]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        sm = {side: statistics.median(v) for side, v in speed[key].items()}
        cells = ([f"{sm['runner_before']:.1f}"] if before else []) + [
            f"{sm['runner']:.1f}", f"{sm['pytorch']:.1f}", f"{sm['runner'] / sm['pytorch']:.2f}x"]
        out += ["| images per second with the profiler on (last column: runner's over PyTorch's) | "
                + " | ".join(cells) + " |", ""]
    return out[:-1]
