"""Typed configs (config.py): one m/z tolerance with the same options on every command, surviving a
file round trip; pairs entries; training defaults shared by the CLI and the config."""

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
    from napari_msi2hist.io._tiff_metadata import ome_pixel_size, ome_root

    assert ome_root(evil) is None and ome_pixel_size(evil) is None


def test_pairs_entries_are_typed_and_read_like_mappings(tmp_path):
    from napari_msi2hist.config import PairEntry
    from napari_msi2hist.models.datasets import read_pairs_yaml

    p = tmp_path / "pairs.yaml"
    p.write_text("samples:\n  - {name: a, imzml: a.imzML, he: a.tif, moving_pixel_um: 20}\n")
    (e,) = read_pairs_yaml(p)
    assert isinstance(e, PairEntry) and e.moving_pixel_um == 20.0 and e["split"] == "train"
    assert e.get("label") is None and "label" not in e and e.imzml == str(tmp_path / "a.imzML")
    e["fixed_pixel_um"] = 0.5
    assert e.fixed_pixel_um == 0.5
    with pytest.raises(KeyError):
        e["pixel"] = 1.0
    with pytest.raises(ValueError, match="split"):
        PairEntry("b", "b.imzML", "b.tif", split="holdout")


def test_cli_training_defaults_are_the_config_defaults():
    from napari_msi2hist.config import TrainConfig

    args = build_parser().parse_args(["train", "--pairs", "p.yaml", "--out", "o"])
    d = TrainConfig()
    for k in ("max_steps", "lambda_l1", "lr", "batch_size", "patch", "ngf", "depth", "ndf", "seed"):
        assert getattr(args, k) == getattr(d, k), k


def test_extraction_config_refuses_unknown_normalisation():
    from napari_msi2hist.config import ExtractionConfig

    assert ExtractionConfig().tolerance == DEFAULT_TOLERANCE
    with pytest.raises(ValueError, match="normalisation"):
        ExtractionConfig(norm="l2")
