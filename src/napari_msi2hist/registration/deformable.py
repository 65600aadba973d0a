"""The B-spline stage, kept only when it earns its place.

Regularisation: a coarse control-point mesh (``bspline_mesh_um``), optimised coarse to fine over the
image pyramid with few iterations, so the grid cannot chase noise. Validation: a random set of tissue
blocks (``bspline_holdout`` of the tissue pixels) is left out of the optimisation's fixed mask. The
deformable result is accepted only if the folded-Jacobian fraction stays under ``bspline_max_folds``
and it fits data the optimisation never saw better than the linear result: the second view (another
image of the same raster, e.g. the MSI summary beside a synthetic H&E) by ``bspline_view_gain`` when
there is one, else the held-out pixels. Otherwise the linear transform is kept and the reason is
recorded; the held-out metrics are recorded either way.
"""

from __future__ import annotations

import numpy as np

from ..progress import Progress
from .transforms import Transform, sitk_image


def holdout_blocks(mask: np.ndarray, fraction: float, seed: int, block: int = 3) -> np.ndarray:
    """Pick a deterministic random set of tissue blocks to hold out.

    Parameters
    ----------
    mask : ndarray of bool
        ``(Y, X)`` tissue.
    fraction : float
        About this fraction of the blocks is picked.
    seed : int
        Seeds the pick (same seed, same blocks).
    block : int
        Block side in pixels.

    Returns
    -------
    ndarray of bool
        The held-out pixels: picked blocks within ``mask``.
    """
    rng = np.random.default_rng([int(seed), 11])
    ny, nx = mask.shape
    by, bx = -(-ny // block), -(-nx // block)
    pick = rng.random((by, bx)) < fraction
    grid = np.kron(pick, np.ones((block, block), bool))[:ny, :nx]
    return grid & mask


def bspline_stage(
    fixed,
    moving,
    linear,
    opts,
    n_levels,
    tissue,
    score_mask,
    mmask_img,
    f_px,
    cancel,
    done,
    total,
    make_method,
    evaluate,
    view=None,
):
    """Optimise a B-spline on top of a linear transform, validated on held-out tissue.

    The B-spline is fitted on the tissue minus held-out blocks (:func:`holdout_blocks`) and kept
    only when the grid does not fold (:func:`jacobian_folds`) and it fits unseen data better: the
    second view when there is one, else the held-out blocks; else the linear transform is kept.

    Parameters
    ----------
    fixed, moving : SimpleITK.Image
        The registration's images.
    linear : SimpleITK.Transform
        The linear result it starts from.
    opts : RegistrationOptions
        Mesh spacing, held-out fraction, fold limit, pyramid, seed.
    n_levels : int
        Pyramid levels.
    tissue : ndarray of bool
        Fixed-grid tissue mask (the blocks are held out of it).
    score_mask : ndarray of bool or None
        Where the metric may be computed (None: everywhere).
    mmask_img : SimpleITK.Image or None
        Moving mask for the metric.
    f_px : tuple of float
        Fixed pixel size (yx um).
    cancel : CancelToken or None
        Checked before and after the optimisation.
    done, total : int
        Progress counts of the whole registration before this stage.
    make_method : callable
        ``make_method(opts, level, bspline=True)`` -> a configured ``ImageRegistrationMethod``.
    evaluate : callable
        ``evaluate(fixed, moving, transform, opts, fixed_mask, moving_mask)`` -> the metric (lower
        is better).
    view : tuple, optional
        ``(image, mask, opts, name)``: a second image of the same raster (see :mod:`.consensus`),
        never used by the fit. When given (and it overlaps), it replaces the held-out check: the
        B-spline is refused unless it improves that image's metric (over all scored pixels) over
        the linear result by at least ``opts.bspline_view_gain`` (relative).

    Yields
    ------
    Progress
        One, after the optimisation (stage ``bspline``, ``info``: the metric).

    Returns
    -------
    transform, info
        The composite linear + B-spline transform, or ``linear`` when rejected; and a dict with the
        decision, its reason, the held-out metrics, the fold fraction and the mesh.
    """
    import SimpleITK as sitk

    held = holdout_blocks(tissue, opts.bspline_holdout, opts.seed)
    base = score_mask if score_mask is not None else np.ones(tissue.shape, bool)
    train = base & ~held

    def mask(m):
        return sitk.Cast(sitk_image(m.astype(np.float32), f_px), sitk.sitkUInt8)

    domain = _grid_domain(fixed)
    mesh = [
        max(1, int(round(sz * sp / opts.bspline_mesh_um)))
        for sz, sp in zip(domain.GetSize(), domain.GetSpacing(), strict=True)
    ]
    bs = sitk.BSplineTransformInitializer(domain, mesh, order=3)
    linear_c = sitk.CompositeTransform([linear])
    if cancel is not None:
        cancel.check()
    # coefficients bounded to a fraction of the grid spacing: a grid that cannot fold (see
    # RegistrationOptions.bspline_bound); the spacing is the initialiser's, not the requested mesh
    spacing = min(bs.GetFixedParameters()[4:6])  # 2-D fixed parameters: size, origin, spacing
    bound = opts.bspline_bound * spacing if opts.bspline_bound > 0 else None
    r = make_method(opts, 0, bspline=True, bound=bound)
    r.SetShrinkFactorsPerLevel(list(opts.shrink))
    r.SetSmoothingSigmasPerLevel(list(opts.smooth_px))
    r.SetMovingInitialTransform(linear_c)
    r.SetMetricFixedMask(mask(train))
    if mmask_img is not None:
        r.SetMetricMovingMask(mmask_img)
    # SetInitialTransform, not SetInitialTransformAsBSpline: the latter's per-level adaptor resets
    # the grid to the fixed image's pixel-centre extent, so that the image's own first row and
    # column lie on the grid's edge (the displacement drops to 0 there: false folds that rejected
    # good B-splines) and an H&E pixel past the last registration pixel gets none (a tear). The mesh
    # is not refined between levels either way.
    r.SetInitialTransform(bs, inPlace=True)
    try:
        out = r.Execute(fixed, moving)
    except RuntimeError as e:
        raise RuntimeError(
            f"bspline registration failed: {str(e).splitlines()[-1][:200]}"
        ) from None
    bs = sitk.BSplineTransform(out) if out.GetName() == "BSplineTransform" else bs
    if cancel is not None:
        cancel.check()
    yield Progress(done + n_levels, total, "bspline", {"metric": float(r.GetMetricValue())})
    both = sitk.CompositeTransform([linear, bs])
    hmask = mask(held)
    before = evaluate(fixed, moving, linear, opts, hmask, mmask_img)
    after = evaluate(fixed, moving, both, opts, hmask, mmask_img)
    shape = (fixed.GetSize()[1], fixed.GetSize()[0])
    folds = jacobian_folds(Transform(both), shape, f_px)
    gain = before - after  # metrics are minimised
    v_before = v_after = None
    view_ok = None  # None: no second view to judge by
    if view is not None:
        v_img, v_mask, v_opts, v_name = view
        smask = mask(base)
        v_before = evaluate(fixed, v_img, linear, v_opts, smask, v_mask)
        v_after = evaluate(fixed, v_img, both, v_opts, smask, v_mask)
        if np.isfinite(v_before):
            view_ok = bool(
                np.isfinite(v_after)
                and v_after <= v_before - opts.bspline_view_gain * abs(v_before)
            )
    held_ok = bool(np.isfinite(after) and gain > 1e-3 * abs(before))
    # with a second view, that view decides: it is data the fit never saw, not only pixels of the
    # fitted image, whose held-out blocks share that image's own errors (on the benchmark, held-out
    # blocks of a synthetic H&E scored B-splines that halved the error as worse, and undeformed
    # sections' needless grids as better; the second view told both apart)
    accepted = bool(
        folds <= opts.bspline_max_folds and (view_ok if view_ok is not None else held_ok)
    )
    if accepted:
        reason = "accepted: the grid does not fold and " + (
            f"the {view[3]} (never used by the fit) fits better"
            if view_ok is not None
            else "the metric on held-out tissue pixels improved"
        )
    elif folds > opts.bspline_max_folds:
        reason = f"rejected: folded-Jacobian fraction {folds:.4f} > {opts.bspline_max_folds}"
    elif view_ok is None:
        reason = "rejected: no improvement of the metric on held-out tissue pixels"
    else:
        v_gain = (v_before - v_after) / abs(v_before) if np.isfinite(v_after) else float("nan")
        reason = (
            f"rejected: the {view[3]}'s fit improves by {100 * v_gain:+.1f} %, under the "
            f"{100 * opts.bspline_view_gain:.0f} % a real deformation brings"
        )
    reason += "" if accepted else "; the affine result is kept"
    info = {
        "accepted": accepted,
        "reason": reason,
        "heldout_metric_linear": float(before),
        "heldout_metric_bspline": float(after),
        "heldout_improved": held_ok,
        "fold_fraction": float(folds),
        "heldout_fraction": float(held.sum() / max(1, tissue.sum())),
        "mesh": mesh,
        "coefficient_bound_um": None if bound is None else float(bound),
    }
    if view is not None:
        info["view_metric_linear"] = float(v_before)
        info["view_metric_bspline"] = float(v_after)
    return (both if accepted else linear), info


DOMAIN_PAD_PX = 2  # registration pixels the B-spline grid reaches past the fixed image, each side


def _grid_domain(fixed):
    """Return an empty image: ``fixed`` grown by :data:`DOMAIN_PAD_PX` pixels on every side.

    A B-spline transform displaces only inside its grid's region (SimpleITK's initialiser takes
    about the image's pixel-edge extent); a point outside keeps the linear transform alone, so the
    map jumps there. The transform is applied to finer grids of the same tissue than the one it was fitted
    on (the H&E at its own pixel, a whole slide's level 0): their last pixels lie up to about 1.5
    registration pixels past this image's last one (the registration level is a block average,
    its remainder cut off), and without the margin the registered image tears along those edges.
    """
    import SimpleITK as sitk

    pad = DOMAIN_PAD_PX
    dom = sitk.Image([int(n) + 2 * pad for n in fixed.GetSize()], sitk.sitkUInt8)
    dom.SetSpacing(fixed.GetSpacing())
    dom.SetDirection(fixed.GetDirection())
    sp, d = np.asarray(fixed.GetSpacing()), np.asarray(fixed.GetDirection()).reshape(2, 2)
    dom.SetOrigin(tuple(np.asarray(fixed.GetOrigin()) - d @ (pad * sp)))
    return dom


def jacobian_folds(transform: Transform, shape_yx, px) -> float:
    """Measure where a transform folds, as a fraction of the fixed grid's pixels.

    A pixel folds where the Jacobian determinant has lost the sign of the transform's overall
    orientation. A mirror image or a rotation by nearly 180 degrees is not a fold (the map stays one-to-one); a
    fold is where the local orientation disagrees with the global one. The determinant comes from
    differences of the mapped positions on the grid (central inside, one-sided at the border, so
    that a large rotation does not read as folds along the edges).

    Parameters
    ----------
    transform : Transform
        Fixed -> moving; a linear one never folds.
    shape_yx : tuple of int
        The fixed grid's size.
    px : tuple of float
        Its pixel size (yx um).

    Returns
    -------
    float
        Fraction of pixels, 0 to 1.
    """
    import SimpleITK as sitk

    if transform.is_linear:
        return 0.0
    ny, nx = (int(v) for v in shape_yx)
    py, pxx = float(px[0]), float(px[1])
    field = sitk.TransformToDisplacementField(
        transform.itk, sitk.sitkVectorFloat64, (nx, ny), (0.0, 0.0), (pxx, py), (1.0, 0.0, 0.0, 1.0)
    )
    u = sitk.GetArrayFromImage(field)  # (Y, X, 2): x, y displacement in um
    yy, xx = np.meshgrid(np.arange(ny) * py, np.arange(nx) * pxx, indexing="ij")
    tx, ty = xx + u[..., 0], yy + u[..., 1]
    if min(ny, nx) < 2:
        return 0.0
    dtx_dy, dtx_dx = np.gradient(tx, py, pxx)
    dty_dy, dty_dx = np.gradient(ty, py, pxx)
    det = dtx_dx * dty_dy - dtx_dy * dty_dx
    sign = np.sign(np.median(det)) or 1.0
    return float((det * sign <= 0).mean())
