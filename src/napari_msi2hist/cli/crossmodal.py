"""``msi2hist predict-msi``, ``classify`` and ``superres``: the H&E -> MSI direction (seeds 003/004)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from .._files import rows_to_csv, write_text_atomic
from ._common import add_tolerance_args, tolerance_from_args


def _entries(args):
    from ..models.pairs import read_pairs_yaml

    return read_pairs_yaml(args.pairs)


def _run(args, entries, bar, **cfg):
    """The predict workflow (as the Predict from H&E widget runs it) on the command's options."""
    from ..progress import run_to_end
    from ..workflows.predict import PredictConfig, iter_predict_job

    config = PredictConfig(
        mz=tuple(float(v) for v in args.mz.split(",")) if args.mz else None,
        n_peaks=args.n_peaks,
        backbone=args.features,
        stage=args.stage,
        norm=args.norm,
        tolerance=tolerance_from_args(args),
        n_components=args.n_components,
        scale=args.scale,
        **cfg,
    )
    return run_to_end(iter_predict_job(entries, config, source=args.pairs), bar)


def _in_output_folder(job):
    """Run ``job(args, out)`` with ``out`` a temporary folder that replaces ``--out`` only when the
    job succeeds (see :class:`napari_msi2hist._files.OutputPlan`)."""

    def cmd(args) -> int:
        from ._policy import get_plan

        with get_plan(args).folder(args.out) as out:
            return job(args, out)

    cmd.__name__ = f"cmd_{job.__name__.strip('_')}"
    cmd.__doc__ = job.__doc__
    return cmd


