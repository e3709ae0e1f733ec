"""The README's results table and docs/results.md's figures from bench/quickstart.sh's JSON
lines (standard library only; used by `bench/summarize.py --docs`).

Every round of a recipe must give the same metrics (training is deterministic at a thread
count): rounds that disagree stop the generation rather than publish one of them.
"""
import statistics

KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "verify_acc")


def rounds(lines, recipe):
    xs = [x for x in lines if x.get("kind") == "quickstart" and x["recipe"] == recipe]
    if not xs:
        raise SystemExit(f"results_summary: no lines for recipes/{recipe}.toml")
    for x in xs[1:]:
        for part in ("best", "baseline", "verify_dev"):
            a, b = xs[0].get(part, {}), x.get(part, {})
            diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b)
                    if k != "id" and a.get(k) != b.get(k)}
            if diff:
                raise SystemExit(f"results_summary: recipes/{recipe}.toml's rounds "
                                 f"{xs[0]['round']} and {x['round']} differ in {part}: {diff}")
    return xs


def wall(xs):
    w = sorted(x["wall_s"] for x in xs)
    text = f"{statistics.median(w):.1f} s"
    if len(w) > 1:
        text += f" (median of {len(w)} runs, {w[0]:.1f}-{w[-1]:.1f})"
    return text


def verification(xs):
    """Verification on unknown_dev of the leaderboard row's checkpoint (`runner eval`)."""
    return xs[0]["verify_dev"]["accuracy"]


def readme_table(lines):
    q = rounds(lines, "quickstart")
    s = rounds(lines, "synth_default")
    b, base = q[0]["best"], q[0]["baseline"]
    sb, sbase = s[0]["best"], s[0]["baseline"]
    qv, sv = verification(q), verification(s)
    return [
        "| quick start (`recipes/quickstart.toml`: 40 identities x 24 images, 32 px, mini "
        f"ConvNeXt, 20 epochs) | value |",
        "| --- | --- |",
        f"| best dev classification accuracy | **{b['val_acc']:.3f}** |",
        f"| verification accuracy on `unknown_dev` (tuned threshold, cosine) | "
        f"**{qv:.3f}** |",
        "| raw-pixel 1-NN dev accuracy / raw-pixel verification / answering `n000000` | "
        f"{base['raw_pixel_nn_dev_accuracy']:.3f} / "
        f"{base['raw_pixel_verification_accuracy']:.3f} / "
        f"{base['all_no_match_verification_accuracy']:.3f} |",
        f"| wall time: data generation, 20 epochs, verification | {wall(q)} |",
        "",
        "On the generator's default set (100 identities x 20 images, 64 px), "
        f"`recipes/synth_default.toml` reaches {sb['val_acc']:.3f} dev and "
        f"{sv:.3f} verification accuracy, where raw pixels reach "
        f"{sbase['raw_pixel_nn_dev_accuracy']:.3f} and "
        f"{sbase['raw_pixel_verification_accuracy']:.3f}, in {wall(s)} with the data generation.",
    ]


def results_table(lines):
    q = rounds(lines, "quickstart")
    b, base = q[0]["best"], q[0]["baseline"]
    return [
        "| | value |",
        "| --- | --- |",
        f"| wall time, data generation + 20 epochs + verification, {q[0]['threads']} threads | "
        f"{wall(q)} |",
        f"| best dev classification accuracy (epoch {b['epoch']}) | **{b['val_acc']:.3f}** |",
        "| verification accuracy on `unknown_dev` (threshold tuned, cosine, mean gallery) | "
        f"**{verification(q):.3f}** |",
        f"| raw-pixel 1-NN dev accuracy (`runner data baseline`) | "
        f"{base['raw_pixel_nn_dev_accuracy']:.3f} |",
        "| raw-pixel verification accuracy (same matching and threshold rule) | "
        f"{base['raw_pixel_verification_accuracy']:.3f} |",
        "| chance: answering `n000000` for every unknown | "
        f"{base['all_no_match_verification_accuracy']:.3f} |",
        f"| majority-class dev accuracy | {base['majority_class_dev_accuracy']:.3f} |",
    ]


