"""Networks of pix2pix (Isola et al. 2017) as used by seed 000, written for any number of MSI channels.

- :class:`UNetGenerator`: encoder of stride-2 4x4 convolutions (LeakyReLU 0.2, norm from the second
  layer on, none at the bottleneck), decoder of stride-2 4x4 transposed convolutions (ReLU, norm,
  dropout in the innermost decoder layers) with skip connections, ``tanh`` output in [-1, 1].
  ``depth`` levels need inputs divisible by ``2**depth`` (8 for 256 px, 9 for 512 px tiles as in the
  paper; smaller for small models).
- :class:`PatchDiscriminator`: conditional PatchGAN; with 3 layers its receptive field is 70x70.
- :class:`PixelDiscriminator`: 1x1 PatchGAN (per-pixel).
- :class:`BaselineUNet`: the plain U-Net baseline of seed 000 (two 3x3 convs per level, max pooling),
  trained with MSE on small patches.

All build from a plain ``dict`` (``arch``) so that checkpoints describe themselves.
"""

from __future__ import annotations

import torch
from torch import nn


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be batch, instance or none, not {kind!r}")


class UNetGenerator(nn.Module):
    """The pix2pix U-Net generator for any number of MSI channels (see the module docstring).

    Parameters
    ----------
    in_channels : int
        MSI channels (at least 1).
    out_channels : int
        Output channels (3 for RGB).
    ngf : int
        Filters of the first layer (doubling per level, at most ``8 * ngf``).
    depth : int
        Levels (at least 2); inputs must be divisible by ``2**depth``.
    norm : {"batch", "instance", "none"}
        Normalisation layers.
    dropout : float
        Dropout probability in the innermost decoder layers.
    n_dropout : int
        How many innermost decoder layers have dropout.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 3,
        ngf: int = 64,
        depth: int = 8,
        norm: str = "batch",
        dropout: float = 0.5,
        n_dropout: int = 3,
    ):
        super().__init__()
        if depth < 2:
            raise ValueError("depth must be >= 2")
        if in_channels < 1:
            raise ValueError("in_channels must be >= 1")
        self.depth = depth
        use_bias = norm != "batch"
        ch = [min(ngf * 2**i, ngf * 8) for i in range(depth)]
        downs = []
        for i in range(depth):
            cin = in_channels if i == 0 else ch[i - 1]
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2, inplace=False)]
            layers.append(nn.Conv2d(cin, ch[i], 4, 2, 1, bias=use_bias or i in (0, depth - 1)))
            if 0 < i < depth - 1:
                layers.append(_norm(norm, ch[i]))
            downs.append(nn.Sequential(*layers))
        ups = []
        for j in range(depth):
            level = depth - 1 - j  # encoder level whose output this decoder layer upsamples
            cin = ch[level] if j == 0 else 2 * ch[level]
            last = j == depth - 1
            cout = out_channels if last else ch[level - 1]
            layers = [
                nn.ReLU(inplace=False),
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=use_bias or last),
            ]
            if last:
                layers.append(nn.Tanh())
            else:
                layers.append(_norm(norm, cout))
                if dropout > 0 and 0 < j <= n_dropout:
                    layers.append(nn.Dropout(dropout))
            ups.append(nn.Sequential(*layers))
        self.downs = nn.ModuleList(downs)
        self.ups = nn.ModuleList(ups)

    @property
    def multiple(self) -> int:
        """The size inputs must be a multiple of (``2**depth``)."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate MSI to H&E.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, in_channels, H, W)``, ``H`` and ``W`` divisible by ``2**depth``.

        Returns
        -------
        torch.Tensor
            ``(N, out_channels, H, W)`` in [-1, 1].
        """
        skips = []
        h = x
        for down in self.downs:
            h = down(h)
            skips.append(h)
        for j, up in enumerate(self.ups):
            h = up(h)
            if j < self.depth - 1:
                h = torch.cat([h, skips[self.depth - 2 - j]], dim=1)
        return h


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN over ``cat(input, output)``; ``n_layers=3`` gives a 70x70 receptive field."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        use_bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=use_bias),
                _norm(norm, ndf * mult),
                nn.LeakyReLU(0.2),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=use_bias),
            _norm(norm, ndf * mult),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf * mult, 1, 4, 1, 1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score patches as real or synthetic.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, in_channels, H, W)``: the MSI and an H&E, concatenated.

        Returns
        -------
        torch.Tensor
            ``(N, 1, h, w)`` logits, one per patch.
        """
        return self.net(x)


