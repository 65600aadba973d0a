"""Global pose search at a coarse level: rotations, mirror images, scales and translations.

Every rotation (fine step), both mirror images, a range of scales, and for each of these the best
translation, all scored at a coarse level so that no single bad start decides.

For each (mirror, scale, angle) the moving image is rotated and scaled onto a canvas of coarse pixels
and the translation is found by masked normalised cross-correlation over all shifts at once (FFT form
of Padfield, "Masked object registration in the Fourier domain", IEEE TIP 2012): the correlation is
taken only where the fixed tissue mask and the moving raster's footprint overlap, so glass, labels and
the part of the tissue the MSI raster never covered do not count. The best poses are then re-scored
with the route's metric (correlation, or mutual information for the multimodal route) on the same
overlap. Pure numpy/scipy, deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Candidate:
    """A pose found by the search.

    ``matrix_yx`` maps moving world um (of the possibly mirrored moving
    image) to fixed world um, homogeneous 3x3.
    """

    score: float
    mi: float
    flip: bool
    angle_deg: float
    scale: float
    matrix_yx: np.ndarray
    overlap: float


def _rot(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _resize(img: np.ndarray, shape) -> np.ndarray:
    from skimage.transform import resize

    return resize(img.astype(np.float64), shape, order=1, anti_aliasing=True, preserve_range=True)


def mutual_info(a: np.ndarray, b: np.ndarray, bins: int = 16) -> float:
    """Compute the mutual information of two samples.

    Joint histogram of equal-width bins between each sample's 1st and 99th percentiles.

    Parameters
    ----------
    a, b : ndarray
        Paired samples (same size).
    bins : int
        Bins per sample.

    Returns
    -------
    float
        Mutual information in nats; 0 for fewer than 16 values.
    """
    if a.size < 16:
        return 0.0

    def q(v):
        lo, hi = np.percentile(v, [1, 99])
        return np.clip(((v - lo) / (hi - lo + 1e-12) * bins).astype(int), 0, bins - 1)

    h = np.bincount(q(a) * bins + q(b), minlength=bins * bins).reshape(bins, bins).astype(float)
    p = h / h.sum()
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Compute the Pearson correlation of two samples.

    Parameters
    ----------
    a, b : ndarray
        Paired samples (same size).

    Returns
    -------
    float
        The correlation; 0 for fewer than 4 values.
    """
    if a.size < 4:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12))


def coarse_pixel_um(fixed_shape, fixed_px, moving_px, target: int = 96) -> float:
    """Choose the pixel of the search's coarse grid.

    About ``target`` pixels across the fixed image, never finer than either image.

    Parameters
    ----------
    fixed_shape : tuple of int
        The fixed image's size.
    fixed_px, moving_px : tuple of float
        Pixel sizes (yx um).
    target : int
        Coarse pixels across the fixed image's longer side.

    Returns
    -------
    float
        The coarse pixel size in um.
    """
    ext = max(fixed_shape[0] * fixed_px[0], fixed_shape[1] * fixed_px[1])
    return float(max(ext / target, max(fixed_px), max(moving_px)))


