"""Pixel sizes are never guessed: one place that takes a file's pixel size or the user's, and refuses
(naming the options that set it) when there is neither."""

from __future__ import annotations

import warnings

import numpy as np

OPTIONS = {
    "fixed": "--fixed-pixel-um (CLI), fixed_pixel_um (pairs YAML) or the widget's H&E pixel field",
    "moving": "--moving-pixel-um (CLI), moving_pixel_um (pairs YAML) or the widget's MSI pixel field",
}


class MissingPixelSize(ValueError):
    """A file has no pixel size and none was given."""


def resolve_pixel_size(
    from_file, override: float | None, role: str, source: str = ""
) -> tuple[float, float]:
    """The pixel size (y, x) in um: ``override`` if given, else the file's, else an error.

    Parameters
    ----------
    from_file : tuple of float or None
        What the file says.
    override : float or None
        What the user says (wins over the file).
    role : {"fixed", "moving"}
        Which image (the H&E is fixed, the MSI moving), for the message.
    source : str
        The file, for the message.
    """
    if override is not None:
        if not np.isfinite(override) or override <= 0:
            raise ValueError(f"{source}: pixel size {override} um is not a positive number")
        return (float(override), float(override))
    if from_file is None:
        raise MissingPixelSize(
            f"{source or 'image'}: the file has no pixel size; give it with {OPTIONS[role]}"
        )
    return (float(from_file[0]), float(from_file[1]))


def check_against_tissue_area(
    fixed_tissue: np.ndarray, fixed_px, moving_tissue: np.ndarray, moving_px, warn: bool = True
) -> dict:
    """Compare the claimed moving/fixed scale (1: pixel sizes right) with the square root of the
    tissue-area ratio; more than 1.5x apart gives a warning naming both numbers.

    Returns ``area_scale`` (relative to the pixel sizes: 1 = they agree), ``claimed_scale`` (1),
    ``moving_px_in_fixed_px`` (one moving pixel in fixed pixels by the pixel sizes and by the
    tissue areas, the warning's two numbers; absent when a mask is empty) and ``warning``."""
    fa = float(fixed_tissue.sum()) * fixed_px[0] * fixed_px[1]
    ma = float(moving_tissue.sum()) * moving_px[0] * moving_px[1]
    claimed = moving_px[0] / fixed_px[0]
    if fa <= 0 or ma <= 0:
        return {"area_scale": None, "claimed_scale": 1.0, "warning": None}
    area_scale = float(np.sqrt(fa / ma))  # fixed tissue size / moving tissue size, in um
    msg = None
    if max(area_scale, 1 / area_scale) > 1.5:
        # both as "one moving pixel = this many fixed pixels": what the sizes say, what areas say
        msg = (
            f"the pixel sizes (moving {moving_px[0]:g} um, fixed {fixed_px[0]:g} um) make one moving "
            f"pixel {claimed:.2f} fixed pixels; the tissue areas suggest {claimed * area_scale:.2f}: "
            "check the pixel sizes (a partial MSI raster also lowers the moving tissue area)"
        )
        if max(area_scale, 1 / area_scale) > 4:
            less = "fixed" if area_scale < 1 else "moving"
            msg += (
                f"; the {less} image shows under 1/16 of the other's tissue area, which wrong pixel"
                " sizes rarely explain: is tissue missing from that slide?"
            )
        if warn:
            warnings.warn(msg, stacklevel=2)
    return {
        "area_scale": area_scale,  # relative: 1 = the areas agree with the pixel sizes
        "claimed_scale": 1.0,
        # the warning's two numbers: one moving pixel in fixed pixels, by pixel sizes / by areas
        "moving_px_in_fixed_px": {"pixel_sizes": claimed, "tissue_areas": claimed * area_scale},
        "warning": msg,
    }


__all__ = ["MissingPixelSize", "check_against_tissue_area", "resolve_pixel_size"]
