"""docs/own_data.md, walked in one real napari window on data the bundled model does not know.

Two phantoms of another chemistry (``chemistry_seed`` and an acquired m/z range of 500-1000, where only
part of the demo model's 50 m/z lie) stand in for the user's own sections: section A gets landmarks and
trains a model re-headed from the demo; section B is "the rest", synthesised and registered with it
from the command line. Every button is pressed through Qt. The window, with all widgets docked, must
fit 1920x1080; screenshots go to ``MSI2HIST_SCREENSHOTS`` when set.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from napari_msi2hist.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def own_sections(tmp_path_factory):
    from napari_msi2hist.phantom import PhantomConfig, make_phantom

    d = tmp_path_factory.mktemp("own")
    kw = {"procedural_size": 160, "chemistry_seed": 7, "mz_min": 500.0, "mz_max": 1000.0}
    return [make_phantom(d / n, PhantomConfig(seed=s, **kw)) for n, s in (("A", 5), ("B", 6))]


def _shot(viewer, qtbot, folder, name):
    if folder is None:
        return
    qtbot.wait(200)
    viewer.screenshot(str(folder / name), canvas_only=False, flash=False)
    assert (folder / name).stat().st_size > 10_000


def _wait(qtbot, w, timeout=300_000):
    qtbot.waitUntil(lambda: w.worker is None, timeout=timeout)


def test_own_data_journey_in_a_real_window(
    make_napari_viewer, qtbot, own_sections, tmp_path, click, capsys, monkeypatch
):
    from napari_msi2hist.cli import main
    from napari_msi2hist.widgets.layout import dock_widgets, fit_window, show_he_under_msi
    from napari_msi2hist.widgets.peaks import PeakSelectionWidget
    from napari_msi2hist.widgets.registration import RegisterWidget
    from napari_msi2hist.widgets.synthesis import SynthesisWidget
    from napari_msi2hist.widgets.training import REHEAD_CHANNELS, TrainWidget

    shots = os.environ.get("MSI2HIST_SCREENSHOTS")
    shots = Path(shots) if shots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    a, b = own_sections
    demo_mz = np.asarray(load_checkpoint("demo").contract.mz)
    assert ((demo_mz < 500) | (demo_mz > 1000)).any()  # the demo model does not know this data

    # 1. open my files (my H&E scan has no pixel size in it: a visible warning, nothing assumed);
    # dock every widget; the window fits a 1920x1080 screen
    import tifffile

    from napari_msi2hist.io.histology import read_histology

    he_file = tmp_path / "my_scan" / "he.tif"
    he_file.parent.mkdir()
    tifffile.imwrite(he_file, np.asarray(read_histology(a.paths["he"]).levels[0]))
    viewer = make_napari_viewer(show=True)
    with pytest.warns(UserWarning, match="he.tif: no pixel size in the file"):
        viewer.open(str(he_file), plugin="napari-msi2hist")
    viewer.open(a.paths["imzml"], plugin="napari-msi2hist")
    peaks, synth = PeakSelectionWidget(viewer), SynthesisWidget(viewer)
    train, reg = TrainWidget(viewer), RegisterWidget(viewer)
    docks = dock_widgets(
        viewer,
        [
            (peaks, "Peak selection"),
            (synth, "Synthesise H&E"),
            (train, "Train / fine-tune"),
            (reg, "Register"),
        ],
    )
    fit_window(viewer, (1920, 1080))
    show_he_under_msi(viewer)
    win = viewer.window._qt_window
    qtbot.wait(100)
    assert win.minimumSizeHint().height() <= 1080 and win.height() <= 1080
    assert win.frameGeometry().width() <= 1920
    assert viewer.layers["msi TIC"].opacity < 1  # the H&E shows through
    from qtpy.QtWidgets import QTabBar

    tabs = [bar.tabText(i) for bar in win.findChildren(QTabBar) for i in range(bar.count())]
    assert "Synthesise H&&E" in tabs  # the "&" is shown, not taken as a mnemonic

    # 1b. set the H&E pixel size (4 um, from the scanner's report) in the Register widget: typed
    # into the field, the layer's scale and metadata follow at once, for every widget
    from qtpy.QtCore import Qt

    docks[3].raise_()
    he_layer = viewer.layers["he"]
    assert he_layer.metadata["msi2hist"]["pixel_size_um"] is None and reg.he_px.value() == 0.0
    reg.he_px.lineEdit().selectAll()
    qtbot.keyClicks(reg.he_px.lineEdit(), "4")
    qtbot.keyClick(reg.he_px.lineEdit(), Qt.Key.Key_Return)
    assert tuple(he_layer.scale[-2:]) == (4.0, 4.0)
    assert he_layer.metadata["msi2hist"]["pixel_size_um"] == [4.0, 4.0]

    # 2. pick peaks: the spectrum keeps a usable height; the slider's m/z is shown
    docks[0].raise_()
    qtbot.wait(100)
    assert peaks.canvas.height() >= 150
    assert peaks.norm_box.currentText() == "tic"
    peaks.n_peaks.setValue(20)
    click(peaks.pick_btn)
    _wait(qtbot, peaks)
    click(peaks.add_btn)
    _wait(qtbot, peaks)
    stack = viewer.layers[-1]
    viewer.dims.set_point(0, 2)
    mz2 = stack.metadata["msi2hist"]["mz"][2]
    overlay = viewer.canvas.overlays.text if hasattr(viewer, "canvas") else viewer.text_overlay
    assert f"m/z {mz2:.4f}" in overlay.text and overlay.visible
    _shot(viewer, qtbot, shots, "own_01_peaks.png")
    stack.visible = False

    # 3. the bundled model on my data: a banner says it is outside its input domain
    docks[1].raise_()
    assert synth.ckpt_box.currentText() == "demo"
    synth.layer_box.setCurrentText("msi TIC")
    click(synth.run_btn)
    _wait(qtbot, synth)
    assert synth.banner.isVisibleTo(synth) and "INPUT DOMAIN" in synth.banner.text()
    _shot(viewer, qtbot, shots, "own_02_demo_out_of_domain.png")
    viewer.layers["msi synthetic H&E"].visible = False  # near-white: it hides the H&E

    # 4. landmarks on the pair, through the Register widget's buttons
    docks[3].raise_()
    reg.moving_box.setCurrentText("msi TIC")
    click(reg.lm_btn)
    fixed, moving = reg.landmark_layers()
    fixed.data = a.landmarks_he_um.copy()  # what the user clicks on the H&E ...
    moving.data = a.landmarks_msi_um.copy()  # ... and on the MSI, in the same order
    click(reg.fit_btn)
    msi = viewer.layers["msi TIC"]
    mapped = np.array([msi.data_to_world(p / 20.0) for p in a.landmarks_msi_um])
    assert np.median(np.linalg.norm(mapped - a.landmarks_he_um, axis=1)) < 2 * 20.0
    viewer.reset_view()
    _shot(viewer, qtbot, shots, "own_03_landmarks.png")

    # 5. a model for my chemistry: the demo re-headed to my 20 peaks, aligned by the landmarks
    docks[2].raise_()
    assert train.base.currentText() == "demo"
    assert (train.moving_pts.currentText(), train.fixed_pts.currentText()) == (
        "landmarks MSI",
        "landmarks H&E",
    )
    train.align.setCurrentText("landmarks")
    train.channels.setCurrentText(REHEAD_CHANNELS)
    train.n_peaks.setValue(20)
    train.steps.setValue(4)
    train.lr.setText("2e-4")
    train.device.setCurrentText("cpu")
    train.out_dir.setText(str(tmp_path / "my-model"))
    click(train.run_btn)
    _wait(qtbot, train)
    assert train.last_checkpoint, train.status.text()
    assert "re-headed" in train.status.text()
    ck = load_checkpoint(train.last_checkpoint)
    assert ck.contract.n_channels == 20 and ck.training["data"]["reheaded_from"].endswith(".pt")
    assert all(500 <= m <= 1000 for m in ck.contract.mz)
    _shot(viewer, qtbot, shots, "own_04_trained.png")

    # 6. synthesise with my model (selected at once): in domain, no banner; register it to the H&E
    docks[1].raise_()
    assert synth.ckpt_box.currentText() == train.last_checkpoint
    click(synth.run_btn)
    _wait(qtbot, synth)
    assert not synth.banner.isVisibleTo(synth), synth.banner.text()
    docks[3].raise_()
    reg.moving_box.setCurrentText("msi synthetic H&E")
    click(reg.run_btn)
    _wait(qtbot, reg)
    assert reg.result is not None, reg.status.text()
    for ly in viewer.layers:
        ly.visible = ly.name in ("he", "msi synthetic H&E", "landmarks H&E")
    viewer.layers["msi synthetic H&E"].opacity = 0.6
    viewer.reset_view()
    _shot(viewer, qtbot, shots, "own_05_registered.png")

    # 7. export: the transform through the Register widget's Save button, the landmarks through
    # napari's writer, then the Export widget's buttons (elastix, and SpatialData with that extra)
    from qtpy.QtWidgets import QFileDialog

    from napari_msi2hist.widgets.export import ExportWidget

    out = tmp_path / "export"
    out.mkdir()
    saved = str(out / "transform.json")
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (saved, "")))
    click(reg.save_btn)
    assert (out / "transform.json").is_file() and (out / "transform.h5").is_file(), (
        reg.status.text()
    )
    fixed.save(str(out / "landmarks_he.csv"))
    moving.save(str(out / "landmarks_msi.csv"))
    exp = ExportWidget(viewer)
    viewer.window.add_dock_widget(exp, name="Export", tabify=True)
    for key, value in (
        ("he", str(he_file)),
        ("msi", a.paths["imzml"]),
        ("transform", saved),
        ("landmarks_he", str(out / "landmarks_he.csv")),
        ("landmarks_msi", str(out / "landmarks_msi.csv")),
        ("out", str(out)),
    ):
        exp.edits[key].setText(value)
    exp.he_px.setValue(4.0)  # the scan still has no pixel size in its file
    click(exp.elx_export_btn)
    qtbot.waitUntil(lambda: exp.worker is None, timeout=120_000)
    assert (out / "elastix" / "TransformParameters.0.txt").is_file(), exp.status.text()
    try:
        import spatialdata  # noqa: F401
    except ImportError:
        spatialdata = None
    if spatialdata is not None:
        click(exp.sd_export_btn)
        qtbot.waitUntil(lambda: exp.worker is None, timeout=300_000)
        assert (out / "section.zarr").is_dir(), exp.status.text()

    # 8. the rest of the sections, from the command line with my model: in domain, registered, and
    # every image written is readable by evaluate
    capsys.readouterr()
    syn = tmp_path / "B_synthetic.ome.tif"
    args = ["synthesize", b.paths["imzml"], "--model", train.last_checkpoint, "--out", str(syn)]
    assert main([*args, "--strict", "--quiet", "--tile", "128"]) == 0
    assert "warning" not in capsys.readouterr().err
    for ly in viewer.layers:
        ly.visible = ly.name in ("he", "msi synthetic H&E")
    viewer.reset_view()
    _shot(viewer, qtbot, shots, "own_06_final.png")


def test_gui_opens_large_fitted_with_the_he_visible(qtbot, monkeypatch, tmp_path):
    """``msi2hist gui``: maximised, fits 1920x1080, H&E visible under a translucent MSI, '&' shown in
    the tab titles, and no "Tight layout not applied" warning (napari shows those as toasts)."""
    import warnings

    from qtpy.QtWidgets import QDockWidget

    from napari_msi2hist.widgets.launch import open_gui

    monkeypatch.setenv("MSI2HIST_RUNS", str(tmp_path / "runs"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viewer = open_gui(run=False)
        qtbot.wait(300)
    try:
        assert not [w for w in caught if "layout" in str(w.message).lower()]
        win = viewer.window._qt_window
        assert win.isMaximized() and win.minimumSizeHint().height() <= 1080
        he = [ly for ly in viewer.layers if getattr(ly, "rgb", False)]
        msi = [ly for ly in viewer.layers if ly.metadata.get("msi2hist", {}).get("kind") == "msi"]
        assert he and msi and he[0].visible and all(ly.opacity < 1 for ly in msi)
        titles = {d.windowTitle() for d in win.findChildren(QDockWidget)}
        assert "Synthesise H&&E" in titles and "Synthesise H&E" not in titles
    finally:
        viewer.close()
