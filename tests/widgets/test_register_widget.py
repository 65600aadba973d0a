"""Register widget end to end: synthesis route on the phantom, napari affine = SimpleITK mapping,
checkerboard, live landmark errors with undo/redo."""

import numpy as np

from napari_msi2hist.widgets.registration import RegisterWidget
from napari_msi2hist.widgets.synthesis import SynthesisWidget


def test_register_synthetic_he_to_he(
    make_napari_viewer, open_phantom, qtbot, trained_checkpoint, small_phantom, click
):
    viewer = make_napari_viewer()
    open_phantom(viewer)
    s = SynthesisWidget(viewer)
    s.ckpt_box.setCurrentText(str(trained_checkpoint))
    s.tile.setValue(64)
    click(s.run_btn)
    qtbot.waitUntil(lambda: s.worker is None, timeout=120000)
    w = RegisterWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.fixed_box.currentText() == "he"
    w.moving_box.setCurrentText("msi synthetic H&E")
    click(w.run_btn)
    assert w.run_btn.text() == "Cancel"
    qtbot.waitUntil(lambda: w.worker is None, timeout=300000)
    assert w.result is not None and w.result.route == "synthesis", w.status.text()
    assert "MI" in w.metrics.text() and "Dice" in w.metrics.text()
    tr = w.result.transform
    # the open MSI layer of the same file was the second view of the pose ranking
    assert tr.meta["search"].get("second_view") == "MSI summary", tr.meta["search"]
    # every layer of this MSI got the affine, and napari maps data exactly as SimpleITK does
    for name in ("msi TIC", "msi synthetic H&E"):
        ly = viewer.layers[name]
        np.testing.assert_allclose(
            np.asarray(ly.affine.affine_matrix)[-3:, -3:], tr.napari_affine(), atol=1e-9
        )
        pts_um = np.array([[100.0, 200.0], [400.0, 50.0]])
        world = np.array([ly.data_to_world(p / np.asarray(ly.scale[-2:])) for p in pts_um])
        np.testing.assert_allclose(world, tr.moving_to_fixed(pts_um), atol=1e-6)
    click(w.checker_btn)  # made in a short worker, then shown
    qtbot.waitUntil(
        lambda: "checkerboard" in viewer.layers and viewer.layers["checkerboard"].visible,
        timeout=60000,
    )
    click(w.checker_btn)
    assert not viewer.layers["checkerboard"].visible


def test_landmark_editing_updates_errors_with_undo(
    make_napari_viewer, open_phantom, small_phantom, click
):
    viewer = make_napari_viewer()
    open_phantom(viewer)
    w = RegisterWidget(viewer)
    w.moving_box.setCurrentText("msi TIC")
    # the button, clicked through Qt (clicked(bool) must not reach the slot as the points)
    click(w.lm_btn)
    fixed, moving = w.landmark_layers()
    assert fixed is not None and moving is not None and len(fixed.data) == 0
    # the user places the pairs: H&E points, then the MSI points
    fixed.data = small_phantom.landmarks_he_um.copy()
    moving.data = small_phantom.landmarks_msi_um.copy()
    before = w.current_report()
    assert before is not None and not before.outlier.any()
    assert "leave-one-out TRE" in w.lm_table.text()
    assert list(fixed.features["tre_um"]) == list(before.tre_um)
    # drag landmark 3 far away on the H&E: its error jumps and it is flagged
    data = np.array(fixed.data)
    data[3] += [400.0, -300.0]
    fixed.data = data
    after = w.current_report()
    assert after.tre_um[3] > 5 * before.tre_um[3] and after.outlier[3]
    assert "OUTLIER" in w.lm_table.text()
    click(w.undo_btn)
    np.testing.assert_allclose(w.current_report().tre_um, before.tre_um)
    click(w.redo_btn)
    np.testing.assert_allclose(w.current_report().tre_um, after.tre_um)
    # fit from landmarks: the MSI layer now overlays the H&E up to the phantom's smooth deformation
    click(w.undo_btn)
    click(w.fit_btn)
    msi = viewer.layers["msi TIC"]
    mapped = np.array([msi.data_to_world(p / 20.0) for p in small_phantom.landmarks_msi_um])
    assert np.median(np.linalg.norm(mapped - small_phantom.landmarks_he_um, axis=1)) < 2 * 20.0


