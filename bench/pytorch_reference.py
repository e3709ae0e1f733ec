#!/usr/bin/env python3
"""PyTorch timing of the training step `runner bench train` measures (run by hand, not in CI),
on the CPU or, with --device cuda, on a GPU (scripts/gpu-check.sh), in f32 or with AMP.

Builds the same networks as runner's bench recipes (bench/recipes/*.toml):
  resnet18       torchvision ResNet-18
  resnet50       torchvision ResNet-50
  mobilenet_v2   torchvision MobileNetV2 (width 1.0)
  convnext_nano  timm's convnext_nano (depths 2-2-8-2, dims 80-160-320-640, conv_mlp)
  convnext_t     timm's convnext_tiny (depths 3-3-9-3, dims 96-192-384-768, Linear MLP);
                 torchvision's convnext_tiny (the same layers) where timm is not installed
(timm.create_model with drop_path_rate 0; runner's blocks compute the same: depthwise 7x7,
LayerNorm, 1x1 expand x4, exact GELU, 1x1 project, layer scale 1e-6; pooled, normed head.)

--amp bf16 | f16 runs the forward under torch.autocast (f16 with a GradScaler), as PyTorch's
mixed precision recipes do; --channels-last stores the model and input NHWC (the usual
setting with AMP on a GPU). On CUDA every phase ends with torch.cuda.synchronize(), and the
result has the GPU's name and peak allocated memory.

with `--classes` outputs (runner's bench uses the synthetic data's identities: 100), on random
input of shape (batch, 3, size, size) in [-1, 1) and random labels, NCHW (channels-first), like
runner. One step = forward + cross-entropy, backward, SGD step (lr 0.1, momentum 0.9, weight
decay 5e-4, as templates/optim/sgd.toml). Times are medians of `--steps` steps after
`--warmup` steps, with `torch.set_num_threads(--threads)`. Prints one JSON object per net:
{net, images_per_sec, forward_ms, backward_ms, step_ms, threads, ...}.

Usage (bench/pytorch-env.sh makes .venv-bench with the versions of bench/requirements.txt):
    .venv-bench/bin/python bench/pytorch_reference.py --net resnet18 --steps 5
    .venv-bench/bin/python bench/pytorch_reference.py --net all
"""
import argparse
import json
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    import torchvision
except ImportError as e:
    sys.exit(f"pytorch_reference.py: {e.name} is not installed in {sys.executable}; "
             "run bench/pytorch-env.sh (bench/requirements.txt) and use .venv-bench/bin/python")
try:
    import timm  # the ConvNeXt reference
except ImportError:
    timm = None  # torchvision's ConvNeXt-T stands in (GPU machines may lack timm)

# timm's own ConvNeXt presets (timm/models/convnext.py): nano has conv_mlp (1x1-conv MLP,
# LayerNorm over channels), tiny a Linear MLP; --conv-mlp overrides.
CONVNEXT = {"convnext_nano": "convnext_nano", "convnext_t": "convnext_tiny"}

NETS = ["resnet18", "mobilenet_v2", "convnext_nano", "convnext_t"]
MORE = ["resnet50"]


def build(net, num_classes, conv_mlp):
    if net == "resnet18":
        return torchvision.models.resnet18(num_classes=num_classes)
    if net == "resnet50":
        return torchvision.models.resnet50(num_classes=num_classes)
    if net == "mobilenet_v2":
        return torchvision.models.mobilenet_v2(num_classes=num_classes)
    if net == "convnext_t" and timm is None:
        return torchvision.models.convnext_tiny(num_classes=num_classes)
    if net in CONVNEXT:
        if timm is None:
            raise SystemExit(f"{net} needs timm (pip install timm)")
        extra = {} if conv_mlp == "auto" else {"conv_mlp": conv_mlp == "on"}
        return timm.create_model(CONVNEXT[net], num_classes=num_classes, drop_path_rate=0.0, **extra)
    raise SystemExit(f"unknown net {net!r}; one of {NETS}")


# ---------------------------------------------------------------------------------------------


