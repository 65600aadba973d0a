"""File > Open Sample > Phantom MSI + H&E pair: a small phantom written to a cache folder once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SAMPLE_SEED = 0


def sample_dir() -> Path:
    base = os.environ.get("MSI2HIST_CACHE") or os.path.join(
        tempfile.gettempdir(), "napari-msi2hist"
    )
    return Path(base) / f"phantom-seed{SAMPLE_SEED}"


def ensure_sample_phantom() -> Path:
    """Write the sample phantom unless a complete one is already there; returns its folder."""
    from .phantom import PhantomConfig, make_phantom

    d = sample_dir()
    if not (d / "truth.json").is_file():  # truth.json is written last
        make_phantom(d, PhantomConfig(seed=SAMPLE_SEED), overwrite=True)
    return d


def phantom_sample():
    from .io._napari_reader import imzml_layer_data, read_image_layers

    d = ensure_sample_phantom()
    return read_image_layers(str(d / "he.ome.tif")) + imzml_layer_data(d / "msi.imzML")
