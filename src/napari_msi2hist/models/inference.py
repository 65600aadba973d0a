"""Tiled, blended inference for images of any size, on CPU or GPU, as a progress generator.

Tiles of ``tile`` pixels overlap by ``overlap`` pixels; each tile's output is weighted by a smooth
window (a raised-cosine ramp over the overlap, flat inside, never exactly zero) and the weighted
outputs are averaged, so no seams appear where tiles meet. Tiles are run in batches sized from free
GPU memory (halved and retried on out-of-memory); on GPU, mixed precision (bf16 or fp16) and
channels_last are used (channels_last on CPU too); everything runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from ..progress import CancelToken, Progress, run_to_end


def pick_device(device: str = "auto") -> torch.device:
    """Choose the torch device.

    Parameters
    ----------
    device : str
        ``auto`` (CUDA, else Apple MPS, else CPU), or a torch device name.

    Returns
    -------
    torch.device
        The device.

    Raises
    ------
    RuntimeError
        ``cuda`` or ``mps`` asked for but not available (never a silent fallback).
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is available")
    if device == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise RuntimeError("device 'mps' was asked for but Apple MPS is not available")
    return torch.device(device)


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Place tiles along one axis.

    Parameters
    ----------
    n : int
        Axis length.
    tile : int
        Tile length.
    overlap : int
        Minimum overlap of neighbouring tiles.

    Returns
    -------
    list of int
        Start offsets covering ``[0, n)``; the last tile ends at ``n`` (a single tile at 0 when ``n
        <= tile``).
    """
    if n <= tile:
        return [0]
    stride = max(1, tile - overlap)
    k = math.ceil((n - tile) / stride)
    return sorted({min(i * stride, n - tile) for i in range(k + 1)})


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """Build the separable blending weight of a tile.

    Raised-cosine ramps of ``overlap`` pixels at the edges, 1 inside, never below 1e-3.

    Parameters
    ----------
    tile : int
        Tile side.
    overlap : int
        Ramp length (0: flat).

    Returns
    -------
    ndarray
        ``(tile, tile)`` float64 weights.
    """
    w = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        r = np.arange(overlap, dtype=np.float64)
        ramp = 0.5 - 0.5 * np.cos(np.pi * (r + 0.5) / overlap)
        w[:overlap] = ramp
        w[tile - overlap :] = np.minimum(w[tile - overlap :], ramp[::-1])
    w = np.maximum(w, 1e-3)
    return np.outer(w, w)


@dataclass(frozen=True)
class InferenceOptions:
    """How inference runs: tiling, batching, device and precision; one default each."""

    tile: int = 256
    overlap: int = 32
    batch_size: int | None = None  # None: 1 on CPU, from free memory on GPU
    device: str = "auto"
    amp: bool = True  # mixed precision on GPU only
    amp_dtype: str = "bf16"
    channels_last: bool = True
    compile: bool = False
    blend: bool = True  # False: plain averaging of overlaps (for reference measurements)


def _auto_batch(model, tile, in_ch, device, opts) -> int:
    if opts.batch_size:
        return opts.batch_size
    if device.type != "cuda":
        return 1  # measured: batching tiles is slower on CPU (cache), see benchmarks/bench_synthesis.py
    free, _total = torch.cuda.mem_get_info(device)
    width = max((p.shape[0] for p in model.parameters() if p.dim() == 4), default=64)
    per_tile = tile * tile * (in_ch + 3 + 6 * width) * (2 if opts.amp else 4) * 4
    return int(max(1, min(64, 0.5 * free // max(per_tile, 1))))


def iter_infer(
    model: torch.nn.Module,
    x: np.ndarray,
    opts: InferenceOptions = InferenceOptions(),
    pad_value: float = 1.0,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Run a model over an image tile by tile, blending the overlaps.

    Each tile is padded with ``pad_value`` beyond the image border (the model contract's padding).

    Parameters
    ----------
    model : torch.nn.Module
        The generator (its ``multiple`` rounds the tile size).
    x : ndarray
        ``(C, Y, X)`` float32 in model input space.
    opts : InferenceOptions
        Tile size, overlap, blending, batch, device, precision.
    pad_value : float
        Input value beyond the image.
    cancel : CancelToken, optional
        Checked between batches of tiles; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        Tiles done (stage ``synthesis``).

    Returns
    -------
    ndarray
        ``(out_C, Y, X)`` float32 in model output space ([-1, 1] for the generators).
    """
    device = pick_device(opts.device)
    mult = getattr(model, "multiple", 1)
    tile = max(mult, int(math.ceil(opts.tile / mult)) * mult)
    overlap = min(opts.overlap, tile // 2)
    c, ny, nx = x.shape
    # pad the image so that every tile is complete; keep it channels-last (Y, X, C) so that a tile
    # batch viewed as NCHW through permute() is already in channels_last memory order (no copy)
    py, px = max(ny, tile), max(nx, tile)
    xp = np.full((py, px, c), pad_value, dtype=np.float32)
    xp[:ny, :nx] = np.moveaxis(x, 0, -1)
    ys, xs = tile_starts(py, tile, overlap), tile_starts(px, tile, overlap)
    boxes = [(y0, x0) for y0 in ys for x0 in xs]
    win = blend_window(tile, overlap if opts.blend else 0).astype(np.float32)[..., None]
    model = model.to(device).eval()
    use_cuda = device.type == "cuda"
    # channels_last helps on GPU (tensor cores) and on CPU (oneDNN): ~12-20 % measured on 2 CPU cores
    use_cl = opts.channels_last and device.type in ("cuda", "cpu")
    model = model.to(memory_format=torch.channels_last if use_cl else torch.contiguous_format)
    run = torch.compile(model) if opts.compile else model
    amp_dtype = torch.bfloat16 if opts.amp_dtype == "bf16" else torch.float16
    batch = _auto_batch(model, tile, c, device, opts)
    acc = None
    wsum = np.zeros((py, px, 1), dtype=np.float32)
    buf = np.empty((batch, tile, tile, c), dtype=np.float32)
    done = 0
    yield Progress(0, len(boxes), "synthesis")
    with torch.inference_mode():
        i = 0
        while i < len(boxes):
            if cancel is not None:
                cancel.check()
            part = boxes[i : i + batch]
            nb = len(part)
            if buf.shape[0] < nb:
                buf = np.empty((nb, tile, tile, c), dtype=np.float32)
            for k, (y0, x0) in enumerate(part):
                buf[k] = xp[y0 : y0 + tile, x0 : x0 + tile]
            t = torch.from_numpy(buf[:nb]).to(device, non_blocking=True).permute(0, 3, 1, 2)
            if not use_cl:
                t = t.contiguous()
            try:
                with torch.autocast(
                    device_type=device.type, dtype=amp_dtype, enabled=use_cuda and opts.amp
                ):
                    out = run(t)
                out = out.float().permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (N, Y, X, C)
            except torch.cuda.OutOfMemoryError:
                if batch == 1:
                    raise
                batch = max(1, batch // 2)
                torch.cuda.empty_cache()
                continue
            if acc is None:
                acc = np.zeros((py, px, out.shape[-1]), dtype=np.float32)
            for (y0, x0), o in zip(part, out, strict=True):
                acc[y0 : y0 + tile, x0 : x0 + tile] += o * win
                wsum[y0 : y0 + tile, x0 : x0 + tile] += win
            i += nb
            done += nb
            yield Progress(done, len(boxes), "synthesis")
    res = acc / wsum
    return np.ascontiguousarray(np.moveaxis(res[:ny, :nx], -1, 0))


def infer(
    model, x, opts: InferenceOptions = InferenceOptions(), pad_value: float = 1.0
) -> np.ndarray:
    """Run a model over an image: :func:`iter_infer` run to the end.

    Parameters
    ----------
    model : torch.nn.Module
        The generator.
    x : ndarray
        ``(C, Y, X)`` float32 input.
    opts : InferenceOptions
        Tiling, device, precision.
    pad_value : float
        Input value beyond the image.

    Returns
    -------
    ndarray
        ``(out_C, Y, X)`` float32 output.
    """
    return run_to_end(iter_infer(model, x, opts, pad_value))


def to_rgb_uint8(out: np.ndarray) -> np.ndarray:
    """Convert generator output to an RGB image.

    Parameters
    ----------
    out : ndarray
        ``(C, Y, X)`` in [-1, 1]; the first three channels are used.

    Returns
    -------
    ndarray
        ``(Y, X, 3)`` uint8, ``(v + 1) * 127.5`` rounded and clipped.
    """
    return np.clip(np.round((np.moveaxis(out[:3], 0, -1) + 1.0) * 127.5), 0, 255).astype(np.uint8)
