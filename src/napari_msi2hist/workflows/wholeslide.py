"""Whole-slide H&E: register on the pyramid level that matches the MSI, apply tile by tile.

A 40x H&E (50,000-150,000 px on a side) never has to be in memory:

- :func:`registration_level` picks the coarsest pyramid level of the lazily opened H&E whose pixel is
  at most half the moving image's pixel (two H&E pixels per MSI or synthetic-H&E pixel; the
  registration itself works on the coarser grid of the two), and block-averages it further with dask
  when the file has no such level (a flat TIFF), reading it chunk by chunk;
- :func:`iter_apply` resamples MSI-derived layers (ion images, a synthetic H&E) onto the
  full-resolution H&E grid one tile at a time and writes a pyramidal OME-TIFF (and optionally an
  OME-Zarr) whose every level is resampled from the source directly.

Peak memory is the registration level, the moving data and a few tiles, whatever the slide's size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..progress import CancelToken, Progress
from ..registration.preprocess import centre_shift, recentre


def open_slide(path):
    """Open an H&E; a pyramidal or large file lazily, as a whole slide.

    Parameters
    ----------
    path : path-like
        The H&E file.

    Returns
    -------
    HistologyImage, bool
        The image, and whether it is a whole slide: a TIFF pyramid with more than one level, or a
        file large enough that :func:`~napari_msi2hist.io.histology.read_histology` keeps it lazy;
        RGB or grey only. Its level 0 has then not been read.
    """
    from ..io.histology import TIFF_SUFFIXES, read_histology

    levels = 1
    if str(path).lower().endswith(TIFF_SUFFIXES):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tf:
                levels = len(tf.series[0].levels)
        except Exception:  # noqa: BLE001 - read_histology reports an unreadable file
            levels = 1
    he = read_histology(path, lazy=True if levels > 1 else None)
    lv = he.levels[0]
    rgb_or_grey = lv.ndim == 2 or (lv.ndim == 3 and lv.shape[-1] in (3, 4))
    whole = rgb_or_grey and (levels > 1 or not isinstance(lv, np.ndarray))
    return he, whole


def mask_on_level(path, level0_shape, shape) -> np.ndarray:
    """Read a tissue mask drawn on the slide's level 0 (or on the registration level) at ``shape``.

    The mask is read lazily and sampled at the registration pixels' centres, never whole at level 0.

    Parameters
    ----------
    path : path-like
        The mask image (non-zero = inside).
    level0_shape, shape : tuple of int
        The slide's level-0 size and the registration level's size.

    Returns
    -------
    ndarray of bool
        ``shape``.

    Raises
    ------
    ValueError
        The mask matches neither size.
    """
    from ..io.histology import read_histology

    m = read_histology(path, lazy=True).levels[0]
    got = tuple(m.shape[:2])
    if got not in (tuple(level0_shape), tuple(shape)):
        raise ValueError(
            f"{path}: mask is {got[0]}x{got[1]} px, its image {level0_shape[0]}x{level0_shape[1]} "
            f"px (or {shape[0]}x{shape[1]} px, the registration level)"
        )
    if got != tuple(shape):
        iy = ((np.arange(shape[0]) + 0.5) * got[0] / shape[0]).astype(int)
        ix = ((np.arange(shape[1]) + 0.5) * got[1] / shape[1]).astype(int)
        m = m[iy][:, ix]
    a = np.asarray(m)
    return (a.max(-1) if a.ndim == 3 else a) > 0


def level_pixel_sizes(he, he_px) -> list[tuple[float, float]]:
    """Return the pixel size of every pyramid level of an H&E.

    Parameters
    ----------
    he : HistologyImage
        The H&E with its pyramid levels.
    he_px : tuple of float
        Level 0's pixel size (y, x) in um.

    Returns
    -------
    list of tuple of float
        ``(y, x)`` um per level, from each level's size relative to level 0.
    """
    y0, x0 = he.levels[0].shape[:2]
    return [(he_px[0] * y0 / lv.shape[0], he_px[1] * x0 / lv.shape[1]) for lv in he.levels]


def _level_and_factor(sizes, target: float) -> tuple[int, int]:
    """Choose the level and the block-averaging factor for a wanted pixel.

    The coarsest level whose pixel is at most ``target`` (level 0 when none is), and the integer
    factor that brings it closest to ``target`` from below.
    """
    usable = [i for i, p in enumerate(sizes) if max(p) <= target * 1.001] or [0]
    li = usable[-1]
    # a hair above 1 so that a pixel of exactly ``target`` / n is not floored to n - 1
    return li, max(1, int(math.floor(target / max(sizes[li]) * (1 + 1e-9))))


def _read_level(
    lv, f: int, name, what: str = "the H&E registration level", shift=(0.0, 0.0)
) -> np.ndarray:
    """Read one (lazy) level, block-averaged ``f`` x ``f`` with dask, as uint8 RGB.

    ``shift`` (pixels of the result, from ``registration.preprocess.centre_shift``) moves the
    content back so that pixel ``i`` holds the H&E at ``i * px``, the point its grid says it shows.
    """
    import dask
    import dask.array as da
    import dask.threaded

    from .._limits import check_allocation
    from ..io.histology import to_uint8_rgb

    a = da.asarray(lv)[..., :3] if lv.ndim == 3 else da.asarray(lv)
    if f > 1:
        h, w = a.shape[0] // f * f, a.shape[1] // f * f
        # coarsen rechunks: named method, or dask imports `distributed` to look for a client
        with dask.config.set({"array.rechunk.method": "tasks"}):
            a = da.coarsen(np.mean, a[:h, :w].astype(np.float32), {0: f, 1: f})
    check_allocation(4.0 * np.prod(a.shape), what, name)
    # a local threaded read, named as a function: a scheduler left to dask (or named by a string)
    # imports `distributed` to look for a client, about a second of imports that stalls a viewer's
    # GUI thread when this runs in the Register widget's worker
    arr = np.asarray(a.compute(scheduler=dask.threaded.get))
    if f > 1 and lv.dtype == np.uint8:
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if max(abs(v) for v in shift) > 1e-3:
        arr = recentre(arr, shift)
        if lv.dtype == np.uint8:
            arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return to_uint8_rgb(arr)


def registration_level(he, he_px, moving_px_um: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Read the H&E as uint8 RGB at about half the moving pixel size, without loading level 0.

    Parameters
    ----------
    he : HistologyImage
        Opened with ``read_histology`` (levels may be lazy dask arrays).
    he_px : tuple of float
        Level-0 pixel size (yx um).
    moving_px_um : float
        The moving image's pixel (the MSI's, or the synthetic H&E's working pixel).

    Returns
    -------
    ndarray, tuple of float
        ``(Y, X, 3)`` uint8 and its pixel size (yx um).
    """
    sizes = level_pixel_sizes(he, he_px)
    li, f = _level_and_factor(sizes, moving_px_um / 2.0)
    px = (float(sizes[li][0] * f), float(sizes[li][1] * f))
    shift = centre_shift(sizes[0], px)
    return _read_level(he.levels[li], f, he.path, shift=shift), px