def global_search(
    fixed: np.ndarray,
    fixed_px,
    fixed_mask: np.ndarray,
    moving: np.ndarray,
    moving_px,
    moving_footprint: np.ndarray | None = None,
    metric: str = "correlation",
    angle_step_deg: float = 4.0,
    scales: tuple[float, ...] = (1.0,),
    flips: bool = True,
    keep: int = 8,
    min_overlap: float = 0.5,
    coarse_um: float | None = None,
    inside: np.ndarray | None = None,
    fixed_tissue: np.ndarray | None = None,
    moving_tissue: np.ndarray | None = None,
    min_tissue_cover: float = 0.25,
) -> list[Candidate]:
    """Search rotation x mirror x scale x translation; return the best ``keep`` distinct poses.

    Parameters
    ----------
    fixed, moving : ndarray
        2-D images (tissue bright in both), pixel sizes ``fixed_px`` / ``moving_px`` (y, x) in um.
    fixed_mask : ndarray of bool
        Where the fixed image counts (tissue, slightly dilated).
    moving_footprint : ndarray of bool, optional
        The measured part of the moving image (default: all of it).
    metric : {"correlation", "mattes"}
        Route metric used to re-score the best poses ("mattes": mutual information).
    scales : tuple of float
        Moving-to-fixed scale factors to try (1 = the pixel sizes are right).
    fixed_px, moving_px : tuple of float
        The images' pixel sizes (y, x) in um.
    angle_step_deg : float
        Rotation step over the full circle.
    flips : bool
        Also try the mirror image of the moving image.
    keep : int
        How many distinct poses to return.
    min_overlap : float
        A pose counts only where the images overlap by this fraction of the smaller one.
    coarse_um : float, optional
        The coarse grid's pixel (default :func:`coarse_pixel_um`).
    inside : ndarray of bool, optional
        The fixed image proper when ``fixed`` was framed (:func:`.preprocess.pad_with_glass`): the
        ``min_overlap`` share of the moving raster must land inside it, not on the frame.
    fixed_tissue, moving_tissue : ndarray of bool, optional
        The two images' tissue masks (same shapes as ``fixed`` and ``moving``). When both are
        given, a pose counts only where the moving raster covers at least ``min_tissue_cover`` of
        the smaller tissue area (the fixed tissue, or the moving tissue at that scale), so that no
        pose wins on glass alone. NCC does not see contrast: on real pair A1 (fragments of tissue
        on an otherwise empty H&E) the best-correlated pose was the MSI section on the glass frame
        at a corner, where a 0.015 step in glass optical density was all the fixed image held. If
        no pose anywhere meets the rule (a tissue mask is wrong), the search ranks as without it.
    min_tissue_cover : float
        See ``fixed_tissue``.

    Returns
    -------
    list of Candidate, best first (higher score is better).
    """
    from scipy import ndimage as ndi

    c = coarse_um or coarse_pixel_um(fixed.shape, fixed_px, moving_px)
    fshape = (
        max(8, round(fixed.shape[0] * fixed_px[0] / c)),
        max(8, round(fixed.shape[1] * fixed_px[1] / c)),
    )
    f = _resize(fixed, fshape)
    fm = _resize(fixed_mask.astype(float), fshape) > 0.5
    f = (f - f[fm].mean()) / (f[fm].std() + 1e-9) if fm.any() else f
    # moving on a grid of pixel c (before rotation/scale)
    mshape = (
        max(4, round(moving.shape[0] * moving_px[0] / c)),
        max(4, round(moving.shape[1] * moving_px[1] / c)),
    )
    mfp_full = np.ones(moving.shape, bool) if moving_footprint is None else moving_footprint
    m0 = _resize(np.where(mfp_full, moving, 0.0), mshape)
    fp0 = _resize(mfp_full.astype(float), mshape) > 0.5
    cy_um = (moving.shape[0] - 1) * moving_px[0] / 2
    cx_um = (moving.shape[1] - 1) * moving_px[1] / 2
    centre = np.array([cy_um, cx_um])
    diag = np.hypot(mshape[0], mshape[1]) * max(scales) + 4
    cn = int(np.ceil(diag))
    from scipy.fft import irfft2, next_fast_len, rfft2

    P = (next_fast_len(fshape[0] + cn, True), next_fast_len(fshape[1] + cn, True))
    FA = [rfft2(a, P) for a in (fm.astype(float), f * fm, f * f * fm)]
    n_fixed = fm.sum()
    if inside is not None:
        fin = fm & (_resize(inside.astype(float), fshape) > 0.5)
        FIN, n_inside = rfft2(fin.astype(float), P), fin.sum()
    else:
        FIN, n_inside = FA[0], n_fixed
    cover_rule = fixed_tissue is not None and moving_tissue is not None
    if cover_rule:
        # fractional coarse pixels, so that tissue smaller than a coarse pixel still counts
        ft_c = _resize(np.asarray(fixed_tissue, float), fshape)
        FT, area_f = rfft2(ft_c, P), float(ft_c.sum())
        area_m0 = float(_resize(np.asarray(moving_tissue, float) * mfp_full, mshape).sum())
        cover_rule = area_f > 0 and area_m0 > 0
    results = []
    for flip in (False, True) if flips else (False,):
        mimg = m0[:, ::-1] if flip else m0
        mfp = fp0[:, ::-1] if flip else fp0
        mm = (mimg - mimg[mfp].mean()) / (mimg[mfp].std() + 1e-9) if mfp.any() else mimg
        for s in scales:
            half = np.array([cn / 2.0, cn / 2.0])
            for ang in np.arange(0.0, 360.0, angle_step_deg):
                r = _rot(ang)
                # canvas px u -> moving grid px v: v = (R^-1 (u - half) / s) + centre/c
                inv = r.T / s
                off = centre / c - inv @ half
                w = ndi.affine_transform(mm, inv, off, output_shape=(cn, cn), order=1, cval=0.0)
                wm = (
                    ndi.affine_transform(
                        mfp.astype(float), inv, off, output_shape=(cn, cn), order=1, cval=0.0
                    )
                    > 0.5
                )
                n_mov = wm.sum()
                if n_mov < 9:
                    continue
                w = w * wm
                FB = [rfft2(a, P) for a in (wm.astype(float), w, w * w)]

                def corr(x, y):
                    return irfft2(x * np.conj(y), P)

                n = corr(FA[0], FB[0])
                sf = corr(FA[1], FB[0])
                sm = corr(FA[0], FB[1])
                sff = corr(FA[2], FB[0])
                smm = corr(FA[0], FB[2])
                sfm = corr(FA[1], FB[1])
                need = min_overlap * min(n_inside, n_mov)
                n_in = n if inside is None else corr(FIN, FB[0])
                ok = (n_in > max(need, 9)) & (n > 9)
                nn = np.where(ok, n, 1.0)
                num = sfm - sf * sm / nn
                den = np.sqrt(np.clip((sff - sf**2 / nn) * (smm - sm**2 / nn), 1e-12, None))
                val = np.where(ok, num / den, -np.inf)
                covers = False
                if cover_rule:
                    cover = corr(FT, FB[0])  # fixed tissue under the moving raster
                    need_t = min_tissue_cover * min(area_f, area_m0 * s * s)
                    val_t = np.where(cover >= need_t, val, -np.inf)
                    covers = bool(np.isfinite(val_t).any())
                    if covers:
                        val = val_t
                k = int(np.argmax(val))
                dy, dx = np.unravel_index(k, P)
                dy = dy - P[0] if dy > P[0] - cn else dy  # wrap to negative shifts
                dx = dx - P[1] if dx > P[1] - cn else dx
                # moving world p -> fixed world q: q = c * (s R (p/c - centre/c) + half + d)
                a = s * r
                t = c * (half + np.array([dy, dx])) - a @ centre
                mat = np.eye(3)
                mat[:2, :2], mat[:2, 2] = a, t
                results.append(
                    (float(val.flat[k]), flip, float(ang), float(s), mat, n.flat[k], covers)
                )
    if any(r[-1] for r in results):  # poses that cover no tissue lose to any that do
        results = [r for r in results if r[-1]]
    results.sort(key=lambda x: -x[0])
    # re-score the best poses with the route metric on the overlap, then keep distinct ones
    top = results[: max(keep * 4, 24)]
    rescored = []
    for v, flip, ang, s, mat, n, _ in top:
        mi = _mi_at(f, fm, c, m0, fp0, moving_px, mat, flip) if metric != "correlation" else 0.0
        score = v  # masked NCC ranks; MI is kept as evidence (noisy on a ~50 px grid)
        rescored.append(Candidate(score, mi, flip, ang, s, mat, float(n) / max(1, n_inside)))
    rescored.sort(key=lambda x: -x.score)
    out: list[Candidate] = []
    for cand in rescored:
        if all(not _same_pose(cand, o, c) for o in out):
            out.append(cand)
        if len(out) >= keep:
            break
    return out


