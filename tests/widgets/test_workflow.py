"""The whole GUI path as a user lives it, in one real napari window (Xvfb + Mesa OpenGL in CI).

Drop the phantom's imzML and H&E on the canvas, pick peaks, synthesise H&E with the bundled model,
register it to the H&E, drag a landmark and see its error update, fine-tune the bundled model for a
few steps from the open layers, predict MSI modes from the H&E and super-resolve the MSI, then start
a long job, cancel it and check the viewer is still usable.
A screenshot of the window is saved after each step (``MSI2HIST_SCREENSHOTS`` names the folder, as
``docs/make_screenshots.py`` does for docs/images; otherwise a temporary folder) and checked to show
a rendered canvas, not a blank one.
"""

import os
import time
from pathlib import Path

import numpy as np
import pytest


def _drop_files(viewer, paths):
    """What a drag-and-drop of files onto the canvas does: a QDropEvent with file URLs."""
    from qtpy.QtCore import QMimeData, QPointF, Qt, QUrl
    from qtpy.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    ev = QDropEvent(
        QPointF(20, 20),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    viewer.window._qt_viewer.dropEvent(ev)


def _shot(viewer, qtbot, folder: Path, name: str) -> np.ndarray:
    qtbot.wait(200)
    img = viewer.screenshot(str(folder / name), canvas_only=False, flash=False)
    assert (folder / name).stat().st_size > 10_000
    return np.asarray(img)


def _plugin_menu_entries(viewer) -> list[str]:
    for a in viewer.window._qt_window.menuBar().actions():
        if a.text().replace("&", "") == "Plugins":
            a.menu().aboutToShow.emit()
            for b in a.menu().actions():
                if b.text() == "napari-msi2hist" and b.menu():
                    return [c.text().replace("&&", "&") for c in b.menu().actions()]
    return []


def _wait(qtbot, w, timeout=300_000):
    qtbot.waitUntil(lambda: w.worker is None, timeout=timeout)


def test_whole_workflow_in_a_real_window(
    make_napari_viewer, qtbot, phantom_dir, small_phantom, click
):
    from napari.settings import get_settings

    from napari_msi2hist.models.checkpoint import load_checkpoint
    from napari_msi2hist.widgets.peaks import PeakSelectionWidget
    from napari_msi2hist.widgets.registration import RegisterWidget
    from napari_msi2hist.widgets.synthesis import SynthesisWidget
    from napari_msi2hist.widgets.training import TrainWidget

    shots = Path(os.environ.get("MSI2HIST_SCREENSHOTS") or phantom_dir.parent / "screens")
    shots.mkdir(parents=True, exist_ok=True)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 850)
    # the widgets are under Plugins > napari-msi2hist
    assert _plugin_menu_entries(viewer) == [
        "Peak selection",
        "Synthesise H&E",
        "Train / fine-tune",
        "Register",
        "Predict from H&E",
        "Super-resolve MSI",
        "Export / import",
    ]

    # 1. drag and drop: .imzML has one reader (ours); for .tif the user's saved choice is ours
    get_settings().plugins.extension2reader = {"*.tif": "napari-msi2hist"}
    _drop_files(viewer, [phantom_dir / "he.ome.tif", phantom_dir / "msi.imzML"])
    qtbot.waitUntil(lambda: len(viewer.layers) >= 2, timeout=60_000)
    assert [ly.name for ly in viewer.layers] == ["he", "msi TIC"]
    assert (
        viewer.layers["he"].rgb and viewer.layers["msi TIC"].metadata["msi2hist"]["kind"] == "msi"
    )
    viewer.reset_view()
    img = _shot(viewer, qtbot, shots, "01_opened.png")
    assert img.std() > 5  # the canvas rendered something, not a blank window

    # 2. peak selection: pick the top peaks, add their ion images as a stack
    peaks = PeakSelectionWidget(viewer)
    dw = viewer.window.add_dock_widget(peaks, name="Peak selection", area="right")
    peaks.n_peaks.setValue(20)
    click(peaks.pick_btn)
    _wait(qtbot, peaks)
    planted = np.array(sorted(m for v in small_phantom.peaks.values() for m in v))
    assert len(peaks.peaks) == 20 and all(np.min(np.abs(planted - m)) < 1.0 for m in peaks.peaks)
    click(peaks.add_btn)
    _wait(qtbot, peaks)
    stack = viewer.layers[-1]
    viewer.dims.set_point(0, 3)
    assert stack.metadata["msi2hist"]["kind"] == "ion_stack" and stack.data.shape[0] == 20
    _shot(viewer, qtbot, shots, "02_peaks.png")
    viewer.window.remove_dock_widget(dw)
    stack.visible = False  # kept: it is super-resolved in step 6

    # 3. synthesis with the bundled demo model
    synth = SynthesisWidget(viewer)
    dw = viewer.window.add_dock_widget(synth, name="Synthesise H&E", area="right")
    assert synth.ckpt_box.currentText() == "demo"
    click(synth.run_btn)
    _wait(qtbot, synth)
    syn = viewer.layers["msi synthetic H&E"]
    # on the model's 10 um working grid, covering the MSI's field of view (20 um pixels)
    assert syn.rgb and tuple(syn.scale) == (10.0, 10.0)
    extent = np.array(syn.data.shape[:2]) * 10.0
    assert np.all(np.abs(extent - np.array(small_phantom.msi_shape_yx) * 20.0) <= 20.0)
    viewer.layers["he"].visible = False
    _shot(viewer, qtbot, shots, "03_synthesis.png")
    viewer.layers["he"].visible = True
    viewer.window.remove_dock_widget(dw)

    # 4. registration (synthesis route), then landmark QA: drag a landmark, its error updates
    reg = RegisterWidget(viewer)
    dw = viewer.window.add_dock_widget(reg, name="Register", area="right")
    reg.moving_box.setCurrentText("msi synthetic H&E")
    click(reg.run_btn)
    _wait(qtbot, reg)
    assert reg.result is not None and reg.result.route == "synthesis", reg.status.text()
    truth_he = small_phantom.landmarks_he_um
    moved = reg.result.transform.moving_to_fixed(small_phantom.landmarks_msi_um)
    px = 20.0  # MSI pixel (um)
    assert np.median(np.linalg.norm(moved - truth_he, axis=1)) < px  # under one MSI pixel
    click(reg.lm_btn)
    fixed, moving = reg.landmark_layers()
    fixed.data = truth_he.copy()
    moving.data = small_phantom.landmarks_msi_um.copy()
    viewer.reset_view()
    before = reg.current_report().tre_um.copy()
    table_before = reg.lm_table.text()
    data = np.array(fixed.data)
    data[2] += [300.0, 200.0]
    fixed.data = data
    after = reg.current_report().tre_um
    assert after[2] > before[2] + 200 and reg.lm_table.text() != table_before
    assert "OUTLIER" in reg.lm_table.text()
    _shot(viewer, qtbot, shots, "04_register_landmarks.png")
    click(reg.undo_btn)
    np.testing.assert_allclose(reg.current_report().tre_um, before)
    click(reg.checker_btn)  # made in a short worker, then shown
    qtbot.waitUntil(
        lambda: "checkerboard" in viewer.layers and viewer.layers["checkerboard"].visible,
        timeout=60_000,
    )
    _shot(viewer, qtbot, shots, "05_checkerboard.png")
    click(reg.checker_btn)
    viewer.window.remove_dock_widget(dw)

    # 5. fine-tune the bundled model for a few steps on the open, now registered, layers
    for ly in viewer.layers:
        ly.visible = ly.name == "he"
    train = TrainWidget(viewer)
    synth2 = SynthesisWidget(viewer)
    dw = viewer.window.add_dock_widget(train, name="Train / fine-tune", area="right")
    train.base.setCurrentText("demo")
    train.steps.setValue(4)
    train.lr.setText("2e-4")
    train.device.setCurrentText("cpu")
    train.out_dir.setText(str(phantom_dir.parent / "finetune"))
    click(train.run_btn)
    _wait(qtbot, train)
    assert train.last_checkpoint, train.status.text()
    ck = load_checkpoint(train.last_checkpoint)
    assert ck.training["steps"] == 4 and ck.contract.n_channels == 50
    assert synth2.ckpt_box.currentText() == train.last_checkpoint  # ready to synthesise with
    _shot(viewer, qtbot, shots, "06_finetune.png")

    # 6. the other direction on the registered section: MSI modes from H&E, then super-resolution
    viewer.window.remove_dock_widget(dw)
    from napari_msi2hist.widgets.crossmodal import PredictWidget, SuperResWidget

    pred = PredictWidget(viewer)
    dw = viewer.window.add_dock_widget(pred, name="Predict from H&E", area="right")
    pred.n_comp.setValue(3)
    click(pred.run_btn)
    _wait(qtbot, pred)
    assert pred.result is not None and "IN-SAMPLE" in pred.result_label.text(), pred.status.text()
    for ly in viewer.layers:
        ly.visible = ly.name in ("he", "msi predicted PCA modes")
    viewer.layers["msi predicted PCA modes"].opacity = 0.8
    viewer.reset_view()
    _shot(viewer, qtbot, shots, "07_predict_from_he.png")
    viewer.window.remove_dock_widget(dw)
    sr = SuperResWidget(viewer)
    dw = viewer.window.add_dock_widget(sr, name="Super-resolve MSI", area="right")
    sr.stack_box.setCurrentText(stack.name)
    click(sr.run_btn)
    _wait(qtbot, sr)
    assert sr.result is not None, sr.status.text()
    hr_layer = viewer.layers[f"{stack.name} super-resolved (learned)"]
    assert hr_layer.data.shape[0] == 20 and tuple(hr_layer.scale[-2:]) == (4.0, 4.0)
    for ly in viewer.layers:
        ly.visible = ly is hr_layer
    viewer.dims.set_point(0, 3)
    hr_layer.contrast_limits = tuple(np.nanpercentile(hr_layer.data[3], [1, 99.5]))
    viewer.reset_view()
    _shot(viewer, qtbot, shots, "08_superres.png")
    viewer.window.remove_dock_widget(dw)
    dw = viewer.window.add_dock_widget(train, name="Train / fine-tune", area="right")
    viewer.layers["he"].visible = True

    # 7. a long job, cancelled: the viewer stays usable and responsive
    train.steps.setValue(2000)
    train.resume.setChecked(True)
    click(train.run_btn)
    assert train.run_btn.text() == "Cancel"
    qtbot.waitUntil(lambda: len(train.history) >= 1, timeout=120_000)
    t0 = time.monotonic()
    ticks = []
    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(50)
    qtbot.wait(1000)  # the event loop keeps running while the job trains
    assert len(ticks) >= 5, f"event loop starved: {len(ticks)} ticks in 1 s"
    click(train.run_btn)
    _wait(qtbot, train, timeout=120_000)
    timer.stop()
    assert "cancelled at step" in train.status.text()
    assert time.monotonic() - t0 < 60
    pts = viewer.add_points(np.array([[10.0, 10.0]]), name="after cancel")
    assert pts in viewer.layers and train.run_btn.text() == "Train"
    _shot(viewer, qtbot, shots, "09_after_cancel.png")
    viewer.window.remove_dock_widget(dw)


@pytest.fixture(autouse=True)
def _restore_reader_settings():
    yield
    from napari.settings import get_settings

    get_settings().plugins.extension2reader = {}
