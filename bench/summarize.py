#!/usr/bin/env python3
"""The benchmark tables from bench/compare.sh's JSON lines (standard library only).

    bench/summarize.py compare.jsonl [more.jsonl ...]
    bench/summarize.py --scaling scaling.jsonl     # step time against batch and image size
    bench/summarize.py --docs [--check]            # the generated blocks of the docs
    bench/summarize.py --pipeline pipeline.jsonl   # bench/pipeline_gain.sh's tables
    bench/summarize.py --profile profile.jsonl     # bench/profile.sh's operator groups

Training-step rows: per net and shape, runner's and PyTorch's images/s (median of the rounds;
each round's values in order), the ratio runner / PyTorch per round and its median, the ratio
of the medians, PyTorch channels-last where it was measured, PyTorch's best layout (the faster
of NCHW and channels-last in each round) with the median of runner / best over the rounds and
the ratio of medians against it, and each side's peak RSS (max over rounds, MiB). Whole-run
rows: wall seconds of each process (median), the ratio PyTorch / runner (above 1: runner is
faster), where each side's time went (phase totals of the median round), the final metrics and
peak RSS. The header says when, on which commit(s), on which machine and at what load the lines
were measured.

--docs: bench/docs_blocks.py rewrites (with --check: compares) the generated blocks of the docs
from the committed raw files.
"""
import json
import os
import statistics
import sys
import textwrap
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_summary  # noqa: E402  (bench/ is not a package)
import profile_summary  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "mobilenet_v2": "MobileNetV2",
         "convnext_nano": "ConvNeXt nano", "convnext_t": "ConvNeXt-T"}


def fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


def times(v, bold=False):
    """A ratio as `1.05x` (bold: `**1.05x**`), `-` where there is none."""
    if v is None:
        return "-"
    return f"**{v:.2f}x**" if bold else f"{v:.2f}x"


def med(xs):
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return a / b if a is not None and b else None


def load(paths):
    lines = []
    for p in paths:
        with open(p) as f:
            lines += [json.loads(x) for x in f if x.strip().startswith("{")]
    if not lines:
        raise SystemExit("summarize.py: no measurements in " + " ".join(paths))
    return lines


def is_e2e(x):
    return x["net"].startswith("e2e_") or "phase_seconds" in x


# A measurement is noisy when the machine's steal time meanwhile exceeds STEAL_MAX of its CPU
# time, or its process got less CPU per wall second than CPU_FLOOR times the median of the
# same side in the same row (it waited for a core); a round with a noisy measurement is set
# apart whole (lines from before bench/compare.sh recorded both fields are all kept).
STEAL_MAX = 0.05
CPU_FLOOR = 0.8


def noisy_rounds(rounds):
    """The rounds of one row (round -> side -> line) with a noisy measurement."""
    sides = {side for r in rounds.values() for side in r}
    cpu = {side: med([r[side]["cpu_over_wall"] for r in rounds.values()
                      if side in r and "cpu_over_wall" in r[side]]) for side in sides}
    return {k for k, r in rounds.items() for side, x in r.items()
            if x.get("steal", 0) > STEAL_MAX
            or ("cpu_over_wall" in x and x["cpu_over_wall"] < CPU_FLOOR * cpu[side])}


def rejected(lines):
    """(rounds set apart as noisy, rounds) over the training-step rows, or None when the lines
    do not record steal and CPU time."""
    if not any("steal" in x for x in lines):
        return None
    steps, _ = split(lines, keep_noisy=True)
    total = sum(len(r) for r in steps.values())
    return sum(len(noisy_rounds(r)) for r in steps.values()), total


