"""Every CLI command and its widget run the same workflow function (issue 14): a spy on the
workflow records the calls of ``msi2hist <command>`` and of the widget's button pressed through Qt."""

from pathlib import Path

import pytest

from napari_msi2hist.cli import main


@pytest.fixture
def spy(monkeypatch):
    """Wrap ``module.name`` (a generator function); returns the list of callers' keyword sets."""
    calls = {}

    def _spy(module, name):
        real = getattr(module, name)
        calls[name] = []

        def wrapper(*a, **kw):
            calls[name].append((a, kw))
            return (yield from real(*a, **kw))

        monkeypatch.setattr(module, name, wrapper)
        return calls[name]

    return _spy


def test_peaks_cli_and_widget_share_the_peaks_workflow(
    make_napari_viewer, open_phantom, qtbot, phantom_dir, tmp_path, spy, click
):
    from napari_msi2hist.widgets.peaks import PeakSelectionWidget
    from napari_msi2hist.workflows import peaks

    calls = spy(peaks, "iter_peaks")
    out = tmp_path / "ions.ome.tif"
    assert (
        main(
            [
                "peaks",
                str(phantom_dir / "msi.imzML"),
                "--n-peaks",
                "4",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert len(calls) == 1 and out.is_file()
    viewer = make_napari_viewer()
    open_phantom(viewer)
    w = PeakSelectionWidget(viewer)
    w.n_peaks.setValue(4)
    click(w.pick_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120000)
    click(w.add_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120000)
    assert len(calls) == 2, "the widget's Add button did not run workflows.peaks.iter_peaks"


def test_synthesize_cli_and_widget_share_the_synthesis_workflow(
    make_napari_viewer,
    open_phantom,
    qtbot,
    phantom_dir,
    tmp_path,
    trained_checkpoint,
    spy,
    click,
):
    from napari_msi2hist.widgets.synthesis import SynthesisWidget
    from napari_msi2hist.workflows import synthesize

    calls = spy(synthesize, "iter_synthesize_job")
    out = tmp_path / "synth.ome.tif"
    assert (
        main(
            [
                "synthesize",
                str(phantom_dir / "msi.imzML"),
                "--model",
                str(trained_checkpoint),
                "--out",
                str(out),
                "--tile",
                "64",
                "--quiet",
            ]
        )
        == 0
    )
    assert len(calls) == 1 and out.is_file()
    viewer = make_napari_viewer()
    open_phantom(viewer)
    w = SynthesisWidget(viewer)
    w.ckpt_box.setCurrentText(str(trained_checkpoint))
    w.tile.setValue(64)
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120000)
    assert w.last_result is not None, w.status.text()
    assert len(calls) == 2, "the Synthesise button did not run the synthesis workflow"


def test_register_cli_and_widget_share_the_register_job(
    make_napari_viewer, open_phantom, qtbot, phantom_dir, tmp_path, spy, click, monkeypatch
):
    from napari_msi2hist.widgets.registration import RegisterWidget
    from napari_msi2hist.workflows import register

    # the widget's job runs in a child process by default, where this spy cannot see it: run it
    # in the worker thread here (tests/core/test_in_process.py shows the child gives the same)
    monkeypatch.setenv("MSI2HIST_JOB_PROCESS", "0")
    calls = spy(register, "iter_register_job")
    out = tmp_path / "reg"
    rc = main(
        [
            "register",
            "--fixed",
            str(phantom_dir / "he.ome.tif"),
            "--moving",
            str(phantom_dir / "msi.imzML"),
            "--route",
            "direct",
            "--out",
            str(out),
            "--allow-failed",
            "--quiet",
        ]
    )
    assert rc == 0 and (out / "transform.json").is_file()
    assert len(calls) == 1 and calls[0][0][1].route == "direct"
    viewer = make_napari_viewer()
    open_phantom(viewer)
    w = RegisterWidget(viewer)
    w.moving_box.setCurrentText("msi TIC")
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300000)
    assert w.result is not None, w.status.text()
    assert len(calls) == 2, "the Register button did not run workflows.register.iter_register_job"
    assert calls[1][0][1].route == "direct" and Path(str(out)).is_dir()


def test_superres_cli_and_widget_share_the_superres_job(
    make_napari_viewer, open_phantom, qtbot, small_phantom, tmp_path, spy, click
):
    from napari_msi2hist.widgets.crossmodal import SuperResWidget
    from napari_msi2hist.workflows import superres

    calls = spy(superres, "iter_superres_job")
    p = small_phantom.paths
    out = tmp_path / "sr"
    args = [
        "superres",
        "--imzml",
        p["imzml"],
        "--he",
        p["he"],
        "--out",
        str(out),
        "--method",
        "bicubic",
        "--landmarks-msi",
        p["landmarks_msi"],
        "--landmarks-he",
        p["landmarks_he"],
    ]
    assert main([*args, "--n-peaks", "2", "--quiet"]) == 0
    assert len(calls) == 1
    viewer = make_napari_viewer()
    open_phantom(viewer, aligned=True)
    w = SuperResWidget(viewer)
    w.method.setCurrentText("bicubic")
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300_000)
    assert w.result is not None, w.status.text()
    assert len(calls) == 2, "the Super-resolve button did not run workflows.superres"