@dataclass(frozen=True)
class LevelGrid:
    """A grid on an H&E pyramid: level ``level`` block-averaged ``factor`` x ``factor``.

    Its pixel ``(i, j)`` is at ``(i * px[0], j * px[1])`` um in the H&E's world, as napari shows a
    layer of that scale, so an image on this grid overlays the H&E layer.
    """

    level: int
    factor: int
    shape: tuple[int, int]
    px: tuple[float, float]
    level0_px: tuple[float, float] | None = None  # None: px (a grid on level 0 itself)


def level_grid(level_shapes, level0_px, pixel_um: float | None = None, max_side: int = 4096):
    """Choose the grid on which to show an image over an H&E pyramid, without reading it.

    Parameters
    ----------
    level_shapes : list of tuple of int
        Every level's shape, level 0 first (a flat image: one level).
    level0_px : tuple of float
        Level 0's pixel size (yx um).
    pixel_um : float, optional
        The wanted pixel (the registration's); the grid is the one :func:`registration_level`
        reads for it. Default: level 0's.
    max_side : int
        A grid with a longer side is coarsened (a coarser level, else a larger factor), so that a
        whole slide's level 0 is never the grid.

    Returns
    -------
    LevelGrid
    """
    n0 = level_shapes[0][:2]
    sizes = [(level0_px[0] * n0[0] / s[0], level0_px[1] * n0[1] / s[1]) for s in level_shapes]
    li, f = _level_and_factor(sizes, pixel_um) if pixel_um else (0, 1)
    if max(level_shapes[li][:2]) // f > max_side:
        # the first level at most twice too big (its read stays bounded), block-averaged to fit
        fits = [i for i in range(li, len(sizes)) if max(level_shapes[i][:2]) <= 2 * max_side]
        li2 = fits[0] if fits else len(sizes) - 1
        f = max(f if li2 == li else 1, math.ceil(max(level_shapes[li2][:2]) / max_side))
        li = li2
    shape = (int(level_shapes[li][0]) // f, int(level_shapes[li][1]) // f)
    px = (float(sizes[li][0] * f), float(sizes[li][1] * f))
    return LevelGrid(li, f, shape, px, (float(level0_px[0]), float(level0_px[1])))


def read_grid(levels, grid: LevelGrid, name: str = "the H&E") -> np.ndarray:
    """Read an H&E on a :class:`LevelGrid`: its level, block-averaged.

    Parameters
    ----------
    levels : list of array-like
        The H&E's levels, level 0 first (lazy or not); only ``grid.level`` is read.
    grid : LevelGrid
        From :func:`level_grid`.
    name : str
        Named in a memory-limit error.

    Returns
    -------
    ndarray
        ``(*grid.shape, 3)`` uint8 RGB.
    """
    return _read_level(
        levels[grid.level],
        grid.factor,
        name,
        "the H&E on the overlay grid",
        shift=centre_shift(grid.level0_px or grid.px, grid.px),
    )


def registration_level_of_levels(
    levels, level0_px, moving_px_um: float, fixed_mask=None, name: str = "the H&E"
):
    """:func:`registration_level` for a viewer's multiscale layer (its list of lazy levels).

    Parameters
    ----------
    levels : list of array-like
        The pyramid, level 0 first (numpy or dask; only the chosen level is read).
    level0_px : tuple of float
        Level 0's pixel size (yx um).
    moving_px_um : float
        The moving image's pixel.
    fixed_mask : array-like of bool, optional
        A tissue mask on level 0's grid, sampled onto the registration level.
    name : str
        Named in a memory-limit error.

    Returns
    -------
    ndarray, tuple of float, ndarray or None
        The ``(Y, X, 3)`` uint8 registration level, its pixel (yx um) and the mask on it.
    """
    from types import SimpleNamespace

    rgb, px = registration_level(
        SimpleNamespace(levels=list(levels), path=name), level0_px, moving_px_um
    )
    mask = None
    if fixed_mask is not None:
        m = fixed_mask
        n0, shape = levels[0].shape[:2], rgb.shape[:2]
        iy = ((np.arange(shape[0]) + 0.5) * n0[0] / shape[0]).astype(int)
        ix = ((np.arange(shape[1]) + 0.5) * n0[1] / shape[1]).astype(int)
        mask = np.asarray(m[iy][:, ix]) != 0
    return rgb, px, mask


def iter_apply(
    transform,
    moving: np.ndarray,
    moving_px,
    fixed_shape_yx,
    fixed_px,
    out_tiff: str | os.PathLike,
    out_zarr: str | os.PathLike | None = None,
    channel_names: list[str] | None = None,
    tile: int = 512,
    compression: str | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, list[Path]]:
    """Resample ``moving`` onto the fixed grid tile by tile; write pyramidal OME-TIFF (+ OME-Zarr).

    Parameters
    ----------
    transform : Transform
        Fixed world -> moving world (the registration result).
    moving : ndarray
        ``(C, Y, X)`` float layers (ion images; written float32) or ``(Y, X, 3)`` uint8 RGB (a
        synthetic H&E; written uint8 RGB).
    moving_px, fixed_px : tuple of float
        Pixel sizes (yx um).
    fixed_shape_yx : tuple of int
        The full-resolution H&E size.
    out_tiff, out_zarr : path-like
        Outputs (``out_zarr`` optional).
    compression : str, optional
        OME-TIFF tile compression; default ``jpeg`` (quality 90, as in SVS scans) for RGB and
        lossless ``zlib`` with a predictor for float layers.
    channel_names : list of str, optional
        Channel names written in the OME metadata (float layers only).
    tile : int
        Tile size in pixels of the written pyramids (and of the resampled regions).
    cancel : CancelToken, optional
        Checked between tiles; a cancelled write leaves no output behind.

    Yields
    ------
    Progress
        Tiles written, per output file.

    Returns
    -------
    list of Path
        The files written.
    """
    from ..io.ome_pyramid import iter_write_ome_tiff, iter_write_ome_zarr
    from ..registration.resample import RegionResampler

    moving = np.asarray(moving)
    rgb = moving.ndim == 3 and moving.shape[-1] == 3 and moving.dtype == np.uint8
    if rgb:
        resamplers = [RegionResampler(transform, moving, moving_px)]
        channels, dtype = None, np.uint8
    else:
        stack = moving if moving.ndim == 3 else moving[None]
        resamplers = [RegionResampler(transform, c, moving_px) for c in stack]
        channels, dtype = len(stack), np.float32

    def region(level, c, y0, x0, h, w):
        s = 2.0**level
        t = resamplers[0 if c is None else c].region(
            y0, x0, (h, w), (fixed_px[0] * s, fixed_px[1] * s)
        )
        return np.clip(np.round(t), 0, 255).astype(np.uint8) if rgb else t

    args = (region, fixed_shape_yx, fixed_px, channels, dtype, channel_names)
    comp = compression or ("jpeg" if rgb else "zlib")
    out = [
        (
            yield from iter_write_ome_tiff(
                out_tiff, *args, tile=tile, compression=comp, cancel=cancel
            )
        )
    ]
    if out_zarr is not None:
        out.append((yield from iter_write_ome_zarr(out_zarr, *args, tile=tile, cancel=cancel)))
    return out


__all__ = [
    "LevelGrid",
    "iter_apply",
    "level_grid",
    "level_pixel_sizes",
    "mask_on_level",
    "open_slide",
    "read_grid",
    "registration_level",
    "registration_level_of_levels",
]
