"""Image preparation for the registration metric.

The images that are registered (an H&E's optical density, an MSI summary), an MSI summary image
without acquisition artefacts, and a fixed image framed by glass.

MSI rasters carry artefacts that are not tissue: line-to-line intensity drift (each raster line has
its own gain, so the image is striped) and single hot or missing pixels. A mutual-information or
correlation metric happily aligns stripes with tissue texture, so the direct route registers a
cleaned summary (in the logarithm, where gains become offsets): isolated outliers replaced by their
3x3 median, each raster line offset by its median difference to its neighbour (jitter removed, the
smooth trend kept), and a plane fitted to one intensity class removed (drift along the scan).

The H&E image is taken to show the whole section. A pose that puts moving tissue beyond the H&E's
border is therefore as wrong as one that puts it on glass, but a metric counted only where both
images exist cannot see that. :func:`pad_with_glass` frames the fixed image with its own glass
level, so the metric does see it; where the H&E tissue itself touches the border (the section is cut
by the image), the frame beside it is left out of the metric instead.
"""

from __future__ import annotations

import numpy as np


def od_image(rgb: np.ndarray) -> np.ndarray:
    """Compute the optical density summed over RGB: tissue bright, glass about 0.

    A unimodal representation of an H&E for registration.

    Parameters
    ----------
    rgb : ndarray
        ``(Y, X, 3)`` uint8, or floats in [0, 1].

    Returns
    -------
    ndarray
        ``(Y, X)`` float32 optical density.
    """
    f = np.asarray(rgb, dtype=np.float64)
    f = f / 255.0 if np.asarray(rgb).dtype == np.uint8 or f.max() > 1.5 else f
    return (-np.log(np.clip(f, 1 / 255, 1.0))).sum(-1).astype(np.float32)


def msi_summary(
    stack: np.ndarray, kind: str = "tic", mask: np.ndarray | None = None, scaled: bool = True
) -> np.ndarray:
    """Summarise an ion-image stack as one image for registration.

    Parameters
    ----------
    stack : ndarray
        ``(C, Y, X)`` ion images (a ``(Y, X)`` image passes through).
    kind : {"tic", "pca"}
        The sum of the channels, or the first principal component of the standardised channels over
        ``mask`` (signed to correlate with the sum).
    mask : ndarray of bool, optional
        Measured pixels (for ``pca``).
    scaled : bool
        Scale the result so that its 1st..99th percentiles span [0, 1], clipped; when False the
        raw sum or component is returned.

    Returns
    -------
    ndarray
        ``(Y, X)`` float32 summary.
    """
    x = np.asarray(stack, dtype=np.float64)
    if x.ndim == 2:
        img = x
    elif kind == "pca":
        m = np.ones(x.shape[1:], bool) if mask is None else mask
        v = x[:, m].T
        v = (v - v.mean(0)) / (v.std(0) + 1e-12)
        _, _, vt = np.linalg.svd(v, full_matrices=False)
        img = np.zeros(x.shape[1:])
        img[m] = v @ vt[0]
        if np.corrcoef(img[m], x[:, m].sum(0))[0, 1] < 0:
            img = -img
    else:
        img = x.sum(0)
    if not scaled:
        return img
    lo, hi = np.percentile(img, [1, 99])
    return np.clip((img - lo) / (hi - lo + 1e-12), 0, 1).astype(np.float32)


