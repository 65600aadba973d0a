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
    route: str = "synthesis"  # synthesis | direct
    metric: str | None = None  # None: correlation (synthesis) / mattes (direct)
    stages: tuple[str, ...] = ("rigid", "affine")
    shrink: tuple[int, ...] = (4, 2, 1)
    smooth_px: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 200
    rotation_search: int = 12  # number of start angles tried (0 = none)
    flip_search: bool = False
    bspline_mesh_um: float = 250.0
    mattes_bins: int = 32
    sampling: float = 0.5
    seed: int = 0
    working_pixel_um: float | None = None  # resample both images to this (default: the coarser one)
    extra: dict = field(default_factory=dict)


def od_image(rgb: np.ndarray) -> np.ndarray:
    """Optical density summed over RGB: tissue bright, glass ~0 (a unimodal H&E representation)."""
    f = np.asarray(rgb, dtype=np.float64)
    f = f / 255.0 if np.asarray(rgb).dtype == np.uint8 or f.max() > 1.5 else f
    return (-np.log(np.clip(f, 1 / 255, 1.0))).sum(-1).astype(np.float32)


def msi_summary(stack: np.ndarray, kind: str = "tic", mask: np.ndarray | None = None) -> np.ndarray:
    """TIC-like sum, or first principal component, of a ``(C, Y, X)`` stack (robustly scaled)."""
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


def _method(opts: RegistrationOptions, level: int, bspline: bool = False):
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    _metric(r, opts)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(opts.sampling, opts.seed)
    r.SetInterpolator(sitk.sitkLinear)
    if bspline:
        r.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=opts.iterations,
            maximumNumberOfCorrections=5,
            maximumNumberOfFunctionEvaluations=4 * opts.iterations,
        )
    else:
        r.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0,
            minStep=1e-4,
            numberOfIterations=opts.iterations,
            relaxationFactor=0.6,
            gradientMagnitudeTolerance=1e-8,
        )
        r.SetOptimizerScalesFromPhysicalShift()
    k = level
    r.SetShrinkFactorsPerLevel([opts.shrink[k]])
    r.SetSmoothingSigmasPerLevel([opts.smooth_px[k]])
    r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return r


def _evaluate(fixed, moving, transform, opts) -> float:
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    _metric(r, opts)
    r.SetMetricSamplingStrategy(r.NONE)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetInitialTransform(transform, inPlace=False)
    try:
        return float(r.MetricEvaluate(fixed, moving))
    except RuntimeError:  # no overlap
        return np.inf


