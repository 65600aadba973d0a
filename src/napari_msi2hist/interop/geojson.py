"""QuPath GeoJSON annotations both ways: read/write, map between the H&E and the MSI through any
registration result (linear or B-spline), rasterise to labels, and trace labels back to polygons.

Pixel convention: QuPath (and GeoJSON from it) gives ``x, y`` in pixels of the full-resolution image
with the top-left CORNER of pixel (0, 0) at (0, 0), so pixel ``(r, c)`` has its centre at
``(c + 0.5, r + 0.5)``. Our world frame puts pixel centres at ``index * pixel size`` (um). The only
conversion between the two is :func:`qupath_xy_to_world_yx_um` and its inverse.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..axes import px_to_um, um_to_px, xy_to_yx, yx_to_xy
from ..registration.transforms import Transform

# a colour per class for files we write (QuPath shows them); unknown names cycle through these
_COLOURS = [(200, 0, 0), (0, 150, 0), (0, 0, 200), (200, 150, 0), (150, 0, 200), (0, 150, 200)]


@dataclass
class Feature:
    """One annotation: ``polygons`` is a list of ``[exterior, *holes]`` rings, each ``(N, 2)`` xy in
    QuPath pixels (closed or not); ``points`` is ``(M, 2)`` xy for Point/MultiPoint features."""

    polygons: list[list[np.ndarray]] = field(default_factory=list)
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    classification: str | None = None
    properties: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "polygon" if self.polygons else "point"

    def area_px(self) -> float:
        """Area of the polygons minus their holes (shoelace), in squared pixels."""

        def shoelace(r):
            x, y = r[:, 0], r[:, 1]
            return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))

        return float(sum(shoelace(p[0]) - sum(shoelace(h) for h in p[1:]) for p in self.polygons))


# ----------------------------------------------------------------------------- reading / writing
def _ring(coords, path) -> np.ndarray:
    a = np.asarray(coords, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2 or len(a) < 3 or not np.isfinite(a).all():
        raise ValueError(f"{path}: a polygon ring is not a list of at least 3 finite [x, y] pairs")
    a = a[:, :2]
    return a[:-1] if np.array_equal(a[0], a[-1]) else a


def _classification(props: dict) -> str | None:
    c = props.get("classification")
    if isinstance(c, dict):
        c = c.get("name")
    return str(c) if c not in (None, "") else None


def parse_geojson(obj, path: str = "<geojson>") -> list[Feature]:
    """Features of a GeoJSON object.

    Parameters
    ----------
    obj : dict or list
        A FeatureCollection, a list of features (older QuPath exports), one Feature or a bare geometry.
    path : str
        Named in error messages.

    Returns
    -------
    list of Feature
        Polygons, MultiPolygons (one Feature each, holes kept), Points and MultiPoints with their QuPath
        classification; lines and other geometries are skipped.
    """
    if isinstance(obj, dict) and obj.get("type") == "FeatureCollection":
        items = obj.get("features") or []
    elif isinstance(obj, list):
        items = obj
    else:
        items = [obj]
    out = []
    for it in items:
        if not isinstance(it, dict):
            continue
        geom = it.get("geometry", it) if it.get("type") == "Feature" else it
        props = it.get("properties") or {} if it.get("type") == "Feature" else {}
        if not isinstance(geom, dict):
            continue
        kind, coords = geom.get("type"), geom.get("coordinates")
        cls = _classification(props)
        if kind == "Polygon":
            out.append(
                Feature([[_ring(r, path) for r in coords]], classification=cls, properties=props)
            )
        elif kind == "MultiPolygon":
            polys = [[_ring(r, path) for r in poly] for poly in coords]
            out.append(Feature(polys, classification=cls, properties=props))
        elif kind in ("Point", "MultiPoint"):
            pts = np.atleast_2d(np.asarray(coords, dtype=np.float64))[:, :2]
            out.append(Feature(points=pts, classification=cls, properties=props))
    return out


def read_geojson(path: str | os.PathLike) -> list[Feature]:
    """Annotations of a (QuPath) GeoJSON file.

    Parameters
    ----------
    path : path-like
        The file (x, y in pixels of the full-resolution image).

    Returns
    -------
    list of Feature

    Raises
    ------
    ValueError
        A file that cannot be read or parsed (the message names it), or one over 1 GiB.
    """
    path = Path(path)
    try:
        text = path.read_text()
        if len(text) > 2**30:
            raise ValueError("larger than 1 GiB")
        obj = json.loads(text)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable GeoJSON file ({e})") from e
    return parse_geojson(obj, str(path))


def _closed(r: np.ndarray) -> list:
    r = np.asarray(r, float)
    return np.vstack([r, r[:1]]).tolist()


def feature_to_geojson(f: Feature, colour=None) -> dict:
    """One GeoJSON Feature as QuPath writes it.

    Parameters
    ----------
    f : Feature
    colour : tuple of int, optional
        RGB of the classification.

    Returns
    -------
    dict
        Polygon (or MultiPolygon) with closed rings, or Point/MultiPoint; ``properties.objectType``
        ``annotation`` and ``classification {name, color}``.
    """
    if f.polygons:
        rings = [[_closed(r) for r in poly] for poly in f.polygons]
        geom = (
            {"type": "Polygon", "coordinates": rings[0]}
            if len(rings) == 1
            else {"type": "MultiPolygon", "coordinates": rings}
        )
    else:
        pts = np.asarray(f.points, float).tolist()
        geom = (
            {"type": "Point", "coordinates": pts[0]}
            if len(pts) == 1
            else {"type": "MultiPoint", "coordinates": pts}
        )
    props = {k: v for k, v in f.properties.items() if k != "classification"}
    props.setdefault("objectType", "annotation")
    if f.classification is not None:
        props["classification"] = {"name": f.classification, "color": list(colour or (128,) * 3)}
    fid = f.properties.get("id") if isinstance(f.properties.get("id"), str) else str(uuid.uuid4())
    return {"type": "Feature", "id": fid, "geometry": geom, "properties": props}


def to_geojson(features: list[Feature]) -> dict:
    """A FeatureCollection of ``features``, one colour per class name.

    Parameters
    ----------
    features : list of Feature

    Returns
    -------
    dict
    """
    names = sorted({f.classification for f in features if f.classification})
    colours = {n: _COLOURS[i % len(_COLOURS)] for i, n in enumerate(names)}
    return {
        "type": "FeatureCollection",
        "features": [feature_to_geojson(f, colours.get(f.classification)) for f in features],
    }


def write_geojson(
    path: str | os.PathLike, features: list[Feature], overwrite: bool = False, inputs=()
) -> Path:
    """Write a FeatureCollection QuPath opens (``File > Import objects``), atomically.

    Parameters
    ----------
    path : path-like
        The output file.
    features : list of Feature
    overwrite : bool
        Replace an existing file.
    inputs : iterable of path-like
        Files that must never be replaced.

    Returns
    -------
    Path
    """
    from .._files import write_text_atomic
    from ._files import check_writable

    path = check_writable(path, overwrite, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(to_geojson(features)))


# ----------------------------------------------------------------------------- coordinates
def qupath_xy_to_world_yx_um(xy, pixel_size_yx_um) -> np.ndarray:
    """QuPath pixel coordinates to our world frame.

    Parameters
    ----------
    xy : array_like, (N, 2)
        x, y in pixels, pixel (0, 0) spanning [0, 1).
    pixel_size_yx_um : tuple of float

    Returns
    -------
    ndarray, (N, 2)
        y, x in um with pixel centres at ``index * pixel size``.
    """
    return px_to_um(xy_to_yx(np.asarray(xy, float)) - 0.5, pixel_size_yx_um)


def world_yx_um_to_qupath_xy(yx_um, pixel_size_yx_um) -> np.ndarray:
    """Our world frame to QuPath pixel coordinates (inverse of :func:`qupath_xy_to_world_yx_um`).

    Parameters
    ----------
    yx_um : array_like, (N, 2)
    pixel_size_yx_um : tuple of float

    Returns
    -------
    ndarray, (N, 2)
        x, y in QuPath pixels.
    """
    return yx_to_xy(um_to_px(yx_um, pixel_size_yx_um) + 0.5)


def mapper(transform: Transform, direction: str, he_px_yx, msi_px_yx) -> Callable:
    """A function mapping QuPath xy pixels between the H&E and the MSI grids.

    Parameters
    ----------
    transform : Transform
        A registration result (fixed = H&E, moving = MSI), linear or not.
    direction : {"he_to_msi", "msi_to_he"}
        ``fixed_to_moving`` or ``moving_to_fixed``.
    he_px_yx, msi_px_yx : tuple of float
        Pixel sizes in um; a missing one is refused.

    Returns
    -------
    callable
        ``(N, 2)`` xy pixels of one grid -> ``(N, 2)`` xy pixels of the other.
    """
    if direction == "he_to_msi":
        src, dst, fn = he_px_yx, msi_px_yx, transform.fixed_to_moving
    elif direction == "msi_to_he":
        src, dst, fn = msi_px_yx, he_px_yx, transform.moving_to_fixed
    else:
        raise ValueError(f"direction must be he_to_msi or msi_to_he, not {direction!r}")
    for name, px in (("H&E", he_px_yx), ("MSI", msi_px_yx)):
        if px is None or not all(float(v) > 0 for v in px):
            raise ValueError(f"the {name} pixel size is unknown: give it explicitly")

    def apply(xy):
        xy = np.atleast_2d(np.asarray(xy, float))
        if len(xy) == 0:
            return xy
        return world_yx_um_to_qupath_xy(fn(qupath_xy_to_world_yx_um(xy, src)), dst)

    return apply


def densify(ring: np.ndarray, max_step: float) -> np.ndarray:
    """Insert vertices so that no edge of a closed ring is longer than ``max_step``.

    A curved (B-spline) mapping is then followed along the edges, not only at the corners.

    Parameters
    ----------
    ring : array_like, (N, 2)
    max_step : float
        In the ring's units.

    Returns
    -------
    ndarray
        The original vertices in order, with the inserted ones between them.
    """
    from .._limits import check_allocation

    r = np.asarray(ring, float)
    nxt = np.roll(r, -1, axis=0)
    total = float(np.ceil(np.linalg.norm(nxt - r, axis=1) / max_step).sum())
    check_allocation(16.0 * total, f"a polygon densified to {total:.0f} vertices")
    out = []
    for a, b in zip(r, nxt):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / max_step)))
        t = np.arange(n)[:, None] / n
        out.append(a + t * (b - a))
    return np.vstack(out)


def map_features(
    features: list[Feature], fn: Callable, max_step: float | None = None
) -> list[Feature]:
    """``features`` with every vertex and point passed through ``fn``.

    Parameters
    ----------
    features : list of Feature
    fn : callable
        ``(N, 2) -> (N, 2)``, e.g. from :func:`mapper`.
    max_step : float, optional
        Densify the rings to this edge length (source pixels) first.

    Returns
    -------
    list of Feature
        New features; classes and properties kept.
    """
    out = []
    for f in features:
        polys = [[fn(densify(r, max_step) if max_step else r) for r in poly] for poly in f.polygons]
        pts = fn(f.points) if len(f.points) else f.points
        out.append(Feature(polys, pts, f.classification, dict(f.properties)))
    return out


def rasterize_geojson(path, shape: tuple[int, int]) -> np.ndarray:
    """Polygons of a QuPath GeoJSON as a mask on the H&E's pixel grid.

    Parameters
    ----------
    path : path-like
    shape : tuple of int
        The H&E's shape (y, x).

    Returns
    -------
    ndarray of bool
        Inside any polygon, holes cut out.

    Raises
    ------
    ValueError
        An unreadable file, or one without polygons (the message names it).
    """
    from .regions import rasterize

    feats = [f for f in read_geojson(path) if f.polygons]
    if not feats:
        raise ValueError(f"{path}: no Polygon or MultiPolygon in this GeoJSON")
    return rasterize(feats, shape) > 0
