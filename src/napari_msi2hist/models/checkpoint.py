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
from .._limits import ResourceLimitError
from .contract import ChannelContract
from .networks import build_generator

FORMAT = "napari-msi2hist checkpoint"
FORMAT_VERSION = 1
DEMO_NAME = "demo"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and the problem."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: weights, architecture, MSI channel contract and training record."""

    arch: dict
    contract: ChannelContract
    state_dict: dict
    training: dict = field(default_factory=dict)
    extra_state: dict = field(default_factory=dict)  # optimiser/RNG state for resuming (training)
    path: str = ""
    package_version: str = ""

    def build(self, device: str | torch.device = "cpu", eval_mode: bool = True) -> torch.nn.Module:
        """Build the generator and load the checkpoint's weights (half-precision weights become float32).

        Parameters
        ----------
        device : str or torch.device
            Where the model goes.
        eval_mode : bool
            Switch the model to evaluation mode.

        Returns
        -------
        torch.nn.Module
            The generator.

        Raises
        ------
        CheckpointError
            An architecture outside the limits, or weights that do not fit it.
        """
        check_arch(self.arch, self.path or "checkpoint")
        try:
            model = build_generator(self.arch)
            model.load_state_dict(
                {k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()}
            )
        except (RuntimeError, TypeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"{self.path or 'checkpoint'}: its weights do not fit its architecture "
                f"({' '.join(str(e).split())[:240]})"
            ) from None
        model.to(device)
        if eval_mode:
            model.eval()
        return model

    def describe(self) -> str:
        """Describe the checkpoint in one line.

        Returns
        -------
        str
            File name, architecture, channels, working pixel and training steps.
        """
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
    """Save a self-describing checkpoint, atomically.

    Weights, architecture, channel contract, training record, format and package version, loadable
    with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : path-like
        The ``.pt`` file.
    model : torch.nn.Module
        The generator (its ``state_dict``).
    arch : dict
        Its architecture (:func:`~.networks.build_generator`).
    contract : ChannelContract
        The MSI channel contract it was trained for.
    training : dict, optional
        Training record (config, steps, data, metrics).
    extra_state : dict, optional
        Resume state (optimisers, discriminator, step).
    half : bool
        Store floating-point weights as float16.

    Returns
    -------
    Path
        The written file.
    """
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
    """Return where the bundled demo checkpoint lives.

    Returns
    -------
    Path
        ``data/demo_generator.pt`` in the package (it may be missing from an installation).
    """
    return Path(__file__).resolve().parent.parent / "data" / "demo_generator.pt"


def resolve_model_path(spec: str | os.PathLike) -> Path:
    """Resolve a model name to a checkpoint file.

    Parameters
    ----------
    spec : str or path-like
        ``demo`` for the bundled checkpoint, else a file path.

    Returns
    -------
    Path
        The checkpoint file (not checked for existence unless bundled).

    Raises
    ------
    CheckpointError
        ``demo`` asked for but missing from this installation.
    """
    if str(spec) == DEMO_NAME:
        p = demo_checkpoint_path()
        if not p.is_file():
            raise CheckpointError(
                f"{p}: the bundled demo checkpoint is missing from this installation"
            )
        return p
    return Path(spec)


# bounds on architecture fields a checkpoint declares (a 5 KB file must not ask for a 8 GiB network)
ARCH_BOUNDS = {
    "in_channels": (1, 4096),
    "out_channels": (1, 16),
    "ngf": (1, 256),
    "depth": (2, 10),
    "base": (1, 256),
    "ndf": (1, 512),
    "n_layers": (1, 8),
    "n_dropout": (0, 10),
}