def test_train_cli_and_widget_share_the_train_job(
    make_napari_viewer, open_phantom, qtbot, phantom_entries, tmp_path, spy, click
):
    import yaml

    from napari_msi2hist.widgets.training import TrainWidget
    from napari_msi2hist.workflows import train

    calls = spy(train, "iter_train_job")
    keys = ("name", "imzml", "he", "align", "split")
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(
        yaml.safe_dump({"samples": [{k: e[k] for k in keys} for e in phantom_entries]})
    )
    small = ["--ngf", "4", "--depth", "4", "--ndf", "4", "--patch", "32", "--batch-size", "2"]
    args = ["train", "--pairs", str(pairs), "--out", str(tmp_path / "run"), "--max-steps", "2"]
    assert main([*args, *small, "--n-peaks", "4", "--quiet"]) == 0
    assert len(calls) == 1
    viewer = make_napari_viewer()
    open_phantom(viewer, aligned=True)
    w = TrainWidget(viewer)
    w.steps.setValue(2)
    w.device.setCurrentText("cpu")
    w.out_dir.setText(str(tmp_path / "wrun"))
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300000)
    assert w.last_checkpoint, w.status.text()
    assert len(calls) == 2, "the Train button did not run workflows.train.iter_train_job"


def test_predict_classify_cli_and_widget_share_the_predict_job(
    make_napari_viewer, open_phantom, qtbot, phantom_entries, tmp_path, spy, click
):
    import numpy as np
    import tifffile
    import yaml

    from napari_msi2hist.io.histology import read_histology
    from napari_msi2hist.widgets.crossmodal import PredictWidget
    from napari_msi2hist.workflows import predict

    calls = spy(predict, "iter_predict_job")
    samples = []
    for e in phantom_entries[:2]:
        mask = np.zeros(np.asarray(read_histology(e["he"]).levels[0]).shape[:2], np.uint8)
        mask[:, : mask.shape[1] // 2] = 1  # the left half of the H&E
        label = tmp_path / f"{e['name']}_label.tif"
        tifffile.imwrite(label, mask)
        samples.append({**{k: e[k] for k in ("name", "imzml", "he", "align")}, "label": str(label)})
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(yaml.safe_dump({"samples": samples}))
    common = ["--pairs", str(pairs), "--n-peaks", "5", "--n-components", "2", "--quiet"]
    assert main(["predict-msi", *common, "--out", str(tmp_path / "pred")]) == 0
    assert len(calls) == 1 and calls[0][0][1].regress and not calls[0][0][1].label_from
    assert main(["classify", *common, "--from", "he", "--out", str(tmp_path / "cls")]) == 0
    assert len(calls) == 2 and calls[1][0][1].label_from == ("he",)
    assert (tmp_path / "cls" / "biomarkers.csv").is_file()
    viewer = make_napari_viewer()
    open_phantom(viewer, aligned=True)
    w = PredictWidget(viewer)
    w.n_peaks.setValue(5)
    w.n_comp.setValue(2)
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300_000)
    assert w.result is not None, w.status.text()
    assert len(calls) == 3, "the Predict button did not run workflows.predict.iter_predict_job"


