"""The phantom's switchable difficulties (issue 11): an MSI raster that covers only part of the
tissue, several tissue pieces, and text or pen marks beside the tissue."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..axes import um_to_px
from ..registration.truth import DisplacementField, PhantomTransform

if TYPE_CHECKING:
    from . import PhantomConfig


def _glass(shape, rng) -> np.ndarray:
    g = np.array([243.0, 241.0, 245.0]) + 2.0 * rng.standard_normal((*shape, 3))
    return np.clip(g, 0, 255)


def _crop_raster(tr: PhantomTransform, shape, cfg: PhantomConfig, rng):
    """Keep ``msi_coverage`` of the raster along one axis (a raster that cuts through the tissue)."""
    axis = int(rng.integers(2))
    n = shape[axis]
    keep = max(4, int(np.ceil(cfg.msi_coverage * n)))
    o = int(rng.integers(0, n - keep + 1))
    e = np.zeros(2)
    e[axis] = o * cfg.msi_pixel_um
    new_shape = list(shape)
    new_shape[axis] = keep
    disp = tr.displacement
    if disp is not None:
        sl = [slice(None), slice(None)]
        sl[axis] = slice(o, o + keep)
        disp = DisplacementField(disp.values[tuple(sl)].copy(), disp.spacing_yx_um)
    out = PhantomTransform(tr.matrix_yx, tr.offset_yx_um + tr.matrix_yx @ e, disp)
    out.angle_deg, out.scale = tr.angle_deg, tr.scale
    return out, tuple(new_shape)


def _inside_raster(
    tr: PhantomTransform, he_um: np.ndarray, shape, cfg: PhantomConfig
) -> np.ndarray:
    p = um_to_px(tr.inverse(he_um), (cfg.msi_pixel_um,) * 2)
    return (p[:, 0] >= 1) & (p[:, 1] >= 1) & (p[:, 0] <= shape[0] - 2) & (p[:, 1] <= shape[1] - 2)


def _split_pieces(rgb: np.ndarray, n: int, rng) -> np.ndarray:
    """Cut the tissue into ``n`` pieces with ``n - 1`` parallel glass bands at a random angle."""
    from scipy import ndimage as ndi

    ny, nx = rgb.shape[:2]
    od = -np.log(np.clip(rgb.astype(np.float64), 1, 255) / 255.0).sum(-1)
    tissue = ndi.gaussian_filter((od > 0.25).astype(float), 2) > 0.5
    if not tissue.any():
        return rgb
    ang = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:ny, 0:nx]
    proj = np.cos(ang) * yy + np.sin(ang) * xx
    lo, hi = np.percentile(proj[tissue], [2, 98])
    band = np.zeros((ny, nx), bool)
    width = 0.06 * max(ny, nx)
    for k in range(1, n):
        c = lo + (hi - lo) * k / n + rng.uniform(-0.05, 0.05) * (hi - lo)
        band |= np.abs(proj - c) < width / 2
    out = rgb.copy()
    out[band] = _glass((int(band.sum()),), rng).astype(np.uint8)
    return out


def _add_marks(rgb: np.ndarray, cls: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Widen the slide with glass on the right and put printed text, a pen stroke and debris on the
    glass (never on tissue). The class maps get background there (marks carry no MSI signal)."""
    from PIL import Image, ImageDraw

    ny, nx = rgb.shape[:2]
    pad = max(40, nx // 3)
    out = np.concatenate([rgb, _glass((ny, pad), rng).astype(np.uint8)], axis=1)
    bg = np.zeros((cls.shape[0], ny, pad))
    bg[0] = 1.0
    cls = np.concatenate([cls, bg], axis=2)
    glass = cls[0] > 0.95
    # printed label: dark grey letters drawn small and enlarged
    txt = f"S{int(rng.integers(10, 99))}-HE {int(rng.integers(1, 9))}"
    small = Image.new("L", (8 * len(txt), 12), 0)
    ImageDraw.Draw(small).text((1, 0), txt, fill=255)
    k = max(2, pad // (8 * len(txt)))
    letters = np.kron(np.asarray(small) > 0, np.ones((k, k), bool))
    ly, lx = letters.shape
    y0 = int(rng.integers(2, max(3, ny - ly - 2)))
    x0 = nx + max(2, (pad - lx) // 2)
    region = np.zeros(out.shape[:2], bool)
    region[y0 : y0 + ly, x0 : x0 + lx] = letters[: ny - y0, : out.shape[1] - x0]
    shade = float(rng.uniform(30, 80))
    out[region & glass] = shade
    # pen stroke: a thick smooth curve in blue, green or black ink, on glass only
    ink = [(40, 60, 150), (40, 120, 60), (35, 35, 40)][int(rng.integers(3))]
    t = np.linspace(0, 1, 400)
    cy = rng.uniform(0.2, 0.8) * ny + 0.15 * ny * np.sin(2 * np.pi * (t + rng.uniform(0, 1)))
    cx = nx + pad * (0.1 + 0.8 * t)
    yy, xx = np.mgrid[0 : out.shape[0], 0 : out.shape[1]]
    pen = np.zeros(out.shape[:2], bool)
    r = max(2.0, 0.012 * ny)
    for py, px in zip(cy[::8], cx[::8], strict=True):
        pen |= (yy - py) ** 2 + (xx - px) ** 2 < r * r
    out[pen & glass] = np.array(ink, dtype=np.uint8)
    # debris: dark brown specks and fibres anywhere on the glass, also near the tissue
    for _ in range(int(rng.integers(8, 20))):
        py, px = rng.uniform(0, out.shape[0]), rng.uniform(0, out.shape[1])
        rr = rng.uniform(1.0, 3.0)
        speck = ((yy - py) ** 2 + (xx - px) ** 2 < rr * rr) & glass
        out[speck] = np.array([90, 70, 60], dtype=np.uint8)
    return out, cls


# ------------------------------------------------------------------- spectra
