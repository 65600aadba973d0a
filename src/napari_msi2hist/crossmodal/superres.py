"""H&E-guided MSI super-resolution (seed 004), with the baselines it must beat.

The ion images of an MSI are reconstructed on a grid ``factor`` times finer (about the H&E's pixel
size), in the MSI's own frame, with the registered H&E resampled onto that grid as a structural guide.

- ``bicubic``: bicubic upsampling (the reference every method must beat).
- ``guided``: the guided filter (He et al.) of the bicubic image with the H&E haematoxylin / eosin
  densities as guide.
- ``learned``: a small residual CNN (:class:`GuidedSRNet`) that sees the bicubic image and the guide's
  H, E and grey channels and predicts a correction. (An optional consistency projection makes the
  result's block means equal the measured pixels exactly; on the phantoms it costs 0.9 dB PSNR, as
  its per-block steps show, so it is off by default.) It is trained on phantoms whose fine-resolution ion images are known (:func:`napari_msi2hist.phantom.superres.make_sr_phantom`);
  one network serves every m/z (each ion image is scaled by its own 99th percentile).

Model files: ``torch.save`` of ``{"format", "arch", "state_dict", "meta"}``, loaded with
``weights_only=True``; the bundled one is ``superres`` (data/superres_generator.pt, made by
scripts/train_superres_model.py).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from .._files import atomic_path
from ..progress import CancelToken, Progress

FORMAT = "napari-msi2hist superres v1"
BUNDLED = {"superres": "superres_generator.pt"}


# ------------------------------------------------------------------- baselines
def bicubic_upsample(img: np.ndarray, factor: int) -> np.ndarray:
    """``(Y, X)`` -> ``(Y * f, X * f)``; fine pixel ``j`` centres at ``(j + 0.5) / f - 0.5`` coarse
    pixels, so coarse pixel ``i`` is the footprint of fine pixels ``i f .. i f + f - 1``."""
    from skimage.transform import resize

    h, w = img.shape
    return resize(
        img.astype(np.float64), (h * factor, w * factor), order=3, mode="edge", anti_aliasing=False
    )


def block_mean(img: np.ndarray, factor: int) -> np.ndarray:
    h, w = img.shape[-2] // factor, img.shape[-1] // factor
    a = img[..., : h * factor, : w * factor]
    return a.reshape(*a.shape[:-2], h, factor, w, factor).mean((-3, -1))


def guide_channels(rgb: np.ndarray) -> np.ndarray:
    """``(3, Y, X)`` float32: haematoxylin and eosin optical densities and grey, roughly in [0, 1]."""
    from skimage.color import rgb2hed

    hed = rgb2hed(np.asarray(rgb)[..., :3])
    grey = np.asarray(rgb)[..., :3].astype(np.float64).mean(-1) / 255.0
    return np.stack([hed[..., 0] * 5.0, hed[..., 1] * 5.0, grey]).astype(np.float32)


def guided_filter(
    guide: np.ndarray, src: np.ndarray, radius: int = 4, eps: float = 1e-3
) -> np.ndarray:
    """He et al.'s guided filter with a grey guide: a local linear model ``q = a I + b`` per window."""
    from scipy import ndimage as ndi

    size = 2 * radius + 1

    def box(a):
        return ndi.uniform_filter(a, size, mode="reflect")

    i, p = guide.astype(np.float64), src.astype(np.float64)
    mi, mp = box(i), box(p)
    var_i = box(i * i) - mi * mi
    cov_ip = box(i * p) - mi * mp
    a = cov_ip / (var_i + eps)
    b = mp - a * mi
    return box(a) * i + box(b)


def guided_upsample(
    lr: np.ndarray, guide_rgb: np.ndarray, factor: int, radius: int = 1, eps: float = 1e-4
) -> np.ndarray:
    """Bicubic, then the guided filter with the H&E's grey level as guide (radius and eps chosen as
    the best of a small grid on the held-out phantoms: a generous baseline)."""
    up = bicubic_upsample(lr, factor)
    g = guide_channels(guide_rgb[: up.shape[0], : up.shape[1]])
    scale = max(float(np.percentile(lr, 99)), 1e-12)
    return guided_filter(g[2], up / scale, radius, eps) * scale


