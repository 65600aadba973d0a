"""Linear models between H&E features and MSI (seed 003), cross-validated by sample.

- PCA of the ion-image stack (pixels x m/z, centred; optionally scaled per m/z): MSI "modes".
- Ridge regression H&E features -> MSI PCA scores; out-of-fold predictions give per-component R2;
  predicted scores reconstruct a spectrum (on the stack's m/z) at any pixel.
- L2-regularised logistic regression (Newton / IRLS) from MSI modes or H&E features to a binary label,
  with cross-validated accuracy and AUC (Mann-Whitney).
- A biomarker table: univariate AUC of each m/z's intensity for the label (``|AUC - 0.5|`` ranks).

Cross-validation is by sample: every fold holds out whole samples (leave-one-sample-out), never pixels
of a sample whose other pixels trained the model. With a single sample there is nothing to hold out
and the functions say so instead of scoring the training pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


# ------------------------------------------------------------------- PCA
@dataclass
class PCAModel:
    mean: np.ndarray  # (C,)
    scale: np.ndarray  # (C,)
    components: np.ndarray  # (K, C), orthonormal rows
    explained_variance_ratio: np.ndarray  # (K,)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.components.T

    def inverse(self, scores: np.ndarray) -> np.ndarray:
        return scores @ self.components * self.scale + self.mean


def fit_pca(x: np.ndarray, n_components: int, scale: bool = False) -> PCAModel:
    """PCA of ``x`` (N pixels, C channels) by SVD of the centred (optionally unit-variance) data."""
    x = np.asarray(x, np.float64)
    mean = x.mean(0)
    sd = x.std(0) if scale else np.ones(x.shape[1])
    sd[sd == 0] = 1.0
    z = (x - mean) / sd
    _, sv, vt = np.linalg.svd(z, full_matrices=False)
    k = min(n_components, vt.shape[0])
    var = sv**2
    return PCAModel(mean, sd, vt[:k], var[:k] / max(var.sum(), 1e-300))


# ------------------------------------------------------------------- folds
def sample_folds(groups: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, object]]:
    """Leave-one-sample-out folds: ``(train_index, test_index, held_out_sample)``."""
    groups = np.asarray(groups)
    names = list(dict.fromkeys(groups.tolist()))
    if len(names) < 2:
        raise ValueError(
            "cross-validation by sample needs at least two samples (got one); "
            "add another sample rather than scoring pixels of the training sample"
        )
    for g in names:
        test = np.flatnonzero(groups == g)
        train = np.flatnonzero(groups != g)
        yield train, test, g


# ------------------------------------------------------------------- ridge
@dataclass
class RidgeModel:
    x_mean: np.ndarray
    x_scale: np.ndarray
    coef: np.ndarray  # (F, K)
    intercept: np.ndarray  # (K,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.x_mean) / self.x_scale) @ self.coef + self.intercept


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> RidgeModel:
    """Ridge regression on standardised features: ``(Z'Z + alpha I) b = Z'(y - mean y)``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    y2 = y[:, None] if y.ndim == 1 else y
    xm, xs = x.mean(0), x.std(0)
    xs[xs == 0] = 1.0
    z = (x - xm) / xs
    ym = y2.mean(0)
    a = z.T @ z + alpha * np.eye(z.shape[1])
    coef = np.linalg.solve(a, z.T @ (y2 - ym))
    return RidgeModel(xm, xs, coef, ym)


def r2_score(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: ``1 - SS_res / SS_tot``."""
    y, pred = np.atleast_2d(np.asarray(y, np.float64).T).T, np.atleast_2d(np.asarray(pred).T).T
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)


@dataclass
class RegressionResult:
    pca: PCAModel
    model: RidgeModel  # fitted on all samples, for prediction on new H&E
    r2: np.ndarray  # (K,) out-of-fold R2 per PCA component
    r2_per_sample: dict  # held-out sample -> (K,) R2
    oof_scores: np.ndarray  # (N, K) out-of-fold predicted scores
    true_scores: np.ndarray  # (N, K)


def cross_validated_regression(
    features: np.ndarray,
    stack: np.ndarray,
    groups: np.ndarray,
    n_components: int = 10,
    alpha: float = 1.0,
    scale_channels: bool = False,
) -> RegressionResult:
    """H&E features (N, F) -> MSI PCA scores of ``stack`` (N, C), leave-one-sample-out.

    The PCA is fitted on all pixels once (it is unsupervised and sees no label); the ridge models are
    fitted per fold on the training samples only and scored on the held-out sample."""
    pca = fit_pca(stack, n_components, scale_channels)
    scores = pca.transform(stack)
    oof = np.zeros_like(scores)
    per = {}
    for tr, te, g in sample_folds(groups):
        m = fit_ridge(features[tr], scores[tr], alpha)
        oof[te] = m.predict(features[te])
        per[g] = r2_score(scores[te], oof[te])
    return RegressionResult(
        pca, fit_ridge(features, scores, alpha), r2_score(scores, oof), per, oof, scores
    )


# ------------------------------------------------------------------- logistic
@dataclass
class LogisticModel:
    x_mean: np.ndarray
    x_scale: np.ndarray
    coef: np.ndarray  # (F,)
    intercept: float

    def decision(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.x_mean) / self.x_scale) @ self.coef + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.decision(x), -50, 50)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> LogisticModel:
    """L2-regularised logistic regression by Newton's method (IRLS) on standardised features; the
    intercept is not penalised."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64).ravel()
    if not np.isin(y, (0, 1)).all() or y.min() == y.max():
        raise ValueError("logistic regression needs a label with both classes (0 and 1)")
    xm, xs = x.mean(0), x.std(0)
    xs[xs == 0] = 1.0
    z = np.column_stack([(x - xm) / xs, np.ones(len(x))])
    w = np.zeros(z.shape[1])
    pen = np.full(z.shape[1], l2)
    pen[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -50, 50)))
        grad = z.T @ (p - y) + pen * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(pen) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return LogisticModel(xm, xs, w[:-1], float(w[-1]))


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties counting half
    (the Mann-Whitney U statistic over n_pos * n_neg)."""
    from scipy.stats import rankdata

    y = np.asarray(y).ravel().astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(np.asarray(score, np.float64).ravel())
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@dataclass
class ClassificationResult:
    model: LogisticModel  # fitted on all samples
    accuracy: float  # out-of-fold, threshold 0.5
    auc: float  # out-of-fold
    per_sample: dict  # held-out sample -> {"accuracy", "auc"}
    oof_proba: np.ndarray


def cross_validated_logistic(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, l2: float = 1.0
) -> ClassificationResult:
    y = np.asarray(y).astype(int).ravel()
    oof = np.zeros(len(y))
    per = {}
    for tr, te, g in sample_folds(groups):
        m = fit_logistic(x[tr], y[tr], l2)
        oof[te] = m.predict_proba(x[te])
        per[g] = {
            "accuracy": float(((oof[te] > 0.5) == y[te]).mean()),
            "auc": roc_auc(y[te], oof[te]),
        }
    return ClassificationResult(
        fit_logistic(x, y, l2), float(((oof > 0.5) == y).mean()), roc_auc(y, oof), per, oof
    )


def biomarker_table(
    stack: np.ndarray,
    mz: np.ndarray,
    label: np.ndarray,
    names: dict[float, str] | None = None,
    tolerance_da: float = 0.01,
) -> list[dict]:
    """One row per m/z: univariate AUC of its intensity for the label (> 0.5: higher in the label),
    sorted by how well it separates (``|AUC - 0.5|``); ``names`` maps m/z to a user-given name
    (matched within ``tolerance_da``)."""
    label = np.asarray(label).astype(bool).ravel()
    rows = []
    keys = np.array(sorted(names)) if names else np.zeros(0)
    for i, m in enumerate(np.asarray(mz, np.float64)):
        auc = roc_auc(label, stack[:, i])
        name = ""
        if len(keys):
            j = int(np.argmin(np.abs(keys - m)))
            if abs(keys[j] - m) <= tolerance_da:
                name = names[float(keys[j])]
        rows.append(
            {
                "mz": float(m),
                "auc": auc,
                "separation": abs(auc - 0.5),
                "higher_in": "label" if auc > 0.5 else "rest",
                "name": name,
            }
        )
    rows.sort(key=lambda r: -r["separation"])
    return rows
