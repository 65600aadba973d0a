"""Peak selection dock widget: mean spectrum, top-N or explicit m/z, preview, add the ion-image stack.

The widget only collects parameters (snapshotted into a frozen :class:`PeakParams` before a job
starts), runs core generators in a thread worker, and turns results into layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from .._reader import robust_limits
from ..io.imzml import open_imzml
from ..msi.ion_images import Tolerance
from ..msi.peaks import parse_mz_list
from ..msi.spectra import NORMALISATIONS
from ..workflows import peaks as _peaks_workflow
from ._common import msi2hist_kind, refill_combo, upsert_image
from ._job import JobWidget


@dataclass(frozen=True)
class PeakParams:
    file: str
    norm: str
    n_peaks: int
    mz_text: str
    tolerance: Tolerance
    pixel_size_um: tuple[float, float]


def msi_layers(viewer):
    """Layers that came from an imzML, found by metadata (not by name)."""
    return [ly for ly in viewer.layers if msi2hist_kind(ly) == "msi"]


class PeakSelectionWidget(JobWidget):
    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.spectrum = None
        self.peaks = None

        self.layer_box = QComboBox()
        self.layer_box.setToolTip("MSI layer (opened from an .imzML) whose spectra are used")
        self.norm_box = QComboBox()
        self.norm_box.addItems(list(NORMALISATIONS))
        self.norm_box.setCurrentText("tic")  # the bundled model's; a model re-extracts with its own
        self.norm_box.setToolTip(
            "Per-spectrum normalisation: TIC = sum, RMS = root mean square, median. "
            "Synthesis always uses the model's own normalisation (it re-extracts if needed)"
        )
        self.n_peaks = QSpinBox()
        self.n_peaks.setRange(1, 1000)
        self.n_peaks.setValue(50)
        self.n_peaks.setToolTip(
            "Top-N most prominent peaks of the mean spectrum (seed 000 uses 50)"
        )
        self.mz_edit = QLineEdit()
        self.mz_edit.setPlaceholderText("optional: m/z list, e.g. 760.585, 782.567")
        self.mz_edit.setToolTip("Explicit m/z values (overrides top-N)")
        self.tol = QDoubleSpinBox()
        self.tol.setDecimals(4)
        self.tol.setRange(0.0, 10000.0)
        self.tol.setValue(10.0)
        self.tol.setToolTip("Half-width of each m/z window (inclusive)")
        self.tol_unit = QComboBox()
        self.tol_unit.addItems(["ppm", "Da"])
        tol_row = QHBoxLayout()
        tol_row.addWidget(self.tol)
        tol_row.addWidget(self.tol_unit)

        self.pick_btn = QPushButton("Mean spectrum + pick peaks")
        self.add_btn = QPushButton("Add ion images")
        self.add_btn.setEnabled(False)

        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        # constrained layout: no "Tight layout not applied" warning on a small canvas
        self.figure = Figure(figsize=(4, 2.2), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)  # the spectrum stays clickable when docked
        self.ax = self.figure.add_subplot(111)
        self.ax.set_xlabel("m/z")
        self.canvas.mpl_connect("pick_event", self._on_pick)

        form = QFormLayout()
        form.addRow("MSI layer", self.layer_box)
        form.addRow("Normalisation", self.norm_box)
        form.addRow("N peaks", self.n_peaks)
        form.addRow("m/z list", self.mz_edit)
        form.addRow("Tolerance", tol_row)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.pick_btn)
        lay.addWidget(self.canvas)
        lay.addWidget(self.add_btn)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)

        self.connect_run(self.pick_btn, lambda: self._prepare("pick"))
        self.connect_run(self.add_btn, lambda: self._prepare("add"))
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ---------------------------------------------------------------- state
    def _refresh_layers(self, *_):
        refill_combo(self.layer_box, [ly.name for ly in msi_layers(self.viewer)])

    def _params(self) -> PeakParams:
        name = self.layer_box.currentText()
        if not name:
            raise ValueError("open an .imzML file first (drag it onto the viewer)")
        md = self.viewer.layers[name].metadata["msi2hist"]
        unit = "ppm" if self.tol_unit.currentText() == "ppm" else "da"
        return PeakParams(
            md["file"],
            self.norm_box.currentText(),
            self.n_peaks.value(),
            self.mz_edit.text().strip(),
            Tolerance(self.tol.value(), unit),
            tuple(self.viewer.layers[name].scale[-2:]),
        )

    def busy_changed(self, button):
        """One job at a time: only the running job's button (now Cancel) stays enabled."""
        self.pick_btn.setEnabled(button in (None, self.pick_btn))
        self.add_btn.setEnabled(
            button is self.add_btn or (button is None and self.peaks is not None)
        )

    def _prepare(self, which: str):
        params = self._params()
        mz = parse_mz_list(params.mz_text) if params.mz_text else None
        if which == "pick":
            return (lambda tok: self._pick_job(params, mz, tok)), self._show_spectrum
        peaks = self.peaks
        return (lambda tok: self._extract_job(params, peaks, tok)), self._add_stack

    # ---------------------------------------------------------------- jobs (worker thread)
    @staticmethod
    def _pick_job(params: PeakParams, mz, cancel=None):
        with open_imzml(params.file) as imz:  # the peaks workflow's picking step
            return (
                yield from _peaks_workflow.iter_pick(
                    imz, params.n_peaks, params.norm, mz, cancel=cancel
                )
            )

    @staticmethod
    def _extract_job(params: PeakParams, mz, cancel=None):
        with open_imzml(params.file) as imz:  # the peaks workflow, with the picked m/z
            res = yield from _peaks_workflow.iter_peaks(
                imz, None, mz, params.tolerance, params.norm, cancel
            )
        return params, res

    # ---------------------------------------------------------------- results (GUI thread)
    def _show_spectrum(self, result):
        ms, peaks = result
        self.spectrum, self.peaks = ms, np.asarray(peaks)
        self.ax.clear()
        self.ax.plot(ms.mz, ms.intensity, lw=0.7, color="0.3")
        yk = np.interp(self.peaks, ms.mz, ms.intensity)
        self.ax.plot(self.peaks, yk, "v", color="tab:red", ms=5, picker=5)
        self.ax.set_xlabel("m/z")
        self.ax.set_ylabel("mean intensity")
        self.canvas.draw_idle()
        self.status.setText(f"{len(self.peaks)} peaks; click a marker to preview its ion image")

    def _on_pick(self, event):
        if self.worker is not None or self.peaks is None:
            return
        i = int(event.ind[0])
        params = self._params()
        mz = self.peaks[i : i + 1]
        self.run_job(
            lambda tok: self._extract_job(params, mz, tok),
            lambda r: self._add_layer(*r, preview=True),
            self.add_btn,
        )

    def _add_stack(self, result):
        self._add_layer(*result, preview=False)

    def _add_layer(self, params: PeakParams, res, preview: bool):
        meta = {"msi2hist": {"kind": "ion_stack", **res.metadata(), "mask": res.mask}}
        if preview:
            name = "preview ion image"
            data, scale = res.stack[0], params.pixel_size_um
            meta["msi2hist"]["kind"] = "ion_preview"
        else:
            name = f"{self.layer_box.currentText().removesuffix(' TIC')} ion images"
            data, scale = res.stack, (1.0, *params.pixel_size_um)
        limits = robust_limits(data[..., res.mask])
        upsert_image(
            self.viewer,
            name,
            data,
            scale=scale,
            metadata=meta,
            colormap="viridis",
            contrast_limits=limits,
        )
        if preview:
            self.status.setText(f"preview m/z {res.mz[0]:.4f} ({res.tolerance})")
        else:
            from .layout import show_stack_mz

            self.viewer.layers.selection.active = self.viewer.layers[name]
            show_stack_mz(self.viewer)  # the text overlay names the m/z under the channel slider
            self.status.setText(f"added {len(res.mz)} ion images ({res.tolerance}, {res.norm})")
