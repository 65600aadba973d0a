"""Read a phantom's ground truth (``truth.json``), the known MSI -> H&E transform.

The transform, with its smooth deformation, is what pairs files (``align: {truth: ...}``), tests and
benchmarks use as an alignment.

The file is written by :mod:`napari_msi2hist.phantom.truth`; it lives here, beside
:class:`~napari_msi2hist.registration.transforms.PhantomTransform`, so that the methods (models,
registration) can read a known transform without importing the phantom generator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .transforms import DisplacementField, PhantomTransform

TRUTH_FORMAT = "napari-msi2hist phantom truth v1"


def load_truth(path: str | os.PathLike) -> PhantomTransform:
    """Read the MSI-to-H&E transform stored in a phantom's ``truth.json``.

    Parameters
    ----------
    path : path-like
        The ``truth.json``.

    Returns
    -------
    PhantomTransform
        ``.forward`` maps MSI world um to H&E world um (linear part plus the smooth deformation),
        ``.inverse`` maps back.

    Raises
    ------
    ValueError
        Not UTF-8 JSON, not a phantom truth file (its ``format``), or incomplete (the message names
        the file).
    """
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
