#!/usr/bin/env python3
"""Cuts the run path (DT_RUNPATH) of binaries to `$ORIGIN/lib:/usr/local/cuda/lib64`.

scripts/build-cuda.sh links the CUDA binary with a run path that also names this development
machine's PyTorch wheels (so that it starts here); the GPU bundle must not carry one machine's
paths. The new path is shorter, so it is written over the old one in the string table, padded
with NUL bytes (the dynamic section still points at its start). The GPU check finds the CUDA
libraries through LD_LIBRARY_PATH instead (PyTorch's nvidia wheels, then /usr/local/cuda).

    scripts/cut-runpath.py BINARY...
"""
import sys

NEW = b"$ORIGIN/lib:/usr/local/cuda/lib64"

for path in sys.argv[1:]:
    data = bytearray(open(path, "rb").read())
    start = data.find(b"$ORIGIN/lib:")
    if start < 0:
        print(f"{path}: no $ORIGIN run path, left as it is")
        continue
    end = data.index(b"\0", start)
    old = bytes(data[start:end])
    if len(old) < len(NEW) or not old.startswith(NEW):
        sys.exit(f"{path}: unexpected run path {old!r}")
    data[start:end] = NEW + b"\0" * (len(old) - len(NEW))
    open(path, "wb").write(data)
    print(f"{path}: run path {old.decode()} -> {NEW.decode()}")
