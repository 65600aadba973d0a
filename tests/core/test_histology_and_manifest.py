import importlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

import napari_msi2hist
from napari_msi2hist.io._napari_reader import get_reader
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
    # a grey-scale TIFF is left to other readers
    tifffile.imwrite(tmp_path / "g.tif", np.zeros((8, 8), np.uint16))
    assert get_reader(str(tmp_path / "g.tif"))(str(tmp_path / "g.tif")) is None
