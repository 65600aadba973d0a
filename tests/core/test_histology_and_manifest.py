import importlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

import napari_msi2hist
from napari_msi2hist._reader import get_reader
from napari_msi2hist.io.histology import (
    HistologyError,
    read_histology,
    to_uint8_rgb,
    write_ome_tiff,
)


def test_ome_roundtrip_pyramid_and_lazy(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (1200, 900, 3), dtype=np.uint8)
    p = write_ome_tiff(tmp_path / "a.ome.tif", rgb, (0.5, 0.25), pyramid=True)
    eager = read_histology(p, lazy=False)
    lazy = read_histology(p, lazy=True)
    assert eager.pixel_size_um == (0.5, 0.25) and eager.rgb and eager.multiscale
    assert np.array_equal(eager.data, rgb)
    assert np.array_equal(np.asarray(lazy.data[100:200, 300:400]), rgb[100:200, 300:400])
    assert lazy.levels[1].shape == (600, 450, 3)


def test_svs_mpp_and_missing_pixel_size(tmp_path):
    rgb = np.zeros((64, 64, 3), np.uint8)
    tifffile.imwrite(
        tmp_path / "s.svs",
        rgb,
        description="Aperio Image Library v12\n64x64 |AppMag = 20|MPP = 0.4990",
    )
    img = read_histology(tmp_path / "s.svs")
    assert img.pixel_size_um == (0.499, 0.499) and not img.warnings
    tifffile.imwrite(tmp_path / "plain.tif", rgb)
    img = read_histology(tmp_path / "plain.tif")
    assert img.pixel_size_um is None and "no pixel size" in img.warnings[0]


def test_bad_image_errors(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(HistologyError, match=r"bad\.tif: cannot read image"):
        read_histology(tmp_path / "bad.tif")


def test_uint16_is_rescaled_not_clipped():
    a = np.array([[[0, 32768, 65535]]], dtype=np.uint16)
    assert to_uint8_rgb(a).tolist() == [[[0, 128, 255]]]


def test_writes_are_atomic_and_leave_no_temp(tmp_path):
    write_ome_tiff(tmp_path / "x.ome.tif", np.zeros((2, 8, 8), np.float32), (1, 1))
    assert [p.name for p in tmp_path.iterdir()] == ["x.ome.tif"]


def test_manifest_python_names_import():
    man = Path(napari_msi2hist.__file__).parent / "napari.yaml"
    d = yaml.safe_load(man.read_text())
    for cmd in d["contributions"]["commands"]:
        mod, _, attr = cmd["python_name"].partition(":")
        if ".widgets." in mod:
            pytest.importorskip("qtpy")
        assert callable(getattr(importlib.import_module(mod), attr))


def test_reader_contract(shared_data, small_phantom, tmp_path):
    assert get_reader(str(tmp_path / "x.csv")) is None
    layers = get_reader(small_phantom.paths["imzml"])(small_phantom.paths["imzml"])
    data, kw, kind = layers[0]
    assert (
        kind == "image"
        and kw["scale"] == (20.0, 20.0)
        and kw["metadata"]["msi2hist"]["kind"] == "msi"
    )
    assert data.shape == tuple(small_phantom.msi_shape_yx)
    he = get_reader(small_phantom.paths["he"])(small_phantom.paths["he"])
    assert he[0][1]["rgb"] and he[0][1]["scale"] == (4.0, 4.0)
    # a single-channel image (a MALDI export) is an MSI layer with its pixel size, or with none
    g = np.arange(64, dtype=np.uint16).reshape(8, 8)
    tifffile.imwrite(tmp_path / "g.tif", g)
    with pytest.warns(UserWarning, match="g.tif: no pixel size in the file; shown at 1 unit"):
        ((data, kw, kind),) = get_reader(str(tmp_path / "g.tif"))(str(tmp_path / "g.tif"))
    md = kw["metadata"]["msi2hist"]
    assert kind == "image" and md["kind"] == "msi" and md["pixel_size_um"] is None
    np.testing.assert_array_equal(data, g.astype(np.float32))
    from napari_msi2hist.io.histology import write_ome_tiff

    write_ome_tiff(tmp_path / "g2.ome.tif", g.astype(np.float32), (12.5, 12.5))
    ((_, kw2, _),) = get_reader(str(tmp_path / "g2.ome.tif"))(str(tmp_path / "g2.ome.tif"))
    assert kw2["scale"] == (12.5, 12.5) and kw2["metadata"]["msi2hist"]["pixel_size_um"] == [
        12.5,
        12.5,
    ]
    # a multi-channel stack without m/z is left to other readers
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((5, 8, 8), np.uint16))
    assert get_reader(str(tmp_path / "s.tif"))(str(tmp_path / "s.tif")) is None


def test_ion_stack_layer_keeps_its_extraction(small_phantom, tmp_path):
    """peaks -> OME-TIFF -> the plugin reader: m/z, tolerance and normalisation survive."""
    from napari_msi2hist.cli import main

    out = tmp_path / "ions.ome.tif"
    args = ["peaks", small_phantom.paths["imzml"], "--n-peaks", "3", "--tol-ppm", "25"]
    assert main([*args, "--norm", "median", "--out", str(out), "--quiet"]) == 0
    ((data, kw, _),) = get_reader(str(out))(str(out))
    md = kw["metadata"]["msi2hist"]
    assert md["kind"] == "ion_stack" and len(md["mz"]) == 3 == data.shape[0]
    assert md["tolerance"] == {"value": 25.0, "unit": "ppm"} and md["normalisation"] == "median"


def test_imzml_without_pixel_size_warns_and_assumes_nothing(small_phantom, tmp_path):
    import re
    import shutil

    src = Path(small_phantom.paths["imzml"])
    text = src.read_text()
    stripped = re.sub(r"<cvParam[^>]*IMS:100004[67][^>]*/>", "", text)
    assert stripped != text
    dst = tmp_path / "nopx.imzML"
    dst.write_text(stripped)
    shutil.copy(src.with_suffix(".ibd"), dst.with_suffix(".ibd"))
    with pytest.warns(UserWarning, match="nopx.imzML: no pixel size in the file") as rec:
        ((data, kw, _),) = get_reader(str(dst))(str(dst))
    assert not any("assuming" in str(r.message) for r in rec)
    md = kw["metadata"]["msi2hist"]
    assert md["pixel_size_um"] is None and md["pixel_size_assumed"] is True
    assert data.shape == tuple(small_phantom.msi_shape_yx)
