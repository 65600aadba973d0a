"""Export widget end to end on a registered phantom: every button pressed through Qt, results
imported back as layers."""

import json

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_msi2hist.cli import main
from napari_msi2hist.widgets.export import ExportWidget

QUPATH = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[40, 40], [120, 40], [120, 110], [40, 110], [40, 40]],
                    [[60, 60], [80, 60], [80, 80], [60, 80], [60, 60]],
                ],
            },
            "properties": {"classification": {"name": "Tumor"}},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [100.5, 20.5]},
            "properties": {"classification": {"name": "Marker"}},
        },
    ],
}


@pytest.fixture
def registered_dir(small_phantom, tmp_path):
    p = small_phantom.paths
    out = tmp_path / "reg"
    args = ["register", "--fixed", p["he"], "--moving", p["imzml"], "--out", str(out)]
    args += ["--route", "direct", "--landmarks-use", "fit", "--quiet"]
    args += ["--landmarks-fixed", p["landmarks_he"], "--landmarks-moving", p["landmarks_msi"]]
    assert main(args) == 0
    (tmp_path / "qupath.geojson").write_text(json.dumps(QUPATH))
    return p, out / "transform.json", tmp_path


def _fill(w, p, transform, tmp):
    w.edits["he"].setText(p["he"])
    w.edits["msi"].setText(p["imzml"])
    w.edits["transform"].setText(str(transform))
    w.edits["annotations"].setText(str(tmp / "qupath.geojson"))
    w.edits["landmarks_he"].setText(p["landmarks_he"])
    w.edits["landmarks_msi"].setText(p["landmarks_msi"])
    w.edits["out"].setText(str(tmp / "exports"))
    (tmp / "exports").mkdir()


def _press(qtbot, w, button):
    qtbot.mouseClick(button, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120000)


def test_geojson_and_elastix_buttons(make_napari_viewer, qtbot, registered_dir):
    from napari_msi2hist.interop.geojson import read_geojson
    from napari_msi2hist.registration.transforms import Transform

    p, transform, tmp = registered_dir
    viewer = make_napari_viewer()
    w = ExportWidget(viewer)
    viewer.window.add_dock_widget(w)
    _fill(w, p, transform, tmp)
    _press(qtbot, w, w.gj_import_btn)
    assert "Tumor" in w.status.text(), w.status.text()
    shapes = viewer.layers["annotations"]
    assert list(shapes.features["hole"]) == [False, True]
    assert list(viewer.layers["annotations points"].features["class"]) == ["Marker"]
    lab = viewer.layers["annotation classes (MSI)"]
    tr = Transform.load(transform)
    np.testing.assert_allclose(np.asarray(lab.affine.affine_matrix), tr.napari_affine(), atol=1e-9)
    assert (lab.data == 1).sum() == w.last["counts"]["Tumor"] > 0
    # MSI regions back to the H&E as GeoJSON: the labels layer just made
    w.regions_box.setCurrentText("annotation classes (MSI)")
    _press(qtbot, w, w.gj_export_btn)
    out = tmp / "exports" / "annotation classes (MSI)_he.geojson"
    assert out.is_file(), w.status.text()
    back = read_geojson(out)
    assert len(back) == 1 and back[0].polygons
    # the traced region sits where the tumour was drawn (H&E pixels), holes included
    ring = back[0].polygons[0][0]
    assert 30 < ring[:, 0].min() < 50 and 110 < ring[:, 0].max() < 130
    # elastix export, and the overwrite policy: a second press is refused
    _press(qtbot, w, w.elx_export_btn)
    assert (tmp / "exports" / "elastix" / "TransformParameters.0.txt").is_file()
    _press(qtbot, w, w.elx_export_btn)
    assert "refusing to overwrite" in w.status.text()


def test_spatialdata_buttons_round_trip(make_napari_viewer, qtbot, registered_dir):
    pytest.importorskip("spatialdata", reason='needs the extra: pip install ".[spatialdata]"')
    p, transform, tmp = registered_dir
    viewer = make_napari_viewer()
    w = ExportWidget(viewer)
    _fill(w, p, transform, tmp)
    w.mz.setText("400.5, 550")
    _press(qtbot, w, w.sd_export_btn)
    store = tmp / "exports" / "section.zarr"
    assert store.is_dir(), w.status.text()
    assert w.edits["store"].text() == str(store)
    _press(qtbot, w, w.sd_import_btn)
    assert "imported section" in w.status.text(), w.status.text()
    he, ions = viewer.layers["section H&E"], viewer.layers["section ion images"]
    assert he.rgb and tuple(he.scale) == (4.0, 4.0)
    assert ions.data.shape[0] == 2
    from napari_msi2hist.registration.transforms import Transform

    tr = Transform.load(transform)
    np.testing.assert_allclose(
        np.asarray(ions.affine.affine_matrix)[-3:, -3:], tr.napari_affine(), atol=1e-6
    )
    assert "section annotations" in viewer.layers
    np.testing.assert_allclose(
        viewer.layers["section landmarks MSI"].data, np.asarray(w.last.landmarks_msi_um)
    )


def test_store_opens_in_napari_spatialdata(qtbot, registered_dir):
    """If napari-spatialdata is installed, it opens our store and places the MSI landmarks in the
    'global' (H&E um) system where msi2hist transform-points puts them."""
    pytest.importorskip("napari_spatialdata", reason="napari-spatialdata not installed")
    import spatialdata as sd
    from napari_spatialdata import Interactive

    from napari_msi2hist.io.points import read_points_csv

    p, transform, tmp = registered_dir
    store = tmp / "s.zarr"
    args = ["export-spatialdata", "--he", p["he"], "--msi", p["imzml"], "--transform"]
    args += [str(transform), "--mz", "400.5", "--out", str(store), "--quiet"]
    args += ["--landmarks-he", p["landmarks_he"], "--landmarks-msi", p["landmarks_msi"]]
    assert main(args) == 0
    assert main(["transform-points", "--transform", str(transform), "--points",
                 p["landmarks_msi"], "--out", str(tmp / "cli.csv"), "--quiet"]) == 0  # fmt: skip
    it = Interactive(sd.read_zarr(store), headless=True)
    v = it._viewer
    try:
        # (napari-spatialdata 0.7.2 raises on float multichannel images: ion_images is left out)
        for el in ("he", "landmarks_msi"):
            it.add_element(el, "global")
            qtbot.waitUntil(lambda el=el: el in [ly.name for ly in v.layers], timeout=30000)
        lm = v.layers["landmarks_msi"]
        world = np.array([lm.data_to_world(q) for q in lm.data])
        np.testing.assert_allclose(world, read_points_csv(tmp / "cli.csv"), atol=1e-6)
    finally:
        v.close()
