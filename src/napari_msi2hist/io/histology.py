"""H&E and other microscope images: TIFF, OME-TIFF (pyramidal too), SVS, PNG/JPEG; OME-TIFF writing.

Pixel sizes are ``(y, x)`` micrometres, taken from OME ``PhysicalSizeY/X`` (with their units), SVS
``MPP``, or TIFF resolution tags in centimetres. When none is present ``pixel_size_um`` is None and a
warning is recorded in ``warnings`` (the widgets show it; the CLI prints it). The metadata parsers
are in :mod:`._tiff_metadata`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._files import atomic_path
from ._tiff_metadata import (
    ANNOTATION_NAMESPACE,
    ome_annotations,
    ome_pixel_size,
    ome_root,
    svs_mpp,
    tiff_resolution,
)

TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ome.tif", ".ome.tiff", ".btf", ".qptiff", ".ndpi")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
LAZY_BYTES = 256 * 2**20  # images above this open lazily (dask, per pyramid level)


class HistologyError(Exception):
    """An image that cannot be read; the message names the file and the problem."""


@dataclass
class HistologyImage:
    """An image read from a file, with its pyramid levels and pixel size.

    ``levels[0]`` is full resolution ``(Y, X, 3)`` uint8 (numpy or dask); further levels are
    downsampled pyramid levels when the file has them.
    """

    levels: list
    pixel_size_um: tuple[float, float] | None
    path: str
    warnings: list[str] = field(default_factory=list)
    channel_names: list[str] | None = None
    annotations: dict[str, str] = field(default_factory=dict)  # ours, e.g. tolerance, normalisation

    @property
    def data(self):
        """Full-resolution level, ``levels[0]``."""
        return self.levels[0]

    @property
    def rgb(self) -> bool:
        """True for a ``(Y, X, 3)`` colour image."""
        s = self.levels[0].shape
        return len(s) == 3 and s[-1] == 3

    @property
    def multiscale(self) -> bool:
        """True when the file holds a pyramid of levels."""
        return len(self.levels) > 1


# the warning read_histology gives a file without a pixel size (moot once the user gives one)
NO_PIXEL_SIZE = "no pixel size in the file"


def is_histology_path(path) -> bool:
    """Tell whether this module reads a file, by its name.

    Parameters
    ----------
    path : str or path-like
        The file name (not opened).

    Returns
    -------
    bool
        True for the TIFF family (``.tif``, ``.ome.tif``, ``.svs``, ``.ndpi``, ...), PNG, JPEG and
        BMP.
    """
    p = str(path).lower()
    return p.endswith(TIFF_SUFFIXES) or p.endswith(RASTER_SUFFIXES)


def _to_yxc(arr, axes: str):
    """Bring a tifffile series to ``(Y, X, S)`` for RGB samples, ``(C, Y, X)`` for channels, or ``(Y, X)``."""
    axes = axes.upper()
    if "C" not in axes:  # a plain multi-page TIFF (pages as Q/I): its pages are channels, not
        for a in "QI":  # planes to drop silently
            if a in axes:
                axes = axes.replace(a, "C", 1)
                break
    keep = {"Y", "X", "S", "C"}
    idx = tuple(slice(None) if a in keep else 0 for a in axes)
    arr = arr[idx]
    axes = "".join(a for a in axes if a in keep)
    if "C" in axes and "S" in axes:
        arr = arr[(slice(None),) * axes.index("C") + (0,)]
        axes = axes.replace("C", "")
    if "S" in axes:
        order = [axes.index("Y"), axes.index("X"), axes.index("S")]
    elif "C" in axes:
        order = [axes.index("C"), axes.index("Y"), axes.index("X")]
    else:
        order = [axes.index("Y"), axes.index("X")]
    return arr.transpose(order)


def read_histology(path: str | os.PathLike, lazy: bool | None = None) -> HistologyImage:
    """Read an H&E (or any microscope) image with its pixel size.

    The pixel size comes from the OME-XML (``PhysicalSizeX/Y``), an SVS's MPP or the TIFF resolution
    tags; a file without one gets a warning, never a guessed size. RGBA loses its alpha. Our own OME
    MapAnnotation (e.g. an ion stack's tolerance and normalisation) comes back in ``annotations``.

    Parameters
    ----------
    path : path-like
        A TIFF-family file, PNG, JPEG or BMP.
    lazy : bool, optional
        Open the pyramid levels as dask arrays instead of reading them; default: lazily when the
        image is larger than ``LAZY_BYTES`` (256 MiB).

    Returns
    -------
    HistologyImage
        The levels (full resolution first), pixel size (y, x) um or None, warnings, channel names
        and annotations.

    Raises
    ------
    HistologyError
        The file is missing or cannot be read (the message names it and the cause).
    """
    path = Path(path)
    if not path.is_file():
        raise HistologyError(f"{path}: file not found")
    low = path.name.lower()
    warnings: list[str] = []
    px = None
    channel_names = None
    annotations: dict[str, str] = {}
    try:
        if low.endswith(TIFF_SUFFIXES):
            import tifffile

            with tifffile.TiffFile(path) as tf:
                series = tf.series[0]
                nbytes = int(np.prod(series.shape)) * series.dtype.itemsize
                use_lazy = nbytes > LAZY_BYTES if lazy is None else lazy
                if tf.is_ome:
                    px = ome_pixel_size(tf.ome_metadata)
                    root = ome_root(tf.ome_metadata)
                    if root is not None:
                        names = [el.get("Name") for el in root.iter() if el.tag.endswith("Channel")]
                        channel_names = names if names and all(names) else None
                        annotations = ome_annotations(root)
                if px is None and tf.is_svs:
                    px = svs_mpp(tf.pages[0].description)
                if px is None:
                    px = tiff_resolution(tf.pages[0])
                levels_series = series.levels if len(series.levels) > 1 else [series]
                axes = series.axes
                if use_lazy:
                    import dask.array as da
                    import zarr

                    levels = []
                    for li in range(len(levels_series)):
                        store = tifffile.imread(path, aszarr=True, series=0, level=li)
                        z = zarr.open(store, mode="r")
                        levels.append(_to_yxc(da.from_zarr(z), axes))
                else:
                    levels = [_to_yxc(lv.asarray(), axes) for lv in levels_series]
        elif low.endswith(RASTER_SUFFIXES):
            from skimage import io as skio

            arr = skio.imread(path)
            levels = [arr]
        else:
            raise HistologyError(
                f"{path}: unsupported image type (use TIFF, OME-TIFF, SVS, PNG or JPEG)"
            )
    except HistologyError:
        raise
    except Exception as e:  # tifffile/imageio raise many types; name the file and the cause
        raise HistologyError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    lv0 = levels[0]
    if lv0.ndim == 3 and lv0.shape[-1] == 4 and lv0.dtype == np.uint8:  # RGBA: drop alpha
        levels = [lv[..., :3] for lv in levels]
    if px is None:
        warnings.append(
            f"{path.name}: {NO_PIXEL_SIZE} (give one: --fixed-pixel-um or --moving-pixel-um)"
        )
    return HistologyImage(levels, px, str(path), warnings, channel_names, annotations)


def as_rgb_uint8(a, path="the image") -> np.ndarray:
    """Any image this tool writes or reads as an H&E-like ``(Y, X, 3)`` uint8.

    RGB/RGBA ``(Y, X, 3|4)`` as read; a ``(3, Y, X)`` or ``(1, Y, X)`` stack (``register``'s
    registered.ome.tif); grey ``(Y, X)`` repeated. Float data is rescaled by its range; NaN (outside
    a moved image) becomes white, like glass.

    Parameters
    ----------
    a : array-like
        The image: ``(Y, X)``, ``(Y, X, 3|4)``, ``(1|3, Y, X)``; any numeric type.
    path : str
        Named in the error.

    Returns
    -------
    ndarray
        ``(Y, X, 3)`` uint8.

    Raises
    ------
    ValueError
        For other shapes (e.g. a stack of many ion images).
    """
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 1):
        a = np.repeat(a.reshape(a.shape[:2] + (1,)), 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"{path}: a {a.shape} image, where an RGB image (or 3 channels) is needed")
    a = a[..., :3]
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        top = float(np.nanmax(a)) if finite.any() else 1.0
        a = np.where(finite, a, 255.0 if top > 1.0 else 1.0)
    return to_uint8_rgb(a)


def to_uint8_rgb(img: np.ndarray) -> np.ndarray:
    """Convert an image to uint8 without silent wrap-around.

    uint8 passes through; other integers are rescaled by their type's maximum when they exceed 255;
    floats in [0, 1] are scaled by 255, other floats are clipped to [0, 255].

    Parameters
    ----------
    img : ndarray
        The image (any shape; usually ``(Y, X, 3)``).

    Returns
    -------
    ndarray
        The uint8 image, same shape.
    """
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind in "ui":
        hi = np.iinfo(a.dtype).max if a.max() > 255 else 255
        return np.clip(np.round(a.astype(np.float64) * (255.0 / hi)), 0, 255).astype(np.uint8)
    a = a.astype(np.float64)
    scale = 255.0 if a.max() <= 1.0 else 1.0
    return np.clip(np.round(a * scale), 0, 255).astype(np.uint8)


def write_ome_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    pixel_size_um: tuple[float, float] | None,
    channel_names: list[str] | None = None,
    overwrite: bool = True,
    pyramid: bool | None = None,
    annotations: dict[str, str] | None = None,
) -> Path:
    """Write ``(Y, X, 3)`` uint8 RGB or a ``(C, Y, X)`` stack as OME-TIFF, atomically.

    Pixel size goes to ``PhysicalSizeX/Y`` in micrometres; channel names to ``Channel/@Name``;
    ``annotations`` (e.g. the m/z tolerance and normalisation of ion images) to an OME
    ``MapAnnotation`` in the ``napari-msi2hist`` namespace, read back by :func:`read_histology`.
    Large images get a pyramid of 2x downsampled sub-resolutions.

    Parameters
    ----------
    path : path-like
        The ``.ome.tif`` to write.
    data : ndarray
        ``(Y, X, 3)`` uint8 RGB, ``(Y, X)`` or ``(C, Y, X)``.
    pixel_size_um : tuple of float or None
        Pixel size (y, x) in um; None writes none.
    channel_names : list of str, optional
        One name per channel.
    overwrite : bool
        Refuse an existing ``path`` when False.
    pyramid : bool, optional
        Write sub-resolutions; default: when the larger side exceeds 4096 pixels.
    annotations : dict of str, optional
        Key/value pairs for the MapAnnotation.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    import tifffile

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; refusing to overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data)
    rgb = data.ndim == 3 and data.shape[-1] == 3 and data.dtype == np.uint8
    if rgb:
        axes, photometric = "YXS", "rgb"
    elif data.ndim == 2:
        axes, photometric = "YX", "minisblack"
    elif data.ndim == 3:
        axes, photometric = "CYX", "minisblack"
    else:
        raise ValueError(f"cannot write array of shape {data.shape} as OME-TIFF")
    meta: dict = {"axes": axes}
    if pixel_size_um is not None:
        meta.update(
            PhysicalSizeY=float(pixel_size_um[0]),
            PhysicalSizeYUnit="µm",
            PhysicalSizeX=float(pixel_size_um[1]),
            PhysicalSizeXUnit="µm",
        )
    if channel_names is not None:
        meta["Channel"] = {"Name": list(channel_names)}
    if annotations:
        meta["MapAnnotation"] = {
            "Namespace": ANNOTATION_NAMESPACE,
            "Value": {str(k): str(v) for k, v in annotations.items()},
        }
    ny, nx = (data.shape[0], data.shape[1]) if rgb or data.ndim == 2 else data.shape[1:]
    if pyramid is None:
        pyramid = max(ny, nx) > 4096
    n_sub = 0
    if pyramid:
        # stop before a level would lose a side (line scans: a few px by thousands)
        while max(ny, nx) >> (n_sub + 1) >= 512 and min(ny, nx) >> (n_sub + 1) >= 1:
            n_sub += 1
    tmp = atomic_path(path)
    try:
        opts = dict(
            photometric=photometric, tile=(256, 256) if pyramid else None, compression="zlib"
        )
        with tifffile.TiffWriter(tmp, bigtiff=data.nbytes > 2**31, ome=True) as tw:
            tw.write(data, subifds=n_sub, metadata=meta, **opts)
            level = data
            for _ in range(n_sub):
                level = _downsample2(level, rgb or data.ndim == 2)
                tw.write(level, subfiletype=1, metadata=None, **opts)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _downsample2(a: np.ndarray, spatial_first: bool) -> np.ndarray:
    if spatial_first:
        y, x = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        b = a[:y, :x].astype(np.float32)
        r = (b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]) / 4
    else:
        y, x = a.shape[1] // 2 * 2, a.shape[2] // 2 * 2
        b = a[:, :y, :x].astype(np.float32)
        r = (b[:, 0::2, 0::2] + b[:, 1::2, 0::2] + b[:, 0::2, 1::2] + b[:, 1::2, 1::2]) / 4
    return r.astype(a.dtype) if a.dtype.kind == "f" else np.round(r).astype(a.dtype)