def split(lines, keep_noisy=False):
    """Training-step lines by (net, size, batch) and round, whole-run lines by round; noisy
    rounds of the steps (noisy_rounds) left out unless keep_noisy."""
    steps = defaultdict(lambda: defaultdict(dict))
    e2e = defaultdict(dict)
    for x in lines:
        if x.get("screen") or x.get("info"):  # compare.sh's screening and torch.compile lines
            continue
        if is_e2e(x):  # a whole run
            e2e[x["round"]][x["side"]] = x
        else:
            steps[(x["net"], x["size"], x["batch"])][x["round"]][x["side"]] = x
    if not keep_noisy:
        for rounds in steps.values():
            for k in noisy_rounds(rounds):
                del rounds[k]
    return steps, e2e


def machine(lines):
    """The machine as the lines themselves record it (runner's `machine` field)."""
    found = sorted({x["machine"] for x in lines if x.get("machine")})
    isa = sorted({x[k] for x in lines for k in ("isa", "cpu_flags") if x.get(k)})
    if not found:
        return "machine not recorded in the lines"
    text = "machine " + "; ".join(f'"{m}"' for m in found)
    return text + (f" ({', '.join(isa)})" if isa else " (the lines carry no CPU flags)")


def header(lines):
    """The CLI's first line: how many lines, when, which commit(s) and machine, what load."""
    dates = sorted(x["date"] for x in lines)
    loads = [x["load"] for x in lines]
    commits = sorted({x["commit"] for x in lines})
    text = (f"{len(lines)} measurements, {dates[0]} to {dates[-1]}, commit {', '.join(commits)}, "
            f"{machine(lines)}, 1-minute load before each {min(loads):.2f}-{max(loads):.2f}")
    rej = rejected(lines)
    if rej is not None:
        text += (f", {rej[0]} of {rej[1]} rounds set apart as noisy (steal above "
                 f"{STEAL_MAX:.0%} of CPU time, or CPU time per wall second below "
                 f"{CPU_FLOOR:.0%} of the side's median)")
    return text


def provenance(lines, paths):
    """The first line of every generated docs block."""
    if not lines:
        return ("<sub>Generated by `bench/summarize.py --docs` from " + " and ".join(
            f"`{p}`" for p in paths) + ": no lines of this kind there.</sub>")
    return (f"<sub>Generated by `bench/summarize.py --docs` from {len(lines)} lines of "
            + " and ".join(f"`{p}`" for p in paths) + ": " + header(lines).split(", ", 1)[1]
            + ".</sub>")


def step_stats(rounds):
    """One row's numbers: per-round values, medians and ratios (None where not measured)."""
    rs = [rounds[r] for r in sorted(rounds)]
    ips = {side: [r[side]["images_per_sec"] for r in rs if side in r]
           for side in ("runner", "pytorch", "pytorch_channels_last")}
    s = {"run": ips["runner"], "pt": ips["pytorch"], "cl": ips["pytorch_channels_last"]}
    s["ratios"] = [r["runner"]["images_per_sec"] / r["pytorch"]["images_per_sec"]
                   for r in rs if "runner" in r and "pytorch" in r]
    # PyTorch's best configuration. Lines of bench/compare.sh with a screening round (they carry
    # "config"): the screened configuration in every round (`pytorch_best`, or the default
    # `pytorch` where the default won the screening), never the faster of two sides per round,
    # which would favour PyTorch by the noise. Older lines: the faster of NCHW and
    # channels-last in each round. `best_cl` names what was compared when not NCHW + malloc.
    best, best_cl, best_ratios = [], [], []
    screened = any("config" in x for r in rs for x in r.values())
    sides = ("pytorch", "pytorch_channels_last", "pytorch_best")
    if s["cl"] or screened:
        for r in rs:
            if screened:
                k = "pytorch_best" if "pytorch_best" in r else "pytorch"
                layouts = [(r[k]["images_per_sec"], k)] if k in r else []
            else:
                layouts = [(r[k]["images_per_sec"], k) for k in sides if k in r]
            if not layouts:
                continue
            b, k = max(layouts)
            best.append(b)
            tag = "" if k == "pytorch" or b == r.get("pytorch", {}).get("images_per_sec") else (
                "cl" if k == "pytorch_channels_last" else r[k].get("config", "best"))
            best_cl.append(tag)
            if "runner" in r:
                best_ratios.append(r["runner"]["images_per_sec"] / b)
    s.update(best=best, best_cl=best_cl, best_ratios=best_ratios)
    for k in ("run", "pt", "cl", "ratios", "best", "best_ratios"):
        s["m_" + k] = med(s[k])
    s["rom"] = ratio(s["m_run"], s["m_pt"])
    s["rom_best"] = ratio(s["m_run"], s["m_best"])
    s["rss"] = {side: max((r[side]["max_rss_mb"] for r in rs if side in r), default=None)
                for side in ("runner", "pytorch", "pytorch_channels_last", "pytorch_best")}
    # the steps' working set: peak RSS minus the RSS once model, optimizer and batch were built
    s["ws"] = {side: max((r[side]["max_rss_mb"] - r[side]["rss_after_build_mb"] for r in rs
                          if side in r and r[side].get("rss_after_build_mb") is not None),
                         default=None)
               for side in ("runner", "pytorch", "pytorch_channels_last", "pytorch_best")}
    s["load"] = [x["load"] for r in rs for x in r.values()]
    s["passes"] = {side: [med([r[side][k] for r in rs if side in r and k in r[side]])
                          for k in ("forward_ms", "backward_ms", "step_ms")]
                   for side in ("runner", "pytorch")}
    return s


