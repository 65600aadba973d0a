"""The CLI contract: names, options, JSON keys, OME-TIFF outputs, one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_msi2hist.cli import main
from napari_msi2hist.io.histology import read_histology
from napari_msi2hist.io.imzml import ImzMLFile


def test_info_json(shared_data, capsys):
    assert main(["info", str(shared_data / "imzml" / "Example_Processed.imzML"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) == {
        "mode",
        "n_spectra",
        "shape_yx",
        "pixel_size_um",
        "mz_range",
        "uuid",
        "duplicate_pixels",
    }
    assert d["mode"] == "processed" and d["n_spectra"] == 9 and d["shape_yx"] == [3, 3]
    assert d["pixel_size_um"] == [100.0, 100.0] and d["mz_range"][0] == pytest.approx(
        100.0833, abs=1e-3
    )


def test_peaks_with_mz_list_matches_manual_sum(shared_data, tmp_path):
    f = shared_data / "imzml" / "Example_Continuous.imzML"
    out = tmp_path / "s.ome.tif"
    assert (
        main(
            [
                "peaks",
                str(f),
                "--mz",
                "151.9,328.9",
                "--tol-da",
                "0.3",
                "--norm",
                "none",  # the default is tic (the bundled model's); the raw sum is compared here
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    img = read_histology(out)
    assert img.channel_names == ["mz=151.9000", "mz=328.9000"]
    assert img.pixel_size_um == (100.0, 100.0)
    with ImzMLFile(f) as imz:
        for i in range(imz.n_spectra):
            mz, it = imz.getspectrum(i)
            x, y = imz.coords_xyz[i, :2]
            for c, m in enumerate([151.9, 328.9]):
                sel = (mz >= m - 0.3) & (mz <= m + 0.3)
                assert img.data[c, y - 1, x - 1] == pytest.approx(
                    float(it[sel].astype(np.float64).sum()), rel=1e-6
                )
    with tifffile.TiffFile(out) as tf:
        assert tf.is_ome and tf.series[0].dtype == np.float32


def test_peaks_top_n_and_norm(small_phantom, tmp_path):
    out = tmp_path / "p.ome.tif"
    assert (
        main(
            [
                "peaks",
                small_phantom.paths["imzml"],
                "--n-peaks",
                "8",
                "--norm",
                "tic",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    img = read_histology(out)
    assert img.data.shape[0] == 8
    planted = np.array(sorted(m for v in small_phantom.peaks.values() for m in v))
    picked = np.array([float(n[3:]) for n in img.channel_names])
    assert all(np.min(np.abs(planted - m)) < 1.0 for m in picked)


def test_errors_are_one_line(shared_data, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_msi2hist.cli",
            "info",
            str(shared_data / "imzml" / "coords_only_no_ibd.imzML"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "coords_only_no_ibd.ibd is missing" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_msi2hist.cli",
            "--debug",
            "info",
            str(shared_data / "imzml" / "coords_only_no_ibd.imzML"),
        ],
        capture_output=True,
        text=True,
    )
    assert "Traceback" in r.stderr
    # ... and after the command, where users type it
    bad = str(shared_data / "imzml" / "coords_only_no_ibd.imzML")
    with pytest.raises(Exception, match="coords_only_no_ibd.ibd is missing"):
        main(["info", bad, "--debug"])
    assert main(["info", bad]) == 1  # without it: one line, exit 1


def test_peaks_refuses_to_overwrite_input(small_phantom, capsys):
    f = small_phantom.paths["imzml"]
    before = open(f, "rb").read()
    assert main(["peaks", f, "--mz", "500", "--out", f]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert open(f, "rb").read() == before


def test_phantom_command(tmp_path):
    assert (
        main(["phantom", str(tmp_path / "ph"), "--seed", "4", "--mode", "processed", "--quiet"])
        == 0
    )
    names = sorted(p.name for p in (tmp_path / "ph").iterdir())
    assert names == [
        ".msi2hist-output.json",  # the manifest: what --overwrite may replace
        "he.ome.tif",
        "landmarks_he.csv",
        "landmarks_msi.csv",
        "msi.ibd",
        "msi.imzML",
        "truth.json",
    ]
    # a second run does not silently overwrite
    assert main(["phantom", str(tmp_path / "ph"), "--quiet"]) == 1


def test_demo(tmp_path, capsys):
    """The README's main job: phantom -> peaks -> synthesis -> registration by both routes."""
    assert main(["demo", str(tmp_path / "d")]) == 0
    out, err = capsys.readouterr()
    # each progress bar says which step (and route) it belongs to, in order
    steps = [
        "1/4 phantom",
        "2/4 peaks",
        "3/4 synthetic H&E",
        "4/4 registration, synthesis route",
        "4/4 registration, direct route",
    ]
    at = [(out + err).find(s) for s in steps]
    assert all(a >= 0 for a in at) and at == sorted(at), dict(zip(steps, at, strict=True))
    assert "verdict (synthesis route):" in out and "verdict (direct route):" in out
    d = tmp_path / "d"
    for f in (
        "synthetic_he.ome.tif",
        "registered_msi.ome.tif",
        "transform_synthesis.json",
        "transform_synthesis.h5",
        "transform_direct.json",
        "report.json",
        "report.html",
        "fig_synthesis.png",
        "fig_checkerboards.png",
        "fig_tre.png",
    ):
        assert (d / f).is_file(), f
    rep = json.loads((d / "report.json").read_text())
    assert rep["peaks"]["n"] == 50
    for route in ("synthesis", "direct"):
        # both routes must at least beat no registration at all (rotation and shift are large)
        assert rep["registration"][route]["tre_median_msi_px"] < 3.0
    assert 0 < rep["synthesis_vs_truth"]["ssim"] <= 1
    reg = read_histology(d / "registered_msi.ome.tif")
    assert reg.data.shape[0] == 50 and reg.pixel_size_um == (4.0, 4.0)
    # the report explains its numbers, says what the model knows and lists every file it names
    html = (d / "report.html").read_text()
    for term in ("mutual information", "structural similarity", "target registration error"):
        assert term in html, term
    from html import escape

    assert "tissue Dice before" in html  # a new user found no Dice in the page
    for route in ("synthesis", "direct"):
        for reason in rep["registration"][route]["verdict_reasons"]:
            assert escape(reason) in html, reason
        vd = rep["registration"][route]["verdict_dice"]  # the Dice the verdict judged, shown
        assert f"{vd['before']:.3f} &rarr; {vd['after']:.3f}" in html and vd["image"] in html
    assert "50 m/z from" in rep["model"]["knows"] and rep["model"]["domain_warnings"] == []
    for name in rep["outputs"]:
        for f in name.replace(",", " ").split():
            f = f.split("/.")[0].rstrip("/")  # "transform_direct.json/.h5" -> the .json
            assert (d / f).exists(), f
            assert f"<code>{name}</code>" in html


