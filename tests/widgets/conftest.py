import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")


@pytest.fixture
def phantom_dir(small_phantom):
    from pathlib import Path

    return Path(small_phantom.paths["imzml"]).parent


@pytest.fixture
def truth_affine(phantom_dir):
    """The phantom's true MSI -> H&E linear map as a 3x3 napari affine (yx, um)."""
    import json

    import numpy as np

    t = json.loads((phantom_dir / "truth.json").read_text())["linear"]
    m = np.eye(3)
    m[:2, :2], m[:2, 2] = t["matrix_yx_um"], t["offset_yx_um"]
    return m


@pytest.fixture
def open_phantom(phantom_dir, truth_affine):
    """Open the phantom's H&E and MSI through the reader; returns ``(he, msi)`` layers. With
    ``aligned=True`` the MSI layer gets the true linear transform, as after a registration."""

    def _open(viewer, aligned: bool = False):
        viewer.open(str(phantom_dir / "he.ome.tif"), plugin="napari-msi2hist")
        viewer.open(str(phantom_dir / "msi.imzML"), plugin="napari-msi2hist")
        he, msi = viewer.layers[0], viewer.layers[1]
        if aligned:
            msi.affine = truth_affine
        return he, msi

    return _open


@pytest.fixture
def click(qtbot):
    """Press a button as a user does: a left mouse click through Qt (``qtbot.mouseClick``), so the
    slot receives what Qt sends (``clicked(bool)``), never a direct call of the slot."""
    from qtpy.QtCore import Qt

    def _click(button):
        assert button.isEnabled(), f"{button.text()!r} is disabled"
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton, pos=button.rect().center())

    return _click
