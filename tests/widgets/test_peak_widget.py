"""The Peak selection widget end to end in a real napari viewer (Xvfb in CI)."""

import numpy as np
import pytest

from napari_msi2hist.widgets.peaks import PeakSelectionWidget


def test_reader_layers_overlap_in_world_units(make_napari_viewer, open_phantom, small_phantom):
    viewer = make_napari_viewer()
    he, msi = open_phantom(viewer)
    assert he.rgb and tuple(he.scale) == (4.0, 4.0)
    assert tuple(msi.scale) == (20.0, 20.0)
    assert msi.metadata["msi2hist"]["kind"] == "msi"
    # a landmark's MSI world position, taken through the layer's own world->data mapping,
    # lands on the pixel the truth maps it to
    p = small_phantom.landmarks_msi_um[0]
    assert np.allclose(msi.world_to_data(p), p / 20.0)


def _wait(qtbot, w):
    # the widget drops its worker in the finished handler; waiting on that avoids a signal race
    qtbot.waitUntil(lambda: w.worker is None, timeout=60000)


def test_pick_preview_and_add(make_napari_viewer, open_phantom, qtbot, small_phantom, click):
    viewer = make_napari_viewer()
    open_phantom(viewer)
    w = PeakSelectionWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.layer_box.count() == 1  # only the MSI layer, found by metadata
    w.n_peaks.setValue(10)
    w.norm_box.setCurrentText("tic")
    click(w.pick_btn)
    _wait(qtbot, w)
    assert w.peaks is not None and len(w.peaks) == 10
    planted = np.array(sorted(m for v in small_phantom.peaks.values() for m in v))
    assert all(np.min(np.abs(planted - m)) < 1.0 for m in w.peaks)
    assert len(w.ax.lines) == 2  # spectrum + peak markers

    class Ev:
        ind = [3]

    w._on_pick(Ev())
    _wait(qtbot, w)
    prev = viewer.layers["preview ion image"]
    assert prev.data.shape == tuple(small_phantom.msi_shape_yx)
    assert prev.metadata["msi2hist"]["mz"] == [pytest.approx(w.peaks[3])]

    click(w.add_btn)
    _wait(qtbot, w)
    stack = [
        ly for ly in viewer.layers if ly.metadata.get("msi2hist", {}).get("kind") == "ion_stack"
    ][0]
    assert stack.data.shape == (10, *small_phantom.msi_shape_yx)
    assert tuple(stack.scale) == (1.0, 20.0, 20.0)
    assert stack.metadata["msi2hist"]["normalisation"] == "tic"
    np.testing.assert_allclose(stack.data[3], prev.data, rtol=1e-6)


def test_cancel_keeps_viewer_usable(make_napari_viewer, open_phantom, qtbot, click):
    viewer = make_napari_viewer()
    open_phantom(viewer)
    w = PeakSelectionWidget(viewer)
    w.mz_edit.setText(", ".join(str(300 + 3 * i) for i in range(200)))
    click(w.pick_btn)
    _wait(qtbot, w)
    click(w.add_btn)
    assert w.add_btn.text() == "Cancel"
    click(w.add_btn)  # cancel
    _wait(qtbot, w)
    assert w.add_btn.text() == "Add ion images" and w.worker is None
    # the viewer still works: a new layer can be added and the widget can run again
    viewer.add_points(np.zeros((1, 2)))
    w.mz_edit.setText("500")
    click(w.pick_btn)
    _wait(qtbot, w)
    assert len(w.peaks) == 1


def test_bad_mz_text_gives_message_not_traceback(make_napari_viewer, open_phantom, click):
    viewer = make_napari_viewer()
    open_phantom(viewer)
    w = PeakSelectionWidget(viewer)
    w.mz_edit.setText("abc")
    click(w.pick_btn)
    assert "not a list of m/z" in w.status.text() and w.worker is None


def test_sample_data_gives_both_layers(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("MSI2HIST_CACHE", str(tmp_path))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-msi2hist", "phantom")
    kinds = sorted(ly.metadata["msi2hist"]["kind"] for ly in viewer.layers)
    assert kinds == ["he", "msi"]
    assert (tmp_path / "phantom-seed0" / "truth.json").is_file()


def test_pyramidal_he_opens_as_multiscale(make_napari_viewer, tmp_path, monkeypatch):
    from napari_msi2hist.io import histology
    from napari_msi2hist.io.histology import write_ome_tiff

    rgb = np.random.default_rng(0).integers(0, 255, (2048, 1536, 3), dtype=np.uint8)
    p = write_ome_tiff(tmp_path / "big.ome.tif", rgb, (0.5, 0.5), pyramid=True)
    monkeypatch.setattr(histology, "LAZY_BYTES", 1024)  # treat it as large: open lazily
    viewer = make_napari_viewer()
    viewer.open(str(p), plugin="napari-msi2hist")
    ly = viewer.layers[0]
    assert ly.multiscale and ly.rgb and tuple(ly.scale) == (0.5, 0.5)
    assert len(ly.data) >= 2 and ly.data[1].shape[:2] == (1024, 768)


def test_truth_linear_part_as_layer_affine_overlays_msi_on_he(
    make_napari_viewer, open_phantom, phantom_dir, small_phantom
):
    """With the truth's linear part as the MSI layer's affine, each MSI landmark lands on its H&E
    landmark up to the known smooth deformation at that point."""
    import json

    viewer = make_napari_viewer()
    he, msi = open_phantom(viewer)
    truth = json.loads((phantom_dir / "truth.json").read_text())
    from napari_msi2hist.registration.truth import load_truth

    tr = load_truth(phantom_dir / "truth.json")
    msi.affine = np.block(
        [
            [
                np.asarray(truth["linear"]["matrix_yx_um"]),
                np.asarray(truth["linear"]["offset_yx_um"])[:, None],
            ],
            [np.zeros((1, 2)), np.ones((1, 1))],
        ]
    )
    lm_msi_px = small_phantom.landmarks_msi_um / 20.0
    world = np.array([msi.data_to_world(p) for p in lm_msi_px])
    expected = small_phantom.landmarks_he_um - tr.displacement(small_phantom.landmarks_msi_um)
    np.testing.assert_allclose(world, expected, atol=1e-6)
    # and the H&E layer's own data->world is its pixel size
    assert np.allclose(he.data_to_world((10, 20)), (40.0, 80.0))
