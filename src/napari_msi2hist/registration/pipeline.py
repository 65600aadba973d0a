"""MSI -> H&E registration end to end: the synthesis route and the direct route.

Fixed = the real H&E (optical density). Moving = the synthetic H&E made from the MSI by a pix2pix
checkpoint (``synthesis``, unimodal) or an MSI summary image (``direct``, multimodal). Landmarks can
fit the transform (``fit``), initialise the intensity registration (``hybrid``), or only evaluate it
(``eval``). Every route yields progress and returns a :class:`RegistrationResult`.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field, replace

import numpy as np

from ..metrics import landmark_tre_um, mutual_information
from ..progress import CancelToken, Progress
from .deformable import jacobian_folds
from .intensity import RegistrationOptions, iter_register
from .landmarks import landmark_report
from .preprocess import msi_summary, od_image, rescale_unit
from .tissue import dice
from .transforms import Transform


@dataclass
class RegistrationResult:
    """A registration's transform, metrics, landmark errors and verdict."""

    transform: Transform  # fixed (H&E) world -> moving (MSI) world, ITK convention
    route: str
    seconds: float
    metrics: dict = field(default_factory=dict)
    landmarks: dict | None = None
    moving_image: np.ndarray | None = None  # what was registered (synthetic H&E OD or MSI summary)
    moving_px: tuple[float, float] = (1.0, 1.0)
    verdict: dict = field(default_factory=dict)  # see registration.verdict.judge
    fixed_mask: np.ndarray | None = None  # the H&E tissue mask used


def _ncc(a, b, m):
    a, b = a[m].astype(float), b[m].astype(float)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12))


