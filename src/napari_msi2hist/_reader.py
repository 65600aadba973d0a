"""napari reader contribution (no napari import: it returns plain LayerData tuples).

``*.imzML`` gives a TIC image layer; RGB images (H&E) give an RGB layer, multiscale when the file is
pyramidal; OME-TIFF ion stacks written by ``msi2hist peaks`` give a channel stack (with the m/z, the
tolerance and the normalisation they were extracted with); a single-channel image (a MALDI image
exported by vendor software as TIFF/PNG) gives an MSI layer that the Register widget can use as its
moving image. Every layer has ``scale`` in micrometres and ``metadata["msi2hist"]`` describing where
it came from, with ``pixel_size_um`` None when the file has none: the layer is then shown at one
unit per pixel, a visible warning says so, and every widget asks for the pixel size before using it.
Files this plugin does not handle (e.g. a multi-channel stack without m/z) return None so that other
readers can take them.
"""

from __future__ import annotations

from pathlib import Path

from .io.histology import HistologyImage, is_histology_path, read_histology
from .io.imzml import is_imzml_path


def robust_limits(values) -> tuple[float, float]:
    """Contrast limits from the 0.5-99.5 percentiles of ``values`` (pass the measured pixels), so
    that hot pixels, common in MSI, do not turn the rest of the image black."""
    import numpy as np

    v = np.asarray(values).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(v, [0.5, 99.5])
    return (float(lo), float(hi if hi > lo else lo + 1.0))


UNKNOWN_SCALE = (1.0, 1.0)  # display scale of a file without a pixel size: one unit per pixel


def no_pixel_size_message(path) -> str:
    """The visible warning for a file without a pixel size (never a silent default)."""
    return (
        f"{Path(path).name}: no pixel size in the file; shown at 1 unit per pixel. Set the pixel "
        "size (um) in the widget's pixel field (Register, Train) or give --moving-pixel-um / "
        "--fixed-pixel-um on the command line"
    )


def get_reader(path):
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = str(path)
    if is_imzml_path(p):
        return read_imzml_layers
    if is_histology_path(p):
        return read_image_layers
    return None


def imzml_layer_data(path) -> list[tuple]:
    import warnings

    from .io.imzml import open_imzml
    from .msi.ion_images import total_ion_image

    with open_imzml(path) as imz:
        if imz.pixel_size_um is None:
            warnings.warn(no_pixel_size_message(path), UserWarning, stacklevel=2)
        tic = total_ion_image(imz)
        info = imz.info()
        px = imz.pixel_size_um or UNKNOWN_SCALE
        measured = imz.measured_mask()
    meta = {
        "msi2hist": {
            "kind": "msi",
            "file": str(Path(path).resolve()),
            "image": "tic",
            **info,
            "pixel_size_assumed": info["pixel_size_um"] is None,
        }
    }
    kw = {
        "name": f"{Path(path).stem} TIC",
        "scale": px,
        "metadata": meta,
        "colormap": "magma",
        "contrast_limits": robust_limits(tic[measured]),
    }
    return [(tic, kw, "image")]


def read_imzml_layers(path):
    if isinstance(path, list):
        path = path[0]
    return imzml_layer_data(path)


def image_layer_data(img: HistologyImage, name: str | None = None) -> list[tuple] | None:
    px = img.pixel_size_um or UNKNOWN_SCALE
    meta = {
        "msi2hist": {
            "kind": "he" if img.rgb else "stack",
            "file": str(Path(img.path).resolve()),
            "pixel_size_um": list(img.pixel_size_um) if img.pixel_size_um else None,
            "warnings": img.warnings,
        }
    }
    data = img.levels if img.multiscale else img.levels[0]
    name = name or Path(img.path).name.split(".")[0]
    if img.rgb:
        return [
            (
                data,
                {
                    "name": name,
                    "rgb": True,
                    "scale": px,
                    "metadata": meta,
                    "multiscale": img.multiscale,
                },
                "image",
            )
        ]
    if (
        img.levels[0].ndim == 3
        and img.channel_names
        and all(n.startswith("mz=") for n in img.channel_names)
    ):
        meta["msi2hist"]["kind"] = "ion_stack"
        meta["msi2hist"]["mz"] = [float(n[3:]) for n in img.channel_names]
        ann = img.annotations  # written by msi2hist peaks: the extraction survives the round trip
        if "tolerance" in ann:
            from .config import Tolerance

            meta["msi2hist"]["tolerance"] = Tolerance.parse(ann["tolerance"]).as_dict()
        if "normalisation" in ann:
            meta["msi2hist"]["normalisation"] = ann["normalisation"]
        return [
            (
                data,
                {"name": name, "scale": (1.0, *px), "metadata": meta, "colormap": "viridis"},
                "image",
            )
        ]
    lv0 = img.levels[0]
    if lv0.ndim == 3 and img.channel_names:  # a named channel stack (e.g. registered.ome.tif)
        meta["msi2hist"]["kind"] = "stack"
        meta["msi2hist"]["channels"] = list(img.channel_names)
        return [
            (
                data,
                {"name": name, "scale": (1.0, *px), "metadata": meta, "colormap": "gray"},
                "image",
            )
        ]
    if lv0.ndim == 2 or (lv0.ndim == 3 and lv0.shape[-1] == 1):  # a single-channel MSI image
        import numpy as np

        arr = np.asarray(lv0).reshape(lv0.shape[:2]).astype(np.float32)
        meta["msi2hist"].update(kind="msi", image="single-channel")
        kw = {
            "name": name,
            "scale": px,
            "metadata": meta,
            "colormap": "magma",
            "contrast_limits": robust_limits(arr),
        }
        return [(arr, kw, "image")]
    return None


def read_image_layers(path):
    import warnings

    if isinstance(path, list):
        path = path[0]
    img = read_histology(path)
    for w in img.warnings:  # napari shows Python warnings as notifications
        if img.pixel_size_um is None and "no pixel size" in w:
            w = no_pixel_size_message(path)
        warnings.warn(w, UserWarning, stacklevel=2)
    return image_layer_data(img)
