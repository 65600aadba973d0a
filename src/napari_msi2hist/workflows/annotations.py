"""QuPath GeoJSON jobs: H&E annotations to the MSI frame, and MSI regions to GeoJSON.

Annotations on the H&E -> the MSI frame (GeoJSON, labels, class table), and MSI regions -> GeoJSON
in H&E pixels. Shared by ``msi2hist annotations-to-msi`` / ``regions-to-geojson`` and the Export
widget.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..progress import CancelToken, Progress
from ._inputs import _finish_dir, _fresh_dir, he_geometry, msi_geometry


@dataclass(frozen=True)
class AnnotationsToMsiConfig:
    """QuPath GeoJSON annotations on the H&E -> class labels on the MSI grid (``annotations-to-msi``)."""

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
        The job's input files, transform, pixel sizes and outputs.
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising :class:`~napari_msi2hist.progress.Cancelled`.

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
    from ..interop._files import check_writable
    from ..interop.geojson import map_features, mapper, read_geojson, write_geojson
    from ..interop.regions import class_counts, class_names, class_table_rows, rasterize
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
    """A label image on the MSI grid -> QuPath GeoJSON on the H&E (``regions-to-geojson``)."""

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
    """Read an integer label image on the MSI grid from a TIFF or ``.npy``.

    Parameters
    ----------
    path : path-like
        A TIFF/OME-TIFF or a ``.npy`` file.
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
        Checked between steps; when set, the job stops by raising :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress

    Returns
    -------
    Path
        The GeoJSON written.
    """
    from ..interop._files import check_writable
    from ..interop.geojson import map_features, mapper, read_geojson, write_geojson
    from ..interop.regions import labels_to_features
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
