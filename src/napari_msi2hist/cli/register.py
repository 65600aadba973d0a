"""``msi2hist register`` and ``transform-points``: the CLI side of :mod:`..workflows.register`."""

from __future__ import annotations

import sys
from pathlib import Path

from ._common import CLIError, ProgressBar, add_pixel_args
from ._policy import check_registration_grids, declare, get_plan


def cmd_register(args) -> int:
    from ..progress import run_to_end
    from ..workflows.register import (
        RegisterConfig,
        iter_read_inputs,
        iter_register_job,
        write_outputs,
    )

    out = Path(args.out)
    bar = ProgressBar(args.quiet)
    try:
        cfg = RegisterConfig(
            route=args.route,
            model=args.model,
            stages=tuple(s for s in args.stages.split(",") if s),
            rotation_search=args.rotation_search,
            landmarks_use=args.landmarks_use,
            summary=args.summary,
            scale_range=args.scale_range,
            scale_steps=args.scale_steps,
            seed=args.seed,
            device=args.device,
        )
    except ValueError as e:
        raise CLIError(f"--route/--stages: {e}") from None
    inp = run_to_end(
        iter_read_inputs(
            cfg,
            args.fixed,
            args.moving,
            fixed_pixel_um=args.fixed_pixel_um,
            moving_pixel_um=args.moving_pixel_um,
            mz=[float(v) for v in args.mz.split(",")] if args.mz else None,
            landmarks_fixed=args.landmarks_fixed,
            landmarks_moving=args.landmarks_moving,
            fixed_mask=args.fixed_mask,
            moving_mask=args.moving_mask,
        ),
        bar,
    )
    for w in inp.warnings:
        print(f"warning: {w}", file=sys.stderr)
    check_registration_grids(
        (inp.he_rgb.shape[:2], inp.he_px, args.fixed),
        (inp.moving_shape, inp.moving_px, args.moving),
    )
    reg = run_to_end(iter_register_job(inp, cfg), bar)
    # all outputs go to a temporary folder that replaces OUT only once complete
    with get_plan(args).folder(out) as tmp:
        write_outputs(tmp, cfg, inp, reg)
    if not args.quiet:
        b, a = reg.metrics["before"], reg.metrics["after"]
        ev = reg.verdict.get("evidence", {})
        used = ""  # the metric the registration optimised, when it is not MI
        if ev.get("metric_name") not in (None, "mi") and ev.get("metric_before") is not None:
            used = (
                f", {ev['metric_name'].upper()} {ev['metric_before']:.3f} -> "
                f"{ev['metric_after']:.3f} (the metric it optimised)"
            )
        print(
            f"wrote {out}: transform.json/.h5, registered.ome.tif, report.json; "
            f"MI {b['mi']:.3f} -> {a['mi']:.3f}{used}, Dice {b['dice']:.3f} -> {a['dice']:.3f} "
            f"({reg.seconds:.1f} s)"
        )
        if reg.landmarks:
            print(
                f"landmark TRE median {reg.landmarks['tre_median_um']:.1f} um "
                f"({reg.landmarks['tre_median_msi_px']:.2f} MSI px)"
            )
    _print_verdict(reg, args)
    if reg.verdict["verdict"] == "failed" and not args.allow_failed:
        print(
            f"msi2hist register: the registration failed (see {out / 'report.json'}); the outputs "
            "are kept for inspection; --allow-failed exits 0",
            file=sys.stderr,
        )
        return 3
    return 0


def _print_verdict(reg, args) -> None:
    v = reg.verdict
    check = reg.metrics.get("pixel_size_check") or {}
    if check.get("warning"):
        print(f"warning: {check['warning']}", file=sys.stderr)
    stream = sys.stderr if v["verdict"] != "ok" else sys.stdout
    if args.quiet and v["verdict"] == "ok":
        return
    print(f"verdict: {v['verdict'].upper()}", file=stream)
    for r in v["reasons"]:
        print(f"  {r}", file=stream)


