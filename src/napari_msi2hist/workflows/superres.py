"""The super-resolve job: ion images + their registered H&E -> ion images on a finer grid.

Shared by ``msi2hist superres`` and the Super-resolve widget (seed 004's H&E-guided
super-resolution). Pixels that were not measured, and NaN, enter as 0 in both.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from ..crossmodal.superres import default_factor, guide_on_fine_grid, iter_superresolve
from ..progress import CancelToken, Progress
from ..registration.alignment import Alignment

MIN_COVERAGE = 0.05  # below this fraction of the fine grid covered by the H&E: refuse


@dataclass
class SuperresResult:
    """A super-resolved stack with its guide and grid."""

    images: np.ndarray  # (C, Y f, X f) float32
    guide: np.ndarray  # (Y f, X f, 3) uint8: the H&E on the fine grid
    coverage: float  # fraction of the fine grid the H&E covers
    pixel_size_um: float  # fine pixel
    factor: int
    method: str


def iter_superres_job(
    stack: np.ndarray,
    he_rgb: np.ndarray,
    he_px: tuple[float, float],
    alignment: Alignment,
    msi_px: tuple[float, float],
    factor: int | None = None,
    method: str = "learned",
    model: str = "superres",
    mask: np.ndarray | None = None,
    source: str = "the MSI",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, SuperresResult]:
    """Super-resolve ion images guided by their registered H&E.

    Parameters
    ----------
    stack : ndarray
        ``(C, Y, X)`` or ``(Y, X)`` ion images.
    he_rgb : ndarray
        ``(Y, X, 3)`` uint8 H&E.
    he_px, msi_px : tuple of float
        Pixel sizes (um, (y, x)); never assumed.
    alignment : Alignment
        MSI -> H&E (:mod:`napari_msi2hist.registration.alignment`).
    factor : int, optional
        Upsampling factor (default: MSI pixel / H&E pixel, rounded).
    method : {"learned", "guided", "bicubic"}
        ``learned`` (the bundled or given network), ``guided`` (guided filter) or ``bicubic``.
    model : str
        The learned method's model (``superres``: the bundled one).
    mask : ndarray of bool, optional
        Measured MSI pixels; others enter as 0.
    source : str
        Named in errors (the imzML file or the layer).
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        One per ion image super-resolved.

    Returns
    -------
    SuperresResult
    """
    from .._limits import check_allocation

    if he_px is None or msi_px is None:
        raise ValueError(f"{source}: super-resolution needs the pixel sizes of the MSI and the H&E")
    stack = np.asarray(stack, np.float32)
    stack = stack if stack.ndim == 3 else stack[None]
    factor = int(factor or default_factor(msi_px, he_px))
    if factor < 1:
        raise ValueError(f"factor {factor}: give a positive integer")
    n_fine = float(stack.shape[1] * factor) * float(stack.shape[2] * factor)
    check_allocation(4.0 * n_fine * (2 * len(stack) + 3), f"a {factor}x finer grid", source)
    guide, coverage, fine_px = guide_on_fine_grid(
        he_rgb, he_px, alignment, stack.shape[1:], msi_px, factor
    )
    if coverage < MIN_COVERAGE:
        raise ValueError(
            f"{source}: the H&E covers {100 * coverage:.1f}% of the MSI; register them first"
        )
    keep = np.isfinite(stack) & (True if mask is None else np.asarray(mask, bool)[None])
    hr = yield from iter_superresolve(
        np.where(keep, stack, 0.0), guide, factor, method, model, cancel=cancel
    )
    return SuperresResult(hr, guide, coverage, fine_px, factor, method)
