"""Pixel sizes and our annotations in image-file metadata: OME-XML, SVS descriptions, TIFF tags.

:func:`~napari_msi2hist.io.histology.read_histology` asks, in order, the OME ``PhysicalSizeY/X``
(with their units, :func:`ome_pixel_size`), an SVS ``MPP`` (:func:`svs_mpp`) and TIFF resolution
tags in centimetres (:func:`tiff_resolution`); an OME-TIFF written by this package also carries a
MapAnnotation in :data:`ANNOTATION_NAMESPACE` (:func:`ome_annotations`: tolerance,
normalisation, ...). OME-XML is parsed by :func:`ome_root`, which refuses DOCTYPEs and entities.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

UNIT_TO_UM = {
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "nm": 1e-3,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "Å": 1e-4,
}


ANNOTATION_NAMESPACE = "napari-msi2hist"  # our key/value pairs in an OME MapAnnotation


def ome_root(ome_xml: str | bytes) -> ET.Element | None:
    """Parse OME-XML into an element tree, or None when it does not parse.

    A DOCTYPE (the only way to declare entities) is refused: image metadata never needs one.

    Parameters
    ----------
    ome_xml : str or bytes
        The OME-XML text.

    Returns
    -------
    xml.etree.ElementTree.Element or None
        The root element; None for XML that does not parse or declares a DOCTYPE or entities.
    """
    raw = ome_xml.encode() if isinstance(ome_xml, str) else bytes(ome_xml)
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        return None
    try:
        return ET.fromstring(raw)
    except ET.ParseError:
        return None


def ome_annotations(root: ET.Element | None) -> dict[str, str]:
    """Read the key/value pairs of the MapAnnotation in our namespace (tolerance, normalisation, ...).

    Parameters
    ----------
    root : xml.etree.ElementTree.Element or None
        The OME-XML root (:func:`ome_root`).

    Returns
    -------
    dict of str
        Key to value; empty without a root or such an annotation.
    """
    out: dict[str, str] = {}
    if root is None:
        return out
    for el in root.iter():
        if el.tag.endswith("MapAnnotation") and el.get("Namespace") == ANNOTATION_NAMESPACE:
            for m in el.iter():
                if m.tag.endswith("}M") or m.tag == "M":
                    if m.get("K"):
                        out[m.get("K")] = m.text or ""
    return out


def ome_pixel_size(ome_xml: str) -> tuple[float, float] | None:
    """Read the pixel size from OME-XML's ``PhysicalSizeY/X`` and their units.

    One of the two given: square pixels.

    Parameters
    ----------
    ome_xml : str
        The OME-XML text.

    Returns
    -------
    tuple of float or None
        ``(y, x)`` in um; None when absent, in an unknown unit, or the XML does not parse.
    """
    root = ome_root(ome_xml)
    if root is None:
        return None
    for el in root.iter():
        if el.tag.endswith("Pixels"):
            sx, sy = el.get("PhysicalSizeX"), el.get("PhysicalSizeY")
            if sx is None and sy is None:
                return None
            ux = UNIT_TO_UM.get(el.get("PhysicalSizeXUnit", "µm"), None)
            uy = UNIT_TO_UM.get(el.get("PhysicalSizeYUnit", "µm"), None)
            if ux is None or uy is None:
                return None
            x = float(sx) * ux if sx is not None else float(sy) * uy
            y = float(sy) * uy if sy is not None else x
            return (y, x)
    return None


def svs_mpp(desc: str) -> tuple[float, float] | None:
    """Read the pixel size from an SVS (Aperio) image description's ``MPP = ...``.

    Parameters
    ----------
    desc : str
        The first page's ``ImageDescription``.

    Returns
    -------
    tuple of float or None
        ``(y, x)`` in um (square); None when absent or not positive.
    """
    m = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", desc or "")
    if m:
        v = float(m.group(1))
        if v > 0:
            return (v, v)
    return None


def tiff_resolution(page) -> tuple[float, float] | None:
    """Read the pixel size from a TIFF page's resolution tags, in centimetres only.

    Inch values are refused: they are usually a meaningless 72 dpi.

    Parameters
    ----------
    page : tifffile.TiffPage
        The page.

    Returns
    -------
    tuple of float or None
        ``(y, x)`` in um; None without centimetre resolution tags or with non-positive values.
    """
    tags = page.tags
    unit = tags.get("ResolutionUnit")
    xr, yr = tags.get("XResolution"), tags.get("YResolution")
    if unit is None or xr is None or yr is None:
        return None
    if int(unit.value) != 3:  # only centimetres; inch values are usually a meaningless 72 dpi
        return None
    fx = xr.value[0] / xr.value[1] if isinstance(xr.value, tuple) else float(xr.value)
    fy = yr.value[0] / yr.value[1] if isinstance(yr.value, tuple) else float(yr.value)
    if fx <= 0 or fy <= 0:
        return None
    return (1e4 / fy, 1e4 / fx)
