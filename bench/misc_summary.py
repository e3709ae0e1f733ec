"""The rows of docs/benchmarks.md's summary table from their committed raw lines: the HTML
report at scale (bench/report_scale.sh), `runner report --watch`'s delay (bench/report_watch.py)
and the leaderboard over 100,000 runs (`runner bench leaderboard`). Standard library only;
used by `bench/summarize.py --docs`.
"""


def normalize(x):
    """These scripts' lines as summarize.py's provenance reads them (load, machine, ISA)."""
    if "load" in x:
        return x
    x = dict(x)
    x["load"] = x.get("load_1m", 0.0)
    x.setdefault("commit", "optuna " + x["optuna"] if "optuna" in x else "not recorded")
    if "machine" not in x and x.get("cpu"):
        x["machine"] = x["cpu"] + (f", {x['cores']} cores" if "cores" in x else "")
    isa = x.get("isa")
    if isinstance(isa, list):
        x["isa"] = " ".join(isa)
    elif isinstance(isa, str):
        x["isa"] = " ".join(isa.replace(",", " ").split())
    return x


def span(xs, nd=2):
    return f"{min(xs):.{nd}f}-{max(xs):.{nd}f}"


def when(lines):
    ds = sorted(x["date"] for x in lines)
    day, t0, t1 = ds[0][:10], ds[0][11:16], ds[-1][11:16]
    commits = ", ".join(sorted({x["commit"] for x in lines}))
    machines = "; ".join(sorted({x["machine"] for x in lines}))
    loads = [x["load"] for x in lines]
    return (f"{day} {t0}-{t1} UTC, commit {commits}, {machines}, load "
            f"{span(loads, 1)}")


def report_row(lines, path):
    b = [x["bench"] for x in lines]
    renders = [r / 1000 for x in lines for r in x["render_ms"]]
    chromium = lines[0].get("chromium", "Chromium").split(" built")[0]
    return (f"| the HTML report of {b[0]['runs']:,} runs x {b[0]['epochs']} epochs | `runner bench "
            f"report`, `bench/report_scale.sh` | {b[0]['bytes'] / 1e6:.2f} MB, built in "
            f"{span([x['build_seconds'] for x in b])} s, rendered by headless {chromium} in "
            f"{span(renders)} s ({len(lines)} rounds of {len(lines[0]['render_ms'])} renders). "
            f"{when(lines)}; raw lines in `{path}`; [report.md](report.md#at-scale). |")


def watch_row(lines, path):
    ds = [d for x in lines for d in x["delays_seconds"]]
    return (f"| `runner report --watch`: from an epoch's row in the store to the page file | "
            f"`bench/report_watch.py` | {span(ds)} s over {len(ds)} epochs of the quick start "
            f"({len(lines)} rounds), then the open page's reload (every "
            f"{lines[0]['reload_seconds']} s). {when(lines)}; raw lines in `{path}`; "
            "[report.md](report.md#live---watch). |")


def leaderboard_row(lines, path):
    x0 = lines[0]
    return (f"| leaderboard over a store of {x0['runs']:,} runs x {x0['epochs_per_run']} epochs, "
            "a checkpoint row per epoch (the best and the last kept) | `runner bench "
            "leaderboard` | one epoch per row (the rule of "
            f"[commands.md](commands.md#the-leaderboards-rule)): "
            f"{span([x['leaderboard_ms'] / 1000 for x in lines])} s, "
            f"{span([x['filtered_leaderboard_ms'] / 1000 for x in lines])} s with a `--where` "
            f"filter; `--best-over-epochs` {span([x['best_over_epochs_ms'] / 1000 for x in lines])}"
            f" s. {len(lines)} rounds, {when(lines)}; raw lines in `{path}`. |")


def table(per_file):
    """per_file: [(path, lines)] in the order report, watch, leaderboard."""
    rows = [report_row, watch_row, leaderboard_row]
    out = ["| benchmark | command | measured |", "| --- | --- | --- |"]
    for (path, lines), row in zip(per_file, rows):
        out.append(row([normalize(x) for x in lines], path))
    return out