def test_bundled_demo_checkpoint():
    from napari_msi2hist.models.checkpoint import demo_checkpoint_path, load_checkpoint

    p = demo_checkpoint_path()
    assert p.stat().st_size < 10 * 2**20
    ck = load_checkpoint("demo")
    assert ck.contract.n_channels == 50 and ck.training["made_by"] == "scripts/train_demo_model.py"
    assert ck.training["test_metrics"]["mean"]["ssim"] > 0.5


def test_synthesize_command(small_phantom, trained_checkpoint, tmp_path):
    from napari_msi2hist.models.contract import output_grid
    from napari_msi2hist.models.inference import InferenceOptions
    from napari_msi2hist.models.synthesis import synthesize_imzml

    out = tmp_path / "s.ome.tif"
    rc = main(
        [
            "synthesize",
            small_phantom.paths["imzml"],
            "--model",
            str(trained_checkpoint),
            "--out",
            str(out),
            "--tile",
            "64",
            "--overlap",
            "16",
            "--quiet",
        ]
    )
    assert rc == 0
    img = read_histology(out)
    assert img.rgb and img.pixel_size_um == (10.0, 10.0)
    assert img.data.shape[:2] == output_grid(small_phantom.msi_shape_yx, (20.0, 20.0), 10.0)
    direct = synthesize_imzml(
        small_phantom.paths["imzml"], trained_checkpoint, InferenceOptions(tile=64, overlap=16)
    )
    assert np.array_equal(direct.rgb, img.data)
