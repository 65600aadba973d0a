"""Inputs the interop jobs share: image geometry without loading pixels, all-or-nothing folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def he_geometry(path, pixel_um: float | None = None) -> tuple[tuple[int, int], tuple[float, float]]:
    """Shape and pixel size of an H&E file without loading its pixels.

    Parameters
    ----------
    path : path-like
        The file.
    pixel_um : float, optional
        The pixel size when the file does not give it (refused if it contradicts the file).

    Returns
    -------
    shape_yx : tuple of int
    pixel_size_yx_um : tuple of float

    Raises
    ------
    ValueError
        No pixel size in the file and none given.
    """
    from ..io.histology import read_histology

    img = read_histology(path, lazy=True)
    px = img.pixel_size_um or ((pixel_um, pixel_um) if pixel_um else None)
    if pixel_um and img.pixel_size_um and not np.allclose(img.pixel_size_um, pixel_um):
        raise ValueError(f"{path}: the file says {img.pixel_size_um} um per pixel, not {pixel_um}")
    if px is None:
        raise ValueError(f"{path}: no pixel size in the file; give it (--he-pixel-um)")
    return tuple(int(v) for v in img.levels[0].shape[:2]), tuple(float(v) for v in px)


def msi_geometry(path, pixel_um: float | None = None):
    """Grid of an imzML.

    Parameters
    ----------
    path : path-like
        The file.
    pixel_um : float, optional
        The pixel size when the imzML does not give it.

    Returns
    -------
    shape_yx : tuple of int
    pixel_size_yx_um : tuple of float
    mask : ndarray of bool
        Measured pixels.
    """
    from ..io.imzml import open_imzml

    with open_imzml(path) as imz:
        px = imz.pixel_size_um or ((pixel_um, pixel_um) if pixel_um else None)
        if px is None:
            raise ValueError(f"{path}: no pixel size in the imzML; give it (--msi-pixel-um)")
        return tuple(imz.shape_yx), tuple(float(v) for v in px), imz.measured_mask()


def _fresh_dir(out: Path, overwrite: bool, inputs=()):
    from ..interop._files import check_writable, temp_sibling_dir

    check_writable(out, overwrite, inputs)
    return temp_sibling_dir(out)


def _finish_dir(tmp: Path, out: Path) -> None:
    from ..interop._files import replace_dir

    replace_dir(tmp, out)
