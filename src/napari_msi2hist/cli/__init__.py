"""``msi2hist`` command line. Errors print one line and exit non-zero (``--debug`` shows tracebacks).

Each module here parses one group of commands into the arguments of a job in
:mod:`napari_msi2hist.workflows` (or a core generator) and prints its result; no pipeline logic lives
here. :mod:`._common` holds what every command shares (:class:`CLIError`, the progress bar, shared
options), :mod:`._policy` the output policy and signal handling.
"""

from __future__ import annotations

import argparse
import sys

from ._common import CLIError, ProgressBar

__all__ = ["CLIError", "ProgressBar", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    ap = argparse.ArgumentParser(
        prog="msi2hist", description="MSI to synthetic H&E, and MSI-H&E registration."
    )
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    ap.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="memory budget for the allocations an input's size decides, e.g. 4G (default: half the available "
        "memory, or $MSI2HIST_MAX_MEMORY)",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    from . import batch, crossmodal, demo, interop, msi, register, training

    msi.add_parsers(sub)
    training.add_parsers(sub)
    register.add_parsers(sub)
    crossmodal.add_parsers(sub)
    interop.add_parsers(sub)
    batch.add_parsers(sub)
    register.add_points_parsers(sub)
    demo.add_parsers(sub)
    # the global options also after the command (`msi2hist register ... --debug`), as users type
    # them; SUPPRESS keeps a global one given before the command when it is absent after
    for p in sub.choices.values():
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show full tracebacks on errors",
        )
        p.add_argument(
            "--max-memory",
            metavar="SIZE",
            default=argparse.SUPPRESS,
            help="memory budget for the allocations an input's size decides, e.g. 4G",
        )
    return ap


def main(argv: list[str] | None = None) -> int:
    from .._limits import set_memory_budget
    from ._policy import one_line, plan_for, sigterm_as_interrupt

    ap = build_parser()
    args = ap.parse_args(argv)
    args.plan = None
    import logging

    # readers' own log lines (tifffile: "... corrupted file") would come before our one-line error
    quiet_logs = [logging.getLogger(n) for n in ("tifffile", "imageio")]
    levels = [lg.level for lg in quiet_logs]
    if not args.debug:
        for lg in quiet_logs:
            lg.setLevel(logging.CRITICAL)
    try:
        set_memory_budget(args.max_memory)
        with sigterm_as_interrupt():
            args.plan = plan_for(args)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"msi2hist {args.command}: interrupted; no output written", file=sys.stderr)
        return 130
    except Exception as e:  # one line, no traceback, unless --debug
        if args.debug:
            raise
        print(f"msi2hist {args.command}: error: {one_line(e, args.plan)}", file=sys.stderr)
        return 1
    finally:
        set_memory_budget(None)
        for lg, lv in zip(quiet_logs, levels, strict=True):
            lg.setLevel(lv)