def step_table(steps):
    out = ["| net | px | batch | runner img/s | PyTorch img/s | ratio per round | median ratio "
           "| ratio of medians | PyTorch channels-last img/s | PyTorch best layout img/s "
           "| median ratio to best | ratio of medians to best | peak RSS runner / PyTorch (MiB) "
           "| load |",
           "| --- " * 14 + "|"]
    stats = {k: step_stats(rounds) for k, rounds in steps.items()}
    ws = any(v is not None for st in stats.values() for v in st["ws"].values())
    if ws:
        out[0] = out[0].replace("| load |", "| working set runner / PyTorch default / best (MiB) "
                                "| load |")
        out[1] = "| --- " * 15 + "|"
    for (net, size, batch), s in stats.items():
        vals = lambda xs: ", ".join(fmt(v) for v in xs)
        best = ", ".join(fmt(v) + (f" {c}" if c else "") for v, c in zip(s["best"], s["best_cl"]))
        best = f"{fmt(s['m_best'])} ({best})" if s["best"] else "-"
        out.append(
            f"| {net} | {size} | {batch} "
            f"| {fmt(s['m_run'])} ({vals(s['run'])}) "
            f"| {fmt(s['m_pt'])} ({vals(s['pt'])}) "
            f"| {', '.join(fmt(v, 2) for v in s['ratios'])} "
            f"| {times(s['m_ratios'], bold=True)} "
            f"| {times(s['rom'])} "
            f"| {fmt(s['m_cl'])} "
            f"| {best} "
            f"| {times(s['m_best_ratios'], bold=True)} "
            f"| {times(s['rom_best'])} "
            f"| {fmt(s['rss']['runner'], 0)} / {fmt(s['rss']['pytorch'], 0)} "
            + (f"| {fmt(s['ws']['runner'], 0)} / {fmt(s['ws']['pytorch'], 0)} / "
               f"{fmt(s['ws']['pytorch_best'], 0)} " if ws else "")
            + f"| {min(s['load']):.1f}-{max(s['load']):.1f} |")
    out += ["", "Ratios are runner / PyTorch images per second: per round and their median, and "
            "the ratio of the two sides' medians. PyTorch best layout = the configuration "
            "bench/compare.sh's screening round chose for the row (named: layout + allocator), in "
            "every round; in lines without a screening round, the faster of NCHW and "
            "channels-last (`cl`) in each round; \"-\" where only NCHW was measured."]
    if ws:
        out += ["", "Peak RSS is the whole process's (PyTorch's includes its imports); the working "
                "set is what the steps added to it: peak minus the RSS once the model, its "
                "optimizer and the batch were built (max over rounds)."]
    return out


