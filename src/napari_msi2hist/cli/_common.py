"""What every ``msi2hist`` command shares: the one-line error, the progress bar, shared options."""

from __future__ import annotations

import sys
import time

from ..progress import Progress


class CLIError(Exception):
    pass


class ProgressBar:
    """A small terminal progress bar (stderr) that stays quiet when stderr is not a terminal."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.stage = None
        self.val = ""

    @staticmethod
    def _postfix(info: dict | None) -> str:
        """Training losses (and validation metrics) shown after the bar."""
        if not info or "losses" not in info:
            return ""
        return " " + " ".join(f"{k}={v:.3g}" for k, v in info["losses"].items())

    def __call__(self, p: Progress):
        if self.quiet:
            return
        now = time.monotonic()
        info = p.info or {}
        if info.get("note"):
            sys.stderr.write(f"{info['note']}\n")
        if "val_mi" in info:  # a validation: its own line, kept in the terminal's history
            self.val = (
                f" | val MI {info['val_mi']:.3f} SSIM {info.get('val_ssim', float('nan')):.3f}"
            )
            sys.stderr.write(
                ("\r" if self.tty else "") + f"step {p.done}/{p.total}:"
                f"{self._postfix(info)}{self.val}" + "\n"
            )
        if (
            p.stage != self.stage
            or now - self.last > (0.1 if self.tty else 5.0)
            or p.done >= p.total
        ):
            self.last = now
            self.stage = p.stage
            width = 30
            k = int(width * p.fraction)
            msg = f"{p.stage:<18} [{'#' * k}{'.' * (width - k)}] {100 * p.fraction:5.1f}%"
            if "losses" in info:
                msg += f" step {p.done}/{p.total}{self._postfix(info)}{self.val}"
            if self.tty:
                sys.stderr.write("\r" + msg + ("\n" if p.done >= p.total else ""))
            else:
                sys.stderr.write(msg + "\n")
            sys.stderr.flush()


def print_domain_warnings(res) -> None:
    """Input-domain warnings of a synthesis (models/domain.py), one line each on stderr."""
    for w in res.domain.warnings if res.domain else ():
        print(f"warning: {w}", file=sys.stderr)


def add_pixel_args(p, fixed: bool = True, moving: bool = True) -> None:
    """``--fixed-pixel-um`` / ``--moving-pixel-um``: override (or supply) a file's pixel size."""
    if fixed:
        p.add_argument(
            "--fixed-pixel-um",
            type=float,
            help="H&E pixel size in um (required when the file has none; overrides the file's)",
        )
    if moving:
        p.add_argument(
            "--moving-pixel-um",
            type=float,
            help="MSI pixel size in um (required when the file has none; overrides the file's)",
        )


def add_tolerance_args(p) -> None:
    """The one m/z-tolerance option group of every command that extracts ion images:
    ``--tol-ppm`` or ``--tol-da`` (default: :data:`~napari_msi2hist.msi.ion_images.DEFAULT_TOLERANCE`).
    The older spelling ``--tolerance V --tolerance-unit U`` is still accepted, unlisted."""
    import argparse

    from ..msi.ion_images import DEFAULT_TOLERANCE

    t = p.add_mutually_exclusive_group()
    t.add_argument(
        "--tol-ppm",
        type=float,
        help=f"half-width of each m/z window in ppm (default {DEFAULT_TOLERANCE})",
    )
    t.add_argument("--tol-da", type=float, help="half-width of each m/z window in Da")
    t.add_argument("--tolerance", type=float, help=argparse.SUPPRESS)
    p.add_argument("--tolerance-unit", choices=["ppm", "da"], default="ppm", help=argparse.SUPPRESS)


def tolerance_from_args(args):
    """The Tolerance the options of :func:`add_tolerance_args` ask for."""
    from ..msi.ion_images import DEFAULT_TOLERANCE, Tolerance

    if getattr(args, "tol_da", None) is not None:
        return Tolerance(args.tol_da, "da")
    if getattr(args, "tol_ppm", None) is not None:
        return Tolerance(args.tol_ppm, "ppm")
    if getattr(args, "tolerance", None) is not None:
        return Tolerance(args.tolerance, getattr(args, "tolerance_unit", "ppm"))
    return DEFAULT_TOLERANCE


def add_training_args(p) -> None:
    """Training options; every default is :class:`~napari_msi2hist.config.TrainConfig`'s (the Train
    widget starts from the same values)."""
    from ..config import TrainConfig
    from ..models.contract import ChannelContract

    d = TrainConfig()
    c = ChannelContract.__dataclass_fields__
    p.add_argument("--max-steps", type=int, default=d.max_steps)
    p.add_argument("--gan-mode", choices=["vanilla", "lsgan", "wgangp"], default=d.gan_mode)
    p.add_argument("--lambda-l1", type=float, default=d.lambda_l1, help="L1 weight (seed 000: 200)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (seed 000: 2e-5)")
    p.add_argument(
        "--decay-start", type=int, default=None, help="step from which the LR decays linearly to 0"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--patch",
        type=int,
        default=d.patch,
        help="training crop in working pixels (0: whole images)",
    )
    # the bundled demo model's architecture (see TrainConfig)
    p.add_argument(
        "--ngf", type=int, default=d.ngf, help=f"generator width (pix2pix; default {d.ngf})"
    )
    p.add_argument(
        "--depth", type=int, default=d.depth, help=f"generator U-Net depth (default {d.depth})"
    )
    p.add_argument(
        "--ndf", type=int, default=d.ndf, help=f"PatchGAN discriminator width (default {d.ndf})"
    )
    p.add_argument(
        "--working-pixel-um",
        type=float,
        default=c["working_pixel_um"].default,
        help="model grid pixel (um)",
    )
    p.add_argument("--padding", choices=["white", "black"], default=c["padding"].default)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--quiet", action="store_true")
