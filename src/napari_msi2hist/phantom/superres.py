"""Phantoms for H&E-guided super-resolution (seed 004): a fine-resolution truth made from an H&E, and
the coarse MSI measured from it, to train and evaluate :mod:`napari_msi2hist.crossmodal.superres`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class SRPhantom:
    name: str
    lr: np.ndarray  # (K, y, x) measured ion images (footprint means + noise)
    hr: np.ndarray  # (K, y f, x f) fine-resolution truth
    guide: np.ndarray  # (y f, x f, 3) uint8 registered H&E on the fine grid
    factor: int


def make_sr_phantom(
    seed: int,
    texture: str | os.PathLike | None = None,
    factor: int = 4,
    n_ions: int = 6,
    size: int = 192,
    noise: float = 0.02,
) -> SRPhantom:
    """A fine-resolution truth from an H&E: each ion image is a positive mix of the tissue class
    fractions (nuclei, stroma, other, background; :func:`napari_msi2hist.crossmodal.features.tissue_classes`),
    blurred by one fine pixel and modulated by a smooth field the H&E does not show; the measured MSI
    is its ``factor x factor`` footprint mean plus Gaussian noise (``noise`` x the image's max)."""
    from scipy import ndimage as ndi

    from ..crossmodal.features import tissue_classes
    from ..crossmodal.superres import block_mean
    from . import PhantomConfig, load_texture, procedural_he

    rng = np.random.default_rng(seed)
    if texture is None:
        rgb = procedural_he(size, rng)
    else:  # the phantoms' own texture loader: area-downsampled to at most ``size`` pixels
        rgb = load_texture(PhantomConfig(he_image=str(texture), he_max_size=size))
    h, w = (rgb.shape[0] // factor) * factor, (rgb.shape[1] // factor) * factor
    rgb = np.ascontiguousarray(rgb[:h, :w])
    cls = tissue_classes(rgb)
    cls = np.stack([ndi.gaussian_filter(c, 1.0) for c in cls])
    hr = np.empty((n_ions, h, w))
    for k in range(n_ions):
        wts = rng.dirichlet(np.full(4, 0.5)) * rng.uniform(0.5, 2.0)
        field = ndi.gaussian_filter(rng.standard_normal((h, w)), 3 * factor)
        field = np.exp(0.25 * field / (field.std() + 1e-12))
        hr[k] = np.tensordot(wts, cls, 1) * field
    lr = block_mean(hr, factor)
    lr = lr + noise * lr.max(axis=(1, 2), keepdims=True) * rng.standard_normal(lr.shape)
    name = f"seed{seed}-{Path(texture).name if texture else 'procedural'}"
    return SRPhantom(name, np.clip(lr, 0, None), hr, rgb, factor)
