"""Pyramidal OME-TIFF and OME-Zarr written tile by tile from a function, never holding the image.

Whole-slide outputs (an MSI-derived layer on a 40x H&E grid) are far larger than memory. The writers
here ask a ``region(level, channel, y0, x0, h, w)`` function for one tile at a time, for every
pyramid level; level ``l`` has pixel size ``pixel_size_um * 2**l`` (pixel ``i`` at world
``i * pixel`` um, the project's convention) and ``ceil(size / 2**l)`` pixels, down to
``min_level_size``. Computing each level from the source (rather than by downsampling the level
above) keeps memory at one tile and is exact for resampled data. Both writers are atomic: a
temporary sibling is renamed into place when complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path

import numpy as np

from .._files import atomic_path
from ..progress import CancelToken, Progress

# region(level, channel or None for RGB, y0, x0, h, w) -> (h, w) or (h, w, 3) array
RegionFn = Callable[[int, int | None, int, int, int, int], np.ndarray]


def pyramid_shapes(shape_yx, min_level_size: int = 512) -> list[tuple[int, int]]:
    """Compute the shapes of a 2x pyramid's levels.

    Parameters
    ----------
    shape_yx : tuple of int
        Full-resolution size.
    min_level_size : int
        A level is added while the larger side of the next one stays at least this.

    Returns
    -------
    list of tuple of int
        ``ceil(shape / 2**l)`` for l = 0, 1, ...; level 0 is ``shape_yx``.
    """
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    out = [(ny, nx)]
    while max(out[-1]) // 2 >= min_level_size:
        level = len(out)
        out.append((-(-ny // 2**level), -(-nx // 2**level)))
    return out


def _tiles(shape, tile):
    for y0 in range(0, shape[0], tile):
        for x0 in range(0, shape[1], tile):
            yield y0, x0, min(tile, shape[0] - y0), min(tile, shape[1] - x0)


def _count(levels, n_planes, tile) -> int:
    return sum(n_planes * (-(-h // tile)) * (-(-w // tile)) for h, w in levels)


def iter_write_ome_tiff(
    path: str | os.PathLike,
    region: RegionFn,
    shape_yx,
    pixel_size_um,
    channels: int | None,
    dtype,
    channel_names: list[str] | None = None,
    tile: int = 512,
    min_level_size: int = 512,
    compression: str = "zlib",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, Path]:
    """Write a pyramidal OME-TIFF tile by tile; ``channels=None`` means interleaved RGB (uint8).

    Parameters
    ----------
    path : path-like
        The ``.ome.tif`` to write (atomically).
    region : callable
        ``region(level, c, y0, x0, h, w)``: the tile of channel ``c`` (``None`` for RGB).
    shape_yx : tuple of int
        Full-resolution size.
    pixel_size_um : tuple of float
        Full-resolution pixel size (yx, um).
    channels : int or None
        Number of channels (planes ``(C, Y, X)``), or None for ``(Y, X, 3)`` RGB.
    dtype : numpy dtype
        Stored type.
    tile : int
        Tile side in pixels (multiple of 16).
    compression : str
        tifffile compression (``zlib`` with a horizontal predictor, ``jpeg`` for RGB, ``none``).
    channel_names : list of str, optional
        Names written as the OME channels' names.
    min_level_size : int
        The smallest level's larger side (:func:`pyramid_shapes`).
    cancel : CancelToken, optional
        Checked between tiles; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled` and nothing is left at ``path``.

    Yields
    ------
    Progress
        Tiles written, over all levels and channels (stage ``write OME-TIFF``).

    Returns
    -------
    Path
        The written file.
    """
    import tifffile

    path = Path(path)
    levels = pyramid_shapes(shape_yx, min_level_size)
    rgb = channels is None
    n_planes = 1 if rgb else int(channels)
    total, done = _count(levels, n_planes, tile), 0
    dtype = np.dtype(dtype)

    def tiles(level):
        nonlocal done
        for c in [None] if rgb else range(n_planes):
            for y0, x0, h, w in _tiles(levels[level], tile):
                t = np.asarray(region(level, c, y0, x0, h, w))
                yield t.astype(dtype, copy=False)
                done += 1

    meta: dict = {
        "axes": "YXS" if rgb else "CYX",
        "PhysicalSizeY": float(pixel_size_um[0]),
        "PhysicalSizeYUnit": "µm",
        "PhysicalSizeX": float(pixel_size_um[1]),
        "PhysicalSizeXUnit": "µm",
    }
    if channel_names is not None:
        meta["Channel"] = {"Name": list(channel_names)}
    comp: dict = {"compression": None if compression == "none" else compression}
    if compression == "zlib":
        comp.update(compressionargs={"level": 1}, predictor=True)
    elif compression == "jpeg":
        comp.update(compressionargs={"level": 90})
    ny, nx = levels[0]
    nbytes = n_planes * ny * nx * dtype.itemsize * (3 if rgb else 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(path)
    try:
        with tifffile.TiffWriter(tmp, bigtiff=nbytes > 2**31, ome=True) as tw:
            for level, (h, w) in enumerate(levels):
                shape = (h, w, 3) if rgb else (n_planes, h, w)
                it = tiles(level)
                kw = dict(
                    shape=shape,
                    dtype=dtype,
                    tile=(tile, tile),
                    photometric="rgb" if rgb else "minisblack",
                    maxworkers=os.cpu_count(),
                    **comp,
                )
                if level == 0:
                    tw.write(it, subifds=len(levels) - 1, metadata=meta, **kw)
                else:
                    tw.write(it, subfiletype=1, metadata=None, **kw)
                if cancel is not None:
                    cancel.check()
                yield Progress(done, total, "write OME-TIFF")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def iter_write_ome_zarr(
    path: str | os.PathLike,
    region: RegionFn,
    shape_yx,
    pixel_size_um,
    channels: int | None,
    dtype,
    channel_names: list[str] | None = None,
    tile: int = 512,
    min_level_size: int = 512,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, Path]:
    """Write an OME-Zarr (NGFF 0.4, zarr format 2) multiscale image, one chunk per tile.

    Same arguments as :func:`iter_write_ome_tiff`; RGB is stored as 3 channels ``(c, y, x)``. The
    folder is written under a temporary sibling name and renamed into place.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` folder to write.
    region : callable
        ``region(level, c, y0, x0, h, w)``: the tile of channel ``c`` (``None`` for RGB).
    shape_yx : tuple of int
        Full-resolution size.
    pixel_size_um : tuple of float
        Full-resolution pixel size (yx, um), written as each level's scale.
    channels : int or None
        Number of channels, or None for RGB (stored as 3 channels).
    dtype : numpy dtype
        Stored type.
    channel_names : list of str, optional
        Names written in the OMERO channel metadata.
    tile : int
        Tile and chunk side in pixels.
    min_level_size : int
        The smallest level's larger side (:func:`pyramid_shapes`).
    cancel : CancelToken, optional
        Checked between tiles; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled` and nothing is left at ``path``.

    Yields
    ------
    Progress
        Tiles written, over all levels (stage ``write OME-Zarr``).

    Returns
    -------
    Path
        The written folder.
    """
    import zarr

    path = Path(path)
    levels = pyramid_shapes(shape_yx, min_level_size)
    rgb = channels is None
    n_planes = 3 if rgb else int(channels)
    total, done = _count(levels, 1 if rgb else n_planes, tile), 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        g = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        datasets = []
        for level, (h, w) in enumerate(levels):
            arr = g.create_array(
                str(level), shape=(n_planes, h, w), chunks=(1, tile, tile), dtype=np.dtype(dtype)
            )
            s = 2.0**level
            datasets.append(
                {
                    "path": str(level),
                    "coordinateTransformations": [
                        {
                            "type": "scale",
                            "scale": [1.0, pixel_size_um[0] * s, pixel_size_um[1] * s],
                        }
                    ],
                }
            )
            for c in [None] if rgb else range(n_planes):
                for y0, x0, th, tw in _tiles((h, w), tile):
                    t = np.asarray(region(level, c, y0, x0, th, tw)).astype(dtype, copy=False)
                    if rgb:
                        arr[:, y0 : y0 + th, x0 : x0 + tw] = np.moveaxis(t, -1, 0)
                    else:
                        arr[c, y0 : y0 + th, x0 : x0 + tw] = t
                    done += 1
                if cancel is not None:
                    cancel.check()
                yield Progress(done, total, "write OME-Zarr")
        names = channel_names or (
            ["R", "G", "B"] if rgb else [f"channel {i}" for i in range(n_planes)]
        )
        g.attrs["multiscales"] = [
            {
                "version": "0.4",
                "name": path.name,
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": datasets,
            }
        ]
        g.attrs["omero"] = {"channels": [{"label": n} for n in names]}
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


__all__ = ["iter_write_ome_tiff", "iter_write_ome_zarr", "pyramid_shapes"]
