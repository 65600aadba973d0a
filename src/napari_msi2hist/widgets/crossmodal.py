""" "Predict from H&E" and "Super-resolve MSI" dock widgets: thin shells over
:mod:`napari_msi2hist.crossmodal`, run in thread workers with progress and cancel.

Alignment is taken as displayed: the MSI and H&E layers' own transforms (after the Register widget,
the MSI sits on the H&E), so what the user sees overlaid is what the analysis uses.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from ..crossmodal.superres import default_factor, fine_grid_offset
from ..io.histology import to_uint8_rgb
from ..registration import grid
from ..registration.alignment import LinearAlignment
from ..workflows.predict import PredictConfig
from ._common import (
    layer_names,
    msi2hist_kind,
    refill_combo,
    require_pixel_size,
    upsert_image,
)
from ._job import JobWidget
from .training import displayed_msi_to_he

NONE = "(none)"


def _he_rgb(layer) -> np.ndarray:
    data = layer.data[0] if layer.multiscale else layer.data
    return to_uint8_rgb(np.asarray(data)[..., :3])


def label_on_he_grid(labels_layer, he_layer) -> np.ndarray:
    """A Labels layer (drawn anywhere in world space) sampled at the H&E's pixel centres: the
    layers as displayed, handed to :func:`napari_msi2hist.registration.grid.label_on_he_grid`."""
    data = np.asarray(labels_layer.data)
    if data.ndim != 2:
        raise ValueError(f"{labels_layer.name}: a 2D Labels layer is needed, not {data.ndim}D")
    he_shape = (he_layer.data[0] if he_layer.multiscale else he_layer.data).shape[:2]
    return grid.label_on_he_grid(
        data,
        tuple(labels_layer.scale[-2:]),
        displayed_msi_to_he(labels_layer, he_layer),  # labels world -> H&E world, as shown
        he_shape,
        tuple(he_layer.scale[-2:]),
    )


def placed_like(layer, ndim: int, scale=None, translate=None) -> dict:
    """scale / translate / affine for a new ``ndim`` layer that lies where ``layer``'s last two axes
    lie (the leading axes, e.g. m/z or modes, are left alone): the layer's affine as a
    :class:`LinearAlignment`, handed to :func:`napari_msi2hist.registration.grid.placed_like`."""
    frame = LinearAlignment(np.asarray(layer.affine.affine_matrix, np.float64)[-3:, -3:])
    sc = tuple(layer.scale[-2:]) if scale is None else tuple(scale)
    tr = tuple(layer.translate[-2:]) if translate is None else tuple(translate)
    return grid.placed_like(frame, ndim, sc, tr)


def _form_widget(widget, rows, run_btn):
    widget.result_label = QLabel("")
    widget.result_label.setWordWrap(True)
    form = QFormLayout()
    for label, w in rows:
        form.addRow(label, w)
    lay = QVBoxLayout(widget)
    lay.addLayout(form)
    lay.addWidget(run_btn)
    lay.addWidget(widget.progress)
    lay.addWidget(widget.result_label)
    lay.addWidget(widget.status)
    lay.addStretch(1)
    # layer choosers follow the layer list
    widget.viewer.layers.events.inserted.connect(widget._refresh)
    widget.viewer.layers.events.removed.connect(widget._refresh)
    widget._refresh()


class PredictWidget(JobWidget):
    """H&E features -> MSI PCA modes (ridge) and -> a label (logistic), on the open MSI + H&E, with
    extra training samples from a pairs file. With extra samples the open sample's layers are
    predicted by models that never saw it; with none, the fit is in-sample and says so."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.result = None
        self.msi_box, self.he_box, self.label_box = QComboBox(), QComboBox(), QComboBox()
        self.msi_box.setToolTip("MSI layer (opened from an .imzML), registered onto the H&E")
        self.he_box.setToolTip("The H&E of the same section")
        self.label_box.setToolTip(
            "Optional Labels layer drawn on the H&E (e.g. tumour): adds a label-probability map"
        )
        self.pairs = QLineEdit()
        self.pairs.setPlaceholderText("optional pairs.yaml: more samples to train on")
        self.weights = QLineEdit()
        self.weights.setPlaceholderText("optional ResNet-50/VGG-16 .pth (else colour features)")
        self.weights.setToolTip("Local weights only; nothing is downloaded")
        self.n_peaks = QSpinBox()
        self.n_peaks.setRange(2, 500)
        self.n_peaks.setValue(50)
        self.n_comp = QSpinBox()
        self.n_comp.setRange(1, 100)
        self.n_comp.setValue(5)
        self.n_comp.setToolTip("MSI principal components (modes) to predict")
        self.alpha = QDoubleSpinBox()
        self.alpha.setRange(0.0, 1e6)
        self.alpha.setValue(1.0)
        self.alpha.setToolTip("Ridge penalty (on standardised features)")
        self.run_btn = QPushButton("Predict")
        self.connect_run(self.run_btn, self._prepare)
        _form_widget(
            self,
            [
                ("MSI layer", self.msi_box),
                ("H&&E layer", self.he_box),
                ("Label layer", self.label_box),
                ("Pairs file", self.pairs),
                ("Backbone weights", self.weights),
                ("N peaks", self.n_peaks),
                ("PCA modes", self.n_comp),
                ("Ridge alpha", self.alpha),
            ],
            self.run_btn,
        )

    def _refresh(self, *_):
        v = self.viewer
        refill_combo(self.msi_box, layer_names(v, lambda ly: msi2hist_kind(ly) == "msi"))
        refill_combo(self.he_box, layer_names(v, lambda ly: getattr(ly, "rgb", False)))
        labels = layer_names(v, lambda ly: type(ly).__name__ == "Labels")
        refill_combo(self.label_box, [NONE, *labels])

    def _entries(self) -> list[dict]:
        msi, he = self.msi_box.currentText(), self.he_box.currentText()
        if not msi or not he:
            raise ValueError("open an MSI (.imzML) and its H&E first")
        msi_l, he_l = self.viewer.layers[msi], self.viewer.layers[he]
        e = {
            "name": msi.removesuffix(" TIC"),
            "imzml": msi_l.metadata["msi2hist"]["file"],
            "he": he,
            "he_rgb": _he_rgb(he_l),
            "he_px": tuple(float(v) for v in he_l.scale[-2:]),
            "alignment": displayed_msi_to_he(msi_l, he_l),
        }
        lab = self.label_box.currentText()
        if lab and lab != NONE:
            e["label_array"] = label_on_he_grid(self.viewer.layers[lab], he_l)
        entries = [e]
        if self.pairs.text().strip():
            from ..models.pairs import read_pairs_yaml

            extra = read_pairs_yaml(self.pairs.text().strip())
            if "label_array" in e and any(not x.get("label") for x in extra):
                raise ValueError(f"{self.pairs.text()}: every sample needs a 'label' as well")
            if "label_array" not in e:
                extra = [{k: v for k, v in x.items() if k != "label"} for x in extra]
            entries += extra
        return entries

    def _prepare(self):
        entries = self._entries()
        cfg = PredictConfig(
            n_peaks=self.n_peaks.value(),
            backbone=self.weights.text().strip() or None,
            n_components=self.n_comp.value(),
            alpha=self.alpha.value(),
            label_from=("he",),  # when a label layer is chosen and is neither empty nor full
            in_sample=True,  # one open sample: fitted and scored on itself, and labelled so
        )
        return (lambda tok: predict_job(entries, cfg, cancel=tok)), self._show

    def _show(self, res):
        self.result = res
        msi_l = self.viewer.layers[self.msi_box.currentText()]
        name = self.msi_box.currentText().removesuffix(" TIC")
        common = placed_like(msi_l, 3)
        upsert_image(
            self.viewer,
            f"{name} predicted PCA modes",
            res["predicted"],
            colormap="magma",
            metadata={"msi2hist": {"kind": "pca_modes", "r2": res["r2"]}},
            **common,
        )
        upsert_image(
            self.viewer,
            f"{name} measured PCA modes",
            res["measured"],
            colormap="magma",
            visible=False,
            metadata={"msi2hist": {"kind": "pca_modes"}},
            **common,
        )
        if res.get("probability") is not None:
            upsert_image(
                self.viewer,
                f"{name} label probability",
                res["probability"],
                colormap="viridis",
                contrast_limits=(0.0, 1.0),
                metadata={"msi2hist": {"kind": "label_probability"}},
                **placed_like(msi_l, 2),
            )
        how = (
            "held out (trained on the other samples)"
            if res["cv"]
            else "IN-SAMPLE (no other sample)"
        )
        lines = [f"R2 per mode, {how}: " + ", ".join(f"{v:+.2f}" for v in res["r2"])]
        if res.get("auc") is not None:
            lines.append(f"label from H&E features: AUC {res['auc']:.3f}, {how}")
        self.result_label.setText("\n".join(lines))
        self.status.setText("done")


