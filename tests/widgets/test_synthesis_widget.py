"""Synthesise H&E widget end to end under Xvfb, including event-loop latency during a run."""

import time

import numpy as np
from qtpy.QtCore import QTimer

from napari_msi2hist.widgets.peaks import PeakSelectionWidget
from napari_msi2hist.widgets.synthesis import SynthesisWidget


def _wait(qtbot, w, timeout=120000):
    qtbot.waitUntil(lambda: w.worker is None, timeout=timeout)


def test_synthesis_from_msi_layer_overlays_and_stays_responsive(
    make_napari_viewer, open_phantom, qtbot, trained_checkpoint, small_phantom, click
):
    viewer = make_napari_viewer()
    open_phantom(viewer)
    w = SynthesisWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.layer_box.currentText() == "msi TIC"
    w.ckpt_box.setCurrentText(str(trained_checkpoint))
    w.tile.setValue(32)  # many small tiles: a run long enough to measure the event loop during it
    w.overlap.setValue(16)
    w.device.setCurrentText("cpu")
    gaps, last = [], [time.perf_counter()]

    def tick():  # event-loop gaps while the job runs (until its result reaches the GUI thread)
        now = time.perf_counter()
        if w.last_result is None:
            gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    click(w.run_btn)
    assert w.run_btn.text() == "Cancel"
    _wait(qtbot, w)
    timer.stop()
    layer = viewer.layers["msi synthetic H&E"]
    assert layer.rgb and tuple(layer.scale) == (10.0, 10.0)
    assert layer.metadata["msi2hist"]["checkpoint"] == str(trained_checkpoint)
    # same world extent as the MSI: last pixel centres coincide
    msi = viewer.layers["msi TIC"]
    last_msi = np.array(msi.data_to_world(np.array(msi.data.shape) - 1))
    last_syn = np.array(layer.data_to_world(np.array(layer.data.shape[:2]) - 1))
    assert np.allclose(last_msi, last_syn)
    assert len(gaps) >= 3
    print(f"max event-loop gap during synthesis: {1000 * max(gaps):.0f} ms over {len(gaps)} ticks")
    assert max(gaps) < 0.2


def test_mismatched_stack_gives_notification_not_traceback(
    make_napari_viewer, open_phantom, qtbot, trained_checkpoint, click
):
    viewer = make_napari_viewer()
    open_phantom(viewer)
    p = PeakSelectionWidget(viewer)
    p.mz_edit.setText("333.3, 444.4")
    click(p.pick_btn)
    qtbot.waitUntil(lambda: p.worker is None, timeout=60000)
    click(p.add_btn)
    qtbot.waitUntil(lambda: p.worker is None, timeout=60000)
    w = SynthesisWidget(viewer)
    w.layer_box.setCurrentText("msi ion images")
    w.ckpt_box.setCurrentText(str(trained_checkpoint))
    w.reextract.setChecked(False)
    click(w.run_btn)
    _wait(qtbot, w)
    assert "m/z channel(s) that the MSI layer does not have" in w.status.text()
    assert "synthetic" not in " ".join(ly.name for ly in viewer.layers)
    # with re-extraction allowed (the default), the same layer works: the imzML is at hand
    w.reextract.setChecked(True)
    w.tile.setValue(64)
    click(w.run_btn)
    _wait(qtbot, w)
    assert "msi ion images synthetic H&E" in viewer.layers


def test_cancel_synthesis(make_napari_viewer, open_phantom, qtbot, trained_checkpoint, click):
    viewer = make_napari_viewer()
    open_phantom(viewer)
    w = SynthesisWidget(viewer)
    w.ckpt_box.setCurrentText(str(trained_checkpoint))
    w.tile.setValue(32)
    w.overlap.setValue(16)
    click(w.run_btn)
    click(w.run_btn)
    _wait(qtbot, w)
    assert w.run_btn.text() == "Synthesise H&&E"
    assert not any("synthetic" in ly.name for ly in viewer.layers)
