"""elastix TransformParameters jobs: export a registration result, import a chain.

Shared by ``msi2hist export-elastix`` / ``import-elastix`` and the Export widget.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..metrics import landmark_tre_um
from ..progress import CancelToken, Progress
from ._inputs import he_geometry, msi_geometry


@dataclass(frozen=True)
class ElastixExportConfig:
    """A ``transform.json`` -> elastix/transformix parameter files (``export-elastix``)."""

    transform: str
    out_dir: str
    he: str | None = None  # the fixed image (its size goes into the files); default: meta["fixed"]
    he_pixel_um: float | None = None
    overwrite: bool = False


def iter_export_elastix(
    cfg: ElastixExportConfig, cancel: CancelToken | None = None
) -> Generator[Progress, None, list[Path]]:
    """Write a registration result as elastix TransformParameters files.

    Parameters
    ----------
    cfg : ElastixExportConfig
        The job's input files, transform, pixel sizes and outputs.
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress

    Returns
    -------
    list of Path
        The files; the last one is for transformix ``-tp``.
    """
    from ..interop.elastix import write_elastix
    from ..registration.transforms import Transform

    tr = Transform.load(cfg.transform)
    he = cfg.he or tr.meta.get("fixed")
    if not he or not Path(he).is_file():
        raise ValueError(
            f"{cfg.transform}: give the fixed H&E image (--he); its size goes in the files"
        )
    shape, he_px = he_geometry(he, cfg.he_pixel_um)
    yield Progress(1, 2, "transform read")
    paths = write_elastix(cfg.out_dir, tr, shape, he_px, cfg.overwrite)
    yield Progress(2, 2, "done")
    return paths


@dataclass(frozen=True)
class ElastixImportConfig:
    """An elastix parameter chain -> ``transform.json`` (``import-elastix``)."""

    parameters: str  # the LAST TransformParameters file of the chain
    out: str  # transform.json (+ .h5 beside it)
    he: str
    msi: str
    units: str  # "um": elastix ran in micrometres; "px": in pixels of the full-resolution images
    msi_is_fixed: bool = False  # elastix's fixed image was the MSI (the file maps MSI -> H&E)
    moving_origin_xy: tuple[float, float] = (0.0, 0.0)
    landmarks_he: str | None = None
    landmarks_msi: str | None = None
    he_pixel_um: float | None = None
    msi_pixel_um: float | None = None
    overwrite: bool = False


def iter_import_elastix(
    cfg: ElastixImportConfig, cancel: CancelToken | None = None
) -> Generator[Progress, None, dict]:
    """Read an elastix chain into our ``transform.json``/``.h5`` (H&E fixed, MSI moving).

    Parameters
    ----------
    cfg : ElastixImportConfig
        The job's input files, transform, pixel sizes and outputs.
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress

    Returns
    -------
    dict
        ``transform`` (as saved and loaded back), ``landmarks`` (TRE QA or None) and ``path``.
    """
    from ..interop._files import check_writable
    from ..interop.elastix import invert_linear, read_elastix
    from ..io.points import read_points_csv
    from ..registration.transforms import Transform

    if cfg.units not in ("um", "px"):
        raise ValueError(f"units must be 'um' or 'px', not {cfg.units!r}")
    _, he_px = he_geometry(cfg.he, cfg.he_pixel_um)
    _, msi_px, _ = msi_geometry(cfg.msi, cfg.msi_pixel_um)
    f_px, m_px = (msi_px, he_px) if cfg.msi_is_fixed else (he_px, msi_px)
    scale_f = f_px[::-1] if cfg.units == "px" else (1.0, 1.0)  # um per elastix unit, x then y
    scale_m = m_px[::-1] if cfg.units == "px" else (1.0, 1.0)
    tr = read_elastix(cfg.parameters, scale_f, scale_m, moving_origin_xy=cfg.moving_origin_xy)
    if cfg.msi_is_fixed:
        tr = invert_linear(tr)
    tr.meta.update(
        fixed=str(Path(cfg.he).resolve()),
        moving=str(Path(cfg.msi).resolve()),
        fixed_pixel_size_um=list(he_px),
        moving_pixel_size_um=list(msi_px),
        elastix_units=cfg.units,
    )
    yield Progress(1, 2, "chain read")
    out = Path(cfg.out)
    h5 = out.with_suffix(".h5")
    inputs = [cfg.parameters, cfg.he, cfg.msi]
    check_writable(out, cfg.overwrite, inputs)
    check_writable(h5, cfg.overwrite, inputs)
    qa = None
    if (cfg.landmarks_he is None) != (cfg.landmarks_msi is None):
        raise ValueError("give both landmark files (H&E and MSI) or neither")
    if cfg.landmarks_he:
        lf, lm = read_points_csv(cfg.landmarks_he), read_points_csv(cfg.landmarks_msi)
        if len(lf) != len(lm):
            raise ValueError("the two landmark files have different numbers of points")
        err = landmark_tre_um(tr, lm, lf)
        px = float(np.mean(msi_px))
        qa = {
            "tre_um": err.tolist(),
            "tre_median_um": float(np.median(err)),
            "tre_median_msi_px": float(np.median(err) / px),
        }
        tr.meta["landmarks"] = qa
    out.parent.mkdir(parents=True, exist_ok=True)
    tr.save(out, h5)
    yield Progress(2, 2, "done")
    return {"transform": Transform.load(out), "landmarks": qa, "path": out}
