import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")


@pytest.fixture
def phantom_dir(small_phantom):
    from pathlib import Path

    return Path(small_phantom.paths["imzml"]).parent
