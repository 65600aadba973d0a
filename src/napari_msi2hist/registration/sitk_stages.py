"""SimpleITK plumbing of the intensity registration: metrics, optimisers, the linear stages.

Private to :mod:`.intensity` and :mod:`.deformable`: configured ``ImageRegistrationMethod`` objects
per pyramid level, the metric of a fixed pose, the similarity start built from a search pose, the
mirror transform and the rigid/affine stages run coarse to fine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .transforms import sitk_image

if TYPE_CHECKING:
    from .intensity import RegistrationOptions


def route_metric(opts: RegistrationOptions) -> str:
    """Return the metric a registration optimises: ``opts.metric``, else Mattes mutual information.

    Both routes default to mutual information. The synthesis route used correlation (a synthetic
    H&E is meant to be H&E), but a model meeting chemistry or textures it never saw draws the right
    structures in locally wrong shades, and correlation then trades alignment for intensity
    agreement: on the 24-phantom benchmark (docs/registration.md) an undeformed section of such a
    texture sat 3.1 MSI px off by correlation and 0.2 px by mutual information, and the deformed
    ones of that texture went from 2-3 px to under 1 px.

    Parameters
    ----------
    opts : RegistrationOptions
        Its ``metric`` (None: the default).

    Returns
    -------
    str
        ``"mattes"``, ``"correlation"`` or ``"meansquares"``.
    """
    return opts.metric or "mattes"


def _metric(r, opts: RegistrationOptions):
    kind = route_metric(opts)
    if kind == "correlation":
        r.SetMetricAsCorrelation()
    elif kind == "mattes":
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=opts.mattes_bins)
    elif kind == "meansquares":
        r.SetMetricAsMeanSquares()
    else:
        raise ValueError(f"unknown metric {kind!r}")
    return kind


def _method(
    opts: RegistrationOptions,
    level: int,
    bspline: bool = False,
    affine: bool = False,
    bound: float | None = None,
    n_fixed_px: int | None = None,
):
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    _metric(r, opts)
    r.SetMetricSamplingStrategy(r.RANDOM)
    frac = opts.sampling
    if n_fixed_px and opts.max_samples:  # the level's pixels: the shrink factor divides them
        frac = min(frac, opts.max_samples * opts.shrink[level] ** 2 / n_fixed_px)
    # seed 0 means 'wall clock' to SimpleITK: offset it so that every seed is reproducible
    r.SetMetricSamplingPercentage(frac, int(opts.seed) + 1)
    r.SetInterpolator(sitk.sitkLinear)
    if bspline:
        kw = {} if not bound else {"lowerBound": -float(bound), "upperBound": float(bound)}
        r.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=opts.bspline_iterations,
            maximumNumberOfCorrections=5,
            maximumNumberOfFunctionEvaluations=4 * opts.bspline_iterations,
            **kw,
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
            r = _method(opts, level, affine=stage == "affine", n_fixed_px=fixed.GetNumberOfPixels())
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
