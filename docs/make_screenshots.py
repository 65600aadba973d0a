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


def main() -> int:
    os.environ.setdefault("MSI2HIST_CACHE", str(Path.home() / ".cache" / "napari-msi2hist"))
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 850)
    viewer.open_sample("napari-msi2hist", "phantom")
    w = PeakSelectionWidget(viewer)
    viewer.window.add_dock_widget(w, name="Peak selection", area="right")
    app = QApplication.instance()
    w.n_peaks.setValue(20)
    w.norm_box.setCurrentText("tic")
    w.pick_btn.click()
    wait_for(w, app)
    w.add_btn.click()
    wait_for(w, app)
    stack = viewer.layers[-1]
    stack.opacity = 0.7
    viewer.dims.set_point(0, 3)
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
    viewer.screenshot(str(OUT / "peak_selection.png"), canvas_only=False)
    viewer.close()
    print(f"wrote {OUT / 'peak_selection.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
