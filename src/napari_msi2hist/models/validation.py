"""Validation during training: whole-sample predictions and MI/SSIM on the validation samples.

The preview image feeds the Train widget's live plot.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..metrics import mutual_information, ssim
from .datasets import PairedSample


def predict_sample(
    g: nn.Module, s: PairedSample, multiple: int, pad_value: float, device
) -> np.ndarray:
    """Predict one sample's whole image (for previews and validation).

    The input is padded to a multiple of ``multiple`` with ``pad_value`` and the prediction cropped
    back; the network's train/eval mode is restored.

    Parameters
    ----------
    g : torch.nn.Module
        The generator.
    s : PairedSample
        The sample (its ``x``).
    multiple : int
        The generator's size multiple (2 ** its depth).
    pad_value : float
        Input value of the padding (the contract's).
    device : str or torch.device
        Where to run.

    Returns
    -------
    ndarray
        ``(Y, X, 3)`` uint8 synthetic H&E.
    """
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
    """Score the generator on validation samples: mean MI and SSIM against their H&E.

    Parameters
    ----------
    g : torch.nn.Module
        The generator.
    samples : list of PairedSample
        Validation samples (may be empty).
    multiple : int
        The generator's size multiple.
    pad_value : float
        Input value of the padding.
    device : str or torch.device
        Where to run.

    Returns
    -------
    metrics : dict
        ``val_mi`` and ``val_ssim`` (over each sample's valid pixels); empty without samples.
    preview : ndarray or None
        The first sample's prediction, ``(Y, X, 3)`` uint8; None without samples.
    """
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
