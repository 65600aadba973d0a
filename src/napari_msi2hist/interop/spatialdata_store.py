"""One SpatialData (scverse, OME-NGFF Zarr) store per section: export and import.

Needs the optional extra ``pip install "napari-msi2hist[spatialdata]"``; ``spatialdata`` is imported
only inside the functions here, so the rest of the package works without it.

Layout of a store written by :func:`write_spatialdata`:

- images ``he`` (multiscale RGB), ``synthetic_he`` (optional), ``ion_images`` (one channel per m/z,
  named ``mz=<value>``), ``msi_to_he_displacement_um`` (B-spline results only, see below);
- labels ``msi_pixels``: measured MSI pixel ``k`` (row-major) has label ``k + 1``;
- table ``msi``: AnnData pixels x m/z linked to ``msi_pixels`` (``region``/``instance_id``), with
  ``row, col, y_um, x_um`` (and ``annotation_class`` when annotations were given) in ``obs``, ``mz`` in
  ``var``, tolerance, normalisation and pixel sizes in ``uns["msi2hist"]``;
- points ``landmarks_he`` / ``landmarks_msi``; shapes ``annotations_he`` (QuPath classes kept);
- ``msi2hist/transform.json`` + ``.h5``: the registration as this package and ITK read it.

Coordinate systems (all in micrometres, pixel CENTRES at ``index * pixel size`` as everywhere in this
package; SpatialData puts pixel centres at ``index + 0.5`` in an element's intrinsic frame, hence a
``Translation(-0.5)`` in front of each raster's ``Scale``):

- ``msi``: the MSI frame; ``he``: the H&E frame;
- ``global``: the H&E frame, where MSI elements arrive through the registration. A linear result is an
  exact ``Affine``. SpatialData has no non-linear transformation yet, so for a B-spline result the MSI
  elements carry the least-squares affine part and the image ``msi_to_he_displacement_um`` holds the
  remainder ``D`` (channels ``dx_um, dy_um``) sampled on the MSI frame: ``he = Affine(msi) + D(msi)``,
  ``D`` interpolated bilinearly (nearest edge value outside). :func:`msi_to_global` applies both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..registration.transforms import Transform, yx_to_xy
from .registration_field import FIELD, msi_to_global, registration_parts  # noqa: F401

FORMAT = "napari-msi2hist spatialdata v1"


@dataclass
class Section:
    """Everything one store holds, in this package's conventions (yx, um, QuPath px for annotations)."""

    he_rgb: np.ndarray  # (Y, X, 3) uint8
    he_px: tuple[float, float]
    ion_stack: np.ndarray  # (C, Ym, Xm) float32
    mz: np.ndarray
    msi_px: tuple[float, float]
    msi_mask: np.ndarray
    tolerance: dict  # {"value", "unit"}
    norm: str
    transform: Transform | None = None  # fixed (H&E) -> moving (MSI), ITK convention
    synthetic_rgb: np.ndarray | None = None
    synthetic_px: tuple[float, float] | None = None
    landmarks_he_um: np.ndarray | None = None
    landmarks_msi_um: np.ndarray | None = None
    annotations: list = field(default_factory=list)  # geojson.Feature in H&E QuPath px
    meta: dict = field(default_factory=dict)


def _require():
    try:
        import spatialdata  # noqa: F401
    except ImportError as e:
        raise ImportError(
            'SpatialData export/import needs the optional extra: pip install "napari-msi2hist[spatialdata]"'
        ) from e


def _raster_to_world(px_yx, origin_yx=(0.0, 0.0)):
    from spatialdata.transformations import Scale, Sequence, Translation

    return Sequence(
        [
            Translation([-0.5, -0.5], axes=("y", "x")),
            Scale([float(px_yx[0]), float(px_yx[1])], axes=("y", "x")),
            Translation([float(origin_yx[0]), float(origin_yx[1])], axes=("y", "x")),
        ]
    )


def _xy_affine(m_yx: np.ndarray) -> np.ndarray:
    m = np.eye(3)
    m[:2, :2] = yx_to_xy(m_yx[:2, :2])
    m[:2, 2] = yx_to_xy(m_yx[:2, 2])
    return m


def _points(yx_um, tr_map):
    import pandas as pd
    from spatialdata.models import PointsModel

    p = np.asarray(yx_um, float)
    df = pd.DataFrame({"x": p[:, 1], "y": p[:, 0], "index_in_file": np.arange(len(p))})
    return PointsModel.parse(df, coordinates={"x": "x", "y": "y"}, transformations=tr_map)


