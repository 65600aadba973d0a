"""The CLI's side of the output policy (see :mod:`napari_msi2hist._files`) and of signals.

Every sub-command declares, where its parser is built, which arguments are inputs and which is its
output (:func:`declare`); :func:`plan_for` turns the parsed arguments into an
:class:`~napari_msi2hist._files.OutputPlan` and checks the output before the command runs, so no
command can forget the check. A test asserts that every sub-command made the declaration.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from .._files import OutputPlan

# output kinds: "file" (one file, atomic), "folder" (all or nothing), "run" (a resumable run
# folder, written in place: train, compare)
KINDS = ("none", "file", "folder", "run")
BUNDLED_MODELS = {"demo": "demo_generator.pt", "superres": "superres_generator.pt"}


def declare(p, inputs: tuple[str, ...] = (), output: str | None = None, kind: str = "none"):
    """Record on a sub-parser which ``args`` attributes are input files and which one is the output.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The sub-command's parser; commands that write also get ``--overwrite``.
    inputs : tuple of str
        Attribute names of the arguments that name files the command reads.
    output : str, optional
        Attribute name of the output argument.
    kind : {"none", "file", "folder", "run"}
        How the output is written (see :class:`napari_msi2hist._files.OutputPlan`).
    """
    assert kind in KINDS and (kind == "none") == (output is None)
    p.set_defaults(_inputs=tuple(inputs), _output=output, _output_kind=kind)
    if kind in ("file", "folder", "run") and not any(
        "--overwrite" in a.option_strings for a in p._actions
    ):
        p.add_argument(
            "--overwrite",
            action="store_true",
            help=(
                "replace earlier output (never an input, nor a folder holding files msi2hist did "
                "not write; a folder only once the new one is complete)"
            ),
        )


def _input_value(name: str, value) -> list:
    if value is None or value == "":
        return []
    if name in ("model",) and str(value) in BUNDLED_MODELS:
        return [Path(__file__).resolve().parent.parent / "data" / BUNDLED_MODELS[str(value)]]
    paths = [value]
    if name == "transform" and str(value).lower().endswith(".json"):
        with contextlib.suppress(Exception):
            d = json.loads(Path(value).read_text())
            if isinstance(d, dict) and isinstance(d.get("itk_file"), str):
                paths.append(Path(value).parent / d["itk_file"])
    return paths


def plan_for(args) -> OutputPlan:
    """The output plan of a parsed command line; checks its output against its inputs.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of a sub-command that called :func:`declare`.

    Returns
    -------
    OutputPlan
        With every input (a pairs YAML adds the files it names) and the output.

    Raises
    ------
    OutputRefused
        When the output is an input, holds one, or is earlier output without ``--overwrite``.
    """
    plan = OutputPlan(overwrite=bool(getattr(args, "overwrite", False)))
    for name in getattr(args, "_inputs", ()):
        plan.add_inputs(_input_value(name, getattr(args, name, None)))
    if getattr(args, "pairs", None) and "pairs" in getattr(args, "_inputs", ()):
        from ..models.pairs import read_pairs_yaml

        for e in read_pairs_yaml(args.pairs):
            plan.add_inputs([e.get("imzml"), e.get("he"), e.get("label")])
            if isinstance(e.get("align"), dict):
                for k, v in e["align"].items():
                    plan.add_inputs(_input_value(k, Path(e["base"]) / v))
    kind = getattr(args, "_output_kind", "none")
    out = getattr(args, args._output) if kind != "none" else None
    plan.outputs = [Path(out)] if out else []
    if kind == "file":
        plan.check_file(out)
    elif kind == "folder":
        plan.check_folder(out)
    elif kind == "run":
        plan.check_folder(
            out,
            resumable=True,
            writes=("config.yaml", "metrics.jsonl", "model.pt", "checkpoints/last.pt"),
        )
    return plan


def get_plan(args) -> OutputPlan:
    """The plan :func:`main` made, or a fresh one (a command function called directly)."""
    plan = getattr(args, "plan", None)
    if plan is None:
        plan = args.plan = plan_for(args)
    return plan


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so outputs in progress are cleaned up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def signals_to_cancel(token) -> Iterator[None]:
    """Ctrl-C and SIGTERM cancel ``token`` (the job stops at its next check and saves its state);
    a second signal interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if token.cancelled:
            raise KeyboardInterrupt
        token.cancel()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def one_line(e: BaseException, plan) -> str:
    """One line naming the file and the problem, for any exception.

    Parameters
    ----------
    e : BaseException
        The error.
    plan : OutputPlan or None
        The command's plan; when the message names none of its files, the inputs are named.

    Returns
    -------
    str
        A single line.
    """
    text = [line.strip() for line in str(e).splitlines() if line.strip()]
    msg = text[0] if text else ""
    if "itk" in str(e).lower() and len(text) > 1:  # ITK: location first, description after
        msg = "ITK: " + next((t for t in text if "ERROR" in t or "Description" in t), text[-1])
    if isinstance(e, KeyError | IndexError | TypeError | AttributeError | RuntimeError) or not msg:
        msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    if isinstance(e, UnicodeDecodeError):
        msg = "not a text file (undecodable bytes)"
    if isinstance(e, OSError) and getattr(e, "filename", None):
        msg = f"{e.filename}: {e.strerror or msg}"
    names = [str(p) for p in (plan.inputs if plan is not None else [])]
    known = names + [str(p) for p in (plan.outputs if plan is not None else [])]
    if names and not any(n in msg or Path(n).name in msg for n in known if len(Path(n).name) > 2):
        msg = f"{', '.join(dict.fromkeys(names[:3]))}: {msg}"
    return msg


def check_registration_grids(*images) -> None:
    """Refuse pixel sizes that would make registration allocate huge grids: each image is brought
    to the coarser image's pixel by block averaging, which pads it to a whole number of blocks
    (a pixel size of 1e-6 or 1e6 um asks for GiB to PiB).

    Parameters
    ----------
    *images : tuple
        ``(shape_yx, pixel_size_yx_um, source)`` of each image to register.

    Raises
    ------
    ResourceLimitError
        When a padded grid would exceed the memory budget.
    """
    from .._limits import check_allocation

    pxs = [float(v) for _, px, _ in images for v in px]
    if not all(v > 0 and v < float("inf") for v in pxs):
        bad = next(src for _, px, src in images if not all(0 < float(v) < float("inf") for v in px))
        raise ValueError(f"{bad}: pixel size must be a positive finite number of um")
    target = max(pxs)
    for shape, px, src in images:
        cells = 1.0
        for n, p in zip(shape, px, strict=True):
            f = max(1.0, round(target / float(p)))
            cells *= max(float(n), -(-float(n) // f) * f)
        check_allocation(
            8.0 * cells, f"registering at {target:g} um pixels (this image at {px[0]:g} um)", src
        )
