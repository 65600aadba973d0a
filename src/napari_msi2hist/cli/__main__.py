"""``python -m napari_msi2hist.cli``."""

import sys

from . import main

sys.exit(main())
