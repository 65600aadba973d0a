"""napari points CSV files: landmarks and point lists in world micrometres.

The layout is napari's own Points writer: a header ``index,axis-0,axis-1`` and one row per point
with world (y, x) coordinates in micrometres.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._files import write_text_atomic


def write_points_csv(path: str | os.PathLike, points_yx_um: np.ndarray) -> None:
    """Write points as a napari points CSV, atomically.

    The columns are ``index,axis-0,axis-1``, with world (y, x) coordinates in micrometres, as napari
    saves a Points layer.

    Parameters
    ----------
    path : path-like
        The CSV to write.
    points_yx_um : array_like
        ``(N, 2)`` points, (y, x) in um.
    """
    path = Path(path)
    lines = ["index,axis-0,axis-1"] + [
        f"{i},{float(p[0])!r},{float(p[1])!r}"
        for i, p in enumerate(np.asarray(points_yx_um, float))
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_points_csv(path: str | os.PathLike) -> np.ndarray:
    """Read a napari points CSV (``index,axis-0,axis-1``).

    Parameters
    ----------
    path : path-like
        The CSV; the ``axis-0`` and ``axis-1`` columns are read, others ignored, blank lines
        skipped.

    Returns
    -------
    ndarray
        ``(N, 2)`` float64 (y, x) points in world units (um for a layer with a physical scale).

    Raises
    ------
    ValueError
        Not UTF-8 text, empty, missing the axis columns, a cell that is not a number, or
        NaN/infinite coordinates (the message names the file and line).
    """
    path = Path(path)
    try:
        rows = path.read_text(encoding="utf-8").strip().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (UTF-8) points CSV") from None
    if not rows:
        raise ValueError(f"{path}: empty; not a napari points CSV")
    header = [h.strip() for h in rows[0].split(",")]
    try:
        iy, ix = header.index("axis-0"), header.index("axis-1")
    except ValueError:
        raise ValueError(
            f"{path}: not a napari points CSV (needs columns axis-0, axis-1)"
        ) from None
    pts = []
    for n, r in enumerate(rows[1:], start=2):
        if not r.strip():
            continue
        cells = r.split(",")
        try:
            pts.append([float(cells[iy]), float(cells[ix])])
        except (IndexError, ValueError):
            raise ValueError(f"{path}: line {n}: expected numbers in axis-0, axis-1") from None
    out = np.array(pts, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(out).all():
        raise ValueError(f"{path}: holds NaN or infinite coordinates")
    return out