def test_direct_route_with_mask_layer_pixel_fields_and_coloured_verdict(
    make_napari_viewer, open_phantom, qtbot, small_phantom
):
    from qtpy.QtCore import Qt

    from napari_msi2hist.registration.tissue import he_tissue_mask
    from napari_msi2hist.widgets.registration import DETECT, VERDICT_COLOURS

    viewer = make_napari_viewer()
    he, msi = open_phantom(viewer)
    w = RegisterWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.moving_box.setCurrentText("msi TIC")
    # the pixel fields come from the files
    assert w.he_px.value() == he.scale[-1] and w.msi_px.value() == msi.scale[-1]
    # a tissue mask drawn on the H&E becomes choosable
    mask = he_tissue_mask(small_phantom.he_rgb).astype(np.uint8)
    viewer.add_labels(mask, name="tissue", scale=he.scale[-2:])
    assert w.mask_box.itemText(0) == DETECT
    w.mask_box.setCurrentText("tissue")
    qtbot.mouseClick(w.run_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300000)
    assert w.result is not None and w.result.route == "direct", w.status.text()
    np.testing.assert_array_equal(w.result.fixed_mask, mask > 0)
    v = w.result.verdict["verdict"]
    assert w.verdict.text().startswith(f"Verdict: {v.upper()}")
    assert VERDICT_COLOURS[v] in w.verdict.styleSheet()
    # a pixel size typed in the widget is used and the layer follows it
    w.msi_px.setValue(0.0)
    qtbot.mouseClick(w.run_btn, Qt.LeftButton)
    assert "pixel size" in w.status.text()
    w.msi_px.setValue(25.0)
    qtbot.mouseClick(w.run_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300000)
    assert tuple(viewer.layers["msi TIC"].scale[-2:]) == (25.0, 25.0)
    assert w.result.moving_px == (25.0, 25.0)


def test_real_maldi_image_opens_as_msi_and_registers_once_pixel_sizes_are_set(
    make_napari_viewer, qtbot, shared_data, click
):
    """A vendor-exported single-channel MALDI TIFF (no spectra, no pixel size) opens through the
    plugin as an MSI layer, is offered as Register's moving image, is refused until pixel sizes are
    set (a message, no traceback), then registers by the direct route."""
    import warnings

    pairs = shared_data / "msi_he_pairs"
    he_file = pairs / "he" / "A12_lowres_he_128.tif"
    maldi_file = next((pairs / "msi").glob("A12_*maldi_mask.tif"))
    viewer = make_napari_viewer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viewer.open(str(he_file), plugin="napari-msi2hist")
        viewer.open(str(maldi_file), plugin="napari-msi2hist")
    texts = [str(c.message) for c in caught]
    assert any("no pixel size" in t and maldi_file.name in t for t in texts), texts
    assert not any("assuming" in t for t in texts)
    msi = viewer.layers[-1]
    assert msi.metadata["msi2hist"]["kind"] == "msi" and msi.data.ndim == 2
    assert msi.metadata["msi2hist"]["pixel_size_um"] is None
    w = RegisterWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert [w.moving_box.itemText(i) for i in range(w.moving_box.count())] == [msi.name]
    assert w.he_px.value() == 0.0 and w.msi_px.value() == 0.0  # "unknown": nothing assumed
    click(w.run_btn)
    assert "no pixel size" in w.status.text() and w.worker is None
    w.he_px.setValue(1.0)  # nominal sizes, as in benchmarks/bench_real_pairs.py
    w.msi_px.setValue(1.5)
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300000)
    assert w.result is not None and w.result.route == "direct", w.status.text()
    assert tuple(msi.scale[-2:]) == (1.5, 1.5)
    m = w.result.metrics
    assert m["after"]["dice"] >= m["before"]["dice"]
    assert w.verdict.text().startswith("Verdict:")


def test_a_grey_image_opened_by_another_reader_is_offered_as_moving(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((40, 50)), name="maldi export")
    viewer.add_image(np.zeros((40, 50, 3), np.uint8), rgb=True, name="he")
    w = RegisterWidget(viewer)
    assert w.moving_box.currentText() == "maldi export" and w.fixed_box.currentText() == "he"
