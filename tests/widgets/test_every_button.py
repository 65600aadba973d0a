"""Every button of every dock widget in napari.yaml, pressed with the mouse through Qt.

A slot connected to ``clicked`` receives what Qt sends (``clicked(bool)``): a method with an optional
argument then gets ``False`` as that argument (the Register widget's "Add landmark layers" failed so,
while tests that called the method directly passed). pytest-qt turns an exception raised in a slot
into a test failure, so this walks every button of every widget, on an empty viewer and on an open
phantom; a button that starts a job is pressed again (Cancel) and the job must stop.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

MANIFEST = Path(__file__).resolve().parents[2] / "src" / "napari_msi2hist" / "napari.yaml"


def _widget_classes():
    man = yaml.safe_load(MANIFEST.read_text())
    names = {c["id"]: c["python_name"] for c in man["contributions"]["commands"]}
    out = []
    for w in man["contributions"]["widgets"]:
        mod, cls = names[w["command"]].split(":")
        out.append(pytest.param(mod, cls, id=cls))
    return out


@pytest.mark.parametrize("opened", [False, True], ids=["empty", "phantom"])
@pytest.mark.parametrize(("module", "cls"), _widget_classes())
def test_every_button_pressed_through_qt(
    module, cls, opened, make_napari_viewer, open_phantom, qtbot, click, monkeypatch, tmp_path
):
    from qtpy.QtWidgets import QAbstractButton, QFileDialog

    # a file dialog would block the test: the user cancels it
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("", "")))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: ""))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: ("", "")))
    viewer = make_napari_viewer()
    if opened:
        open_phantom(viewer, aligned=True)
    w = getattr(importlib.import_module(module), cls)(viewer)
    viewer.window.add_dock_widget(w)
    if hasattr(w, "out_dir"):
        w.out_dir.setText(str(tmp_path / "run"))
    buttons = [b for b in w.findChildren(QAbstractButton) if b.isEnabled()]
    assert buttons, f"{cls} has no enabled button"
    for b in buttons:
        if not b.isEnabled():  # an earlier press may disable another button
            continue
        click(b)
        if getattr(w, "worker", None) is not None:
            if b.text() == "Cancel":
                click(b)
            qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
        if b.isCheckable() and b.isChecked():
            click(b)
    viewer.add_points([[1.0, 1.0]])  # the viewer is still usable