def _estimate_generator_bytes(arch: dict) -> float:
    """fp32 bytes of a generator's weights (an upper estimate; the model is not built)."""
    cin = int(arch.get("in_channels", 1))
    if arch.get("name") == "baseline_unet":
        base, depth = int(arch.get("base", 32)), int(arch.get("depth", 3))
        ch = [base * 2**i for i in range(depth + 1)]
        n = 9 * (cin * ch[0] + sum(4 * a * a for a in ch))
    else:
        ngf, depth = int(arch.get("ngf", 64)), int(arch.get("depth", 8))
        ch = [min(ngf * 2**i, ngf * 8) for i in range(depth)]
        n = 16 * (
            cin * ch[0] + 3 * sum(a * b for a, b in zip(ch, ch[1:], strict=False)) + ch[0] * 6
        )
    return 4.0 * n


def check_arch(arch, source) -> None:
    """Refuse an architecture that is not plain, bounded numbers or would exceed the memory budget.

    The check runs before anything is built.

    Parameters
    ----------
    arch : dict
        ``{"name": ..., **fields}`` as stored in a checkpoint.
    source : path-like or str
        Named in the message.

    Raises
    ------
    CheckpointError
        A field out of :data:`ARCH_BOUNDS` or not an integer.
    ResourceLimitError
        The network would not fit the memory budget.
    """
    from .._limits import check_allocation

    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise CheckpointError(f"{source}: the architecture is not a mapping with a 'name'")
    for k, (lo, hi) in ARCH_BOUNDS.items():
        if k in arch:
            v = arch[k]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise CheckpointError(
                    f"{source}: architecture field {k}={v!r} is outside the supported {lo}..{hi}"
                )
    for k in ("dropout",):
        if k in arch and not (isinstance(arch[k], int | float) and 0 <= arch[k] < 1):
            raise CheckpointError(f"{source}: architecture field {k}={arch[k]!r} is not in [0, 1)")
    check_allocation(3 * _estimate_generator_bytes(arch), "the checkpoint's network", source)


def check_torch_file(path, what: str = "napari-msi2hist checkpoint", error=None) -> None:
    """Check a file before ``torch.load``.

    It must be a torch zip archive with stored (uncompressed) members whose total size fits the
    memory budget, or a pickle (which ``weights_only`` loading vets).

    Parameters
    ----------
    path : path-like
        The file.
    what : str
        What it should be, for the message ("not a WHAT").
    error : type, optional
        Exception class to raise (default :class:`CheckpointError`).
    """
    import zipfile

    from .._limits import check_allocation

    error = error or CheckpointError
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not zipfile.is_zipfile(path):
        if head[:1] == b"\x80":  # a pickle (or torch's legacy format): weights_only vets it
            return
        article = "" if error is CheckpointError else "loadable "
        raise error(f"{path}: not a {article}{what} (not a PyTorch file)")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise error(f"{path}: not a readable {what} ({e})") from None
    if len(infos) > 100_000:
        raise error(f"{path}: {len(infos)} archive members; not a {what}")
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise error(
            f"{path}: compressed archive members ({packed[0]}); torch.save never writes them, "
            f"so this is not a {what}"
        )
    check_allocation(float(sum(i.file_size for i in infos)), f"the {what}'s contents", path)


def _check_weights(state_dict, path: Path) -> None:
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointError(f"{path}: incomplete checkpoint (no weights)")
    for k, v in state_dict.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: weight {k!r} is not a tensor")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{path}: weight {k} holds NaN or infinite values; refused")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint safely (``torch.load(weights_only=True)``).

    Parameters
    ----------
    path : str or path-like
        A checkpoint file, or ``demo``.

    Returns
    -------
    Checkpoint
        Weights, architecture, contract and training record.

    Raises
    ------
    CheckpointError
        Missing, not a checkpoint of ours, pickled objects other than weights (refused: they could
        run code), or incomplete.
    ResourceLimitError
        The file or its tensors exceed the memory budget.
    """
    path = resolve_model_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    check_torch_file(path)
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
        check_arch(d["arch"], path)
        _check_weights(d["state_dict"], path)
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
    except (CheckpointError, ResourceLimitError):
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: incomplete checkpoint ({type(e).__name__}: {e})") from None
