"""Prove the core and the CLI work with no GUI stack: napari, Qt and magicgui made unimportable.

Imports every module of the package outside ``widgets/`` (and the CLI's entry point) with a
meta-path finder that refuses the GUI packages, then runs the given pytest arguments (default
``tests/core``) the same way. An import-linter contract checks the static import graph; this checks
what actually happens at run time, lazy imports included. CI runs it; so can you::

    python scripts/check_headless.py            # import check + tests/core
    python scripts/check_headless.py --imports  # import check only
"""

from __future__ import annotations

import importlib
import importlib.abc
import os
import pkgutil
import sys

BLOCKED = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "npe2")


class _BlockGUI(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the headless core must not import it")
        return None


def import_all() -> list[str]:
    """Import every non-widget module of napari_msi2hist; return their names."""
    import napari_msi2hist

    names = []
    for info in pkgutil.walk_packages(napari_msi2hist.__path__, "napari_msi2hist."):
        if ".widgets" in info.name or info.name.endswith(".__main__"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    from napari_msi2hist.cli import main  # noqa: F401  (the console script's target)

    return names


def main(argv: list[str]) -> int:
    sys.meta_path.insert(0, _BlockGUI())
    names = import_all()
    print(f"check_headless: {len(names)} modules import with {', '.join(BLOCKED)} blocked")
    if argv[:1] == ["--imports"]:
        return 0
    import pytest

    # plugins that import the blocked packages at start-up are not loaded
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # options alone (e.g. -q) still mean tests/core, not pytest's testpaths (which hold the widgets)
    paths = [a for a in argv if not a.startswith("-")]
    return int(pytest.main(["-p", "no:cacheprovider", *argv, *([] if paths else ["tests/core"])]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
