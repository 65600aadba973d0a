"""A verdict for every registration: ``ok``, ``doubtful`` or ``failed``, with reasons and the evidence.

Evidence (each optional except the overlap numbers):

- the route metric and tissue Dice before (identity) and after, counted where the moving raster lies
  on the fixed image, so that a raster covering part of the tissue is not penalised;
- the B-spline decision and its folded-Jacobian fraction;
- agreement of the global search's best refined candidates (a runner-up that is nearly as good but
  puts the tissue elsewhere means the image content cannot tell the poses apart);
- landmark TRE (registration at the landmarks, or leave-one-out TRE of a landmark fit);
- agreement of the two routes when both ran.

Thresholds are in moving (MSI) pixels and were set on the robustness benchmark (docs/registration.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OK, DOUBTFUL, FAILED = "ok", "doubtful", "failed"
_RANK = {OK: 0, DOUBTFUL: 1, FAILED: 2}


@dataclass(frozen=True)
class VerdictRules:
    """Thresholds of :func:`judge` (moving pixels, Dice, relative metric gap); one default each.

    Set on the robustness benchmark (docs/registration.md); the comments beside the fields say what
    each one decides.
    """

    min_dice: float = 0.6  # tissue Dice after registration below this: failed
    good_dice: float = 0.8  # ... below this: doubtful, unless no small shift raises it:
    # a pose whose Dice no shift of up to 2 MSI px raises by dice_shift_gain is where the two masks
    # agree best; its Dice is low because the masks differ in shape (a model's pale tissue, a TIC
    # that counts mounting medium as tissue), not because the pose is off
    dice_shift_gain: float = 0.01
    max_tre_px: float = 2.0  # landmark TRE above this: failed
    doubt_tre_px: float = 1.0
    runner_up_gap: float = 0.05  # relative metric gap under which a runner-up counts as a rival
    runner_up_px: float = 2.0  # a rival further than this (moving px): doubtful
    routes_fail_px: float = float("inf")  # disagreeing routes: one is wrong, not which: doubtful
    # the route blamed by the cross-check is off by about the disagreement (the other fits both
    # images better), so it is doubtful when that exceeds the failure tolerance max_tre_px; below
    # it, a deformable route and a linear one differ by the deformation itself
    routes_doubt_px: float = 2.0
    routes_blame_fail_px: float = 5.0  # ... this far, the route whose pose fits worse: failed


def judge(evidence: dict, rules: VerdictRules = VerdictRules()) -> dict:
    """Turn evidence into ``{"verdict", "reasons", "evidence"}``.

    Parameters
    ----------
    evidence : dict
        Keys used when present: ``dice_before``, ``dice_after`` (and ``dice_image``, the image
        whose tissue mask they come from; ``dice_best_shift`` and ``dice_best_shift_msi_px``, the
        best Dice of that mask shifted by up to 2 MSI px and its shift), ``metric_before``,
        ``metric_after`` (higher is better), ``moving_pixel_um``, ``search`` (transform meta),
        ``bspline`` (transform meta), ``landmark_tre_msi_px``, ``landmark_loo_tre_msi_px``,
        ``route_disagreement_msi_px`` and ``route_fits_worse`` (from :func:`cross_check_routes`;
        without it, disagreeing routes make both doubtful).
    rules : VerdictRules
        The thresholds (moving pixels, Dice, metric gap).

    Returns
    -------
    dict
        ``verdict`` (``ok``, ``doubtful`` or ``failed``), ``reasons`` (one line each, prefixed by
        its level) and the ``evidence`` as plain JSON values.
    """
    level, reasons = OK, []

    def flag(lv, msg):
        nonlocal level
        reasons.append(f"{lv}: {msg}")
        if _RANK[lv] > _RANK[level]:
            level = lv

    # landmarks placed by the user are direct evidence of the alignment; tissue masks and intensity
    # metrics are indirect (a TIC's threshold, a partial raster). Where landmark TRE exists and is
    # within max_tre_px, the indirect checks can make a result doubtful but not failed.
    tres = [
        evidence.get(k)
        for k in ("landmark_tre_msi_px", "landmark_loo_tre_msi_px")
        if evidence.get(k) is not None and np.isfinite(evidence.get(k))
    ]
    indirect = DOUBTFUL if tres and max(tres) <= rules.max_tre_px else FAILED
    da, db = evidence.get("dice_after"), evidence.get("dice_before")
    of = f" ({evidence['dice_image']})" if evidence.get("dice_image") else ""
    if da is not None:
        if da < rules.min_dice:
            flag(indirect, f"tissue Dice after registration{of} {da:.2f} < {rules.min_dice}")
        elif da < rules.good_dice:
            best = evidence.get("dice_best_shift")
            sh = evidence.get("dice_best_shift_msi_px")
            if best is not None and best - da < rules.dice_shift_gain:
                reasons.append(
                    f"note: tissue Dice after registration{of} {da:.2f} < {rules.good_dice}, but "
                    "no shift of up to 2 MSI px raises it: the masks differ in shape, not in place"
                )
            elif best is not None and sh is not None:
                flag(
                    DOUBTFUL,
                    f"tissue Dice after registration{of} {da:.2f} < {rules.good_dice}, and a "
                    f"shift of ({sh[0]:+.0f}, {sh[1]:+.0f}) MSI px (y, x) raises it to {best:.2f}",
                )
            else:
                flag(DOUBTFUL, f"tissue Dice after registration{of} {da:.2f} < {rules.good_dice}")
        if db is not None and da < db - 0.02:
            flag(indirect, f"tissue Dice got worse{of} ({db:.2f} -> {da:.2f})")
    ma, mb = evidence.get("metric_after"), evidence.get("metric_before")
    if ma is not None and mb is not None and ma < mb:
        flag(indirect, f"the metric got worse ({mb:.3f} -> {ma:.3f})")
    px = float(evidence.get("moving_pixel_um") or 1.0)
    s = evidence.get("search") or {}
    if "runner_up_metric" in s and s.get("best_metric") not in (None, 0):
        best, ru = s["best_metric"], s["runner_up_metric"]  # minimised
        # the ranking's own gap when the search recorded one (two views), else the metric's
        gap = s["runner_up_gap"] if "runner_up_gap" in s else (ru - best) / abs(best)
        dis = s.get("runner_up_disagreement_um", 0.0) / px
        if gap < rules.runner_up_gap and dis > rules.runner_up_px:
            flag(
                DOUBTFUL,
                f"a second pose {dis:.1f} MSI px away scores within {100 * gap:.1f} % of the best",
            )
    tried, chosen = s.get("scale_range_tried"), (s.get("chosen_start") or {}).get("scale")
    if tried and chosen is not None and not tried[0] * 1.001 < chosen < tried[1] * 0.999:
        reasons.append(
            f"note: the global search's best scale ({chosen:.2f} x the pixel sizes' ratio) is at "
            f"the edge of the range it tried ({tried[0]:.2f}-{tried[1]:.2f}); if the pixel sizes "
            "are uncertain, widen --scale-range"
        )
    b = evidence.get("bspline")
    if b and not b.get("accepted"):
        reasons.append(f"note: B-spline {b.get('reason')}")
    for key, what in (
        ("landmark_tre_msi_px", "landmark TRE"),
        ("landmark_loo_tre_msi_px", "leave-one-out landmark TRE"),
    ):
        t = evidence.get(key)
        if t is not None and np.isfinite(t):
            if t > rules.max_tre_px:
                flag(FAILED, f"median {what} {t:.2f} MSI px > {rules.max_tre_px}")
            elif t > rules.doubt_tre_px:
                flag(DOUBTFUL, f"median {what} {t:.2f} MSI px > {rules.doubt_tre_px}")
    r = evidence.get("route_disagreement_msi_px")
    worse = evidence.get("route_fits_worse")  # from cross_check_routes; None: not known
    if r is not None and worse is not None:
        if r > rules.routes_doubt_px and worse:
            lv = FAILED if r > rules.routes_blame_fail_px else DOUBTFUL
            flag(
                lv,
                f"the routes disagree by {r:.1f} MSI px and the other route's pose fits both "
                "images better",
            )
        elif r > rules.routes_doubt_px:
            reasons.append(
                f"note: the routes disagree by {r:.1f} MSI px; this route's pose fits both images "
                "better"
            )
    elif r is not None:
        if r > rules.routes_fail_px:
            flag(FAILED, f"the synthesis and direct routes disagree by {r:.1f} MSI px")
        elif r > rules.routes_doubt_px:
            flag(DOUBTFUL, f"the synthesis and direct routes disagree by {r:.1f} MSI px")
    if not any(x.startswith((FAILED, DOUBTFUL)) for x in reasons):
        reasons.insert(0, "ok: tissue overlaps, the metric improved, no rival pose")
    return {"verdict": level, "reasons": reasons, "evidence": _plain(evidence)}


def route_disagreement_px(tr_a, tr_b, fixed_points_yx_um: np.ndarray, msi_pixel_um: float) -> float:
    """Measure how far two registrations disagree, in MSI pixels.

    Parameters
    ----------
    tr_a, tr_b : Transform
        Two fixed -> moving transforms (e.g. the synthesis and direct routes).
    fixed_points_yx_um : ndarray
        ``(N, 2)`` fixed (H&E) tissue points, yx um.
    msi_pixel_um : float
        The MSI pixel size.

    Returns
    -------
    float
        The median distance between where the two send the points, in MSI pixels.
    """
    pa, pb = tr_a.fixed_to_moving(fixed_points_yx_um), tr_b.fixed_to_moving(fixed_points_yx_um)
    return float(np.median(np.linalg.norm(pa - pb, axis=1)) / msi_pixel_um)


def cross_check_routes(
    fixed_od: np.ndarray,
    fixed_px,
    results: dict,
    fixed_points_yx_um: np.ndarray,
    msi_pixel_um: float,
) -> dict:
    """Check two routes' results against each other, and say which pose fits worse.

    Each route's own image (synthetic H&E, MSI summary) is scored at both poses with its route's
    metric (NCC, mutual information) over the whole fixed image; a pose's deficit is how far below
    the better pose it scores, relative, summed over the two images. Far-apart poses mean one is
    wrong; the one that both images like less is the likely one.

    Parameters
    ----------
    fixed_od : ndarray
        ``(Y, X)`` fixed image (H&E optical density).
    fixed_px : tuple of float
        Its pixel size (y, x) in um.
    results : dict
        ``{"synthesis": RegistrationResult, "direct": RegistrationResult}``.
    fixed_points_yx_um : ndarray
        ``(N, 2)`` fixed tissue points (yx um) at which the poses are compared.
    msi_pixel_um : float
        The MSI pixel size.

    Returns
    -------
    dict
        ``disagreement_msi_px``, ``deficit`` (per route) and ``fits_worse`` (per route, bool).
    """
    from .pipeline import overlap_metrics

    a, b = results["synthesis"], results["direct"]
    dis = route_disagreement_px(a.transform, b.transform, fixed_points_yx_um, msi_pixel_um)
    deficit = {"synthesis": 0.0, "direct": 0.0}
    for img_route, res in results.items():
        key = "ncc" if img_route == "synthesis" else "mi"
        score = {
            pose: overlap_metrics(
                fixed_od, fixed_px, res.moving_image, res.moving_px, other.transform
            )[key]
            for pose, other in results.items()
        }
        best = max(score.values())
        for pose in score:
            deficit[pose] += (best - score[pose]) / max(abs(best), 1e-12)
    return {
        "disagreement_msi_px": dis,
        "deficit": deficit,
        "fits_worse": {
            "synthesis": deficit["synthesis"] > deficit["direct"],
            "direct": deficit["direct"] > deficit["synthesis"],
        },
    }


def combine(a: dict, b: dict) -> dict:
    """Return the worse of two verdicts (e.g. a result and the route-agreement check).

    Parameters
    ----------
    a, b : dict
        Verdicts from :func:`judge`.

    Returns
    -------
    dict
        ``a`` or ``b``, whichever is worse (``a`` on a tie).
    """
    return a if _RANK[a["verdict"]] >= _RANK[b["verdict"]] else b


def _plain(d):
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    if isinstance(d, np.generic):
        return d.item()
    return d


__all__ = [
    "DOUBTFUL",
    "FAILED",
    "OK",
    "VerdictRules",
    "combine",
    "cross_check_routes",
    "judge",
    "route_disagreement_px",
]
