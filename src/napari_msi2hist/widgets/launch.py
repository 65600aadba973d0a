"""``msi2hist gui``: napari with the phantom sample loaded and the four widgets docked."""

from __future__ import annotations

import napari

from .peaks import PeakSelectionWidget
from .registration import RegisterWidget
from .synthesis import SynthesisWidget
from .training import TrainWidget


def open_gui(run: bool = True):
    viewer = napari.Viewer()
    viewer.open_sample("napari-msi2hist", "phantom")
    for w, name in (
        (PeakSelectionWidget, "Peak selection"),
        (SynthesisWidget, "Synthesise H&E"),
        (TrainWidget, "Train / fine-tune"),
        (RegisterWidget, "Register"),
    ):
        viewer.window.add_dock_widget(w(viewer), name=name, area="right", tabify=True)
    if run:
        napari.run()
    return viewer
