"""Networks, channel contract, checkpoints and tiled inference (CPU, small models)."""

import os
import pickle

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_msi2hist.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from napari_msi2hist.models.contract import (
    ChannelContract,
    ChannelMismatchError,
    ContractMismatchError,
    match_channels,
    normalise_channels,
    output_grid,
    prepare_input,
)
from napari_msi2hist.models.inference import InferenceOptions, infer, iter_infer, tile_starts
from napari_msi2hist.models.networks import (
    BaselineUNet,
    PatchDiscriminator,
    PixelDiscriminator,
    UNetGenerator,
    build_generator,
    init_weights,
    patch_receptive_field,
)
from napari_msi2hist.msi.ion_images import IonImages, Tolerance
from napari_msi2hist.progress import Cancelled, CancelToken, run_to_end


@pytest.mark.parametrize("channels", [1, 3, 7, 50])
@pytest.mark.parametrize("size,depth", [(64, 6), (256, 8)])
def test_generator_shapes(channels, size, depth):
    g = UNetGenerator(channels, 3, ngf=4, depth=depth).eval()
    with torch.no_grad():
        y = g(torch.randn(2, channels, size, size))
    assert y.shape == (2, 3, size, size)
    assert float(y.min()) >= -1 and float(y.max()) <= 1


def test_512_input_with_depth_9():
    g = UNetGenerator(50, 3, ngf=2, depth=9).eval()
    with torch.no_grad():
        assert g(torch.randn(1, 50, 512, 512)).shape == (1, 3, 512, 512)


def test_discriminators_and_receptive_field():
    assert patch_receptive_field(3) == 70
    d = PatchDiscriminator(50 + 3, ndf=8, n_layers=3)
    out = d(torch.randn(1, 53, 256, 256))
    assert out.shape == (1, 1, 30, 30)
    # empirical receptive field: one output unit depends on a 70x70 input window
    x = torch.zeros(1, 53, 140, 140, requires_grad=True)
    d.eval()
    o = d(x)
    o[0, 0, o.shape[2] // 2, o.shape[3] // 2].backward()
    rows = torch.nonzero(x.grad.abs().sum((0, 1)).sum(1)).flatten()
    assert int(rows.max() - rows.min() + 1) == 70
    p = PixelDiscriminator(53, ndf=8)
    assert p(torch.randn(1, 53, 16, 16)).shape == (1, 1, 16, 16)


def test_baseline_unet_on_small_patches():
    b = BaselineUNet(50, 3, base=8, depth=3).eval()
    with torch.no_grad():
        assert b(torch.randn(4, 50, 32, 32)).shape == (4, 3, 32, 32)


def test_init_is_normal_0_002():
    g = UNetGenerator(5, 3, ngf=16, depth=5)
    init_weights(g)
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(w.mean())) < 2e-3 and abs(float(w.std()) - 0.02) < 2e-3


def _contract(mz=(500.0, 600.0, 700.0)):
    return ChannelContract(
        mz=tuple(mz),
        tolerance_value=10,
        tolerance_unit="ppm",
        spectrum_norm="tic",
        scale=(1.0,) * len(mz),
        lo=(0.0,) * len(mz),
        hi=(1.0,) * len(mz),
        working_pixel_um=10.0,
        padding="white",
    )


def test_contract_matching_and_mismatch_message():
    c = _contract()
    assert match_channels(c, [700.002, 500.001, 600.0, 800.0]).tolist() == [1, 2, 0]
    with pytest.raises(ChannelMismatchError) as e:
        match_channels(c, [500.0, 650.0], source="x.imzML")
    assert "600.0000" in str(e.value) and "700.0000" in str(e.value) and "x.imzML" in str(e.value)
    assert e.value.missing == [600.0, 700.0]


def test_prepare_input_refuses_other_extraction_settings():
    c = _contract()
    ions = IonImages(
        np.ones((3, 4, 4), np.float32),
        np.ones((4, 4), bool),
        np.array(c.mz),
        Tolerance(10, "ppm"),
        "none",
        (20.0, 20.0),
        "a.imzML",
    )
    with pytest.raises(ContractMismatchError, match="normalisation 'none'.*expects.*'tic'"):
        prepare_input(ions, c)


def test_16bit_and_float_inputs_are_not_clipped():
    c = _contract((1.0, 2.0))
    c = c.with_stats(
        [np.array([[[0, 100, 1000]], [[1, 2, 3]]], dtype=np.float64)], [np.ones((1, 3), bool)]
    )
    u16 = np.array([[[0, 60000, 65535]], [[1, 2, 3]]], dtype=np.uint16)
    out = normalise_channels(u16, c)
    assert np.all(np.diff(out[0, 0]) > 0)  # monotonic, no wrap-around or saturation
    assert out[0, 0, 2] > 1.0  # above the training range: passed through, not clipped
    f = normalise_channels(u16.astype(np.float32) * 1e6, c)
    assert np.isfinite(f).all() and f[0, 0, 2] > out[0, 0, 2]


