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
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import _gui_blocker  # noqa: E402  (tests/_gui_blocker.py: shared with tests/conftest.py)

BLOCKED = _gui_blocker.BLOCKED


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
    _gui_blocker.install()
    # every pytest process installs it too (tests/conftest.py), pytest-xdist workers included
    os.environ[_gui_blocker.ENV] = "1"
    names = import_all()
    print(f"check_headless: {len(names)} modules import with {', '.join(BLOCKED)} blocked")
    if argv[:1] == ["--imports"]:
        return 0
    import pytest

    # plugins that import the blocked packages at start-up are not loaded
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    jobs, argv = _jobs(argv)
    par = ["-p", "xdist", "-n", str(jobs), "--dist", "loadfile"] if jobs > 1 else []
    # options alone (e.g. -q) still mean tests/core, not pytest's testpaths (which hold the widgets)
    paths = [a for a in argv if not a.startswith("-")]
    args = ["-p", "no:cacheprovider", *par, *argv, *([] if paths else ["tests/core"])]
    return int(pytest.main(args))


def _jobs(argv: list[str]) -> tuple[int, list[str]]:
    """``--jobs N`` (default 1): test processes, through pytest-xdist when it is installed."""
    jobs, rest = 1, []
    it = iter(argv)
    for a in it:
        if a == "--jobs" or a.startswith("--jobs="):
            v = a.split("=", 1)[1] if "=" in a else next(it, "")
            jobs = os.cpu_count() or 1 if v == "auto" else int(v)
        else:
            rest.append(a)
    if jobs > 1 and importlib.util.find_spec("xdist") is None:
        print("check_headless: pytest-xdist is not installed; running the tests in one process")
        jobs = 1
    return jobs, rest


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
