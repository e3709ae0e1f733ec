"""The generated blocks of the docs (`bench/summarize.py --docs [--check]`; standard library).

In each file of DOC_FILES, every block `<!-- bench:NAME -->` ... `<!-- /bench:NAME -->` (each
marker on a line of its own) gets the text BLOCKS[NAME] makes from the committed raw files it
names, starting with a line of provenance. With --check nothing is written: the differences
are printed as a unified diff and the exit status is 1.
"""
import difflib
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import misc_summary  # noqa: E402  (bench/ is not a package)
import pipeline_summary  # noqa: E402
import profile_summary  # noqa: E402
import results_summary  # noqa: E402
import sweeps_summary  # noqa: E402
from summarize import (  # noqa: E402
    ROOT, SCREEN_LINES, compile_table, e2e_phase_table, e2e_table, is_e2e, layouts_text, load,
    passes_text, provenance, readme_speed_text, scaling_tables, screening_table, split,
    standing_text, step_table, wrap)

RUN_OF_RECORD = "bench/results/2026-12-08/52b0635/compare.jsonl"
EARLIER_RUN = "bench/results/2026-12-05/7f852a7/compare.jsonl"
SCALING_OF_RECORD = "bench/results/2026-12-05/7f852a7/scaling.jsonl"
PIPELINE_OF_RECORD = "bench/results/2026-12-08/e88ea84/pipeline.jsonl"
QUICKSTART_OF_RECORD = "bench/results/2026-12-08/06586c7/quickstart.jsonl"
DATA_OF_RECORD = "bench/results/2026-12-08/a05d701/data.jsonl"
PROFILE_OF_RECORD = "bench/results/2026-12-08/5953114/profile.jsonl"
TRAILING_OF_RECORD = "bench/results/2026-12-08/a05d701/compare-trailing.jsonl"
SUMMARY_ROWS = ["bench/results/2026-12-07/report-scale-32d74fa.jsonl",
                "bench/results/2026-12-07/report-watch-8a8b9da.jsonl",
                "bench/results/2026-12-07/leaderboard-3a0b662.jsonl"]
HALVING_OF_RECORD = "bench/results/2026-12-07/halving-bb5b2ed.jsonl"
TPE_RUNNER = "bench/results/2026-12-07/tpe-branin-runner-ead08e1.jsonl"
TPE_OPTUNA = "bench/results/2026-12-07/tpe-branin-optuna-0-500.jsonl"
DOC_FILES = ["README.md", "docs/benchmarks.md", "docs/pipelines.md", "docs/results.md",
             "docs/sweeps.md"]
