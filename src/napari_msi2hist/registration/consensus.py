"""Choose among refined candidate poses with a second view of the same moving raster.

The synthetic H&E and the MSI summary image are two views of one MSI raster, so the true pose is
the same for both. Each view has its own failure: a synthetic H&E from a model that never saw the
section's chemistry can be nearly symmetric, so that a pose turned by 180 degrees scores as well as
the true one; a summary image can be dominated by matrix or mounting medium. A pose that both views
support is safer than one that only the route's own metric prefers.

:func:`consensus_order` ranks the refined candidates by the sum of their relative deficits: under the
route's metric, how much worse than the best candidate (relative to the best), plus the same under
the second view's metric (Mattes mutual information for an MSI summary, correlation for a synthetic
H&E, evaluated as that view's own refinement sees it). A candidate that is best under both has
deficit 0; one that loses 3 % under the route's metric but wins the second view by 60 % beats the
route's own choice. The second view also proposes poses: its own global search's best starts,
refined on it, join the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SecondView:
    """A second image of the moving raster (same world frame as the moving image, own pixel).

    Attributes
    ----------
    image : ndarray
        ``(y, x)`` float image, tissue bright.
    pixel_um : tuple of float
        Its pixel size (y, x) in um.
    footprint : ndarray of bool, optional
        Its measured pixels (default all).
    name : str
        What it is, for the evidence ("MSI summary", "synthetic H&E").
    metric : {"mattes", "correlation"}
        The metric that registers it to the H&E (multimodal or unimodal).
    """

    image: np.ndarray
    pixel_um: tuple[float, float]
    footprint: np.ndarray | None = None
    name: str = "second view"
    metric: str = "mattes"


def view_on_grid(view: SecondView, shape, pixel_um) -> tuple[np.ndarray, np.ndarray]:
    """Resample a second view onto the moving image's grid (same world frame, origin at pixel 0).

    Parameters
    ----------
    view : SecondView
        The second view.
    shape : tuple of int
        ``(y, x)`` shape of the target grid.
    pixel_um : tuple of float
        Its pixel size (y, x) in um.

    Returns
    -------
    image : ndarray
        float32 on the grid (area-averaged when the view is finer, linear otherwise).
    footprint : ndarray of bool
        Where the view was measured.
    """
    from scipy import ndimage as ndi

    img = np.asarray(view.image, np.float32)
    foot = np.ones(img.shape, bool) if view.footprint is None else np.asarray(view.footprint, bool)
    ratio = np.asarray(pixel_um, float) / np.asarray(view.pixel_um, float)
    if (ratio > 1.5).any():  # the view is finer: average it first (no aliasing)
        sig = np.maximum(0.0, (ratio - 1) / 2)
        img = ndi.gaussian_filter(img, sig)
    out = ndi.affine_transform(img, ratio, 0.0, output_shape=tuple(shape), order=1, cval=0.0)
    fp = ndi.affine_transform(
        foot.astype(np.float32), ratio, 0.0, output_shape=tuple(shape), order=0, cval=0.0
    )
    return out.astype(np.float32), fp > 0.5


def consensus_order(main_values: list[float], view_values: list[float]) -> tuple[list[int], list]:
    """Rank candidates by their summed relative deficits under two metrics.

    Parameters
    ----------
    main_values : list of float
        The route's metric of each refined candidate (SimpleITK convention: lower is better).
    view_values : list of float
        The second view's metric of each candidate, higher is better (the negated SimpleITK value:
        mutual information for an MSI summary, correlation for a synthetic H&E).

    Returns
    -------
    order : list of int
        Candidate indices, best first.
    deficits : list of float
        Each candidate's summed deficit (0 = best under both metrics).
    """
    v = np.asarray(main_values, float)
    a = np.asarray(view_values, float)
    best_v, best_a = v.min(), a.max()
    d_main = (v - best_v) / max(abs(best_v), 1e-12)
    d_view = (best_a - a) / max(abs(best_a), 1e-12) if best_a > 0 else np.zeros_like(a)
    total = d_main + d_view
    order = sorted(range(len(v)), key=lambda i: (total[i], v[i]))
    return order, total.tolist()


def rank_candidates(
    values: list[float],
    infos: list[dict],
    matrices: list[np.ndarray],
    tissue_pts: np.ndarray,
    rival_um: float,
    view_values: list[float] | None = None,
    view_name: str | None = None,
) -> tuple[int, dict]:
    """Pick the winner among refined candidates and record the search's evidence.

    Parameters
    ----------
    values : list of float
        The route's metric of each refined candidate (lower is better).
    infos : list of dict
        What the search recorded about each candidate's start.
    matrices : list of ndarray
        Each candidate's linear fixed -> moving yx matrix (mirror included).
    tissue_pts : ndarray
        ``(N, 2)`` fixed tissue points (yx um) at which poses are compared.
    rival_um : float
        A candidate that sends the tissue further than this from the winner is a rival.
    view_values : list of float, optional
        Each candidate's second-view metric (higher is better); without it the route's metric
        alone ranks.
    view_name : str, optional
        The second view's name, for the evidence.

    Returns
    -------
    best : int
        The index of the winner.
    evidence : dict
        ``candidates`` (best first, each with its metric, second-view metric and deficit),
        ``best_metric``, and for the best-ranked rival ``runner_up_metric``,
        ``runner_up_disagreement_um`` (median, at the tissue points) and ``runner_up_gap``
        (its deficit beyond the winner's).
    """
    if view_values is not None:
        order, deficits = consensus_order(values, view_values)
    else:
        order = sorted(range(len(values)), key=lambda i: values[i])
        best = values[order[0]]
        deficits = [(v - best) / max(abs(best), 1e-12) for v in values]
    ev = {
        "candidates": [
            {
                **infos[i],
                "refined_metric": float(values[i]),
                **({} if view_values is None else {"second_view_metric": float(view_values[i])}),
                "deficit": float(deficits[i]),
            }
            for i in order
        ],
    }
    if view_values is not None:
        ev["second_view"] = view_name
        ev["chosen_by"] = "route metric and second view"
    if len(order) > 1 and len(tissue_pts):
        ma = matrices[order[0]]
        pa = tissue_pts @ ma[:2, :2].T + ma[:2, 2]
        # the best-ranked candidate that puts the tissue elsewhere is the rival (candidates that
        # converged onto the winner's pose are not rivals)
        for i in order[1:]:
            mb = matrices[i]
            dis = float(
                np.median(np.linalg.norm(pa - (tissue_pts @ mb[:2, :2].T + mb[:2, 2]), axis=1))
            )
            if dis > rival_um:
                ev["runner_up_disagreement_um"] = dis
                ev["runner_up_metric"] = float(values[i])
                ev["runner_up_gap"] = float(deficits[i] - deficits[order[0]])
                break
    ev["best_metric"] = float(values[order[0]])
    return order[0], ev


__all__ = ["SecondView", "consensus_order", "rank_candidates", "view_on_grid"]
