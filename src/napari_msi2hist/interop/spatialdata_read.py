"""Reading a SpatialData store of this package back into a :class:`~.spatialdata_store.Section`
(the inverse of :func:`~.spatialdata_store.write_spatialdata`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..registration.transforms import Transform
from .spatialdata_store import FORMAT, Section, _require


def read_store(path: str | os.PathLike):
    """The ``SpatialData`` object of a store written by this package.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    spatialdata.SpatialData

    Raises
    ------
    ValueError
        Not a folder, not readable, or not written by this package (the message names the path).
    """
    _require()
    import spatialdata as sd

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a SpatialData Zarr store (not a folder)")
    try:
        sdata = sd.read_zarr(path)
    except Exception as e:  # the reader raises many kinds on a broken store
        raise ValueError(
            f"{path}: not a readable SpatialData store ({type(e).__name__}: {e})"
        ) from e
    meta = (sdata.attrs or {}).get("msi2hist")
    if not meta or meta.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not a napari-msi2hist store (no attrs['msi2hist'] of {FORMAT!r})"
        )
    return sdata


def _raster(el) -> np.ndarray:
    """Full-resolution array of an image/labels element (multiscale or not)."""
    if hasattr(el, "children") and "scale0" in getattr(el, "children", {}):
        el = next(iter(el["scale0"].ds.data_vars.values()))
    return np.asarray(el.data)


def _points_yx(sdata, name):
    if name not in sdata.points:
        return None
    df = sdata.points[name].compute().sort_values("index_in_file")
    return np.column_stack([df["y"].to_numpy(float), df["x"].to_numpy(float)])


def _features(sdata, he_px) -> list:
    from .geojson import Feature, world_yx_um_to_qupath_xy

    if "annotations_he" not in sdata.shapes:
        return []

    def ring(coords):
        xy = np.asarray(coords, float)[:-1, :2]
        return world_yx_um_to_qupath_xy(xy[:, ::-1], he_px)

    out = []
    gdf = sdata.shapes["annotations_he"]
    for cls, g in zip(gdf["classification"], gdf.geometry):
        polys = list(g.geoms) if g.geom_type == "MultiPolygon" else [g]
        rings = [[ring(p.exterior.coords)] + [ring(h.coords) for h in p.interiors] for p in polys]
        out.append(Feature(rings, classification=cls or None))
    return out


def read_spatialdata(path: str | os.PathLike) -> Section:
    """The :class:`Section` a store of this package holds (what napari and the CLI import).

    Parameters
    ----------
    path : path-like

    Returns
    -------
    Section
        The transform comes from ``msi2hist/transform.json`` (exact, B-spline too), else from the
        stored affine of a linear result.
    """
    path = Path(path)
    sdata = read_store(path)
    meta = sdata.attrs["msi2hist"]
    he_px = tuple(meta["he_pixel_size_um"])
    msi_px = tuple(meta["msi_pixel_size_um"])
    table = sdata.tables["msi"]
    info = table.uns["msi2hist"]
    tr = None
    reg = meta.get("registration") or {}
    if reg.get("present"):
        if (path / "msi2hist" / "transform.json").is_file():
            tr = Transform.load(path / "msi2hist" / "transform.json")
        elif reg.get("linear"):
            tr = Transform.from_moving_to_fixed_matrix(np.asarray(reg["matrix_yx_um"], float))
        else:
            raise ValueError(f"{path}: a B-spline registration without msi2hist/transform.h5")
    lab = _raster(sdata.labels["msi_pixels"])
    synth = None
    if "synthetic_he" in sdata.images:
        synth = np.moveaxis(_raster(sdata.images["synthetic_he"]), 0, -1)
    sp = meta.get("synthetic_pixel_size_um")
    return Section(
        he_rgb=np.moveaxis(_raster(sdata.images["he"]), 0, -1),
        he_px=he_px,
        ion_stack=_raster(sdata.images["ion_images"]).astype(np.float32),
        mz=table.var["mz"].to_numpy(float),
        msi_px=msi_px,
        msi_mask=lab > 0,
        tolerance=dict(info["tolerance"]),
        norm=str(info["normalisation"]),
        transform=tr,
        synthetic_rgb=synth,
        synthetic_px=tuple(sp) if sp else None,
        landmarks_he_um=_points_yx(sdata, "landmarks_he"),
        landmarks_msi_um=_points_yx(sdata, "landmarks_msi"),
        annotations=_features(sdata, he_px),
        meta=dict(meta.get("source") or {}),
    )
