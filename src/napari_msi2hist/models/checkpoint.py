"""Self-describing, safely loadable checkpoints.

One file (``torch.save`` of a dict of plain Python values and tensors) holds the weights, the
architecture, the MSI channel contract, training metadata, and format and package versions. Loading
uses ``torch.load(..., weights_only=True)``: a file carrying pickled objects other than tensors and
plain containers (i.e. anything that could run code) is refused. Writes are atomic (temporary file
in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._files import atomic_path
from .contract import ChannelContract
from .networks import build_generator

FORMAT = "napari-msi2hist checkpoint"
FORMAT_VERSION = 1
DEMO_NAME = "demo"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and the problem."""


@dataclass
class Checkpoint:
    arch: dict
    contract: ChannelContract
    state_dict: dict
    training: dict = field(default_factory=dict)
    extra_state: dict = field(default_factory=dict)  # optimiser/RNG state for resuming (training)
    path: str = ""
    package_version: str = ""

    def build(self, device: str | torch.device = "cpu", eval_mode: bool = True) -> torch.nn.Module:
        model = build_generator(self.arch)
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()}
        )
        model.to(device)
        if eval_mode:
            model.eval()
        return model

    def describe(self) -> str:
        t = self.training
        return (
            f"{Path(self.path).name or 'checkpoint'}: {self.arch.get('name')} with {self.contract.n_channels} "
            f"m/z channels at {self.contract.working_pixel_um} um, trained {t.get('steps', '?')} steps"
        )


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    arch: dict,
    contract: ChannelContract,
    training: dict | None = None,
    extra_state: dict | None = None,
    half: bool = False,
) -> Path:
    from .. import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "arch": dict(arch),
        "contract": contract.as_dict(),
        "training": dict(training or {}),
        "state_dict": sd,
        "extra_state": extra_state or {},
    }
    tmp = atomic_path(path)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def demo_checkpoint_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "demo_generator.pt"


def resolve_model_path(spec: str | os.PathLike) -> Path:
    """``"demo"`` means the bundled checkpoint; anything else is a file path."""
    if str(spec) == DEMO_NAME:
        p = demo_checkpoint_path()
        if not p.is_file():
            raise CheckpointError(
                f"{p}: the bundled demo checkpoint is missing from this installation"
            )
        return p
    return Path(spec)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    path = resolve_model_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused: the file contains pickled objects other than weights, which could run code "
            f"when loaded ({str(e).splitlines()[0][:160]})"
        ) from None
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:160]})"
        ) from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-msi2hist checkpoint (no '{FORMAT}' header)")
    if int(d.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {d.get('format_version')} is newer than this package understands "
            f"({FORMAT_VERSION}); upgrade napari-msi2hist"
        )
    try:
        contract = ChannelContract.from_dict(d["contract"])
        return Checkpoint(
            d["arch"],
            contract,
            d["state_dict"],
            d.get("training", {}),
            d.get("extra_state", {}),
            str(path),
            d.get("package_version", ""),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: incomplete checkpoint ({type(e).__name__}: {e})") from None