def test_output_grid_overlays_msi():
    # 10 MSI pixels at 20 um span centres 0..180 um; a 10 um working grid has 19 pixels 0..180 um
    assert output_grid((10, 7), (20.0, 20.0), 10.0) == (19, 13)


def test_checkpoint_roundtrip_and_metadata(tmp_path):
    g = UNetGenerator(3, 3, ngf=4, depth=4)
    init_weights(g)
    arch = {"name": "unet_generator", "in_channels": 3, "out_channels": 3, "ngf": 4, "depth": 4}
    p = save_checkpoint(tmp_path / "m.pt", g, arch, _contract(), training={"steps": 7, "seed": 1})
    ck = load_checkpoint(p)
    assert ck.contract == _contract() and ck.training["steps"] == 7 and ck.package_version
    m = ck.build()
    x = torch.randn(1, 3, 32, 32)
    g.eval()
    with torch.no_grad():
        assert torch.equal(m(x), g(x))
    assert [q.name for q in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("EVIL_MARKER", "/tmp/evil"),))


def test_pickled_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    p = tmp_path / "evil.pt"
    with open(p, "wb") as fh:
        pickle.dump({"format": "napari-msi2hist checkpoint", "x": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(p)
    torch.save({"format": "napari-msi2hist checkpoint", "payload": _Evil()}, tmp_path / "evil2.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil2.pt")
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
    torch.save({"hello": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a napari-msi2hist checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def _smooth_input(shape=(4, 256, 256), seed=0):
    rng = np.random.default_rng(seed)
    x = np.stack([ndi.gaussian_filter(rng.standard_normal(shape[1:]), 6) for _ in range(shape[0])])
    return (x / x.std()).astype(np.float32)


def _model(seed=0):
    torch.manual_seed(seed)
    m = UNetGenerator(4, 3, ngf=8, depth=5)
    init_weights(m, std=0.05)  # larger than pix2pix init: real spatial structure, no saturation
    return m.eval()


def _edge_distance(n, tile, overlap):
    edges = {e for s in tile_starts(n, tile, overlap) for e in (s, s + tile) if 0 < e < n}
    i = np.arange(n) + 0.5
    return np.min(np.abs(i[:, None] - np.array(sorted(edges))[None, :]), axis=1)


def test_tiled_equals_whole_away_from_borders():
    m, x = _model(), _smooth_input()
    with torch.no_grad():
        whole = m(torch.from_numpy(x)[None]).numpy()[0]
    tiled = infer(m, x, InferenceOptions(tile=128, overlap=32), pad_value=0.0)
    assert tiled.shape == whole.shape
    interior = np.abs(tiled - whole)[:, 24:-24, 24:-24]
    assert interior.mean() < 0.02 * whole.std()


def test_seam_measure():
    """Error (vs whole-image inference) in a band around tile borders is no worse than in tile
    centres with blending; without overlap the same measure shows the seams."""
    m, x = _model(1), _smooth_input(seed=1)
    with torch.no_grad():
        whole = m(torch.from_numpy(x)[None]).numpy()[0]
    n, tile = x.shape[1], 64

    def band_and_centre(overlap, blend):
        out = infer(m, x, InferenceOptions(tile=tile, overlap=overlap, blend=blend), pad_value=0.0)
        err = np.abs(out - whole).mean(0)
        d1 = _edge_distance(n, tile, overlap)
        d = np.minimum(d1[:, None], d1[None, :])
        inner = np.zeros_like(d, bool)
        inner[8:-8, 8:-8] = True
        return err[(d < 4) & inner].mean(), err[(d > 12) & inner].mean()

    sig = whole.std()
    band_b, centre_b = band_and_centre(32, True)
    band_n, centre_n = band_and_centre(0, False)
    assert band_b <= max(1.5 * centre_b, 0.01 * sig)
    assert band_n > 5 * max(1.5 * centre_n, 0.01 * sig)  # the measure does detect seams


def test_image_smaller_than_tile_and_odd_sizes():
    m = _model()
    x = _smooth_input((4, 37, 53))
    out = infer(m, x, InferenceOptions(tile=64, overlap=16), pad_value=1.0)
    assert out.shape == (3, 37, 53) and np.isfinite(out).all()


def test_inference_cancels_between_batches():
    m, x = _model(), _smooth_input()
    tok = CancelToken()
    gen = iter_infer(m, x, InferenceOptions(tile=64, overlap=16, batch_size=1), cancel=tok)
    next(gen)
    next(gen)
    tok.cancel()
    with pytest.raises(Cancelled):
        run_to_end(gen)


def test_build_generator_refuses_unknown():
    with pytest.raises(ValueError, match="unknown generator"):
        build_generator({"name": "transformer"})
