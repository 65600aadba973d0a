"""The import contracts hold, and they would catch a violation (issue 14).

lint-imports runs on a copy of the package with violations planted: a Qt import in a core module,
``import napari`` in metrics.py and demo.py, an indirect GUI import (a core module importing a
widget), upward imports (io -> workflows, msi -> models), a method importing the phantom
generator, and imports that would close a loop between the method packages. Each must break a
contract; the untouched copy must keep them all. Runs in a subprocess with the copy first on the path.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("importlinter")

PLANTS = {
    "qt in crossmodal": ("crossmodal/regression.py", "from qtpy.QtWidgets import QWidget\n"),
    "napari in metrics": ("metrics.py", "import napari\n"),
    "napari in demo": ("demo.py", "import napari\n"),
    "indirect gui": ("registration/verdict.py", "from ..widgets import _common\n"),
    "io above workflows": ("io/points.py", "from ..workflows import register\n"),
    "msi above models": ("msi/peaks.py", "from ..models import contract\n"),
    # the methods never import the test-data generator (it builds its MSI from their features)
    "crossmodal imports phantom": ("crossmodal/features.py", "from ..phantom import truth\n"),
    "models imports phantom": ("models/datasets.py", "from .. import phantom\n"),
    # no loops: crossmodal -> models -> registration, so registration must not import back
    "registration imports models": ("registration/verdict.py", "from ..models import contract\n"),
    "models imports interop": ("models/overlap.py", "from ..interop import geojson\n"),
}


def _run(tmp: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import napari_msi2hist; assert napari_msi2hist.__file__.startswith(sys.argv[1]), "
        "napari_msi2hist.__file__;"
        "from importlinter.cli import lint_imports_command; sys.argv = ['lint-imports', "
        "'--no-cache', '--config', sys.argv[2]]; lint_imports_command()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(tmp / "src"), str(tmp / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=tmp,
        timeout=300,
    )


def _copy(tmp: Path) -> Path:
    shutil.copytree(
        ROOT / "src" / "napari_msi2hist",
        tmp / "src" / "napari_msi2hist",
        ignore=shutil.ignore_patterns("__pycache__", "*.pt"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp / "src" / "napari_msi2hist"


def test_the_untouched_tree_keeps_every_contract(tmp_path):
    _copy(tmp_path)
    r = _run(tmp_path)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_planted_violation_breaks_a_contract(tmp_path, plant):
    pkg = _copy(tmp_path)
    rel, line = PLANTS[plant]
    f = pkg / rel
    text = f.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    f.write_text(head + sep + line + rest if sep else line + text)
    r = _run(tmp_path)
    assert r.returncode != 0 and "BROKEN" in r.stdout, (plant, r.stdout[-2000:], r.stderr[-1500:])


def test_headless_runs_block_the_gui_in_every_test_process():
    """Under ``scripts/check_headless.py`` (also with ``--jobs N``, pytest-xdist workers) importing
    napari or Qt fails in the test process itself, so tests/core really runs without a GUI stack."""
    import os

    if os.environ.get("MSI2HIST_BLOCK_GUI") != "1":
        pytest.skip("only meaningful under scripts/check_headless.py")
    for name in ("napari", "qtpy", "magicgui"):
        with pytest.raises(ImportError, match="blocked"):
            __import__(name)
