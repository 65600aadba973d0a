"""Robustness of MSI -> H&E registration on sections it has never seen, and whether the verdict says so.

Phantoms (24 by default) use textures the bundled demo model never saw (henorm_example2, UH9610_15,
the real low-resolution H&E of ../shared/data/msi_he_pairs, procedural textures of new seeds) and the
difficulties of real slides, each switched on in turn: partial MSI coverage (50-100 %, the raster cuts
the tissue), 1-3 tissue pieces, printed text / pen marks / debris beside the tissue, any rotation,
mirror flips, deformation 0-2 MSI px rms. The synthesis model is NOT the bundled one: a small pix2pix
trained once through ``msi2hist train`` on other phantoms (benchmarks/_bench_model.py; cached in
--cache, outside git).

Per phantom it runs
  (a) the synthesis route (rigid, affine, bspline; Mattes MI) on the synthetic H&E,
  (b) the direct route (rigid, affine; Mattes MI) on the TIC,
  (c) the reference: a plain SimpleITK similarity registration of the TIC (Mattes MI, moments
      initialisation, 12 start angles, shrink 4/2/1; the best final metric wins),
and reports the median TRE (MSI px) on tissue points inside the MSI raster, and each verdict
(route agreement included). Printed: per-phantom table, then the goals:
  synthesis median TRE over deformed phantoms < 0.5 px and none > 2 px; direct never worse than the
  reference (by more than 0.1 px); every phantom with TRE > 2 px flagged (doubtful/failed), false
  alarms (flagged with TRE <= 2 px) <= 10 %.

Usage: python benchmarks/bench_registration.py [--n 24] [--cache /tmp/msi2hist-bench] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_model import ensure_model  # noqa: E402
from napari_msi2hist.io.imzml import ImzMLFile  # noqa: E402
from napari_msi2hist.metrics import landmark_tre_um  # noqa: E402
from napari_msi2hist.models.checkpoint import load_checkpoint  # noqa: E402
from napari_msi2hist.models.inference import InferenceOptions  # noqa: E402
from napari_msi2hist.models.synthesis import extract_for_contract, iter_synthesize  # noqa: E402
from napari_msi2hist.msi.ion_images import total_ion_image  # noqa: E402
from napari_msi2hist.phantom import PhantomConfig, make_phantom  # noqa: E402
from napari_msi2hist.progress import run_to_end  # noqa: E402
from napari_msi2hist.registration.intensity import RegistrationOptions  # noqa: E402
from napari_msi2hist.registration.pipeline import iter_register_msi  # noqa: E402
from napari_msi2hist.registration.preprocess import msi_summary, od_image  # noqa: E402
from napari_msi2hist.registration.transforms import Transform, sitk_image  # noqa: E402
from napari_msi2hist.registration.verdict import (  # noqa: E402
    FAILED,
    OK,
    cross_check_routes,
    judge,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TEXTURES = [
    "he/henorm_example2.png",
    "he/cardinal_rcc-UH9610_15.png",
    "msi_he_pairs/he/A10_lowres_he_128.tif",
    "msi_he_pairs/he/A18_lowres_he_128.tif",
    "msi_he_pairs/he/A12_lowres_he_128.tif",
    None,  # procedural, new seeds
]


def phantom_configs(n: int, first_seed: int = 300) -> list[PhantomConfig]:
    """``n`` phantoms cycling through the textures and the difficulties (deterministic).

    ``first_seed`` 300 is the set the docs report; another (e.g. 500) draws a held-out set with
    the same textures and difficulties but new shapes, poses, marks and deformations.
    """
    out = []
    coverage = [1.0, 0.75, 0.5, 0.9, 0.6, 1.0]
    pieces = [1, 2, 3, 1]
    deform = [1.5, 0.0, 2.0, 1.0, 1.5]
    for i in range(n):
        tex = TEXTURES[i % len(TEXTURES)]
        out.append(
            PhantomConfig(
                seed=first_seed + i,
                he_image=str(DATA / tex) if tex else None,
                he_max_size=320,
                procedural_size=320,
                msi_coverage=coverage[i % len(coverage)],
                n_pieces=pieces[i % len(pieces)],
                marks=i % 3 != 2,
                flip=i % 4 == 3,
                deform_rms_px=deform[i % len(deform)],
            )
        )
    return out


def eval_points(ph, n=300, seed=0):
    """Tissue points of the H&E that the MSI raster covers: (H&E um, true MSI um)."""
    tissue = np.argwhere(ph.he_classes[0] < 0.3)
    he_pts = tissue * ph.config.he_pixel_um
    msi = ph.transform.inverse(he_pts)
    p = msi / ph.config.msi_pixel_um
    ny, nx = ph.msi_shape_yx
    ok = (p[:, 0] >= 0) & (p[:, 1] >= 0) & (p[:, 0] <= ny - 1) & (p[:, 1] <= nx - 1)
    he_pts, msi = he_pts[ok], msi[ok]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(he_pts), size=min(n, len(he_pts)), replace=False)
    return he_pts[pick], msi[pick]


def reference_similarity(he_rgb, he_px, tic, msi_px, starts: int = 12) -> Transform:
    """The plain reference: SimpleITK similarity, Mattes MI, moments init, ``starts`` angles,
    shrink 4/2/1 (best final metric wins)."""
    import SimpleITK as sitk
    from skimage.transform import downscale_local_mean

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    f = od_image(he_rgb)
    k = max(1, int(round(msi_px / he_px)))
    fixed = sitk_image(downscale_local_mean(f, (k, k)).astype(np.float32), (he_px * k,) * 2)
    moving = sitk_image(tic.astype(np.float32), (msi_px, msi_px))
    base = sitk.Similarity2DTransform(
        sitk.CenteredTransformInitializer(
            fixed,
            moving,
            sitk.Similarity2DTransform(),
            sitk.CenteredTransformInitializerFilter.MOMENTS,
        )
    )
    best, best_v = None, np.inf
    for j in range(starts):
        t = sitk.Similarity2DTransform(base)
        t.SetAngle(base.GetAngle() + 2 * np.pi * j / starts)
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(32)
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetMetricSamplingPercentage(0.5, 1)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200, 0.6)
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetShrinkFactorsPerLevel([4, 2, 1])
        r.SetSmoothingSigmasPerLevel([2, 1, 0])
        r.SetInitialTransform(t, inPlace=True)
        try:
            r.Execute(fixed, moving)
        except RuntimeError:
            continue
        v = r.GetMetricValue()
        if v < best_v:
            best, best_v = sitk.Similarity2DTransform(t), v
    return Transform(sitk.CompositeTransform([best]))


def tre_px(tr: Transform, he_pts, msi_true, px) -> float:
    return float(np.median(landmark_tre_um(tr, msi_true, he_pts)) / px)


def run_phantom(
    cfg: PhantomConfig, work: Path, ckpt, stages_syn, stages_dir, second_view: bool = True
) -> dict:
    d = work / f"s{cfg.seed}"
    ph = make_phantom(d, cfg, overwrite=True)
    px = cfg.msi_pixel_um
    he_px = (cfg.he_pixel_um,) * 2
    he_pts, msi_true = eval_points(ph)
    with ImzMLFile(ph.paths["imzml"]) as imz:
        ions = run_to_end(extract_for_contract(imz, ckpt))
        tic = total_ion_image(imz)
        measured = imz.measured_mask()
    syn = run_to_end(
        iter_synthesize(ions, ckpt, InferenceOptions(tile=256, overlap=32, device="cpu"))
    )
    row = {
        "seed": cfg.seed,
        "texture": Path(cfg.he_image).name.split("_lowres")[0] if cfg.he_image else "procedural",
        "coverage": cfg.msi_coverage,
        "pieces": cfg.n_pieces,
        "marks": cfg.marks,
        "flip": cfg.flip,
        "deform_px": cfg.deform_rms_px,
        "rotation_deg": ph.transform.angle_deg,
        "scale": ph.transform.scale,
    }
    res = {}
    for route, stages in (("synthesis", stages_syn), ("direct", stages_dir)):
        t = time.monotonic()
        r = run_to_end(
            iter_register_msi(
                ph.he_rgb,
                he_px,
                route,
                syn.pixel_size_um if route == "synthesis" else (px, px),
                synth_rgb=syn.rgb,
                # direct route: first principal component of the TIC-normalised ion images (the
                # TIC itself is dominated by line-to-line drift on these phantoms)
                msi_stack=ions.stack,
                msi_mask=measured,
                summary="pca",
                opts=RegistrationOptions(stages=stages, seed=0),
                msi_pixel_um=px,
                second_view=second_view,
            )
        )
        res[route] = r
        row[route] = {
            "tre_px": tre_px(r.transform, he_pts, msi_true, px),
            "verdict": r.verdict["verdict"],
            "reasons": r.verdict["reasons"],
            "dice_before": r.metrics["before"]["dice"],
            "dice_after": r.metrics["after"]["dice"],
            "bspline": (r.transform.meta.get("bspline") or {}).get("accepted"),
            "evidence": r.verdict["evidence"],
            "seconds": time.monotonic() - t,
        }
    # route agreement, judged on both results
    cc = cross_check_routes(od_image(ph.he_rgb), he_px, res, he_pts, px)
    dis = cc["disagreement_msi_px"]
    row["route_disagreement_px"] = dis
    row["route_fits_worse"] = cc["fits_worse"]
    for route in ("synthesis", "direct"):
        ev = dict(
            res[route].verdict["evidence"],
            route_disagreement_msi_px=dis,
            route_fits_worse=cc["fits_worse"][route],
        )
        v = judge(ev)
        row[route]["verdict"], row[route]["reasons"] = v["verdict"], v["reasons"]
    t = time.monotonic()
    ref = reference_similarity(ph.he_rgb, cfg.he_pixel_um, msi_summary(tic[None]), px)
    row["reference"] = {
        "tre_px": tre_px(ref, he_pts, msi_true, px),
        "seconds": time.monotonic() - t,
    }
    return row


def summarise(rows: list[dict]) -> dict:
    syn = np.array([r["synthesis"]["tre_px"] for r in rows])
    deformed = np.array([r["deform_px"] > 0 for r in rows])
    dire = np.array([r["direct"]["tre_px"] for r in rows])
    ref = np.array([r["reference"]["tre_px"] for r in rows])
    out = {
        "n": len(rows),
        "synthesis_median_tre_deformed_px": float(np.median(syn[deformed]))
        if deformed.any()
        else None,
        "synthesis_median_tre_all_px": float(np.median(syn)),
        "synthesis_max_tre_px": float(syn.max()),
        "synthesis_over_2px": int((syn > 2).sum()),
        "direct_median_tre_px": float(np.median(dire)),
        "reference_median_tre_px": float(np.median(ref)),
        "direct_worse_than_reference": int((dire > ref + 0.1).sum()),
    }
    for route in ("synthesis", "direct"):
        tre = np.array([r[route]["tre_px"] for r in rows])
        flagged = np.array([r[route]["verdict"] != OK for r in rows])
        bad = tre > 2
        out[f"{route}_bad"] = int(bad.sum())
        out[f"{route}_bad_flagged"] = int((bad & flagged).sum())
        out[f"{route}_false_alarm_rate"] = float((flagged & ~bad).sum() / max(1, (~bad).sum()))
        out[f"{route}_failed"] = int(sum(r[route]["verdict"] == FAILED for r in rows))
    return out


HEADER = (
    f"{'seed':>4} {'texture':<22} {'cov':>4} {'pc':>2} {'mk':>2} {'fl':>2} {'def':>3} {'rot':>6} | "
    f"{'synth px':>8} {'verdict':<8} | {'direct':>6} {'verdict':<8} | {'ref':>6} | {'routes':>6}"
)


def row_line(r: dict) -> str:
    return (
        f"{r['seed']:>4} {r['texture'][:22]:<22} {r['coverage']:>4.2f} {r['pieces']:>2} "
        f"{int(r['marks']):>2} {int(r['flip']):>2} {r['deform_px']:>3.1f} {r['rotation_deg']:>6.1f} | "
        f"{r['synthesis']['tre_px']:>8.2f} {r['synthesis']['verdict']:<8} | "
        f"{r['direct']['tre_px']:>6.2f} {r['direct']['verdict']:<8} | {r['reference']['tre_px']:>6.2f} | "
        f"{r['route_disagreement_px']:>6.2f}"
    )


def print_table(rows: list[dict]) -> dict:
    print(HEADER)
    for r in rows:
        print(row_line(r))
    return print_summary(rows)


def print_summary(rows: list[dict]) -> dict:
    s = summarise(rows)
    print("\nsummary (TRE in MSI pixels, median over tissue points inside the raster):")
    for k, v in s.items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    print(
        "goals: synthesis median (deformed) < 0.5: "
        f"{'MET' if (s['synthesis_median_tre_deformed_px'] or 9) < 0.5 else 'NOT MET'}; "
        f"none > 2 px: {'MET' if s['synthesis_over_2px'] == 0 else 'NOT MET'}; "
        f"direct never worse than reference: {'MET' if s['direct_worse_than_reference'] == 0 else 'NOT MET'}; "
        "verdict flags every TRE > 2 px: "
        f"{'MET' if all(s[f'{x}_bad_flagged'] == s[f'{x}_bad'] for x in ('synthesis', 'direct')) else 'NOT MET'}; "
        "false alarms <= 10 %: "
        f"{'MET' if max(s['synthesis_false_alarm_rate'], s['direct_false_alarm_rate']) <= 0.1 else 'NOT MET'}"
    )
    print("\nflagged rows (route, TRE px, verdict: reasons):")
    for r in rows:
        for route in ("synthesis", "direct"):
            if r[route]["verdict"] != OK:
                why = "; ".join(x for x in r[route]["reasons"] if not x.startswith("note"))
                print(
                    f"  {r['seed']} {route:<9} {r[route]['tre_px']:6.2f} {r[route]['verdict']}: {why}"
                )
    return s


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=24, help="number of phantoms")
    ap.add_argument("--only", default=None, help="comma list of phantom indices to run")
    ap.add_argument(
        "--first-seed",
        type=int,
        default=300,
        help="seed of the first phantom (300: the documented set; e.g. 500: a held-out set)",
    )
    ap.add_argument("--cache", default="/tmp/msi2hist-bench", help="model + phantom cache")
    ap.add_argument(
        "--train-steps",
        type=int,
        default=4000,
        help="training steps of the benchmark model (cached in --cache)",
    )
    ap.add_argument("--stages", default="rigid,affine,bspline", help="synthesis route stages")
    ap.add_argument("--direct-stages", default="rigid,affine")
    ap.add_argument("--model", default=None, help="use this checkpoint instead (development only)")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--no-second-view",
        action="store_true",
        help="each route ranks its poses by its own image only (registration.consensus off)",
    )
    ap.add_argument(
        "--rejudge",
        default=None,
        help="re-judge the rows of an earlier --json with today's verdict rules (no registration)",
    )
    a = ap.parse_args()
    if a.rejudge:
        rows = json.loads(Path(a.rejudge).read_text())["rows"]
        for r in rows:
            for route in ("synthesis", "direct"):
                ev = dict(
                    r[route]["evidence"],
                    route_disagreement_msi_px=r["route_disagreement_px"],
                    route_fits_worse=(r.get("route_fits_worse") or {}).get(route),
                )
                v = judge(ev)
                r[route]["verdict"], r[route]["reasons"] = v["verdict"], v["reasons"]
        print_table(rows)
        return 0
    cache = Path(a.cache)
    ckpt = load_checkpoint(a.model or ensure_model(cache, a.train_steps))
    cfgs = phantom_configs(a.n, a.first_seed)
    if a.only:
        cfgs = [cfgs[int(i)] for i in a.only.split(",")]
    rows = []
    print(HEADER, flush=True)
    for cfg in cfgs:
        r = run_phantom(
            cfg,
            cache / "bench_phantoms",
            ckpt,
            tuple(a.stages.split(",")),
            tuple(a.direct_stages.split(",")),
            second_view=not a.no_second_view,
        )
        rows.append(r)
        print(row_line(r), flush=True)
        if a.json:  # rows so far (a long run stopped early still leaves its figures)
            Path(a.json).write_text(json.dumps({"rows": rows}, indent=1))
    s = print_summary(rows)
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "summary": s}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
