"""Intensity registration with SimpleITK, as a progress generator (one yield per stage level).

Routes (seed 000's point): ``synthesis`` registers the synthetic H&E (made from the MSI) to the real
H&E (optical density images); ``direct`` registers an MSI summary image (TIC or first principal
component) to the real H&E, the multimodal baseline. Both optimise Mattes mutual information unless
told otherwise (see :func:`.sitk_stages.route_metric`) and run the same stages: moments
initialisation with a coarse rotation search (sections are often rotated or flipped), then
``rigid``, ``affine`` and optionally ``bspline``, multi-resolution, all in physical micrometres. The fixed image is the H&E; the result maps fixed
world points to moving world points (ITK convention), wrapped in :class:`Transform`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field, replace

import numpy as np

from ..progress import CancelToken, Progress
from .preprocess import downsample_to as _downsample_to
from .sitk_stages import (
    _evaluate,
    _flip_x_affine,
    _mask_img,
    _method,
    _run_linear,
    _similarity_init,
    route_metric,
)
from .transforms import Transform, sitk_image

STAGES = ("rigid", "affine", "bspline")


@dataclass(frozen=True)
class RegistrationOptions:
    """Options of the intensity registration; one default each.

    The comments beside the fields give their meaning; :func:`iter_register` documents how they are
    used.
    """

    route: str = "synthesis"  # synthesis | direct
    metric: str | None = None  # None: Mattes mutual information (see sitk_stages.route_metric)
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
    view_refine: int = 2  # with a second view: its best starts refined on it too (consensus.py)
    affine_step: float = 0.2  # first step of the affine optimiser (physical-shift scaled)
    threads: int = 1  # ITK threads (a fixed number keeps results bit-identical)
    bspline_iterations: int = 50  # few iterations: a regulariser of their own
    bspline_holdout: float = 0.25  # fraction of tissue pixels kept out of the B-spline fit
    bspline_max_folds: float = 0.001  # B-spline rejected above this folded-Jacobian fraction
    bspline_mesh_um: float = 160.0
    # each B-spline coefficient bounded to this fraction of the mesh spacing: under 1/2.046 a 2-D
    # cubic B-spline cannot fold (Choi & Lee 2000); 0: unbounded
    bspline_bound: float = 0.45
    # relative improvement of the second view (an independent image of the same raster) that a
    # B-spline must bring: a real deformation fits it better too, a fit to the synthetic image's
    # own errors does not (0: it must merely not get worse)
    bspline_view_gain: float = 0.01
    mattes_bins: int = 32
    sampling: float = 0.5
    # ... but at most this many metric samples per iteration of a linear stage: the fixed image
    # framed by glass (room for any pose) can hold millions of pixels on a large raster, and a
    # random half of them cost time without adding accuracy to six parameters (a 585 x 402 MALDI
    # image spent 17 s per level; phantoms sample far fewer and are unaffected); 0: no cap
    max_samples: int = 200_000
    seed: int = 0
    working_pixel_um: float | None = None  # resample both images to this (default: the coarser one)
    extra: dict = field(default_factory=dict)


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
    second_view=None,
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
    second_view : SecondView, optional
        Another image of the same moving raster (the MSI summary beside a synthetic H&E, or the
        reverse); when given, the refined candidates are ranked by both views
        (:func:`.consensus.consensus_order`) instead of by the route's metric alone.

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
    from .preprocess import pad_with_glass
    from .search import coarse_pixel_um, global_search
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
    # the search and the linear stages see the H&E framed by glass (see preprocess.pad_with_glass)
    m_ext = max(m_img.shape[0] * m_px[0], m_img.shape[1] * m_px[1]) * max(1.0, opts.scale_range)
    pad = int(np.ceil(0.5 * m_ext / min(f_px)))
    f_pad, valid_pad = pad_with_glass(f_img, fmask_np, score_mask, pad)
    origin = (-pad * f_px[1], -pad * f_px[0])
    fixed_s = sitk_image(f_pad, f_px)
    fixed_s.SetOrigin(origin)
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
    n_cand = opts.refine_top + 1 if use_search else 1
    n_view = min(opts.view_refine, n_cand) if second_view is not None and n_cand > 1 else 0
    total = (
        1
        + (n_cand + n_view) * n_levels * len(linear)
        + (n_levels if "bspline" in opts.stages else 0)
    )
    done = 0
    yield Progress(done, total, "initialisation")
    metric_kind = route_metric(opts)

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

        def _search(img, foot, metric, keep):
            out = []
            for c in global_search(
                f_pad,
                f_px,
                valid_pad,
                img,
                m_px,
                foot,
                metric=metric,
                angle_step_deg=opts.angle_step_deg,
                scales=scales,
                flips=opts.flip_search,
                keep=keep,
                coarse_um=coarse_pixel_um(f_img.shape, f_px, m_px),
                inside=np.pad(np.ones(f_img.shape, bool), pad),
                fixed_tissue=np.pad(fmask_np, pad),
                moving_tissue=image_tissue_mask(img, foot),
            ):
                mat = c.matrix_yx.copy()
                mat[:2, 2] -= pad * np.asarray(f_px)  # padded-array world -> fixed world
                info = {
                    "flip": c.flip,
                    "angle_deg": c.angle_deg,
                    "scale": c.scale,
                    "coarse_ncc": c.score,
                    "coarse_mi": c.mi,
                }
                out.append((c.flip, np.linalg.inv(mat), info))
            return out

        starts = _search(m_img, mfoot, metric_kind, opts.refine_top)
        # the images as placed (their own world coordinates) are a start too, so that the result
        # is never a pose the metric rates below the placement the user gave (skipped when that
        # placement does not overlap)
        starts.append((False, np.eye(3), {"start": "as placed"}))
        if n_view:
            # the second view proposes poses of its own, refined on it (see consensus.py)
            from .consensus import view_on_grid

            v_img, v_foot = view_on_grid(second_view, m_img.shape, m_px)
            v_foot &= mfoot
            v_metric = "mattes" if second_view.metric == "mattes" else "correlation"
            view_starts = _search(v_img, v_foot, v_metric, n_view)
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

    fmask_img = _mask_img(valid_pad, f_px)
    fmask_img.SetOrigin(origin)
    width = (m_img.shape[1] - 1) * m_px[1]
    centre = np.asarray(
        fixed.TransformContinuousIndexToPhysicalPoint(
            [(fixed.GetSize()[0] - 1) / 2, (fixed.GetSize()[1] - 1) / 2]
        )
    )

    def _sitk_pair(img, foot, flip):
        mimg, mf = (img[:, ::-1], foot[:, ::-1]) if flip else (img, foot)
        return sitk_image(np.ascontiguousarray(mimg), m_px), (
            None if mf.all() else _mask_img(np.ascontiguousarray(mf), m_px)
        )

    def _refine(k, flip, m_yx, moving, mmask_img, ropts, label):
        nonlocal done
        tr = base if m_yx is None else _similarity_init(m_yx, centre)
        gen = _run_linear(
            fixed_s, moving, tr, ropts, n_levels, fmask_img, mmask_img, cancel, True, linear
        )
        while True:
            try:
                stage, level, val = next(gen)
            except StopIteration as stop:
                return stop.value
            done += 1
            yield Progress(
                done,
                total,
                f"{stage} level {level + 1}/{n_levels} ({label} {k + 1}/{len(starts)})",
                {"metric": val},
            )

    refined = []
    for k, (flip, m_yx, info) in enumerate(starts):
        moving, mmask_img = _sitk_pair(m_img, mfoot, flip)
        try:
            final_linear = yield from _refine(k, flip, m_yx, moving, mmask_img, opts, "start")
        except RuntimeError:
            if info.get("start") != "as placed" or len(starts) == 1:
                raise
            continue  # the placement given does not overlap: nothing to keep
        val = _evaluate(fixed_s, moving, final_linear, opts, fmask_img, mmask_img)
        refined.append((val, flip, final_linear, info, moving, mmask_img))
    if n_view:
        # the second view's own best poses, refined on it, join the candidates; each is scored by
        # the route's metric on the route's image like every other
        v_opts = replace(opts, metric=second_view.metric)
        for k, (flip, m_yx, info) in enumerate(view_starts):
            v_moving, v_mask = _sitk_pair(v_img, v_foot, flip)
            try:
                final_linear = yield from _refine(k, flip, m_yx, v_moving, v_mask, v_opts, "view")
            except RuntimeError:
                continue  # the second view cannot be registered from this start: skip it
            moving, mmask_img = _sitk_pair(m_img, mfoot, flip)
            val = _evaluate(fixed_s, moving, final_linear, opts, fmask_img, mmask_img)
            refined.append(
                (
                    val,
                    flip,
                    final_linear,
                    {**info, "refined_on": second_view.name},
                    moving,
                    mmask_img,
                )
            )

    def _to_moving_yx(i):
        # full fixed -> moving linear matrix (yx) of refined candidate i, mirror included
        v, fl, t, *_ = refined[i]
        parts = [_flip_x_affine(width), t] if fl else [t]
        return Transform(sitk.CompositeTransform(parts))._linear_matrix_fixed_to_moving_yx()

    from .consensus import rank_candidates

    tissue_pts = np.argwhere(fmask_np)[:: max(1, int(fmask_np.sum() // 400))] * np.asarray(f_px)
    matrices = [_to_moving_yx(i) for i in range(len(refined))]
    view_values = None
    if n_view and len(refined) > 1:
        # every candidate scored on the second view with that view's own metric, as its own
        # refinement saw it (same framed fixed image and masks); higher is better
        v_opts = replace(opts, metric=second_view.metric)
        view_values = []
        for _, fl, t, *_ in refined:
            v_moving, v_mask = _sitk_pair(v_img, v_foot, fl)
            v = -_evaluate(fixed_s, v_moving, t, v_opts, fmask_img, v_mask)
            view_values.append(v if np.isfinite(v) else 0.0)  # no overlap: nothing in favour
    best_i, search_ev = rank_candidates(
        [float(r[0]) for r in refined],
        [r[3] for r in refined],
        matrices,
        tissue_pts,
        2.0 * max(m_px),
        view_values,
        None if second_view is None else second_view.name,
    )
    best_val, flip, lin, info, moving, mmask_img = refined[best_i]
    if use_search and len(scales) > 1:  # rank_candidates' evidence is a dict
        # the verdict notes a winner at the edge of the scales tried (the pixel sizes may be off)
        search_ev["scale_range_tried"] = [float(min(scales)), float(max(scales))]
        search_ev["chosen_start"] = dict(info)

    bs_info = None
    current = lin
    if "bspline" in opts.stages:
        view_check = None
        if n_view:
            v_moving, v_mask = _sitk_pair(v_img, v_foot, flip)
            view_check = (
                v_moving,
                v_mask,
                replace(opts, metric=second_view.metric),
                second_view.name,
            )
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
            view=view_check,
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
