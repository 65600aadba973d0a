"""The docs that can go stale are checked against the code."""

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_cli_reference_is_current(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    spec = importlib.util.spec_from_file_location("mkcli", DOCS / "make_cli_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (DOCS / "cli.md").read_text() == mod.render(), (
        "run: COLUMNS=100 python docs/make_cli_reference.py"
    )


def test_docs_pages_exist_and_link_images():
    for page in (
        "getting_started.md",
        "tutorial.md",
        "cli.md",
        "conventions.md",
        "checkpoints.md",
        "registration.md",
        "performance.md",
        "training.md",
    ):
        assert (DOCS / page).is_file(), page
    for md in DOCS.glob("*.md"):
        for line in md.read_text().splitlines():
            if "](images/" in line:
                target = line.split("](")[1].split(")")[0]
                assert (DOCS / target).is_file(), f"{md.name}: {target}"


def test_readme_commands_match_ci():
    """The README's test command and .ci/run install the same system packages and run the same
    pytest; the README says how to get the CPU build of torch."""
    root = DOCS.parent
    readme = (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text()
    test_cmd = next(line for line in readme.splitlines() if "python -m pytest" in line)
    assert "scripts/install_system_deps.sh" in test_cmd
    assert "bash scripts/install_system_deps.sh" in ci
    runs = [p.strip() for p in test_cmd.split("&&") if "check_headless" in p or "pytest" in p]
    assert any("check_headless" in p for p in runs) and any("pytest" in p for p in runs)
    for p in runs:  # the same steps, in CI possibly with -q
        assert p in ci or p.replace("check_headless.py", "check_headless.py -q") in ci, p
    assert "--index-url https://download.pytorch.org/whl/cpu" in test_cmd
    demo_cmd = next(line for line in readme.splitlines() if "msi2hist demo" in line)
    assert "whl/cpu" in demo_cmd
    assert (root / "scripts" / "install_system_deps.sh").is_file()


def test_core_imports_with_gui_packages_blocked():
    """Every non-widget module imports when napari, Qt, magicgui and npe2 cannot be imported
    (`pip install napari-msi2hist` without the [gui] extra on a compute node)."""
    import subprocess
    import sys

    root = DOCS.parent
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "check_headless.py"), "--imports"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "modules import with napari" in r.stdout


def test_check_headless_blocks_gui_imports():
    """The blocker really blocks: a module that imports napari fails under it."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "check_headless", DOCS.parent / "scripts" / "check_headless.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    finder = mod._gui_blocker.BlockGUI()
    sys.meta_path.insert(0, finder)
    try:
        import pytest

        with pytest.raises(ImportError, match="blocked"):
            importlib.import_module("qtpy.QtWidgets_not_cached_name")
    finally:
        sys.meta_path.remove(finder)
