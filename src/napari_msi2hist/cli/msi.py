"""``msi2hist info``, ``peaks``, ``phantom`` and ``synthesize``: the MSI commands."""

from __future__ import annotations

import json
from pathlib import Path

from ._common import (
    ProgressBar,
    add_pixel_args,
    add_tolerance_args,
    print_domain_warnings,
    tolerance_from_args,
)
from ._policy import declare, get_plan


def cmd_info(args) -> int:
    from ..io.imzml import open_imzml

    with open_imzml(args.file) as imz:
        info = imz.info()
    if args.json:
        print(
            json.dumps(
                {
                    k: info[k]
                    for k in (
                        "mode",
                        "n_spectra",
                        "shape_yx",
                        "pixel_size_um",
                        "mz_range",
                        "uuid",
                        "duplicate_pixels",
                    )
                }
            )
        )
    else:
        for k, v in info.items():
            print(f"{k:16s} {v}")
    return 0


def cmd_peaks(args) -> int:
    from ..io.histology import write_ome_tiff
    from ..io.imzml import open_imzml
    from ..msi.peaks import parse_mz_list
    from ..pixel_size import resolve_pixel_size
    from ..workflows.peaks import pick_and_extract

    mz = parse_mz_list(args.mz) if args.mz else None
    out = Path(args.out)
    with open_imzml(args.file) as imz:
        imz.pixel_size_um = resolve_pixel_size(
            imz.pixel_size_um, args.moving_pixel_um, "moving", args.file
        )
        res = pick_and_extract(
            imz, args.n_peaks, mz, tolerance_from_args(args), args.norm, ProgressBar(args.quiet)
        )
    names = [f"mz={m:.4f}" for m in res.mz]
    with get_plan(args).file(out) as tmp:
        write_ome_tiff(
            tmp, res.stack, imz.pixel_size_um, channel_names=names, annotations=res.annotations()
        )
    if not args.quiet:
        print(
            f"wrote {out}: {res.stack.shape[0]} ion images of {res.stack.shape[1]}x{res.stack.shape[2]} px "
            f"(tolerance {res.tolerance}, normalisation {res.norm})"
        )
    return 0


def cmd_phantom(args) -> int:
    from ..phantom import PhantomConfig, iter_make_phantom
    from ..progress import run_to_end

    cfg = PhantomConfig(seed=args.seed, he_image=args.he, mode=args.mode)
    with get_plan(args).folder(args.out_dir) as tmp:
        ph = run_to_end(iter_make_phantom(tmp, cfg), ProgressBar(args.quiet))
    if not args.quiet:
        print(
            f"wrote phantom to {args.out_dir}: MSI {ph.msi_shape_yx[0]}x{ph.msi_shape_yx[1]} px at "
            f"{cfg.msi_pixel_um} um, H&E {ph.he_rgb.shape[0]}x{ph.he_rgb.shape[1]} px at {cfg.he_pixel_um} um"
        )
    return 0


def cmd_synthesize(args) -> int:
    from ..io.histology import write_ome_tiff
    from ..models.inference import InferenceOptions
    from ..progress import run_to_end
    from ..workflows.synthesize import iter_synthesize_job

    out = Path(args.out)
    opts = InferenceOptions(
        tile=args.tile,
        overlap=args.overlap,
        device=args.device,
        amp=not args.no_amp,
        batch_size=args.batch_size,
        compile=args.compile,
    )
    px = (args.moving_pixel_um,) * 2 if args.moving_pixel_um else None
    res = run_to_end(
        iter_synthesize_job(
            args.model, imzml=args.file, opts=opts, strict=args.strict, pixel_size_um=px
        ),
        ProgressBar(args.quiet),
    )
    print_domain_warnings(res)
    with get_plan(args).file(out) as tmp:
        write_ome_tiff(tmp, res.rgb, res.pixel_size_um)
    if not args.quiet:
        print(
            f"wrote {out}: synthetic H&E {res.rgb.shape[0]}x{res.rgb.shape[1]} px at "
            f"{res.pixel_size_um[0]} um ({Path(res.checkpoint).name})"
        )
    return 0


def add_parsers(sub) -> None:
    """The MSI commands' sub-parsers."""
    p = sub.add_parser("info", help="print imzML metadata")
    p.add_argument("file", help="an .imzML file (its .ibd next to it)")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object: mode, n_spectra, shape_yx, pixel_size_um, mz_range, uuid, "
        "duplicate_pixels",
    )
    p.set_defaults(func=cmd_info)
    declare(p, ("file",))
    p = sub.add_parser("peaks", help="pick peaks and write the ion-image stack as OME-TIFF")
    p.add_argument("file", help="an .imzML file")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--n-peaks", type=int, help="top-N peaks of the mean spectrum (seed 000: 50)")
    g.add_argument("--mz", help="comma-separated m/z list, e.g. 760.585,782.567")
    add_tolerance_args(p)
    p.add_argument(
        "--norm",
        choices=["none", "tic", "rms", "median"],
        default="tic",
        help="per-spectrum normalisation before summing (default tic, as the bundled model)",
    )
    p.add_argument(
        "--out", required=True, help="output .ome.tif ((C, Y, X) float32 with pixel size)"
    )
    add_pixel_args(p, fixed=False)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_peaks)
    declare(p, ("file",), "out", "file")
    p = sub.add_parser("phantom", help="write a paired MSI + H&E phantom with known transform")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--he", help="real H&E image to use as texture (default: procedural H&E)")
    p.add_argument("--mode", choices=["continuous", "processed"], default="continuous")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing phantom in OUT_DIR"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_phantom)
    declare(p, ("he",), "out_dir", "folder")
    p = sub.add_parser("synthesize", help="synthesise H&E from an imzML with a pix2pix checkpoint")
    p.add_argument("file", help="an .imzML file")
    p.add_argument(
        "--model", required=True, help="checkpoint file, or 'demo' for the bundled model"
    )
    p.add_argument(
        "--out", required=True, help="output RGB .ome.tif (pixel size = the model's working pixel)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument(
        "--tile", type=int, default=512, help="tile size in working pixels (default 512)"
    )
    p.add_argument(
        "--overlap", type=int, default=64, help="overlap between tiles in pixels (default 64)"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="tiles per batch (default: from free memory)"
    )
    p.add_argument(
        "--no-amp", action="store_true", help="full fp32 on GPU (default: bf16 autocast)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 1) when the MSI is outside the model's input domain (m/z coverage, "
        "intensity statistics; see docs/own_data.md) instead of warning",
    )
    add_pixel_args(p, fixed=False)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_synthesize)
    declare(p, ("file", "model"), "out", "file")
