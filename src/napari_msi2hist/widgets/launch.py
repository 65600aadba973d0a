"""``msi2hist gui``: napari with the phantom sample loaded and the four widgets docked (tabs in
scroll areas, fitted to the screen, the H&E visible under the translucent MSI; widgets/layout.py)."""

from __future__ import annotations

import napari

from .layout import dock_widgets, fit_window, show_he_under_msi, show_stack_mz
from .peaks import PeakSelectionWidget
from .registration import RegisterWidget
from .synthesis import SynthesisWidget
from .training import TrainWidget


def open_gui(run: bool = True):
    viewer = napari.Viewer()
    viewer.open_sample("napari-msi2hist", "phantom")
    dock_widgets(
        viewer,
        [
            (PeakSelectionWidget(viewer), "Peak selection"),
            (SynthesisWidget(viewer), "Synthesise H&E"),
            (TrainWidget(viewer), "Train / fine-tune"),
            (RegisterWidget(viewer), "Register"),
        ],
    )
    fit_window(viewer)
    viewer.window._qt_window.showMaximized()  # large on any screen; fit_window caps the fallback
    show_he_under_msi(viewer)
    show_stack_mz(viewer)
    if run:
        napari.run()
    return viewer
