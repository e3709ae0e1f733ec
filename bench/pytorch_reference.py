#!/usr/bin/env python3
"""PyTorch CPU timing of the training step `runner bench train` measures (run by hand, not in CI).

Builds the same networks as runner's bench recipes (bench/recipes/*.toml):
  resnet18       torchvision ResNet-18
  mobilenet_v2   torchvision MobileNetV2 (width 1.0)
  convnext_nano  timm-compatible ConvNeXt-nano (depths 2-2-8-2, dims 80-160-320-640, conv_mlp)
  convnext_t     timm-compatible ConvNeXt-T    (depths 3-3-9-3, dims 96-192-384-768)
(ConvNeXt is written out below, timm's layout: 4x4/4 stem + LayerNorm2d, LayerNorm2d + 2x2/2
downsampling, blocks of depthwise 7x7, LayerNorm, 1x1 expand x4, exact GELU, 1x1 project, layer
scale 1e-6; pooled, normed head. timm is not installed in the venv, so it is not imported.)

with `--classes` outputs (runner's bench uses the synthetic data's identities: 100), on random
input of shape (batch, 3, size, size) in [-1, 1) and random labels, NCHW (channels-first), like
runner. One step = forward + cross-entropy, backward, SGD step (lr 0.1, momentum 0.9, weight
decay 5e-4, as templates/optim/sgd.toml). Times are medians of `--steps` steps after
`--warmup` steps, with `torch.set_num_threads(--threads)`. Prints one JSON object per net:
{net, images_per_sec, forward_ms, backward_ms, step_ms, threads, ...}.

Usage:
    /tmp/tvenv/bin/python bench/pytorch_reference.py --net resnet18 --steps 5
    /tmp/tvenv/bin/python bench/pytorch_reference.py --net all
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

# ---------------------------------------------------------------------------------------------
# ConvNeXt, timm layout (timm/models/convnext.py, without the options runner does not have)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (timm's LayerNorm2d)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2, as Linear (channels-last) or as 1x1 conv (conv_mlp)."""

    def __init__(self, dim, hidden, conv):
        super().__init__()
        make = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.fc1 = make(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, timm's default
        self.fc2 = make(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, conv_mlp, ls_init_value=1e-6):
        super().__init__()
        self.conv_mlp = conv_mlp
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6) if conv_mlp else nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim, conv_mlp)
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim))

    def forward(self, x):
        shortcut = x
        x = self.conv_dw(x)
        if self.conv_mlp:
            x = self.mlp(self.norm(x))
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        else:
            x = x.permute(0, 2, 3, 1)
            x = self.mlp(self.norm(x))
            x = x.mul(self.gamma)
            x = x.permute(0, 3, 1, 2)
        return x + shortcut  # drop_path 0: identity


class ConvNeXtStage(nn.Module):
    def __init__(self, in_c, out_c, depth, conv_mlp):
        super().__init__()
        if in_c != out_c:
            self.downsample = nn.Sequential(
                LayerNorm2d(in_c, eps=1e-6), nn.Conv2d(in_c, out_c, 2, stride=2)
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[ConvNeXtBlock(out_c, conv_mlp) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class ConvNeXt(nn.Module):
    def __init__(self, depths, dims, num_classes, conv_mlp):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        stages, prev = [], dims[0]
        for d, c in zip(depths, dims):
            stages.append(ConvNeXtStage(prev, c, d, conv_mlp))
            prev = c
        self.stages = nn.Sequential(*stages)
        self.head_norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc = nn.Linear(dims[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.stages(self.stem(x))
        x = x.mean((2, 3))
        return self.fc(self.head_norm(x))


# timm presets; conv_mlp as timm sets it per preset (nano: True, tiny: False)
CONVNEXT = {
    "convnext_nano": ((2, 2, 8, 2), (80, 160, 320, 640), True),
    "convnext_t": ((3, 3, 9, 3), (96, 192, 384, 768), False),
}

NETS = ["resnet18", "mobilenet_v2", "convnext_nano", "convnext_t"]


def build(net, num_classes, conv_mlp):
    if net == "resnet18":
        return torchvision.models.resnet18(num_classes=num_classes)
    if net == "mobilenet_v2":
        return torchvision.models.mobilenet_v2(num_classes=num_classes)
    if net in CONVNEXT:
        depths, dims, default_conv_mlp = CONVNEXT[net]
        cm = default_conv_mlp if conv_mlp == "auto" else conv_mlp == "on"
        return ConvNeXt(depths, dims, num_classes, cm)
    raise SystemExit(f"unknown net {net!r}; one of {NETS}")


# ---------------------------------------------------------------------------------------------


def bench(net, args):
    torch.manual_seed(0)
    model = build(net, args.classes, args.conv_mlp).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    y = torch.randint(0, args.classes, (args.batch,))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fw, bw, st = [], [], []
    for i in range(args.warmup + args.steps):
        opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        loss.item()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= args.warmup:
            fw.append((t1 - t0) * 1e3)
            bw.append((t2 - t1) * 1e3)
            st.append((t3 - t2) * 1e3)
    f, b, s = (statistics.median(v) for v in (fw, bw, st))
    return {
        "net": net,
        "framework": f"pytorch {torch.__version__}",
        "image_size": args.size,
        "batch_size": args.batch,
        "steps": args.steps,
        "images_per_sec": args.batch / ((f + b + s) / 1e3),
        "forward_ms": f,
        "backward_ms": b,
        "step_ms": s,
        "threads": torch.get_num_threads(),
        "channels_last": args.channels_last,
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", default="all", help=f"one of {NETS} or 'all'")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--channels-last", action="store_true", help="NHWC (default: NCHW, like runner)")
    p.add_argument("--conv-mlp", choices=["auto", "on", "off"], default="auto",
                   help="ConvNeXt MLP as 1x1 conv (on) or Linear (off); auto = timm's preset")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for net in NETS if args.net == "all" else [args.net]:
        print(json.dumps(bench(net, args)), flush=True)


if __name__ == "__main__":
    main()
