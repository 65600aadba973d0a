"""A phantom's ground truth: the known MSI -> H&E transform and its file (``truth.json``).

:class:`PhantomTransform` (``fixed = A @ moving + t + D(moving)``, with the smooth deformation a
:class:`DisplacementField`; an :class:`~napari_msi2hist.registration.alignment.Alignment`) is what pairs files (``align: {truth: ...}``), tests and benchmarks use
as an alignment; :func:`load_truth` reads it back. Both are re-exported by
:mod:`napari_msi2hist.registration.transforms`, their earlier home.

The file is written by :mod:`napari_msi2hist.phantom.truth`; it is read here, so that the methods
(models, registration) can use a known transform without importing the phantom generator.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRUTH_FORMAT = "napari-msi2hist phantom truth v1"


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
        """Interpolate the displacement at points (bilinear, nearest edge value outside the grid).

        Parameters
        ----------
        points_yx_um : ndarray
            ``(N, 2)`` points, yx um.

        Returns
        -------
        ndarray
            ``(N, 2)`` displacements, yx um.
        """
        from scipy.ndimage import map_coordinates

        p = np.atleast_2d(np.asarray(points_yx_um, dtype=np.float64))
        g = (p - np.asarray(self.origin_yx_um)) / np.asarray(self.spacing_yx_um)
        out = np.empty_like(p)
        for k in range(2):
            out[:, k] = map_coordinates(self.values[..., k], g.T, order=1, mode="nearest")
        return out

    def rms(self) -> float:
        """Return the root-mean-square displacement.

        Returns
        -------
        float
            RMS length of the sampled displacement vectors, in um.
        """
        return float(np.sqrt((self.values**2).sum(-1).mean()))


@dataclass
class PhantomTransform:
    """``fixed = A @ moving + t + D(moving)`` with (y, x) points in um; invertible numerically."""

    matrix_yx: np.ndarray
    offset_yx_um: np.ndarray
    displacement: DisplacementField | None = None

    def forward(self, points_yx_um) -> np.ndarray:
        """Map moving (MSI) world points to fixed (H&E) world points.

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` or ``(2,)`` points, (y, x) in um.

        Returns
        -------
        ndarray
            ``(N, 2)`` ``A @ p + t + D(p)``, yx um.
        """
        p = np.atleast_2d(np.asarray(points_yx_um, dtype=np.float64))
        q = p @ self.matrix_yx.T + self.offset_yx_um
        if self.displacement is not None:
            q = q + self.displacement(p)
        return q

    def inverse(self, points_yx_um, tol_um: float = 1e-7, max_iter: int = 200) -> np.ndarray:
        """Map fixed (H&E) world points back to moving (MSI) world points.

        Exact for a linear transform; with a displacement, by fixed-point iteration from the linear
        inverse.

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` or ``(2,)`` points, (y, x) in um.
        tol_um : float
            Stop when an iteration moves no point by more than this.
        max_iter : int
            Iteration limit (the last iterate is returned).

        Returns
        -------
        ndarray
            ``(N, 2)`` moving points, yx um.
        """
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

    # the project's one MSI -> H&E mapping type (registration.alignment.Alignment)
    def moving_to_fixed(self, points_yx_um) -> np.ndarray:
        """Map moving (MSI) world points to fixed (H&E) world points (:meth:`forward`).

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` or ``(2,)`` points, (y, x) in um.

        Returns
        -------
        ndarray
            ``(N, 2)`` fixed points, yx um.
        """
        return self.forward(points_yx_um)

    def fixed_to_moving(self, points_yx_um) -> np.ndarray:
        """Map fixed (H&E) world points to moving (MSI) world points (:meth:`inverse`).

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` or ``(2,)`` points, (y, x) in um.

        Returns
        -------
        ndarray
            ``(N, 2)`` moving points, yx um.
        """
        return self.inverse(points_yx_um)


def load_truth(path: str | os.PathLike) -> PhantomTransform:
    """Read the MSI-to-H&E transform stored in a phantom's ``truth.json``.

    Parameters
    ----------
    path : path-like
        The ``truth.json``.

    Returns
    -------
    PhantomTransform
        ``.forward`` maps MSI world um to H&E world um (linear part plus the smooth deformation),
        ``.inverse`` maps back.

    Raises
    ------
    ValueError
        Not UTF-8 JSON, not a phantom truth file (its ``format``), or incomplete (the message names
        the file).
    """
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (UTF-8) JSON file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(d, dict) or d.get("format") != TRUTH_FORMAT:
        d = d if isinstance(d, dict) else {}
        raise ValueError(f"{path}: not a phantom truth file (format {d.get('format')!r})")
    try:
        disp = None
        if d.get("deformation"):
            df = d["deformation"]
            disp = DisplacementField(
                np.asarray(df["displacement_yx_um"], dtype=np.float64),
                tuple(df["spacing_yx_um"]),
                tuple(df["origin_yx_um"]),
            )
        return PhantomTransform(
            np.asarray(d["linear"]["matrix_yx_um"]), np.asarray(d["linear"]["offset_yx_um"]), disp
        )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"{path}: incomplete truth file ({type(e).__name__}: {e})") from None
