"""Landmark registration and its honest error report.

Paired landmarks (moving = MSI or synthetic H&E, fixed = H&E; (N, 2) yx world um, same order) are
fitted with a ``rigid``, ``similarity``, ``affine`` or thin-plate-spline (``tps``) model mapping moving
to fixed. The report gives, per landmark, the fit residual (FRE: the landmark was used in the fit) and
the leave-one-out target registration error (TRE: refit without it, then measure it), with residual
vectors, in um and in MSI pixels, and flags outliers. Existing tools show only a summed fit residual,
which users mistake for accuracy: FRE shrinks as a model gets more flexible while TRE shows whether it
generalises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODELS = ("rigid", "similarity", "affine", "tps")
MIN_POINTS = {"rigid": 2, "similarity": 2, "affine": 3, "tps": 4}


def _procrustes(src, dst, scale: bool):
    """Least-squares rotation (+ isotropic scale) + translation, dst ~ s R src + t (Umeyama)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    dmat = np.diag([1.0, d])
    r = u @ dmat @ vt
    s = (sig * np.diag(dmat)).sum() / (a**2).sum() if scale else 1.0
    m = np.eye(3)
    m[:2, :2] = s * r
    m[:2, 2] = mu_d - s * r @ mu_s
    return m


MAX_COORD_UM = 1e9  # a kilometre: anything larger is not a coordinate on a slide


def check_landmark_pairs(moving, fixed, names=("moving landmarks", "fixed landmarks")) -> None:
    """Refuse landmark sets that cannot define a transform.

    Refused: unpaired, non-finite or absurdly large coordinates, repeated points, or (three or more)
    points on one line.

    Parameters
    ----------
    moving, fixed : array-like (N, 2)
        Paired points, yx um.
    names : tuple of str
        How to name each set in the message (e.g. the CSV files they came from).
    """
    sets = [np.asarray(moving, dtype=float), np.asarray(fixed, dtype=float)]
    for pts, name in zip(sets, names, strict=True):
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"{name}: landmarks must be (N, 2) points, got shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise ValueError(f"{name}: landmarks hold NaN or infinite coordinates")
        if np.abs(pts).max(initial=0) > MAX_COORD_UM:
            raise ValueError(f"{name}: landmark coordinates beyond {MAX_COORD_UM:g} um")
        d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)) + np.diag(np.full(len(pts), np.inf))
        if len(pts) > 1 and d.min() <= 1e-9 * max(1.0, float(np.abs(pts).max())):
            i, j = np.unravel_index(np.argmin(d), d.shape)
            raise ValueError(f"{name}: landmarks {min(i, j)} and {max(i, j)} are the same point")
        if len(pts) >= 3:
            sv = np.linalg.svd(pts - pts.mean(0), compute_uv=False)
            if sv[-1] <= 1e-6 * sv[0]:
                raise ValueError(
                    f"{name}: the landmarks lie on one line; they cannot fix a 2-D transform"
                )
    if len(sets[0]) != len(sets[1]):
        raise ValueError(
            f"{names[0]}, {names[1]}: landmarks are not paired: {len(sets[0])} vs {len(sets[1])}"
        )