def overlap_metrics(
    fixed_od,
    fixed_px,
    moving,
    moving_px,
    transform: Transform | None,
    fixed_tissue: np.ndarray | None = None,
    moving_tissue: np.ndarray | None = None,
    moving_footprint: np.ndarray | None = None,
    shift_probe_um: float | None = None,
) -> dict:
    """Measure MI, NCC and tissue Dice of a moving image resampled onto the fixed grid.

    With ``transform`` None the identity is used ('before'). With tissue masks, everything is
    counted only where the moving raster lands on the fixed image (partial coverage is not a
    mismatch), MI/NCC inside the fixed tissue (dilated) there; but where the moving tissue stays
    clear of its raster's edge (the raster shows the whole section), the Dice counts the fixed
    tissue pieces it lands on whole. Without masks, both images are thresholded at 15 % of their
    99th percentile.

    Parameters
    ----------
    fixed_od : ndarray
        ``(Y, X)`` fixed image (H&E optical density).
    fixed_px : tuple of float
        Its pixel size (yx um).
    moving : ndarray
        ``(y, x)`` moving image.
    moving_px : tuple of float
        Its pixel size (yx um).
    transform : Transform or None
        Fixed world -> moving world; None for the identity.
    fixed_tissue : ndarray of bool, optional
        Tissue on the fixed grid.
    moving_tissue : ndarray of bool, optional
        Tissue on the moving grid.
    moving_footprint : ndarray, optional
        The measured raster on the moving grid (default everything).
    shift_probe_um : float, optional
        With the tissue masks: also try the warped moving tissue (and its raster) shifted by
        -2..2 steps of this size in y and x, and report the best Dice among the shifts. A pose whose
        Dice no small shift raises is where the masks agree best; a low Dice there comes from masks
        that differ in shape, not from a misplaced pose.

    Returns
    -------
    dict
        ``mi``, ``ncc``, ``dice`` and ``covered_fraction`` (of the fixed tissue covered by moving
        tissue); with the masks, ``whole_section`` (the moving tissue stays clear of the raster's
        edge, so the fixed tissue pieces it lands on count whole, not only where the raster lies);
        with ``shift_probe_um``, also ``dice_best_shift`` and ``best_shift_um`` (yx).
    """
    from scipy import ndimage as ndi

    from .transforms import Transform as T

    tr = transform or T.from_moving_to_fixed_matrix(np.eye(3))
    warped = tr.resample_moving_to_fixed(moving, moving_px, fixed_od.shape, fixed_px, default=0.0)
    f = fixed_od / (np.percentile(fixed_od, 99) + 1e-9)
    w = warped / (np.percentile(warped, 99) + 1e-9) if warped.max() > 0 else warped
    if fixed_tissue is None or moving_tissue is None:
        inside = np.ones(f.shape, bool)
        fm, wm = f > 0.15, w > 0.15
    else:
        foot = np.ones(moving.shape, np.float32) if moving_footprint is None else moving_footprint
        wf = tr.resample_moving_to_fixed(
            foot.astype(np.float32), moving_px, fixed_od.shape, fixed_px, default=0.0
        )
        covered = wf > 0.5
        wt = tr.resample_moving_to_fixed(
            moving_tissue.astype(np.float32), moving_px, fixed_od.shape, fixed_px, default=0.0
        )
        fm, wm = fixed_tissue & covered, (wt > 0.5) & covered
        whole = _whole_inside(moving_tissue, foot > 0.5)
        if whole:
            # the raster shows the whole section (its tissue stays clear of the raster's edge), so
            # the H&E pieces it lands on count whole: a raster shrunk into a larger section cannot
            # hide the tissue it leaves uncovered (real pair A10 did, at 0.64x scale). Pieces it
            # does not touch (other sections on the slide) are not counted.
            lab, _ = ndi.label(fixed_tissue)
            touched = np.unique(lab[(wt > 0.5) & fixed_tissue])
            fm, wm = np.isin(lab, touched[touched > 0]), wt > 0.5
        inside = ndi.binary_dilation(fixed_tissue, iterations=3) & covered
        if inside.sum() < 16:
            return {"mi": 0.0, "ncc": 0.0, "dice": 0.0, "covered_fraction": 0.0}
    out = {
        "mi": mutual_information(np.clip(f, 0, 1), np.clip(w, 0, 1), inside),
        "ncc": _ncc(f, w, inside),
        "dice": dice(fm, wm),
        "covered_fraction": float(
            fm.sum() / max(1, (fixed_tissue if fixed_tissue is not None else fm).sum())
        ),
    }
    if fixed_tissue is not None and moving_tissue is not None:
        out["whole_section"] = whole
        if shift_probe_um and whole:
            everywhere = np.ones(fm.shape, bool)
            out.update(_dice_shift_probe(fm, wm, everywhere, fixed_px, shift_probe_um))
        elif shift_probe_um:
            out.update(_dice_shift_probe(fixed_tissue, wt > 0.5, covered, fixed_px, shift_probe_um))
    return out


def _whole_inside(tissue: np.ndarray, footprint: np.ndarray, margin: int = 3) -> bool:
    """Whether ``tissue`` stays ``margin`` pixels clear of the footprint's edge and the image's."""
    from scipy import ndimage as ndi

    if not tissue.any():
        return False
    interior = ndi.binary_erosion(footprint, iterations=margin, border_value=0)
    return not (tissue & ~interior).any()


def _judged(value: float, key: str) -> float:
    return abs(value) if key == "ncc" else value