# NAME -> (kind, raw files relative to the repository root): what each docs block is made of.
BLOCKS = {
    "screening-2026-12-08": ("screening", [RUN_OF_RECORD]),
    "steps-2026-12-08": ("steps", [RUN_OF_RECORD]),
    "layouts-2026-12-08": ("layouts", [RUN_OF_RECORD]),
    "standing-2026-12-08": ("standing", [RUN_OF_RECORD]),
    "compiled-2026-12-08": ("compiled", [RUN_OF_RECORD]),
    "e2e-2026-12-08": ("e2e", [RUN_OF_RECORD]),
    "e2e-phases-2026-12-08": ("e2e_phases", [RUN_OF_RECORD]),
    "steps-2026-12-05": ("steps", [EARLIER_RUN]),
    "layouts-2026-12-05": ("layouts", [EARLIER_RUN]),
    "passes-2026-12-05": ("passes", [EARLIER_RUN]),
    "standing-2026-12-05": ("standing", [EARLIER_RUN]),
    "e2e-2026-12-05": ("e2e", [EARLIER_RUN]),
    "e2e-phases-2026-12-05": ("e2e_phases", [EARLIER_RUN]),
    "scaling-2026-12-05": ("scaling", [SCALING_OF_RECORD]),
    "readme-speed": ("readme_speed", [RUN_OF_RECORD, SCALING_OF_RECORD]),
    "pipeline-tuning": ("pipeline_tuning", [PIPELINE_OF_RECORD]),
    "pipeline-results": ("pipeline_results", [PIPELINE_OF_RECORD]),
    "pipeline-gain": ("pipeline_gain", [PIPELINE_OF_RECORD]),
    "readme-pipeline": ("readme_pipeline", [PIPELINE_OF_RECORD]),
    "readme-results": ("quickstart_readme", [QUICKSTART_OF_RECORD]),
    "results-quickstart": ("quickstart_results", [QUICKSTART_OF_RECORD]),
    "results-synth-default": ("quickstart_synth_default", [QUICKSTART_OF_RECORD]),
    "readme-data": ("data_readme", [DATA_OF_RECORD]),
    "data-pipeline": ("data_table", [DATA_OF_RECORD]),
    "data-stages": ("data_stages", [DATA_OF_RECORD]),
    "summary-table": ("summary_table", SUMMARY_ROWS),
    "profile-2026-12-08": ("profile", [PROFILE_OF_RECORD]),
    "steps-trailing-2026-12-08": ("steps", [TRAILING_OF_RECORD]),
    "halving-2026-12-07": ("halving", [HALVING_OF_RECORD]),
    "tpe-branin-2026-12-07": ("tpe", [TPE_RUNNER, TPE_OPTUNA]),
}
# the pipeline-gain kinds (bench/pipeline_gain.py's lines; bench/pipeline_summary.py)
PIPELINE_KINDS = {
    "pipeline_tuning": lambda lines: pipeline_summary.tuning_table(lines),
    "pipeline_results": lambda lines: pipeline_summary.results_table(lines),
    "pipeline_gain": lambda lines: wrap(pipeline_summary.gain_text(lines) + " "
                                        + pipeline_summary.pretrain_text(lines)).splitlines(),
    "readme_pipeline": lambda lines: wrap(pipeline_summary.readme_text(lines)).splitlines(),
    # bench/quickstart.sh's lines (bench/results_summary.py)
    "quickstart_readme": lambda lines: results_summary.readme_table(lines),
    "quickstart_results": lambda lines: results_summary.results_table(lines),
    "quickstart_synth_default": lambda lines: wrap(
        results_summary.synth_default_text(lines)).splitlines(),
    # bench/data_compare.sh's lines
    "data_readme": lambda lines: wrap(
        "The data pipeline (decode + RandomResizedCrop + flip + ColorJitter + ToTensor + "
        "Normalize, 64 and 224 px, 1 and 2 threads) turns out "
        f"{results_summary.data_readme_ratio(lines)} more images per second per core than "
        "torchvision + PIL on the same JPEG files.").splitlines(),
    "data_table": lambda lines: results_summary.data_table(lines),
    "data_stages": lambda lines: results_summary.data_stages_table(lines),
    # bench/profile.sh's lines
    "profile": lambda lines: profile_summary.table(lines),
}

def generate(name, kind, paths):
    """A block's text: its provenance line, a blank line, then what `kind` makes of `paths`."""
    lines = load([os.path.join(ROOT, p) for p in paths])
    if kind in PIPELINE_KINDS:
        # prose lines wrapped at 95 columns; table rows, headings and blank lines as they are
        body = [y for x in PIPELINE_KINDS[kind](lines)
                for y in ([x] if not x or x.startswith("|") or len(x) <= 95
                          else wrap(x).splitlines())]
        return [provenance(lines, paths), ""] + body
    if kind == "halving":
        norm = [misc_summary.normalize(x) for x in lines]
        return [provenance(norm, paths), ""] + sweeps_summary.halving_table(lines)
    if kind == "tpe":
        norm = [misc_summary.normalize(x) for x in lines]
        per_file = [(name, load([os.path.join(ROOT, p)]))
                    for name, p in zip(["runner TPE", "Optuna 5.1 TPE"], paths)]
        return [provenance(norm, paths), ""] + sweeps_summary.tpe_table(per_file)
    if kind == "summary_table":
        per_file = [(p, load([os.path.join(ROOT, p)])) for p in paths]
        return [provenance([misc_summary.normalize(x) for x in lines], paths), ""] + \
            misc_summary.table(per_file)
    per_file = {p: load([os.path.join(ROOT, p)]) for p in paths}
    SCREEN_LINES["lines"] = [x for x in per_file[paths[0]] if x.get("screen")]
    steps, e2e = split(per_file[paths[0]])
    used = lines
    if kind in ("steps", "layouts", "passes"):
        used = [x for x in lines if not is_e2e(x)]
        body = {"steps": step_table, "layouts": layouts_text, "passes": passes_text}[kind](steps)
    elif kind == "screening":
        used = [x for x in lines if x.get("screen")]
        body = screening_table(lines)
    elif kind == "compiled":
        used = [x for x in lines if x.get("info")]
        body = compile_table(lines)
    elif kind == "standing":
        body = standing_text(steps, e2e)
    elif kind in ("e2e", "e2e_phases"):
        used = [x for x in lines if is_e2e(x)]
        body = (e2e_table if kind == "e2e" else e2e_phase_table)(e2e)
    elif kind == "scaling":
        body = scaling_tables(steps)[1:]  # without its leading blank line
    elif kind == "readme_speed":
        scale_steps, _ = split(per_file[paths[1]]) if len(paths) > 1 else ({}, {})
        body = readme_speed_text(steps, e2e, scale_steps)
    else:
        raise SystemExit(f"summarize.py: block {name}: unknown kind {kind}")
    return [provenance(used, paths), ""] + body


