"""Intensity registration with SimpleITK, as a progress generator (one yield per stage level).

Routes (seed 000's point): ``synthesis`` registers the synthetic H&E (made from the MSI) to the real
H&E, a unimodal problem (optical density images, correlation metric); ``direct`` registers an MSI
summary image (TIC or first principal component) to the real H&E with Mattes mutual information,
the multimodal baseline. Both run the same stages: moments initialisation with a coarse rotation
search (sections are often rotated or flipped), then ``rigid``, ``affine`` and optionally ``bspline``,
multi-resolution, all in physical micrometres. The fixed image is the H&E; the result maps fixed
world points to moving world points (ITK convention), wrapped in :class:`Transform`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field, replace

import numpy as np

from ..progress import CancelToken, Progress
from .transforms import Transform, sitk_image

STAGES = ("rigid", "affine", "bspline")


@dataclass(frozen=True)
class RegistrationOptions:
    """Options of the intensity registration; one default each.

    The comments beside the fields give their meaning; :func:`iter_register` documents how they are
    used.
    """

    route: str = "synthesis"  # synthesis | direct
    metric: str | None = None  # None: correlation (synthesis) / mattes (direct)
    stages: tuple[str, ...] = ("rigid", "affine")
    shrink: tuple[int, ...] = (4, 2, 1)
    smooth_px: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 200
    rotation_search: int = 12  # > 0: global pose search (see search.py); 0: moments start only
    flip_search: bool = True  # the search also tries the mirror image
    angle_step_deg: float = 4.0  # rotation step of the search (full circle)
    scale_range: float = 1.25  # scales searched: [1/r, r] around the pixel-size ratio
    scale_steps: int = 5
    refine_top: int = 4  # best distinct search poses refined by the linear stages
    affine_step: float = 0.2  # first step of the affine optimiser (physical-shift scaled)
    threads: int = 1  # ITK threads (a fixed number keeps results bit-identical)
    bspline_iterations: int = 50  # few iterations: a regulariser of their own
    bspline_holdout: float = 0.25  # fraction of tissue pixels kept out of the B-spline fit
    bspline_max_folds: float = 0.001  # B-spline rejected above this folded-Jacobian fraction
    bspline_mesh_um: float = 160.0
    mattes_bins: int = 32
    sampling: float = 0.5
    seed: int = 0
    working_pixel_um: float | None = None  # resample both images to this (default: the coarser one)
    extra: dict = field(default_factory=dict)


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


def msi_summary(stack: np.ndarray, kind: str = "tic", mask: np.ndarray | None = None) -> np.ndarray:
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

    Returns
    -------
    ndarray
        ``(Y, X)`` float32 scaled so that the 1st..99th percentiles span [0, 1], clipped.
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
    lo, hi = np.percentile(img, [1, 99])
    return np.clip((img - lo) / (hi - lo + 1e-12), 0, 1).astype(np.float32)


def _downsample_to(img: np.ndarray, px, target_px: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Area-average an image to about ``target_px`` um pixels (never upsample)."""
    from skimage.transform import downscale_local_mean

    fy, fx = max(1, int(round(target_px / px[0]))), max(1, int(round(target_px / px[1])))
    if fy == 1 and fx == 1:
        return img.astype(np.float32), (float(px[0]), float(px[1]))
    return downscale_local_mean(img, (fy, fx)).astype(np.float32), (px[0] * fy, px[1] * fx)


def _metric(r, opts: RegistrationOptions):
    kind = opts.metric or ("correlation" if opts.route == "synthesis" else "mattes")
    if kind == "correlation":
        r.SetMetricAsCorrelation()
    elif kind == "mattes":
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=opts.mattes_bins)
    elif kind == "meansquares":
        r.SetMetricAsMeanSquares()
    else:
        raise ValueError(f"unknown metric {kind!r}")
    return kind


def _method(opts: RegistrationOptions, level: int, bspline: bool = False, affine: bool = False):
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    _metric(r, opts)
    r.SetMetricSamplingStrategy(r.RANDOM)
    # seed 0 means 'wall clock' to SimpleITK: offset it so that every seed is reproducible
    r.SetMetricSamplingPercentage(opts.sampling, int(opts.seed) + 1)
    r.SetInterpolator(sitk.sitkLinear)
    if bspline:
        r.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=opts.bspline_iterations,
            maximumNumberOfCorrections=5,
            maximumNumberOfFunctionEvaluations=4 * opts.bspline_iterations,
        )
    elif not affine:
        r.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0,
            minStep=1e-4,
            numberOfIterations=opts.iterations,
            relaxationFactor=0.6,
            gradientMagnitudeTolerance=1e-8,
        )
        r.SetOptimizerScalesFromPhysicalShift()
    else:
        # affine: small regular steps (a large first step lets the matrix run away on a flat
        # correlation surface)
        r.SetOptimizerAsRegularStepGradientDescent(
            learningRate=opts.affine_step,
            minStep=1e-5,
            numberOfIterations=opts.iterations,
            relaxationFactor=0.7,
            gradientMagnitudeTolerance=1e-9,
        )
        r.SetOptimizerScalesFromPhysicalShift()
    k = level
    r.SetShrinkFactorsPerLevel([opts.shrink[k]])
    r.SetSmoothingSigmasPerLevel([opts.smooth_px[k]])
    r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return r


