"""Screenshots of the real widgets for the docs, made by the Xvfb workflow test.

    xvfb-run -a python docs/make_screenshots.py

runs tests/widgets/test_workflow.py (drop the phantom's files on the viewer, pick peaks, synthesise,
register, drag a landmark, fine-tune, cancel a long job) with ``MSI2HIST_SCREENSHOTS=docs/images``,
so the pictures in the docs are the very windows that test asserts on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    env = {**os.environ, "MSI2HIST_SCREENSHOTS": str(ROOT / "docs" / "images")}
    cmd = [sys.executable, "-m", "pytest", "-q", "tests/widgets/test_workflow.py"]
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
