import os
from pathlib import Path

import pytest

if os.environ.get("MSI2HIST_BLOCK_GUI") == "1":  # set by scripts/check_headless.py
    import _gui_blocker

    _gui_blocker.install()  # here too, so that pytest-xdist workers are headless as well

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not present next to the checkout")
    return SHARED


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory):
    """A small continuous phantom (procedural H&E), written once per test session."""
    from napari_msi2hist.phantom import PhantomConfig, make_phantom

    d = tmp_path_factory.mktemp("phantom")
    ph = make_phantom(d, PhantomConfig(seed=3, procedural_size=160))
    return ph


@pytest.fixture(scope="session")
def phantom_entries(tmp_path_factory):
    """Three small phantoms as training entries: two for training, one for validation."""
    from napari_msi2hist.phantom import PhantomConfig, make_phantom

    d = tmp_path_factory.mktemp("pairs")
    out = []
    for seed, split in ((21, "train"), (22, "train"), (23, "val")):
        ph = make_phantom(d / f"p{seed}", PhantomConfig(seed=seed, procedural_size=128, n_mz=400))
        out.append(
            {
                "name": f"p{seed}",
                "imzml": ph.paths["imzml"],
                "he": ph.paths["he"],
                "align": {"truth": ph.paths["truth"]},
                "split": split,
                "base": str(d),
            }
        )
    return out


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, phantom_entries, small_phantom):
    """A checkpoint from a short pix2pix run whose m/z channels cover the small phantom's peaks."""
    import numpy as np

    from napari_msi2hist.models.datasets import contract_from_data, load_samples, split_by_sample
    from napari_msi2hist.models.training import TrainConfig, iter_train
    from napari_msi2hist.progress import run_to_end

    mz = sorted(m for v in small_phantom.peaks.values() for m in v)
    # the phantoms share the peak table layout per seed; use the small phantom's m/z for every sample
    contract, stacks = contract_from_data(phantom_entries, mz=mz, tolerance=(1.0, "da"))
    train, val = split_by_sample(load_samples(phantom_entries, contract, stacks))
    cfg = TrainConfig(
        max_steps=6,
        ngf=8,
        depth=5,
        ndf=8,
        patch=64,
        batch_size=2,
        checkpoint_every=3,
        val_every=3,
        seed=0,
    )
    out = tmp_path_factory.mktemp("run")
    path = run_to_end(iter_train(train, val, contract, cfg, out))
    assert np.isfinite(contract.lo).all()
    return path
