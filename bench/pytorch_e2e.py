#!/usr/bin/env python3
"""A whole training run in PyTorch doing the work `runner run bench/recipes/e2e_resnet18.toml`
does, for the end-to-end row of bench/compare.sh (run by hand, never in CI).

Same data folder (the course layout `runner data synth` writes), same work each epoch:
- train: torchvision ResNet-18 (num_classes = the training identities), SGD momentum 0.9,
  weight decay 5e-4, cosine annealing per epoch, cross-entropy; batches from a torchvision
  DataLoader (ImageFolder, RandomResizedCrop(64, scale 0.8-1, ratio 0.9-1.1), horizontal flip,
  ToTensor, Normalize(0.5)) with the same worker count as the recipe's `data.num_workers`
  (persistent workers), full batches only (runner drops the last partial batch);
- dev evaluation (loss and accuracy over classification/dev);
- a checkpoint of model and optimizer written to a temporary file, fsynced and renamed (and
  the folder fsynced), every epoch, as runner writes its own,
  the previous one deleted unless it is the best (runner's keep_best = 1, keep_last = 1);
and verification at the end: embeddings (the 512-d pooled features) of verification/known and
unknown_dev, a gallery of per-identity mean embeddings, cosine similarity one-to-many, the
threshold tuned on unknown_dev (its labels from verification_dev.csv).

Prints one JSON line: wall seconds from the first import to the end (`wall_s`), per-phase
totals like runner's `phase_seconds` (train, loader_wait, eval, verify, checkpoint), the final
metrics, and this process's peak RSS (getrusage; the worker processes' in `children_rss_mb`).

    .venv-bench/bin/python bench/pytorch_e2e.py --data /path/to/faces --out /tmp/e2e-torch
"""
import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from torchvision_data import Files  # noqa: E402  (beside this script: a list of image files)


def images(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if not f.startswith("."))


def embed(model, paths, tf, batch, workers):
    """The pooled 512-d features of each image (the layer before the classifier)."""
    loader = DataLoader(Files(paths, tf), batch_size=batch, num_workers=workers)
    trunk = torch.nn.Sequential(*list(model.children())[:-1])
    rows = []
    with torch.no_grad():
        for x, _ in loader:
            rows.append(torch.flatten(trunk(x), 1))
    return F.normalize(torch.cat(rows), dim=1)


def verification(model, root, tf, batch, workers):
    v = os.path.join(root, "verification")
    ids = sorted(d for d in os.listdir(os.path.join(v, "known")) if not d.startswith("."))
    known, labels = [], []
    for ident in ids:
        for p in images(os.path.join(v, "known", ident)):
            known.append(p)
            labels.append(ident)
    g = embed(model, known, tf, batch, workers)
    lab = torch.tensor([ids.index(x) for x in labels])
    gallery = torch.stack([g[lab == k].mean(0) for k in range(len(ids))])
    gallery = F.normalize(gallery, dim=1)
    unknown = images(os.path.join(v, "unknown_dev"))
    with open(os.path.join(v, "verification_dev.csv")) as f:
        truth = {r["id"]: r["label"] for r in csv.DictReader(f)}
    u = embed(model, unknown, tf, batch, workers)
    sim = u @ gallery.T
    best, arg = sim.max(1)
    want = [truth.get(os.path.basename(p), "n000000") for p in unknown]
    # tune: every observed similarity as a threshold (accept when best >= t), and "reject all"
    cands = sorted(set(best.tolist())) + [float("inf")]
    top = (-1.0, None)
    for t in cands:
        pred = [ids[a] if b >= t else "n000000" for a, b in zip(arg.tolist(), best.tolist())]
        acc = sum(p == w for p, w in zip(pred, want)) / len(want)
        if acc > top[0]:
            top = (acc, t)
    return {"verify_acc": top[0], "threshold": top[1]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the data root (classification/, verification/)")
    p.add_argument("--out", required=True, help="folder for the checkpoints")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    norm = T.Normalize([0.5] * 3, [0.5] * 3)
    train_tf = T.Compose([
        T.RandomResizedCrop(args.size, scale=(0.8, 1.0), ratio=(0.9, 1.1)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        norm,
    ])
    eval_tf = T.Compose([T.ToTensor(), norm])
    cls = os.path.join(args.data, "classification")
    train_set = torchvision.datasets.ImageFolder(os.path.join(cls, "train"), train_tf)
    dev_set = torchvision.datasets.ImageFolder(os.path.join(cls, "dev"), eval_tf)
    assert train_set.classes == dev_set.classes, "dev identities differ from train's"
    keep = args.workers > 0
    train_loader = DataLoader(train_set, batch_size=args.batch, shuffle=True, drop_last=True,
                              num_workers=args.workers, persistent_workers=keep)
    dev_loader = DataLoader(dev_set, batch_size=args.batch, num_workers=args.workers,
                            persistent_workers=keep)
    model = torchvision.models.resnet18(num_classes=len(train_set.classes))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    phases = dict(train=0.0, loader_wait=0.0, eval=0.0, verify=0.0, checkpoint=0.0)
    best_acc, best_path, last_path = -1.0, None, None
    t_loop = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        t = time.perf_counter()
        for x, y in train_loader:
            t1 = time.perf_counter()
            phases["loader_wait"] += t1 - t
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            t = time.perf_counter()
            phases["train"] += t - t1
        phases["loader_wait"] += time.perf_counter() - t
        sched.step()
        model.eval()
        dl, dc, dn = 0.0, 0, 0
        t = time.perf_counter()
        with torch.no_grad():
            for x, y in dev_loader:
                t1 = time.perf_counter()
                phases["loader_wait"] += t1 - t
                logits = model(x)
                dl += F.cross_entropy(logits, y, reduction="sum").item()
                dc += (logits.argmax(1) == y).sum().item()
                dn += len(y)
                t = time.perf_counter()
                phases["eval"] += t - t1
        phases["loader_wait"] += time.perf_counter() - t
        val_acc = dc / dn
        t = time.perf_counter()
        path = os.path.join(args.out, f"epoch-{epoch:04d}.pt")
        # like for like with runner's checkpoint write: temp file, fsync, rename, directory fsync
        with open(path + ".tmp", "wb") as f:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
        d = os.open(args.out, os.O_RDONLY)
        try:
            os.fsync(d)
        finally:
            os.close(d)
        prev_last, last_path = last_path, path
        if val_acc > best_acc:
            old_best, best_acc, best_path = best_path, val_acc, path
            for q in {old_best, prev_last} - {None, best_path, last_path}:
                os.remove(q)
        elif prev_last not in (None, best_path):
            os.remove(prev_last)
        phases["checkpoint"] += time.perf_counter() - t
    t = time.perf_counter()
    ver = verification(model, args.data, eval_tf, args.batch, args.workers)
    phases["verify"] += time.perf_counter() - t
    end = time.perf_counter()
    print(json.dumps({
        "model": "torchvision resnet18",
        "framework": f"pytorch {torch.__version__}",
        "epochs": args.epochs,
        "batch_size": args.batch,
        "image_size": args.size,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "train_images": len(train_set),
        "wall_s": end - T_START,
        "loop_s": end - t_loop,
        "phase_seconds": phases,
        "train_loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "val_loss": dl / dn,
        "val_acc": val_acc,
        **ver,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }), flush=True)


if __name__ == "__main__":
    main()