def _same_pose(a: Candidate, b: Candidate, c: float) -> bool:
    if a.flip != b.flip:
        return False
    d = abs((a.angle_deg - b.angle_deg + 180) % 360 - 180)
    return d < 20 and np.linalg.norm(a.matrix_yx[:2, 2] - b.matrix_yx[:2, 2]) < 8 * c


def _mi_at(f, fm, c, m0, fp0, moving_px, mat, flip) -> float:
    """Mutual information of the coarse fixed image and the moving image under ``mat`` (overlap only)."""
    from scipy import ndimage as ndi

    mimg = m0[:, ::-1] if flip else m0
    mfp = fp0[:, ::-1] if flip else fp0
    inv = np.linalg.inv(mat)  # fixed world -> moving world
    # fixed px u -> moving grid px v: v = (inv[:2,:2] (c u) + inv[:2,2]) / c
    a = inv[:2, :2]
    off = inv[:2, 2] / c
    w = ndi.affine_transform(mimg, a, off, output_shape=f.shape, order=1, cval=0.0)
    wm = ndi.affine_transform(mfp.astype(float), a, off, output_shape=f.shape, order=0) > 0.5
    sel = fm & wm
    return mutual_info(f[sel], w[sel])


def pose_disagreement_um(a: np.ndarray, b: np.ndarray, points_yx_um: np.ndarray) -> float:
    """Measure how far two poses disagree, in um.

    Parameters
    ----------
    a, b : ndarray
        3x3 homogeneous (y, x) moving -> fixed matrices.
    points_yx_um : ndarray
        ``(N, 2)`` moving points, yx um.

    Returns
    -------
    float
        The median distance between where the two send the points, in um.
    """
    pa = points_yx_um @ a[:2, :2].T + a[:2, 2]
    pb = points_yx_um @ b[:2, :2].T + b[:2, 2]
    return float(np.median(np.linalg.norm(pa - pb, axis=1)))


__all__ = [
    "Candidate",
    "coarse_pixel_um",
    "global_search",
    "mutual_info",
    "ncc",
    "pose_disagreement_um",
]
