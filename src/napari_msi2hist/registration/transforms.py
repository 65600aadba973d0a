"""Coordinate conventions and point transforms. The ONLY module that converts xy<->yx and px<->um.

Conventions (also in docs/conventions.md):

- napari and numpy index images as ``(row, col)`` = ``yx``. SimpleITK and ITK files use ``xy``.
- World coordinates are micrometres: ``world_yx_um = index_yx_px * pixel_size_yx_um`` (pixel centres at
  integer indices, napari's ``scale`` with zero ``translate``).
- A transform named ``moving_to_fixed`` maps points given in the moving image's world frame to the
  fixed image's world frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def px_to_um(points_yx_px, pixel_size_yx_um) -> np.ndarray:
    return np.asarray(points_yx_px, dtype=np.float64) * np.asarray(
        pixel_size_yx_um, dtype=np.float64
    )


def um_to_px(points_yx_um, pixel_size_yx_um) -> np.ndarray:
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


def rotation_scale_matrix_yx(angle_deg: float, scale: float = 1.0) -> np.ndarray:
    """2x2 matrix acting on (y, x) column vectors: counter-clockwise rotation as seen in napari
    (y down), times an isotropic scale."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    # in xy with y down, [[c, s], [-s, c]] rotates visually anticlockwise; swap to yx
    m_xy = np.array([[c, s], [-s, c]])
    return scale * yx_to_xy(m_xy)


@dataclass
class DisplacementField:
    """A smooth displacement sampled on a regular grid of the source frame (yx, um).

    ``values[r, c]`` is the (dy, dx) displacement in um at source point
    ``origin_yx_um + (r, c) * spacing_yx_um``; between samples it is interpolated bilinearly,
    beyond the grid the nearest edge value holds.
    """

    values: np.ndarray  # (ny, nx, 2)
    spacing_yx_um: tuple[float, float]
    origin_yx_um: tuple[float, float] = (0.0, 0.0)

    def __call__(self, points_yx_um: np.ndarray) -> np.ndarray:
        from scipy.ndimage import map_coordinates

        p = np.atleast_2d(np.asarray(points_yx_um, dtype=np.float64))
        g = (p - np.asarray(self.origin_yx_um)) / np.asarray(self.spacing_yx_um)
        out = np.empty_like(p)
        for k in range(2):
            out[:, k] = map_coordinates(self.values[..., k], g.T, order=1, mode="nearest")
        return out

    def rms(self) -> float:
        return float(np.sqrt((self.values**2).sum(-1).mean()))


@dataclass
class PhantomTransform:
    """``fixed = A @ moving + t + D(moving)`` with (y, x) points in um; invertible numerically."""

    matrix_yx: np.ndarray
    offset_yx_um: np.ndarray
    displacement: DisplacementField | None = None

    def forward(self, points_yx_um) -> np.ndarray:
        p = np.atleast_2d(np.asarray(points_yx_um, dtype=np.float64))
        q = p @ self.matrix_yx.T + self.offset_yx_um
        if self.displacement is not None:
            q = q + self.displacement(p)
        return q

    def inverse(self, points_yx_um, tol_um: float = 1e-7, max_iter: int = 200) -> np.ndarray:
        q = np.atleast_2d(np.asarray(points_yx_um, dtype=np.float64))
        ainv = np.linalg.inv(self.matrix_yx)
        base = (q - self.offset_yx_um) @ ainv.T
        if self.displacement is None:
            return base
        p = base.copy()
        for _ in range(max_iter):
            p_new = base - self.displacement(p) @ ainv.T
            if np.abs(p_new - p).max() < tol_um:
                return p_new
            p = p_new
        return p
