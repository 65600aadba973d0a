"""H&E features, computed on the H&E's own grid, then regridded onto the (registered) MSI grid.

Two feature sources:

- ``deep``: a ResNet-50 trunk (seed 003) or VGG-16 from weights the user gives as a local file
  (:func:`napari_msi2hist.models.backbones.load_backbone`); one stage's feature map is computed tile
  by tile (tiles overlap by a margin that is cropped away, so tile seams do not show).
- ``colour``: the documented fallback when no weights are given: colour deconvolution (haematoxylin,
  eosin, DAB optical densities, ``skimage.color.rgb2hed``), the tissue class fractions used across this
  project (:func:`tissue_classes`), and local mean / standard deviation of the
  H and E densities at two scales (texture).

:func:`~napari_msi2hist.registration.grid.features_on_msi_grid` (re-exported here) averages a
feature map over each MSI pixel's footprint (area-weighted: ``s`` x ``s`` sub-samples per MSI pixel
mapped through the MSI -> H&E alignment, then averaged), so one MSI pixel sees the H&E under it and
nothing else.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from ..progress import CancelToken, Progress
from ..registration.grid import features_on_msi_grid  # noqa: F401  (re-exported)

COLOUR_FEATURES = (
    "H",
    "E",
    "DAB",
    "background",
    "nuclei",
    "stroma",
    "other",
    "H mean 3",
    "H std 3",
    "E mean 3",
    "E std 3",
    "H mean 9",
    "H std 9",
    "E mean 9",
    "E std 9",
)


def colour_texture_features(rgb: np.ndarray) -> np.ndarray:
    """``(15, Y, X)`` float32 colour/texture features of an RGB uint8 H&E (names: COLOUR_FEATURES)."""
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed

    rgb = np.asarray(rgb)[..., :3]
    hed = rgb2hed(rgb)
    cls = tissue_classes(rgb)
    out = [hed[..., 0], hed[..., 1], hed[..., 2], *cls]
    for size in (3, 9):
        for ch in (hed[..., 0], hed[..., 1]):
            m = ndi.uniform_filter(ch, size)
            v = ndi.uniform_filter(ch * ch, size) - m * m
            out += [m, np.sqrt(np.clip(v, 0, None))]
    return np.stack(out).astype(np.float32)


def iter_deep_features(
    rgb: np.ndarray,
    net,
    stage: int = 3,
    tile: int = 512,
    margin: int = 32,
    device: str = "cpu",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, tuple[np.ndarray, int]]:
    """One stage's feature map of the backbone over the whole H&E, tile by tile. Returns
    ``(features (C, Y/stride, X/stride) float32, stride)``; ``stage`` indexes the backbone's outputs
    (ResNet-50: 0 stem, 1-4 layer1-4; VGG-16: 0-4 relu1_2..relu5_3)."""
    import torch

    h, w = rgb.shape[:2]
    with torch.no_grad():
        probe = net(torch.zeros(1, 3, 64, 64, device=device))[stage]
    stride = 64 // probe.shape[-1]
    margin = -(-margin // stride) * stride
    tile = max(stride * 4, tile // stride * stride)
    ys, xs = range(0, h, tile), range(0, w, tile)
    out = np.zeros((probe.shape[1], -(-h // stride), -(-w // stride)), np.float32)
    total, done = len(ys) * len(xs), 0
    for y0 in ys:
        for x0 in xs:
            if cancel is not None:
                cancel.check()
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)
            yb, xb = min(h, y1 + margin), min(w, x1 + margin)
            patch = np.asarray(rgb[ya:yb, xa:xb, :3], np.float32) / 255.0
            t = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))[None].to(device)
            with torch.no_grad():
                f = net(t)[stage][0].float().cpu().numpy()
            oy, ox = (y0 - ya) // stride, (x0 - xa) // stride
            ny, nx = -(-(y1 - y0) // stride), -(-(x1 - x0) // stride)
            ny, nx = min(ny, f.shape[1] - oy), min(nx, f.shape[2] - ox)
            out[:, y0 // stride : y0 // stride + ny, x0 // stride : x0 // stride + nx] = f[
                :, oy : oy + ny, ox : ox + nx
            ]
            done += 1
            yield Progress(done, total, "H&E features")
    return out, stride


def tissue_classes(rgb: np.ndarray) -> np.ndarray:
    """Soft class maps ``(4, Y, X)`` (background, nuclei, stroma, other) from colour deconvolution."""
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed

    hed = rgb2hed(rgb)
    h, e = hed[..., 0], hed[..., 1]
    od = -np.log(np.clip(rgb.astype(np.float64), 1, 255) / 255.0).sum(-1)
    tissue = ndi.gaussian_filter((od > 0.25).astype(np.float64), 1.0)
    t = tissue > 0.5
    if t.sum() < 10:
        t = np.ones_like(t)
    hz = (h - np.median(h[t])) / (h[t].std() + 1e-9)
    ez = (e - np.median(e[t])) / (e[t].std() + 1e-9)
    p_nuc = 1 / (1 + np.exp(-2.5 * (hz - 0.6)))
    p_str = (1 - p_nuc) / (1 + np.exp(-2.5 * (ez - 0.0 - 0.5 * hz)))
    p_oth = 1 - p_nuc - p_str
    cls = np.stack([1 - tissue, tissue * p_nuc, tissue * p_str, tissue * p_oth])
    cls = np.clip(cls, 0, None)
    return cls / cls.sum(0, keepdims=True)
