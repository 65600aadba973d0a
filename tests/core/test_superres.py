"""H&E-guided super-resolution (seed 004): baselines against hand references, the phantom truth, the
bundled model against bicubic on held-out phantoms, training, cancel and the CLI."""

import json

import numpy as np
import pytest
import torch

from napari_msi2hist.crossmodal.superres import (
    bicubic_upsample,
    block_mean,
    consistency_projection,
    evaluate_methods,
    guided_filter,
    iter_train_superres,
    load_superres,
    save_superres,
)
from napari_msi2hist.phantom.superres import make_sr_phantom
from napari_msi2hist.progress import Cancelled, CancelToken, run_to_end


def test_grid_convention_and_baselines():
    rng = np.random.default_rng(0)
    # bicubic on a linear ramp keeps each coarse pixel as the mean of its fine footprint (away
    # from the borders, where the edge mode bends the ramp); a grid offset would show as a shift
    ramp = np.add.outer(np.arange(12.0), 2 * np.arange(13.0))
    up = bicubic_upsample(ramp, 4)
    assert up.shape == (48, 52)
    np.testing.assert_allclose(block_mean(up, 4)[3:-3, 3:-3], ramp[3:-3, 3:-3], atol=0.02)
    # guided filter: with a constant guide a = 0 and b = box(p), so q = box(b) = box(box(p))
    src = rng.random((20, 20))
    from scipy import ndimage as ndi

    out = guided_filter(np.ones((20, 20)), src, radius=2, eps=1e-3)
    box = ndi.uniform_filter(ndi.uniform_filter(src, 5, mode="reflect"), 5, mode="reflect")
    np.testing.assert_allclose(out, box, atol=1e-9)
    # ... and the input itself as guide with a tiny eps returns the input (edge-preserving)
    np.testing.assert_allclose(guided_filter(src, src, 2, 1e-9), src, atol=1e-4)
    # consistency projection: exact footprint means afterwards
    hr = rng.random((12, 12))
    lr = rng.random((3, 3))
    np.testing.assert_allclose(block_mean(consistency_projection(hr, lr, 4), 4), lr, atol=1e-12)


def test_phantom_truth_and_measurement():
    ph = make_sr_phantom(5, None, factor=4, n_ions=3, size=96, noise=0.0)
    assert (
        ph.hr.shape == (3, 96, 96) and ph.lr.shape == (3, 24, 24) and ph.guide.shape == (96, 96, 3)
    )
    np.testing.assert_allclose(ph.lr, block_mean(ph.hr, 4), atol=1e-12)  # footprint means
    noisy = make_sr_phantom(5, None, factor=4, n_ions=3, size=96)
    assert not np.allclose(noisy.lr, ph.lr)


def test_bundled_model_beats_bicubic_on_held_out_phantoms():
    # seeds never used by scripts/train_superres_model.py; factors 4 and 5
    phs = [
        make_sr_phantom(301, None, factor=4, size=128),
        make_sr_phantom(302, None, factor=5, size=130),
    ]
    res = evaluate_methods(phs, "superres")
    assert res["learned"]["psnr"] > res["bicubic"]["psnr"], res
    assert res["learned"]["ssim"] > res["bicubic"]["ssim"], res
    _, meta = load_superres("superres")
    assert meta["made_by"] == "scripts/train_superres_model.py"
    assert not any(n.startswith(("seed301", "seed302")) for n in meta["train"])


def test_training_reduces_the_loss_saves_and_cancels(tmp_path):
    phs = [make_sr_phantom(s, None, factor=4, n_ions=2, size=96) for s in (1, 2)]
    losses = []
    net = run_to_end(
        iter_train_superres(phs, steps=60, patch=32, batch=4, width=8, depth=3),
        lambda p: losses.append(p.info["l1"]),
    )
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    path = save_superres(tmp_path / "m.pt", net, {"note": "test"})
    net2, meta = load_superres(path)
    assert meta == {"note": "test"} and net2.arch == {"width": 8, "depth": 3, "guide_ch": 3}
    x, g = torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(net(x, g), net2(x, g))
    tok = CancelToken()
    gen = iter_train_superres(phs, steps=100, patch=32, batch=2, width=8, depth=3, cancel=tok)
    next(gen)
    tok.cancel()
    with pytest.raises(Cancelled):
        next(gen)
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(ValueError, match="bad.pt: not a napari-msi2hist super-resolution"):
        load_superres(bad)


def test_superres_command(small_phantom, tmp_path, capsys):
    from napari_msi2hist.cli import main
    from napari_msi2hist.io.histology import read_histology

    p = small_phantom.paths
    out = tmp_path / "sr"
    args = ["superres", "--imzml", p["imzml"], "--he", p["he"], "--out", str(out)]
    args += ["--landmarks-msi", p["landmarks_msi"], "--landmarks-he", p["landmarks_he"]]
    assert main([*args, "--n-peaks", "3", "--quiet"]) == 0
    img = read_histology(out / "superres.ome.tif")
    assert img.pixel_size_um == (4.0, 4.0)  # 20 um MSI / factor 5
    arr = np.asarray(img.levels[0])
    ny, nx = small_phantom.msi_shape_yx
    assert arr.shape == (3, ny * 5, nx * 5)
    info = json.loads((out / "superres.json").read_text())
    assert info["factor"] == 5 and info["guide_coverage"] > 0.3 and len(info["mz"]) == 3
    # half an alignment is refused with a plain message
    assert (
        main(
            [
                "superres",
                "--imzml",
                p["imzml"],
                "--he",
                p["he"],
                "--out",
                str(tmp_path / "c"),
                "--landmarks-msi",
                p["landmarks_msi"],
            ]
        )
        == 1
    )
    assert "give both --landmarks-msi and --landmarks-he" in capsys.readouterr().err