def predict_job(entries, cfg, cancel=None):
    """Worker: the predict workflow (as ``msi2hist predict-msi`` / ``classify`` run it), then the
    first sample's images for the layers."""
    from ..workflows.predict import iter_predict_job

    res = yield from iter_predict_job(entries, cfg, source="the pairs file", cancel=cancel)
    first = res.table.samples[0].name
    lab = res.labels.get("he")
    return {
        "cv": res.cross_validated,
        "r2": [float(v) for v in res.r2_per_sample[first]],
        "predicted": res.images(res.predicted)[0],
        "measured": res.images(res.measured)[0],
        "probability": None if lab is None else res.images(lab.oof_proba)[0][0],
        "auc": None if lab is None else float(lab.per_sample[first]["auc"]),
    }


class SuperResWidget(JobWidget):
    """Ion images (a stack from Peak selection) -> a finer grid guided by the displayed H&E."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.result = None
        self.stack_box, self.he_box = QComboBox(), QComboBox()
        self.stack_box.setToolTip("Ion images: the stack added by Peak selection")
        self.he_box.setToolTip("The H&E guide, registered (as displayed) onto the MSI")
        self.factor = QSpinBox()
        self.factor.setRange(0, 16)
        self.factor.setValue(0)
        self.factor.setSpecialValueText("auto (pixel-size ratio)")
        self.factor.setToolTip("Upsampling factor: the fine pixel is the MSI pixel / factor (um)")
        self.method = QComboBox()
        self.method.addItems(["learned", "guided", "bicubic"])
        self.method.setToolTip(
            "learned: the bundled H&E-guided network (or the model below); guided: guided filter; "
            "bicubic: no guide"
        )
        self.model = QLineEdit("superres")
        self.model.setToolTip("Super-resolution model: 'superres' (bundled) or a local file")
        self.run_btn = QPushButton("Super-resolve")
        self.connect_run(self.run_btn, self._prepare)
        _form_widget(
            self,
            [
                ("Ion images", self.stack_box),
                ("H&&E guide", self.he_box),
                ("Factor", self.factor),
                ("Method", self.method),
                ("Model", self.model),
            ],
            self.run_btn,
        )

    def _refresh(self, *_):
        v = self.viewer
        refill_combo(
            self.stack_box, layer_names(v, lambda ly: msi2hist_kind(ly) in ("ion_stack", "msi"))
        )
        refill_combo(self.he_box, layer_names(v, lambda ly: getattr(ly, "rgb", False)))

    def _prepare(self):
        name, he = self.stack_box.currentText(), self.he_box.currentText()
        if not name or not he:
            raise ValueError("add ion images (Peak selection) and open the H&E first")
        st, he_l = self.viewer.layers[name], self.viewer.layers[he]
        data = np.asarray(st.data, np.float32)
        stack = data if data.ndim == 3 else data[None]
        px = require_pixel_size(st, "MSI")
        he_px = require_pixel_size(he_l, "H&E")
        factor = self.factor.value() or default_factor(px, he_px)
        m = displayed_msi_to_he(st, he_l)
        params = (stack, _he_rgb(he_l), he_px, m, px, factor)
        method, model = self.method.currentText(), self.model.text().strip() or "superres"
        return (
            (lambda tok: superres_job(*params, method, model, cancel=tok)),
            (lambda res: self._show(name, res)),
        )

    def _show(self, name, res):
        self.result = res
        st = self.viewer.layers[name]
        hr, fine_px, factor, method = res
        # the fine grid lies in the MSI's frame: fine pixel 0 centres half a fine pixel inside
        # MSI pixel 0's footprint
        shift = fine_grid_offset(st.scale[-2:], factor)
        upsert_image(
            self.viewer,
            f"{name} super-resolved ({method})",
            hr,
            colormap="viridis",
            **placed_like(st, 3, (fine_px, fine_px), tuple(np.asarray(st.translate[-2:]) + shift)),
            metadata={"msi2hist": {"kind": "ion_stack_superres", "factor": factor}},
        )
        self.result_label.setText(f"{len(hr)} ion images at {fine_px:g} um ({factor}x, {method})")
        self.status.setText("done")


def superres_job(stack, he_rgb, he_px, alignment, px, factor, method, model, cancel=None):
    """The super-resolve workflow on the layers as displayed (as ``msi2hist superres`` runs it)."""
    from ..workflows import superres

    res = yield from superres.iter_superres_job(
        stack,
        he_rgb,
        he_px,
        alignment,
        px,
        factor=factor,
        method=method,
        model=model,
        source="the ion-image layer",
        cancel=cancel,
    )
    return res.images, res.pixel_size_um, res.factor, res.method
