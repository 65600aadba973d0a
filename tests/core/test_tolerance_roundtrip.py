"""One m/z tolerance: the same options on every command, and it survives a file round trip."""

import numpy as np
import pytest

from napari_msi2hist.cli import build_parser, main
from napari_msi2hist.io.histology import read_histology
from napari_msi2hist.msi.ion_images import DEFAULT_TOLERANCE, Tolerance

EXTRACTING = ["peaks", "predict-msi", "classify", "superres", "export-spatialdata"]


@pytest.mark.parametrize("text", ["10 ppm", "2.5 ppm", "0.01 Da"])
def test_tolerance_text_round_trip(text):
    t = Tolerance.parse(text)
    assert Tolerance.parse(str(t)) == t
    assert Tolerance.coerce(t.as_dict()) == t == Tolerance.coerce((t.value, t.unit))


def test_bad_tolerance_text_is_refused():
    with pytest.raises(ValueError, match="expected e.g."):
        Tolerance.parse("ten ppm")


def test_every_extracting_command_takes_the_same_tolerance_flags():
    ap = build_parser()
    sub = next(a for a in ap._actions if a.dest == "command").choices
    for name in EXTRACTING:
        flags = {o for a in sub[name]._actions for o in a.option_strings}
        assert {"--tol-ppm", "--tol-da"} <= flags, name


def test_peaks_ome_tiff_keeps_tolerance_and_normalisation(small_phantom, tmp_path):
    out = tmp_path / "ions.ome.tif"
    args = ["peaks", small_phantom.paths["imzml"], "--n-peaks", "3", "--tol-da", "0.02"]
    assert main([*args, "--norm", "rms", "--out", str(out), "--quiet"]) == 0
    img = read_histology(out)
    assert Tolerance.parse(img.annotations["tolerance"]) == Tolerance(0.02, "da")
    assert img.annotations["normalisation"] == "rms"
    assert img.pixel_size_um is not None and np.asarray(img.levels[0]).shape[0] == 3
    # the default, when no flag is given, is the one default
    out2 = tmp_path / "ions2.ome.tif"
    assert (
        main(
            ["peaks", small_phantom.paths["imzml"], "--n-peaks", "2", "--out", str(out2), "--quiet"]
        )
        == 0
    )
    assert Tolerance.parse(read_histology(out2).annotations["tolerance"]) == DEFAULT_TOLERANCE


def test_ome_metadata_with_a_doctype_is_not_parsed(tmp_path):
    import tifffile

    p = tmp_path / "evil.ome.tif"
    tifffile.imwrite(p, np.zeros((4, 4), np.uint8))
    evil = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><OME><Image><Pixels '
        'PhysicalSizeX="&a;" PhysicalSizeY="1"/></Image></OME>'
    )
    from napari_msi2hist.io.histology import _ome_pixel_size, _ome_root

    assert _ome_root(evil) is None and _ome_pixel_size(evil) is None
