"""What the Register widget shows of a registration, computed off the GUI thread.

A linear result is shown by the layers' ``affine`` alone. A deformable (B-spline) one also needs the
moving image resampled onto the H&E's grid, and the checkerboard needs the H&E's optical density and
that resampled image: on a whole slide both would be level 0's size (gigapixels). Here they are made
on a bounded grid of the pyramid (:func:`~napari_msi2hist.workflows.wholeslide.level_grid`: the
level the registration used, at most ``MAX_SIDE`` px on a side) in the job's worker thread, so that
the GUI thread only assigns the prepared arrays and scales to layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registration.pipeline import RegistrationResult, checkerboard
from .wholeslide import LevelGrid, level_grid, read_grid

MAX_SIDE = 4096  # px: an overlay's longest side (a 4096 px float32 image is 64 MB)


@dataclass
class RegisteredView:
    """A registration result with the images that show it, ready for layers.

    ``warped`` (deformable results) is float32 on ``grid`` and ``checker`` (when asked for) on
    ``checker_grid`` (the same grid unless the H&E layer changed); a grid's ``px`` is the layer's
    scale (um).
    """

    result: RegistrationResult
    grid: LevelGrid
    warped: np.ndarray | None = None
    checker: np.ndarray | None = None
    checker_grid: LevelGrid | None = None


def overlay_grid(result: RegistrationResult, level_shapes, level0_px, max_side: int | None = None):
    """Return the grid on which a result is shown: the registration's own pixel, bounded in size.

    Parameters
    ----------
    result : RegistrationResult
        Its ``transform.meta["registration_fixed_pixel_um"]`` (set by the register job) is the
        pixel the H&E was registered at; without it, level 0's.
    level_shapes : list of tuple of int
        The H&E's levels' shapes (a flat image: one).
    level0_px : tuple of float
        Level 0's pixel (yx um).
    max_side : int, optional
        The grid's longest side at most (default :data:`MAX_SIDE`).

    Returns
    -------
    LevelGrid
    """
    reg_px = result.transform.meta.get("registration_fixed_pixel_um")
    return level_grid(
        level_shapes,
        level0_px,
        float(max(reg_px)) if reg_px else None,
        MAX_SIDE if max_side is None else max_side,
    )


def registered_on_grid(result: RegistrationResult, grid: LevelGrid) -> np.ndarray:
    """Resample the registered moving image (what was registered) onto ``grid``.

    Parameters
    ----------
    result : RegistrationResult
        Its transform, ``moving_image`` and ``moving_px``.
    grid : LevelGrid
        From :func:`overlay_grid`.

    Returns
    -------
    ndarray
        ``grid.shape`` float32, 0 outside the moving image.
    """
    return result.transform.resample_moving_to_fixed(
        result.moving_image, result.moving_px, grid.shape, grid.px
    ).astype(np.float32, copy=False)


def checkerboard_on_grid(
    result: RegistrationResult,
    levels,
    grid: LevelGrid,
    warped: np.ndarray | None = None,
    name: str = "the H&E",
) -> np.ndarray:
    """Make the checkerboard of the H&E's optical density and the registered image on ``grid``.

    Parameters
    ----------
    result : RegistrationResult
        The registration (its transform and moving image).
    levels : list of array-like
        The H&E's levels (lazy or not); only ``grid.level`` is read, block-averaged.
    grid : LevelGrid
        From :func:`overlay_grid`.
    warped : ndarray, optional
        :func:`registered_on_grid`, when already made.
    name : str
        Named in a memory-limit error.

    Returns
    -------
    ndarray
        ``grid.shape`` float32.
    """
    from ..registration.preprocess import od_image

    f = od_image(read_grid(levels, grid, name))
    w = registered_on_grid(result, grid) if warped is None else warped
    return checkerboard(f, w).astype(np.float32)


def registered_view(
    result: RegistrationResult,
    levels,
    level0_px,
    with_checker: bool = False,
    max_side: int | None = None,
) -> RegisteredView:
    """Prepare everything the viewer shows of ``result`` (run it in the job's worker).

    Parameters
    ----------
    result : RegistrationResult
        The registration.
    levels : list of array-like
        The H&E's levels, level 0 first (a flat image: one); read only for the checkerboard.
    level0_px : tuple of float
        Level 0's pixel (yx um).
    with_checker : bool
        Also make the checkerboard.
    max_side : int, optional
        The overlays' longest side at most (default :data:`MAX_SIDE`).

    Returns
    -------
    RegisteredView
    """
    grid = overlay_grid(result, [lv.shape for lv in levels], level0_px, max_side)
    view = RegisteredView(result, grid)
    if not result.transform.is_linear:
        view.warped = registered_on_grid(result, grid)
    if with_checker:
        view.checker = checkerboard_on_grid(result, levels, grid, view.warped)
        view.checker_grid = grid
    return view


@dataclass(frozen=True)
class RegisterViewRequest:
    """Everything the Register widget's job needs, picklable (it may run in a child process).

    The H&E is either ``he_rgb`` (a flat image), ``he_levels`` (a pyramid held in memory, level 0
    first) or ``he_path`` (a pyramidal file, reopened lazily by the job); ``he_px`` is level 0's
    pixel (yx um). ``moving`` is the synthetic H&E (``route="synthesis"``, with the ion stack it
    came from as ``msi_stack`` when open) or the MSI image (``route="direct"``).
    """

    he_px: tuple[float, float]
    route: str
    moving: np.ndarray
    moving_px: tuple[float, float]
    stages: tuple[str, ...]
    he_rgb: np.ndarray | None = None
    he_levels: list | None = None
    he_path: str | None = None
    he_shapes: list | None = None  # with ``he_path``: the levels' shapes the viewer showed
    fixed_mask: np.ndarray | None = None
    moving_mask: np.ndarray | None = None
    msi_stack: np.ndarray | None = None
    msi_px: tuple[float, float] | None = None
    with_checker: bool = False


def _he_levels(req: RegisterViewRequest) -> list:
    if req.he_rgb is not None:
        return [req.he_rgb]
    if req.he_levels is not None:
        return list(req.he_levels)
    if req.he_path:
        from ..io.histology import read_histology

        levels = read_histology(req.he_path, lazy=True).levels
        shapes = [tuple(lv.shape) for lv in levels]
        if req.he_shapes is not None and shapes != [tuple(s) for s in req.he_shapes]:
            raise ValueError(
                f"{req.he_path}: the file changed since it was opened (levels {shapes}, the layer "
                f"shows {[tuple(s) for s in req.he_shapes]}); open it again"
            )
        return levels
    raise ValueError("no H&E given to register to")


def iter_register_view(req: RegisterViewRequest, cancel=None):
    """Run the Register widget's job: the register workflow, then what the viewer shows of it.

    It runs ``iter_register_job`` as ``msi2hist register`` does, on the H&E level that matches the
    moving pixel (read here on a pyramid), then :func:`registered_view`.

    Parameters
    ----------
    req : RegisterViewRequest
        The images, pixel sizes, route and stages (picklable: it may run in a child process).
    cancel : CancelToken, optional
        Checked between steps.

    Yields
    ------
    Progress
        The registration's stages, then "preparing the view".

    Returns
    -------
    RegisteredView
        The result with the images that show it.
    """
    from ..progress import Progress
    from .register import RegisterConfig, RegisterInputs, iter_register_job

    if req.route == "synthesis":
        moving = {"synth": req.moving, "stack": req.msi_stack, "msi_px": req.msi_px}
    else:
        moving = {"stack": req.moving if req.moving.ndim == 3 else req.moving[None]}
    levels = _he_levels(req)
    he_rgb, he_px, fmask = req.he_rgb, req.he_px, req.fixed_mask
    if he_rgb is None:  # a pyramid: the level matching the moving pixel
        from .wholeslide import registration_level_of_levels

        he_rgb, he_px, fmask = registration_level_of_levels(
            levels, req.he_px, float(max(req.moving_px)), fmask
        )
    inp = RegisterInputs(
        he_rgb, he_px, req.moving_px, fixed_mask=fmask, moving_mask=req.moving_mask, **moving
    )
    cfg = RegisterConfig(route=req.route, stages=req.stages)
    res = yield from iter_register_job(inp, cfg, cancel=cancel)
    yield Progress(0, 1, "preparing the view")
    return registered_view(res, levels, req.he_px, req.with_checker)


# what a register job imports on first use: third-party packages whose extension modules hold the
# GIL while they load, and the registration modules (each imports more lazily)
JOB_MODULES = (
    "SimpleITK",
    "dask.array",
    "scipy.fft",
    "scipy.linalg",
    "scipy.ndimage",
    "scipy.sparse",
    "scipy.spatial",
    "skimage.exposure",
    "skimage.filters",
    "skimage.measure",
    "skimage.morphology",
    "skimage.transform",
    "napari_msi2hist.registration.alignment",
    "napari_msi2hist.registration.consensus",
    "napari_msi2hist.registration.deformable",
    "napari_msi2hist.registration.preprocess",
    "napari_msi2hist.registration.search",
    "napari_msi2hist.registration.sitk_stages",
    "napari_msi2hist.registration.tissue",
    "napari_msi2hist.registration.verdict",
    "napari_msi2hist.workflows.register",
    "napari_msi2hist.workflows.wholeslide",
)


def import_job_modules() -> None:
    """Import now what a register job would import on its first run.

    A viewer calls this when its Register widget opens. Imported later, in the job's worker thread,
    these modules (SimpleITK, dask.array, scipy and scikit-image subpackages: about 200 modules)
    hold the GIL for up to a few hundred milliseconds at a time and stall the viewer at the start
    of the first job; a missing optional package is left for the job to report.
    """
    import importlib

    for name in JOB_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


__all__ = [
    "JOB_MODULES",
    "MAX_SIDE",
    "RegisterViewRequest",
    "RegisteredView",
    "checkerboard_on_grid",
    "import_job_modules",
    "iter_register_view",
    "overlay_grid",
    "registered_on_grid",
    "registered_view",
]