def patch_receptive_field(n_layers: int) -> int:
    """Compute the receptive field of :class:`PatchDiscriminator`.

    Parameters
    ----------
    n_layers : int
        Its strided layers.

    Returns
    -------
    int
        Receptive field in pixels (70 for 3 layers).
    """
    rf = 1
    # walk back from the output: two stride-1 4x4 convs, then n_layers stride-2 4x4 convs
    for stride in [1, 1] + [2] * n_layers:
        rf = (rf - 1) * stride + 4
    return rf


class PixelDiscriminator(nn.Module):
    """A 1x1 PatchGAN: scores every pixel of ``cat(input, output)`` on its own.

    Parameters
    ----------
    in_channels : int
        MSI channels + 3.
    ndf : int
        Filters of the first layer.
    norm : {"batch", "instance", "none"}
        Normalisation.
    """

    def __init__(self, in_channels: int, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, ndf, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, ndf * 2, 1, bias=norm != "batch"),
            _norm(norm, ndf * 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf * 2, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score pixels as real or synthetic.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, in_channels, H, W)``.

        Returns
        -------
        torch.Tensor
            ``(N, 1, H, W)`` logits.
        """
        return self.net(x)


class BaselineUNet(nn.Module):
    """Plain U-Net (Ronneberger et al.) baseline of seed 000, ``tanh`` output for [-1, 1] targets."""

    def __init__(self, in_channels: int, out_channels: int = 3, base: int = 32, depth: int = 3):
        super().__init__()

        def block(a, b):
            return nn.Sequential(
                nn.Conv2d(a, b, 3, padding=1),
                nn.BatchNorm2d(b),
                nn.ReLU(),
                nn.Conv2d(b, b, 3, padding=1),
                nn.BatchNorm2d(b),
                nn.ReLU(),
            )

        ch = [base * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.enc = nn.ModuleList(
            [block(in_channels if i == 0 else ch[i - 1], ch[i]) for i in range(depth)]
        )
        self.mid = block(ch[depth - 1], ch[depth])
        self.upconv = nn.ModuleList(
            [nn.ConvTranspose2d(ch[i + 1], ch[i], 2, 2) for i in reversed(range(depth))]
        )
        self.dec = nn.ModuleList([block(2 * ch[i], ch[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(ch[0], out_channels, 1)

    @property
    def multiple(self) -> int:
        """The size inputs must be a multiple of (``2**depth``)."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate MSI to H&E.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, in_channels, H, W)``, ``H`` and ``W`` divisible by ``2**depth``.

        Returns
        -------
        torch.Tensor
            ``(N, out_channels, H, W)`` in [-1, 1] (``tanh``).
        """
        skips = []
        h = x
        for e in self.enc:
            h = e(h)
            skips.append(h)
            h = nn.functional.max_pool2d(h, 2)
        h = self.mid(h)
        for up, dec, skip in zip(self.upconv, self.dec, reversed(skips), strict=True):
            h = dec(torch.cat([up(h), skip], 1))
        return torch.tanh(self.head(h))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Initialise a network as pix2pix does.

    Conv weights N(0, std), batch-norm scales N(1, std), biases 0.

    Parameters
    ----------
    module : torch.nn.Module
        The network, changed in place.
    std : float
        Standard deviation.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


GENERATORS = {"unet_generator": UNetGenerator, "baseline_unet": BaselineUNet}
DISCRIMINATORS = {"patch": PatchDiscriminator, "pixel": PixelDiscriminator}


def build_generator(arch: dict) -> nn.Module:
    """Build a generator from its checkpoint ``arch`` dict (``{"name": ..., **kwargs}``).

    Parameters
    ----------
    arch : dict
        ``name`` (``unet_generator`` or ``baseline_unet``) and the class's keyword arguments.

    Returns
    -------
    torch.nn.Module
        The generator, freshly initialised by PyTorch.

    Raises
    ------
    ValueError
        An unknown name.
    """
    kw = dict(arch)
    name = kw.pop("name")
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r} (known: {sorted(GENERATORS)})")
    return GENERATORS[name](**kw)


def build_discriminator(arch: dict) -> nn.Module:
    """Build a discriminator from its ``arch`` dict (``{"name": ..., **kwargs}``).

    Parameters
    ----------
    arch : dict
        ``name`` (``patch`` or ``pixel``) and the class's keyword arguments.

    Returns
    -------
    torch.nn.Module
        The discriminator.

    Raises
    ------
    ValueError
        An unknown name.
    """
    kw = dict(arch)
    name = kw.pop("name")
    if name not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {name!r} (known: {sorted(DISCRIMINATORS)})")
    return DISCRIMINATORS[name](**kw)
