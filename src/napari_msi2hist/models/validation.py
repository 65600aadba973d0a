"""Validation during training: a generator's prediction of a whole sample, and MI/SSIM on the
validation samples (with a preview image for the widget's live plot)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..metrics import mutual_information, ssim
from .datasets import PairedSample


def predict_sample(
    g: nn.Module, s: PairedSample, multiple: int, pad_value: float, device
) -> np.ndarray:
    """Whole-image prediction of one sample, ``(Y, X, 3)`` uint8 (for previews and validation)."""
    from .inference import to_rgb_uint8

    h, w = s.x.shape[1:]
    hh, ww = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    x = np.full((s.x.shape[0], hh, ww), pad_value, np.float32)
    x[:, :h, :w] = s.x
    was = g.training
    g.eval()
    with torch.no_grad():
        out = g(torch.from_numpy(x)[None].to(device)).float().cpu().numpy()[0]
    g.train(was)
    return to_rgb_uint8(out[:, :h, :w])


def validation_metrics(g, samples, multiple, pad_value, device) -> tuple[dict, np.ndarray | None]:
    from .inference import to_rgb_uint8

    if not samples:
        return {}, None
    mis, ssims, preview = [], [], None
    for s in samples:
        pred = predict_sample(g, s, multiple, pad_value, device)
        truth = to_rgb_uint8(s.y)
        mis.append(mutual_information(pred, truth, s.valid))
        ssims.append(ssim(pred, truth, s.valid))
        preview = pred if preview is None else preview
    return {"val_mi": float(np.mean(mis)), "val_ssim": float(np.mean(ssims))}, preview
