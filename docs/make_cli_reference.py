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
        "Every command exits non-zero with a one-line message on error (`--debug` shows the traceback).",
        "",
    ]
    for name, p in sub.choices.items():
        p.prog = f"msi2hist {name}"
        out += [f"## msi2hist {name}", "", "```", p.format_help().rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    Path(__file__).with_name("cli.md").write_text(render())
    sys.exit(0)
