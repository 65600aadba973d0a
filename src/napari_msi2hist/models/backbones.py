"""Feature networks for FID/LPIPS (seed 002) and H&E deep features (seed 003), from local weights.

Two standard ImageNet backbones, written here with the parameter names of the widely published
torchvision checkpoints so that a user's local ``resnet50-*.pth`` or ``vgg16-*.pth`` state dict loads
as it is (``torch.load(..., weights_only=True)``; nothing is downloaded, ever):

- ``ResNet50Trunk``: ResNet-50 (v1.5: the stride sits in the 3x3 convolution of a bottleneck) without
  its classifier; returns the stem and the four stage outputs (64, 256, 512, 1024, 2048 channels at
  strides 4, 4, 8, 16, 32).
- ``VGG16Features``: VGG-16's convolutional part; returns relu1_2, relu2_2, relu3_3, relu4_3 and
  relu5_3 (64..512 channels), the layers LPIPS compares.

Inputs are RGB in [0, 1], ``(N, 3, Y, X)``; the ImageNet mean/std normalisation is applied inside.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Normalise(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


class Bottleneck(nn.Module):
    """ResNet-50's bottleneck block (1x1, 3x3, 1x1 convolutions and a residual), torchvision's parameter names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x):
        """Apply the residual block.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, C, H, W)``.

        Returns
        -------
        torch.Tensor
            The block's output.
        """
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50Trunk(nn.Module):
    """ResNet-50 without its classifier, returning every stage's features (seed 003's backbone)."""

    kind = "resnet50"
    channels = (64, 256, 512, 1024, 2048)

    def __init__(self):
        super().__init__()
        self.norm = _Normalise()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks, stride) in enumerate(
            ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=1
        ):
            layers = []
            for b in range(blocks):
                layers.append(Bottleneck(inplanes, planes, stride if b == 0 else 1))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{i}", nn.Sequential(*layers))

    def forward(self, x) -> list[torch.Tensor]:
        """Compute the stem's and every stage's features.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, 3, H, W)`` RGB in [0, 1] (ImageNet normalisation is applied inside).

        Returns
        -------
        list of torch.Tensor
            Five feature maps: the stem, then layer1..layer4.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.norm(x)))))
        feats = [x]
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            feats.append(x)
        return feats


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16Features(nn.Module):
    """VGG-16's convolutional part, returning the features at relu1_2 .. relu5_3 (LPIPS' taps)."""

    kind = "vgg16"
    channels = (64, 128, 256, 512, 512)
    taps = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3

    def __init__(self):
        super().__init__()
        self.norm = _Normalise()
        layers: list[nn.Module] = []
        c = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers)

    def forward(self, x) -> list[torch.Tensor]:
        """Compute the features at the tapped layers.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, 3, H, W)`` RGB in [0, 1] (normalised inside).

        Returns
        -------
        list of torch.Tensor
            One feature map per tap (relu1_2 .. relu5_3).
        """
        x = self.norm(x)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
                if i == self.taps[-1]:
                    break
        return out


def load_tensors(path: str | os.PathLike, what: str):
    """Load a tensor file with ``torch.load(weights_only=True)`` (no code runs).

    Parameters
    ----------
    path : path-like
        The file.
    what : str
        What it should be, named in errors.

    Returns
    -------
    object
        What the file holds (tensors, dicts, lists).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Any other failure, naming the file and ``what``.
    """
    from .checkpoint import check_torch_file

    if os.path.isfile(path):
        check_torch_file(path, what, ValueError)
    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a loadable {what} ({first})") from None


def load_backbone(path: str | os.PathLike) -> nn.Module:
    """Build a ResNet-50 trunk or VGG-16 feature net from a local state dict.

    torchvision's parameter names (``module.`` prefixes and a wrapping ``state_dict`` key are
    accepted); classifier weights, if present, are ignored.

    Parameters
    ----------
    path : path-like
        The weights file.

    Returns
    -------
    torch.nn.Module
        The network, in evaluation mode.

    Raises
    ------
    ValueError
        Not a state dict of tensors, neither architecture, or parameters that do not fit (naming the
        file).
    """
    sd = load_tensors(path, "weights file")
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if "layer4.2.conv3.weight" in sd:
        net: nn.Module = ResNet50Trunk()
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    elif "features.28.weight" in sd:
        net = VGG16Features()
        sd = {k: v for k, v in sd.items() if k.startswith("features.")}
    else:
        raise ValueError(
            f"{path}: not a ResNet-50 or VGG-16 state dict (torchvision parameter names expected)"
        )
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: {len(missing)} missing and {len(unexpected)} unexpected parameters, "
            f"e.g. {(missing or unexpected)[:3]}"
        )
    return net.eval()


def load_lpips_weights(path: str | os.PathLike, channels: tuple[int, ...]) -> list[np.ndarray]:
    """Load LPIPS' per-channel linear weights from a local file.

    Parameters
    ----------
    path : path-like
        The file (``lin{L}.model.1.weight`` or ``lin{L}.weight``, shape (1, C, 1, 1)).
    channels : tuple of int
        The backbone's channels per layer.

    Returns
    -------
    list of ndarray
        One ``(C,)`` float32 weight vector per layer.

    Raises
    ------
    ValueError
        A layer's weights missing or of the wrong size.
    """
    sd = load_tensors(path, "LPIPS weights file")
    out = []
    for i, c in enumerate(channels):
        w = sd.get(f"lin{i}.model.1.weight", sd.get(f"lin{i}.weight"))
        if w is None or w.numel() != c:
            raise ValueError(f"{path}: no {c}-channel weights for LPIPS layer {i}")
        out.append(w.reshape(-1).float().numpy())
    return out


def lpips_from_features(
    feats_a: list[np.ndarray], feats_b: list[np.ndarray], weights: list[np.ndarray] | None = None
) -> np.ndarray:
    """Aggregate features into LPIPS distances.

    Per layer, unit-normalise each pixel's feature vector over channels, square the difference,
    weight per channel (1 without learned weights), sum over channels, average over pixels; sum over
    layers.

    Parameters
    ----------
    feats_a, feats_b : list of ndarray
        ``(N, C, Y, X)`` features of the two image sets, layer by layer.
    weights : list of ndarray, optional
        Per-channel weights per layer.

    Returns
    -------
    ndarray
        ``(N,)`` one distance per image.
    """
    total = None
    for i, (a, b) in enumerate(zip(feats_a, feats_b, strict=True)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        na = a / (np.sqrt((a**2).sum(1, keepdims=True)) + 1e-10)
        nb = b / (np.sqrt((b**2).sum(1, keepdims=True)) + 1e-10)
        w = np.ones(a.shape[1]) if weights is None else np.asarray(weights[i], np.float64)
        d = ((na - nb) ** 2 * w[None, :, None, None]).sum(1).mean((1, 2))
        total = d if total is None else total + d
    return total


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    a = np.asarray(rgb)
    f = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)
    return torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))[None]


@torch.no_grad()
def lpips(net: nn.Module, a_rgb, b_rgb, weights: list[np.ndarray] | None = None) -> float:
    """Compute LPIPS between two RGB images with the given backbone.

    Uncalibrated without ``weights`` (every channel weighs 1).

    Parameters
    ----------
    net : torch.nn.Module
        The backbone.
    a_rgb, b_rgb : ndarray
        ``(Y, X, 3)`` images, uint8 or floats in [0, 1].
    weights : list of ndarray, optional
        LPIPS' linear weights.

    Returns
    -------
    float
        The distance.
    """
    fa = [f.numpy() for f in net(_to_tensor(a_rgb))]
    fb = [f.numpy() for f in net(_to_tensor(b_rgb))]
    return float(lpips_from_features(fa, fb, weights)[0])


@torch.no_grad()
def pooled_features(net: nn.Module, rgb: np.ndarray, tile: int = 128) -> np.ndarray:
    """Pool the last-stage features of every full tile of an image.

    Global-average-pooled features of each ``tile`` x ``tile`` tile: the feature sets a Frechet
    distance (FID-style) compares.

    Parameters
    ----------
    net : torch.nn.Module
        The backbone.
    rgb : ndarray
        ``(Y, X, 3)`` image.
    tile : int
        Tile side in pixels.

    Returns
    -------
    ndarray
        ``(n_tiles, C)``.

    Raises
    ------
    ValueError
        The image is smaller than one tile.
    """
    h, w = rgb.shape[:2]
    rows = []
    for y in range(0, h - tile + 1, tile):
        for x in range(0, w - tile + 1, tile):
            f = net(_to_tensor(rgb[y : y + tile, x : x + tile]))[-1]
            rows.append(f.mean((2, 3))[0].numpy())
    if not rows:
        raise ValueError(f"image {h}x{w} is smaller than one {tile}-pixel tile")
    return np.stack(rows)
