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


def _is_current(d: Path, cfg) -> bool:
    """A cached phantom is reused only if complete (truth.json is written last) and made by the same
    generator version from the same config; otherwise it is regenerated (a stale cache gave a sample
    whose m/z channels no longer matched the bundled model)."""
    import json
    from dataclasses import asdict

    from .phantom import PHANTOM_VERSION

    try:
        t = json.loads((d / "truth.json").read_text())
    except (OSError, ValueError):
        return False
    return t.get("phantom_version") == PHANTOM_VERSION and t.get("config") == json.loads(
        json.dumps(asdict(cfg))
    )


def ensure_sample_phantom() -> Path:
    """Write the sample phantom unless a current one is already there; returns its folder."""
    from .phantom import PhantomConfig, make_phantom

    d = sample_dir()
    cfg = PhantomConfig(seed=SAMPLE_SEED)
    if not _is_current(d, cfg):
        make_phantom(d, cfg, overwrite=True)
    return d


def phantom_sample():
    from ._reader import imzml_layer_data, read_image_layers

    d = ensure_sample_phantom()
    return read_image_layers(str(d / "he.ome.tif")) + imzml_layer_data(d / "msi.imzML")
