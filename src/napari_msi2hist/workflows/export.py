"""Interop jobs shared by the CLI and the Export widget: SpatialData export/import, QuPath GeoJSON
both ways, elastix TransformParameters both ways. Each job is a generator yielding
:class:`~napari_msi2hist.progress.Progress` and taking a frozen config; multi-file outputs are written
into a temporary sibling folder and renamed into place (all or nothing)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..progress import CancelToken, Progress


# ----------------------------------------------------------------------------- shared helpers
def he_geometry(path, pixel_um: float | None = None) -> tuple[tuple[int, int], tuple[float, float]]:
    """Shape and pixel size of an H&E file without loading its pixels.

    Parameters
    ----------
    path : path-like
    pixel_um : float, optional
        The pixel size when the file does not give it (refused if it contradicts the file).

    Returns
    -------
    shape_yx : tuple of int
    pixel_size_yx_um : tuple of float

    Raises
    ------
    ValueError
        No pixel size in the file and none given.
    """
    from ..io.histology import read_histology

    img = read_histology(path, lazy=True)
    px = img.pixel_size_um or ((pixel_um, pixel_um) if pixel_um else None)
    if pixel_um and img.pixel_size_um and not np.allclose(img.pixel_size_um, pixel_um):
        raise ValueError(f"{path}: the file says {img.pixel_size_um} um per pixel, not {pixel_um}")
    if px is None:
        raise ValueError(f"{path}: no pixel size in the file; give it (--he-pixel-um)")
    return tuple(int(v) for v in img.levels[0].shape[:2]), tuple(float(v) for v in px)


def msi_geometry(path, pixel_um: float | None = None):
    """Grid of an imzML.

    Parameters
    ----------
    path : path-like
    pixel_um : float, optional
        The pixel size when the imzML does not give it.

    Returns
    -------
    shape_yx : tuple of int
    pixel_size_yx_um : tuple of float
    mask : ndarray of bool
        Measured pixels.
    """
    from ..io.imzml import open_imzml

    with open_imzml(path) as imz:
        px = imz.pixel_size_um or ((pixel_um, pixel_um) if pixel_um else None)
        if px is None:
            raise ValueError(f"{path}: no pixel size in the imzML; give it (--msi-pixel-um)")
        return tuple(imz.shape_yx), tuple(float(v) for v in px), imz.measured_mask()


def _fresh_dir(out: Path, overwrite: bool, inputs=()):
    from ..io._interop_files import check_writable, temp_sibling_dir

    check_writable(out, overwrite, inputs)
    return temp_sibling_dir(out)


def _finish_dir(tmp: Path, out: Path) -> None:
    from ..io._interop_files import replace_dir

    replace_dir(tmp, out)


# ----------------------------------------------------------------------------- SpatialData
@dataclass(frozen=True)
class SpatialDataExportConfig:
    he: str
    msi: str
    out: str
    transform: str | None = None
    mz: tuple[float, ...] | None = None  # None: the top n_peaks of the mean spectrum
    n_peaks: int = 50
    tolerance: tuple[float, str] = (10.0, "ppm")
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
    cancel : CancelToken, optional

    Yields
    ------
    Progress

    Returns
    -------
    Path
        The store.
    """
    from ..io._interop_files import check_writable
    from ..io.geojson import read_geojson
    from ..io.histology import read_histology, to_uint8_rgb
    from ..io.imzml import open_imzml
    from ..io.spatialdata_store import Section, _require, write_spatialdata
    from ..msi.ion_images import Tolerance, iter_ion_images
    from ..msi.peaks import iter_top_peaks
    from ..phantom import read_points_csv
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
    tol = Tolerance(*cfg.tolerance)
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


