"""Samples -> pixel tables (H&E features, ion images, labels on the MSI grid) -> regression and
classification, shared by ``msi2hist predict-msi`` / ``classify`` and the "Predict from H&E" widget.

A sample is a pairs-file entry (``imzml``, ``he``, ``align`` as in training: truth, transform,
landmarks or aligned; or, from the viewer, ``he_rgb``/``he_px``/``alignment``/``label_array`` in
memory, ``alignment`` an :class:`~napari_msi2hist.registration.alignment.Alignment`) with an optional ``label``: a mask image on the H&E's pixel grid (non-zero =
in the class, e.g. a tumour annotation exported from a napari Labels layer). Labels and features are
averaged over each MSI pixel's footprint; a pixel is in the class when over half its footprint is.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..msi.ion_images import DEFAULT_TOLERANCE, Tolerance
from ..pixel_size import resolve_pixel_size
from ..progress import CancelToken, Progress
from ..registration.alignment import LinearAlignment
from ..registration.grid import features_on_msi_grid
from .features import COLOUR_FEATURES, colour_texture_features, iter_deep_features


@dataclass
class SampleData:
    name: str
    shape: tuple[int, int]  # MSI grid
    pixel_size_um: tuple[float, float]
    features: np.ndarray  # (F, Y, X)
    stack: np.ndarray  # (C, Y, X) ion images
    mask: np.ndarray  # (Y, X) pixels used: measured, and footprint on the H&E
    label: np.ndarray | None = None  # (Y, X) bool


@dataclass
class Table:
    samples: list[SampleData]
    mz: np.ndarray
    feature_names: list[str]
    meta: dict = field(default_factory=dict)

    def pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """``(features (N, F), ion intensities (N, C), groups (N,), labels (N,) or None)`` over the
        masked pixels of every sample."""
        f = np.concatenate([s.features[:, s.mask].T for s in self.samples])
        x = np.concatenate([s.stack[:, s.mask].T for s in self.samples])
        g = np.concatenate([np.full(int(s.mask.sum()), s.name, dtype=object) for s in self.samples])
        lab = None
        if all(s.label is not None for s in self.samples):
            lab = np.concatenate([s.label[s.mask] for s in self.samples])
        return f, x, g, lab


def _backbone(backbone):
    """A loaded feature network: paths are loaded (with ``weights_only``), networks pass through."""
    if backbone is None or hasattr(backbone, "forward"):
        return backbone
    from ..models.backbones import load_backbone

    return load_backbone(backbone)


def he_feature_map(
    rgb: np.ndarray,
    he_px: tuple[float, float],
    backbone,
    stage: int,
    cancel: CancelToken | None = None,
) -> Generator[
    Progress, None, tuple[np.ndarray, tuple[float, float], tuple[float, float], list[str]]
]:
    """Feature map, its pixel size and origin (um, H&E frame) and feature names. ``backbone``: None
    (colour/texture features), a weights path, or a network already loaded (load it once for many
    images)."""
    if backbone is None:
        yield Progress(0, 1, "H&E colour/texture features")
        f = colour_texture_features(rgb)
        return f, he_px, (0.0, 0.0), list(COLOUR_FEATURES)
    net = _backbone(backbone)
    f, stride = yield from iter_deep_features(rgb, net, stage=stage, cancel=cancel)
    px = (he_px[0] * stride, he_px[1] * stride)
    origin = ((stride - 1) / 2 * he_px[0], (stride - 1) / 2 * he_px[1])
    return f, px, origin, [f"{net.kind}[{stage}]:{i}" for i in range(len(f))]


def iter_build_table(
    entries: list[dict],
    mz: list[float] | None = None,
    n_peaks: int = 50,
    backbone: str | os.PathLike | None = None,
    stage: int = 3,
    norm: str = "tic",
    tolerance=DEFAULT_TOLERANCE,
    tissue_only: bool = True,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, Table]:
    """Per sample: ion images, H&E features and label on the MSI grid. ``tissue_only`` keeps the MSI
    pixels whose footprint is mostly stained tissue on the H&E (glass carries matrix peaks and
    nothing the H&E can explain)."""
    from ..io.histology import read_histology, to_uint8_rgb
    from ..io.imzml import ImzMLFile
    from ..models.pairs import alignment_of_entry
    from ..msi.ion_images import ion_images
    from ..msi.peaks import iter_top_peaks

    if not entries:
        raise ValueError("no samples given")
    tol = Tolerance.coerce(tolerance)
    if mz is None:
        with ImzMLFile(entries[0]["imzml"]) as imz:
            mz = (yield from iter_top_peaks(imz, n_peaks, norm, cancel)).tolist()
    mz_arr = np.asarray(mz, np.float64)
    meta = {"backbone": str(backbone) if backbone else "colour"}
    backbone = _backbone(backbone)  # once for all samples, not per H&E
    out, names = [], None
    for i, e in enumerate(entries):
        yield Progress(i, len(entries), f"sample {e['name']}")
        with ImzMLFile(e["imzml"]) as imz:
            imz.pixel_size_um = px = resolve_pixel_size(
                imz.pixel_size_um, e.get("moving_pixel_um"), "moving", e["imzml"]
            )
            ions = ion_images(imz, mz_arr, tolerance=tol, norm=norm)
        if e.get("he_rgb") is not None:  # in memory, e.g. from a napari layer
            rgb, he_px = e["he_rgb"], tuple(e["he_px"])
        else:
            he = read_histology(e["he"])
            rgb = to_uint8_rgb(np.asarray(he.levels[0])[..., :3])
            he_px = resolve_pixel_size(he.pixel_size_um, e.get("fixed_pixel_um"), "fixed", e["he"])
        fmap, fpx, origin, names = yield from he_feature_map(rgb, he_px, backbone, stage, cancel)
        alignment = e.get("alignment")
        if alignment is None:
            alignment = alignment_of_entry(e.get("align", "aligned"), Path(e.get("base", ".")))
        shape = ions.stack.shape[1:]
        feats, on_he = features_on_msi_grid(fmap, fpx, alignment, shape, px, fmap_origin_um=origin)
        label = None
        lab_img = e.get("label_array")
        if lab_img is None and e.get("label"):
            lab_path = Path(e.get("base", ".")) / e["label"]
            if lab_path.suffix.lower() in (".geojson", ".json"):
                lab_img = rasterize_geojson(lab_path, rgb.shape[:2])
            else:
                lab_img = np.asarray(read_histology(lab_path).levels[0])
                lab_img = lab_img[..., 0] if lab_img.ndim == 3 else lab_img
        if lab_img is not None:
            lab_img = np.asarray(lab_img) > 0
            if lab_img.shape != rgb.shape[:2]:
                raise ValueError(
                    f"{e.get('label', 'label')}: label mask {lab_img.shape} is not on the H&E's "
                    f"grid {rgb.shape[:2]} ({e['he']})"
                )
            frac, _ = features_on_msi_grid(
                lab_img[None].astype(np.float32), he_px, alignment, shape, px
            )
            label = frac[0] > 0.5
        mask = ions.mask & on_he & np.isfinite(feats).all(0)
        if tissue_only:
            from ..metrics import tissue_mask

            t = tissue_mask(rgb).astype(np.float32)[None]
            tissue, _ = features_on_msi_grid(t, he_px, alignment, shape, px)
            mask &= tissue[0] > 0.5
        if mask.sum() < 2:
            raise ValueError(f"{e['imzml']}: no MSI pixel lies on the H&E {e['he']}")
        out.append(SampleData(e["name"], shape, px, feats, ions.stack, mask, label))
    yield Progress(len(entries), len(entries), "samples ready")
    return Table(out, mz_arr, names, meta)


# QuPath GeoJSON reading lives in interop/geojson.py; re-exported here for existing callers
from ..interop.geojson import rasterize_geojson  # noqa: E402


def pixels_to_images(values: np.ndarray, table: Table) -> list[np.ndarray]:
    """Split per-pixel values ``(N, K)`` (in :meth:`Table.pixels` order) back into ``(K, Y, X)``
    images per sample, NaN outside the mask."""
    values = values.reshape(len(values), -1)
    out, i = [], 0
    for s in table.samples:
        n = int(s.mask.sum())
        img = np.full((values.shape[1], *s.shape), np.nan, np.float32)
        img[:, s.mask] = values[i : i + n].T
        out.append(img)
        i += n
    return out


def iter_predict_on_he(
    rgb: np.ndarray,
    he_px: tuple[float, float],
    out_px: float,
    pca,
    model,
    backbone: str | os.PathLike | None = None,
    stage: int = 3,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Predict MSI for an H&E that has no MSI: features on a grid of ``out_px`` um over the H&E's
    own frame, then the fitted ridge ``model`` -> PCA modes -> ion images. Returns ``(modes (K, Y, X),
    ion images (C, Y, X), tissue mask)``; glass is NaN (the models were fitted on tissue only)."""
    from ..metrics import tissue_mask

    fmap, fpx, origin, _ = yield from he_feature_map(rgb, he_px, backbone, stage, cancel)
    h, w = rgb.shape[:2]
    shape = (max(1, int(h * he_px[0] // out_px)), max(1, int(w * he_px[1] // out_px)))
    # MSI-like pixel (i, j) covers [i, i + 1) * out_px of the H&E frame: centre at (i + 0.5) px
    half = np.array([0.5 * out_px - 0.5 * he_px[0], 0.5 * out_px - 0.5 * he_px[1]])
    to_he = LinearAlignment.from_affine(np.eye(2), half)
    feats, _ = features_on_msi_grid(
        fmap, fpx, to_he, shape, (out_px, out_px), fmap_origin_um=origin
    )
    t, _ = features_on_msi_grid(
        tissue_mask(rgb).astype(np.float32)[None], he_px, to_he, shape, (out_px, out_px)
    )
    mask = (t[0] > 0.5) & np.isfinite(feats).all(0)
    scores = model.predict(feats[:, mask].T)
    modes = np.full((scores.shape[1], *shape), np.nan, np.float32)
    modes[:, mask] = scores.T
    ions = np.full((len(pca.mean), *shape), np.nan, np.float32)
    ions[:, mask] = pca.inverse(scores).T
    yield Progress(1, 1, "predicted")
    return modes, ions, mask
