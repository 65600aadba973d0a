"""``msi2hist register`` and ``transform-points``: the CLI side of :mod:`..workflows.register`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._common import CLIError, ProgressBar, add_pixel_args, print_domain_warnings
from ._policy import check_registration_grids, declare, get_plan


def cmd_register(args) -> int:
    import numpy as np

    from ..io.histology import read_histology, to_uint8_rgb
    from ..io.imzml import is_imzml_path, open_imzml
    from ..phantom import read_points_csv
    from ..pixel_size import resolve_pixel_size
    from ..progress import run_to_end
    from ..registration.intensity import RegistrationOptions
    from ..registration.pipeline import iter_register_msi

    out = Path(args.out)
    bar = ProgressBar(args.quiet)
    he = read_histology(args.fixed)
    for w in he.warnings:
        print(f"warning: {w}", file=sys.stderr)
    he_rgb = to_uint8_rgb(np.asarray(he.levels[0])[..., :3])
    he_px = resolve_pixel_size(he.pixel_size_um, args.fixed_pixel_um, "fixed", args.fixed)
    stages = tuple(s for s in args.stages.split(",") if s)
    opts = RegistrationOptions(
        stages=stages,
        rotation_search=args.rotation_search,
        seed=args.seed,
        scale_range=args.scale_range,
        scale_steps=args.scale_steps if args.scale_range > 1 else 1,
    )
    lm_f = read_points_csv(args.landmarks_fixed) if args.landmarks_fixed else None
    lm_m = read_points_csv(args.landmarks_moving) if args.landmarks_moving else None
    if (lm_f is None) != (lm_m is None):
        raise CLIError("give both --landmarks-fixed and --landmarks-moving")
    if lm_f is not None:
        from ..registration.landmarks import check_landmark_pairs

        check_landmark_pairs(lm_m, lm_f, (args.landmarks_moving, args.landmarks_fixed))
    synth = stack = mask = None
    msi_px = None
    mz = None
    if is_imzml_path(args.moving):
        from ..msi.ion_images import ion_images, total_ion_image

        with open_imzml(args.moving) as imz:
            msi_px = resolve_pixel_size(
                imz.pixel_size_um, args.moving_pixel_um, "moving", args.moving
            )
            imz.pixel_size_um = msi_px
            if args.route == "synthesis":
                from ..models.checkpoint import load_checkpoint
                from ..models.inference import InferenceOptions
                from ..models.synthesis import extract_for_contract, iter_synthesize

                ckpt = load_checkpoint(args.model)
                ions = run_to_end(extract_for_contract(imz, ckpt), bar)
                res = run_to_end(
                    iter_synthesize(ions, ckpt, InferenceOptions(device=args.device)), bar
                )
                print_domain_warnings(res)
                synth, moving_px = res.rgb, res.pixel_size_um
                stack, mask, mz = ions.stack, ions.mask, ions.mz
            else:
                stack = total_ion_image(imz)[None]
                mask, moving_px = imz.measured_mask(), msi_px
                if args.mz:
                    ions = ion_images(imz, [float(v) for v in args.mz.split(",")])
                    stack, mz = ions.stack, ions.mz
    else:
        img = read_histology(args.moving)
        arr = np.asarray(img.levels[0])
        moving_px = msi_px = resolve_pixel_size(
            img.pixel_size_um, args.moving_pixel_um, "moving", args.moving
        )
        if img.rgb:
            if args.route != "synthesis":
                raise CLIError(
                    f"{args.moving}: an RGB moving image is a synthetic H&E: use --route synthesis"
                )
            synth = to_uint8_rgb(arr)
        else:
            stack = arr if arr.ndim == 3 else arr[None]
            mask = np.ones(stack.shape[-2:], bool)
            if stack.shape[0] > 16:
                raise CLIError(f"{args.moving}: {stack.shape[0]} channels: expected an MSI image")
            if args.route == "synthesis":
                raise CLIError(
                    f"{args.moving}: the synthesis route needs an imzML (and --model) or a synthetic H&E"
                )
    check_registration_grids(
        (he_rgb.shape[:2], he_px, args.fixed),
        ((synth if stack is None else stack[0]).shape[:2], moving_px, args.moving),
    )
    reg = run_to_end(
        iter_register_msi(
            he_rgb,
            he_px,
            args.route,
            moving_px,
            synth_rgb=synth,
            msi_stack=stack,
            msi_mask=mask,
            opts=opts,
            landmarks_fixed=lm_f,
            landmarks_moving=lm_m,
            landmarks_use=args.landmarks_use,
            msi_pixel_um=float(np.mean(msi_px)),
            summary=args.summary,
            fixed_mask=_read_mask(args.fixed_mask, he_rgb.shape[:2]),
            moving_mask=_read_mask(
                args.moving_mask, synth.shape[:2] if synth is not None else stack.shape[-2:]
            ),
        ),
        bar,
    )
    reg.transform.meta.update(
        {
            "fixed": str(Path(args.fixed).resolve()),
            "moving": str(Path(args.moving).resolve()),
            "fixed_pixel_size_um": list(he_px),
            "moving_pixel_size_um": list(moving_px),
            "metrics": reg.metrics,
        }
    )
    from .._limits import check_allocation

    n_layers = 3 if stack is None else stack.shape[0]
    check_allocation(
        2.0 * n_layers * he_rgb.shape[0] * he_rgb.shape[1] * 4,
        f"{n_layers} registered float32 images of {he_rgb.shape[0]} x {he_rgb.shape[1]} px",
        args.fixed,
    )
    # all outputs go to a temporary folder that replaces OUT only once complete
    with get_plan(args).folder(out) as tmp:
        _write_register_outputs(args, tmp, reg, stack, synth, mz, msi_px, moving_px, he_rgb, he_px)
    if not args.quiet:
        b, a = reg.metrics["before"], reg.metrics["after"]
        print(
            f"wrote {out}: transform.json/.h5, registered.ome.tif, report.json; MI {b['mi']:.3f} -> {a['mi']:.3f}, "
            f"Dice {b['dice']:.3f} -> {a['dice']:.3f} ({reg.seconds:.1f} s)"
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


def _write_register_outputs(args, out, reg, stack, synth, mz, msi_px, moving_px, he_rgb, he_px):
    import numpy as np

    from ..io.histology import write_ome_tiff

    reg.transform.save(out / "transform.json", out / "transform.h5")
    # the moving data resampled onto the H&E grid: every ion image (or the synthetic H&E)
    layers, names = [], []
    if stack is not None:
        for c in range(stack.shape[0]):
            layers.append(
                reg.transform.resample_moving_to_fixed(stack[c], msi_px, he_rgb.shape[:2], he_px)
            )
        names = (
            [f"mz={m:.4f}" for m in mz]
            if mz is not None
            else [f"channel {c}" for c in range(len(layers))]
        )
    else:
        for c in range(3):
            layers.append(
                reg.transform.resample_moving_to_fixed(
                    synth[..., c].astype(np.float32), moving_px, he_rgb.shape[:2], he_px
                )
            )
        names = ["R", "G", "B"]
    write_ome_tiff(
        out / "registered.ome.tif", np.stack(layers).astype(np.float32), he_px, channel_names=names
    )
    report = {
        "route": args.route,
        "stages": [v for v in args.stages.split(",") if v],
        "seconds": reg.seconds,
        "verdict": reg.verdict,
        "metrics": reg.metrics,
        "landmarks": reg.landmarks,
        "seed": args.seed,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))


def _read_mask(path, shape):
    """A mask image (non-zero = inside) that must match ``shape``; None passes through."""
    if not path:
        return None
    import numpy as np

    from ..io.histology import read_histology

    a = np.asarray(read_histology(path).levels[0])
    if a.ndim == 3:
        a = a.max(-1)
    if a.shape[:2] != tuple(shape):
        raise CLIError(
            f"{path}: mask is {a.shape[0]}x{a.shape[1]} px, its image {shape[0]}x{shape[1]} px"
        )
    return a > 0


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

    from ..phantom import read_points_csv, write_points_csv
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
    p.add_argument("--route", choices=["synthesis", "direct"], default="synthesis")
    p.add_argument(
        "--model", default="demo", help="checkpoint for the synthesis route (default: bundled demo)"
    )
    p.add_argument("--stages", default="rigid,affine", help="comma list of rigid, affine, bspline")
    p.add_argument("--rotation-search", type=int, default=12, help="start angles tried (0: none)")
    p.add_argument(
        "--mz", help="direct route: m/z whose ion images are resampled into registered.ome.tif"
    )
    p.add_argument("--landmarks-fixed", help="napari points CSV on the H&E (world um)")
    p.add_argument("--landmarks-moving", help="napari points CSV on the MSI (world um), same order")
    p.add_argument("--landmarks-use", choices=["fit", "hybrid", "eval"], default="eval")
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
        help="direct route: the MSI image registered (TIC or first principal component)",
    )
    p.add_argument(
        "--scale-range",
        type=float,
        default=1.25,
        help="the search tries scales in [1/R, R] around the pixel-size ratio (1: none)",
    )
    p.add_argument("--scale-steps", type=int, default=5, help="scales tried in that range")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the metric sampling (same seed: same result)"
    )
    p.add_argument(
        "--allow-failed",
        action="store_true",
        help="exit 0 even when the verdict is 'failed' (default: exit 3)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--quiet", action="store_true")
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
