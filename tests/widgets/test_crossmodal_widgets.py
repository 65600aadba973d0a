"""Predict from H&E and Super-resolve MSI widgets on the phantom, aligned as displayed."""

import numpy as np
import yaml

from napari_msi2hist.crossmodal.superres import block_mean
from napari_msi2hist.widgets.crossmodal import PredictWidget, SuperResWidget, label_on_he_grid


def test_predict_from_he_held_out_and_in_sample(
    make_napari_viewer, open_phantom, qtbot, small_phantom, tmp_path, click
):
    from napari_msi2hist.phantom import make_phantom

    # two more sections "from the same lab": the open phantom's settings, other seeds
    others = []
    for seed in (4, 5):
        ph = make_phantom(tmp_path / f"s{seed}", small_phantom.config.replace(seed=seed))
        others.append(
            {
                "name": f"s{seed}",
                "imzml": ph.paths["imzml"],
                "he": ph.paths["he"],
                "align": {"truth": ph.paths["truth"]},
            }
        )
    viewer = make_napari_viewer()
    he, msi = open_phantom(viewer, aligned=True)
    # a tumour-like annotation drawn on the H&E: the nuclei-rich regions
    lab = viewer.add_labels(
        (small_phantom.he_classes[1] > 0.3).astype(np.int32), scale=he.scale, name="tumour"
    )
    assert label_on_he_grid(lab, he).sum() == (small_phantom.he_classes[1] > 0.3).sum()
    w = PredictWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.label_box.currentText() == "(none)" and w.he_box.currentText() == "he"
    # held out: two more phantoms from a pairs file train the model for the open one
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(yaml.safe_dump({"samples": others}))
    w.pairs.setText(str(pairs))
    w.n_peaks.setValue(20)
    w.n_comp.setValue(3)
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300_000)
    assert w.result is not None and w.result["cv"], w.status.text()
    pred = viewer.layers["msi predicted PCA modes"]
    assert pred.data.shape == (3, *small_phantom.msi_shape_yx)
    np.testing.assert_allclose(pred.affine.affine_matrix[-3:, -3:], msi.affine.affine_matrix)
    np.testing.assert_allclose(pred.data_to_world((0, 4, 7))[-2:], msi.data_to_world((4, 7)))
    # the first mode, predicted by a model that never saw this section, follows the measured one
    meas = viewer.layers["msi measured PCA modes"].data[0]
    ok = np.isfinite(meas)
    r = np.corrcoef(pred.data[0][ok], meas[ok])[0, 1]
    assert r > 0.5, (r, w.result["r2"])
    assert "held out" in w.result_label.text()
    # in-sample, with the label layer: a probability map, clearly marked as not validated
    w.pairs.setText("")
    w.label_box.setCurrentText("tumour")
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300_000)
    assert not w.result["cv"] and "IN-SAMPLE" in w.result_label.text()
    prob = viewer.layers["msi label probability"].data
    assert prob.shape == tuple(small_phantom.msi_shape_yx) and w.result["auc"] > 0.85
    # errors are plain messages, the viewer survives
    w.msi_box.clear()
    click(w.run_btn)
    assert "open an MSI" in w.status.text()


def test_super_resolve_the_displayed_msi(
    make_napari_viewer, open_phantom, qtbot, small_phantom, click
):
    viewer = make_napari_viewer()
    he, msi = open_phantom(viewer, aligned=True)
    w = SuperResWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.stack_box.currentText() == "msi TIC"
    w.method.setCurrentText("learned")
    click(w.run_btn)
    assert w.run_btn.text() == "Cancel"
    qtbot.waitUntil(lambda: w.worker is None, timeout=300_000)
    assert w.result is not None, w.status.text()
    hr, fine_px, factor, _ = w.result
    assert factor == 5 and fine_px == 4.0  # 20 um MSI, 4 um H&E
    out = viewer.layers["msi TIC super-resolved (learned)"]
    assert out.data.shape == (1, *(np.array(small_phantom.msi_shape_yx) * 5))
    # each MSI pixel is close to the mean of its 5 x 5 fine pixels
    tic = np.asarray(msi.data, np.float64)
    assert np.corrcoef(block_mean(hr[0], 5).ravel(), tic.ravel())[0, 1] > 0.95
    # the fine grid overlays the MSI: fine pixel (2, 2) is the centre of MSI pixel (0, 0)
    np.testing.assert_allclose(
        out.data_to_world((0, 2, 2))[-2:], msi.data_to_world((0, 0)), atol=1e-6
    )


def test_super_resolve_cancel_leaves_the_viewer_usable(
    make_napari_viewer, open_phantom, qtbot, click
):
    from napari_msi2hist.widgets.crossmodal import placed_like

    viewer = make_napari_viewer()
    he, msi = open_phantom(viewer, aligned=True)
    tic = np.asarray(msi.data, np.float32)
    viewer.add_image(
        np.repeat(tic[None], 200, 0),
        name="many ions",
        metadata={"msi2hist": {"kind": "ion_stack"}},
        **placed_like(msi, 3),
    )
    w = SuperResWidget(viewer)
    w.stack_box.setCurrentText("many ions")
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.progress.value() >= 1, timeout=60_000)
    click(w.run_btn)  # Cancel
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert w.result is None and w.run_btn.text() == "Super-resolve"
    assert not any("super-resolved" in ly.name for ly in viewer.layers)
    viewer.add_points(np.zeros((1, 2)))  # still usable