START = re.compile(r"^<!-- bench:([A-Za-z0-9_.-]+) -->$")
END = re.compile(r"^<!-- /bench:([A-Za-z0-9_.-]+) -->$")


def docs(check):
    """Regenerate (or with `check`, compare) every block of DOC_FILES. Returns the exit code."""
    differ, seen = False, set()
    for rel in DOC_FILES:
        path = os.path.join(ROOT, rel)
        with open(path) as f:
            old = f.read().split("\n")
        new, i = [], 0
        while i < len(old):
            line = old[i]
            m = START.match(line.strip())
            if not m:
                outside_code = "".join(line.split("`")[::2])  # `<!-- bench:X -->` in prose is text
                if "<!-- bench:" in outside_code or "<!-- /bench:" in outside_code:
                    raise SystemExit(f"{rel}:{i + 1}: a bench marker out of place "
                                     f"(each `<!-- bench:NAME -->` on a line of its own, closed "
                                     f"by `<!-- /bench:NAME -->`): {line.strip()}")
                new.append(line)
                i += 1
                continue
            name = m.group(1)
            if name not in BLOCKS:
                raise SystemExit(f"{rel}:{i + 1}: unknown block bench:{name} (known: "
                                 f"{', '.join(sorted(BLOCKS))}; the table is BLOCKS in "
                                 "bench/docs_blocks.py)")
            j = i + 1
            while j < len(old) and old[j].strip() != f"<!-- /bench:{name} -->":
                if START.match(old[j].strip()) or END.match(old[j].strip()):
                    break
                j += 1
            if j == len(old) or old[j].strip() != f"<!-- /bench:{name} -->":
                raise SystemExit(f"{rel}:{i + 1}: `<!-- bench:{name} -->` has no "
                                 f"`<!-- /bench:{name} -->` after it")
            seen.add(name)
            body = [""] + generate(name, *BLOCKS[name]) + [""]
            if old[i + 1:j] != body:
                differ = True
            if old[i + 1:j] != body and check:
                sys.stdout.writelines(difflib.unified_diff(
                    [x + "\n" for x in old[i + 1:j]], [x + "\n" for x in body],
                    f"{rel}:{i + 2} (bench:{name}, in the file)",
                    f"{rel}:{i + 2} (bench:{name}, generated)"))
            new += [line] + body + [old[j]]
            i = j + 1
        if not check and new != old:
            with open(path, "w") as f:
                f.write("\n".join(new))
            print(f"summarize.py: rewrote the bench blocks of {rel}")
    missing = sorted(set(BLOCKS) - seen)
    if missing:
        raise SystemExit("summarize.py: no block in " + " or ".join(DOC_FILES) + " for "
                         + ", ".join(f"bench:{n}" for n in missing))
    if check and differ:
        print("summarize.py: the blocks above differ from what the raw files give; "
              "`bench/summarize.py --docs` rewrites them")
        return 1
    return 0
