#!/usr/bin/env python3
"""The benchmark table from bench/compare.sh's JSON lines (standard library only).

    bench/summarize.py compare.jsonl [more.jsonl ...]
    bench/summarize.py --scaling scaling.jsonl     # step time against batch and image size

Training-step rows: per net and shape, runner's and PyTorch's images/s (median of the rounds;
each round's values in order), the ratio runner / PyTorch per round and its median, PyTorch
channels-last where it was measured, and each side's peak RSS (max over rounds, MiB). Whole-run
rows: wall seconds of each process (median), the ratio PyTorch / runner (above 1: runner is
faster), where each side's time went (phase totals of the median round), the final metrics and
peak RSS. The header says when, on which commit(s) and at what load the lines were measured.
"""
import json
import statistics
import sys
from collections import defaultdict


def fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


def scaling(steps):
    """Per net, one row per shape: step time (ms, median of the rounds) of each side."""
    nets = sorted({net for net, _, _ in steps})
    for net in nets:
        print(f"\n{net}: milliseconds per training step (ratio = PyTorch / runner time, above "
              "1 means runner is faster)\n")
        print("| px | batch | runner ms | PyTorch ms | ratio | runner / PyTorch peak RSS (MiB) |")
        print("| --- | --- | --- | --- | --- | --- |")
        shapes = sorted((size, batch) for n, size, batch in steps if n == net)
        for size, batch in shapes:
            rs = steps[(net, size, batch)].values()
            ms = {side: statistics.median(batch * 1e3 / r[side]["images_per_sec"]
                                          for r in rs if side in r)
                  for side in ("runner", "pytorch") if any(side in r for r in rs)}
            rss = {side: max(r[side]["max_rss_mb"] for r in rs if side in r) for side in ms}
            ratio = ms["pytorch"] / ms["runner"] if len(ms) == 2 else None
            print(f"| {size} | {batch} | {fmt(ms.get('runner'), 0)} | {fmt(ms.get('pytorch'), 0)} "
                  f"| {fmt(ratio, 2)} | {fmt(rss.get('runner'), 0)} / {fmt(rss.get('pytorch'), 0)} |")


def main(paths):
    by_shape = paths[:1] == ["--scaling"]
    paths = paths[1:] if by_shape else paths
    lines = []
    for p in paths:
        with open(p) as f:
            lines += [json.loads(x) for x in f if x.strip().startswith("{")]
    if not lines:
        raise SystemExit("summarize.py: no measurements in " + " ".join(paths))
    dates = sorted(x["date"] for x in lines)
    loads = [x["load"] for x in lines]
    commits = sorted({x["commit"] for x in lines})
    print(f"{len(lines)} measurements, {dates[0]} to {dates[-1]}, commit {', '.join(commits)}, "
          f"1-minute load before each {min(loads):.2f}-{max(loads):.2f}\n")
    steps = defaultdict(lambda: defaultdict(dict))
    e2e = defaultdict(dict)
    for x in lines:
        if x["net"].startswith("e2e_") or "phase_seconds" in x:  # a whole run
            e2e[x["round"]][x["side"]] = x
        else:
            steps[(x["net"], x["size"], x["batch"])][x["round"]][x["side"]] = x
    if steps and by_shape:
        scaling(steps)
        return
    if steps:
        print("| net | px | batch | runner img/s | PyTorch img/s | ratio per round | median ratio "
              "| PyTorch channels-last img/s | peak RSS runner / PyTorch (MiB) | load |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for (net, size, batch), rounds in steps.items():
            rs = [rounds[r] for r in sorted(rounds)]
            run = [r["runner"]["images_per_sec"] for r in rs if "runner" in r]
            pt = [r["pytorch"]["images_per_sec"] for r in rs if "pytorch" in r]
            cl = [r["pytorch_channels_last"]["images_per_sec"] for r in rs
                  if "pytorch_channels_last" in r]
            ratios = [r["runner"]["images_per_sec"] / r["pytorch"]["images_per_sec"]
                      for r in rs if "runner" in r and "pytorch" in r]
            rss_r = max((r["runner"]["max_rss_mb"] for r in rs if "runner" in r), default=None)
            rss_p = max((r["pytorch"]["max_rss_mb"] for r in rs if "pytorch" in r), default=None)
            ld = [s["load"] for r in rs for s in r.values()]
            print(f"| {net} | {size} | {batch} "
                  f"| {fmt(statistics.median(run)) if run else '-'} ({', '.join(fmt(v) for v in run)}) "
                  f"| {fmt(statistics.median(pt)) if pt else '-'} ({', '.join(fmt(v) for v in pt)}) "
                  f"| {', '.join(fmt(v, 2) for v in ratios)} "
                  f"| **{fmt(statistics.median(ratios), 2) if ratios else '-'}x** "
                  f"| {fmt(statistics.median(cl)) if cl else '-'} "
                  f"| {fmt(rss_r, 0)} / {fmt(rss_p, 0)} "
                  f"| {min(ld):.1f}-{max(ld):.1f} |")
    if e2e:
        rs = [e2e[r] for r in sorted(e2e) if "runner" in e2e[r] and "pytorch" in e2e[r]]
        wr = [r["runner"]["process_wall_s"] for r in rs]
        wp = [r["pytorch"]["process_wall_s"] for r in rs]
        ratios = [p / r for p, r in zip(wp, wr)]
        epochs = rs[0]["runner"].get("epochs")
        print(f"\nWhole run (ResNet-18, 64 px, batch 32, {epochs} epochs, "
              f"{rs[0]['pytorch'].get('train_images')} training images; wall seconds of the "
              "process; ratio = PyTorch / runner, above 1 means runner is faster):\n")
        print(f"| runner s | PyTorch s | ratio per round | median ratio | load |")
        print("| --- | --- | --- | --- | --- |")
        ld = [s["load"] for r in rs for s in r.values()]
        print(f"| {fmt(statistics.median(wr))} ({', '.join(fmt(v) for v in wr)}) "
              f"| {fmt(statistics.median(wp))} ({', '.join(fmt(v) for v in wp)}) "
              f"| {', '.join(fmt(v, 2) for v in ratios)} | **{fmt(statistics.median(ratios), 2)}x** "
              f"| {min(ld):.1f}-{max(ld):.1f} |")
        mid = sorted(rs, key=lambda r: r["runner"]["process_wall_s"])[len(rs) // 2]
        names = ["train", "loader_wait", "eval", "verify", "checkpoint", "store"]
        print("\nWhere the time went (seconds, summed over the epochs of the median runner round "
              "and the PyTorch process of that round):\n")
        print("| side | " + " | ".join(names) + " | val_acc | verify_acc | peak RSS (MiB) |")
        print("| --- " * (len(names) + 4) + "|")
        for side in ("runner", "pytorch"):
            x = mid[side]
            ph = x["phase_seconds"]
            rss = f"{x['max_rss_mb']:.0f}"
            if "children_rss_mb" in x:
                rss += f" (+ workers {x['children_rss_mb']:.0f})"
            print(f"| {side} | " + " | ".join(fmt(ph.get(n), 2) for n in names)
                  + f" | {fmt(x.get('val_acc'), 3)} | {fmt(x.get('verify_acc'), 3)} | {rss} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["/dev/stdin"])