def rss_mb(key="VmRSS:"):
    """A kB line of /proc/self/status, in MiB (None where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def bench(net, args):
    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = build(net, args.classes, args.conv_mlp).train().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = (torch.rand(args.batch, 3, args.size, args.size) * 2 - 1).to(dev)
    y = torch.randint(0, args.classes, (args.batch,)).to(dev)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if args.compile:
        model = torch.compile(model)
    # the imports, the model, its optimizer and the batch are in memory: what the steps add
    # is the training working set (peak minus this), comparable with runner's
    rss_after_build = rss_mb()
    amp = {"none": None, "bf16": torch.bfloat16, "f16": torch.float16}[args.amp]
    scaler = torch.amp.GradScaler(dev.type, enabled=amp is torch.float16)
    cuda = dev.type == "cuda"

    def now():
        if cuda:
            torch.cuda.synchronize(dev)
        return time.perf_counter()

    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    fw, bw, st = [], [], []
    started = time.perf_counter()
    compile_s = None
    prof = None
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            compile_s = time.perf_counter() - started
            if args.profile:
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                prof.__enter__()
        opt.zero_grad(set_to_none=True)
        t0 = now()
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y)
        loss.item()
        t1 = now()
        scaler.scale(loss).backward()
        t2 = now()
        scaler.step(opt)
        scaler.update()
        t3 = now()
        if i >= args.warmup:
            fw.append((t1 - t0) * 1e3)
            bw.append((t2 - t1) * 1e3)
            st.append((t3 - t2) * 1e3)
    ops = None
    if prof is not None:
        prof.__exit__(None, None, None)
        ops = profile_table(prof, args.steps, sum(fw) + sum(bw) + sum(st))
    f, b, s = (statistics.median(v) for v in (fw, bw, st))
    return {
        "net": net,
        "framework": f"pytorch {torch.__version__}",
        "timm": timm.__version__ if timm is not None else None,
        "image_size": args.size,
        "batch_size": args.batch,
        "steps": args.steps,
        "images_per_sec": args.batch / ((f + b + s) / 1e3),
        "forward_ms": f,
        "backward_ms": b,
        "step_ms": s,
        "rss_after_build_mb": rss_after_build,
        "compiled": args.compile,
        **({"compile_s": compile_s} if args.compile else {}),
        "threads": torch.get_num_threads(),
        "channels_last": args.channels_last,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": args.device,
        "amp": args.amp,
        "model_source": "timm" if timm is not None and net in CONVNEXT else "torchvision",
        **({"ops": ops} if ops is not None else {}),
        **({"gpu": torch.cuda.get_device_name(dev),
            "gpu_peak_mb": torch.cuda.max_memory_allocated(dev) / 2**20} if cuda else {}),
    }


def profile_table(prof, steps, total_ms):
    """torch.profiler's operator table in `runner bench train --profile`'s shape: per top-level
    operator (one not called from another operator), calls, milliseconds and share per step,
    longest first, then the time outside every operator."""
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    # an event nested in another one on the same thread is counted in the outer one
    events.sort(key=lambda e: (e.thread, e.time_range.start, -e.time_range.end))
    top, end = {}, {}
    for e in events:
        if e.time_range.start < end.get(e.thread, -1):
            continue
        end[e.thread] = e.time_range.end
        if e.name.startswith("ProfilerStep") or e.name.startswith("[memory]"):
            continue
        calls, us = top.get(e.name, (0, 0.0))
        top[e.name] = (calls + 1, us + (e.time_range.end - e.time_range.start))
    n = max(steps, 1)
    rows = sorted(({"op": k, "calls_per_step": c / n, "ms_per_step": us / 1e3 / n,
                    "share": us / 1e3 / total_ms} for k, (c, us) in top.items()),
                  key=lambda r: -r["ms_per_step"])
    inside = sum(r["ms_per_step"] for r in rows)
    per_step = total_ms / n
    rows.append({"op": "(outside the operators)", "calls_per_step": 0,
                 "ms_per_step": max(per_step - inside, 0.0),
                 "share": max(per_step - inside, 0.0) / per_step})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", default="all", help=f"one of {NETS + MORE} or 'all' ({NETS})")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--channels-last", action="store_true", help="NHWC (default: NCHW, like runner)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=["none", "bf16", "f16"], default="none",
                   help="mixed precision with torch.autocast (f16 with a GradScaler)")
    p.add_argument("--conv-mlp", choices=["auto", "on", "off"], default="auto",
                   help="ConvNeXt MLP as 1x1 conv (on) or Linear (off); auto = timm's preset")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile (inductor) the model; the warm-up steps compile and are "
                        "not timed, their seconds reported as compile_s")
    p.add_argument("--profile", action="store_true",
                   help="torch.profiler over the timed steps: every top-level operator's calls, "
                        "ms and share per step (`ops`), as `runner bench train --profile`")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for net in NETS if args.net == "all" else [args.net]:
        print(json.dumps(bench(net, args)), flush=True)


if __name__ == "__main__":
    main()
