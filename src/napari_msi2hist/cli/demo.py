"""``msi2hist demo`` and ``gui``."""

from __future__ import annotations

from ._common import CLIError, ProgressBar
from ._policy import declare, get_plan


def cmd_demo(args) -> int:
    """The whole workflow on an embedded phantom (no download), measured against its truth."""
    if args.gui:
        return cmd_gui(args)
    from ..demo import run_demo

    with get_plan(args).folder(args.out_dir) as tmp:
        rep = run_demo(
            tmp,
            seed=args.seed,
            n_peaks=args.n_peaks,
            model=args.model,
            progress=ProgressBar(args.quiet),
        )
    if not args.quiet:
        r = rep["registration"]
        print(
            f"demo written to {args.out_dir} in {rep['seconds']['total']:.0f} s: synthetic H&E MI "
            f"{rep['synthesis_vs_truth']['mi']:.3f} / SSIM {rep['synthesis_vs_truth']['ssim']:.3f} vs truth; "
            f"median TRE synthesis route {r['synthesis']['tre_median_msi_px']:.2f} MSI px, direct route "
            f"{r['direct']['tre_median_msi_px']:.2f} MSI px; open report.html"
        )
        for route in ("synthesis", "direct"):
            print(f"verdict ({route} route): {r[route]['verdict'].upper()}")
            for reason in r[route]["verdict_reasons"]:
                print(f"  {reason}")
    return 0


def cmd_gui(args) -> int:
    """napari with the sample phantom loaded and the four widgets docked (needs the [qt] extra)."""
    try:
        from ..widgets.launch import (
            open_gui,  # the one GUI import of the CLI (allowed in pyproject)
        )
    except ImportError as e:
        raise CLIError(
            f"the GUI needs napari and a Qt binding ({e}): pip install 'napari-msi2hist[qt]'"
        ) from None
    open_gui()
    return 0


def add_parsers(sub) -> None:
    """The demo and GUI sub-parsers."""
    p = sub.add_parser("demo", help="the whole workflow on an embedded phantom, with report.html")
    p.add_argument("out_dir", nargs="?", default="demo_out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-peaks", type=int, default=50)
    p.add_argument("--model", default="demo", help="checkpoint (default: the bundled demo model)")
    p.add_argument(
        "--gui", action="store_true", help="open napari with the phantom and the widgets instead"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    declare(p, ("model",), "out_dir", "folder")
    p = sub.add_parser("gui", help="open napari with the phantom sample and the widgets docked")
    p.set_defaults(func=cmd_gui)
    declare(p)