def downsample_to(img: np.ndarray, px, target_px: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Area-average an image to about ``target_px`` um pixels (never upsample), centres kept.

    Pixel ``i`` of the result holds the area average centred at ``i`` times the new pixel, in the
    same world as the input's pixel ``i`` at ``i`` times its pixel (linear interpolation of the
    block means by their centre offset).

    Parameters
    ----------
    img : ndarray
        2-D image.
    px : tuple of float
        Its pixel size (y, x) in um.
    target_px : float
        The pixel wanted, in um (integer factors per axis, at least 1).

    Returns
    -------
    image : ndarray
        float32, area-averaged.
    pixel_um : tuple of float
        Its pixel size (y, x).
    """
    from skimage.transform import downscale_local_mean

    fy, fx = max(1, int(round(target_px / px[0]))), max(1, int(round(target_px / px[1])))
    if fy == 1 and fx == 1:
        return img.astype(np.float32), (float(px[0]), float(px[1]))
    out = downscale_local_mean(img, (fy, fx)).astype(np.float32)
    coarse = (px[0] * fy, px[1] * fx)
    # without this every registration on a downsampled image is off by half a coarse pixel
    return recentre(out, centre_shift(px, coarse)), coarse


def centre_shift(fine_px, coarse_px) -> tuple[float, float]:
    """How far an area average's content lies past where its coarse grid draws it, in its pixels.

    Coarse pixel ``i`` (a block mean, or a pyramid level) covers fine pixels whose centres span
    ``i * coarse`` to ``i * coarse + coarse - fine``, so its content is centred ``(coarse - fine) /
    2`` um past ``i * coarse``: ``(1 - fine / coarse) / 2`` of a coarse pixel per axis (about 4 um
    for an 8 um level of a 0.5 um slide).

    Parameters
    ----------
    fine_px, coarse_px : tuple of float
        The original and the averaged pixel sizes (y, x) in um.

    Returns
    -------
    tuple of float
        The shift (y, x) in coarse pixels, for :func:`recentre`.
    """
    return tuple(0.5 * (1.0 - f / c) for f, c in zip(fine_px, coarse_px, strict=True))


def recentre(img: np.ndarray, shift) -> np.ndarray:
    """Move an area-averaged image back by its centre offset, so pixel ``i`` shows ``i`` x pixel.

    Parameters
    ----------
    img : ndarray
        ``(Y, X)`` or ``(Y, X, C)`` image.
    shift : tuple of float
        From :func:`centre_shift` (coarse pixels, y and x).

    Returns
    -------
    ndarray
        float32, same shape; linear interpolation, the edge repeated.
    """
    from scipy import ndimage as ndi

    if img.ndim == 2:  # out[i] = img[i - shift]
        return ndi.shift(img.astype(np.float32), shift, order=1, mode="nearest")
    return np.stack([recentre(img[..., c], shift) for c in range(img.shape[-1])], -1)


def despike(img: np.ndarray, footprint: np.ndarray, k: float = 5.0) -> np.ndarray:
    """Replace isolated outliers (hot / missing pixels) by the 3x3 median.

    A pixel is an outlier when it differs from its 3x3 median by more than ``k`` robust standard
    deviations (1.4826 x the median absolute difference over the footprint).

    Parameters
    ----------
    img : ndarray
        2-D image.
    footprint : ndarray of bool
        The measured pixels (the spread is estimated there).
    k : float
        Outlier threshold in robust standard deviations.

    Returns
    -------
    ndarray
        float64 image with the outliers replaced.
    """
    from scipy import ndimage as ndi

    a = np.asarray(img, dtype=np.float64)
    med = ndi.median_filter(a, size=3, mode="nearest")
    d = a - med
    fp = np.asarray(footprint, bool)
    if not fp.any():
        return a
    mad = 1.4826 * np.median(np.abs(d[fp])) + 1e-12
    return np.where(np.abs(d) > k * mad, med, a)


def destripe(img: np.ndarray, footprint: np.ndarray, axis: int, sigma: float = 4.0) -> np.ndarray:
    """Remove line-to-line offsets along ``axis`` (0: rows, 1: columns).

    Neighbouring lines see nearly the same tissue, so the median of their pixelwise difference is
    the offset between them, whatever the content. The offsets are summed along the lines and their
    smooth part (Gaussian, ``sigma`` lines) is kept: only the line-to-line jitter is removed.

    Parameters
    ----------
    img : ndarray
        2-D image.
    footprint : ndarray of bool
        The measured pixels (offsets are medians over pixels measured in both lines).
    axis : {0, 1}
        0: rows are the raster lines; 1: columns are.
    sigma : float
        Width (in lines) of the smooth trend that is kept.

    Returns
    -------
    ndarray
        float64 image without the line-to-line offsets.
    """
    from scipy import ndimage as ndi

    a = np.asarray(img, dtype=np.float64)
    fp = np.asarray(footprint, bool)
    lines = a if axis == 0 else a.T
    lfp = fp if axis == 0 else fp.T
    if lines.shape[0] < 4:
        return a
    both = lfp[1:] & lfp[:-1]
    diff = lines[1:] - lines[:-1]
    d = np.array([np.median(r[m]) if m.sum() >= 3 else 0.0 for r, m in zip(diff, both)])
    cum = np.concatenate([[0.0], np.cumsum(d)])
    off = cum - ndi.gaussian_filter1d(cum, sigma, mode="nearest")
    out = lines - off[:, None]
    return out if axis == 0 else out.T


def remove_plane(img: np.ndarray, footprint: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Subtract a plane fitted to one intensity class (acquisition drift along the scan).

    A drift acts alike on tissue and background, so the plane is fitted to the larger of the two
    Otsu classes of the residual (tissue would tilt a fit to all pixels), refitted ``rounds`` times.

    Parameters
    ----------
    img : ndarray
        2-D image.
    footprint : ndarray of bool
        The measured pixels.
    rounds : int
        How many times the class split and the fit are repeated.

    Returns
    -------
    ndarray
        float64 image with the plane removed (its mean over the footprint kept).
    """
    from .tissue import _otsu

    a = np.asarray(img, dtype=np.float64)
    fp = np.asarray(footprint, bool)
    yy, xx = np.indices(a.shape)
    design = np.stack([np.ones(a.size), yy.ravel() / a.shape[0], xx.ravel() / a.shape[1]], 1)
    use = fp.ravel().copy()
    plane = np.zeros(a.size)
    for _ in range(rounds + 1):
        if use.sum() < 16:
            break
        coef, *_ = np.linalg.lstsq(design[use], a.ravel()[use], rcond=None)
        plane = design @ coef
        res = a.ravel() - plane
        t = _otsu(res[fp.ravel()])
        hi = fp.ravel() & (res > t)
        lo = fp.ravel() & (res <= t)
        use = hi if hi.sum() > lo.sum() else lo
    return a - (plane - plane[fp.ravel()].mean()).reshape(a.shape)