# ------------------------------------------------------------------- the fine grid
def default_factor(msi_px, he_px) -> int:
    """The upsampling factor that brings the MSI pixel to about the H&E's."""
    return max(1, int(round(float(np.mean(msi_px)) / float(np.mean(he_px)))))


def fine_grid_offset(msi_px, factor: int) -> np.ndarray:
    """Where fine pixel (0, 0) centres relative to MSI pixel (0, 0)'s centre (yx um): fine pixel
    ``j`` of MSI pixel ``i`` sits at ``i + (j + 0.5) / f - 0.5`` MSI pixels."""
    return (0.5 / factor - 0.5) * np.asarray(msi_px, np.float64)


def guide_on_fine_grid(
    he_rgb: np.ndarray, he_px, alignment, msi_shape, msi_px, factor: int
) -> tuple[np.ndarray, float, float]:
    """The registered H&E resampled onto the ``factor``-times finer grid of the MSI's frame:
    ``(guide (Y f, X f, 3) uint8, fraction of the grid the H&E covers, fine pixel um)``.
    ``alignment``: the MSI -> H&E :class:`~napari_msi2hist.registration.alignment.Alignment`."""
    from ..registration.grid import he_on_msi_grid

    fine = float(np.mean(msi_px)) / factor
    offset = fine_grid_offset(msi_px, factor)
    ny, nx = msi_shape
    guide, valid = he_on_msi_grid(
        he_rgb, he_px, alignment, (ny * factor, nx * factor), fine, grid_origin_um=offset
    )
    return guide, float(valid.mean()), fine


