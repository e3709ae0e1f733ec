"""Optuna's TPE against random search on Branin, 30 trials, 10 startup trials, in blocks of 20
seeds: the yardstick for runner's TPE (`sweep.mode = "tpe"`; bench/tpe_branin.sh measures it
the same way). One JSON line per block of seeds, with the date, Optuna's version, the CPU, its
ISA flags and the 1-minute load. `TPESampler`'s defaults are Optuna's own: since Optuna 5 that
is the multivariate TPE for one objective (an earlier version of this script also asked for
`multivariate=True` and got the same numbers).

    python3 -m venv /tmp/optvenv && /tmp/optvenv/bin/pip install optuna
    /tmp/optvenv/bin/python bench/tpe_branin.py FIRST LAST > bench/results/DATE/tpe-branin-optuna.jsonl
"""
import datetime
import json
import math
import os
import platform
import sys

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)


def branin(x, y):
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (y - b * x * x + c * x - r) ** 2 + s * (1 - t) * math.cos(x) + s


def objective(trial):
    return branin(trial.suggest_float("x", -5, 10), trial.suggest_float("y", 0, 15))


def best(sampler):
    study = optuna.create_study(sampler=sampler, direction="minimize")
    study.optimize(objective, n_trials=30)
    return study.best_value


def isa():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return [f for f in line.split()[2:] if f.startswith(("avx", "amx")) or f == "fma"]
    except OSError:
        pass
    return []


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# seeds FIRST..LAST (default 0..100), in blocks of 20
first, last = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (0, 100)
for start in range(first, last, 20):
    rows = []
    for seed in range(start, start + 20):
        rnd = best(optuna.samplers.RandomSampler(seed=seed + 1000))
        tpe = best(optuna.samplers.TPESampler(seed=seed, n_startup_trials=10))
        rows.append({"seed": seed, "random": rnd, "tpe": tpe})
    print(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "optuna": optuna.__version__,
        "cpu": cpu(),
        "isa": isa(),
        "load_1m": os.getloadavg()[0],
        "seeds": [start, start + 20],
        "trials": 30,
        "startup_trials": 10,
        "tpe_wins": sum(r["tpe"] < r["random"] for r in rows),
        "runs": rows,
    }))