def _evaluate(fixed, moving, transform, opts, fixed_mask=None, moving_mask=None) -> float:
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    _metric(r, opts)
    r.SetMetricSamplingStrategy(r.NONE)
    if fixed_mask is not None:
        r.SetMetricFixedMask(fixed_mask)
    if moving_mask is not None:
        r.SetMetricMovingMask(moving_mask)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetInitialTransform(transform, inPlace=False)
    try:
        return float(r.MetricEvaluate(fixed, moving))
    except RuntimeError:  # no overlap
        return np.inf


def _similarity_init(m_fixed_to_moving_yx: np.ndarray, center_xy):
    """Build a SimpleITK Similarity2DTransform (fixed -> moving) from a 3x3 yx similarity matrix."""
    import SimpleITK as sitk

    a_xy = m_fixed_to_moving_yx[:2, :2][::-1, ::-1]
    o_xy = m_fixed_to_moving_yx[:2, 2][::-1]
    sc = float(np.sqrt(abs(np.linalg.det(a_xy))))
    ang = float(np.arctan2(a_xy[1, 0], a_xy[0, 0]))
    c = np.asarray(center_xy, float)
    t = sitk.Similarity2DTransform()
    t.SetCenter(tuple(c))
    t.SetScale(sc)
    t.SetAngle(ang)
    r = np.asarray(t.GetMatrix()).reshape(2, 2)
    t.SetTranslation(tuple(o_xy - c + r @ c))
    return t


def _flip_x_affine(width_um: float):
    """(y, x) -> (y, width - x) as an ITK affine: maps the mirrored moving frame to the moving frame."""
    import SimpleITK as sitk

    t = sitk.AffineTransform(2)
    t.SetMatrix((-1.0, 0.0, 0.0, 1.0))
    t.SetTranslation((float(width_um), 0.0))
    return t


def _mask_img(mask: np.ndarray, px):
    import SimpleITK as sitk

    return sitk.Cast(sitk_image(mask.astype(np.float32), px), sitk.sitkUInt8)


def _run_linear(fixed, moving, tr, opts, n_levels, fmask, mmask, cancel, progress, stages):
    """Rigid/affine stages, coarse to fine, in place on ``tr``; yields (stage, level, metric)."""
    import SimpleITK as sitk

    current = tr
    for stage in stages:
        if stage == "rigid":
            t = current
        elif stage == "affine":
            t = sitk.AffineTransform(2)
            t.SetCenter(current.GetCenter())
            t.SetMatrix(current.GetMatrix())
            t.SetTranslation(current.GetTranslation())
        else:
            continue
        for level in range(n_levels):
            if cancel is not None:
                cancel.check()
            r = _method(opts, level, affine=stage == "affine")
            if fmask is not None:
                r.SetMetricFixedMask(fmask)
            if mmask is not None:
                r.SetMetricMovingMask(mmask)
            r.SetInitialTransform(t, inPlace=True)
            try:
                r.Execute(fixed, moving)
            except RuntimeError as e:
                raise RuntimeError(
                    f"{stage} registration failed at level {level}: {str(e).splitlines()[-1][:200]}"
                ) from None
            if progress is not None:
                yield stage, level, float(r.GetMetricValue())
        current = t
    return current


