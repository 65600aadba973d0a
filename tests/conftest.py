from pathlib import Path

import pytest

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
