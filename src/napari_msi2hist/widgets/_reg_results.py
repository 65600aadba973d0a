"""The Register widget's result half: show a registration, overlay it, save it.

A linear result becomes the ``affine`` of every layer from the same MSI; a deformable one adds the
moving image resampled onto the H&E grid. The metrics (MI, NCC, tissue Dice before -> after), the
verdict in its colour and a B-spline fold warning are shown; a checkerboard of the H&E and the
registered image can be toggled; the transform is saved as ``transform.json`` + ``.h5``.

Nothing heavy runs here on the GUI thread: the resampled image and the checkerboard are made in the
register job's worker (or, for a checkerboard asked for later, a short worker of its own) on a
bounded grid of the H&E pyramid (``workflows.register_view``), and shown with that grid's scale.

A mixin: the widget provides ``viewer``, ``result``, ``reg_view``, ``_checker_worker``,
``fixed_box``, ``moving_box``, ``metrics``, ``verdict``, ``status``, ``checker_btn``,
``_same_msi_layers`` and ``_update_landmarks``.
"""

from __future__ import annotations

from ..progress import Progress
from ._common import show_user_error, source_file, upsert_image
from ._workers import start_job

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
    def _apply(self, view):
        """Show a finished job's :class:`~napari_msi2hist.workflows.register_view.RegisteredView`.

        Runs on the GUI thread: it only assigns what the worker prepared (affines, the resampled
        image and the checkerboard on a bounded grid, with its scale) to layers.
        """
        res = view.result
        self.result, self.reg_view = res, view
        ml = self.viewer.layers[self.moving_box.currentText()]
        tr = res.transform
        if tr.is_linear:
            aff = tr.napari_affine()
            for ly in self._same_msi_layers(ml):
                ly.affine = aff
        else:
            meta = {"msi2hist": {"kind": "registered", "source": source_file(ml)}}
            upsert_image(
                self.viewer,
                f"{ml.name} registered",
                view.warped,
                scale=view.grid.px,
                colormap="magma",
                blending="additive",
                metadata=meta,
            )
        self.metrics.setText(_metrics_text(res))
        v = res.verdict or {}
        if v:
            colour = VERDICT_COLOURS.get(v["verdict"], "black")
            self.verdict.setStyleSheet(f"color: {colour}; font-weight: bold")
            self.verdict.setText(
                f"Verdict: {v['verdict'].upper()}\n" + "\n".join(v.get("reasons", []))
            )
        fold = res.metrics.get("bspline_fold_fraction", 0.0)
        if fold > 0:
            from napari.utils.notifications import show_warning

            show_warning(
                f"B-spline registration folds on {100 * fold:.2f} % of pixels; use fewer stages or landmarks"
            )
        self.status.setText("registered")
        if self.checker_btn.isChecked():
            self._toggle_checker(
                True
            )  # made in the worker, or (toggled during the job) in a new one
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
        view = self.reg_view
        if view is not None and view.checker is not None:
            self._show_checker(view)
            return
        if self._checker_worker is not None:
            return  # being made; shown when done if the button is still down
        fl = self.viewer.layers[self.fixed_box.currentText()]
        levels = list(fl.data) if fl.multiscale else [fl.data]
        px = tuple(float(v) for v in fl.scale[-2:])
        self.status.setText("making the checkerboard...")

        def job(tok):  # the H&E level's optical density and the resample: in a worker thread
            from ..workflows.register_view import checkerboard_on_grid, overlay_grid

            grid = overlay_grid(view.result, [lv.shape for lv in levels], px)
            warped = view.warped if view.grid == grid else None
            yield Progress(0, 1, "checkerboard")
            view.checker = checkerboard_on_grid(view.result, levels, grid, warped)
            view.checker_grid = grid
            return view

        def done(v):
            self._checker_worker = None  # its result is here (``finished`` may come a bit later)
            self.status.setText("checkerboard ready")
            if v is self.reg_view and self.checker_btn.isChecked():
                self._show_checker(v)

        def finished():
            self._checker_worker = None

        self._checker_worker = start_job(
            job, lambda p: None, done, on_error=self.status.setText, on_finished=finished
        )

    def _show_checker(self, view):
        ly = upsert_image(
            self.viewer,
            "checkerboard",
            view.checker,
            scale=view.checker_grid.px,
            colormap="gray",
            metadata={"msi2hist": {"kind": "checkerboard"}},
        )
        ly.visible = True


def _metrics_text(res) -> str:
    b, a = res.metrics["before"], res.metrics["after"]
    text = (
        f"MI {b['mi']:.3f} -> {a['mi']:.3f}; NCC {b['ncc']:.3f} -> {a['ncc']:.3f}; "
        f"tissue Dice {b['dice']:.3f} -> {a['dice']:.3f} ({res.route} route, {res.seconds:.1f} s)"
    )
    fold = res.metrics.get("bspline_fold_fraction", 0.0)
    if fold > 0:
        text += f"\nWARNING: the B-spline folds on {100 * fold:.2f} % of the H&E grid (negative Jacobian)"
    return text
