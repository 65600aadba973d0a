"""Screenshots of the real widgets for the docs, made by the Xvfb workflow test.

    xvfb-run -a python docs/make_screenshots.py

runs tests/widgets/test_workflow.py (drop the phantom's files on the viewer, pick peaks, synthesise,
register, drag a landmark, fine-tune, cancel a long job) with ``MSI2HIST_SCREENSHOTS=docs/images``,
and tests/widgets/test_own_data.py (docs/own_data.md: another chemistry, landmarks, a re-headed model,
at 1920x1080), so the pictures in the docs are the very windows those tests assert on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    env = {**os.environ, "MSI2HIST_SCREENSHOTS": str(ROOT / "docs" / "images")}
    tests = ["tests/widgets/test_workflow.py", "tests/widgets/test_own_data.py"]
    cmd = [sys.executable, "-m", "pytest", "-q", *tests]
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