def cmd_transform_points(args) -> int:
    import numpy as np

    from ..io.points import read_points_csv, write_points_csv
    from ..registration.transforms import Transform

    tr = Transform.load(args.transform)
    pts = read_points_csv(args.points)
    mapped = tr.fixed_to_moving(pts) if args.inverse else tr.moving_to_fixed(pts)
    if not np.isfinite(mapped).all():
        raise CLIError(f"{args.transform}: maps some points of {args.points} to NaN or infinity")
    out = Path(args.out)
    with get_plan(args).file(out) as tmp:
        write_points_csv(tmp, mapped)
    if not args.quiet:
        print(
            f"wrote {out}: {len(mapped)} points mapped {'fixed -> moving' if args.inverse else 'moving -> fixed'}"
        )
    return 0


def add_parsers(sub) -> None:
    """The registration sub-parsers."""
    p = sub.add_parser("register", help="register an MSI (or its synthetic H&E) to the real H&E")
    p.add_argument("--fixed", required=True, help="the real H&E image")
    p.add_argument(
        "--moving", required=True, help="an .imzML, a synthetic H&E, or an MSI image/stack"
    )
    p.add_argument(
        "--out",
        required=True,
        help="folder for transform.json/.h5, registered.ome.tif, report.json",
    )
    p.add_argument(
        "--route",
        choices=["synthesis", "direct"],
        default="synthesis",
        help=(
            "synthesis (default): register a synthetic H&E made from the imzML by --model; "
            "direct: register the MSI image itself (TIC or PCA of an imzML, or a single-channel "
            "image export, which only this route can use)"
        ),
    )
    p.add_argument(
        "--model", default="demo", help="checkpoint for the synthesis route (default: bundled demo)"
    )
    p.add_argument(
        "--stages",
        default="rigid,affine",
        help="comma list of rigid, affine, bspline (default: rigid,affine)",
    )
    p.add_argument(
        "--rotation-search",
        type=int,
        default=12,
        help="> 0 (default 12): global pose search over the full circle, both mirror images and "
        "--scale-range; 0: no search, start from the images as placed",
    )
    p.add_argument(
        "--mz",
        help="direct route: comma list of m/z (e.g. 760.585,798.541) whose ion images are "
        "resampled into registered.ome.tif",
    )
    p.add_argument("--landmarks-fixed", help="napari points CSV on the H&E (world um)")
    p.add_argument("--landmarks-moving", help="napari points CSV on the MSI (world um), same order")
    p.add_argument(
        "--landmarks-use",
        choices=["fit", "hybrid", "eval"],
        default="eval",
        help="eval (default): register by intensity and report the landmarks' TRE; fit: the "
        "transform is the landmarks' fit; hybrid: start from the landmarks' similarity fit and "
        "refine by intensity",
    )
    add_pixel_args(p)
    p.add_argument(
        "--fixed-mask", help="H&E tissue mask image (non-zero = tissue; default: detected)"
    )
    p.add_argument(
        "--moving-mask", help="tissue mask on the moving image's grid (default: detected)"
    )
    p.add_argument(
        "--summary",
        choices=["tic", "pca"],
        default="tic",
        help="direct route: the MSI image registered (TIC or first principal component; "
        "default: tic)",
    )
    p.add_argument(
        "--scale-range",
        type=float,
        default=1.25,
        help="the search tries scales in [1/R, R] around the pixel-size ratio (1: none; "
        "default: 1.25; widen it when the pixel sizes are uncertain)",
    )
    p.add_argument(
        "--scale-steps", type=int, default=5, help="scales tried in that range (default: 5)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the metric sampling (same seed: same result)"
    )
    p.add_argument(
        "--allow-failed",
        action="store_true",
        help="exit 0 even when the verdict is 'failed' (default: exit 3)",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda", "mps"],
        help="where the synthesis route's model runs (default: auto, a GPU when there is one)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or summary (warnings, errors and a failed verdict still print)",
    )
    p.set_defaults(func=cmd_register)
    declare(p, ("fixed", "moving", "model", "landmarks_fixed", "landmarks_moving"), "out", "folder")


def add_points_parsers(sub) -> None:
    """``transform-points`` (listed after the cross-modal and interop commands)."""
    p = sub.add_parser("transform-points", help="map napari points CSV through a transform")
    p.add_argument("--transform", required=True, help="transform.json (or an ITK .tfm/.h5)")
    p.add_argument(
        "--points", required=True, help="napari points CSV in the moving frame (world um)"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--inverse", action="store_true", help="map fixed -> moving instead")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_transform_points)
    declare(p, ("transform", "points"), "out", "file")
