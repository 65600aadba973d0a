"""Feature networks from local weights, and LPIPS' aggregation against hand-computed values."""

import numpy as np
import pytest
import torch

from napari_msi2hist.models.backbones import (
    ResNet50Trunk,
    VGG16Features,
    load_backbone,
    load_lpips_weights,
    lpips,
    lpips_from_features,
    pooled_features,
)


def test_lpips_aggregation_hand_computed():
    # two pixels, two channels: pixel 0 (3, 4) vs (1, 0); pixel 1 (0, 1) vs (0, 2)
    a = np.array([[[[3.0, 0.0]], [[4.0, 1.0]]]])
    b = np.array([[[[1.0, 0.0]], [[0.0, 2.0]]]])
    # unit vectors (0.6, 0.8) vs (1, 0): squared difference 0.16 + 0.64; pixel 1 identical: 0
    assert lpips_from_features([a], [b])[0] == pytest.approx(0.4)
    # channel weights (2, 1): (2 * 0.16 + 0.64) / 2
    assert lpips_from_features([a], [b], [np.array([2.0, 1.0])])[0] == pytest.approx(0.48)
    # layers add up; a per-pixel rescaling of the features changes nothing (unit-normalised)
    assert lpips_from_features([a, a], [b, b])[0] == pytest.approx(0.8)
    assert lpips_from_features([a], [3 * a])[0] == pytest.approx(0.0, abs=1e-12)
    # on generated features: one distance per image of the batch
    rng = np.random.default_rng(0)
    fa, fb = rng.random((3, 8, 5, 5)), rng.random((3, 8, 5, 5))
    d = lpips_from_features([fa], [fb])
    ref = [
        np.mean(
            [
                np.sum(
                    (
                        fa[n, :, y, x] / np.linalg.norm(fa[n, :, y, x])
                        - fb[n, :, y, x] / np.linalg.norm(fb[n, :, y, x])
                    )
                    ** 2
                )  # noqa: E501
                for y in range(5)
                for x in range(5)
            ]
        )
        for n in range(3)
    ]
    np.testing.assert_allclose(d, ref, rtol=1e-9)


@pytest.mark.parametrize("cls", [ResNet50Trunk, VGG16Features])
def test_backbone_loads_torchvision_layout_state_dict(tmp_path, cls):
    torch.manual_seed(0)
    net = cls().eval()
    sd = net.state_dict()
    # torchvision checkpoints carry their classifier too: it is ignored
    if cls is ResNet50Trunk:
        sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    else:
        sd["classifier.0.weight"] = torch.zeros(4, 4)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    loaded = load_backbone(path)
    assert type(loaded) is cls
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        fa, fb = net(x), loaded(x)
    assert [f.shape[1] for f in fb] == list(cls.channels)
    for u, v in zip(fa, fb, strict=True):
        torch.testing.assert_close(u, v)
    img = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    assert lpips(loaded, img, img) == pytest.approx(0.0, abs=1e-9)
    assert lpips(loaded, img, 255 - img) > 0.01
    feats = pooled_features(loaded, np.zeros((130, 260, 3), np.uint8), tile=64)
    assert feats.shape == (2 * 4, cls.channels[-1])


def test_bad_weight_files_are_named(tmp_path):
    p = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, p)
    with pytest.raises(ValueError, match="other.pth.*ResNet-50 or VGG-16"):
        load_backbone(p)
    p.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="other.pth: not a loadable"):
        load_backbone(p)
    lin = tmp_path / "lin.pth"
    torch.save(
        {f"lin{i}.model.1.weight": torch.ones(1, c, 1, 1) for i, c in enumerate((4, 5))}, lin
    )
    w = load_lpips_weights(lin, (4, 5))
    assert [len(v) for v in w] == [4, 5]
    with pytest.raises(ValueError, match="lin.pth: no 6-channel"):
        load_lpips_weights(lin, (4, 6))


def test_evaluate_cli_with_local_feature_weights(tmp_path, phantom_entries, capsys):
    import json

    from napari_msi2hist.cli import main

    torch.manual_seed(0)
    w = tmp_path / "vgg16.pth"
    torch.save(VGG16Features().state_dict(), w)
    he = phantom_entries[0]["he"]
    capsys.readouterr()
    args = ["evaluate", "--pred", he, "--truth", he, "--features", str(w), "--fid-tile", "32"]
    assert main([*args, "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["lpips"] == pytest.approx(0.0, abs=1e-9) and same["fid_tiles"] > 1
    assert same["fid"] == pytest.approx(0.0, abs=1e-3)
    assert main(["evaluate", "--pred", he, "--truth", he, "--lpips-weights", str(w)]) == 1
    assert "--lpips-weights needs --features" in capsys.readouterr().err
