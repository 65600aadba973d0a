"""Write docs/cli.md from the argument parser (tests/core/test_docs.py checks that it is current)."""

from __future__ import annotations

import sys
from pathlib import Path

from napari_msi2hist.cli import build_parser


def render() -> str:
    ap = build_parser()
    sub = next(a for a in ap._actions if a.__class__.__name__ == "_SubParsersAction")
    out = [
        "# Command-line reference",
        "",
        "Generated from the parser by `python docs/make_cli_reference.py`.",
        "",
        "Every command exits non-zero with a one-line message on error that names the file and the",
        "problem (`--debug` shows the traceback).",
        "",
        "**Outputs.** One policy for every command that writes:",
        "",
        "- it never writes over a file it reads: `--out` is compared with every input by device and",
        "  inode, so a symlink or hard link to an input counts as the input (an imzML brings its",
        "  `.ibd`; a pairs YAML brings every file it names); an output folder may not hold an input;",
        "- it never writes over earlier output unless given `--overwrite`;",
        "- a file is written under a temporary name and renamed into place; a folder (`register`,",
        "  `phantom`, `demo`, `predict-msi`, `classify`, `superres`) is written into a temporary",
        "  sibling folder that replaces `--out` only once complete, so a failed or interrupted run",
        "  (Ctrl-C, SIGTERM) leaves neither a partial folder nor temporary files, and with",
        "  `--overwrite` the old folder stays until the new one is complete. Such a folder lists the",
        "  files it wrote in a hidden manifest (`.msi2hist-output.json`); a folder is only ever replaced",
        "  when it holds nothing else, so a file you put in an output folder (notes, other data) makes",
        "  the command refuse, with or without `--overwrite`, naming that file, and it is kept;",
        "- `train` and `compare` write a resumable run folder in place (checkpoints atomically).",
        "  Ctrl-C or SIGTERM during `train` saves a checkpoint and exits 130; `--resume` continues",
        "  it (and is an error without a checkpoint); `--overwrite` discards an earlier run's files",
        "  when the new run starts.",
        "",
        "**Memory.** Allocations whose size an input decides (rasters, model grids, checkpoints) are",
        "estimated first and refused over a budget: half the available memory, or `--max-memory`",
        "(before the command, e.g. `msi2hist --max-memory 8G peaks ...`) or `$MSI2HIST_MAX_MEMORY`.",
        "",
    ]
    for name, p in sub.choices.items():
        p.prog = f"msi2hist {name}"
        out += [f"## msi2hist {name}", "", "```", p.format_help().rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    Path(__file__).with_name("cli.md").write_text(render())
    sys.exit(0)
