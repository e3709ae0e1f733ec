"""How soon `runner report --watch` puts an epoch on the page: trains one run of a recipe
(default: the quick start, 5 epochs) while `report --watch` runs on the same store, and polls
every 20 ms both the store (when each epoch row appears) and the page file (when the page's
embedded data first holds that epoch). One JSON line with each epoch's delay, the date,
commit, CPU, ISA flags and load. The open page shows the file's content within its reload
interval (3 s) after that.

    python3 bench/report_watch.py [RECIPE] [EPOCHS] >> bench/results/DATE/report-watch-COMMIT.jsonl
"""
import datetime
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
runner = os.path.join(root, "target", "release", "runner")
recipe = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "recipes", "quickstart.toml")
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=root, check=True)
work = tempfile.mkdtemp()
db, page = os.path.join(work, "store.db"), os.path.join(work, "page.html")


def page_epochs():
    """The most epochs any run has in the page's embedded data (0 before there is a page)."""
    try:
        html = open(page, encoding="utf-8").read()
    except OSError:
        return 0
    start = '<script id="report-data" type="application/json">'
    i = html.find(start)
    if i < 0:
        return 0
    j = html.find("</script>", i)
    data = json.loads(html[i + len(start):j].replace("<\\/", "</"))
    return max((len(c["epoch"]) for c in data["curves"].values()), default=0)


def store_epochs():
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
        n = c.execute("SELECT COALESCE(MAX(epoch), 0) FROM epochs").fetchone()[0]
        c.close()
        return n
    except sqlite3.Error:
        return 0


# the data is generated (and the store created) before the clock starts
subprocess.run([runner, "--db", db, "--quiet", "validate", recipe], cwd=root, check=True,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
run = subprocess.Popen([runner, "--db", db, "--quiet", "run", recipe, "--set", f"train.epochs={epochs}"],
                       cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while not os.path.exists(db):
    time.sleep(0.02)
watch = subprocess.Popen([runner, "--db", db, "report", "--watch", "--out", page],
                         cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
in_store, on_page = {}, {}
while run.poll() is None or len(on_page) < len(in_store):
    now = time.monotonic()
    s, p = store_epochs(), page_epochs()
    for e in range(1, s + 1):
        in_store.setdefault(e, now)
    for e in range(1, p + 1):
        on_page.setdefault(e, now)
    if run.poll() is not None and time.monotonic() - in_store.get(max(in_store, default=0), now) > 30:
        break
    time.sleep(0.02)
watch.send_signal(signal.SIGINT)
watch.wait()
delays = [round(on_page[e] - in_store[e], 3) for e in sorted(in_store) if e in on_page]


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def isa():
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            return [f for f in line.split()[2:] if f.startswith(("avx", "amx")) or f == "fma"]
    return []


commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                        text=True).stdout.strip()
print(json.dumps({
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "commit": commit,
    "cpu": cpu(),
    "cores": os.cpu_count(),
    "isa": isa(),
    "load_1m": os.getloadavg()[0],
    "recipe": os.path.relpath(recipe, root),
    "epochs": epochs,
    "run_exit": run.returncode,
    "delays_seconds": delays,
    "max_delay_seconds": max(delays) if delays else None,
    "reload_seconds": 3,
}))
