"""Every image the tool writes is readable by every command that takes an image (issue 13).

One phantom goes through each command that writes an image (peaks, synthesize, register by both
routes, superres); then each output is fed to the plugin reader, to ``evaluate`` (as prediction,
where it has 1 or 3 channels), to ``register --fixed`` (3-channel outputs) and to
``register --moving`` (stacks of at most 16 channels and synthetic H&E). A failure names the pair.
"""

from pathlib import Path

import numpy as np
import pytest

from napari_msi2hist._reader import get_reader
from napari_msi2hist.cli import main
from napari_msi2hist.io.histology import read_histology


@pytest.fixture(scope="module")
def outputs(small_phantom, trained_checkpoint, tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    p = small_phantom.paths
    q = ["--quiet"]
    assert main(["peaks", p["imzml"], "--n-peaks", "4", "--out", str(d / "ions.ome.tif"), *q]) == 0
    syn = d / "synth.ome.tif"
    args = ["synthesize", p["imzml"], "--model", str(trained_checkpoint), "--out", str(syn)]
    assert main([*args, "--tile", "64", *q]) == 0
    for route in ("synthesis", "direct"):
        args = ["register", "--fixed", p["he"], "--moving", p["imzml"], "--route", route]
        args += ["--model", str(trained_checkpoint), "--out", str(d / f"reg_{route}")]
        assert main([*args, "--allow-failed", *q]) == 0
    args = ["superres", "--imzml", p["imzml"], "--he", p["he"], "--out", str(d / "sr")]
    args += ["--landmarks-msi", p["landmarks_msi"], "--landmarks-he", p["landmarks_he"]]
    assert main([*args, "--n-peaks", "2", "--method", "bicubic", *q]) == 0
    return {
        "ions": d / "ions.ome.tif",
        "synthetic": syn,
        "registered (synthesis)": d / "reg_synthesis" / "registered.ome.tif",
        "registered (direct)": d / "reg_direct" / "registered.ome.tif",
        "superres": d / "sr" / "superres.ome.tif",
        "superres guide": d / "sr" / "guide.ome.tif",
    }


def _channels(path: Path) -> int:
    a = np.asarray(read_histology(path).levels[0])
    return 3 if a.ndim == 3 and a.shape[-1] == 3 else (1 if a.ndim == 2 else a.shape[0])


def test_every_output_opens_in_the_plugin_reader_with_its_pixel_size(outputs):
    for name, path in outputs.items():
        reader = get_reader(str(path))
        assert reader is not None, name
        layers = reader(str(path))
        assert layers, f"{name}: the plugin returned no layer"
        kw = layers[0][1]
        assert kw["metadata"]["msi2hist"]["pixel_size_um"] is not None, name


def test_every_rgb_like_output_is_a_valid_evaluate_prediction_and_fixed_image(
    outputs, small_phantom, tmp_path, capsys
):
    he = small_phantom.paths["he"]
    for name, path in outputs.items():
        n = _channels(path)
        if n not in (1, 3):
            continue
        truth = read_histology(path)
        # evaluate against itself: every metric is defined and perfect
        assert main(["evaluate", "--pred", str(path), "--truth", str(path), "--json"]) == 0, name
        res = capsys.readouterr().out
        assert '"ssim": 1.0' in res or '"ssim": 0.99' in res, (name, res)
        if n != 3:  # a single ion image is no H&E: evaluate reads it, register needs RGB
            continue
        # and as the fixed image of a registration (the moving: the phantom's own H&E)
        out = tmp_path / name.replace(" ", "_").replace("(", "").replace(")", "")
        args = ["register", "--fixed", str(path), "--moving", he, "--route", "synthesis"]
        args += ["--out", str(out), "--allow-failed", "--quiet", "--rotation-search", "0"]
        rc = main(args)
        err = capsys.readouterr().err
        assert rc == 0 and (out / "transform.json").is_file(), (name, err)
        assert truth.pixel_size_um is not None


def test_every_stack_output_is_a_valid_moving_image_of_the_direct_route(
    outputs, small_phantom, tmp_path, capsys
):
    for name, path in outputs.items():
        img = read_histology(path)
        if img.rgb or _channels(path) > 16:
            continue
        out = tmp_path / name.replace(" ", "_").replace("(", "").replace(")", "")
        args = ["register", "--fixed", small_phantom.paths["he"], "--moving", str(path)]
        args += ["--route", "direct", "--out", str(out), "--allow-failed", "--quiet"]
        rc = main([*args, "--rotation-search", "0"])
        err = capsys.readouterr().err
        assert rc == 0 and (out / "registered.ome.tif").is_file(), (name, err)