def _shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move ``a`` by (dy, dx) pixels; what comes in from outside is False."""
    out = np.zeros_like(a)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


def _dice_shift_probe(fixed_tissue, warped_tissue, covered, fixed_px, step_um) -> dict:
    """Find the best Dice of the warped moving tissue shifted by -2..2 steps of ``step_um``."""
    best, best_shift = -1.0, (0.0, 0.0)
    for ky in range(-2, 3):
        for kx in range(-2, 3):
            dy = int(round(ky * step_um / fixed_px[0]))
            dx = int(round(kx * step_um / fixed_px[1]))
            cov = _shifted(covered, dy, dx)
            d = dice(fixed_tissue & cov, _shifted(warped_tissue, dy, dx) & cov)
            # ties go to the smaller shift (the loop order would favour -2, -2)
            if d > best + 1e-9 or (
                abs(d - best) <= 1e-9 and abs(ky) + abs(kx) < sum(map(abs, best_shift))
            ):
                best, best_shift = d, (float(ky), float(kx))
    return {
        "dice_best_shift": best,
        "best_shift_um": [best_shift[0] * step_um, best_shift[1] * step_um],
    }


def checkerboard(fixed: np.ndarray, moving_on_fixed: np.ndarray, squares: int = 8) -> np.ndarray:
    """Interleave squares of two images on one grid, for visual QA of a registration.

    Each image is scaled by its 99th percentile so that both show.

    Parameters
    ----------
    fixed : ndarray
        ``(Y, X)`` fixed image.
    moving_on_fixed : ndarray
        ``(Y, X)`` the moving image already resampled onto the fixed grid.
    squares : int
        About this many squares along the shorter side (squares at least 8 pixels).

    Returns
    -------
    ndarray
        ``(Y, X)`` float64 checkerboard.
    """
    f = fixed / (np.percentile(fixed, 99) + 1e-9)
    w = moving_on_fixed / (np.percentile(moving_on_fixed, 99) + 1e-9)
    k = max(8, min(f.shape) // squares)
    yy, xx = np.indices(f.shape)
    return np.where(((yy // k) + (xx // k)) % 2 == 0, f, w)


def _second_view(route, moving_px, synth_rgb, msi_stack, msi_mask, summary, msi_px, synth_px, px):
    """Build the other route's image of the same raster (see :mod:`.consensus`), or None."""
    from .consensus import SecondView
    from .preprocess import clean_msi_image
    from .tissue import image_tissue_mask, tissue_polarity

    if route == "synthesis":
        mpx = msi_px or ((px, px) if px else None)
        if mpx is None:
            return None
        foot = None if msi_mask is None else np.asarray(msi_mask, bool)
        img = clean_msi_image(msi_summary(msi_stack, summary, msi_mask, scaled=False), foot)
        if tissue_polarity(img, image_tissue_mask(img, foot)) < 0:
            img = (img.max() - img).astype(np.float32)
            if foot is not None:
                img[~foot] = 0.0
        return SecondView(img, tuple(mpx), foot, "MSI summary", "mattes")
    img = od_image(synth_rgb)
    if synth_px is None:
        ny, nx = np.asarray(msi_stack).shape[-2:]
        synth_px = (moving_px[0] * ny / img.shape[0], moving_px[1] * nx / img.shape[1])
    return SecondView(img, tuple(synth_px), None, "synthetic H&E", "correlation")


def _one_of_two(gen, name: str, part: int):
    """Run one of two equal registrations as half of one progress bar, its stage named by ``name``."""
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        yield Progress(part * p.total + p.done, 2 * p.total, f"{name}: {p.stage}", p.info)


