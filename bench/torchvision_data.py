#!/usr/bin/env python3
"""torchvision + PIL doing the work `runner bench data` measures (run by hand, not in CI).

Decodes the same JPEGs and applies RandomResizedCrop(size), RandomHorizontalFlip(),
ColorJitter(0.4, 0.4, 0.4), ToTensor(), Normalize(ImageNet) through a DataLoader with batches of
64, with 1 (in-process) and 2 worker processes (persistent; the second pass is timed). Prints JSON like the Rust benchmark.

Usage (the image folders are the ones `bench_data` generated, e.g. target/bench-data):
    python bench/torchvision_data.py --images target/bench-data/bench-64-*/classification/train \
        --size 64 --count 1000
    python bench/torchvision_data.py --images target/bench-data/bench-256-*/classification/train \
        --size 224 --count 1000
"""
import argparse
import glob
import json
import os
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T


class Files(Dataset):
    def __init__(self, paths, tf):
        self.paths, self.tf = paths, tf

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB")), 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", nargs="+", required=True, help="folders (searched recursively)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--stages", type=int, default=256,
                    help="also time decoding and the transforms apart on this many images "
                         "(thread CPU time, best of 2 passes; 0 to skip)")
    a = ap.parse_args()
    paths = []
    for d in a.images:
        for ext in ("jpg", "jpeg", "png"):
            paths += glob.glob(os.path.join(d, "**", f"*.{ext}"), recursive=True)
    paths = sorted(paths)[: a.count]
    if not paths:
        raise SystemExit("no images found")
    tf = T.Compose([
        T.RandomResizedCrop(a.size, antialias=True),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.4, 0.4, 0.4),
        T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    torch.set_num_threads(1)
    ds = Files(paths, tf)
    for _ in DataLoader(Files(paths[:64], tf), batch_size=a.batch_size):  # warm the file cache
        pass
    cases = []
    for t in a.threads:
        # workers started and files cached by an untimed first pass: the timed pass is the
        # steady state of a training epoch, not the start-up of worker processes
        dl = DataLoader(ds, batch_size=a.batch_size, shuffle=True,
                        num_workers=0 if t <= 1 else t, persistent_workers=t > 1)
        for _ in dl:
            pass
        start = time.perf_counter()
        n = 0
        for x, _ in dl:
            n += x.shape[0]
        secs = time.perf_counter() - start
        cases.append({"size": a.size, "threads": t, "images": n, "seconds": secs,
                      "images_per_sec": n / secs, "images_per_sec_per_thread": n / secs / t})
    stages = None
    if a.stages:
        few = paths[: a.stages]
        best = [float("inf"), float("inf")]
        for _ in range(2):
            dec = tfs = 0.0
            for p in few:
                t0 = time.thread_time()
                with Image.open(p) as im:
                    im = im.convert("RGB")
                t1 = time.thread_time()
                tf(im)
                t2 = time.thread_time()
                dec += t1 - t0
                tfs += t2 - t1
            best = [min(best[0], dec / len(few) * 1e3), min(best[1], tfs / len(few) * 1e3)]
        stages = {"size": a.size, "images": len(few), "decode_ms": best[0],
                  "transforms_ms": best[1]}
    print(json.dumps({"torch": torch.__version__, "cases": cases, "stages": stages}, indent=1))


if __name__ == "__main__":
    main()
