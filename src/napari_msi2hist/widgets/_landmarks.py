"""The Register widget's landmark half: two paired Points layers (H&E and MSI, found by metadata),
live errors with undo/redo (kept by the Qt-free :class:`~napari_msi2hist.registration.landmarks.
LandmarkEditor`), and an affine fitted to them. A mixin: the widget provides ``viewer``,
``moving_box``, ``landmarks``, ``lm_table``, ``status`` and ``_same_msi_layers``."""

from __future__ import annotations

import numpy as np

from ..registration.landmarks import LandmarkEditor

FIXED_ROLE, MOVING_ROLE = "landmarks_fixed", "landmarks_moving"


class LandmarkMixin:
    # ------------------------------------------------------------------ landmarks
    def landmark_layers(self):
        fixed = moving = None
        for ly in self.viewer.layers:
            role = ly.metadata.get("msi2hist", {}).get("role")
            if role == FIXED_ROLE:
                fixed = ly
            elif role == MOVING_ROLE:
                moving = ly
        return fixed, moving

    def add_landmark_layers(self, fixed_pts=None, moving_pts=None):
        fixed, moving = self.landmark_layers()
        if fixed is None:
            fixed = self.viewer.add_points(
                np.zeros((0, 2)) if fixed_pts is None else fixed_pts,
                name="landmarks H&E",
                face_color="lime",
                size=40,
                metadata={"msi2hist": {"kind": "landmarks", "role": FIXED_ROLE}},
            )
        if moving is None:
            moving = self.viewer.add_points(
                np.zeros((0, 2)) if moving_pts is None else moving_pts,
                name="landmarks MSI",
                face_color="magenta",
                size=40,
                metadata={"msi2hist": {"kind": "landmarks", "role": MOVING_ROLE}},
            )
            ml = (
                self.viewer.layers[self.moving_box.currentText()]
                if self.moving_box.currentText()
                else None
            )
            if ml is not None:
                moving.affine = ml.affine.affine_matrix  # drawn on the MSI as displayed
        for ly in (fixed, moving):
            ly.events.data.connect(self._on_landmarks_edited)
        self._snapshot()
        self._update_landmarks()
        return fixed, moving

    def _snapshot(self, edit: bool = False):
        fixed, moving = self.landmark_layers()
        if fixed is not None and moving is not None:
            self.landmarks.record(fixed.data, moving.data, edit=edit)

    def _on_landmarks_edited(self, event=None):
        if self._restoring:
            return
        self._snapshot(edit=True)
        self._update_landmarks()

    def _restore(self, state):
        if state is None:
            return
        fixed, moving = self.landmark_layers()
        self._restoring = True
        try:
            fixed.data, moving.data = state
        finally:
            self._restoring = False
        self._update_landmarks()

    def undo(self):
        self._restore(self.landmarks.undo())

    def redo(self):
        self._restore(self.landmarks.redo())

    def _msi_pixel_um(self) -> float:
        name = self.moving_box.currentText()
        if not name:
            raise ValueError("choose the moving (MSI) image: its pixel size scales the errors")
        return float(np.mean(self.viewer.layers[name].scale[-2:]))

    def current_report(self):
        fixed, moving = self.landmark_layers()
        if fixed is None or moving is None or not self.moving_box.currentText():
            return None
        return LandmarkEditor.report(fixed.data, moving.data, self._msi_pixel_um())

    def _update_landmarks(self):
        fixed, moving = self.landmark_layers()
        if fixed is None or moving is None:
            return
        rep = self.current_report()
        if rep is not None:
            rows = rep.rows()
            for ly in (fixed, moving):
                ly.features = {
                    "tre_um": [r["tre_um"] for r in rows],
                    "outlier": [r["outlier"] for r in rows],
                }
                ly.text = {"string": "{tre_um:.0f} um", "size": 9, "color": "yellow"}
        if not self.moving_box.currentText():
            self.lm_table.setText("choose the moving (MSI) image to see landmark errors")
            return
        self.lm_table.setText(LandmarkEditor.text(fixed.data, moving.data, self._msi_pixel_um()))

    def fit_from_landmarks(self):
        from ..registration import alignment

        fixed, moving = self.landmark_layers()
        if fixed is None or moving is None:
            self.status.setText("add landmark layers first")
            return
        try:  # what `msi2hist register --landmarks-use fit` gives
            tr = alignment.landmark_transform(
                np.asarray(moving.data)[:, -2:], np.asarray(fixed.data)[:, -2:]
            )
        except ValueError as e:
            self.status.setText(str(e))
            return
        ml = self.viewer.layers[self.moving_box.currentText()]
        for ly in self._same_msi_layers(ml):  # the moving landmarks move with the MSI they sit on
            ly.affine = tr.napari_affine()
        self.status.setText("affine fitted to the landmarks and applied to the MSI layers")
