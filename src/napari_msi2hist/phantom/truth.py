"""The phantom's ground truth on disk: ``truth.json`` (the MSI -> H&E transform, with its smooth
deformation) written next to the phantom and read back by tests, benchmarks and pairs files."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._files import write_text_atomic
from ..registration.transforms import DisplacementField, PhantomTransform

if TYPE_CHECKING:
    from . import Phantom

TRUTH_FORMAT = "napari-msi2hist phantom truth v1"
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


def load_truth(path: str | os.PathLike) -> PhantomTransform:
    """The MSI-to-H&E transform stored in a ``truth.json``: ``.forward`` maps MSI world um to H&E
    world um, ``.inverse`` maps back."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (UTF-8) JSON file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(d, dict) or d.get("format") != TRUTH_FORMAT:
        d = d if isinstance(d, dict) else {}
        raise ValueError(f"{path}: not a phantom truth file (format {d.get('format')!r})")
    try:
        disp = None
        if d.get("deformation"):
            df = d["deformation"]
            disp = DisplacementField(
                np.asarray(df["displacement_yx_um"], dtype=np.float64),
                tuple(df["spacing_yx_um"]),
                tuple(df["origin_yx_um"]),
            )
        return PhantomTransform(
            np.asarray(d["linear"]["matrix_yx_um"]), np.asarray(d["linear"]["offset_yx_um"]), disp
        )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"{path}: incomplete truth file ({type(e).__name__}: {e})") from None


def _write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1))