# ------------------------------------------------------------------- the network
class GuidedSRNet(nn.Module):
    def __init__(self, width: int = 32, depth: int = 5, guide_ch: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1 + guide_ch, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.arch = {"width": width, "depth": depth, "guide_ch": guide_ch}

    def forward(self, up: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return up + self.body(torch.cat([up, guide], 1))


def consistency_projection(hr: np.ndarray, lr: np.ndarray, factor: int) -> np.ndarray:
    """Add each coarse pixel's residual ``lr - block_mean(hr)`` to its ``f x f`` fine pixels, so that
    the result's footprint averages are the measured values exactly."""
    r = lr - block_mean(hr, factor)
    return hr + np.repeat(np.repeat(r, factor, -2), factor, -1)


def save_superres(path, net: GuidedSRNet, meta: dict) -> Path:
    path = Path(path)
    tmp = atomic_path(path)
    try:
        torch.save(
            {
                "format": FORMAT,
                "arch": net.arch,
                "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "meta": meta,
            },
            tmp,
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_superres(path: str | os.PathLike) -> tuple[GuidedSRNet, dict]:
    if str(path) in BUNDLED:
        path = Path(__file__).resolve().parents[1] / "data" / BUNDLED[str(path)]
    from ..models.backbones import load_tensors

    d = load_tensors(path, "super-resolution model")
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{path}: not a napari-msi2hist super-resolution model")
    net = GuidedSRNet(**d["arch"])
    net.load_state_dict(d["state_dict"])
    return net.eval(), dict(d.get("meta") or {})


def learned_upsample(
    net: GuidedSRNet, lr: np.ndarray, guide_rgb: np.ndarray, factor: int, consistency: bool = False
) -> np.ndarray:
    up = bicubic_upsample(lr, factor)
    g = guide_channels(guide_rgb[: up.shape[0], : up.shape[1]])
    scale = max(float(np.percentile(lr, 99)), 1e-12)
    with torch.no_grad():
        out = (
            net(
                torch.from_numpy((up / scale).astype(np.float32))[None, None],
                torch.from_numpy(g)[None],
            )[0, 0]
            .numpy()
            .astype(np.float64)
            * scale
        )
    return consistency_projection(out, lr, factor) if consistency else out


def iter_superresolve(
    stack: np.ndarray,
    guide_rgb: np.ndarray,
    factor: int,
    method: str = "learned",
    model: str | os.PathLike | GuidedSRNet = "superres",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Every ion image of ``stack`` ``(C, Y, X)`` onto the ``factor``-times finer grid that
    ``guide_rgb`` ``(Y f, X f, 3)`` covers. Returns ``(C, Y f, X f)`` float32."""
    h, w = stack.shape[1] * factor, stack.shape[2] * factor
    if guide_rgb.shape[0] < h or guide_rgb.shape[1] < w:
        raise ValueError(
            f"the guide ({guide_rgb.shape[0]}x{guide_rgb.shape[1]}) must cover the fine grid "
            f"({h}x{w})"
        )
    net = None
    if method == "learned":
        net = model if isinstance(model, GuidedSRNet) else load_superres(model)[0]
    out = np.empty((len(stack), h, w), np.float32)
    for i, img in enumerate(stack):
        if cancel is not None:
            cancel.check()
        img = np.nan_to_num(np.asarray(img, np.float64))
        if method == "bicubic":
            out[i] = bicubic_upsample(img, factor)
        elif method == "guided":
            out[i] = guided_upsample(img, guide_rgb, factor)
        elif method == "learned":
            out[i] = learned_upsample(net, img, guide_rgb, factor)
        else:
            raise ValueError(f"unknown method {method!r}: use learned, guided or bicubic")
        yield Progress(i + 1, len(stack), "super-resolution")
    return out


# ------------------------------------------------------------------- evaluation
class SRExample(Protocol):
    """What evaluation and training need of a super-resolution example with a known truth
    (:class:`napari_msi2hist.phantom.superres.SRPhantom` is one)."""

    lr: np.ndarray  # (K, y, x) measured ion images
    hr: np.ndarray  # (K, y f, x f) fine-resolution truth
    guide: np.ndarray  # (y f, x f, 3) uint8 registered H&E on the fine grid
    factor: int


def evaluate_methods(
    phantoms: list[SRExample], model: str | os.PathLike = "superres"
) -> dict[str, dict]:
    """Mean PSNR / SSIM over all ion images of the phantoms (each image scaled by its truth's max),
    per method."""
    from ..metrics import psnr, ssim
    from ..progress import run_to_end

    net = load_superres(model)[0]
    res: dict[str, dict] = {}
    for method in ("bicubic", "guided", "learned"):
        ps, ss = [], []
        for ph in phantoms:
            out = run_to_end(iter_superresolve(ph.lr, ph.guide, ph.factor, method, net))
            for k in range(len(ph.hr)):
                m = ph.hr[k].max()
                a, b = np.clip(out[k] / m, 0, 1), ph.hr[k] / m
                ps.append(psnr(a, b))
                ss.append(ssim(a, b))
        res[method] = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "n": len(ps)}
    return res


# ------------------------------------------------------------------- training
def iter_train_superres(
    phantoms: list[SRExample],
    steps: int = 1500,
    lr: float = 1e-3,
    patch: int = 48,
    batch: int = 16,
    seed: int = 0,
    width: int = 32,
    depth: int = 5,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, GuidedSRNet]:
    """Train :class:`GuidedSRNet` with L1 on random crops of the phantoms (one ion image a crop)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = GuidedSRNet(width, depth)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    prepared = []
    for ph in phantoms:
        g = guide_channels(ph.guide)
        for k in range(len(ph.hr)):
            scale = max(float(np.percentile(ph.lr[k], 99)), 1e-12)
            up = bicubic_upsample(ph.lr[k], ph.factor) / scale
            prepared.append((up.astype(np.float32), g, (ph.hr[k] / scale).astype(np.float32)))
    for step in range(1, steps + 1):
        if cancel is not None:
            cancel.check()
        ups, gs, hrs = [], [], []
        for _ in range(batch):
            up, g, hr = prepared[rng.integers(len(prepared))]
            y0 = rng.integers(0, up.shape[0] - patch + 1)
            x0 = rng.integers(0, up.shape[1] - patch + 1)
            sl = (slice(y0, y0 + patch), slice(x0, x0 + patch))
            k = int(rng.integers(4))
            ups.append(np.rot90(up[sl], k))
            gs.append(np.rot90(g[(slice(None), *sl)], k, axes=(1, 2)))
            hrs.append(np.rot90(hr[sl], k))
        u = torch.from_numpy(np.ascontiguousarray(np.stack(ups)))[:, None]
        gg = torch.from_numpy(np.ascontiguousarray(np.stack(gs)))
        t = torch.from_numpy(np.ascontiguousarray(np.stack(hrs)))[:, None]
        loss = torch.nn.functional.l1_loss(net(u, gg), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        yield Progress(step, steps, "train super-resolution", info={"l1": loss.item()})
    return net.eval()