def fit_linear(moving, fixed, model: str = "affine") -> np.ndarray:
    """Fit a linear map from moving landmarks to fixed ones (the project's one landmark fitter).

    Rigid and similarity fits are least-squares Procrustes fits; an affine fit is ordinary least
    squares.

    Parameters
    ----------
    moving, fixed : array_like
        ``(N, 2)`` paired landmarks, yx um, in the moving (MSI) and fixed (H&E) world frames.
    model : {"rigid", "similarity", "affine"}
        The transform model.

    Returns
    -------
    ndarray
        3x3 homogeneous (y, x) matrix mapping moving world um to fixed world um.

    Raises
    ------
    ValueError
        Unpaired, non-finite or too few landmarks for the model (``MIN_POINTS``).
    """
    check_landmark_pairs(moving, fixed)
    src, dst = np.asarray(moving, float), np.asarray(fixed, float)
    if len(src) != len(dst):
        raise ValueError(f"landmarks are not paired: {len(src)} moving vs {len(dst)} fixed")
    if len(src) < MIN_POINTS[model]:
        raise ValueError(
            f"a {model} fit needs at least {MIN_POINTS[model]} landmark pairs, got {len(src)}"
        )
    if model in ("rigid", "similarity"):
        return _procrustes(src, dst, scale=model == "similarity")
    g = np.column_stack([src, np.ones(len(src))])
    sol, *_ = np.linalg.lstsq(g, dst, rcond=None)
    m = np.eye(3)
    m[:2, :2], m[:2, 2] = sol[:2].T, sol[2]
    return m


@dataclass
class TPS:
    """Thin-plate spline moving -> fixed (exact at the landmarks unless ``smoothing`` > 0)."""

    ctrl: np.ndarray
    w: np.ndarray
    a: np.ndarray

    @staticmethod
    def _u(r2):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(r2 > 0, 0.5 * r2 * np.log(r2), 0.0)

    @classmethod
    def fit(cls, moving, fixed, smoothing: float = 0.0) -> TPS:
        """Fit a thin-plate spline from moving landmarks to fixed ones.

        Parameters
        ----------
        moving, fixed : array_like
            ``(N, 2)`` paired landmarks, yx um, in the moving (MSI) and fixed (H&E) world frames.
        smoothing : float
            Regularisation; 0 interpolates the landmarks exactly.

        Returns
        -------
        TPS
            The spline; call it on ``(N, 2)`` moving points.
        """
        src, dst = np.asarray(moving, float), np.asarray(fixed, float)
        n = len(src)
        k = cls._u(((src[:, None] - src[None]) ** 2).sum(-1)) + smoothing * np.eye(n)
        p = np.column_stack([np.ones(n), src])
        lhs = np.zeros((n + 3, n + 3))
        lhs[:n, :n], lhs[:n, n:], lhs[n:, :n] = k, p, p.T
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = dst
        sol = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
        return cls(src, sol[:n], sol[n:])

    def __call__(self, pts) -> np.ndarray:
        """Map moving points through the spline.

        Parameters
        ----------
        pts : array_like
            ``(N, 2)`` moving points, yx um.

        Returns
        -------
        ndarray
            ``(N, 2)`` fixed points, yx um.
        """
        q = np.atleast_2d(np.asarray(pts, float))
        u = self._u(((q[:, None] - self.ctrl[None]) ** 2).sum(-1))
        return u @ self.w + np.column_stack([np.ones(len(q)), q]) @ self.a


