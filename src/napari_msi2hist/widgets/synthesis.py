"""Synthesise H&E dock widget: MSI layer + checkpoint -> synthetic H&E layer, in a thread worker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from ..io.imzml import is_imzml_path
from ..models.inference import InferenceOptions
from ..msi.ion_images import DEFAULT_TOLERANCE, IonImages, Tolerance
from ..workflows import synthesize as _synthesize_workflow
from ._common import msi2hist_kind, refill_combo, upsert_image
from ._job import JobWidget
from .session import session_for


@dataclass(frozen=True)
class SynthParams:
    layer_name: str
    kind: str
    file: str
    checkpoint: str
    options: InferenceOptions
    reextract: bool


def synthesis_sources(viewer):
    return [ly for ly in viewer.layers if msi2hist_kind(ly) in ("msi", "ion_stack")]


class SynthesisWidget(JobWidget):
    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.last_result = None

        self.layer_box = QComboBox()
        self.layer_box.setToolTip("MSI (from an .imzML) or an ion-image stack layer")
        self.ckpt_box = QComboBox()
        self.ckpt_box.setEditable(True)
        self.ckpt_box.setToolTip("Checkpoint file, or 'demo' for the bundled demo model")
        browse = QPushButton("...")
        browse.setToolTip("Choose a checkpoint file")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.ckpt_box, 1)
        row.addWidget(browse)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device.setToolTip("Where the network runs (auto: CUDA, then Apple MPS, then CPU)")
        self.tile = QSpinBox()
        self.tile.setRange(32, 4096)
        self.tile.setValue(512)
        self.tile.setSuffix(" px")
        self.tile.setToolTip("Tile size in working pixels (rounded up to the network's multiple)")
        self.overlap = QSpinBox()
        self.overlap.setRange(0, 1024)
        self.overlap.setValue(64)
        self.overlap.setSuffix(" px")
        self.overlap.setToolTip("Overlap between tiles; overlaps are blended smoothly")
        self.reextract = QCheckBox("re-extract the model's m/z from the imzML when needed")
        self.reextract.setChecked(True)
        self.run_btn = QPushButton("Synthesise H&&E")
        # input-domain warnings of the last synthesis (models/domain.py): hidden when in domain
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(
            "QLabel { background: #8a4b00; color: white; padding: 4px; border-radius: 3px; }"
        )
        self.banner.setVisible(False)

        form = QFormLayout()
        form.addRow("MSI layer", self.layer_box)
        form.addRow("Checkpoint", row)
        form.addRow("Device", self.device)
        form.addRow("Tile", self.tile)
        form.addRow("Overlap", self.overlap)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.reextract)
        lay.addWidget(self.run_btn)
        lay.addWidget(self.progress)
        lay.addWidget(self.banner)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self.connect_run(self.run_btn, self._prepare)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()
        # checkpoints trained in this viewer (the Train widget) are offered first, newest first,
        # and a new one is selected as it appears
        self.session = session_for(self.viewer)
        self.refresh_checkpoints()
        self.session.subscribe(self._checkpoint_added)

    def _checkpoint_added(self, path: str):
        self.refresh_checkpoints(select=path)

    def refresh_checkpoints(self, select: str | None = None):
        current = select or self.ckpt_box.currentText() or "demo"
        items = list(dict.fromkeys(list(reversed(self.session.checkpoints)) + ["demo"]))
        self.ckpt_box.clear()
        self.ckpt_box.addItems(items)
        self.ckpt_box.setCurrentText(current)

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(
            self, "Checkpoint", "", "Checkpoints (*.pt *.pth);;All files (*)"
        )
        if path:
            self.ckpt_box.setCurrentText(path)

    def _refresh(self, *_):
        refill_combo(self.layer_box, [ly.name for ly in synthesis_sources(self.viewer)])

    def _params(self) -> SynthParams:
        name = self.layer_box.currentText()
        if not name:
            raise ValueError("open an .imzML file first (drag it onto the viewer)")
        md = self.viewer.layers[name].metadata["msi2hist"]
        opts = InferenceOptions(
            tile=self.tile.value(), overlap=self.overlap.value(), device=self.device.currentText()
        )
        return SynthParams(
            name,
            md["kind"],
            md.get("file", ""),
            self.ckpt_box.currentText().strip() or "demo",
            opts,
            self.reextract.isChecked(),
        )

    def _stack_from_layer(self, name: str) -> IonImages:
        ly = self.viewer.layers[name]
        md = ly.metadata["msi2hist"]
        tol = md.get("tolerance", DEFAULT_TOLERANCE.as_dict())
        data = np.asarray(ly.data)
        mask = md.get("mask")
        mask = np.ones(data.shape[-2:], bool) if mask is None else np.asarray(mask)
        return IonImages(
            data,
            mask,
            np.asarray(md["mz"]),
            Tolerance(tol["value"], tol["unit"]),
            md.get("normalisation", "none"),
            tuple(ly.scale[-2:]),
            md.get("file", name),
        )

    def _prepare(self):
        params = self._params()
        stack = self._stack_from_layer(params.layer_name) if params.kind == "ion_stack" else None
        self.banner.setVisible(False)
        return (lambda tok: self._job(params, stack, tok)), self._add_layer

    @staticmethod
    def _job(params: SynthParams, stack: IonImages | None, cancel=None):
        imzml = params.file if is_imzml_path(params.file) else None
        if stack is None and imzml is None:
            raise ValueError(
                f"{params.layer_name}: no imzML to extract the model's m/z channels from"
            )
        res = yield from _synthesize_workflow.iter_synthesize_job(  # as the CLI runs it
            params.checkpoint,
            imzml=imzml if (stack is None or params.reextract) else None,
            ions=stack,
            opts=params.options,
            cancel=cancel,
        )
        return params, res

    def _add_layer(self, result):
        params, res = result
        self.last_result = res
        name = f"{params.layer_name.removesuffix(' TIC')} synthetic H&E"
        meta = {"msi2hist": res.metadata()}
        upsert_image(self.viewer, name, res.rgb, rgb=True, scale=res.pixel_size_um, metadata=meta)
        self.status.setText(
            f"synthetic H&E {res.rgb.shape[0]}x{res.rgb.shape[1]} px at {res.pixel_size_um[0]} um"
        )
        warns = res.domain.warnings if res.domain else ()
        if warns:
            self.banner.setText(
                "OUTSIDE THE MODEL'S INPUT DOMAIN: "
                + " ".join(warns)
                + " Train or re-head a model on your own data (Train / fine-tune)."
            )
        self.banner.setVisible(bool(warns))
