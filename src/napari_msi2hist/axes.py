"""Axis order and units: the one place that converts between (y, x) and (x, y) and between pixels
and micrometres.

napari and numpy index images as (row, col) = (y, x); SimpleITK, elastix, GeoJSON and SpatialData
use (x, y). Names say which: ``points_yx_px``, ``matrix_yx_um``. Everything that crosses that border
goes through these functions (``registration.transforms`` re-exports them). Bottom layer: numpy only.
"""

from __future__ import annotations

import numpy as np


def px_to_um(points_yx_px, pixel_size_yx_um) -> np.ndarray:
    """Pixel positions ``(N, 2)`` (y, x) to micrometres, given the pixel size (y, x) in um."""
    return np.asarray(points_yx_px, dtype=np.float64) * np.asarray(
        pixel_size_yx_um, dtype=np.float64
    )


def um_to_px(points_yx_um, pixel_size_yx_um) -> np.ndarray:
    """Micrometre positions ``(N, 2)`` (y, x) to pixels, given the pixel size (y, x) in um."""
    return np.asarray(points_yx_um, dtype=np.float64) / np.asarray(
        pixel_size_yx_um, dtype=np.float64
    )


def yx_to_xy(a) -> np.ndarray:
    """Swap the last axis of points (N, 2) or a 2x2 matrix between yx and xy order."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape == (2, 2):
        return a[::-1, ::-1].copy()
    return a[..., ::-1].copy()


xy_to_yx = yx_to_xy