def iter_register_msi(
    he_rgb: np.ndarray,
    he_px,
    route: str,
    moving_px,
    synth_rgb: np.ndarray | None = None,
    msi_stack: np.ndarray | None = None,
    msi_mask: np.ndarray | None = None,
    summary: str = "tic",
    opts: RegistrationOptions = RegistrationOptions(),
    landmarks_fixed: np.ndarray | None = None,
    landmarks_moving: np.ndarray | None = None,
    landmarks_use: str = "eval",
    msi_pixel_um: float | None = None,
    cancel: CancelToken | None = None,
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    msi_px=None,
    synth_px=None,
    second_view: bool = True,
    moving_is_export: bool = False,
) -> Generator[Progress, None, RegistrationResult]:
    """Register an MSI (its synthetic H&E, or a summary image) to an H&E and judge the result.

    ``fixed_mask``/``moving_mask``: user tissue masks (H&E grid / moving grid); by default tissue is
    detected (:mod:`.tissue`). ``msi_mask``: the measured pixels of the MSI raster. The result carries
    ``metrics`` (before/after, folds), ``verdict`` (:func:`.verdict.judge`) and landmark TRE.

    Parameters
    ----------
    he_rgb : ndarray
        ``(Y, X, 3)`` uint8 H&E (the fixed image).
    he_px : tuple of float
        Its pixel size (yx um).
    route : {"synthesis", "direct"}
        Register the synthetic H&E, or a summary image of the ion images.
    moving_px : tuple of float
        The moving image's pixel size (yx um).
    synth_rgb : ndarray, optional
        The synthetic H&E (synthesis route).
    msi_stack : ndarray, optional
        ``(C, Y, X)`` ion images (direct route).
    msi_mask : ndarray of bool, optional
        The measured pixels of the MSI raster.
    summary : {"tic", "pca"}
        The direct route's summary image (:func:`.intensity.msi_summary`).
    opts : RegistrationOptions
        Stages, metric, search and B-spline settings.
    landmarks_fixed, landmarks_moving : ndarray, optional
        ``(N, 2)`` paired landmarks, yx um in each image's world frame.
    landmarks_use : {"eval", "fit", "hybrid"}
        Only measure TRE at the landmarks, use their affine fit as the result, or start the
        intensity registration from their similarity fit.
    msi_pixel_um : float, optional
        The MSI pixel (TRE is reported in MSI pixels); default the mean of ``moving_px``.
    cancel : CancelToken, optional
        Checked between stages and iterations; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.
    fixed_mask, moving_mask : ndarray of bool, optional
        User tissue masks on the H&E grid and on the moving grid; by default tissue is detected
        (:mod:`.tissue`).
    msi_px : tuple of float, optional
        The pixel of ``msi_stack`` when it is not ``moving_px`` (the synthesis route); default
        ``msi_pixel_um`` on both axes.
    synth_px : tuple of float, optional
        The pixel of ``synth_rgb`` when it is not ``moving_px`` (the direct route); default: the
        synthetic H&E spans the MSI raster.
    second_view : bool
        When both the synthetic H&E and the ion images are given, rank the search's refined poses
        by both (:mod:`.consensus`); the route's image alone is registered either way.
    moving_is_export : bool
        The direct route's moving image is one exported image file (a vendor MALDI export), not
        ion images: without a second view it is registered twice, by correlation and by Mattes
        MI, and the pose with the better tissue Dice is kept (``transform.meta["metric_choice"]``),
        unless ``opts.metric`` names one.

    Yields
    ------
    Progress
        The registration's stages (search, linear levels, B-spline) and iterations, or one for a
        landmark fit.

    Returns
    -------
    RegistrationResult
        The transform (fixed world -> moving world), ``metrics`` before and after, the verdict
        (:func:`.verdict.judge`) and landmark TRE.
    """
    from .preprocess import clean_msi_image
    from .tissue import he_artefact_mask, he_tissue_mask, image_tissue_mask, tissue_polarity
    from .verdict import judge

    t0 = time.monotonic()
    fixed = od_image(he_rgb)
    footprint = None
    if route == "synthesis":
        if synth_rgb is None:
            raise ValueError("the synthesis route needs a synthetic H&E")
        moving = od_image(synth_rgb)
    elif route == "direct":
        if msi_stack is None:
            raise ValueError("the direct route needs MSI ion images")
        footprint = None if msi_mask is None else np.asarray(msi_mask, bool)
        raw = msi_summary(msi_stack, summary, msi_mask, scaled=False)
        if moving_is_export:
            # a vendor export is a finished picture: its raster-line and drift corrections are
            # done, and cleaning it again fits a plane and row medians to tissue on glass, which
            # turned real pair A10's white glass into a left-to-right ramp and its tissue mask
            # into 82 % of the raster (63 % is tissue); only rescale it
            moving = rescale_unit(raw, footprint)
        else:
            # hot/missing pixels and raster-line stripes removed (see preprocess.clean_msi_image)
            moving = clean_msi_image(raw, footprint)
    else:
        raise ValueError(f"route must be synthesis or direct, not {route!r}")
    f_tissue = np.asarray(fixed_mask, bool) if fixed_mask is not None else he_tissue_mask(he_rgb)
    if moving_mask is not None:
        m_tissue = np.asarray(moving_mask, bool)
        if m_tissue.shape != moving.shape:
            raise ValueError(
                f"the moving mask is {m_tissue.shape[0]}x{m_tissue.shape[1]} px, the moving image "
                f"{moving.shape[0]}x{moving.shape[1]}"
            )
    else:
        m_tissue = image_tissue_mask(moving, footprint)
    if f_tissue.shape != fixed.shape:
        raise ValueError(
            f"the fixed mask is {f_tissue.shape[0]}x{f_tissue.shape[1]} px, the H&E "
            f"{fixed.shape[0]}x{fixed.shape[1]}"
        )
    if tissue_polarity(moving, m_tissue) < 0:  # tissue dark (matrix-dominated TIC): invert
        moving = (moving.max() - moving).astype(np.float32)
        if footprint is not None:
            moving[~footprint] = 0.0
    view = None
    if second_view and synth_rgb is not None and msi_stack is not None:
        view = _second_view(
            route,
            moving_px,
            synth_rgb,
            msi_stack,
            msi_mask,
            summary,
            msi_px,
            synth_px,
            msi_pixel_um,
        )
    if fixed_mask is None:
        exclude = he_artefact_mask(he_rgb, f_tissue)
    else:  # a user mask: count it and a rim of glass, nothing further out
        from scipy import ndimage as ndi

        exclude = ~ndi.binary_dilation(f_tissue, iterations=max(3, min(fixed.shape) // 20))
    opts = replace(opts, route=route)
    # one exported image and nothing else (no spectra, no synthetic H&E): no second view can
    # outvote a spurious optimum of either metric. On the real MALDI/H&E pairs correlation put A13
    # shrunk into half its section and MI kept A10 from its best overlap, each right where the
    # other failed; so both register it, and the pose whose tissue overlaps the H&E's better wins
    # (an export's tissue mask is its non-glass pixels, reliable where its intensities are not)
    both_metrics = route == "direct" and moving_is_export and view is None and opts.metric is None
    if both_metrics:
        opts = replace(opts, metric="correlation")
    masks = dict(fixed_tissue=f_tissue, moving_tissue=m_tissue, moving_footprint=footprint)
    have_lm = landmarks_fixed is not None and landmarks_moving is not None
    if have_lm and landmarks_use == "fit":
        from .alignment import landmark_transform

        tr = landmark_transform(landmarks_moving, landmarks_fixed)
        yield Progress(1, 1, "landmark fit")
    elif have_lm and landmarks_use == "hybrid":
        from .landmarks import fit_linear

        m = fit_linear(landmarks_moving, landmarks_fixed, "similarity")
        init = Transform.from_moving_to_fixed_matrix(m)
        tr = yield from iter_register(
            fixed,
            he_px,
            moving,
            moving_px,
            replace(opts, rotation_search=0),
            fixed_mask=f_tissue,
            cancel=cancel,
            initial=init,
            moving_mask=footprint,
            fixed_exclude=exclude,
        )
    else:
        gen = iter_register(
            fixed,
            he_px,
            moving,
            moving_px,
            opts,
            fixed_mask=f_tissue,
            cancel=cancel,
            moving_mask=footprint,
            fixed_exclude=exclude,
            second_view=view,
        )
        tr = yield from (_one_of_two(gen, "correlation", 0) if both_metrics else gen)
        if both_metrics:
            alt = yield from _one_of_two(
                iter_register(
                    fixed,
                    he_px,
                    moving,
                    moving_px,
                    replace(opts, metric="mattes"),
                    fixed_mask=f_tissue,
                    cancel=cancel,
                    moving_mask=footprint,
                    fixed_exclude=exclude,
                ),
                "mutual information",
                1,
            )
            d = {
                "correlation": overlap_metrics(fixed, he_px, moving, moving_px, tr, **masks)[
                    "dice"
                ],
                "mattes": overlap_metrics(fixed, he_px, moving, moving_px, alt, **masks)["dice"],
            }
            if d["mattes"] > d["correlation"]:
                tr, opts = alt, replace(opts, metric="mattes")
            tr.meta["metric_choice"] = {"tissue_dice": d, "chosen": tr.meta.get("metric")}
    res = RegistrationResult(
        tr,
        route,
        time.monotonic() - t0,
        moving_image=moving,
        moving_px=tuple(moving_px),
        fixed_mask=f_tissue,
    )
    folds = jacobian_folds(tr, fixed.shape, he_px) if not tr.is_linear else 0.0
    from ..pixel_size import check_against_tissue_area

    res.metrics = {
        "pixel_size_check": check_against_tissue_area(
            f_tissue, he_px, m_tissue, moving_px, warn=False
        ),
        "before": overlap_metrics(fixed, he_px, moving, moving_px, None, **masks),
        "bspline_fold_fraction": folds,
    }
    px = msi_pixel_um or float(np.mean(moving_px))
    res.metrics["after"] = overlap_metrics(
        fixed, he_px, moving, moving_px, tr, **masks, shift_probe_um=px
    )
    # the verdict judges the metric the registration optimised (correlation -> NCC, else MI)
    optimised = tr.meta.get("metric", opts.metric)
    key = "ncc" if optimised == "correlation" else "mi"
    dice_of = "synthetic H&E" if route == "synthesis" else "MSI summary"
    dice_b, dice_a = res.metrics["before"]["dice"], res.metrics["after"]["dice"]
    after = res.metrics["after"]
    if view is not None:
        # the other image of the same raster has a tissue mask of its own; a pose that puts the
        # tissue in the wrong place cannot make either mask overlap the H&E's, while either mask
        # alone can be poor (a model's pale tissue, a TIC threshold), so the better one counts
        vm = dict(
            fixed_tissue=f_tissue,
            moving_tissue=image_tissue_mask(view.image, view.footprint),
            moving_footprint=view.footprint,
        )
        res.metrics["view"] = {
            "image": view.name,
            "before": overlap_metrics(fixed, he_px, view.image, view.pixel_um, None, **vm),
            "after": overlap_metrics(
                fixed, he_px, view.image, view.pixel_um, tr, **vm, shift_probe_um=px
            ),
        }
        if res.metrics["view"]["after"]["dice"] > dice_a:
            dice_of = view.name
            dice_b = res.metrics["view"]["before"]["dice"]
            dice_a = res.metrics["view"]["after"]["dice"]
            after = res.metrics["view"]["after"]
    ev = {
        "route": route,
        # ITK's correlation metric is the negative squared NCC: it aligns anti-correlated images
        # as readily (a MALDI export whose signal is low where the H&E is dense), so the verdict
        # compares |NCC|, the quantity that was optimised
        "metric_name": "|ncc|" if key == "ncc" else key,
        "metric_before": _judged(res.metrics["before"][key], key),
        "metric_after": _judged(res.metrics["after"][key], key),
        "dice_before": dice_b,
        "dice_after": dice_a,
        "dice_image": dice_of,
        "dice_best_shift": after.get("dice_best_shift"),
        "dice_best_shift_msi_px": [v / px for v in after["best_shift_um"]]
        if "best_shift_um" in after
        else None,
        "registration_metric": tr.meta.get("metric"),
        "fold_fraction": folds,
        "moving_pixel_um": px,
        "search": tr.meta.get("search"),
        "bspline": tr.meta.get("bspline"),
    }
    if have_lm:
        err = landmark_tre_um(tr, landmarks_moving, landmarks_fixed)
        res.landmarks = {
            "use": landmarks_use,
            "tre_um": err.tolist(),
            "tre_median_um": float(np.median(err)),
            "tre_median_msi_px": float(np.median(err) / px),
        }
        if landmarks_use == "fit":
            rep = landmark_report(landmarks_moving, landmarks_fixed, "affine", px).summary()
            res.landmarks["report"] = rep
            ev["landmark_loo_tre_msi_px"] = rep.get("tre_median_msi_px")
        else:
            ev["landmark_tre_msi_px"] = res.landmarks["tre_median_msi_px"]
    res.verdict = judge(ev)
    return res


__all__ = ["RegistrationResult", "checkerboard", "iter_register_msi", "overlap_metrics"]