def iter_register(
    fixed_yx: np.ndarray,
    fixed_px,
    moving_yx: np.ndarray,
    moving_px,
    opts: RegistrationOptions = RegistrationOptions(),
    fixed_mask: np.ndarray | None = None,
    cancel: CancelToken | None = None,
    initial: Transform | None = None,
) -> Generator[Progress, None, Transform]:
    """Register ``moving`` to ``fixed`` (2-D float images with (y, x) pixel sizes in um). ``initial``
    (a similarity, e.g. fitted to landmarks) replaces the moments initialisation and rotation search."""
    import SimpleITK as sitk

    for s in opts.stages:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r} (use {', '.join(STAGES)})")
    target = opts.working_pixel_um or max(max(fixed_px), max(moving_px))
    f_img, f_px = _downsample_to(fixed_yx, fixed_px, target)
    m_img, m_px = _downsample_to(moving_yx, moving_px, target)
    fixed = sitk_image(f_img, f_px)
    moving = sitk_image(m_img, m_px)
    # never shrink an image below ~32 px at a level (the start search runs at the coarsest kept
    # level): small MSI images (60-100 px) otherwise leave Mattes MI a few hundred samples and the
    # start search picks wrong angles
    smallest = min(*f_img.shape, *m_img.shape)
    levels = [
        (s, sm) for s, sm in zip(opts.shrink, opts.smooth_px, strict=True) if smallest / s >= 32
    ] or [(1, 0.0)]
    opts = replace(
        opts, shrink=tuple(s for s, _ in levels), smooth_px=tuple(sm for _, sm in levels)
    )
    n_levels = len(opts.shrink)
    total = 1 + n_levels * len(opts.stages)
    done = 0
    yield Progress(done, total, "initialisation")

    # moments initialisation + coarse rotation (and flip) search at the coarsest level
    base = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Similarity2DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    base = sitk.Similarity2DTransform(base)
    coarse_f = sitk.SmoothingRecursiveGaussian(
        sitk.Shrink(fixed, [opts.shrink[0]] * 2), 1.0 * f_px[0] * opts.shrink[0]
    )
    coarse_m = sitk.SmoothingRecursiveGaussian(
        sitk.Shrink(moving, [opts.shrink[0]] * 2), 1.0 * m_px[0] * opts.shrink[0]
    )
    best, best_val = base, np.inf
    angles = [2 * np.pi * k / opts.rotation_search for k in range(opts.rotation_search)] or [0.0]
    if initial is not None:
        m = np.linalg.inv(initial.linear_moving_to_fixed_yx())  # fixed -> moving, yx
        a_xy = m[:2, :2][::-1, ::-1]
        o_xy = m[:2, 2][::-1]
        c = np.asarray(base.GetCenter(), float)
        base = sitk.Similarity2DTransform()
        base.SetCenter(tuple(c))
        base.SetMatrix(tuple(a_xy.ravel()))
        base.SetTranslation(tuple(o_xy - c + a_xy @ c))
        best, angles = base, []
    for ang in angles:
        if cancel is not None:
            cancel.check()
        t = sitk.Similarity2DTransform(base)
        t.SetAngle(base.GetAngle() + ang)
        r = _method(opts, 0)
        r.SetShrinkFactorsPerLevel([1])
        r.SetSmoothingSigmasPerLevel([0])
        r.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=1e-3, numberOfIterations=30
        )
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetInitialTransform(t, inPlace=True)
        try:
            r.Execute(coarse_f, coarse_m)
        except RuntimeError:
            continue
        v = _evaluate(coarse_f, coarse_m, t, opts)
        if v < best_val:
            best, best_val = sitk.Similarity2DTransform(t), v
    done += 1
    yield Progress(done, total, "initialisation", {"metric": best_val})

    mask_img = None
    if fixed_mask is not None:  # resampled once, used at every stage and level
        m = _downsample_to(fixed_mask.astype(np.float32), fixed_px, target)[0] > 0.5
        mask_img = sitk.Cast(sitk_image(m, f_px), sitk.sitkUInt8)
    composite = sitk.CompositeTransform(2)
    current = best
    history = {}
    for stage in opts.stages:
        if stage == "rigid":
            tr = (
                sitk.Similarity2DTransform(current)
                if isinstance(current, sitk.Similarity2DTransform)
                else current
            )
        elif stage == "affine":
            tr = sitk.AffineTransform(2)
            tr.SetCenter(current.GetCenter())
            tr.SetMatrix(current.GetMatrix())
            tr.SetTranslation(current.GetTranslation())
        else:  # bspline on top of the linear result
            composite = sitk.CompositeTransform([current])
            mesh = [
                max(1, int(round(sz * sp / opts.bspline_mesh_um)))
                for sz, sp in zip(fixed.GetSize(), fixed.GetSpacing(), strict=True)
            ]
            tr = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
        vals = []
        for level in range(n_levels):
            if cancel is not None:
                cancel.check()
            r = _method(opts, level, bspline=stage == "bspline")
            if stage == "bspline":
                r.SetMovingInitialTransform(composite)
            if mask_img is not None:
                r.SetMetricFixedMask(mask_img)
            r.SetInitialTransform(tr, inPlace=True)
            try:
                r.Execute(fixed, moving)
                vals.append(float(r.GetMetricValue()))
            except RuntimeError as e:
                raise RuntimeError(
                    f"{stage} registration failed at level {level}: {str(e).splitlines()[-1][:200]}"
                ) from None
            done += 1
            yield Progress(
                done, total, f"{stage} level {level + 1}/{n_levels}", {"metric": vals[-1]}
            )
        history[stage] = vals
        if stage == "bspline":
            composite.AddTransform(tr)
            current = composite
        else:
            current = tr
    final = (
        current
        if isinstance(current, sitk.CompositeTransform)
        else sitk.CompositeTransform([current])
    )
    meta = {
        "route": opts.route,
        "stages": list(opts.stages),
        "metric_history": history,
        "working_pixel_um": [float(f_px[0]), float(f_px[1])],
    }
    return Transform(final, meta)


def jacobian_folds(transform: Transform, shape_yx, px) -> float:
    """Fraction of fixed-grid pixels where the fixed->moving mapping folds (det J <= 0)."""
    import SimpleITK as sitk

    if transform.is_linear:
        return 0.0
    ref = sitk_image(np.zeros(shape_yx, np.float32), px)
    field = sitk.TransformToDisplacementField(
        transform.itk,
        sitk.sitkVectorFloat64,
        ref.GetSize(),
        ref.GetOrigin(),
        ref.GetSpacing(),
        ref.GetDirection(),
    )
    det = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))
    return float((det <= 0).mean())