def synth_default_text(lines):
    s = rounds(lines, "synth_default")
    b, base = s[0]["best"], s[0]["baseline"]
    return ("At the generator's default size and difficulty (`templates/data/synth.toml`: 100 "
            "identities x 20 images at 64 px, medium), raw-pixel 1-NN reaches "
            f"{base['raw_pixel_nn_dev_accuracy']:.3f} dev accuracy and raw-pixel verification "
            f"{base['raw_pixel_verification_accuracy']:.3f}, where answering `n000000` gives "
            f"{base['all_no_match_verification_accuracy']:.3f}: the synthetic identities are not "
            "separable by their pixels, only by the traits a network learns. On that set, "
            "`runner sweep recipes/synth_default.toml` (the same mini ConvNeXt at 64 px, 15 "
            f"epochs) reaches **{b['val_acc']:.3f}** dev accuracy (best epoch, {b['epoch']}) and "
            f"**{verification(s):.3f}** verification accuracy (that epoch's checkpoint, `runner "
            f"eval RUN --split verify-dev`), in {wall(s)} including the data generation.")


def data_cases(lines):
    """(size, threads) -> side -> images/s per round, from bench/data_compare.sh's lines."""
    out = {}
    for x in lines:
        if x.get("kind") != "data":
            continue
        for c in x["cases"]:
            out.setdefault((c["size"], c["threads"]), {}).setdefault(x["side"], []).append(
                c["images_per_sec"])
    if not out:
        raise SystemExit("results_summary: no data-pipeline lines")
    return out


def data_ratios(lines):
    """(size, threads) -> (runner's median, torchvision's better median, its side, ratio)."""
    out = {}
    for k, sides in sorted(data_cases(lines).items()):
        tv = {s: statistics.median(v) for s, v in sides.items() if s.startswith("torchvision")}
        best = max(tv, key=tv.get)
        r = statistics.median(sides["runner"])
        out[k] = (r, tv[best], best, tv, r / tv[best])
    return out


def data_table(lines):
    rows = data_ratios(lines)
    rounds = len({x["round"] for x in lines if x.get("kind") == "data"})
    out = [f"| output | threads / workers | runner | torchvision + PIL | torchvision + PIL, "
           f"THP | runner per core over torchvision's better |",
           "| --- | --- | --- | --- | --- | --- |"]
    for (size, threads), (r, _, best, tv, ratio) in rows.items():
        src = "64 px JPEGs" if size == 64 else "256 px JPEGs"
        cell = lambda s: (f"**{tv[s]:,.0f}**" if s == best else f"{tv[s]:,.0f}") if s in tv else ""
        out.append(f"| {size} px (from {src}) | {threads} | {r:,.0f} | {cell('torchvision')} | "
                   f"{cell('torchvision_thp')} | **{ratio:.2f}x** |")
    out += ["", f"Images per second, medians of {rounds} interleaved rounds; the same number of "
            "threads (runner) as worker processes (torchvision, 1 = in process), so the ratio "
            "is per core; torchvision's better setting per row in bold. Over the four rows, runner "
            f"turns out {data_readme_ratio(lines)} more images per second per core (the README's "
            "figure)."]
    return out


def data_readme_ratio(lines):
    rs = [v[4] for v in data_ratios(lines).values()]
    return f"{min(rs):.1f}-{max(rs):.1f}x"


def data_stages_table(lines):
    """CPU ms per image of one thread, decode and transforms apart (medians of the rounds)."""
    st = {}
    for x in lines:
        if x.get("kind") != "data" or x["side"] == "torchvision_thp":
            continue
        for s in x["stages"] or []:
            d = st.setdefault((x["side"], s["size"]), {})
            for k in ("decode_ms", "transforms_ms", "transforms_steps_ms"):
                if k in s:
                    d.setdefault(k, []).append(s[k])
    out = ["| per image, CPU ms of one thread | decode | transforms | total |",
           "| --- | --- | --- | --- |"]
    for size in (224, 64):
        r = {k: statistics.median(v) for k, v in st.get(("runner", size), {}).items()}
        t = {k: statistics.median(v) for k, v in st.get(("torchvision", size), {}).items()}
        if not r or not t:
            continue
        rt, tt = r["decode_ms"] + r["transforms_ms"], t["decode_ms"] + t["transforms_ms"]
        out.append(f"| runner, {size} px | {r['decode_ms']:.3f} | {r['transforms_ms']:.3f} "
                   f"({r['transforms_steps_ms']:.3f} step by step) | {rt:.3f} |")
        out.append(f"| PIL + torchvision, {size} px | {t['decode_ms']:.3f} | "
                   f"{t['transforms_ms']:.3f} | {tt:.3f} ({tt / rt:.1f}x runner's) |")
    return out
