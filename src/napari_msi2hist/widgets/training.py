"""Train / fine-tune dock widget: pairs from open layers or a pairs file, live losses and preview.

Open layers become a training pair without writing files: the MSI layer's imzML gives the ion images,
the H&E layer gives the target, and the alignment is either the layers' own transforms as displayed
(each layer's ``scale``/``translate``/``affine``), or a least-squares affine from two paired
landmark Points layers (world micrometres). A finished checkpoint is offered at once in every
Synthesise H&E widget.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from ..config import TrainConfig
from ..io.histology import to_uint8_rgb
from ..registration.alignment import LinearAlignment
from ._common import (
    layer_names,
    layer_pixel_size,
    msi2hist_kind,
    refill_combo,
    require_pixel_size,
)
from ._job import JobWidget
from .session import session_for

KEEP_CHANNELS = "the base model's m/z"
REHEAD_CHANNELS = "re-head to my data's top peaks"


def default_run_dir() -> Path:
    """A new run folder under ``~/msi2hist-runs`` (``MSI2HIST_RUNS`` overrides): never in a temporary
    folder, where a trained model can be cleaned away."""
    root = Path(os.environ.get("MSI2HIST_RUNS") or Path.home() / "msi2hist-runs")
    return root / time.strftime("%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class TrainParams:
    source: str  # "layers" or "file"
    pairs_file: str
    imzml: str
    he_rgb: np.ndarray | None
    he_pixel_um: tuple[float, float]
    align: str  # "displayed" | "landmarks"
    alignment: LinearAlignment | None  # MSI -> H&E
    base: str
    out_dir: str
    resume: bool
    cfg: TrainConfig
    n_peaks: int
    rehead: bool = False  # new input layer for the data's top n_peaks m/z (models/rehead.py)
    msi_pixel_um: float | None = None  # set in the viewer for an imzML without one


def _layer_matrix(layer) -> np.ndarray:
    """3x3 homogeneous (yx) matrix from a layer's world-um-without-transform coordinates (data *
    scale) to napari world: affine @ (p + translate)."""
    aff = np.asarray(layer.affine.affine_matrix, dtype=np.float64)[-3:, -3:]
    t = np.eye(3)
    t[:2, 2] = np.asarray(layer.translate[-2:], dtype=np.float64)
    return aff @ t


def displayed_msi_to_he(msi_layer, he_layer) -> LinearAlignment:
    """The MSI -> H&E alignment the viewer shows: the two layers' own transforms."""
    return LinearAlignment(np.linalg.inv(_layer_matrix(he_layer)) @ _layer_matrix(msi_layer))


def landmark_msi_to_he(moving_pts, fixed_pts) -> LinearAlignment:
    """The MSI -> H&E affine through paired Points layers' data (world um)."""
    return LinearAlignment.from_landmarks(
        np.asarray(moving_pts)[:, -2:], np.asarray(fixed_pts)[:, -2:]
    )


def training_job(p: TrainParams, cancel=None):
    """Worker: build the pairs, then train: the train workflow, as ``msi2hist train`` runs it."""
    from ..models.datasets import split_by_sample
    from ..models.pairs import read_pairs_yaml
    from ..workflows import train as wf

    job = wf.TrainJob(
        out_dir=p.out_dir,
        cfg=p.cfg,
        base=None if p.resume else (p.base or None),  # a resumed run continues its own checkpoint
        resume=p.resume,
        rehead=bool(p.base) and p.rehead and not p.resume,
        n_peaks=p.n_peaks,
    )
    base = wf.load_base(job)
    if p.source == "file":
        contract, samples = wf.contract_and_samples(read_pairs_yaml(p.pairs_file), job, base)
        train, val = split_by_sample(samples)
    else:
        contract, train, val = wf.sample_from_arrays(
            p.imzml, p.he_rgb, p.he_pixel_um, p.alignment, job, base, p.msi_pixel_um
        )
    return (yield from wf.iter_train_job(train, val, contract, job, base, cancel=cancel))


