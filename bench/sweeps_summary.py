"""docs/sweeps.md's measured tables from their committed raw lines (standard library only; used
by `bench/summarize.py --docs`): successive halving against the full grid on the quick start
(bench/halving.sh), and runner's TPE against Optuna's on Branin (bench/tpe_branin.sh and
bench/tpe_branin.py).
"""
import statistics


def halving_table(lines):
    full = [x for x in lines if x["prune"] == "none"]
    total = full[0]["epochs_trained"] if full else None
    out = ["| sweep | epochs trained | wall time | best `val_acc` (its run) |",
           "| --- | --- | --- | --- |"]
    for x in lines:
        name = (f"halving, grace {x['grace_epochs']}" if x["prune"] == "halving"
                else "full grid" if x["prune"] == "none" else x["prune"])
        trained = str(x["epochs_trained"])
        if total and x["prune"] != "none":
            trained += f" of {total} ({x['epochs_trained'] / total:.0%})"
        b = x["best"]
        o = b["overrides"]
        out.append(f"| {name} | {trained} | {x['wall_seconds']:.1f} s | {b['val_acc']:.3f} (lr "
                   f"{o['optimizer.lr']:g}, drop path {o['model.drop_path']:g}) |")
    return out


def tpe_row(name, lines):
    seeds = (min(x["seeds"][0] for x in lines), max(x["seeds"][1] for x in lines) - 1)
    runs = [r for x in lines for r in x["runs"]]
    wins = sum(x["tpe_wins"] for x in lines)
    per = [x["tpe_wins"] for x in lines]
    block = lines[0]["seeds"][1] - lines[0]["seeds"][0]
    bar = int(0.7 * block)
    return (f"| {name} | {seeds[0]}-{seeds[1]} | {wins} ({wins / len(runs):.1%}) | "
            f"{sum(w >= bar for w in per)} of {len(per)} | {min(per)}-{max(per)} | "
            f"{statistics.median(r['tpe'] for r in runs):.3f} / "
            f"{statistics.median(r['random'] for r in runs):.3f} |")


def tpe_table(per_file):
    """per_file: [(sampler name, lines)]."""
    block = per_file[0][1][0]["seeds"][1] - per_file[0][1][0]["seeds"][0]
    out = [f"| sampler | seeds | wins | blocks of {block} with >= {int(0.7 * block)} wins | "
           "wins per block | median best (TPE / random) |", "| --- | --- | --- | --- | --- | --- |"]
    out += [tpe_row(name, lines) for name, lines in per_file]
    return out
