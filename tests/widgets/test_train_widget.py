"""Train / fine-tune widget: pairs from open layers, live losses, cancel/resume, hand-off to synthesis."""

from pathlib import Path

import numpy as np

from napari_msi2hist.models.checkpoint import load_checkpoint
from napari_msi2hist.widgets.synthesis import SynthesisWidget
from napari_msi2hist.widgets.training import TrainWidget, displayed_msi_to_he, landmark_msi_to_he


def test_alignment_from_displayed_layers_and_landmarks(
    make_napari_viewer, open_phantom, truth_affine, small_phantom
):
    viewer = make_napari_viewer()
    he, msi = open_phantom(viewer, aligned=True)
    m = truth_affine
    np.testing.assert_allclose(displayed_msi_to_he(msi, he).matrix_yx_um, m, atol=1e-9)
    # landmarks: the fitted affine maps MSI landmarks onto H&E ones up to the smooth deformation
    a = landmark_msi_to_he(small_phantom.landmarks_msi_um, small_phantom.landmarks_he_um)
    mapped = a.moving_to_fixed(small_phantom.landmarks_msi_um)
    assert np.sqrt(((mapped - small_phantom.landmarks_he_um) ** 2).sum(1)).mean() < 2 * 1.5 * 20


def test_train_from_open_layers_then_synthesise(
    make_napari_viewer, open_phantom, qtbot, tmp_path, click
):
    viewer = make_napari_viewer()
    he, msi = open_phantom(viewer, aligned=True)
    synth = SynthesisWidget(viewer)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.steps.setValue(6)
    w.lr.setText("2e-4")
    w.device.setCurrentText("cpu")
    w.out_dir.setText(str(tmp_path / "run"))
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300000)
    assert w.last_checkpoint and w.last_checkpoint.endswith("model.pt"), w.status.text()
    assert len(w.history) == 6 and all(np.isfinite(list(h[1].values())).all() for h in w.history)
    ck = load_checkpoint(w.last_checkpoint)
    assert ck.training["steps"] == 6 and ck.contract.n_channels == 50
    # the new checkpoint is selected in the synthesis widget at once
    assert synth.ckpt_box.currentText() == w.last_checkpoint
    # resume to a longer run, then cancel it: the state is saved for a later resume
    w.steps.setValue(400)
    w.resume.setChecked(True)
    click(w.run_btn)
    qtbot.waitUntil(lambda: len(w.history) >= 2, timeout=120000)
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120000)
    step = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").extra_state["step"]
    assert 6 < step < 400
    assert "cancelled at step" in w.status.text()
    # a new run (no resume) in the same folder goes to a fresh folder instead of overwriting
    w.resume.setChecked(False)
    w.steps.setValue(2)
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120000)
    assert w.out_dir.text() == str(tmp_path / "run") + "-2"
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").extra_state["step"] == step
    viewer.add_points(np.zeros((1, 2)))  # the viewer is still usable


def test_defaults_base_demo_run_folder_and_landmark_layers(
    make_napari_viewer, open_phantom, monkeypatch, tmp_path, click
):
    from napari_msi2hist.models.training import TrainConfig
    from napari_msi2hist.widgets.registration import RegisterWidget

    monkeypatch.setenv("MSI2HIST_RUNS", str(tmp_path / "runs"))
    viewer = make_napari_viewer()
    open_phantom(viewer)
    w = TrainWidget(viewer)
    assert w.base.currentText() == "demo"
    assert w.out_dir.text().startswith(str(tmp_path / "runs"))
    monkeypatch.delenv("MSI2HIST_RUNS")
    assert TrainWidget(viewer).out_dir.text().startswith(str(Path.home() / "msi2hist-runs"))
    # one architecture default for CLI and widget
    from napari_msi2hist.cli import build_parser

    a = build_parser().parse_args(["train", "--pairs", "p.yaml", "--out", "o"])
    cfg = w._params().cfg
    assert (a.ngf, a.depth, a.ndf) == (cfg.ngf, cfg.depth, cfg.ndf) == (16, 6, 32)
    assert (TrainConfig().ngf, TrainConfig().depth) == (16, 6)
    # landmark layers made by the Register widget become the moving / fixed defaults
    viewer.add_points(np.zeros((3, 2)), name="unrelated points")
    reg = RegisterWidget(viewer)
    click(reg.lm_btn)
    assert w.moving_pts.currentText() == "landmarks MSI"
    assert w.fixed_pts.currentText() == "landmarks H&E"


def test_pair_whose_msi_lies_off_the_he_tissue_is_refused(
    make_napari_viewer, open_phantom, qtbot, tmp_path, click
):
    viewer = make_napari_viewer()
    he, msi = open_phantom(viewer, aligned=True)
    w = TrainWidget(viewer)
    w.steps.setValue(2)
    w.device.setCurrentText("cpu")
    w.out_dir.setText(str(tmp_path / "run"))
    msi.translate = (50_000.0, 50_000.0)  # the MSI displayed far from the H&E
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120000)
    assert w.last_checkpoint is None
    assert "outside the H&E tissue" in w.status.text(), w.status.text()
    assert not (tmp_path / "run" / "model.pt").exists()
