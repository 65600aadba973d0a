"""Register dock widget: intensity registration with QA, and live landmark editing.

The moving layer decides the route: a synthetic H&E layer -> ``synthesis``; an MSI (TIC) or ion-stack
layer -> ``direct``. A linear result becomes the ``affine`` of every layer from the same MSI (TIC, ion
images, synthetic H&E, moving landmarks), so they all overlay the H&E; a B-spline result adds the
moving image resampled onto the H&E grid. Landmark layers (fixed on the H&E, moving on the MSI, world
um) refit on every edit and show each landmark's leave-one-out TRE next to it; edits can be undone.
The landmark half is a mixin (``_landmarks.py``), and so is showing and saving a result
(``_reg_results.py``).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

from ..io.histology import to_uint8_rgb
from ..registration.intensity import RegistrationOptions
from ..registration.landmarks import LandmarkEditor
from ..workflows.in_process import iter_job
from ..workflows.register_view import RegisterViewRequest, iter_register_view
from ._common import (
    layer_names,
    layer_pixel_size,
    msi2hist_kind,
    refill_combo,
    source_file,
)
from ._job import JobWidget
from ._landmarks import FIXED_ROLE, MOVING_ROLE, LandmarkMixin  # noqa: F401  (re-exported)
from ._reg_results import VERDICT_COLOURS, ResultMixin  # noqa: F401  (re-exported)


def _pyramid_source(layer) -> dict:
    """How a job (maybe in a child process) gets a multiscale H&E layer: the file it was read from
    (the job reopens it and checks its level shapes; no I/O here, on the GUI thread), else the
    levels themselves."""
    if not layer.multiscale:
        return {}
    path = source_file(layer)
    if path:
        return {"he_path": path, "he_shapes": [tuple(lv.shape) for lv in layer.data]}
    return {"he_levels": list(layer.data)}


DETECT = "(detect tissue)"


def _is_moving_candidate(ly) -> bool:
    """A moving image: a synthetic H&E, an MSI layer of this plugin, or a single-channel image
    opened by another reader (a MALDI export), which has no metadata of ours."""
    kind = msi2hist_kind(ly)
    if kind in ("synthetic_he", "msi", "ion_stack"):
        return True
    return (
        kind is None
        and ly.__class__.__name__ == "Image"
        and not getattr(ly, "rgb", False)
        and not getattr(ly, "multiscale", False)
        and ly.ndim == 2
    )


def _apply_pixel_size(layer, v: float) -> None:
    """A pixel size typed by the user, applied to the layer: its scale and our metadata (every
    widget then sees it; the file is never changed)."""
    if tuple(layer.scale[-2:]) != (v, v):
        layer.scale = (*tuple(layer.scale[:-2]), v, v)
    md = dict(layer.metadata.get("msi2hist", {}))
    if md.get("pixel_size_um") != [v, v]:
        md.update(pixel_size_um=[v, v], pixel_size_source="set in the viewer")
        layer.metadata = {**layer.metadata, "msi2hist": md}


class RegisterWidget(LandmarkMixin, ResultMixin, JobWidget):
    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        from ..workflows.register_view import import_job_modules

        # now, as the widget opens, not in the first job's worker, where they stall the viewer
        import_job_modules()
        self.result = None
        self.reg_view = None  # the last result with its images (workflows.register_view)
        self._checker_worker = None
        self.landmarks = LandmarkEditor()  # undo/redo and the error report, Qt-free
        self._restoring = False

        self.fixed_box, self.moving_box = QComboBox(), QComboBox()
        self.fixed_box.setToolTip("The real H&E (RGB)")
        self.moving_box.setToolTip(
            "Synthetic H&E (synthesis route) or an MSI layer (direct route, Mattes MI)"
        )
        self.mask_box = QComboBox()
        self.mask_box.setToolTip(
            "Tissue mask: a Labels/Image layer on the H&E grid (fixed) or the moving grid "
            "(moving); non-zero = tissue. Default: detected (text, pen and debris left out)"
        )
        self.he_px, self.msi_px = QDoubleSpinBox(), QDoubleSpinBox()
        for box, what in ((self.he_px, "H&E"), (self.msi_px, "moving image")):
            box.setRange(0.0, 10000.0)
            box.setDecimals(3)
            box.setSuffix(" um")
            box.setSpecialValueText("unknown")
            box.setToolTip(
                f"{what} pixel size (from the layer's scale; set it when the file has none: "
                "the layer's scale follows)"
            )
        self.fixed_box.currentTextChanged.connect(
            lambda *_: self._load_px(self.fixed_box, self.he_px)
        )
        self.moving_box.currentTextChanged.connect(
            lambda *_: self._load_px(self.moving_box, self.msi_px)
        )
        # a pixel size typed by the user applies to the layer at once (scale and metadata), so
        # every widget sees it; the file is never changed
        self.he_px.editingFinished.connect(lambda: self._set_px(self.fixed_box, self.he_px))
        self.msi_px.editingFinished.connect(lambda: self._set_px(self.moving_box, self.msi_px))
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.stage_boxes = {s: QCheckBox(s) for s in ("rigid", "affine", "bspline")}
        self.stage_boxes["rigid"].setChecked(True)
        self.stage_boxes["affine"].setChecked(True)
        self.stage_boxes["bspline"].setToolTip(
            f"Smooth deformation on top of the affine (control-point mesh "
            f"{RegistrationOptions().bspline_mesh_um:g} um); kept only when it does not fold "
            "and fits data the fit never saw better: the open MSI layer when there is one, "
            "else held-out tissue pixels"
        )
        row = QHBoxLayout()
        for b in self.stage_boxes.values():
            row.addWidget(b)
        self.run_btn = QPushButton("Register")
        self.checker_btn = QPushButton("Checkerboard")
        self.checker_btn.setCheckable(True)
        self.checker_btn.setToolTip(
            "Show the H&E and the registered moving image in a checkerboard"
        )
        self.save_btn = QPushButton("Save transform...")
        self.save_btn.setToolTip(
            "Write the last result as transform.json (+ .h5): the input of msi2hist "
            "transform-points, export-elastix, export-spatialdata and the Export widget"
        )
        self.lm_btn = QPushButton("Add landmark layers")
        self.fit_btn = QPushButton("Fit from landmarks")
        self.undo_btn, self.redo_btn = QPushButton("Undo"), QPushButton("Redo")
        self.metrics = QLabel("")
        self.metrics.setWordWrap(True)
        self.lm_table = QLabel("")
        self.lm_table.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Fixed (H&&E)", self.fixed_box)
        form.addRow("Moving", self.moving_box)
        form.addRow("Tissue mask", self.mask_box)
        form.addRow("H&&E pixel", self.he_px)
        form.addRow("Moving pixel", self.msi_px)
        form.addRow("Stages", row)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.run_btn)
        lay.addWidget(self.progress)
        lay.addWidget(self.metrics)
        lay.addWidget(self.verdict)
        lay.addWidget(self.checker_btn)
        lay.addWidget(self.save_btn)
        lm_row = QHBoxLayout()
        for b in (self.lm_btn, self.fit_btn, self.undo_btn, self.redo_btn):
            lm_row.addWidget(b)
        lay.addLayout(lm_row)
        lay.addWidget(self.lm_table)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self.connect_run(self.run_btn, self._prepare)
        self.checker_btn.toggled.connect(self._toggle_checker)
        self.save_btn.clicked.connect(lambda *_: self.save_transform())
        # clicked(bool) would arrive as the first argument: call the slots without it
        self.lm_btn.clicked.connect(lambda *_: self.add_landmark_layers())
        self.fit_btn.clicked.connect(lambda *_: self.fit_from_landmarks())
        self.undo_btn.clicked.connect(lambda *_: self.undo())
        self.redo_btn.clicked.connect(lambda *_: self.redo())
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    # ------------------------------------------------------------------ layers
    def _refresh(self, *_):
        v = self.viewer
        refill_combo(
            self.fixed_box,
            layer_names(
                v, lambda ly: getattr(ly, "rgb", False) and msi2hist_kind(ly) != "synthetic_he"
            ),
        )
        refill_combo(
            self.moving_box,
            layer_names(v, _is_moving_candidate),
        )
        refill_combo(
            self.mask_box,
            [DETECT]
            + layer_names(
                v,
                lambda ly: (
                    ly.__class__.__name__ == "Labels"
                    or (ly.__class__.__name__ == "Image" and "mask" in ly.name.lower())
                ),
            ),
        )

    def _load_px(self, combo, box):
        name = combo.currentText()
        if name and name in self.viewer.layers:
            px = layer_pixel_size(self.viewer.layers[name])
            box.setValue(float(px[-1]) if px else 0.0)

    def _set_px(self, combo, box):
        name, v = combo.currentText(), box.value()
        if name and name in self.viewer.layers and v > 0:
            _apply_pixel_size(self.viewer.layers[name], v)

    def _pixel(self, box, layer, what) -> tuple[float, float]:
        v = box.value()
        if v <= 0:
            raise ValueError(
                f"{layer.name}: no pixel size; enter the {what} pixel size (um) in the widget"
            )
        _apply_pixel_size(layer, v)  # the layer follows the user's pixel size
        return (v, v)

    def _same_msi_layers(self, moving_layer):
        src = source_file(moving_layer)
        return [
            ly
            for ly in self.viewer.layers
            if ly is moving_layer
            or (src and source_file(ly) == src and msi2hist_kind(ly) != "registered")
            or ly.metadata.get("msi2hist", {}).get("role") == MOVING_ROLE
        ]

    def _params(self) -> RegisterViewRequest:
        """The job's inputs, snapshotted from the fields and layers (on the GUI thread)."""
        f, m = self.fixed_box.currentText(), self.moving_box.currentText()
        if not f or not m:
            raise ValueError("open the H&E and an MSI (or its synthetic H&E) first")
        fl, ml = self.viewer.layers[f], self.viewer.layers[m]
        if fl.multiscale:  # a whole slide: never read level 0 here (the GUI thread)
            he, he_shape = None, tuple(fl.data[0].shape[:2])
        else:
            he = to_uint8_rgb(np.asarray(fl.data)[..., :3])
            he_shape = he.shape[:2]
        stages = tuple(s for s, b in self.stage_boxes.items() if b.isChecked())
        if not stages:
            raise ValueError("choose at least one stage")
        route = "synthesis" if msi2hist_kind(ml) == "synthetic_he" else "direct"
        mv = np.asarray(ml.data)
        he_px = self._pixel(self.he_px, fl, "H&E")
        mv_px = self._pixel(self.msi_px, ml, "moving image")
        fmask = mmask = None
        mname = self.mask_box.currentText()
        if mname and mname != DETECT:
            mk = np.asarray(self.viewer.layers[mname].data) != 0
            if mk.ndim == 3:
                mk = mk.any(-1)
            if mk.shape == he_shape:
                fmask = mk
            elif mk.shape == mv.shape[-2:] or mk.shape == mv.shape[:2]:
                mmask = mk
            else:
                raise ValueError(
                    f"{mname}: mask is {mk.shape[0]}x{mk.shape[1]} px; it must match the H&E "
                    f"{he_shape[0]}x{he_shape[1]} or the moving image"
                )
        stack, stack_px = self._msi_view(ml) if route == "synthesis" else (None, None)
        return RegisterViewRequest(
            he_px=he_px,
            route=route,
            moving=mv,
            moving_px=mv_px,
            stages=stages,
            he_rgb=he,
            fixed_mask=fmask,
            moving_mask=mmask,
            msi_stack=stack,
            msi_px=stack_px,
            with_checker=self.checker_btn.isChecked(),
            **_pyramid_source(fl),
        )

    def _msi_view(self, synth_layer):
        """The open MSI layer that a synthetic H&E was made from (same source file), if any: the
        registration ranks its poses by both (registration.consensus)."""
        for ly in self._same_msi_layers(synth_layer):
            if ly is synth_layer or msi2hist_kind(ly) != "msi" or getattr(ly, "rgb", False):
                continue
            px = layer_pixel_size(ly)
            data = np.asarray(ly.data[0] if getattr(ly, "multiscale", False) else ly.data)
            if px is None or data.ndim not in (2, 3):
                continue
            return (data if data.ndim == 3 else data[None]).astype(np.float32), px
        return None, None

    # ------------------------------------------------------------------ intensity registration
    def _prepare(self):
        # the register workflow's job, as `msi2hist register` runs it, then what the result is
        # shown with (workflows.register_view): in a child process, so that its long numpy calls
        # never hold the viewer's GIL; the GUI thread then only assigns arrays to layers
        req = self._params()
        if req.he_levels is not None and not all(
            isinstance(lv, np.ndarray) for lv in req.he_levels
        ):
            # a lazy pyramid that is not a file of ours cannot travel to a child: run it here
            return (lambda tok: iter_register_view(req, cancel=tok)), self._apply
        return (lambda tok: iter_job(iter_register_view, req, cancel=tok)), self._apply

    def on_progress(self, p):
        self.progress.setMaximum(max(1, p.total))
        self.progress.setValue(p.done)
        self.status.setText(p.stage)  # the stage alone: registration stages have few steps
