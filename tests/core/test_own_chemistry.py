"""Models for the user's own chemistry: the input-domain check on every synthesis, and re-heading a
trained model to another m/z list (train --base with --n-peaks/--mz)."""

import numpy as np
import pytest
import torch
import yaml

from napari_msi2hist.cli import main
from napari_msi2hist.models.checkpoint import load_checkpoint
from napari_msi2hist.models.networks import build_generator
from napari_msi2hist.models.rehead import load_reheaded


@pytest.fixture(scope="module")
def other_chemistry(tmp_path_factory):
    """A phantom whose peak table (chemistry_seed) and acquired m/z range differ from the demo's."""
    from napari_msi2hist.phantom import PhantomConfig, make_phantom

    d = tmp_path_factory.mktemp("other")
    cfg = PhantomConfig(seed=4, procedural_size=96, chemistry_seed=7, mz_min=500.0, mz_max=1000.0)
    return make_phantom(d, cfg)


def test_in_domain_phantom_synthesises_without_warning(small_phantom, tmp_path, capsys):
    out = tmp_path / "syn.ome.tif"
    args = ["synthesize", small_phantom.paths["imzml"], "--model", "demo", "--out", str(out)]
    assert main(args + ["--strict", "--quiet", "--tile", "128"]) == 0
    assert "warning" not in capsys.readouterr().err and out.is_file()


def test_other_chemistry_warns_and_strict_refuses(other_chemistry, tmp_path, capsys):
    from napari_msi2hist.models.synthesis import synthesize_imzml

    res = synthesize_imzml(other_chemistry.paths["imzml"], "demo")
    d = res.domain
    # an independent count of the demo model's m/z inside 500-1000
    mz = np.asarray(load_checkpoint("demo").contract.mz)
    assert d.n_in_range == int(((mz >= 500) & (mz <= 1000)).sum()) < d.n_channels
    assert not d.ok and any("inside the file's m/z range" in w for w in d.warnings)
    assert res.metadata()["domain_warnings"] == list(d.warnings)
    out = tmp_path / "syn.ome.tif"
    base = ["synthesize", other_chemistry.paths["imzml"], "--model", "demo", "--out", str(out)]
    assert main(base + ["--quiet", "--tile", "128"]) == 0
    assert "warning:" in capsys.readouterr().err
    out.unlink()
    assert main(base + ["--quiet", "--strict"]) == 1
    err = capsys.readouterr().err
    assert "refused: strict" in err and "Traceback" not in err and not out.exists()


def _pairs(tmp_path, entries):
    keys = ("name", "imzml", "he", "align", "split")
    p = tmp_path / "pairs.yaml"
    p.write_text(yaml.safe_dump({"samples": [{k: e[k] for k in keys} for e in entries]}))
    return p


SMALL = ["--ngf", "4", "--depth", "4", "--ndf", "4", "--patch", "32", "--batch-size", "2"]


def test_base_with_n_peaks_is_reheaded_not_silently_overridden(tmp_path, phantom_entries, capsys):
    pairs = _pairs(tmp_path, phantom_entries)
    common = ["train", "--pairs", str(pairs), *SMALL, "--checkpoint-every", "2"]
    assert (
        main([*common, "--out", str(tmp_path / "base"), "--n-peaks", "5", "--max-steps", "2"]) == 0
    )
    base_pt = tmp_path / "base" / "model.pt"
    capsys.readouterr()
    # --base with --n-peaks 8: an 8-channel model from the 5-channel base, said on the terminal
    tune = [*common, "--base", str(base_pt), "--max-steps", "1", "--lr", "0"]
    assert main([*tune, "--out", str(tmp_path / "re"), "--n-peaks", "8"]) == 0
    err = capsys.readouterr().err
    assert "re-headed" in err and "8 m/z channels" in err and "had 5" in err
    # the terminal shows losses, the validation MI/SSIM and where the checkpoints are
    assert "l1=" in err and "val MI" in err and "SSIM" in err
    assert str(tmp_path / "re" / "checkpoints" / "last.pt") in err
    re, base = load_checkpoint(tmp_path / "re" / "model.pt"), load_checkpoint(base_pt)
    assert re.contract.n_channels == 8 and re.training["data"]["reheaded_from"] == str(base_pt)
    assert re.contract.working_pixel_um == base.contract.working_pixel_um
    # lr 0: every trained tensor but the input layer is the base's (BatchNorm statistics move)
    a, b = base.state_dict, re.state_dict
    differ = [k for k in a if a[k].shape != b[k].shape]
    assert differ == ["downs.0.0.weight"] and b["downs.0.0.weight"].shape[1] == 8
    for k in a:
        if k not in differ and "running" not in k and "num_batches" not in k:
            assert torch.equal(a[k].float(), b[k].float()), k
    # --base alone keeps the base's channels (no re-head)
    assert main([*tune, "--out", str(tmp_path / "same")]) == 0
    assert "re-headed" not in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "same" / "model.pt").contract.n_channels == 5