class TrainWidget(JobWidget):
    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, "cancelling (the state is saved for resuming)...")
        self.history: list[tuple[int, dict]] = []
        self.last_checkpoint: str | None = None
        self.note = ""

        self.source = QComboBox()
        self.source.addItems(["open layers", "pairs file"])
        self.msi_box, self.he_box = QComboBox(), QComboBox()
        self.msi_box.setToolTip("MSI layer (opened from an .imzML)")
        self.he_box.setToolTip("The H&E of the same section")
        self.align = QComboBox()
        self.align.addItems(["as displayed", "landmarks"])
        self.align.setToolTip(
            "As displayed: the layers' own transforms. Landmarks: an affine fitted to "
            "paired Points layers (moving = MSI, fixed = H&E, world um)"
        )
        self.moving_pts, self.fixed_pts = QComboBox(), QComboBox()
        self.pairs_file = QLineEdit()
        self.pairs_file.setPlaceholderText("pairs.yaml (see docs/training.md)")
        self.base = QComboBox()
        self.base.setEditable(True)
        self.base.setToolTip(
            "Checkpoint to fine-tune from: 'demo' is the bundled model (default); empty: train "
            "from scratch"
        )
        self.channels = QComboBox()
        self.channels.addItems([KEEP_CHANNELS, REHEAD_CHANNELS])
        self.channels.setToolTip(
            "Keep the base's m/z: your data must contain them. Re-head: keep the base's trained "
            "body and decoder, build a new input layer for your data's top peaks"
        )
        self.n_peaks = QSpinBox()
        self.n_peaks.setRange(1, 1000)
        self.n_peaks.setValue(50)
        self.n_peaks.setToolTip("Top-N peaks of your data (re-head, or training from scratch)")
        self.steps = QSpinBox()
        self.steps.setRange(1, 10_000_000)
        self.steps.setValue(200)
        self.lam = QDoubleSpinBox()
        self.lam.setRange(0, 10000)
        self.lam.setValue(200.0)
        self.lam.setToolTip("L1 weight lambda (seed 000: 200)")
        self.lr = QLineEdit("2e-5")
        self.lr.setToolTip("Adam learning rate (seed 000: 2e-5)")
        self.gan = QComboBox()
        self.gan.addItems(["vanilla", "lsgan", "wgangp"])
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.out_dir = QLineEdit(str(default_run_dir()))
        self.out_dir.setToolTip("Run folder: checkpoints, metrics.jsonl, config.yaml, model.pt")
        self.resume = QCheckBox("resume the run in this folder")
        self.run_btn = QPushButton("Train")

        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.2), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self.ax_loss = self.figure.add_subplot(121)
        self.ax_prev = self.figure.add_subplot(122)
        self.ax_prev.set_axis_off()

        form = QFormLayout()
        for label, w in (
            ("Pairs", self.source),
            ("MSI layer", self.msi_box),
            ("H&&E layer", self.he_box),
            ("Alignment", self.align),
            ("Moving points", self.moving_pts),
            ("Fixed points", self.fixed_pts),
            ("Pairs file", self.pairs_file),
            ("Base", self.base),
            ("Channels", self.channels),
            ("Peaks", self.n_peaks),
            ("Steps", self.steps),
            ("Lambda L1", self.lam),
            ("Learning rate", self.lr),
            ("GAN loss", self.gan),
            ("Device", self.device),
            ("Run folder", self.out_dir),
        ):
            form.addRow(label, w)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.resume)
        lay.addWidget(self.run_btn)
        lay.addWidget(self.canvas)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)

        self.connect_run(self.run_btn, self._prepare)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()
        self.session = session_for(self.viewer)
        self.base.addItems(["demo", ""] + list(reversed(self.session.checkpoints)))

    def _refresh(self, *_):
        v = self.viewer
        refill_combo(self.msi_box, layer_names(v, lambda ly: msi2hist_kind(ly) == "msi"))
        refill_combo(self.he_box, layer_names(v, lambda ly: getattr(ly, "rgb", False)))
        points = layer_names(v, lambda ly: type(ly).__name__ == "Points")
        refill_combo(self.moving_pts, points)
        refill_combo(self.fixed_pts, points)
        # the Register widget's landmark layers, by role, are the natural default
        for box, role in (
            (self.moving_pts, "landmarks_moving"),
            (self.fixed_pts, "landmarks_fixed"),
        ):
            for ly in v.layers:
                if ly.name in points and ly.metadata.get("msi2hist", {}).get("role") == role:
                    box.setCurrentText(ly.name)

    def _params(self) -> TrainParams:
        cfg = TrainConfig(  # architecture: TrainConfig's defaults, shared with the CLI
            max_steps=self.steps.value(),
            lambda_l1=self.lam.value(),
            lr=float(self.lr.text()),
            gan_mode=self.gan.currentText(),
            device=self.device.currentText(),
            checkpoint_every=max(10, self.steps.value() // 10),
            val_every=max(5, self.steps.value() // 20),
        )
        base = self.base.currentText().strip()
        rehead = bool(base) and self.channels.currentText() == REHEAD_CHANNELS
        if self.source.currentText() == "pairs file":
            return TrainParams(
                "file",
                self.pairs_file.text().strip(),
                "",
                None,
                (1.0, 1.0),
                "",
                None,
                base,
                self.out_dir.text(),
                self.resume.isChecked(),
                cfg,
                self.n_peaks.value(),
                rehead,
            )
        msi, he = self.msi_box.currentText(), self.he_box.currentText()
        if not msi or not he:
            raise ValueError("open an MSI (.imzML) and its H&E first")
        msi_l, he_l = self.viewer.layers[msi], self.viewer.layers[he]
        if self.align.currentText() == "landmarks":
            mv, fx = self.moving_pts.currentText(), self.fixed_pts.currentText()
            if not mv or not fx or mv == fx:
                raise ValueError("choose two different Points layers: moving (MSI) and fixed (H&E)")
            m_pts, f_pts = self.viewer.layers[mv].data, self.viewer.layers[fx].data
            if len(m_pts) != len(f_pts) or len(m_pts) < 3:
                raise ValueError(
                    f"landmarks must be paired: {len(m_pts)} moving vs {len(f_pts)} fixed (>= 3)"
                )
            alignment = landmark_msi_to_he(m_pts, f_pts)
        else:
            alignment = displayed_msi_to_he(msi_l, he_l)
        data = he_l.data[0] if he_l.multiscale else he_l.data
        rgb = to_uint8_rgb(np.asarray(data)[..., :3])
        he_px = require_pixel_size(he_l, "H&E")
        msi_px = layer_pixel_size(msi_l)  # None: the imzML's own (refused when it has none)
        return TrainParams(
            "layers",
            "",
            msi_l.metadata["msi2hist"]["file"],
            rgb,
            he_px,
            self.align.currentText(),
            alignment,
            base,
            self.out_dir.text(),
            self.resume.isChecked(),
            cfg,
            self.n_peaks.value(),
            rehead,
            float(np.mean(msi_px)) if msi_px else None,
        )

    def _prepare(self):
        params = self._params()
        if not params.resume and (Path(params.out_dir) / "checkpoints").exists():
            # never start over a previous run: take a fresh folder next to it
            k = 2
            while Path(f"{params.out_dir}-{k}").exists():
                k += 1
            params = replace(params, out_dir=f"{params.out_dir}-{k}")
            self.out_dir.setText(params.out_dir)
        os.makedirs(params.out_dir, exist_ok=True)
        self.history = []
        self.note = ""
        return (lambda tok: training_job(params, tok)), self._done

    def on_progress(self, p):
        self.progress.setMaximum(max(1, p.total))
        self.progress.setValue(p.done)
        info = p.info or {}
        if info.get("note"):  # e.g. "re-headed demo: kept its trained body and decoder, ..."
            self.note = info["note"]
            self.status.setText(self.note)
        if "losses" in info:
            self.history.append((p.done, info["losses"]))
            msg = ", ".join(f"{k} {v:.3f}" for k, v in info["losses"].items())
            if "val_mi" in info:
                msg += f" | val MI {info['val_mi']:.3f}, SSIM {info['val_ssim']:.3f}"
            self.status.setText(f"step {p.done}/{p.total}: {msg}")
            if len(self.history) % 5 == 0 or "preview" in info:
                self._plot(info.get("preview"))

    def _plot(self, preview):
        self.ax_loss.clear()
        steps = [h[0] for h in self.history]
        for key in self.history[-1][1]:
            self.ax_loss.plot(
                steps, [h[1].get(key, np.nan) for h in self.history], label=key, lw=0.8
            )
        self.ax_loss.set_yscale("log")
        self.ax_loss.legend(fontsize=6)
        self.ax_loss.set_xlabel("step")
        if preview is not None:
            self.ax_prev.clear()
            self.ax_prev.imshow(preview)
            self.ax_prev.set_title("validation", fontsize=7)
            self.ax_prev.set_axis_off()
        self.canvas.draw_idle()

    def _done(self, path):
        self.last_checkpoint = str(path)
        self.session.add_checkpoint(str(path))  # every Synthesise widget of this viewer selects it
        note = f"\n{self.note}" if self.note else ""
        self.status.setText(f"done: {path} (now selectable in Synthesise H&E){note}")

    def job_finished(self):
        if self.cancelled:
            done = self.history[-1][0] if self.history else 0
            self.status.setText(
                f"cancelled at step {done}; the state is saved: tick 'resume' to continue"
            )
