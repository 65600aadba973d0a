"""Register widget with a multiscale (whole-slide) H&E layer: the job registers on the pyramid level
that matches the moving pixel, read in the worker thread, never on level 0."""

import numpy as np

from napari_msi2hist.io.histology import read_histology, write_ome_tiff
from napari_msi2hist.widgets.registration import RegisterWidget


def test_register_widget_uses_the_matching_pyramid_level(
    make_napari_viewer, small_phantom, qtbot, click, tmp_path
):
    p = small_phantom.paths
    small = np.asarray(read_histology(p["he"]).levels[0])  # 160 px at 4 um
    big = np.repeat(np.repeat(small, 16, 0), 16, 1)  # 2560 px at 0.25 um, levels 2560/1280/640
    he_path = write_ome_tiff(tmp_path / "he_pyr.ome.tif", big, (0.25, 0.25), pyramid=True)
    viewer = make_napari_viewer()
    viewer.open(str(he_path), plugin="napari-msi2hist")
    viewer.open(p["imzml"], plugin="napari-msi2hist")
    he = viewer.layers[0]
    assert he.multiscale and [lv.shape[0] for lv in he.data] == [2560, 1280, 640]
    w = RegisterWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.fixed_box.setCurrentText(he.name)
    w.moving_box.setCurrentText("msi TIC")
    click(w.run_btn)
    assert w.run_btn.text() == "Cancel"
    qtbot.waitUntil(lambda: w.worker is None, timeout=300000)
    res = w.result
    assert res is not None, w.status.text()
    # registered on a coarser level (target: half the 20 um MSI pixel), not the 2560 px level 0
    assert res.fixed_mask.shape[0] < 640
    # and as right as on the flat H&E: the phantom's landmarks within 2 MSI pixels
    from napari_msi2hist.metrics import landmark_tre_um

    err = landmark_tre_um(
        res.transform, small_phantom.landmarks_msi_um, small_phantom.landmarks_he_um
    )
    assert np.median(err) < 2 * 20.0, err