def fit(moving, fixed, model: str = "affine"):
    """Fit any landmark model and return it as a function.

    Parameters
    ----------
    moving, fixed : array_like
        ``(N, 2)`` paired landmarks, yx um, in the moving (MSI) and fixed (H&E) world frames.
    model : {"rigid", "similarity", "affine", "tps"}
        The transform model.

    Returns
    -------
    callable
        Maps ``(N, 2)`` moving yx um to fixed yx um.

    Raises
    ------
    ValueError
        An unknown model, or too few landmark pairs for it.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, not {model!r}")
    if model == "tps":
        if len(moving) < MIN_POINTS["tps"]:
            raise ValueError(
                f"a tps fit needs at least {MIN_POINTS['tps']} landmark pairs, got {len(moving)}"
            )
        return TPS.fit(moving, fixed)
    m = fit_linear(moving, fixed, model)
    return lambda p: np.atleast_2d(np.asarray(p, float)) @ m[:2, :2].T + m[:2, 2]


@dataclass
class LandmarkReport:
    """Per-landmark fiducial and leave-one-out target registration errors (um)."""

    model: str
    fre_um: np.ndarray  # (N,)
    fre_vec_um: np.ndarray  # (N, 2) fixed - mapped, yx
    tre_um: np.ndarray  # (N,) leave-one-out; NaN where too few points remain
    tre_vec_um: np.ndarray
    outlier: np.ndarray  # (N,) bool
    msi_pixel_um: float

    def summary(self) -> dict:
        """Summarise the report.

        Returns
        -------
        dict
            ``model``, ``n``, median FRE (um), median and 90th-percentile leave-one-out TRE (um), median
            TRE in MSI pixels (None without any TRE) and the outliers' indices.
        """
        t = self.tre_um[np.isfinite(self.tre_um)]
        px = self.msi_pixel_um
        return {
            "model": self.model,
            "n": int(len(self.fre_um)),
            "fre_median_um": float(np.median(self.fre_um)),
            "tre_median_um": float(np.median(t)) if t.size else None,
            "tre_p90_um": float(np.percentile(t, 90)) if t.size else None,
            "tre_median_msi_px": float(np.median(t) / px) if t.size else None,
            "outliers": np.flatnonzero(self.outlier).tolist(),
        }

    def rows(self) -> list[dict]:
        """List the report per landmark.

        Returns
        -------
        list of dict
            One per landmark: ``index``, ``fre_um``, ``tre_um``, ``tre_msi_px``, the TRE vector
            ``dy_um``/``dx_um`` and ``outlier``.
        """
        px = self.msi_pixel_um
        return [
            {
                "index": i,
                "fre_um": float(self.fre_um[i]),
                "tre_um": float(self.tre_um[i]),
                "tre_msi_px": float(self.tre_um[i] / px),
                "dy_um": float(self.tre_vec_um[i, 0]),
                "dx_um": float(self.tre_vec_um[i, 1]),
                "outlier": bool(self.outlier[i]),
            }
            for i in range(len(self.fre_um))
        ]


def landmark_report(
    moving, fixed, model: str = "affine", msi_pixel_um: float = 1.0, outlier_factor: float = 3.0
) -> LandmarkReport:
    """Measure FRE and leave-one-out TRE per landmark.

    A landmark is an outlier when its TRE exceeds ``outlier_factor`` times the median TRE of the
    others (and 1 MSI pixel).

    Parameters
    ----------
    moving, fixed : array_like
        ``(N, 2)`` paired landmarks, yx um, in the moving (MSI) and fixed (H&E) world frames.
    model : str
        The transform model fitted (:func:`fit`).
    msi_pixel_um : float
        The MSI pixel, for errors in MSI pixels.
    outlier_factor : float
        The outlier threshold relative to the others' median TRE.

    Returns
    -------
    LandmarkReport
        Per-landmark FRE and TRE (NaN where too few points remain without it), their vectors, and
        the outlier flags.
    """
    mv, fx = np.asarray(moving, float), np.asarray(fixed, float)
    f = fit(mv, fx, model)
    fre_vec = fx - f(mv)
    n = len(mv)
    tre_vec = np.full((n, 2), np.nan)
    for i in range(n):
        keep = np.arange(n) != i
        if keep.sum() < MIN_POINTS[model] + (1 if model != "tps" else 0):
            continue
        g = fit(mv[keep], fx[keep], model)
        tre_vec[i] = fx[i] - g(mv[i : i + 1])[0]
    tre = np.linalg.norm(tre_vec, axis=1)
    out = np.zeros(n, bool)
    for i in range(n):
        others = np.delete(tre, i)
        others = others[np.isfinite(others)]
        if others.size and np.isfinite(tre[i]):
            out[i] = tre[i] > max(outlier_factor * np.median(others), msi_pixel_um)
    return LandmarkReport(
        model, np.linalg.norm(fre_vec, axis=1), fre_vec, tre, tre_vec, out, msi_pixel_um
    )


class LandmarkEditor:
    """Paired landmarks as a user edits them: undo/redo, the live error report and its text.

    Qt-free: the Register widget keeps one and mirrors it into two Points layers.

    A state is ``(fixed, moving)``: two ``(N, 2)`` arrays of (y, x) world um (H&E and MSI).
    """

    MIN_PAIRS = 4  # fewer pairs give no leave-one-out TRE of an affine fit

    def __init__(self):
        self.undo_stack: list[tuple[np.ndarray, np.ndarray]] = []
        self.redo_stack: list[tuple[np.ndarray, np.ndarray]] = []

    @staticmethod
    def _state(fixed, moving) -> tuple[np.ndarray, np.ndarray]:
        return np.array(fixed, float)[:, -2:].copy(), np.array(moving, float)[:, -2:].copy()

    def record(self, fixed, moving, edit: bool = True) -> None:
        """Add a state; an ``edit`` (not the first state) makes redo impossible.

        Parameters
        ----------
        fixed, moving : array_like
            ``(N, 2)`` or ``(N, D)`` points (the last two columns are y, x world um).
        edit : bool
            A user's edit clears the redo stack; False for the initial state.
        """
        self.undo_stack.append(self._state(fixed, moving))
        if edit:
            self.redo_stack.clear()

    def undo(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Step back; returns the state to show, or None when there is nothing to undo.

        Returns
        -------
        tuple of ndarray or None
            ``(fixed, moving)`` to show, or None when there is nothing to undo.
        """
        if len(self.undo_stack) < 2:
            return None
        self.redo_stack.append(self.undo_stack.pop())
        return self.undo_stack[-1]

    def redo(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Step forward again; returns the state to show, or None.

        Returns
        -------
        tuple of ndarray or None
            ``(fixed, moving)`` to show, or None when there is nothing to redo.
        """
        if not self.redo_stack:
            return None
        state = self.redo_stack.pop()
        self.undo_stack.append(state)
        return state

    @classmethod
    def report(cls, fixed, moving, msi_pixel_um: float) -> LandmarkReport | None:
        """Compute the affine fit's FRE and leave-one-out TRE.

        Parameters
        ----------
        fixed, moving : array_like
            The H&E and MSI landmarks, same order (last two columns y, x world um).
        msi_pixel_um : float
            The MSI pixel.

        Returns
        -------
        LandmarkReport or None
            None with unpaired points or fewer than ``MIN_PAIRS``.
        """
        f, m = np.asarray(fixed, float)[:, -2:], np.asarray(moving, float)[:, -2:]
        if len(f) != len(m) or len(f) < cls.MIN_PAIRS:
            return None
        return landmark_report(m, f, "affine", msi_pixel_um=msi_pixel_um)

    @classmethod
    def text(cls, fixed, moving, msi_pixel_um: float) -> str:
        """Write the report as the widget shows it: a summary line, then one line per landmark.

        Parameters
        ----------
        fixed, moving : array_like
            The H&E and MSI landmarks, same order.
        msi_pixel_um : float
            The MSI pixel.

        Returns
        -------
        str
            The text; with too few pairs, a line saying how many are needed.
        """
        rep = cls.report(fixed, moving, msi_pixel_um)
        if rep is None:
            return (
                f"{len(fixed)} H&E and {len(moving)} MSI landmarks: pair at least "
                f"{cls.MIN_PAIRS} (same order) to see errors"
            )
        s = rep.summary()
        lines = [
            f"affine fit: FRE median {s['fre_median_um']:.1f} um; leave-one-out TRE median "
            f"{s['tre_median_um']:.1f} um ({s['tre_median_msi_px']:.2f} MSI px), "
            f"p90 {s['tre_p90_um']:.1f} um"
        ]
        for r in rep.rows():
            flag = "  OUTLIER" if r["outlier"] else ""
            lines.append(
                f"#{r['index']}: TRE {r['tre_um']:.1f} um ({r['tre_msi_px']:.2f} px), "
                f"dy {r['dy_um']:+.1f}, dx {r['dx_um']:+.1f}{flag}"
            )
        return "\n".join(lines)
