"""The predict / classify job: registered MSI + H&E samples -> H&E features that predict the MSI.

Shared by ``msi2hist predict-msi``, ``msi2hist classify`` and the Predict from H&E widget (seed
003): the pixel table (ion images, H&E features and labels on each MSI grid), then MSI PCA modes
regressed on the H&E features (ridge) and a label predicted from the H&E features or the MSI modes
(logistic). With two samples or more, every sample is predicted by models that never saw it
(leave-one-sample-out); a single sample is refused unless ``in_sample`` allows fitting and scoring
on it, which the result says (``cross_validated`` False).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from ..config import DEFAULT_TOLERANCE, Tolerance
from ..crossmodal.pipeline import Table, iter_build_table, pixels_to_images
from ..crossmodal.regression import (
    ClassificationResult,
    PCAModel,
    RidgeModel,
    biomarker_table,
    cross_validated_logistic,
    cross_validated_regression,
    fit_logistic,
    fit_pca,
    fit_ridge,
    r2_score,
    roc_auc,
)
from ..progress import CancelToken, Progress

LABEL_SOURCES = ("msi", "he")


@dataclass(frozen=True)
class PredictConfig:
    """What to extract, what to fit and how (one default each, shared by the CLI and the widget)."""

    mz: tuple[float, ...] | None = None  # None: the first sample's top ``n_peaks``
    n_peaks: int = 50
    backbone: str | None = None  # local ResNet-50/VGG-16 weights; None: colour features
    stage: int = 3
    norm: str = "tic"
    tolerance: Tolerance = DEFAULT_TOLERANCE
    n_components: int = 10
    scale: bool = False  # unit-variance m/z before the PCA
    alpha: float = 1.0  # ridge penalty
    regress: bool = True  # H&E features -> MSI PCA modes
    label_from: tuple[str, ...] = ()  # "msi" and/or "he": predict the samples' label from these
    label_required: bool = False  # a label that covers all or no pixels: an error, else skipped
    l2: float = 1.0  # logistic penalty
    names: dict[float, str] | None = field(default=None, hash=False)  # m/z -> compound name
    in_sample: bool = False  # one sample: fit and score on it rather than refuse


@dataclass
class PredictResult:
    """The fitted models and their (out-of-fold, or in-sample) predictions, pixel by pixel."""

    table: Table
    cross_validated: bool
    pca: PCAModel
    model: RidgeModel | None = None  # fitted on all samples: for an H&E without MSI
    r2: np.ndarray | None = None  # (K,) per mode
    r2_per_sample: dict = field(default_factory=dict)  # sample -> (K,)
    predicted: np.ndarray | None = None  # (N, K) predicted mode scores
    measured: np.ndarray | None = None  # (N, K)
    labels: dict[str, ClassificationResult] = field(default_factory=dict)  # source -> result
    biomarkers: list[dict] | None = None  # one row per m/z, best separating first

    def images(self, values: np.ndarray) -> list[np.ndarray]:
        """Per-pixel values back onto each sample's MSI grid.

        Parameters
        ----------
        values : ndarray
            ``(N,)`` or ``(N, K)`` over the table's pixels, in :meth:`Table.pixels` order.

        Returns
        -------
        list of ndarray
            One ``(K, Y, X)`` image per sample, NaN outside its mask.
        """
        return pixels_to_images(values, self.table)


def _in_sample_logistic(x, lab, name, l2) -> ClassificationResult:
    model = fit_logistic(x, lab, l2)
    proba = model.predict_proba(x)
    acc, auc = float(((proba > 0.5) == lab).mean()), roc_auc(lab, proba)
    return ClassificationResult(model, acc, auc, {name: {"accuracy": acc, "auc": auc}}, proba)


def iter_predict_job(
    entries: list[dict],
    cfg: PredictConfig = PredictConfig(),
    source: str = "the samples",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, PredictResult]:
    """Build the pixel table of ``entries`` and fit the models ``cfg`` asks for.

    Parameters
    ----------
    entries : list of dict
        Samples as ``models.pairs.read_pairs_yaml`` gives them, or built in memory (``he_rgb``,
        ``he_px``, ``alignment``, ``label_array``; see ``crossmodal.pipeline.iter_build_table``).
    cfg : PredictConfig
        What to extract and fit.
    source : str
        Named in errors (the pairs file).
    cancel : CancelToken, optional
        Checked while the table is built; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        One per sample read, then while its features are computed.

    Returns
    -------
    PredictResult
    """
    unknown = [s for s in cfg.label_from if s not in LABEL_SOURCES]
    if unknown:
        raise ValueError(f"--from {unknown[0]!r}: choose from msi, he")
    table = yield from iter_build_table(
        entries,
        mz=None if cfg.mz is None else list(cfg.mz),
        n_peaks=cfg.n_peaks,
        backbone=cfg.backbone,
        stage=cfg.stage,
        norm=cfg.norm,
        tolerance=cfg.tolerance,
        cancel=cancel,
    )
    f, x, g, lab = table.pixels()
    cv = len(table.samples) > 1 or not cfg.in_sample
    first = table.samples[0].name
    if cfg.regress:
        if cv:
            reg = cross_validated_regression(f, x, g, cfg.n_components, cfg.alpha, cfg.scale)
            res = PredictResult(
                table, cv, reg.pca, reg.model, reg.r2, reg.r2_per_sample, reg.oof_scores,
                reg.true_scores,
            )  # fmt: skip
        else:
            pca = fit_pca(x, cfg.n_components, cfg.scale)
            true = pca.transform(x)
            model = fit_ridge(f, true, cfg.alpha)
            pred = model.predict(f)
            r2 = r2_score(true, pred)
            res = PredictResult(table, cv, pca, model, r2, {first: r2}, pred, true)
    else:
        res = PredictResult(table, cv, fit_pca(x, cfg.n_components, cfg.scale))
    if not cfg.label_from:
        return res
    if lab is None or lab.all() or not lab.any():
        if cfg.label_required:
            raise ValueError(f"{source}: the label masks cover all or none of the MSI pixels")
        return res
    sources = {"msi": lambda: res.pca.transform(x), "he": lambda: f}
    for name in cfg.label_from:
        feats = sources[name]()
        if cv:
            res.labels[name] = cross_validated_logistic(feats, lab, g, cfg.l2)
        else:
            res.labels[name] = _in_sample_logistic(feats, lab, first, cfg.l2)
    res.biomarkers = biomarker_table(x, table.mz, lab, cfg.names)
    return res