def _predict_msi(args, out) -> int:
    from ..io.histology import write_ome_tiff
    from ._common import CLIError, ProgressBar

    entries = _entries(args)
    bar = ProgressBar(args.quiet)
    res = _run(args, entries, bar, alpha=args.alpha)
    table = res.table
    k = len(res.r2)
    pred = res.images(res.predicted)
    true = res.images(res.measured)
    recon = res.images(res.pca.inverse(res.predicted))
    modes = [f"PC{i + 1}" for i in range(k)]
    for s, p, t, r in zip(table.samples, pred, true, recon, strict=True):
        px = tuple(float(v) for v in s.pixel_size_um)
        write_ome_tiff(out / f"{s.name}_pca_predicted.ome.tif", p, px, modes)
        write_ome_tiff(out / f"{s.name}_pca_measured.ome.tif", t, px, modes)
        write_ome_tiff(
            out / f"{s.name}_msi_predicted.ome.tif", r, px, [f"{m:.4f}" for m in table.mz]
        )
    if args.apply_he:
        from ..crossmodal.pipeline import iter_predict_on_he
        from ..io.histology import read_histology, to_uint8_rgb
        from ..progress import run_to_end

        he = read_histology(args.apply_he)
        rgb = to_uint8_rgb(np.asarray(he.levels[0])[..., :3])
        he_px = he.pixel_size_um
        if he_px is None:
            raise CLIError(f"{args.apply_he}: no pixel size in the image; give an OME-TIFF/SVS")
        out_px = args.apply_pixel_um or float(np.mean(table.samples[0].pixel_size_um))
        from .._limits import check_allocation

        if not 0 < out_px < float("inf"):
            raise CLIError(f"--apply-pixel-um {out_px!r}: give a positive pixel size in um")
        cells = (rgb.shape[0] * he_px[0] / out_px + 1) * (rgb.shape[1] * he_px[1] / out_px + 1)
        check_allocation(
            8.0 * cells * (len(table.mz) + k), f"predictions at {out_px:g} um", args.apply_he
        )
        a_modes, a_ions, _ = run_to_end(
            iter_predict_on_he(rgb, he_px, out_px, res.pca, res.model, args.features, args.stage),
            bar,
        )
        stem = Path(args.apply_he).name.split(".")[0]
        write_ome_tiff(out / f"{stem}_pca_from_he.ome.tif", a_modes, (out_px, out_px), modes)
        write_ome_tiff(
            out / f"{stem}_msi_from_he.ome.tif",
            a_ions,
            (out_px, out_px),
            [f"{m:.4f}" for m in table.mz],
        )
    rows = []
    for i in range(k):
        row = {
            "component": f"PC{i + 1}",
            "explained_variance": float(res.pca.explained_variance_ratio[i]),
            "r2": float(res.r2[i]),
        }
        row.update({f"r2_{n}": float(v[i]) for n, v in res.r2_per_sample.items()})
        rows.append(row)
    write_text_atomic(out / "r2.csv", rows_to_csv(rows))
    loadings = [
        {"mz": float(m), **{f"PC{i + 1}": float(res.pca.components[i, j]) for i in range(k)}}
        for j, m in enumerate(table.mz)
    ]
    write_text_atomic(out / "pca_loadings.csv", rows_to_csv(loadings))
    summary = {
        "features": table.meta["backbone"],
        "n_features": len(table.feature_names),
        "n_pixels": int(len(res.predicted)),
        "samples": [s.name for s in table.samples],
        "r2": [float(v) for v in res.r2],
        "explained_variance": [float(v) for v in res.pca.explained_variance_ratio],
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        print("component  explained  R2 (leave-one-sample-out)")
        for r in rows:
            print(f"{r['component']:>9s}  {r['explained_variance']:9.3f}  {r['r2']:+.3f}")
        print(f"wrote {args.out}")
    return 0


def _read_names(path) -> dict[float, str]:
    from ._common import CLIError

    names = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CLIError(f"{path}: not a text (UTF-8) CSV of 'mz,name'") from None
    for i, row in enumerate(csv.reader(text.splitlines())):
        if not row or (i == 0 and not _is_float(row[0])):
            continue
        if len(row) < 2 or not _is_float(row[0]):
            raise CLIError(f"{path}: line {i + 1}: expected 'mz,name'")
        names[float(row[0])] = row[1].strip()
    return names


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _classify(args, out) -> int:
    from ..io.histology import write_ome_tiff
    from ._common import CLIError, ProgressBar

    entries = _entries(args)
    names = _read_names(args.names) if args.names else None
    missing = [e["name"] for e in entries if not e.get("label")]
    if missing:
        raise CLIError(f"{args.pairs}: samples without a 'label' mask: {', '.join(missing)}")
    bar = ProgressBar(args.quiet)
    res = _run(
        args,
        entries,
        bar,
        regress=False,
        label_from=tuple(s for s in args.sources.split(",") if s),
        label_required=True,
        l2=args.l2,
        names=names,
    )
    table = res.table
    lab = table.pixels()[3]
    summary: dict = {"n_pixels": int(len(lab)), "label_fraction": float(lab.mean())}
    for name, r in res.labels.items():
        summary[name] = {"accuracy": r.accuracy, "auc": r.auc, "per_sample": r.per_sample}
        for s, img in zip(table.samples, res.images(r.oof_proba), strict=True):
            write_ome_tiff(
                out / f"{s.name}_label_probability_{name}.ome.tif",
                img,
                tuple(float(v) for v in s.pixel_size_um),
                [f"P(label | {name})"],
            )
    rows = res.biomarkers
    write_text_atomic(out / "biomarkers.csv", rows_to_csv(rows))
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        for name in ("msi", "he"):
            if name in summary:
                print(
                    f"from {name}: accuracy {summary[name]['accuracy']:.3f}, "
                    f"AUC {summary[name]['auc']:.3f} (leave-one-sample-out)"
                )
        print("top m/z by univariate AUC:")
        for r in rows[:5]:
            print(f"  {r['mz']:.4f}  AUC {r['auc']:.3f}  higher in {r['higher_in']}  {r['name']}")
        print(f"wrote {args.out}")
    return 0


def _superres(args, out) -> int:
    from ..io.histology import read_histology, to_uint8_rgb, write_ome_tiff
    from ..io.imzml import open_imzml
    from ..models.pairs import alignment_of_entry
    from ..progress import run_to_end
    from ..workflows.peaks import pick_and_extract
    from ..workflows.superres import iter_superres_job
    from ._common import CLIError, ProgressBar

    if args.transform:
        align = {"transform": str(Path(args.transform).resolve())}
    elif args.landmarks_msi or args.landmarks_he:
        if not (args.landmarks_msi and args.landmarks_he):
            raise CLIError("give both --landmarks-msi and --landmarks-he")
        align = {
            "landmarks_msi": str(Path(args.landmarks_msi).resolve()),
            "landmarks_he": str(Path(args.landmarks_he).resolve()),
        }
    else:
        align = "aligned"
    alignment = alignment_of_entry(align, Path("/"))
    bar = ProgressBar(args.quiet)
    with open_imzml(args.imzml) as imz:
        px = imz.pixel_size_um
        if px is None:
            raise CLIError(f"{args.imzml}: no pixel size in the imzML; super-resolution needs it")
        mz = [float(v) for v in args.mz.split(",")] if args.mz else None
        tol = tolerance_from_args(args)
        ions = pick_and_extract(imz, args.n_peaks, mz, tol, args.norm, bar)
    he = read_histology(args.he)
    rgb = to_uint8_rgb(np.asarray(he.levels[0])[..., :3])
    if he.pixel_size_um is None:
        raise CLIError(f"{args.he}: no pixel size in the H&E; super-resolution needs it")
    res = run_to_end(
        iter_superres_job(
            ions.stack,
            rgb,
            he.pixel_size_um,
            alignment,
            px,
            factor=args.factor,
            method=args.method,
            model=args.model,
            mask=ions.mask,
            source=args.imzml,
        ),
        bar,
    )
    hr, guide, fine_px, factor, coverage = (
        res.images,
        res.guide,
        res.pixel_size_um,
        res.factor,
        res.coverage,
    )
    names = [f"{m:.4f}" for m in ions.mz]
    write_ome_tiff(out / "superres.ome.tif", hr, (fine_px, fine_px), names)
    write_ome_tiff(out / "guide.ome.tif", guide, (fine_px, fine_px))
    info = {
        "method": args.method,
        "factor": factor,
        "pixel_size_um": fine_px,
        "msi_pixel_size_um": [float(v) for v in px],
        "mz": [float(m) for m in ions.mz],
        "guide_coverage": coverage,
    }
    write_text_atomic(out / "superres.json", json.dumps(info, indent=1))
    if not args.quiet:
        print(
            f"wrote {Path(args.out) / 'superres.ome.tif'}: {len(hr)} ion images at {fine_px:g} um "
            f"({factor}x, {args.method})",
            file=sys.stdout,
        )
    return 0


cmd_predict_msi = _in_output_folder(_predict_msi)
cmd_classify = _in_output_folder(_classify)
cmd_superres = _in_output_folder(_superres)


def _add_table_args(p) -> None:
    p.add_argument("--pairs", required=True, help="pairs YAML: imzml, he, align (+ label)")
    p.add_argument("--out", required=True, help="output folder (OME-TIFF images, CSV tables)")
    p.add_argument(
        "--features",
        help="local ResNet-50 or VGG-16 weights (torchvision layout) for deep H&E features; "
        "without it: colour deconvolution, tissue fractions and texture features",
    )
    p.add_argument(
        "--stage", type=int, default=3, help="backbone stage (ResNet-50: 1-4 = layer1-4)"
    )
    p.add_argument("--n-peaks", type=int, default=50, help="top-N peaks of the first sample")
    p.add_argument("--mz", help="comma-separated m/z list instead of top-N")
    p.add_argument("--norm", default="tic", choices=["tic", "rms", "median", "none"])
    add_tolerance_args(p)
    p.add_argument("--n-components", type=int, default=10, help="MSI PCA modes")
    p.add_argument("--scale", action="store_true", help="unit-variance m/z before PCA")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true")


def add_parsers(sub) -> None:
    import argparse

    from ._policy import declare

    p = sub.add_parser(
        "predict-msi",
        help="regress MSI PCA modes on H&E features (leave-one-sample-out R2)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Inputs: a pairs YAML of registered MSI/H&E samples (at least two).\n"
        "H&E features are averaged over each MSI pixel's footprint; ridge regression predicts\n"
        "the MSI's PCA modes, each sample predicted by a model trained on the others.\n"
        "Outputs in OUT: NAME_pca_predicted / NAME_pca_measured .ome.tif (modes on the MSI\n"
        "grid), NAME_msi_predicted.ome.tif (ion images reconstructed from the predicted modes:\n"
        "a spectrum at every pixel), r2.csv (R2 per component and sample), pca_loadings.csv,\n"
        "summary.json.",
    )
    _add_table_args(p)
    p.add_argument("--alpha", type=float, default=1.0, help="ridge penalty")
    p.add_argument(
        "--apply-he",
        help="an H&E without MSI: predict its MSI modes and ion images with the model fitted on "
        "all samples (NAME_pca_from_he / NAME_msi_from_he .ome.tif, in the H&E's frame)",
    )
    p.add_argument(
        "--apply-pixel-um", type=float, default=0.0, help="pixel of that prediction (0: the MSI's)"
    )
    p.set_defaults(func=cmd_predict_msi)
    declare(p, ("pairs", "features", "apply_he"), "out", "folder")

    p = sub.add_parser(
        "classify",
        help="predict a label mask from MSI modes and from H&E features; biomarker m/z table",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Inputs: a pairs YAML whose samples each give 'label': a mask image on the\n"
        "H&E's pixel grid (non-zero = in the class, e.g. a tumour annotation saved from a napari\n"
        "Labels layer) or a GeoJSON of polygons in H&E pixels (QuPath export). Logistic\n"
        "regression, leave-one-sample-out, from the MSI's PCA modes and from the H&E\n"
        "features. Outputs in OUT: NAME_label_probability_{msi,he}.ome.tif,\n"
        "biomarkers.csv (every m/z's univariate AUC for the label, best first; names from\n"
        "--names), summary.json (accuracy and AUC per source and sample).",
    )
    _add_table_args(p)
    p.add_argument("--from", dest="sources", default="msi,he", help="comma list: msi, he")
    p.add_argument("--l2", type=float, default=1.0, help="logistic L2 penalty")
    p.add_argument("--names", help="CSV 'mz,name' of known compounds (no online database)")
    p.set_defaults(func=cmd_classify)
    declare(p, ("pairs", "features", "names"), "out", "folder")

    p = sub.add_parser(
        "superres",
        help="H&E-guided super-resolution of ion images onto a finer grid",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Inputs: an imzML, its H&E and their alignment (--transform from msi2hist\n"
        "register, landmark CSVs, or none when the H&E is already on the MSI's frame).\n"
        "The H&E is resampled onto a grid FACTOR times finer than the MSI (default: the\n"
        "ratio of the pixel sizes) and guides the reconstruction of each ion image.\n"
        "Outputs in OUT: superres.ome.tif (C ion images at the fine pixel size, channel names\n"
        "= m/z), guide.ome.tif (the H&E on that grid), superres.json.",
    )
    p.add_argument("--imzml", required=True)
    p.add_argument("--he", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--transform", help="transform.json from msi2hist register (moving = MSI)")
    p.add_argument("--landmarks-msi", help="napari points CSV on the MSI (world um)")
    p.add_argument("--landmarks-he", help="napari points CSV on the H&E (world um), same order")
    p.add_argument("--mz", help="comma-separated m/z (default: top --n-peaks)")
    p.add_argument("--n-peaks", type=int, default=10)
    p.add_argument("--norm", default="tic", choices=["tic", "rms", "median", "none"])
    add_tolerance_args(p)
    p.add_argument("--factor", type=int, default=0, help="upsampling factor (0: pixel ratio)")
    p.add_argument("--method", default="learned", choices=["learned", "guided", "bicubic"])
    p.add_argument(
        "--model", default="superres", help="super-resolution model file (default: bundled)"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_superres)
    declare(
        p,
        ("imzml", "he", "transform", "landmarks_msi", "landmarks_he", "model"),
        "out",
        "folder",
    )
