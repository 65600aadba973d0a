"""Sampling one image on another's pixel grid through an :class:`~.alignment.Alignment`.

Every function here takes the mapping as an alignment object (MSI = moving, H&E = fixed, world
points (y, x) um), never as a bare function or matrix, and a grid as its shape, pixel size and, where
it is not at the origin, the world position of its pixel (0, 0) centre:

- :func:`he_on_msi_grid`: the H&E, box-filtered to about the grid's pixel, at the centres of an MSI
  grid (the training target, the super-resolution guide, the demo's truth);
- :func:`features_on_msi_grid`: a feature map averaged over each MSI pixel's footprint;
- :func:`label_on_he_grid`: a label image (nearest neighbour) at the centres of the H&E's pixels;
- :func:`placed_like`: where a new grid lies, as napari's ``scale`` / ``translate`` / ``affine``.

The napari adapters (reading a layer's scale, translate and affine into a
:class:`~.alignment.LinearAlignment`) are in ``widgets``.
"""

from __future__ import annotations

import numpy as np

from .alignment import Alignment, linear_matrix, require_alignment

GLASS_RGB = (243, 241, 245)


def he_on_msi_grid(
    he_rgb: np.ndarray,
    he_px,
    alignment: Alignment,
    grid_shape,
    working_px: float,
    grid_origin_um=(0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Sample the H&E at the world positions of an MSI-frame grid's pixel centres.

    The H&E is box-filtered to about the working pixel first (area-averaged) and sampled linearly;
    outside it the glass colour is used.

    Parameters
    ----------
    he_rgb : ndarray
        ``(Y, X, 3)`` uint8 H&E.
    he_px : tuple of float
        Its pixel size (yx um).
    alignment : Alignment
        MSI (moving) -> H&E (fixed); only ``moving_to_fixed`` is used.
    grid_shape : tuple of int
        The grid's size.
    working_px : float
        The grid's pixel (um).
    grid_origin_um : tuple of float
        Where the grid's pixel (0, 0) centre lies in the MSI world (yx um).

    Returns
    -------
    rgb : ndarray
        ``(y, x, 3)`` uint8 H&E on the grid.
    valid : ndarray of bool
        ``(y, x)`` where the sample came from inside the H&E.
    """
    from scipy import ndimage as ndi

    alignment = require_alignment(alignment)
    ny, nx = grid_shape
    rr, cc = np.mgrid[0:ny, 0:nx]
    p_msi = np.column_stack([rr.ravel(), cc.ravel()]).astype(np.float64) * working_px
    p_msi += np.asarray(grid_origin_um, np.float64)
    p_he = alignment.moving_to_fixed(p_msi) / np.asarray(he_px, dtype=np.float64)
    k = max(1, int(round(working_px / float(np.mean(he_px)))))
    out = np.empty((ny * nx, 3), dtype=np.float64)
    for ch in range(3):
        band = ndi.uniform_filter(he_rgb[..., ch].astype(np.float64), size=k, mode="nearest")
        out[:, ch] = ndi.map_coordinates(band, p_he.T, order=1, mode="constant", cval=GLASS_RGB[ch])
    h, w = he_rgb.shape[:2]
    valid = (p_he[:, 0] >= 0) & (p_he[:, 0] <= h - 1) & (p_he[:, 1] >= 0) & (p_he[:, 1] <= w - 1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8).reshape(ny, nx, 3), valid.reshape(ny, nx)


def features_on_msi_grid(
    fmap: np.ndarray,
    fmap_px_um: tuple[float, float],
    alignment: Alignment,
    msi_shape: tuple[int, int],
    msi_px_um: tuple[float, float],
    supersample: int = 4,
    fmap_origin_um: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Average a feature map over each MSI pixel's footprint (area-weighted).

    ``supersample`` x ``supersample`` points per MSI pixel are mapped to the H&E and the map is
    sampled linearly there, then averaged.

    Parameters
    ----------
    fmap : ndarray
        ``(F, Y, X)`` feature map in the H&E's world frame.
    fmap_px_um : tuple of float
        Its pixel size (yx um).
    alignment : Alignment
        MSI (moving) -> H&E (fixed); only ``moving_to_fixed`` is used.
    msi_shape : tuple of int
        The MSI grid's size.
    msi_px_um : tuple of float
        The MSI pixel size (yx um).
    supersample : int
        Sub-samples per MSI pixel along each axis.
    fmap_origin_um : tuple of float
        Where the feature map's pixel (0, 0) centre lies in the H&E frame (a stride-``s`` map of
        deep features: ``(s - 1) / 2`` H&E pixels).

    Returns
    -------
    features : ndarray
        ``(F, Ym, Xm)`` float32.
    valid : ndarray of bool
        ``(Ym, Xm)``: MSI pixels whose footprint lies on the map.
    """
    from scipy import ndimage as ndi

    alignment = require_alignment(alignment)
    ny, nx = msi_shape
    s = max(1, int(supersample))
    sub = (np.arange(s) + 0.5) / s - 0.5  # sub-sample offsets inside a pixel, in pixels
    yy = (np.arange(ny)[:, None] + sub[None, :]).ravel()
    xx = (np.arange(nx)[:, None] + sub[None, :]).ravel()
    gy, gx = np.meshgrid(yy, xx, indexing="ij")
    pts = np.column_stack([gy.ravel() * msi_px_um[0], gx.ravel() * msi_px_um[1]])
    p = (alignment.moving_to_fixed(pts) - np.asarray(fmap_origin_um)) / np.asarray(
        fmap_px_um, np.float64
    )
    h, w = fmap.shape[1:]
    inside = (p[:, 0] >= -0.5) & (p[:, 0] <= h - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] <= w - 0.5)
    out = np.empty((fmap.shape[0], ny, nx), np.float32)
    for i, f in enumerate(fmap):
        v = ndi.map_coordinates(f.astype(np.float64), p.T, order=1, mode="nearest")
        out[i] = v.reshape(ny, s, nx, s).mean((1, 3))
    valid = inside.reshape(ny, s, nx, s).all((1, 3))
    return out, valid


def label_on_he_grid(
    labels: np.ndarray, labels_px, alignment: Alignment, he_shape, he_px
) -> np.ndarray:
    """Sample a label image (nearest neighbour) at the centres of the H&E's pixels.

    Parameters
    ----------
    labels : ndarray
        ``(Y, X)`` label image; non-zero is in the class.
    labels_px : tuple of float
        Its pixel size (yx um) in its own world frame.
    alignment : Alignment
        The label image's world (moving) -> the H&E's world (fixed); only ``fixed_to_moving`` is
        used.
    he_shape : tuple of int
        The H&E's ``(Y, X)``.
    he_px : tuple of float
        The H&E's pixel size (yx um).

    Returns
    -------
    ndarray of bool
        ``(Y, X)`` on the H&E's grid: True where the label is non-zero; False off the label image.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a 2D label image is needed, not {labels.ndim}D")
    alignment = require_alignment(alignment)
    h, w = he_shape
    rr, cc = np.mgrid[0:h, 0:w]
    p_he = np.column_stack([rr.ravel(), cc.ravel()]).astype(np.float64) * np.asarray(
        he_px, np.float64
    )
    q = np.rint(alignment.fixed_to_moving(p_he) / np.asarray(labels_px, np.float64)).astype(
        np.int64
    )
    ok = (q[:, 0] >= 0) & (q[:, 0] < labels.shape[0]) & (q[:, 1] >= 0) & (q[:, 1] < labels.shape[1])
    out = np.zeros(h * w, bool)
    out[ok] = labels[q[ok, 0], q[ok, 1]] > 0
    return out.reshape(h, w)


def placed_like(alignment: Alignment, ndim: int, scale, translate) -> dict:
    """Place a new ``ndim`` grid whose last two axes lie in a given frame, as napari does.

    napari shows a layer at ``affine @ (index * scale + translate)``; the leading axes (m/z,
    modes) are left alone.

    Parameters
    ----------
    alignment : Alignment
        The frame: a linear alignment from ``index * scale + translate`` (yx um) to the world
        (e.g. a layer's own affine, or a linear registration).
    ndim : int
        The new grid's number of axes (2 or more).
    scale, translate : tuple of float
        The new grid's last two axes' pixel size and offset (yx um).

    Returns
    -------
    dict
        ``scale``, ``translate`` (``ndim`` each) and ``affine`` (``ndim + 1`` square).
    """
    aff = np.eye(ndim + 1)
    aff[-3:, -3:] = linear_matrix(alignment)
    lead = (1.0,) * (ndim - 2)
    return {
        "scale": lead + tuple(scale),
        "translate": (0.0,) * (ndim - 2) + tuple(translate),
        "affine": aff,
    }
