"""One type for every MSI -> H&E mapping: :class:`Alignment`.

Whatever a mapping comes from, it answers ``moving_to_fixed`` (MSI world um -> H&E world um) and
``fixed_to_moving`` (back), both on ``(N, 2)`` (y, x) micrometre points:

- a registration: :class:`~napari_msi2hist.registration.transforms.Transform`;
- a phantom's truth: :class:`~napari_msi2hist.registration.truth.PhantomTransform`;
- a pairs-file entry: :func:`napari_msi2hist.models.pairs.alignment_of_entry` (one of the above,
  or a :class:`LinearAlignment` for ``aligned`` and for landmarks);
- landmarks: :meth:`LinearAlignment.from_landmarks` (the one fitter,
  :func:`~napari_msi2hist.registration.landmarks.fit_linear`);
- napari layers as displayed: a :class:`LinearAlignment` of the layers' affines
  (``widgets.training.displayed_msi_to_he``).

Code that samples one image on another's grid takes the alignment object itself
(:mod:`napari_msi2hist.registration.grid`), never a bare function or matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Alignment(Protocol):
    """An MSI (moving) -> H&E (fixed) mapping of world points, (y, x) um, both ways."""

    def moving_to_fixed(self, points_yx_um) -> np.ndarray:
        """Map moving (MSI) world points to fixed (H&E) world points.

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` points, (y, x) in um.

        Returns
        -------
        ndarray
            ``(N, 2)`` fixed points, yx um.
        """
        ...

    def fixed_to_moving(self, points_yx_um) -> np.ndarray:
        """Map fixed (H&E) world points to moving (MSI) world points.

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` points, (y, x) in um.

        Returns
        -------
        ndarray
            ``(N, 2)`` moving points, yx um.
        """
        ...


@dataclass(frozen=True)
class LinearAlignment:
    """A linear MSI -> H&E mapping: a 3x3 homogeneous (y, x) matrix, moving um -> fixed um."""

    matrix_yx_um: np.ndarray

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix_yx_um, dtype=np.float64)
        if m.shape != (3, 3):
            raise ValueError(f"a linear alignment needs a 3x3 matrix, not {m.shape}")
        object.__setattr__(self, "matrix_yx_um", m)

    @classmethod
    def identity(cls) -> LinearAlignment:
        """Map nothing: the MSI already lies on the H&E (a pairs entry's ``aligned``).

        Returns
        -------
        LinearAlignment
        """
        return cls(np.eye(3))

    @classmethod
    def from_affine(cls, a: np.ndarray, t: np.ndarray) -> LinearAlignment:
        """Build ``fixed = a @ moving + t``.

        Parameters
        ----------
        a : ndarray
            2x2 (y, x) matrix.
        t : ndarray
            Offset (y, x) um.

        Returns
        -------
        LinearAlignment
        """
        m = np.eye(3)
        m[:2, :2], m[:2, 2] = a, t
        return cls(m)

    @classmethod
    def from_landmarks(cls, moving_yx_um, fixed_yx_um) -> LinearAlignment:
        """Least-squares affine through paired landmarks (the project's one landmark fitter).

        Parameters
        ----------
        moving_yx_um, fixed_yx_um : array_like
            ``(N, 2)`` paired points (at least 3), MSI and H&E world, yx um.

        Returns
        -------
        LinearAlignment
        """
        from .landmarks import fit_linear

        return cls(
            fit_linear(np.asarray(moving_yx_um, float), np.asarray(fixed_yx_um, float), "affine")
        )

    def moving_to_fixed(self, points_yx_um) -> np.ndarray:
        """Map moving (MSI) world points to fixed (H&E) world points.

        The identity returns the points themselves, as an ``aligned`` pair always has.

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` points, (y, x) in um.

        Returns
        -------
        ndarray
            ``(N, 2)`` fixed points, yx um.
        """
        m = self.matrix_yx_um
        if np.array_equal(m, np.eye(3)):
            return points_yx_um
        return np.asarray(points_yx_um) @ m[:2, :2].T + m[:2, 2]

    def fixed_to_moving(self, points_yx_um) -> np.ndarray:
        """Map fixed (H&E) world points to moving (MSI) world points.

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` points, (y, x) in um.

        Returns
        -------
        ndarray
            ``(N, 2)`` moving points, yx um.
        """
        inv = np.linalg.inv(self.matrix_yx_um)
        return np.asarray(points_yx_um, float) @ inv[:2, :2].T + inv[:2, 2]


def landmark_transform(moving_yx_um, fixed_yx_um):
    """Register by landmarks alone: the affine through them as a registration result.

    What ``msi2hist register --landmarks-use fit`` and the Register widget's "Fit from landmarks"
    both give (route ``landmarks``).

    Parameters
    ----------
    moving_yx_um, fixed_yx_um : array_like
        ``(N, 2)`` paired points (at least 3), MSI and H&E world, yx um.

    Returns
    -------
    Transform
        A linear :class:`~napari_msi2hist.registration.transforms.Transform`.
    """
    from .transforms import Transform

    m = LinearAlignment.from_landmarks(moving_yx_um, fixed_yx_um).matrix_yx_um
    return Transform.from_moving_to_fixed_matrix(m, {"route": "landmarks", "stages": ["affine"]})


def as_alignment(mapping) -> Alignment:
    """Return an :class:`Alignment` for an alignment or a 3x3 moving -> fixed (y, x) matrix.

    Parameters
    ----------
    mapping : Alignment or array_like
        Returned as it is, or wrapped as a :class:`LinearAlignment`.

    Returns
    -------
    Alignment
    """
    if isinstance(mapping, Alignment):
        return mapping
    if callable(mapping):
        raise TypeError("give an Alignment (registration.alignment), not a function")
    return LinearAlignment(np.asarray(mapping, dtype=np.float64))


def require_alignment(alignment) -> Alignment:
    """Return ``alignment`` if it is an :class:`Alignment`; refuse a function or a matrix.

    Parameters
    ----------
    alignment : Alignment
        The mapping a sampler was given.

    Returns
    -------
    Alignment
        The same object.

    Raises
    ------
    TypeError
        It is not an alignment (wrap a 3x3 matrix with :class:`LinearAlignment` or
        :func:`as_alignment`).
    """
    if not isinstance(alignment, Alignment):
        raise TypeError(
            f"give an Alignment (registration.alignment), not {type(alignment).__name__}; "
            "wrap a 3x3 (y, x) matrix with LinearAlignment"
        )
    return alignment


def linear_matrix(alignment) -> np.ndarray:
    """Return a linear alignment's 3x3 moving -> fixed (y, x) matrix (what napari's affine takes).

    Parameters
    ----------
    alignment : Alignment
        A :class:`LinearAlignment` or a linear registration ``Transform``.

    Returns
    -------
    ndarray
        3x3 homogeneous (y, x) matrix, moving world um -> fixed world um.

    Raises
    ------
    ValueError
        The alignment is not one affine map (a B-spline, a phantom's deformation).
    """
    alignment = require_alignment(alignment)
    if isinstance(alignment, LinearAlignment):
        return alignment.matrix_yx_um
    if getattr(alignment, "is_linear", False):
        return alignment.linear_moving_to_fixed_yx()
    raise ValueError(f"{type(alignment).__name__} is not one affine map; it has no 3x3 matrix")
