"""The phantom's ground truth on disk: ``truth.json`` (the MSI -> H&E transform, with its smooth
deformation) written next to the phantom and read back by tests, benchmarks and pairs files."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._files import write_text_atomic
from ..registration.truth import TRUTH_FORMAT, load_truth  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from . import Phantom

PHANTOM_VERSION = 2  # unchanged by the optional difficulties (off by default)
CLASSES = ("background", "nuclei", "stroma", "other")


def truth_dict(ph: Phantom) -> dict:
    from .. import __version__

    tr = ph.transform
    cfg = ph.config
    d = {
        "format": TRUTH_FORMAT,
        "package_version": __version__,
        "phantom_version": PHANTOM_VERSION,
        "convention": (
            "Points are (y, x) world coordinates in micrometres; world = pixel index * pixel size "
            "(napari scale, no translate). msi_to_he(p) = matrix_yx_um @ p + offset_yx_um + D(p), where "
            "D(p) is bilinearly interpolated from displacement_yx_um sampled at MSI pixel centres "
            "(entry [r][c] at world (r, c) * msi pixel size; nearest edge value beyond the grid). "
            "he_to_msi inverts it by fixed-point iteration (napari_msi2hist.phantom.load_truth)."
        ),
        "msi": {
            "shape_yx": list(ph.msi_shape_yx),
            "pixel_size_um": [cfg.msi_pixel_um] * 2,
            "file": "msi.imzML",
        },
        "he": {
            "shape_yx": list(ph.he_rgb.shape[:2]),
            "pixel_size_um": [cfg.he_pixel_um] * 2,
            "file": "he.ome.tif",
        },
        "linear": {
            "matrix_yx_um": tr.matrix_yx.tolist(),
            "offset_yx_um": tr.offset_yx_um.tolist(),
            "rotation_deg": getattr(tr, "angle_deg", None),
            "scale": getattr(tr, "scale", None),
        },
        "deformation": None
        if tr.displacement is None
        else {
            "displacement_yx_um": np.round(tr.displacement.values, 5).tolist(),
            "spacing_yx_um": list(tr.displacement.spacing_yx_um),
            "origin_yx_um": list(tr.displacement.origin_yx_um),
            "rms_um": tr.displacement.rms(),
            "rms_msi_px": tr.displacement.rms() / cfg.msi_pixel_um,
        },
        "peaks_mz": ph.peaks,
        "classes": list(CLASSES),
        "missing_pixels_yx": np.argwhere(ph.missing).tolist(),
        "config": asdict(cfg),
    }
    return d


def _write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1))
