"""Tissue masks for registration: where the H&E shows stained tissue, where an MSI image shows tissue.

The H&E detector keeps stained pixels (optical density above the glass level AND coloured: haematoxylin
and eosin are purple/pink, while printed labels, pen text and dust are grey, black, blue or green), then
keeps only connected pieces that are large compared with the biggest one, so that debris and letters
beside the tissue are left out. The MSI detector thresholds a summary image (Otsu) and picks the
polarity whose 'background' class touches the raster border most (matrix/glass surrounds the tissue).
"""

from __future__ import annotations

import numpy as np


def _otsu(v: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    v = v[np.isfinite(v)]
    if v.size == 0 or np.ptp(v) == 0:
        return float(v.max()) if v.size else 0.0
    return float(threshold_otsu(v))


def _keep_large(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    from scipy import ndimage as ndi

    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_fraction * sizes.max()) + 1
    return np.isin(lab, keep)


def he_tissue_mask(rgb: np.ndarray, min_piece_fraction: float = 0.08) -> np.ndarray:
    """Stained tissue of an H&E RGB image (``(Y, X, 3)``), without labels, text, pen marks and debris.

    Parameters
    ----------
    rgb : ndarray
        uint8 (or 0-1 float) RGB image.
    min_piece_fraction : float
        Connected pieces smaller than this fraction of the largest piece are dropped (debris).

    Returns
    -------
    ndarray of bool, ``(Y, X)``.
    """
    from scipy import ndimage as ndi

    f = np.asarray(rgb, dtype=np.float64)[..., :3]
    if f.max() <= 1.5:
        f = f * 255.0
    od = -np.log(np.clip(f, 1, 255) / 255.0)
    tot = od.sum(-1)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    # H&E stains absorb green most: red and blue stay above green. Pen (blue/green/black) and print
    # (grey/black) do not have that signature.
    stain = (np.minimum(r, b) - g) > 6.0
    dark_grey = (f.max(-1) - f.min(-1) < 18) & (f.mean(-1) < 200)
    # glass level from the brightest part of the slide
    thr = max(0.1, min(0.5, 0.35 * _otsu(ndi.gaussian_filter(tot, 1.0))))
    keep = ((tot > thr) & stain & ~dark_grey).astype(np.float64)
    sm = ndi.gaussian_filter(keep, 2.0) > 0.3
    sm = ndi.binary_closing(sm, iterations=2)
    sm = ndi.binary_opening(sm, iterations=2)
    sm = ndi.binary_fill_holes(sm)
    sm = _keep_large(sm, min_piece_fraction)
    if sm.sum() < 0.002 * sm.size:  # nothing detected: fall back to plain optical density
        sm = ndi.gaussian_filter(tot, 1.5) > _otsu(tot)
    return sm


def he_artefact_mask(rgb: np.ndarray, tissue: np.ndarray, grow_px: int = 3) -> np.ndarray:
    """Find the things on a slide that are neither glass nor tissue (text, pen, debris, label).

    Pixels clearly darker than the glass and away from the tissue, grown by ``grow_px``: the
    registration metric ignores them, and counts glass and tissue alike.

    Parameters
    ----------
    rgb : ndarray
        ``(Y, X, 3)`` H&E, uint8 or floats in [0, 1].
    tissue : ndarray of bool
        The H&E's tissue mask (:func:`he_tissue_mask`).
    grow_px : int
        Dilation of the artefacts, in pixels.

    Returns
    -------
    ndarray of bool
        ``(Y, X)`` artefact mask.
    """
    from scipy import ndimage as ndi

    f = np.asarray(rgb, dtype=np.float64)[..., :3]
    if f.max() <= 1.5:
        f = f * 255.0
    tot = -np.log(np.clip(f, 1, 255) / 255.0).sum(-1)
    glass_level = np.median(tot[~tissue]) if (~tissue).any() else 0.0
    other = (tot > glass_level + 0.15) & ~ndi.binary_dilation(tissue, iterations=2)
    return ndi.binary_dilation(other, iterations=grow_px)


def image_tissue_mask(
    img: np.ndarray, footprint: np.ndarray | None = None, min_piece_fraction: float = 0.05
) -> np.ndarray:
    """Tissue of a single-channel image (MSI summary or synthetic-H&E optical density).

    Otsu threshold inside ``footprint`` (the measured raster; default everything); the side that
    touches the image border less is tissue.

    Parameters
    ----------
    img : ndarray
        ``(Y, X)`` single-channel image.
    footprint : ndarray of bool, optional
        The measured raster (default everything).
    min_piece_fraction : float
        Pieces smaller than this fraction of the largest are dropped.

    Returns
    -------
    ndarray of bool
        ``(Y, X)`` tissue, opened and hole-filled.
    """
    from scipy import ndimage as ndi

    a = ndi.gaussian_filter(np.asarray(img, dtype=np.float64), 1.0)
    fp = np.ones(a.shape, bool) if footprint is None else np.asarray(footprint, bool)
    t = _otsu(a[fp])
    hi = (a > t) & fp
    lo = (a <= t) & fp
    edge = np.zeros(a.shape, bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    edge |= fp & ~ndi.binary_erosion(fp, iterations=1)
    m = hi if (hi & edge).sum() / max(1, hi.sum()) <= (lo & edge).sum() / max(1, lo.sum()) else lo
    m = ndi.binary_opening(m, iterations=1)
    m = ndi.binary_fill_holes(m)
    return _keep_large(m, min_piece_fraction)


def tissue_polarity(img: np.ndarray, mask: np.ndarray) -> float:
    """Tell whether an image is brighter on tissue than off it.

    Parameters
    ----------
    img : ndarray
        ``(Y, X)`` image.
    mask : ndarray of bool
        Its tissue mask.

    Returns
    -------
    float
        +1 when the mean on tissue is at least the mean off it (or the mask is all or nothing), else
        -1.
    """
    a = np.asarray(img, float)
    if mask.all() or not mask.any():
        return 1.0
    return 1.0 if a[mask].mean() >= a[~mask].mean() else -1.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Compute the Dice overlap of two boolean masks.

    Parameters
    ----------
    a, b : ndarray of bool
        Masks of one shape.

    Returns
    -------
    float
        ``2 |a & b| / (|a| + |b|)``; 0 when both are empty.
    """
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


__all__ = ["dice", "he_artefact_mask", "he_tissue_mask", "image_tissue_mask", "tissue_polarity"]
