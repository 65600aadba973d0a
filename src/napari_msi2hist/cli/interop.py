"""``msi2hist export-spatialdata``, ``import-spatialdata``, ``annotations-to-msi``,
``regions-to-geojson``, ``export-elastix``, ``import-elastix``: results that other tools open."""

from __future__ import annotations

import argparse
import sys

from ._common import add_tolerance_args, tolerance_from_args


def _bar(args):
    from ._common import ProgressBar

    return ProgressBar(args.quiet)


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text)


def _mz(text):
    from ..msi.peaks import parse_mz_list

    return tuple(float(v) for v in parse_mz_list(text)) if text else None


def cmd_export_spatialdata(args) -> int:
    from ..progress import run_to_end
    from ..workflows.export import SpatialDataExportConfig, iter_export_spatialdata

    tol = tolerance_from_args(args)
    cfg = SpatialDataExportConfig(
        he=args.he,
        msi=args.msi,
        out=args.out,
        transform=args.transform,
        mz=_mz(args.mz),
        n_peaks=args.n_peaks,
        tolerance=tol,
        norm=args.norm,
        synthetic=args.synthetic,
        landmarks_he=args.landmarks_he,
        landmarks_msi=args.landmarks_msi,
        annotations=args.annotations,
        he_pixel_um=args.he_pixel_um,
        msi_pixel_um=args.msi_pixel_um,
        field_step=args.field_step,
        overwrite=args.overwrite,
    )
    path = run_to_end(iter_export_spatialdata(cfg), _bar(args))
    from ..interop.spatialdata_read import read_store

    reg = read_store(path).attrs["msi2hist"]["registration"]
    note = ""
    if reg.get("present") and not reg.get("linear"):
        bad = reg.get("field_invalid_fraction", 0.0)
        note = f"; B-spline stored as affine + displacement field ({100 * bad:.1f}% of it without preimage)"
        if bad > 0:
            print(
                f"warning: {100 * bad:.1f}% of the MSI frame has no preimage under the B-spline "
                "(beyond its domain or folded); msi_to_global returns NaN there",
                file=sys.stderr,
            )
    _say(args, f"wrote {path}{note}")
    return 0


def cmd_import_spatialdata(args) -> int:
    from ..progress import run_to_end
    from ..workflows.export import SpatialDataImportConfig, iter_import_spatialdata

    cfg = SpatialDataImportConfig(args.store, args.out, args.overwrite)
    files = run_to_end(iter_import_spatialdata(cfg), _bar(args))
    _say(args, f"wrote {args.out}: " + ", ".join(sorted(files)))
    return 0


def cmd_annotations_to_msi(args) -> int:
    from ..progress import run_to_end
    from ..workflows.export import AnnotationsToMsiConfig, iter_annotations_to_msi

    cfg = AnnotationsToMsiConfig(
        geojson=args.geojson,
        transform=args.transform,
        he=args.he,
        msi=args.msi,
        out_dir=args.out,
        he_pixel_um=args.he_pixel_um,
        msi_pixel_um=args.msi_pixel_um,
        overwrite=args.overwrite,
    )
    res = run_to_end(iter_annotations_to_msi(cfg), _bar(args))
    counts = ", ".join(f"{k} {v}" for k, v in res["counts"].items())
    _say(args, f"wrote {args.out}: MSI pixels per class: {counts}")
    return 0


def _names(text):
    out = []
    for part in (text or "").split(","):
        if part.strip():
            k, _, v = part.partition("=")
            try:
                out.append((int(k), v.strip()))
            except ValueError:
                raise ValueError(f"--names: {part!r} is not LABEL=NAME") from None
    return tuple(out)


def cmd_regions_to_geojson(args) -> int:
    from ..progress import run_to_end
    from ..workflows.export import MsiRegionsToGeojsonConfig, iter_msi_regions_to_geojson

    cfg = MsiRegionsToGeojsonConfig(
        regions=args.regions,
        transform=args.transform,
        he=args.he,
        msi=args.msi,
        out=args.out,
        names=_names(args.names),
        he_pixel_um=args.he_pixel_um,
        msi_pixel_um=args.msi_pixel_um,
        overwrite=args.overwrite,
    )
    path = run_to_end(iter_msi_regions_to_geojson(cfg), _bar(args))
    _say(args, f"wrote {path} (x, y in H&E pixels: QuPath File > Import objects)")
    return 0


