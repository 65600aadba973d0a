"""Screenshots of the real widgets for the docs (run under Xvfb: xvfb-run -a python docs/make_screenshots.py).

Opens the sample phantom, docks the Peak selection widget, picks peaks, adds the ion images, and saves
docs/images/peak_selection.png. The same steps are asserted in tests/widgets.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_msi2hist.widgets.peaks import PeakSelectionWidget

OUT = Path(__file__).parent / "images"


def wait_for(widget, app, timeout_s=120.0):
    import time

    t = time.monotonic()
    while widget.worker is not None and time.monotonic() - t < timeout_s:
        app.processEvents()
        time.sleep(0.02)


def shot(viewer, app, name):
    for _ in range(30):
        app.processEvents()
    viewer.screenshot(str(OUT / name), canvas_only=False)
    print(f"wrote {OUT / name}")


def main() -> int:
    import numpy as np

    from napari_msi2hist._sample_data import ensure_sample_phantom
    from napari_msi2hist.phantom import read_points_csv
    from napari_msi2hist.widgets.registration import RegisterWidget
    from napari_msi2hist.widgets.synthesis import SynthesisWidget
    from napari_msi2hist.widgets.training import TrainWidget

    os.environ.setdefault("MSI2HIST_CACHE", str(Path.home() / ".cache" / "napari-msi2hist"))
    OUT.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 850)
    viewer.open_sample("napari-msi2hist", "phantom")
    # 1. peak selection
    w = PeakSelectionWidget(viewer)
    dw = viewer.window.add_dock_widget(w, name="Peak selection", area="right")
    w.n_peaks.setValue(20)
    w.norm_box.setCurrentText("tic")
    w.pick_btn.click()
    wait_for(w, app)
    w.add_btn.click()
    wait_for(w, app)
    viewer.layers[-1].opacity = 0.7
    viewer.dims.set_point(0, 3)
    viewer.reset_view()
    shot(viewer, app, "peak_selection.png")
    viewer.window.remove_dock_widget(dw)
    viewer.layers.remove(viewer.layers[-1])
    # 2. synthesis with the bundled model
    s = SynthesisWidget(viewer)
    dw = viewer.window.add_dock_widget(s, name="Synthesise H&E", area="right")
    s.tile.setValue(256)
    s.run_btn.click()
    wait_for(s, app)
    viewer.layers["he"].visible = False
    shot(viewer, app, "synthesis.png")
    viewer.window.remove_dock_widget(dw)
    # 3. registration of the synthetic H&E to the H&E, with landmark QA
    viewer.layers["he"].visible = True
    r = RegisterWidget(viewer)
    dw = viewer.window.add_dock_widget(r, name="Register", area="right")
    r.moving_box.setCurrentText("msi synthetic H&E")
    r.run_btn.click()
    wait_for(r, app)
    d = Path(os.environ["MSI2HIST_CACHE"]) / "phantom-seed0"
    ensure_sample_phantom()
    r.add_landmark_layers(
        read_points_csv(d / "landmarks_he.csv"), read_points_csv(d / "landmarks_msi.csv")
    )
    viewer.layers["msi synthetic H&E"].opacity = 0.5
    viewer.reset_view()
    shot(viewer, app, "register.png")
    r.checker_btn.setChecked(True)
    for name in ("msi synthetic H&E", "msi TIC", "landmarks H&E", "landmarks MSI"):
        viewer.layers[name].visible = False
    shot(viewer, app, "register_checkerboard.png")
    viewer.window.remove_dock_widget(dw)
    # 4. fine-tuning from the open layers, a few steps
    for ly in viewer.layers:
        ly.visible = ly.name in ("he",)
    t = TrainWidget(viewer)
    viewer.window.add_dock_widget(t, name="Train / fine-tune", area="right")
    t.base.setCurrentText("demo")
    t.steps.setValue(20)
    t.lr.setText("2e-4")
    t.run_btn.click()
    wait_for(t, app, 600)
    shot(viewer, app, "train.png")
    viewer.close()
    _ = np
    return 0


if __name__ == "__main__":
    sys.exit(main())
