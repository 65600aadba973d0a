"""Image similarity metrics between synthetic and real H&E, and registration errors.

- ``mutual_information``: MI in nats from a joint histogram of grey values (``bins`` x ``bins``),
  the measure seed 000 reports; ``normalized_mutual_information`` = (H(A) + H(B)) / H(A, B) (1..2).
- ``ssim``: scikit-image's structural similarity on grey values in [0, 1] (data_range 1).
- ``psnr``: 10 log10(1 / MSE) on [0, 1] images.
- A ``mask`` restricts every metric to those pixels (SSIM is averaged over the mask of its map).
- ``frechet_distance``: between two Gaussian fits of feature sets (FID's formula); feature networks
  are only used with weights the user gives (no download).
"""

from __future__ import annotations

import numpy as np


def to_gray01(img: np.ndarray) -> np.ndarray:
    """RGB ``(Y, X, 3)`` uint8/float or grey ``(Y, X)`` to float64 grey in [0, 1] (ITU-R 601 luma)."""
    a = np.asarray(img)
    f = a.astype(np.float64) / (255.0 if a.dtype == np.uint8 else 1.0)
    if f.ndim == 3:
        f = f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114
    return f


def _joint_hist(a, b, bins):
    h, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=bins, range=[[0, 1], [0, 1]])
    return h / max(h.sum(), 1)


def _entropy(p):
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(a, b, mask=None, bins: int = 32) -> float:
    ga, gb = to_gray01(a), to_gray01(b)
    if mask is not None:
        ga, gb = ga[mask], gb[mask]
    pab = _joint_hist(ga, gb, bins)
    return _entropy(pab.sum(1)) + _entropy(pab.sum(0)) - _entropy(pab)


def normalized_mutual_information(a, b, mask=None, bins: int = 32) -> float:
    ga, gb = to_gray01(a), to_gray01(b)
    if mask is not None:
        ga, gb = ga[mask], gb[mask]
    pab = _joint_hist(ga, gb, bins)
    hab = _entropy(pab)
    return (_entropy(pab.sum(1)) + _entropy(pab.sum(0))) / hab if hab > 0 else 2.0


def ssim(a, b, mask=None) -> float:
    from skimage.metrics import structural_similarity

    ga, gb = to_gray01(a), to_gray01(b)
    if mask is None:
        return float(structural_similarity(ga, gb, data_range=1.0))
    _, smap = structural_similarity(ga, gb, data_range=1.0, full=True)
    return float(smap[mask].mean())


def psnr(a, b, mask=None) -> float:
    ga, gb = to_gray01(a), to_gray01(b)
    d = (ga - gb) ** 2
    mse = float(d[mask].mean() if mask is not None else d.mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def all_metrics(pred, truth, mask=None) -> dict:
    return {
        "mi": mutual_information(pred, truth, mask),
        "nmi": normalized_mutual_information(pred, truth, mask),
        "ssim": ssim(pred, truth, mask),
        "psnr": psnr(pred, truth, mask),
    }


def tissue_mask(rgb, threshold: float = 0.2) -> np.ndarray:
    """Pixels whose optical density (sum over RGB) exceeds ``threshold``: stained tissue, not glass."""
    f = np.asarray(rgb).astype(np.float64)
    f = f / 255.0 if np.asarray(rgb).dtype == np.uint8 else f
    od = -np.log(np.clip(f, 1 / 255, 1)).sum(-1)
    return od > threshold


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussian fits (FID's formula)."""
    from scipy import linalg

    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean, _ = linalg.sqrtm(sa @ sb, disp=False)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2 * covmean))


def tre(moved_um: np.ndarray, target_um: np.ndarray) -> np.ndarray:
    """Target registration error per point (um): distance between mapped and true positions."""
    return np.linalg.norm(np.asarray(moved_um) - np.asarray(target_um), axis=-1)


def landmark_tre_um(transform, moving_um: np.ndarray, fixed_um: np.ndarray) -> np.ndarray:
    """The one TRE of the project: per landmark pair, in the moving (MSI) frame (um).

    Each fixed (H&E) landmark is mapped into the MSI frame (``transform.fixed_to_moving``) and
    compared with its MSI landmark, so dividing by the MSI pixel gives the error in MSI pixels, the
    unit of every registration figure. (Measured in the H&E frame instead, the error would carry the
    transform's scale.)

    Parameters
    ----------
    transform : object with ``fixed_to_moving``
        A registration :class:`~napari_msi2hist.registration.transforms.Transform` or any mapping
        with that method (world um, (y, x)).
    moving_um, fixed_um : ndarray
        ``(N, 2)`` paired landmarks (y, x um).

    Returns
    -------
    ndarray
        ``(N,)`` errors in um.
    """
    return tre(transform.fixed_to_moving(np.asarray(fixed_um, float)), moving_um)
