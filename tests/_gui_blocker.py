"""The meta-path finder that makes the GUI stack unimportable (headless checks).

``scripts/check_headless.py`` installs it in its own process and sets ``MSI2HIST_BLOCK_GUI=1`` so
that ``tests/conftest.py`` installs it in every pytest process, pytest-xdist workers included.
"""

from __future__ import annotations

import importlib.abc
import sys

BLOCKED = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "npe2")
ENV = "MSI2HIST_BLOCK_GUI"


class BlockGUI(importlib.abc.MetaPathFinder):
    """Refuse to find any module of the GUI packages in :data:`BLOCKED`."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the headless core must not import it")
        return None


def install() -> None:
    """Put the blocker first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, BlockGUI) for f in sys.meta_path):
        sys.meta_path.insert(0, BlockGUI())
