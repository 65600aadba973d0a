"""Annotation regions on a pixel grid: rasterise polygons to labels (classes per pixel, counts,
a per-pixel table) and trace labels back to polygons with holes. Polygons are
:class:`~napari_msi2hist.interop.geojson.Feature` objects in QuPath pixels of the grid (pixel ``(r, c)``
has its centre at ``(c + 0.5, r + 0.5)``).
"""

from __future__ import annotations

import numpy as np

from ..axes import px_to_um
from .geojson import Feature


def class_names(features: list[Feature]) -> list[str]:
    """Class names of the polygon features in first-seen order.

    Parameters
    ----------
    features : list of Feature

    Returns
    -------
    list of str
        Unclassified polygons get the class ``"Unclassified"``.
    """
    return list(dict.fromkeys(f.classification or "Unclassified" for f in features if f.polygons))


def rasterize(features: list[Feature], shape_yx, names: list[str] | None = None) -> np.ndarray:
    """Label image of the polygons on a pixel grid.

    Pixel ``(r, c)`` gets ``1 + names.index(class)`` when its centre ``(c + 0.5, r + 0.5)`` (QuPath
    pixels) lies inside a polygon and not in one of its holes, else 0. Where annotations overlap the
    smaller one wins (a necrosis drawn inside a tumour stays necrosis).

    Parameters
    ----------
    features : list of Feature
        In QuPath pixels of this grid; points are ignored.
    shape_yx : tuple of int
    names : list of str, optional
        Class order (default :func:`class_names`).

    Returns
    -------
    ndarray of int32
    """
    from skimage.draw import polygon as fill

    from .._limits import check_allocation

    names = names if names is not None else class_names(features)
    check_allocation(4.0 * float(np.prod(shape_yx)), f"a {shape_yx} label image")
    lab = np.zeros(tuple(int(s) for s in shape_yx), np.int32)
    polys = [(f, p) for f in features for p in f.polygons]
    polys.sort(key=lambda fp: -Feature([fp[1]]).area_px())
    for f, poly in polys:
        value = names.index(f.classification or "Unclassified") + 1
        ext = poly[0] - 0.5  # corner convention -> centre convention
        lo = np.maximum(np.floor(ext.min(0)).astype(int), 0)
        hi = np.minimum(np.ceil(ext.max(0)).astype(int) + 1, [lab.shape[1], lab.shape[0]])
        if np.any(hi <= lo):
            continue
        m = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), bool)
        for k, ring in enumerate(poly):
            r = ring - 0.5 - lo
            rr, cc = fill(r[:, 1], r[:, 0], m.shape)
            m[rr, cc] = k == 0
        lab[lo[1] : hi[1], lo[0] : hi[0]][m] = value
    return lab


def class_counts(labels: np.ndarray, names: list[str], mask: np.ndarray | None = None) -> dict:
    """Pixels per class.

    Parameters
    ----------
    labels : ndarray of int
        From :func:`rasterize`.
    names : list of str
        Class names of labels 1, 2, ...
    mask : ndarray of bool, optional
        Count only these (e.g. the measured MSI pixels).

    Returns
    -------
    dict
        ``{"(none)": n0, name: n, ...}``.
    """
    lab = labels[mask] if mask is not None else labels.ravel()
    counts = np.bincount(lab.ravel(), minlength=len(names) + 1)
    return {"(none)": int(counts[0]), **{n: int(counts[i + 1]) for i, n in enumerate(names)}}


def class_table_rows(
    labels: np.ndarray, names: list[str], pixel_size_yx_um, mask: np.ndarray | None = None
) -> list[dict]:
    """One row per (measured) pixel with its class, for a CSV.

    Parameters
    ----------
    labels : ndarray of int
    names : list of str
    pixel_size_yx_um : tuple of float
    mask : ndarray of bool, optional

    Returns
    -------
    list of dict
        ``row, col, y_um, x_um, class`` (empty class: none), world um with centres at index * size.
    """
    rr, cc = np.nonzero(mask if mask is not None else np.ones(labels.shape, bool))
    um = px_to_um(np.column_stack([rr, cc]), pixel_size_yx_um)
    lut = [""] + list(names)
    return [
        {"row": int(r), "col": int(c), "y_um": float(u[0]), "x_um": float(u[1]), "class": lut[v]}
        for r, c, u, v in zip(rr, cc, um, labels[rr, cc])
    ]


def labels_to_features(labels: np.ndarray, names: dict[int, str] | None = None) -> list[Feature]:
    """Polygons (holes kept) tracing each label of an integer image.

    Contours run half-way between pixel centres, so :func:`rasterize` gives the labels back exactly.

    Parameters
    ----------
    labels : ndarray of int
        0 is background.
    names : dict, optional
        ``{label: class name}`` (default ``"label N"``).

    Returns
    -------
    list of Feature
        One MultiPolygon-like feature per label (one polygon per 4-connected component), in QuPath
        pixels of this grid, ``properties["label"]`` = the label.
    """
    from scipy import ndimage as ndi
    from skimage.measure import find_contours

    def contour(mask, r0, c0):
        cs = find_contours(np.pad(mask, 1).astype(np.float32), 0.5)
        c = max(cs, key=len) - 1  # the outer boundary of a filled component is its longest contour
        return np.column_stack([c[:, 1] + c0, c[:, 0] + r0]) + 0.5

    out = []
    for v in np.unique(labels):
        if v == 0:
            continue
        comp, n = ndi.label(labels == v)
        polys = []
        for k, sl in enumerate(ndi.find_objects(comp), 1):  # each component in its bounding box
            m = comp[sl] == k
            r0, c0 = sl[0].start, sl[1].start
            filled = ndi.binary_fill_holes(m)
            rings = [contour(filled, r0, c0)]
            holes, nh = ndi.label(filled & ~m)
            rings += [contour(holes == h, r0, c0) for h in range(1, nh + 1)]
            polys.append(rings)
        name = (names or {}).get(int(v), f"label {int(v)}")
        out.append(Feature(polys, classification=name, properties={"label": int(v)}))
    return out
