"""Interop jobs shared by the CLI and the Export widget.

SpatialData export/import here, QuPath GeoJSON both ways (``annotations.py``) and elastix
TransformParameters both ways (``elastix.py``), re-exported here as one entry point. Each job is a
generator yielding :class:`~napari_msi2hist.progress.Progress` and taking a frozen config;
multi-file outputs are written into a temporary sibling folder and renamed into place (all or
nothing).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..msi.ion_images import DEFAULT_TOLERANCE, Tolerance
from ..progress import CancelToken, Progress
from ._inputs import _finish_dir, _fresh_dir, he_geometry, msi_geometry
from .annotations import (
    AnnotationsToMsiConfig,
    MsiRegionsToGeojsonConfig,
    iter_annotations_to_msi,
    iter_msi_regions_to_geojson,
    read_label_image,
)
from .elastix import (
    ElastixExportConfig,
    ElastixImportConfig,
    iter_export_elastix,
    iter_import_elastix,
)

if TYPE_CHECKING:
    from ..interop.spatialdata_store import Section


@dataclass(frozen=True)
class SpatialDataExportConfig:
    """One section -> a SpatialData store (``export-spatialdata``)."""

    he: str
    msi: str
    out: str
    transform: str | None = None
    mz: tuple[float, ...] | None = None  # None: the top n_peaks of the mean spectrum
    n_peaks: int = 50
    tolerance: Tolerance | tuple[float, str] = DEFAULT_TOLERANCE
    norm: str = "tic"
    synthetic: str | None = None
    landmarks_he: str | None = None
    landmarks_msi: str | None = None
    annotations: str | None = None  # QuPath GeoJSON on the H&E
    he_pixel_um: float | None = None
    msi_pixel_um: float | None = None
    field_step: int = 1
    overwrite: bool = False


def iter_export_spatialdata(
    cfg: SpatialDataExportConfig, cancel: CancelToken | None = None
) -> Generator[Progress, None, Path]:
    """Export one section as a SpatialData store.

    Parameters
    ----------
    cfg : SpatialDataExportConfig
        The job's input files, transform, pixel sizes and outputs.
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress

    Returns
    -------
    Path
        The store.
    """
    from ..interop._files import check_writable
    from ..interop.geojson import read_geojson
    from ..interop.spatialdata_store import Section, _require, write_spatialdata
    from ..io.histology import read_histology, to_uint8_rgb
    from ..io.imzml import open_imzml
    from ..io.points import read_points_csv
    from ..msi.ion_images import Tolerance, iter_ion_images
    from ..msi.peaks import iter_top_peaks
    from ..registration.transforms import Transform

    _require()  # fail before any long work when the extra is missing
    inputs = [cfg.he, cfg.msi, cfg.transform, cfg.synthetic, cfg.annotations]
    check_writable(cfg.out, cfg.overwrite, inputs)
    _, he_px = he_geometry(cfg.he, cfg.he_pixel_um)
    he = read_histology(cfg.he)
    lv0 = he.levels[0]
    if not isinstance(lv0, np.ndarray) and lv0.dtype == np.uint8 and lv0.shape[-1] >= 3:
        rgb = lv0  # a lazy (dask) slide: the store is written chunk by chunk
    else:
        rgb = to_uint8_rgb(np.asarray(lv0)[..., :3])
    yield Progress(1, 5, "H&E read")
    tol = Tolerance.coerce(cfg.tolerance)
    with open_imzml(cfg.msi) as imz:
        msi_px = imz.pixel_size_um or ((cfg.msi_pixel_um,) * 2 if cfg.msi_pixel_um else None)
        if msi_px is None:
            raise ValueError(f"{cfg.msi}: no pixel size in the imzML; give it (--msi-pixel-um)")
        mz = cfg.mz
        if mz is None:
            mz = yield from iter_top_peaks(imz, cfg.n_peaks, cfg.norm, cancel=cancel)
        ions = yield from iter_ion_images(imz, mz, tolerance=tol, norm=cfg.norm, cancel=cancel)
    synth = synth_px = None
    if cfg.synthetic:
        s = read_histology(cfg.synthetic)
        synth = to_uint8_rgb(np.asarray(s.levels[0])[..., :3])
        synth_px = s.pixel_size_um
        if synth_px is None:
            raise ValueError(f"{cfg.synthetic}: the synthetic H&E has no pixel size")
    if (cfg.landmarks_he is None) != (cfg.landmarks_msi is None):
        raise ValueError("give both landmark files (H&E and MSI) or neither")
    sec = Section(
        he_rgb=rgb,
        he_px=he_px,
        ion_stack=ions.stack,
        mz=np.asarray(ions.mz, float),
        msi_px=tuple(float(v) for v in msi_px),
        msi_mask=ions.mask,
        tolerance=tol.as_dict(),
        norm=ions.norm,
        transform=Transform.load(cfg.transform) if cfg.transform else None,
        synthetic_rgb=synth,
        synthetic_px=synth_px,
        landmarks_he_um=read_points_csv(cfg.landmarks_he) if cfg.landmarks_he else None,
        landmarks_msi_um=read_points_csv(cfg.landmarks_msi) if cfg.landmarks_msi else None,
        annotations=read_geojson(cfg.annotations) if cfg.annotations else [],
        meta={"he": Path(cfg.he).resolve(), "imzml": Path(cfg.msi).resolve()},
    )
    if sec.annotations and sec.transform is None:
        raise ValueError("annotations need a registration (--transform) to reach the MSI pixels")
    yield Progress(3, 5, "writing store")
    if cancel is not None:
        cancel.check()
    path = write_spatialdata(cfg.out, sec, cfg.overwrite, cfg.field_step, inputs=inputs)
    yield Progress(5, 5, "done")
    return path


def iter_read_spatialdata(
    store: str, cancel: CancelToken | None = None
) -> Generator[Progress, None, Section]:
    """Read a SpatialData store of this package back into one section.

    The reading half of ``import-spatialdata``, which then writes files, and of the Export
    widget's Import, which adds layers.

    Parameters
    ----------
    store : str
        A store written by :func:`iter_export_spatialdata`.
    cancel : CancelToken, optional
        Checked after reading; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress

    Returns
    -------
    Section
        :class:`napari_msi2hist.interop.spatialdata_store.Section`: the H&E, ion images, transform,
        landmarks and annotations.
    """
    from ..interop.spatialdata_read import read_spatialdata

    sec = read_spatialdata(store)
    yield Progress(1, 1, "store read")
    if cancel is not None:
        cancel.check()
    return sec


@dataclass(frozen=True)
class SpatialDataImportConfig:
    """A SpatialData store of this package -> files (``import-spatialdata``)."""

    store: str
    out_dir: str
    overwrite: bool = False


def iter_import_spatialdata(
    cfg: SpatialDataImportConfig, cancel: CancelToken | None = None
) -> Generator[Progress, None, dict]:
    """Files back from a store of this package.

    Writes ``he.ome.tif``, ``ion_images.ome.tif``, ``transform.json/.h5``, the landmark CSVs,
    ``annotations_he.geojson`` and ``pairs.yaml`` (an entry ``msi2hist train`` reads; its imzML is the
    one the store was made from) into ``cfg.out_dir``, all or nothing.

    Parameters
    ----------
    cfg : SpatialDataImportConfig
        The job's input files, transform, pixel sizes and outputs.
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress

    Returns
    -------
    dict
        ``{kind: path}`` of the files written.
    """
    import yaml

    from ..interop._files import check_writable
    from ..interop.geojson import write_geojson
    from ..io.histology import write_ome_tiff
    from ..io.points import write_points_csv

    check_writable(cfg.out_dir, cfg.overwrite, [cfg.store])
    sec = yield from iter_read_spatialdata(cfg.store, cancel)
    out = Path(cfg.out_dir)
    tmp = _fresh_dir(out, cfg.overwrite, [cfg.store])
    try:
        write_ome_tiff(tmp / "he.ome.tif", sec.he_rgb, sec.he_px)
        names = [f"mz={m:.4f}" for m in sec.mz]
        write_ome_tiff(tmp / "ion_images.ome.tif", sec.ion_stack, sec.msi_px, channel_names=names)
        files = {"he": "he.ome.tif", "ion_images": "ion_images.ome.tif"}
        if sec.synthetic_rgb is not None:
            write_ome_tiff(tmp / "synthetic_he.ome.tif", sec.synthetic_rgb, sec.synthetic_px)
            files["synthetic"] = "synthetic_he.ome.tif"
        if sec.transform is not None:
            sec.transform.save(tmp / "transform.json", tmp / "transform.h5")
            files["transform"] = "transform.json"
        for key, pts in (
            ("landmarks_he", sec.landmarks_he_um),
            ("landmarks_msi", sec.landmarks_msi_um),
        ):
            if pts is not None:
                write_points_csv(tmp / f"{key}.csv", pts)
                files[key] = f"{key}.csv"
        if sec.annotations:
            write_geojson(tmp / "annotations_he.geojson", sec.annotations)
            files["annotations"] = "annotations_he.geojson"
        imzml = sec.meta.get("imzml")
        entry = {"name": Path(cfg.store).stem, "imzml": imzml, "he": "he.ome.tif"}
        entry["align"] = {"transform": "transform.json"} if sec.transform is not None else "aligned"
        (tmp / "pairs.yaml").write_text(yaml.safe_dump({"samples": [entry]}, sort_keys=False))
        files["pairs"] = "pairs.yaml"
        yield Progress(2, 3, "files written")
        if cancel is not None:
            cancel.check()
        _finish_dir(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    yield Progress(3, 3, "done")
    return {k: str(out / v) for k, v in files.items()}


__all__ = [
    "AnnotationsToMsiConfig",
    "ElastixExportConfig",
    "ElastixImportConfig",
    "MsiRegionsToGeojsonConfig",
    "SpatialDataExportConfig",
    "SpatialDataImportConfig",
    "he_geometry",
    "iter_annotations_to_msi",
    "iter_export_elastix",
    "iter_export_spatialdata",
    "iter_import_elastix",
    "iter_import_spatialdata",
    "iter_msi_regions_to_geojson",
    "iter_read_spatialdata",
    "msi_geometry",
    "read_label_image",
]