def cmd_export_elastix(args) -> int:
    from ..progress import run_to_end
    from ..workflows.export import ElastixExportConfig, iter_export_elastix

    cfg = ElastixExportConfig(args.transform, args.out, args.he, args.he_pixel_um, args.overwrite)
    paths = run_to_end(iter_export_elastix(cfg), _bar(args))
    _say(args, f"wrote {len(paths)} file(s) in {args.out}; give transformix -tp {paths[-1]}")
    return 0


def cmd_import_elastix(args) -> int:
    from ..progress import run_to_end
    from ..workflows.export import ElastixImportConfig, iter_import_elastix

    org = tuple(float(v) for v in args.moving_origin.split(","))
    if len(org) != 2:
        raise ValueError("--moving-origin takes X,Y")
    cfg = ElastixImportConfig(
        parameters=args.parameters,
        out=args.out,
        he=args.he,
        msi=args.msi,
        units=args.units,
        msi_is_fixed=args.msi_is_fixed,
        moving_origin_xy=org,
        landmarks_he=args.landmarks_he,
        landmarks_msi=args.landmarks_msi,
        he_pixel_um=args.he_pixel_um,
        msi_pixel_um=args.msi_pixel_um,
        overwrite=args.overwrite,
    )
    res = run_to_end(iter_import_elastix(cfg), _bar(args))
    _say(args, f"wrote {res['path']} and {res['path'].with_suffix('.h5').name}")
    if res["landmarks"]:
        lq = res["landmarks"]
        _say(
            args,
            f"landmark TRE median {lq['tre_median_um']:.2f} um ({lq['tre_median_msi_px']:.2f} MSI px)",
        )
    return 0


def _common(p, *, he=True, msi=True, overwrite=True) -> None:
    if he:
        p.add_argument("--he", required=True, help="the H&E (fixed) image")
        p.add_argument(
            "--he-pixel-um", type=float, help="H&E pixel size when the file does not say it"
        )
    if msi:
        p.add_argument("--msi", required=True, help="the imzML (moving)")
        p.add_argument(
            "--msi-pixel-um", type=float, help="MSI pixel size when the imzML does not say it"
        )
    if overwrite:
        p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true")


