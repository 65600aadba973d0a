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

from ..metrics import mutual_information
from ..progress import CancelToken, Progress
from .intensity import RegistrationOptions, iter_register, jacobian_folds, msi_summary, od_image
from .landmarks import landmark_report
from .transforms import Transform


@dataclass
class RegistrationResult:
    transform: Transform  # fixed (H&E) world -> moving (MSI) world, ITK convention
    route: str
    seconds: float
    metrics: dict = field(default_factory=dict)
    landmarks: dict | None = None
    moving_image: np.ndarray | None = None  # what was registered (synthetic H&E OD or MSI summary)
    moving_px: tuple[float, float] = (1.0, 1.0)


def _ncc(a, b, m):
    a, b = a[m].astype(float), b[m].astype(float)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12))


def _dice(a, b):
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def overlap_metrics(fixed_od, fixed_px, moving, moving_px, transform: Transform | None) -> dict:
    """MI, NCC and tissue-mask Dice of the moving image resampled onto the fixed grid (identity when
    ``transform`` is None: 'before')."""
    from .transforms import Transform as T

    tr = transform or T.from_moving_to_fixed_matrix(np.eye(3))
    warped = tr.resample_moving_to_fixed(moving, moving_px, fixed_od.shape, fixed_px, default=0.0)
    f = fixed_od / (np.percentile(fixed_od, 99) + 1e-9)
    w = warped / (np.percentile(warped, 99) + 1e-9) if warped.max() > 0 else warped
    inside = np.ones(f.shape, bool)
    fm, wm = f > 0.15, w > 0.15
    return {
        "mi": mutual_information(np.clip(f, 0, 1), np.clip(w, 0, 1), inside),
        "ncc": _ncc(f, w, inside),
        "dice": _dice(fm, wm),
    }


def checkerboard(fixed: np.ndarray, moving_on_fixed: np.ndarray, squares: int = 8) -> np.ndarray:
    """Alternate squares of the fixed image and the moving image (already on the fixed grid), each
    scaled by its 99th percentile so that both show (for visual QA of a registration)."""
    f = fixed / (np.percentile(fixed, 99) + 1e-9)
    w = moving_on_fixed / (np.percentile(moving_on_fixed, 99) + 1e-9)
    k = max(8, min(f.shape) // squares)
    yy, xx = np.indices(f.shape)
    return np.where(((yy // k) + (xx // k)) % 2 == 0, f, w)


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
) -> Generator[Progress, None, RegistrationResult]:
    t0 = time.monotonic()
    fixed = od_image(he_rgb)
    if route == "synthesis":
        if synth_rgb is None:
            raise ValueError("the synthesis route needs a synthetic H&E")
        moving = od_image(synth_rgb)
    elif route == "direct":
        if msi_stack is None:
            raise ValueError("the direct route needs MSI ion images")
        moving = msi_summary(msi_stack, summary, msi_mask)
    else:
        raise ValueError(f"route must be synthesis or direct, not {route!r}")
    opts = replace(opts, route=route)
    have_lm = landmarks_fixed is not None and landmarks_moving is not None
    if have_lm and landmarks_use == "fit":
        from .landmarks import fit_linear

        m = fit_linear(landmarks_moving, landmarks_fixed, "affine")
        tr = Transform.from_moving_to_fixed_matrix(m, {"route": "landmarks", "stages": ["affine"]})
        yield Progress(1, 1, "landmark fit")
    elif have_lm and landmarks_use == "hybrid":
        from .landmarks import fit_linear

        m = fit_linear(landmarks_moving, landmarks_fixed, "similarity")
        init = Transform.from_moving_to_fixed_matrix(m)
        # start from the landmark fit instead of the moments + rotation search
        tr = yield from iter_register(
            fixed,
            he_px,
            moving,
            moving_px,
            replace(opts, rotation_search=0),
            cancel=cancel,
            initial=init,
        )
    else:
        tr = yield from iter_register(fixed, he_px, moving, moving_px, opts, cancel=cancel)
    res = RegistrationResult(
        tr, route, time.monotonic() - t0, moving_image=moving, moving_px=tuple(moving_px)
    )
    res.metrics = {
        "before": overlap_metrics(fixed, he_px, moving, moving_px, None),
        "after": overlap_metrics(fixed, he_px, moving, moving_px, tr),
        "bspline_fold_fraction": jacobian_folds(tr, fixed.shape, he_px)
        if not tr.is_linear
        else 0.0,
    }
    if have_lm:
        mapped = tr.moving_to_fixed(landmarks_moving)
        err = np.linalg.norm(mapped - landmarks_fixed, axis=1)
        px = msi_pixel_um or float(np.mean(moving_px))
        res.landmarks = {
            "use": landmarks_use,
            "tre_um": err.tolist(),
            "tre_median_um": float(np.median(err)),
            "tre_median_msi_px": float(np.median(err) / px),
        }
        if landmarks_use == "fit":
            res.landmarks["report"] = landmark_report(
                landmarks_moving, landmarks_fixed, "affine", px
            ).summary()
    return res


__all__ = ["RegistrationResult", "checkerboard", "iter_register_msi", "overlap_metrics"]