def test_export_elastix_cli_and_widget_share_the_export_job(
    make_napari_viewer, qtbot, phantom_dir, tmp_path, spy, click
):
    from napari_msi2hist.widgets.export import ExportWidget
    from napari_msi2hist.workflows import export

    calls = spy(export, "iter_export_elastix")
    reg = tmp_path / "reg"
    args = ["register", "--fixed", str(phantom_dir / "he.ome.tif"), "--moving"]
    args += [str(phantom_dir / "msi.imzML"), "--route", "direct", "--out", str(reg)]
    assert main([*args, "--allow-failed", "--quiet"]) == 0
    transform = reg / "transform.json"
    out = tmp_path / "elx"
    assert (
        main(["export-elastix", "--transform", str(transform), "--out", str(out), "--quiet"]) == 0
    )
    assert len(calls) == 1 and (out / "TransformParameters.0.txt").is_file()
    w = ExportWidget(make_napari_viewer())
    w.edits["transform"].setText(str(transform))
    w.edits["he"].setText(str(phantom_dir / "he.ome.tif"))
    w.edits["out"].setText(str(tmp_path / "wexp"))
    (tmp_path / "wexp").mkdir()
    click(w.elx_export_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert (tmp_path / "wexp" / "elastix" / "TransformParameters.0.txt").is_file(), w.status.text()
    assert len(calls) == 2, "the Export elastix button did not run workflows.export"


@pytest.fixture
def truth_transform(truth_affine, tmp_path):
    """The phantom's true linear map saved as a registration result (transform.json), so the
    interop commands need no registration run."""
    from napari_msi2hist.registration.transforms import Transform

    path = tmp_path / "transform.json"
    Transform.from_moving_to_fixed_matrix(truth_affine).save(path, tmp_path / "transform.h5")
    return path


def test_spatialdata_cli_and_widget_share_the_export_and_read_jobs(
    make_napari_viewer, qtbot, phantom_dir, truth_transform, tmp_path, spy, click
):
    pytest.importorskip("spatialdata", reason='needs the extra: pip install ".[spatialdata]"')
    from napari_msi2hist.widgets.export import ExportWidget
    from napari_msi2hist.workflows import export

    exports = spy(export, "iter_export_spatialdata")
    reads = spy(export, "iter_read_spatialdata")
    he, msi = str(phantom_dir / "he.ome.tif"), str(phantom_dir / "msi.imzML")
    store = tmp_path / "cli.zarr"
    args = ["export-spatialdata", "--he", he, "--msi", msi, "--transform", str(truth_transform)]
    assert main([*args, "--mz", "400.5,550", "--out", str(store), "--quiet"]) == 0
    assert len(exports) == 1 and store.is_dir()
    back = tmp_path / "cli_back"
    assert main(["import-spatialdata", str(store), "--out", str(back), "--quiet"]) == 0
    assert len(reads) == 1 and (back / "transform.json").is_file()
    viewer = make_napari_viewer()
    w = ExportWidget(viewer)
    w.edits["he"].setText(he)
    w.edits["msi"].setText(msi)
    w.edits["transform"].setText(str(truth_transform))
    w.edits["out"].setText(str(tmp_path / "wexp"))
    (tmp_path / "wexp").mkdir()
    w.mz.setText("400.5, 550")
    click(w.sd_export_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert (tmp_path / "wexp" / "section.zarr").is_dir(), w.status.text()
    assert len(exports) == 2, "the Export SpatialData button did not run workflows.export"
    cli_cfg, widget_cfg = exports[0][0][0], exports[1][0][0]
    assert cli_cfg.mz == widget_cfg.mz == (400.5, 550.0)
    assert cli_cfg.transform == widget_cfg.transform == str(truth_transform)
    w.edits["store"].setText(str(store))  # the CLI's store, read by the widget
    click(w.sd_import_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert "imported cli" in w.status.text(), w.status.text()
    assert len(reads) == 2, "the Import SpatialData button did not run workflows.export"


QUPATH_TUMOUR = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[40, 40], [120, 40], [120, 110], [40, 110], [40, 40]]],
            },
            "properties": {"classification": {"name": "Tumor"}},
        }
    ],
}