def scaling_tables(steps):
    """Per net, one row per shape: step time (ms, median of the rounds) of each side."""
    out = []
    nets = sorted({net for net, _, _ in steps})
    for net in nets:
        out += ["", f"{net}: milliseconds per training step (ratio = PyTorch / runner time, above "
                "1 means runner is faster)", ""]
        out.append("| px | batch | runner ms | PyTorch ms | ratio | runner / PyTorch peak RSS (MiB) |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        for size, batch, ms, rss, r in scaling_rows(steps, net):
            out.append(f"| {size} | {batch} | {fmt(ms.get('runner'), 0)} | {fmt(ms.get('pytorch'), 0)} "
                       f"| {fmt(r, 2)} | {fmt(rss.get('runner'), 0)} / {fmt(rss.get('pytorch'), 0)} |")
    return out


def scaling_rows(steps, net):
    shapes = sorted((size, batch) for n, size, batch in steps if n == net)
    for size, batch in shapes:
        rs = steps[(net, size, batch)].values()
        ms = {side: statistics.median(batch * 1e3 / r[side]["images_per_sec"]
                                      for r in rs if side in r)
              for side in ("runner", "pytorch") if any(side in r for r in rs)}
        rss = {side: max(r[side]["max_rss_mb"] for r in rs if side in r) for side in ms}
        r = ms["pytorch"] / ms["runner"] if len(ms) == 2 else None
        yield size, batch, ms, rss, r


def e2e_rounds(e2e):
    return [e2e[r] for r in sorted(e2e) if "runner" in e2e[r] and "pytorch" in e2e[r]]


def e2e_table(e2e):
    rs = e2e_rounds(e2e)
    wr = [r["runner"]["process_wall_s"] for r in rs]
    wp = [r["pytorch"]["process_wall_s"] for r in rs]
    ratios = [p / r for p, r in zip(wp, wr)]
    train = [r["pytorch"]["phase_seconds"]["train"] / r["runner"]["phase_seconds"]["train"]
             for r in rs]
    ld = [s["load"] for r in rs for s in r.values()]
    return ["| runner s | PyTorch s | ratio per round | median ratio | training phase ratio per "
            "round | its median | load |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {fmt(statistics.median(wr))} ({', '.join(fmt(v) for v in wr)}) "
            f"| {fmt(statistics.median(wp))} ({', '.join(fmt(v) for v in wp)}) "
            f"| {', '.join(fmt(v, 2) for v in ratios)} | **{fmt(statistics.median(ratios), 2)}x** "
            f"| {', '.join(fmt(v, 2) for v in train)} | **{fmt(statistics.median(train), 2)}x** "
            f"| {min(ld):.1f}-{max(ld):.1f} |"]


def e2e_median_ratio(e2e):
    rs = e2e_rounds(e2e)
    return statistics.median(r["pytorch"]["process_wall_s"] / r["runner"]["process_wall_s"]
                             for r in rs)


def e2e_phase_table(e2e):
    """Every round's phase split of both sides (the median runner round marked)."""
    rs = e2e_rounds(e2e)
    mid = sorted(rs, key=lambda r: r["runner"]["process_wall_s"])[len(rs) // 2]
    names = ["train", "loader_wait", "eval", "verify", "checkpoint", "store"]
    out = ["| round | side | " + " | ".join(names) + " | val_acc | verify_acc | peak RSS (MiB) |",
           "| --- " * (len(names) + 5) + "|"]
    for r in rs:
        for side in ("runner", "pytorch"):
            x = r[side]
            ph = x["phase_seconds"]
            rss = f"{x['max_rss_mb']:.0f}"
            if "children_rss_mb" in x:
                rss += f" (+ workers {x['children_rss_mb']:.0f})"
            label = f"{x['round']}" + (" (median)" if r is mid else "")
            out.append(f"| {label} | {side} | " + " | ".join(fmt(ph.get(n), 2) for n in names)
                       + f" | {fmt(x.get('val_acc'), 3)} | {fmt(x.get('verify_acc'), 3)} | {rss} |")
    return out


def screening_table(lines):
    """Per row, each screened PyTorch configuration's images/s, the chosen one in bold."""
    rows = defaultdict(dict)
    for x in lines:
        if x.get("screen"):
            rows[(x["net"], x["size"], x["batch"])][x["config"]] = x["images_per_sec"]
    out = []
    for (net, size, batch), configs in rows.items():
        top = max(configs, key=configs.get)
        cells = ", ".join((f"**{c} {fmt(v)}**" if c == top else f"{c} {fmt(v)}")
                          for c, v in configs.items())
        out.append(f"| {net} | {size} | {batch} | {cells} |")
    return (["| net | px | batch | configurations (images/s) |", "| --- | --- | --- | --- |"] + out
            if out else [])


def compile_table(lines):
    """torch.compile's lines (information): images/s and compile seconds, with runner's and
    PyTorch eager's medians of the same row where the lines have them."""
    steps, _ = split(lines)
    out = []
    for x in lines:
        if not (x.get("info") and x.get("compile_s") is not None):
            continue
        rounds = steps.get((x["net"], x["size"], x["batch"]), {})
        st = step_stats(rounds) if rounds else None
        out.append(f"| {x['net']} | {x['size']} | {x['batch']} | {fmt(x['images_per_sec'])} "
                   f"| {fmt(x['compile_s'])} | {fmt(st['m_best'] if st else None)} "
                   f"| {fmt(st['m_run'] if st else None)} |")
    head = ["| net | px | batch | compiled img/s | compile s | PyTorch best eager img/s (median) "
            "| runner img/s (median) |", "| --- " * 7 + "|"]
    return head + out if out else []


def tables(lines, by_shape):
    """The CLI's output."""
    out = [header(lines), ""]
    steps, e2e = split(lines)
    if steps and by_shape:
        return out + scaling_tables(steps)
    if steps:
        out += step_table(steps)
    screened = screening_table(lines)
    if screened:
        out += ["", "Screening round (bench/compare.sh: one round of every PyTorch configuration "
                "per row; images/s; the fastest is the row's best):", ""] + screened
    compiled = compile_table(lines)
    if compiled:
        out += ["", "torch.compile (inductor), one round, as information (images/s of the timed "
                "steps; the compile, in the warm-up step, excluded and stated):", ""] + compiled
    if e2e:
        rs = e2e_rounds(e2e)
        out += ["", f"Whole run (ResNet-18, 64 px, batch 32, {rs[0]['runner'].get('epochs')} epochs, "
                f"{rs[0]['pytorch'].get('train_images')} training images; wall seconds of the "
                "process; ratio = PyTorch / runner, above 1 means runner is faster):", ""]
        out += e2e_table(e2e)
        out += ["", "Where the time went (seconds, summed over the epochs, every round; the "
                "median runner round marked):", ""]
        out += e2e_phase_table(e2e)
    return out


# ---- the docs blocks: prose around computed numbers --------------------------------------

def wrap(text):
    """Lines of at most 95 columns, never broken inside a `code span`."""
    parts = text.split("`")
    text = "`".join(p.replace(" ", "\0") if i % 2 else p for i, p in enumerate(parts))
    return textwrap.fill(text, width=95, break_on_hyphens=False,
                         break_long_words=False).replace("\0", " ")


def shape(size, batch):
    return f"{size} px batch {batch}"


def all_stats(steps):
    return {k: step_stats(v) for k, v in steps.items()}


def layouts_text(steps):
    st = all_stats(steps)
    below = [(k, s) for k, s in st.items() if s["m_best_ratios"] is not None
             and s["m_best_ratios"] < 1.0]
    measured = [s for s in st.values() if s["m_best_ratios"] is not None]
    screened = any("config" in x for rs in steps.values() for r in rs.values()
                   for x in r.values())
    baseline = ("The first ratios are against PyTorch's default (NCHW, glibc malloc); the "
                "best-layout columns against the configuration a screening round chose per row "
                "(NCHW or channels-last, each with glibc malloc, jemalloc or tcmalloc), timed in "
                "every round" if screened else
                "The first ratios are against PyTorch's default NCHW layout; the best-layout "
                "columns are against the faster of NCHW and channels-last in each round, with "
                "PyTorch on stock malloc either way")
    text = (baseline + ". Against that, runner is at or above 1.0x on "
            f"{sum(s['m_best_ratios'] >= 1.0 for s in measured)} of {len(measured)} rows by the "
            "median of per-round ratios ("
            f"{sum(s['rom_best'] >= 1.0 for s in measured)} of {len(measured)} by the ratio of "
            "medians)")
    if below:
        text += "; below it: " + ", ".join(
            f"{net} at {size} px {fmt(s['m_best_ratios'], 2)}x (ratio of medians "
            f"{fmt(s['rom_best'], 2)}x: {fmt(s['m_run'])} against {fmt(s['m_best'])} img/s)"
            for (net, size, _), s in below)
    tail = "." if screened else ". PyTorch with a tuned allocator is not measured yet."
    return wrap(text + tail + screening_summary(steps)).splitlines()


def screening_summary(steps):
    """What the screening rounds chose, and what the allocators did for PyTorch, in words."""
    rows = defaultdict(dict)
    lines = SCREEN_LINES.get("lines", [])
    for x in lines:
        rows[(x["net"], x["size"], x["batch"])][x["config"]] = x["images_per_sec"]
    if not rows:
        return ""
    chosen = defaultdict(int)
    for configs in rows.values():
        chosen[max(configs, key=configs.get)] += 1
    gains, slower_je, both = [], 0, 0
    for (net, size, _), configs in rows.items():
        for layout in ("nchw", "channels_last"):
            m = configs.get(f"{layout}+malloc")
            if m and configs.get(f"{layout}+tcmalloc"):
                gains.append((configs[f"{layout}+tcmalloc"] / m, net, size, layout))
        je = [configs.get(f"{l}+jemalloc", 0) < configs.get(f"{l}+malloc", 0)
              for l in ("nchw", "channels_last") if f"{l}+jemalloc" in configs]
        both += bool(je)
        slower_je += bool(je) and all(je)
    text = (" The screening chose " + ", ".join(
        f"{c} on {k} of {len(rows)} rows" for c, k in sorted(chosen.items(), key=lambda kv: -kv[1])))
    if gains:
        g, net, size, layout = max(gains)
        text += (f"; tcmalloc gave PyTorch up to {g:.2f}x over glibc malloc in the same layout "
                 f"({net} at {size} px, {layout})")
    if both:
        text += f", and jemalloc was slower than glibc malloc in both layouts on {slower_je} of {both} rows"
    return text + " (one screening measurement each)."


# the screening lines of the file being summarized (set by generate and tables)
SCREEN_LINES = {}


def passes_text(steps):
    st = all_stats(steps)
    parts = []
    for (net, size, _), s in st.items():
        r, p = s["passes"]["runner"], s["passes"]["pytorch"]
        parts.append(f"{net} {size} px: {' / '.join(fmt(v, 0) for v in r)} against "
                     f"{' / '.join(fmt(v, 0) for v in p)}")
    return wrap("Forward / backward / optimizer-step milliseconds, median of the rounds (runner "
                "against PyTorch NCHW): " + "; ".join(parts) + ".").splitlines()


def memory_count(st):
    """Rows where runner's peak RSS is below PyTorch's in every layout measured, of all rows."""
    less = 0
    for s in st.values():
        others = [v for k, v in s["rss"].items() if k != "runner" and v is not None]
        less += s["rss"]["runner"] is not None and bool(others) and s["rss"]["runner"] < min(others)
    return less, len(st)


def working_set_count(st):
    """(rows where runner's training working set is below that of the PyTorch configuration it
    is compared with, rows with working sets), or None when the lines have none."""
    rows = [s for s in st.values() if s["ws"]["runner"] is not None]
    if not rows:
        return None
    def theirs(s):
        return s["ws"]["pytorch_best"] if s["ws"]["pytorch_best"] is not None else s["ws"]["pytorch"]
    return sum(theirs(s) is not None and s["ws"]["runner"] < theirs(s) for s in rows), len(rows)


def working_set_text(st):
    ws = working_set_count(st)
    if ws is None:
        return ""
    return (f"; runner's training working set (peak minus the RSS once model, optimizer and batch "
            f"were built) is below PyTorch's best configuration's on {ws[0]} of {ws[1]}")


def standing_text(steps, e2e):
    st = all_stats(steps)
    n = len(st)
    nchw = [s["m_ratios"] for s in st.values()]
    rom = [s["rom"] for s in st.values()]
    measured = [s for s in st.values() if s["m_best_ratios"] is not None]
    best = [s["m_best_ratios"] for s in measured]
    less, _ = memory_count(st)
    text = (f"Where runner stands: **at or above PyTorch NCHW on {sum(r >= 1.0 for r in nchw)} of "
            f"{n} rows** ({min(nchw):.2f}-{max(nchw):.2f}x by the median of per-round ratios, "
            f"{min(rom):.2f}-{max(rom):.2f}x as ratio of medians), **at or above "
            + ("PyTorch's screened best configuration" if any(
                "config" in x for rs in steps.values() for r in rs.values() for x in r.values())
               else "PyTorch's faster layout per round")
            + f" on {sum(r >= 1.0 for r in best)} of {len(measured)}** "
            f"({min(best, default=0):.2f}-{max(best, default=0):.2f}x), with less peak memory "
            "than PyTorch in either "
            f"layout on {less} of {n} (whole process, PyTorch's imports included)"
            + working_set_text(st))
    if e2e:
        text += f", and the whole run {e2e_median_ratio(e2e):.2f}x (below)"
    return wrap(text + ".").splitlines()


def readme_speed_text(steps, e2e, scale_steps):
    st = all_stats(steps)
    lines = [x for rounds in steps.values() for r in rounds.values() for x in r.values()]
    shapes = []
    for (_, size, batch) in st:
        if (size, batch) not in shapes:
            shapes.append((size, batch))
    nets = []
    for (net, _, _) in st:
        if net not in nets:
            nets.append(net)
    frameworks = sorted({x["framework"].split("+")[0].replace("pytorch ", "PyTorch ")
                         for x in lines if x["side"] == "pytorch" and x.get("framework")})
    threads = sorted({x["threads"] for x in lines if "threads" in x})
    rounds = max(len(r) for r in steps.values())
    day = sorted({x["date"][:10] for x in lines})
    per_net = lambda key: ", ".join(
        f"{NAMES.get(net, net)} " + " / ".join(
            times(st[(net, size, batch)][key]) if (net, size, batch) in st else "-"
            for size, batch in shapes) for net in nets)
    measured = [s for s in st.values() if s["m_best_ratios"] is not None]
    less, n = memory_count(st)
    screened = any("config" in x for x in lines)
    cpus = sorted({f"{x['cpu']} ({x['cores']} cores)" for x in lines if x.get("cpu")})
    isa = "AVX-512" if any("avx512f" in x.get("isa", "") for x in lines) else "AVX2"
    where = (f"{', '.join(cpus)[:-1]}, {isa}), both sides on the same VM" if cpus
             else "a busy hour on a shared 2-core VM")
    allocator = ("" if screened else "; PyTorch ran with stock malloc")
    best = ("Against PyTorch's best configuration per row (a screening round over NCHW and "
            "channels-last, each with glibc malloc, jemalloc and tcmalloc; the winner timed in "
            "every round)" if screened else
            "Against the faster of PyTorch's NCHW and channels-last layouts in each round (the "
            "strongest baseline this run measured)")
    text = (f"Speed against {', '.join(frameworks)} on the same CPU (one SGD training step, "
            f"{'/'.join(map(str, threads))} threads, {rounds} interleaved rounds, "
            f"{', '.join(day)}, {where}{allocator}): "
            "runner's images per second over PyTorch's, median of the per-round ratios, at "
            f"{' / '.join(shape(*s) for s in shapes)}. {best}: "
            f"{per_net('m_best_ratios')}, so "
            f"{sum(s['m_best_ratios'] >= 1.0 for s in measured)} of {len(measured)} rows are at "
            f"or above 1.0x ({sum(s['rom_best'] >= 1.0 for s in measured)} of {len(measured)} by "
            "the ratio of the medians). Against PyTorch's default NCHW layout alone: "
            f"{per_net('m_ratios')}")
    text += (f". Runner's whole-process peak RSS is lower than PyTorch's (either layout) on {less} "
             f"of {n} rows; PyTorch's includes its imports (torch, torchvision, timm)"
             + working_set_text(st) + ".")
    if e2e:
        rs = e2e_rounds(e2e)
        train = statistics.median(r["pytorch"]["phase_seconds"]["train"]
                                  / r["runner"]["phase_seconds"]["train"] for r in rs)
        text += (f" A whole {rs[0]['runner'].get('epochs')}-epoch ResNet-18 run is "
                 f"{e2e_median_ratio(e2e):.2f}x PyTorch's wall-clock speed, its training phase "
                 f"alone {train:.2f}x (the rest is checkpoint writes, loader wait and evaluation; "
                 "where each epoch's time goes: `runner show`'s `phase_seconds`).")
    if scale_steps:
        for net in ("resnet18",):
            behind = [(size, batch, r) for size, batch, _, _, r in scaling_rows(scale_steps, net)
                      if r is not None and r < 1.0]
            cells = sum(1 for _ in scaling_rows(scale_steps, net))
            if behind:
                by_px = defaultdict(list)
                for size, batch, _ in behind:
                    by_px[size].append(batch)
                where = ", ".join(f"{size} px batch {'/'.join(map(str, b))}"
                                  for size, b in sorted(by_px.items()))
                rs = [r for _, _, r in behind]
                sday = sorted({x["date"][:10] for rs in scale_steps.values()
                               for r in rs.values() for x in r.values()})
                text += (f" In the one-round scaling table of {', '.join(sday)} (against PyTorch "
                         f"NCHW) {NAMES[net]} trails in "
                         f"{len(behind)} of {cells} cells ({where}: {min(rs):.2f}-{max(rs):.2f}x).")
    return wrap(text).splitlines()


def main(args):
    if args[:1] == ["--docs"]:
        rest = args[1:]
        if rest not in ([], ["--check"]):
            raise SystemExit("usage: bench/summarize.py --docs [--check]")
        import docs_blocks  # the blocks use this module's tables: imported when needed
        return docs_blocks.docs(check=rest == ["--check"])
    if args[:1] == ["--profile"]:
        if len(args) != 2:
            raise SystemExit("usage: bench/summarize.py --profile profile.jsonl")
        lines = load(args[1:])
        print("\n".join([header(lines), ""] + profile_summary.table(lines)))
        return 0
    if args[:1] == ["--pipeline"]:
        if len(args) != 2:
            raise SystemExit("usage: bench/summarize.py --pipeline pipeline.jsonl")
        lines = load(args[1:])
        print("\n".join([header(lines), ""] + pipeline_summary.tuning_table(lines) + [""]
                        + pipeline_summary.results_table(lines) + [""]
                        + wrap(pipeline_summary.gain_text(lines)).splitlines()))
        return 0
    by_shape = args[:1] == ["--scaling"]
    paths = args[1:] if by_shape else args
    print("\n".join(tables(load(paths), by_shape)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["/dev/stdin"]))
