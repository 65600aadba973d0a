"""The Register widget's result half: show a registration, overlay it, save it.

A linear result becomes the ``affine`` of every layer from the same MSI; a deformable one adds the
moving image resampled onto the H&E grid. The metrics (MI, NCC, tissue Dice before -> after), the
verdict in its colour and a B-spline fold warning are shown; a checkerboard of the H&E and the
registered image can be toggled; the transform is saved as ``transform.json`` + ``.h5``. A mixin:
the widget provides ``viewer``, ``result``, ``fixed_box``, ``moving_box``, ``metrics``,
``verdict``, ``status``, ``checker_btn``, ``_same_msi_layers`` and ``_update_landmarks``.
"""

from __future__ import annotations

import numpy as np

from ..registration.pipeline import checkerboard
from ._common import show_user_error, source_file, upsert_image

VERDICT_COLOURS = {"ok": "#2e7d32", "doubtful": "#ef6c00", "failed": "#c62828"}


class ResultMixin:
    def save_transform(self, path: str | None = None) -> str | None:
        """Write the last registration as ``transform.json`` and ``transform.h5`` (atomic)."""
        if self.result is None:
            self.status.setText("register first: there is no transform to save")
            return None
        if path is None:
            from qtpy.QtWidgets import QFileDialog

            path, _ = QFileDialog.getSaveFileName(
                self, "Save transform", "transform.json", "transform (*.json)"
            )
        if not path:
            return None
        from pathlib import Path

        j = Path(path).with_suffix(".json")
        try:
            self.result.transform.save(j, j.with_suffix(".h5"))
        except (OSError, ValueError) as e:
            show_user_error(self.status, e)
            return None
        self.status.setText(f"wrote {j} and {j.with_suffix('.h5').name}")
        return str(j)

    # ------------------------------------------------------------------ results
    def _apply(self, res):
        self.result = res
        ml = self.viewer.layers[self.moving_box.currentText()]
        tr = res.transform
        if tr.is_linear:
            aff = tr.napari_affine()
            for ly in self._same_msi_layers(ml):
                ly.affine = aff
        else:
            fl = self.viewer.layers[self.fixed_box.currentText()]
            warped = tr.resample_moving_to_fixed(
                res.moving_image,
                res.moving_px,
                fl.data.shape[:2] if not fl.multiscale else fl.data[0].shape[:2],
                tuple(fl.scale[-2:]),
            )
            name = f"{ml.name} registered"
            meta = {"msi2hist": {"kind": "registered", "source": source_file(ml)}}
            upsert_image(
                self.viewer,
                name,
                warped,
                scale=fl.scale[-2:],
                colormap="magma",
                blending="additive",
                metadata=meta,
            )
        b, a = res.metrics["before"], res.metrics["after"]
        text = (
            f"MI {b['mi']:.3f} -> {a['mi']:.3f}; NCC {b['ncc']:.3f} -> {a['ncc']:.3f}; "
            f"tissue Dice {b['dice']:.3f} -> {a['dice']:.3f} ({res.route} route, {res.seconds:.1f} s)"
        )
        fold = res.metrics.get("bspline_fold_fraction", 0.0)
        if fold > 0:
            text += f"\nWARNING: the B-spline folds on {100 * fold:.2f} % of the H&E grid (negative Jacobian)"
            from napari.utils.notifications import show_warning

            show_warning(
                f"B-spline registration folds on {100 * fold:.2f} % of pixels; use fewer stages or landmarks"
            )
        self.metrics.setText(text)
        v = res.verdict or {}
        if v:
            colour = VERDICT_COLOURS.get(v["verdict"], "black")
            self.verdict.setStyleSheet(f"color: {colour}; font-weight: bold")
            self.verdict.setText(
                f"Verdict: {v['verdict'].upper()}\n" + "\n".join(v.get("reasons", []))
            )
        self.status.setText("registered")
        if self.checker_btn.isChecked():
            self._toggle_checker(True)
        self._update_landmarks()

    def _toggle_checker(self, on: bool):
        name = "checkerboard"
        if not on:
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = False
            return
        if self.result is None:
            self.status.setText("register first")
            self.checker_btn.setChecked(False)
            return
        from ..registration.preprocess import od_image

        fl = self.viewer.layers[self.fixed_box.currentText()]
        he = np.asarray(fl.data[0] if fl.multiscale else fl.data)
        f = od_image(he)
        w = self.result.transform.resample_moving_to_fixed(
            self.result.moving_image, self.result.moving_px, f.shape, tuple(fl.scale[-2:])
        )
        ly = upsert_image(
            self.viewer,
            name,
            checkerboard(f, w),
            scale=fl.scale[-2:],
            colormap="gray",
            metadata={"msi2hist": {"kind": "checkerboard"}},
        )
        ly.visible = True
