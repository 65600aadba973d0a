"""Does a training pair overlap? The MSI footprint must land on the H&E's tissue.

A pair whose alignment puts the MSI outside the H&E (unrelated files, a wrong pixel size, layers not
yet registered) trains a model to paint glass. Before training, the MSI's measured pixels are mapped
onto the H&E with the pair's alignment (the H&E resampled on the model's working grid, as training
sees it) and the area where it lies on stained tissue (:func:`napari_msi2hist.metrics.tissue_mask`)
is compared with the smaller of the MSI footprint and the H&E's tissue area (an MSI often covers more
than the H&E section, or the reverse). Below ``MIN_OVERLAP`` the pair is refused.
"""

from __future__ import annotations

import numpy as np

from ..metrics import tissue_mask
from .contract import ChannelContract, resample_to_working
from .datasets import PairedSample

MIN_OVERLAP = 0.25  # of the smaller of (MSI footprint, H&E tissue area)


class PairOverlapError(ValueError):
    """The MSI footprint does not land on the H&E tissue."""


def tissue_area_um2(he_rgb: np.ndarray, he_pixel_um) -> float:
    """Measure the area of stained tissue in an H&E, on at most about a million pixels.

    Parameters
    ----------
    he_rgb : ndarray
        ``(Y, X, 3)`` H&E.
    he_pixel_um : tuple of float
        Its pixel size (yx um).

    Returns
    -------
    float
        Tissue area in um^2.
    """
    h, w = he_rgb.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(h * w / 1e6))))
    frac = float(tissue_mask(np.asarray(he_rgb)[::step, ::step, :3]).mean())
    return frac * h * w * float(he_pixel_um[0]) * float(he_pixel_um[1])


def footprint_overlap(
    sample: PairedSample,
    msi_mask: np.ndarray,
    msi_pixel_um,
    contract: ChannelContract,
    he_tissue_um2: float,
) -> float:
    """Measure how much of the MSI's measured footprint lands on H&E tissue.

    The overlap is a fraction of the smaller of the MSI footprint and the H&E's tissue area (1: one
    lies wholly on the other; 0: no overlap).

    Parameters
    ----------
    sample
        The pair as training sees it (``y`` is the H&E on the working grid, ``valid`` where it came
        from the image).
    msi_mask
        The MSI's measured-pixel mask on its own grid.
    msi_pixel_um
        The MSI pixel size ``(y, x)`` in um.
    contract
        The model's channel contract (its working pixel).
    he_tissue_um2
        The H&E's tissue area (:func:`tissue_area_um2`).

    Returns
    -------
    float
    """
    m = resample_to_working(
        np.asarray(msi_mask, np.float32)[None], msi_pixel_um, contract.working_pixel_um, order=0
    )[0]
    m = m > 0.5
    if m.shape != sample.valid.shape or not m.any() or he_tissue_um2 <= 0:
        return 0.0
    rgb = np.clip((np.moveaxis(sample.y, 0, -1) + 1.0) * 127.5, 0, 255).astype(np.uint8)
    on = tissue_mask(rgb) & sample.valid & m
    a = contract.working_pixel_um**2
    return min(1.0, float(on.sum() * a / min(m.sum() * a, he_tissue_um2)))


def check_pair_overlap(
    sample: PairedSample,
    msi_mask: np.ndarray,
    msi_pixel_um,
    contract: ChannelContract,
    he_rgb: np.ndarray,
    he_pixel_um,
) -> float:
    """Refuse a pair whose MSI footprint misses the H&E tissue.

    Parameters
    ----------
    sample : PairedSample
        The pair as training sees it.
    msi_mask : ndarray of bool
        The MSI's measured pixels on its own grid.
    msi_pixel_um : tuple of float
        The MSI pixel size (yx um).
    contract : ChannelContract
        The model's contract (its working pixel).
    he_rgb : ndarray
        The H&E, for its tissue area.
    he_pixel_um : tuple of float
        The H&E pixel size (yx um).

    Returns
    -------
    float
        The overlap (:func:`footprint_overlap`).

    Raises
    ------
    PairOverlapError
        The overlap is below ``MIN_OVERLAP`` (the message names the sample and what to check).
    """
    f = footprint_overlap(
        sample, msi_mask, msi_pixel_um, contract, tissue_area_um2(he_rgb, he_pixel_um)
    )
    if f < MIN_OVERLAP:
        raise PairOverlapError(
            f"{sample.name}: the alignment puts the MSI outside the H&E tissue (overlap "
            f"{100 * f:.0f} % of the smaller of the MSI footprint and the tissue area; need "
            f"{100 * MIN_OVERLAP:.0f} %). Register the pair, or use landmarks, and check both pixel sizes"
        )
    return f


def check_entry_overlap(entry, sample: PairedSample, ions, he, contract: ChannelContract) -> float:
    """:func:`check_pair_overlap` for a pairs-file entry, on what loading it has already read.

    Parameters
    ----------
    entry : PairEntry
        The entry (pixel sizes resolved as for loading).
    sample : PairedSample
        What :func:`~napari_msi2hist.models.datasets.load_samples` made of it.
    ions : IonImages
        Its ion images: the measured-pixel mask and the MSI pixel size.
    he : Histology
        Its H&E as read (the tissue area comes from the coarsest level, in that level's pixel size).
    contract : ChannelContract
        The model's contract (its working pixel).

    Returns
    -------
    float
        The overlap (:func:`footprint_overlap`).

    Raises
    ------
    PairOverlapError
        The MSI footprint misses the H&E tissue; the message names the pair and both of its files.
    """
    from ..io.histology import to_uint8_rgb
    from ..pixel_size import resolve_pixel_size

    he_px = resolve_pixel_size(he.pixel_size_um, entry.get("fixed_pixel_um"), "fixed", entry["he"])
    rgb = np.asarray(he.levels[-1] if len(he.levels) > 1 else he.levels[0])
    if len(he.levels) > 1:  # tissue area from the coarsest level, in its own pixel size
        full = he.levels[0].shape
        he_px = (he_px[0] * full[0] / rgb.shape[0], he_px[1] * full[1] / rgb.shape[1])
    try:
        return check_pair_overlap(
            sample, ions.mask, ions.pixel_size_um, contract, to_uint8_rgb(rgb[..., :3]), he_px
        )
    except PairOverlapError as err:
        raise PairOverlapError(f"{err} [pair {entry['imzml']} + {entry['he']}]") from None