def test_rehead_refuses_anything_but_the_input_layer():
    arch = {"name": "unet_generator", "in_channels": 5, "out_channels": 3, "ngf": 4, "depth": 4}
    base = build_generator(arch).state_dict()
    net = build_generator({**arch, "in_channels": 9})
    assert load_reheaded(net, base) == ["downs.0.0.weight"]
    with pytest.raises(ValueError, match="cannot re-head|another architecture"):
        load_reheaded(build_generator({**arch, "in_channels": 9, "ngf": 8}), base)
    with pytest.raises(ValueError, match="another architecture|has"):
        load_reheaded(build_generator({**arch, "depth": 5}), base)


def test_evaluate_reads_registers_registered_ome_tif(small_phantom, tmp_path, capsys):
    """register writes (C, Y, X) float32 (NaN outside the moved image); evaluate must read it."""
    import json

    from napari_msi2hist.io.histology import read_histology, to_uint8_rgb, write_ome_tiff

    he = to_uint8_rgb(np.asarray(read_histology(small_phantom.paths["he"]).levels[0]))
    stack = np.moveaxis(he, -1, 0).astype(np.float32)
    stack[:, :5, :] = np.nan  # outside the moved image
    reg = tmp_path / "registered.ome.tif"
    write_ome_tiff(reg, stack, (4.0, 4.0), channel_names=["R", "G", "B"])
    capsys.readouterr()
    assert (
        main(["evaluate", "--pred", str(reg), "--truth", small_phantom.paths["he"], "--json"]) == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert 0.9 < d["ssim"] <= 1.0
    # a many-channel ion-image stack is refused in one line, not with a traceback
    write_ome_tiff(tmp_path / "ions.ome.tif", np.zeros((5, 20, 20), np.float32), (4.0, 4.0))
    assert main(["evaluate", "--pred", str(tmp_path / "ions.ome.tif"), "--truth", str(reg)]) == 1
    assert "RGB images" in capsys.readouterr().err


def test_domain_statistics_against_an_independent_count():
    """check_input_domain on a synthetic stack: coverage, empty channels and intensity ratio match
    numbers computed here by hand; a 100x brighter copy is flagged, subsampling keeps the verdict."""
    from napari_msi2hist.models import domain
    from napari_msi2hist.models.contract import ChannelContract
    from napari_msi2hist.models.domain import check_input_domain

    rng = np.random.default_rng(0)
    stack = rng.gamma(2.0, 50.0, size=(4, 60, 70)).astype(np.float32)
    stack[3] = 0  # one empty channel of four: 25 % > 10 %
    mask = np.ones((60, 70), bool)
    mz = [500.0, 600.0, 700.0, 1200.0]
    c = ChannelContract(mz=tuple(mz)).with_stats([stack[:3].repeat(1, 0)[[0, 1, 2, 2]]], [mask])
    rep = check_input_domain(stack, mask, mz, c, mz_range=(400.0, 1000.0))
    assert rep.n_in_range == 3 and rep.n_empty == 1 and rep.intensity_ratio == pytest.approx(1.0)
    # the m/z outside the range, the empty channel, and that channel's zeros far below training
    assert len(rep.warnings) == 3 and rep.outside_fraction == pytest.approx(0.25, abs=0.02)
    bright = check_input_domain(stack * 100, mask, mz, c)
    assert bright.intensity_ratio == pytest.approx(100.0, rel=1e-3)
    assert any("x100" in w for w in bright.warnings)
    small = domain.MAX_PIXELS
    try:
        domain.MAX_PIXELS = 500
        sub = check_input_domain(stack * 100, mask, mz, c)
    finally:
        domain.MAX_PIXELS = small
    assert sub.intensity_ratio == pytest.approx(100.0, rel=0.1) and not sub.ok


def test_train_refuses_a_pairs_file_whose_msi_misses_the_he_tissue(small_phantom, tmp_path, capsys):
    """An MSI paired with an unrelated H&E (here: a slide of glass and a stain blot far from where
    the MSI lands) is refused before training, naming the pair's files, in one line."""
    import numpy as np

    from napari_msi2hist.io.histology import write_ome_tiff

    he = np.full((400, 400, 3), 245, np.uint8)
    he[300:380, 300:380] = (150, 60, 160)  # tissue, but not under the MSI at the identity
    bad_he = tmp_path / "other_he.ome.tif"
    write_ome_tiff(bad_he, he, (4.0, 4.0))
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(
        "samples:\n"
        f"  - {{name: a, imzml: {small_phantom.paths['imzml']}, he: {bad_he}, split: train}}\n"
        f"  - {{name: b, imzml: {small_phantom.paths['imzml']}, he: {bad_he}, split: val}}\n"
    )
    out = tmp_path / "run"
    args = ["train", "--pairs", str(pairs), "--out", str(out), "--max-steps", "1", "--n-peaks", "4"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "outside the H&E tissue" in err
    assert "other_he.ome.tif" in err and "Traceback" not in err
    assert not (out / "model.pt").exists()