def add_parsers(sub) -> None:
    from ._policy import declare

    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "export-spatialdata",
        help="one SpatialData (OME-Zarr) store per section: H&E, ion images, MSI table, registration",
        formatter_class=raw,
        description="Needs the extra: pip install 'napari-msi2hist[spatialdata]'. Writes OUT (a\n"
        ".zarr folder): the H&E (multiscale), ion images (channels named mz=...), the MSI as an\n"
        "AnnData table (pixels x m/z) linked to the labels 'msi_pixels', landmarks as points,\n"
        "QuPath annotations as shapes (and their class per MSI pixel in the table's obs), and\n"
        "the registration: coordinate systems 'msi', 'he' and 'global' (H&E um). A B-spline\n"
        "result is stored as an Affine plus the image msi_to_he_displacement_um; the ITK\n"
        "transform is kept in OUT/msi2hist/. See docs/interop.md.",
    )
    _common(p)
    p.add_argument("--out", required=True, help="store folder, e.g. section.zarr")
    p.add_argument("--transform", help="transform.json from msi2hist register (moving = MSI)")
    p.add_argument("--mz", help="comma-separated m/z (default: top --n-peaks)")
    p.add_argument("--n-peaks", type=int, default=50)
    add_tolerance_args(p)
    p.add_argument("--norm", default="tic", choices=["tic", "rms", "median", "none"])
    p.add_argument("--synthetic", help="synthetic H&E OME-TIFF (from msi2hist synthesize)")
    p.add_argument("--landmarks-he", help="napari points CSV on the H&E (world um)")
    p.add_argument("--landmarks-msi", help="napari points CSV on the MSI (world um), same order")
    p.add_argument("--annotations", help="QuPath GeoJSON drawn on the H&E")
    p.add_argument("--field-step", type=int, default=1, help="B-spline field samples per MSI pixel")
    declare(
        p,
        ("he", "msi", "transform", "synthetic", "landmarks_he", "landmarks_msi", "annotations"),
        "out",
        "folder",
    )
    p.set_defaults(func=cmd_export_spatialdata)

    p = sub.add_parser(
        "import-spatialdata",
        help="files back from a store: H&E, ion images, transform, landmarks, annotations, pairs.yaml",
    )
    p.add_argument("store", help="a store written by export-spatialdata")
    p.add_argument("--out", required=True, help="output folder (created; all or nothing)")
    _common(p, he=False, msi=False)
    declare(p, ("store",), "out", "folder")
    p.set_defaults(func=cmd_import_spatialdata)

    p = sub.add_parser(
        "annotations-to-msi",
        help="QuPath GeoJSON on the H&E -> MSI frame: GeoJSON, label image, per-pixel class table",
        formatter_class=raw,
        description="Maps polygons (holes and multipolygons kept) and points through the\n"
        "registration (linear or B-spline; edges densified to one MSI pixel). Writes in OUT:\n"
        "annotations_msi.geojson (MSI pixels), labels_msi.tif (class index per MSI pixel, in\n"
        "the order of class_counts.csv), classes.csv (row, col, y_um, x_um, class per measured\n"
        "pixel), class_counts.csv. Where annotations overlap the smaller one wins.",
    )
    p.add_argument("--geojson", required=True, help="QuPath export (x, y in H&E pixels)")
    p.add_argument("--transform", required=True, help="transform.json (moving = MSI)")
    p.add_argument("--out", required=True, help="output folder (created; all or nothing)")
    _common(p)
    declare(p, ("geojson", "transform", "he", "msi"), "out", "folder")
    p.set_defaults(func=cmd_annotations_to_msi)

    p = sub.add_parser(
        "regions-to-geojson",
        help="MSI regions (label image or GeoJSON on the MSI) -> QuPath GeoJSON in H&E pixels",
    )
    p.add_argument(
        "--regions", required=True, help="label image on the MSI grid (.tif/.npy) or GeoJSON"
    )
    p.add_argument("--transform", required=True, help="transform.json (moving = MSI)")
    p.add_argument("--out", required=True, help="output .geojson")
    p.add_argument("--names", help="class names of labels: 1=tumour,2=stroma")
    _common(p)
    declare(p, ("regions", "transform", "he", "msi"), "out", "file")
    p.set_defaults(func=cmd_regions_to_geojson)

    p = sub.add_parser(
        "export-elastix",
        help="a registration result as elastix TransformParameters files (transformix reads them)",
    )
    p.add_argument("--transform", required=True, help="transform.json (or ITK .tfm/.h5)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--he", help="the fixed H&E (default: the one named in transform.json)")
    p.add_argument("--he-pixel-um", type=float, help="H&E pixel size when the file does not say it")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    declare(p, ("transform", "he"), "out", "folder")
    p.set_defaults(func=cmd_export_elastix)

    p = sub.add_parser(
        "import-elastix",
        help="an elastix/wsireg/image2image-reg TransformParameters chain as transform.json",
        formatter_class=raw,
        description="PARAMETERS is the last file of the chain (the one given to transformix).\n"
        "--units um: elastix ran with spacings in micrometres (wsireg, image2image-reg);\n"
        "--units px: it ran on full-resolution images of spacing 1. --msi-is-fixed when the MSI\n"
        "was elastix's fixed image (linear chains only). Landmark CSVs give the QA.",
    )
    p.add_argument("parameters", help="TransformParameters.N.txt")
    p.add_argument("--out", required=True, help="transform.json to write (.h5 beside it)")
    p.add_argument("--units", required=True, choices=["um", "px"])
    p.add_argument("--msi-is-fixed", action="store_true")
    p.add_argument(
        "--moving-origin",
        default="0,0",
        help="X,Y origin of elastix's moving image (not stored in the files)",
    )
    p.add_argument("--landmarks-he", help="napari points CSV on the H&E (world um)")
    p.add_argument("--landmarks-msi", help="napari points CSV on the MSI (world um), same order")
    _common(p)
    declare(p, ("parameters", "landmarks_he", "landmarks_msi", "he", "msi"), "out", "file")
    p.set_defaults(func=cmd_import_elastix)