def clean_msi_image(img: np.ndarray, footprint: np.ndarray | None = None) -> np.ndarray:
    """Clean an MSI summary image of hot/missing pixels, raster-line stripes and scan drift.

    The result is rescaled to 0-1 (1st-99th percentile inside the footprint) and is 0 outside the
    footprint. A non-negative image is cleaned in the logarithm (raster-line gains multiply the
    signal).

    Parameters
    ----------
    img : ndarray
        2-D summary image (TIC, an ion image or a principal component).
    footprint : ndarray of bool, optional
        The measured pixels (default: all).

    Returns
    -------
    ndarray
        float32, the shape of ``img``.
    """
    a = np.asarray(img, dtype=np.float64)
    fp = np.ones(a.shape, bool) if footprint is None else np.asarray(footprint, bool)
    if fp.sum() < 16:
        return a.astype(np.float32)
    a = np.where(fp, a, np.median(a[fp]))
    positive = a.min() >= 0
    if positive:  # raster-line gains are multiplicative: remove them as offsets of the logarithm
        a = np.log(a + 0.05 * np.median(a) + 1e-12)
    a = despike(a, fp)
    a = destripe(a, fp, 0)
    a = destripe(a, fp, 1)
    a = remove_plane(a, fp)
    if positive:
        a = np.exp(a)
    return rescale_unit(a, fp)


def rescale_unit(img: np.ndarray, footprint: np.ndarray | None = None) -> np.ndarray:
    """Scale an image to 0-1 between its 1st and 99th percentiles inside ``footprint``.

    Parameters
    ----------
    img : ndarray
        2-D image.
    footprint : ndarray of bool, optional
        The measured pixels (default: all); the result is 0 outside them.

    Returns
    -------
    ndarray
        float32, the shape of ``img``, clipped to 0-1.
    """
    a = np.asarray(img, dtype=np.float64)
    fp = np.ones(a.shape, bool) if footprint is None else np.asarray(footprint, bool)
    if not fp.any():
        return np.zeros(a.shape, np.float32)
    lo, hi = np.percentile(a[fp], [1, 99])
    out = np.clip((a - lo) / (hi - lo + 1e-12), 0, 1)
    return np.where(fp, out, 0.0).astype(np.float32)


def pad_with_glass(
    fixed: np.ndarray, tissue: np.ndarray, valid: np.ndarray | None, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``fixed`` with ``pad`` pixels of its glass level.

    Parameters
    ----------
    fixed : ndarray
        The fixed image (tissue bright).
    tissue : ndarray of bool
        Its tissue mask.
    valid : ndarray of bool or None
        Where its metric counts (None: everywhere).
    pad : int
        Frame width in pixels.

    Returns
    -------
    (padded image, padded valid mask). Frame pixels whose nearest image pixel is tissue are not
    valid (the section may continue beyond the image there).
    """
    from scipy import ndimage as ndi

    f = np.asarray(fixed, dtype=np.float32)
    t = np.asarray(tissue, bool)
    v = np.ones(f.shape, bool) if valid is None else np.asarray(valid, bool)
    if pad <= 0:
        return f, v
    glass_px = v & ~ndi.binary_dilation(t, iterations=2)
    level = float(np.median(f[glass_px])) if glass_px.sum() >= 16 else float(np.percentile(f, 5))
    fp = np.pad(f, pad, mode="constant", constant_values=level)
    inner = np.zeros(fp.shape, bool)
    inner[pad:-pad, pad:-pad] = True
    _, (iy, ix) = ndi.distance_transform_edt(~inner, return_indices=True)
    tp = np.pad(t, pad, mode="constant")
    vp = np.pad(v, pad, mode="constant", constant_values=True)
    vp &= inner | ~tp[iy, ix]
    return fp, vp


__all__ = [
    "clean_msi_image",
    "despike",
    "destripe",
    "downsample_to",
    "centre_shift",
    "recentre",
    "msi_summary",
    "od_image",
    "pad_with_glass",
    "remove_plane",
]