def iter_register(
    fixed_yx: np.ndarray,
    fixed_px,
    moving_yx: np.ndarray,
    moving_px,
    opts: RegistrationOptions = RegistrationOptions(),
    fixed_mask: np.ndarray | None = None,
    cancel: CancelToken | None = None,
    initial: Transform | None = None,
    moving_mask: np.ndarray | None = None,
    fixed_exclude: np.ndarray | None = None,
) -> Generator[Progress, None, Transform]:
    """Register a moving image to a fixed one (2-D float images, tissue bright).

    ``fixed_mask``: fixed tissue (default: detected); ``moving_mask``: the measured part of the
    moving image (default: all of it). A global search (every rotation, mirror images, scales; see
    :mod:`.search`) proposes poses; the best ``opts.refine_top`` are refined by the linear stages
    and the one with the best metric wins. ``initial`` (a similarity, e.g. fitted to landmarks)
    replaces the search. A ``bspline`` stage is kept only when it improves the metric on held-out
    tissue pixels and does not fold (see :mod:`.deformable`); the decision is in
    ``transform.meta["bspline"]``.

    Parameters
    ----------
    fixed_yx, moving_yx : ndarray
        The images.
    fixed_px, moving_px : tuple of float
        Their pixel sizes (y, x) in um.
    opts : RegistrationOptions
        Stages, metric, search, pyramid, B-spline and seed.
    fixed_mask : ndarray of bool, optional
        Fixed tissue (default: detected).
    cancel : CancelToken, optional
        Checked between candidates, levels and iterations; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.
    initial : Transform, optional
        A starting pose (a similarity, e.g. fitted to landmarks) that replaces the search.
    moving_mask : ndarray of bool, optional
        The measured part of the moving image (default: all of it).
    fixed_exclude : ndarray of bool, optional
        Fixed pixels the metric never counts (text, pen, debris); without it the metric counts the
        tissue and a rim of glass.

    Yields
    ------
    Progress
        Initialisation (the search's candidates), then each optimiser iteration of each stage and
        candidate (``info``: the metric).

    Returns
    -------
    Transform
        Fixed world -> moving world; ``meta`` records the stages, the search's candidates and the
        B-spline decision.
    """
    import SimpleITK as sitk

    from .deformable import bspline_stage
    from .search import global_search
    from .tissue import image_tissue_mask

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, opts.threads))
    for s in opts.stages:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r} (use {', '.join(STAGES)})")
    target = opts.working_pixel_um or max(max(fixed_px), max(moving_px))
    f_img, f_px = _downsample_to(fixed_yx, fixed_px, target)
    m_img, m_px = _downsample_to(moving_yx, moving_px, target)
    if fixed_mask is None:
        fmask_np = image_tissue_mask(f_img)
    else:
        fmask_np = _downsample_to(fixed_mask.astype(np.float32), fixed_px, target)[0] > 0.5
    mfoot = (
        np.ones(m_img.shape, bool)
        if moving_mask is None
        else _downsample_to(moving_mask.astype(np.float32), moving_px, target)[0] > 0.5
    )
    from scipy import ndimage as ndi

    if fixed_exclude is not None:
        # the metric counts glass and tissue (outlines are informative), never text, pen or debris
        ex = _downsample_to(fixed_exclude.astype(np.float32), fixed_px, target)[0] > 0.25
        score_mask = ~ex
    else:  # tissue and a rim of glass around it
        rim = max(2, int(round(60.0 / f_px[0])))
        score_mask = ndi.binary_dilation(fmask_np, iterations=rim) if fmask_np.any() else None
    fixed = sitk_image(f_img, f_px)
    smallest = min(*f_img.shape, *m_img.shape)
    levels = [
        (s, sm) for s, sm in zip(opts.shrink, opts.smooth_px, strict=True) if smallest / s >= 32
    ] or [(1, 0.0)]
    opts = replace(
        opts, shrink=tuple(s for s, _ in levels), smooth_px=tuple(sm for _, sm in levels)
    )
    n_levels = len(opts.shrink)
    linear = [s for s in opts.stages if s != "bspline"]
    use_search = initial is None and opts.rotation_search > 0
    n_cand = opts.refine_top if use_search else 1
    total = 1 + n_cand * n_levels * len(linear) + (n_levels if "bspline" in opts.stages else 0)
    done = 0
    yield Progress(done, total, "initialisation")
    metric_kind = opts.metric or ("correlation" if opts.route == "synthesis" else "mattes")

    starts = []  # (flip, fixed->moving yx 3x3 matrix in the (mirrored) moving frame, search info)
    if initial is not None:
        starts.append((False, np.linalg.inv(initial.linear_moving_to_fixed_yx()), {}))
    elif use_search:
        if opts.scale_range > 1.0 and opts.scale_steps > 1:
            scales = tuple(
                np.geomspace(1 / opts.scale_range, opts.scale_range, opts.scale_steps).tolist()
            )
        else:
            scales = (1.0,)
        cands = global_search(
            f_img,
            f_px,
            score_mask if score_mask is not None else fmask_np,
            m_img,
            m_px,
            mfoot,
            metric=metric_kind,
            angle_step_deg=opts.angle_step_deg,
            scales=scales,
            flips=opts.flip_search,
            keep=n_cand,
        )
        for c in cands:
            info = {
                "flip": c.flip,
                "angle_deg": c.angle_deg,
                "scale": c.scale,
                "coarse_ncc": c.score,
                "coarse_mi": c.mi,
            }
            starts.append((c.flip, np.linalg.inv(c.matrix_yx), info))
    if not starts:  # no search: moments initialisation
        base = sitk.CenteredTransformInitializer(
            fixed,
            sitk_image(m_img, m_px),
            sitk.Similarity2DTransform(),
            sitk.CenteredTransformInitializerFilter.MOMENTS,
        )
        base = sitk.Similarity2DTransform(base)
        starts.append((False, None, {}))
    if cancel is not None:
        cancel.check()
    done += 1
    yield Progress(done, total, "initialisation", {"candidates": len(starts)})

    fmask_img = _mask_img(score_mask, f_px) if score_mask is not None else None
    width = (m_img.shape[1] - 1) * m_px[1]
    refined = []
    for k, (flip, m_yx, info) in enumerate(starts):
        mimg = m_img[:, ::-1] if flip else m_img
        mf = mfoot[:, ::-1] if flip else mfoot
        moving = sitk_image(mimg, m_px)
        mmask_img = None if mf.all() else _mask_img(mf, m_px)
        if m_yx is None:
            tr = base
        else:
            centre = np.asarray(
                fixed.TransformContinuousIndexToPhysicalPoint(
                    [(fixed.GetSize()[0] - 1) / 2, (fixed.GetSize()[1] - 1) / 2]
                )
            )
            tr = _similarity_init(m_yx, centre)
        gen = _run_linear(
            fixed, moving, tr, opts, n_levels, fmask_img, mmask_img, cancel, True, linear
        )
        while True:
            try:
                stage, level, val = next(gen)
            except StopIteration as stop:
                final_linear = stop.value
                break
            done += 1
            yield Progress(
                done,
                total,
                f"{stage} level {level + 1}/{n_levels} (start {k + 1}/{len(starts)})",
                {"metric": val},
            )
        val = _evaluate(fixed, moving, final_linear, opts, fmask_img, mmask_img)
        refined.append((val, flip, final_linear, info, moving, mmask_img))
    order = sorted(range(len(refined)), key=lambda i: refined[i][0])
    best_val, flip, lin, info, moving, mmask_img = refined[order[0]]

    def _to_moving_yx(i):
        # full fixed -> moving linear matrix (yx) of refined candidate i, mirror included
        v, fl, t, *_ = refined[i]
        parts = [_flip_x_affine(width), t] if fl else [t]
        return Transform(sitk.CompositeTransform(parts))._linear_matrix_fixed_to_moving_yx()

    tissue_pts = np.argwhere(fmask_np)[:: max(1, int(fmask_np.sum() // 400))] * np.asarray(f_px)
    search_ev = {
        "candidates": [{**refined[i][3], "refined_metric": float(refined[i][0])} for i in order],
    }
    if len(order) > 1 and len(tissue_pts):
        ma, mb = (_to_moving_yx(order[i]) for i in (0, 1))
        pa = tissue_pts @ ma[:2, :2].T + ma[:2, 2]
        pb = tissue_pts @ mb[:2, :2].T + mb[:2, 2]
        # where best and runner-up send the same fixed tissue points (moving world um)
        search_ev["runner_up_disagreement_um"] = float(np.median(np.linalg.norm(pa - pb, axis=1)))
        search_ev["runner_up_metric"] = float(refined[order[1]][0])
    search_ev["best_metric"] = float(best_val)

    bs_info = None
    current = lin
    if "bspline" in opts.stages:
        current, bs_info = yield from bspline_stage(
            fixed,
            moving,
            lin,
            opts,
            n_levels,
            fmask_np,
            score_mask,
            mmask_img,
            f_px,
            cancel,
            done,
            total,
            _method,
            _evaluate,
        )
    parts = [_flip_x_affine(width)] if flip else []
    if isinstance(current, sitk.CompositeTransform):
        for i in range(current.GetNumberOfTransforms()):
            parts.append(current.GetNthTransform(i))
    else:
        parts.append(current)
    final = sitk.CompositeTransform(parts)
    meta = {
        "route": opts.route,
        "stages": list(opts.stages),
        "metric": metric_kind,
        "working_pixel_um": [float(f_px[0]), float(f_px[1])],
        "search": search_ev,
        "flipped": bool(flip),
        "bspline": bs_info,
        "seed": opts.seed,
    }
    yield Progress(total, total, "done")
    return Transform(final, meta)