def test_geojson_cli_and_widget_share_the_annotation_jobs(
    make_napari_viewer, qtbot, phantom_dir, truth_transform, tmp_path, spy, click
):
    import json

    import numpy as np
    import tifffile

    from napari_msi2hist.interop.geojson import read_geojson
    from napari_msi2hist.widgets.export import ExportWidget
    from napari_msi2hist.workflows import export

    to_msi = spy(export, "iter_annotations_to_msi")
    to_he = spy(export, "iter_msi_regions_to_geojson")
    qupath = tmp_path / "qupath.geojson"
    qupath.write_text(json.dumps(QUPATH_TUMOUR))
    he, msi = str(phantom_dir / "he.ome.tif"), str(phantom_dir / "msi.imzML")
    common = ["--transform", str(truth_transform), "--he", he, "--msi", msi, "--quiet"]
    cli_dir = tmp_path / "cli_msi"
    assert (
        main(["annotations-to-msi", "--geojson", str(qupath), "--out", str(cli_dir), *common]) == 0
    )
    assert len(to_msi) == 1
    cli_geojson = tmp_path / "cli_he.geojson"
    regions = ["--regions", str(cli_dir / "labels_msi.tif"), "--out", str(cli_geojson)]
    assert main(["regions-to-geojson", *regions, *common]) == 0
    assert len(to_he) == 1 and cli_geojson.is_file()
    viewer = make_napari_viewer()
    w = ExportWidget(viewer)
    w.edits["he"].setText(he)
    w.edits["msi"].setText(msi)
    w.edits["transform"].setText(str(truth_transform))
    w.edits["annotations"].setText(str(qupath))
    w.edits["out"].setText(str(tmp_path / "wexp"))
    (tmp_path / "wexp").mkdir()
    click(w.gj_import_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert len(to_msi) == 2, "the GeoJSON -> MSI button did not run workflows.export"
    lab = viewer.layers["annotation classes (MSI)"].data
    cli_lab = tifffile.imread(cli_dir / "labels_msi.tif")
    assert (lab > 0).sum() > 0
    np.testing.assert_array_equal(lab, cli_lab)  # one job, one result
    w.regions_box.setCurrentText("annotation classes (MSI)")
    click(w.gj_export_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert len(to_he) == 2, "the MSI regions -> GeoJSON button did not run workflows.export"
    out = tmp_path / "wexp" / "annotation classes (MSI)_he.geojson"
    assert out.is_file(), w.status.text()
    a, b = read_geojson(cli_geojson), read_geojson(out)
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(a[0].polygons[0][0], b[0].polygons[0][0])


def test_landmark_fit_cli_and_widget_share_the_landmark_transform(
    make_napari_viewer, open_phantom, qtbot, small_phantom, tmp_path, monkeypatch, click
):
    """``register --landmarks-use fit`` and the Register widget's "Fit from landmarks" fit one
    affine the same way (``registration.alignment.landmark_transform``), to the same matrix."""
    import numpy as np

    from napari_msi2hist.registration import alignment
    from napari_msi2hist.registration.transforms import Transform
    from napari_msi2hist.widgets.registration import RegisterWidget

    real, calls = alignment.landmark_transform, []

    def wrapper(*a, **kw):
        calls.append(real(*a, **kw))
        return calls[-1]

    monkeypatch.setattr(alignment, "landmark_transform", wrapper)
    p, out = small_phantom.paths, tmp_path / "reg"
    args = ["register", "--fixed", p["he"], "--moving", p["imzml"], "--out", str(out)]
    args += ["--route", "direct", "--landmarks-use", "fit", "--quiet"]
    args += ["--landmarks-fixed", p["landmarks_he"], "--landmarks-moving", p["landmarks_msi"]]
    assert main(args) == 0
    assert len(calls) == 1
    cli = Transform.load(out / "transform.json")
    viewer = make_napari_viewer()
    open_phantom(viewer)
    w = RegisterWidget(viewer)
    w.moving_box.setCurrentText("msi TIC")
    click(w.lm_btn)
    fixed, moving = w.landmark_layers()
    fixed.data = small_phantom.landmarks_he_um.copy()
    moving.data = small_phantom.landmarks_msi_um.copy()
    click(w.fit_btn)
    assert len(calls) == 2, "Fit from landmarks did not run registration.alignment"
    np.testing.assert_allclose(
        calls[1].linear_moving_to_fixed_yx(), cli.linear_moving_to_fixed_yx(), atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(viewer.layers["msi TIC"].affine.affine_matrix), cli.napari_affine(), atol=1e-6
    )
