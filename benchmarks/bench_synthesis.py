"""Synthesis throughput (megapixels of synthetic H&E per second), ours vs a naive reference.

Naive reference (same weights, same tiles and blending): one tile at a time, fp32, contiguous
(NCHW) tensors, ``torch.no_grad``. Ours: batched tiles, ``torch.inference_mode``; on GPU also
channels_last and bf16 autocast (optionally ``--compile``). Both run in this process on the same
random input; the script prints the ratio and the largest output difference.

Goal (issue 3): >= 3x on GPU, >= 1x on CPU.

Usage: python benchmarks/bench_synthesis.py [--size 1024] [--tile 256] [--ngf 32] [--depth 7] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from napari_msi2hist.models.inference import (
    InferenceOptions,
    blend_window,
    infer,
    pick_device,
    tile_starts,
)
from napari_msi2hist.models.networks import UNetGenerator, init_weights


def naive(model, x, tile, overlap, device) -> np.ndarray:
    """One tile at a time, fp32, NCHW, the same blending as ours."""
    model = model.to(device).eval().to(memory_format=torch.contiguous_format)
    c, ny, nx = x.shape
    win = blend_window(tile, overlap).astype(np.float32)
    acc = np.zeros((3, ny, nx), np.float32)
    wsum = np.zeros((ny, nx), np.float32)
    with torch.no_grad():
        for y0 in tile_starts(ny, tile, overlap):
            for x0 in tile_starts(nx, tile, overlap):
                t = torch.from_numpy(np.ascontiguousarray(x[:, y0 : y0 + tile, x0 : x0 + tile]))[
                    None
                ].to(device)
                o = model(t).float().cpu().numpy()[0]
                acc[:, y0 : y0 + tile, x0 : x0 + tile] += o * win
                wsum[y0 : y0 + tile, x0 : x0 + tile] += win
    return acc / wsum


def timed(fn, device, repeat=2):
    best, out = np.inf, None
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--channels", type=int, default=50)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    device = pick_device(a.device)
    torch.manual_seed(0)
    model = UNetGenerator(a.channels, 3, ngf=a.ngf, depth=a.depth)
    init_weights(model)
    model.eval()
    x = np.random.default_rng(0).standard_normal((a.channels, a.size, a.size)).astype(np.float32)
    mp = a.size * a.size / 1e6
    opts = InferenceOptions(
        tile=a.tile,
        overlap=a.overlap,
        device=device.type,
        amp=not a.no_amp,
        batch_size=a.batch_size,
        compile=a.compile,
    )
    infer(model, x[:, : a.tile, : a.tile], opts)  # warm-up (and compile)
    t_ours, ours = timed(lambda: infer(model, x, opts), device)
    naive(model, x[:, : a.tile, : a.tile], a.tile, a.overlap, device)
    t_naive, ref = timed(lambda: naive(model, x, a.tile, a.overlap, device), device)
    diff = float(np.abs(ours - ref).max())
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    res = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "megapixels": mp,
        "ours_s": t_ours,
        "naive_s": t_naive,
        "ours_mpix_s": mp / t_ours,
        "naive_mpix_s": mp / t_naive,
        "ratio": t_naive / t_ours,
        "max_abs_diff": diff,
        "peak_gpu_gib": peak,
        "model": f"U-Net ngf={a.ngf} depth={a.depth}, {a.channels} channels",
        "tile": a.tile,
        "overlap": a.overlap,
        "amp": device.type == "cuda" and not a.no_amp,
    }
    print(
        f"device {res['device']} {res['gpu'] or ''}; {res['model']}; {a.size}x{a.size} px, tile {a.tile}, "
        f"overlap {a.overlap}"
    )
    print(f"  ours   {t_ours:7.2f} s  {res['ours_mpix_s']:.3f} MP/s")
    print(f"  naive  {t_naive:7.2f} s  {res['naive_mpix_s']:.3f} MP/s  (one tile at a time, fp32)")
    print(f"  ratio ours/naive speed: {res['ratio']:.2f}x   (goal: >= 3x GPU, >= 1x CPU)")
    print(
        f"  max |ours - naive| in [-1, 1] output space: {diff:.4f}"
        + (" (bf16)" if res["amp"] else "")
    )
    if peak is not None:
        print(f"  peak GPU memory: {peak:.2f} GiB")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
