#!/usr/bin/env python3
"""Checks by hand that the synthetic identities are learnable by a small CNN (and prints the
raw-pixel 1-NN baseline next to it). Not run in CI; needs torch + torchvision + Pillow.

    python bench/synth_learnability.py DATA_DIR [--epochs 30]

DATA_DIR is a set written by `runner data synth` (course layout).
"""
import argparse
import glob
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T


def load(root, split):
    classes = sorted(os.listdir(os.path.join(root, "classification", "train")))
    idx = {c: i for i, c in enumerate(classes)}
    xs, ys = [], []
    for c in sorted(os.listdir(os.path.join(root, "classification", split))):
        for p in sorted(glob.glob(os.path.join(root, "classification", split, c, "*"))):
            xs.append(Image.open(p).convert("RGB"))
            ys.append(idx[c])
    return xs, torch.tensor(ys), len(classes)


def net(n):
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.MaxPool2d(2))
    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 192),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(192, n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    xtr, ytr, n = load(a.root, "train")
    xdv, ydv, _ = load(a.root, "dev")
    size = xtr[0].size[0]
    norm = T.Normalize([0.5] * 3, [0.25] * 3)
    aug = T.Compose([T.RandomResizedCrop(size, scale=(0.7, 1.0)), T.RandomHorizontalFlip(),
                     T.ColorJitter(0.3, 0.3, 0.3), T.ToTensor(), norm])
    plain = T.Compose([T.ToTensor(), norm])
    dev = torch.stack([plain(x) for x in xdv])
    # raw-pixel 1-NN
    tr_plain = torch.stack([plain(x) for x in xtr]).flatten(1)
    nn_pred = ytr[torch.cdist(dev.flatten(1), tr_plain).argmin(1)]
    print(f"raw-pixel 1-NN dev accuracy: {(nn_pred == ydv).float().mean():.3f}")
    m = net(n)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=a.epochs * ((len(xtr) + 63) // 64))
    start = time.time()
    for ep in range(a.epochs):
        m.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 64):
            b = perm[i:i + 64]
            x = torch.stack([aug(xtr[j]) for j in b])
            loss = F.cross_entropy(m(x), ytr[b], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if ep % 5 == 4 or ep == a.epochs - 1:
            m.eval()
            with torch.no_grad():
                acc = (m(dev).argmax(1) == ydv).float().mean().item()
            print(f"epoch {ep + 1}: loss {loss.item():.3f} dev acc {acc:.3f} ({time.time() - start:.0f}s)")


if __name__ == "__main__":
    main()