def _shapes(features, he_px, tr_map):
    import geopandas as gpd
    from shapely.geometry import MultiPolygon, Polygon
    from spatialdata.models import ShapesModel

    from .geojson import qupath_xy_to_world_yx_um

    def xy_um(ring):
        return qupath_xy_to_world_yx_um(ring, he_px)[:, ::-1]

    geoms, cls = [], []
    for f in features:
        if f.polygons:
            polys = [Polygon(xy_um(p[0]), [xy_um(h) for h in p[1:]]) for p in f.polygons]
            geoms.append(polys[0] if len(polys) == 1 else MultiPolygon(polys))
            cls.append(f.classification or "")
    if not geoms:
        return None
    gdf = gpd.GeoDataFrame({"classification": cls, "geometry": geoms})
    return ShapesModel.parse(gdf, transformations=tr_map)


def to_spatialdata(sec: Section, field_step: int = 1):
    """The in-memory ``SpatialData`` object for a section (layout: module docstring).

    Parameters
    ----------
    sec : Section
    field_step : int
        Displacement-field samples per MSI pixel (B-spline results).

    Returns
    -------
    spatialdata.SpatialData

    Raises
    ------
    ImportError
        Without the ``spatialdata`` extra (one line saying how to install it).
    """
    _require()
    import anndata as ad
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, Labels2DModel, TableModel
    from spatialdata.transformations import Affine, Identity, Sequence

    from .. import __version__
    from .geojson import map_features, mapper
    from .regions import class_names, rasterize

    he_w = _raster_to_world(sec.he_px)
    msi_w = _raster_to_world(sec.msi_px)
    ident = Identity()
    msi_shape = sec.ion_stack.shape[-2:]
    reg: dict = {"present": sec.transform is not None}
    images, labels, points, shapes = {}, {}, {}, {}
    to_global = None
    if sec.transform is not None:
        m_yx, fld = registration_parts(sec.transform, msi_shape, sec.msi_px, field_step)
        to_global = Affine(_xy_affine(m_yx), input_axes=("x", "y"), output_axes=("x", "y"))
        reg.update(
            linear=fld is None,
            matrix_yx_um=m_yx.tolist(),
            itk_file="msi2hist/transform.h5",
            direction="MSI um -> H&E um (global); the ITK file maps H&E -> MSI (ITK convention)",
        )
        if fld is not None:
            v = np.concatenate(
                [np.moveaxis(fld["values"][..., ::-1], -1, 0), fld["valid"][None]]
            ).astype(np.float64)  # (3: dx, dy, valid; Y, X)
            images[FIELD] = Image2DModel.parse(
                v,
                dims=("c", "y", "x"),
                c_coords=["dx_um", "dy_um", "valid"],
                transformations={
                    "msi": _raster_to_world(fld["spacing_yx_um"], fld["origin_yx_um"])
                },
            )
            reg.update(
                field_element=FIELD,
                field_formula="he_um = Affine(msi_um) + D(msi_um), D bilinear on the field's samples",
                field_invalid_fraction=float(1 - fld["valid"].mean()),
                field_invalid_note="samples with valid=0 have no preimage under the registration "
                "(beyond the B-spline's domain or folded): their D is the nearest valid value",
            )

    def msi_map(base):
        d = {"msi": base}
        if to_global is not None:
            d["global"] = Sequence([base, to_global])
        return d

    n_lv = 1
    while min(sec.he_rgb.shape[:2]) // 2**n_lv >= 64 and n_lv < 6:
        n_lv += 1
    import dask.array as da

    if isinstance(sec.he_rgb, da.Array):  # a large slide stays lazy: written chunk by chunk
        he_cyx = da.moveaxis(sec.he_rgb[..., :3].astype(np.uint8), -1, 0).rechunk((3, 1024, 1024))
    else:
        he_cyx = np.moveaxis(np.asarray(sec.he_rgb, np.uint8), -1, 0)
    images["he"] = Image2DModel.parse(
        he_cyx,
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=[2] * (n_lv - 1) if n_lv > 1 else None,
        transformations={"he": he_w, "global": he_w},
    )
    names = [f"mz={m:.4f}" for m in sec.mz]
    images["ion_images"] = Image2DModel.parse(
        np.asarray(sec.ion_stack, np.float32),
        dims=("c", "y", "x"),
        c_coords=names,
        transformations=msi_map(msi_w),
    )
    if sec.synthetic_rgb is not None:
        images["synthetic_he"] = Image2DModel.parse(
            np.moveaxis(np.asarray(sec.synthetic_rgb, np.uint8), -1, 0),
            dims=("c", "y", "x"),
            c_coords=["r", "g", "b"],
            transformations=msi_map(_raster_to_world(sec.synthetic_px or sec.msi_px)),
        )
    mask = np.asarray(sec.msi_mask, bool)
    rr, cc = np.nonzero(mask)
    lab = np.zeros(msi_shape, np.int32)
    lab[rr, cc] = np.arange(1, len(rr) + 1)
    labels["msi_pixels"] = Labels2DModel.parse(lab, dims=("y", "x"), transformations=msi_map(msi_w))
    obs = pd.DataFrame(
        {
            "instance_id": np.arange(1, len(rr) + 1),
            "region": pd.Categorical(["msi_pixels"] * len(rr)),
            "row": rr,
            "col": cc,
            "y_um": rr * float(sec.msi_px[0]),
            "x_um": cc * float(sec.msi_px[1]),
        },
        index=[f"px{k}" for k in range(len(rr))],
    )
    cls_names: list[str] = []
    if sec.annotations and sec.transform is not None:
        feats = [f for f in sec.annotations if f.polygons]
        cls_names = class_names(feats)
        step = float(min(sec.msi_px)) / float(min(sec.he_px))
        on_msi = map_features(
            feats, mapper(sec.transform, "he_to_msi", sec.he_px, sec.msi_px), step
        )
        cl = rasterize(on_msi, msi_shape, cls_names)
        obs["annotation_class"] = pd.Categorical(
            np.array([""] + cls_names, dtype=object)[cl[rr, cc]], categories=[""] + cls_names
        )
    var = pd.DataFrame({"mz": np.asarray(sec.mz, float)}, index=names)
    x = np.asarray(sec.ion_stack, np.float32)[:, rr, cc].T
    uns = {
        "msi2hist": {
            "tolerance": dict(sec.tolerance),
            "normalisation": sec.norm,
            "msi_pixel_size_um": [float(v) for v in sec.msi_px],
            "annotation_classes": cls_names,
        }
    }
    table = TableModel.parse(
        ad.AnnData(X=x, obs=obs, var=var, uns=uns),
        region="msi_pixels",
        region_key="region",
        instance_key="instance_id",
    )
    if sec.landmarks_he_um is not None:
        points["landmarks_he"] = _points(sec.landmarks_he_um, {"he": ident, "global": ident})
    if sec.landmarks_msi_um is not None:
        points["landmarks_msi"] = _points(sec.landmarks_msi_um, msi_map(ident))
    if sec.annotations:
        s = _shapes(sec.annotations, sec.he_px, {"he": ident, "global": ident})
        if s is not None:
            shapes["annotations_he"] = s
    attrs = {
        "msi2hist": {
            "format": FORMAT,
            "package_version": __version__,
            "he_pixel_size_um": [float(v) for v in sec.he_px],
            "msi_pixel_size_um": [float(v) for v in sec.msi_px],
            "synthetic_pixel_size_um": list(sec.synthetic_px) if sec.synthetic_px else None,
            "coordinate_systems": {
                "msi": "MSI micrometres, pixel centres at index * pixel size",
                "he": "H&E micrometres, pixel centres at index * pixel size",
                "global": "H&E micrometres; MSI elements placed through the registration",
            },
            "registration": reg,
            "source": {k: str(v) for k, v in sec.meta.items()},
        }
    }
    return SpatialData(
        images=images,
        labels=labels,
        points=points,
        shapes=shapes,
        tables={"msi": table},
        attrs=attrs,
    )


def write_spatialdata(
    path: str | os.PathLike, sec: Section, overwrite: bool = False, field_step: int = 1, inputs=()
) -> Path:
    """Write the store for ``sec``, all or nothing.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` folder; written into a temporary sibling, renamed into place when complete.
    sec : Section
    overwrite : bool
        Replace an existing store (moved aside, removed after the rename).
    field_step : int
        Displacement-field samples per MSI pixel.
    inputs : iterable of path-like
        Paths that must never be replaced.

    Returns
    -------
    Path
    """
    import shutil

    from ._files import check_writable, replace_dir, temp_sibling_dir

    path = check_writable(path, overwrite, inputs)
    sdata = to_spatialdata(sec, field_step)
    tmp = temp_sibling_dir(path)
    try:
        store = tmp / "store.zarr"
        sdata.write(store)
        if sec.transform is not None:
            (store / "msi2hist").mkdir()
            sec.transform.save(
                store / "msi2hist" / "transform.json", store / "msi2hist" / "transform.h5"
            )
        os.replace(store, tmp.with_suffix(".ready"))
        shutil.rmtree(tmp)
        replace_dir(tmp.with_suffix(".ready"), path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp.with_suffix(".ready"), ignore_errors=True)
        raise
    return path