@dataclass(frozen=True)
class SpatialDataImportConfig:
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
    cancel : CancelToken, optional

    Yields
    ------
    Progress

    Returns
    -------
    dict
        ``{kind: path}`` of the files written.
    """
    import yaml

    from ..io._interop_files import check_writable
    from ..io.geojson import write_geojson
    from ..io.histology import write_ome_tiff
    from ..io.spatialdata_store import read_spatialdata
    from ..phantom import write_points_csv

    check_writable(cfg.out_dir, cfg.overwrite, [cfg.store])
    sec = read_spatialdata(cfg.store)
    yield Progress(1, 3, "store read")
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


# ----------------------------------------------------------------------------- GeoJSON
@dataclass(frozen=True)
class AnnotationsToMsiConfig:
    geojson: str  # QuPath annotations on the H&E (x, y in H&E pixels)
    transform: str
    he: str
    msi: str
    out_dir: str
    he_pixel_um: float | None = None
    msi_pixel_um: float | None = None
    overwrite: bool = False


def iter_annotations_to_msi(
    cfg: AnnotationsToMsiConfig, cancel: CancelToken | None = None
) -> Generator[Progress, None, dict]:
    """QuPath annotations on the H&E -> the MSI frame.

    Writes in ``cfg.out_dir`` (all or nothing): ``annotations_msi.geojson`` (MSI pixels),
    ``labels_msi.tif`` (class index per MSI pixel), ``classes.csv`` (one row per measured pixel) and
    ``class_counts.csv``. Edges are densified to one MSI pixel before mapping.

    Parameters
    ----------
    cfg : AnnotationsToMsiConfig
    cancel : CancelToken, optional

    Yields
    ------
    Progress

    Returns
    -------
    dict
        ``counts`` (per class, measured pixels), ``names`` (class order of the labels), ``files``.
    """
    import tifffile

    from .._files import rows_to_csv
    from ..io._interop_files import check_writable
    from ..io.geojson import (
        class_counts,
        class_names,
        class_table_rows,
        map_features,
        mapper,
        rasterize,
        read_geojson,
        write_geojson,
    )
    from ..registration.transforms import Transform

    check_writable(cfg.out_dir, cfg.overwrite, [cfg.geojson, cfg.transform, cfg.he, cfg.msi])
    feats = read_geojson(cfg.geojson)
    if not feats:
        raise ValueError(f"{cfg.geojson}: no Polygon, MultiPolygon or Point in this GeoJSON")
    tr = Transform.load(cfg.transform)
    _, he_px = he_geometry(cfg.he, cfg.he_pixel_um)
    shape, msi_px, mask = msi_geometry(cfg.msi, cfg.msi_pixel_um)
    yield Progress(1, 3, "inputs read")
    step = float(min(msi_px)) / float(min(he_px))  # densify edges to one MSI pixel
    on_msi = map_features(feats, mapper(tr, "he_to_msi", he_px, msi_px), step)
    names = class_names(on_msi)
    lab = rasterize(on_msi, shape, names)
    counts = class_counts(lab, names, mask)
    if cancel is not None:
        cancel.check()
    out = Path(cfg.out_dir)
    tmp = _fresh_dir(out, cfg.overwrite, [cfg.geojson, cfg.transform, cfg.he, cfg.msi])
    try:
        write_geojson(tmp / "annotations_msi.geojson", on_msi)
        tifffile.imwrite(tmp / "labels_msi.tif", lab.astype(np.uint16))
        (tmp / "classes.csv").write_text(rows_to_csv(class_table_rows(lab, names, msi_px, mask)))
        (tmp / "class_counts.csv").write_text(
            rows_to_csv([{"class": k, "msi_pixels": v} for k, v in counts.items()])
        )
        _finish_dir(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    yield Progress(3, 3, "done")
    files = ["annotations_msi.geojson", "labels_msi.tif", "classes.csv", "class_counts.csv"]
    return {"counts": counts, "names": names, "files": [str(out / f) for f in files]}


@dataclass(frozen=True)
class MsiRegionsToGeojsonConfig:
    regions: str  # a label image on the MSI grid (.tif/.npy) or a GeoJSON in MSI pixels
    transform: str
    he: str
    msi: str
    out: str
    names: tuple[tuple[int, str], ...] = ()
    labels: np.ndarray | None = None  # a label image given directly (a napari Labels layer)
    he_pixel_um: float | None = None
    msi_pixel_um: float | None = None
    overwrite: bool = False


def read_label_image(path, shape) -> np.ndarray:
    """An integer label image on the MSI grid from a TIFF or ``.npy``.

    Parameters
    ----------
    path : path-like
    shape : tuple of int
        The MSI grid; another shape is refused.

    Returns
    -------
    ndarray of int
    """
    p = Path(path)
    if p.suffix.lower() == ".npy":
        lab = np.load(p, allow_pickle=False)
    else:
        import tifffile

        lab = tifffile.imread(p)
    lab = np.squeeze(lab)
    if lab.shape != tuple(shape) or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(
            f"{path}: a label image must be integer on the MSI grid {tuple(shape)}, "
            f"not {lab.dtype} {lab.shape}"
        )
    return lab


def iter_msi_regions_to_geojson(
    cfg: MsiRegionsToGeojsonConfig, cancel: CancelToken | None = None
) -> Generator[Progress, None, Path]:
    """MSI regions -> QuPath GeoJSON in H&E pixels (opens on the original slide).

    Parameters
    ----------
    cfg : MsiRegionsToGeojsonConfig
        ``labels`` (an array) or ``regions`` (a label image file or a GeoJSON in MSI pixels).
    cancel : CancelToken, optional

    Yields
    ------
    Progress

    Returns
    -------
    Path
        The GeoJSON written.
    """
    from ..io._interop_files import check_writable
    from ..io.geojson import labels_to_features, map_features, mapper, read_geojson, write_geojson
    from ..registration.transforms import Transform

    check_writable(cfg.out, cfg.overwrite, [cfg.regions or None, cfg.transform, cfg.he, cfg.msi])
    tr = Transform.load(cfg.transform)
    _, he_px = he_geometry(cfg.he, cfg.he_pixel_um)
    shape, msi_px, _ = msi_geometry(cfg.msi, cfg.msi_pixel_um)
    if cfg.labels is not None:
        lab = np.asarray(cfg.labels)
        if lab.shape != tuple(shape) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"the label image must be integer on the MSI grid {tuple(shape)}")
        feats = labels_to_features(lab, dict(cfg.names))
    elif Path(cfg.regions).suffix.lower() in (".geojson", ".json"):
        feats = read_geojson(cfg.regions)
    else:
        feats = labels_to_features(read_label_image(cfg.regions, shape), dict(cfg.names))
    if not feats:
        raise ValueError(f"{cfg.regions}: no regions to export")
    yield Progress(1, 2, "regions traced")
    on_he = map_features(feats, mapper(tr, "msi_to_he", he_px, msi_px), 0.5)
    if cancel is not None:
        cancel.check()
    inputs = [cfg.regions or None, cfg.transform, cfg.he, cfg.msi]
    path = write_geojson(cfg.out, on_he, cfg.overwrite, inputs)
    yield Progress(2, 2, "done")
    return path


# ----------------------------------------------------------------------------- elastix
@dataclass(frozen=True)
class ElastixExportConfig:
    transform: str
    out_dir: str
    he: str | None = None  # the fixed image (its size goes into the files); default: meta["fixed"]
    he_pixel_um: float | None = None
    overwrite: bool = False


def iter_export_elastix(
    cfg: ElastixExportConfig, cancel: CancelToken | None = None
) -> Generator[Progress, None, list[Path]]:
    """A registration result as elastix TransformParameters files.

    Parameters
    ----------
    cfg : ElastixExportConfig
    cancel : CancelToken, optional

    Yields
    ------
    Progress

    Returns
    -------
    list of Path
        The files; the last one is for transformix ``-tp``.
    """
    from ..io.elastix import write_elastix
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
    """An elastix chain as our ``transform.json``/``.h5`` (H&E fixed, MSI moving).

    Parameters
    ----------
    cfg : ElastixImportConfig
    cancel : CancelToken, optional

    Yields
    ------
    Progress

    Returns
    -------
    dict
        ``transform`` (as saved and loaded back), ``landmarks`` (TRE QA or None) and ``path``.
    """
    from ..io._interop_files import check_writable
    from ..io.elastix import invert_linear, read_elastix
    from ..phantom import read_points_csv
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
        err = np.linalg.norm(tr.moving_to_fixed(lm) - lf, axis=1)
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
    "msi_geometry",
]
