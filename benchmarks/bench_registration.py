"""The measurement the seed paper never made: TRE of MSI -> H&E registration, synthesis vs direct.

On phantoms with known truth (several seeds and H&E textures, rotations up to 180 degrees, scale
+-10 %, shifts, every realism effect on, smooth deformation ~1.5 MSI px rms, and the same without
deformation) it registers the MSI to the H&E by
  (a) the synthesis route: synthetic H&E from the bundled demo model -> real H&E, correlation;
  (b) the direct route: MSI summary image (TIC) -> real H&E, Mattes MI (same stages);
  (c) landmarks only: an affine fitted to 4, 6 or 10 of the phantom's landmarks,
and reports TRE (median and 90th percentile, um and MSI pixels) on 300 tissue points per phantom
(not the landmarks), and runtime. Test textures and seeds are not the demo model's training ones.

Usage: python benchmarks/bench_registration.py [--seeds 201,202,203] [--stages rigid,affine] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_msi2hist.io.imzml import ImzMLFile
from napari_msi2hist.models.checkpoint import load_checkpoint
from napari_msi2hist.models.inference import InferenceOptions
from napari_msi2hist.models.synthesis import extract_for_contract, iter_synthesize
from napari_msi2hist.msi.ion_images import ion_images
from napari_msi2hist.phantom import PhantomConfig, make_phantom
from napari_msi2hist.progress import run_to_end
from napari_msi2hist.registration.intensity import RegistrationOptions
from napari_msi2hist.registration.landmarks import fit_linear
from napari_msi2hist.registration.pipeline import iter_register_msi

ROOT = Path(__file__).resolve().parents[1]
HE = ROOT.parent / "shared" / "data" / "he"
TEXTURES = ["henorm_example2.png", "cardinal_rcc-UH9610_15.png", None]


def eval_points(ph, n=300, seed=0):
    tissue = np.argwhere(ph.he_classes[0] < 0.3)
    rng = np.random.default_rng(seed)
    pick = tissue[rng.choice(len(tissue), size=min(n, len(tissue)), replace=False)]
    he_pts = pick * ph.config.he_pixel_um
    return he_pts, ph.transform.inverse(he_pts)  # H&E world um, true MSI world um


def tre_stats(err_um, px):
    return {
        "median_um": float(np.median(err_um)),
        "p90_um": float(np.percentile(err_um, 90)),
        "median_px": float(np.median(err_um) / px),
        "p90_px": float(np.percentile(err_um, 90) / px),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", default="201,202,203")
    ap.add_argument("--stages", default="rigid,affine")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-undeformed", action="store_true")
    a = ap.parse_args()
    ckpt = load_checkpoint(a.model)
    seeds = [int(s) for s in a.seeds.split(",")]
    stages = tuple(a.stages.split(","))
    work = Path(tempfile.mkdtemp(prefix="msi2hist-reg-"))
    rows = []
    for deform in [1.5] if a.no_undeformed else [1.5, 0.0]:
        for i, seed in enumerate(seeds):
            tex = TEXTURES[i % len(TEXTURES)]
            cfg = PhantomConfig(
                seed=seed,
                he_image=str(HE / tex) if tex and HE.is_dir() else None,
                he_max_size=320,
                procedural_size=320,
                deform_rms_px=deform,
            )
            ph = make_phantom(work / f"s{seed}-d{deform}", cfg)
            px = cfg.msi_pixel_um
            he_pts, msi_true = eval_points(ph)
            with ImzMLFile(ph.paths["imzml"]) as imz:
                ions = run_to_end(extract_for_contract(imz, ckpt))
                tic = ion_images(
                    imz, ckpt.contract.mz, tolerance=ckpt.contract.tolerance, norm="none"
                )
            t = time.monotonic()
            syn = run_to_end(
                iter_synthesize(ions, ckpt, InferenceOptions(tile=256, overlap=32, device="cpu"))
            )
            t_syn = time.monotonic() - t
            row = {
                "seed": seed,
                "texture": tex or "procedural",
                "deform_px": deform,
                "rotation_deg": ph.transform.angle_deg,
                "scale": ph.transform.scale,
            }
            opts = RegistrationOptions(stages=stages)
            for route in ("synthesis", "direct"):
                r = run_to_end(
                    iter_register_msi(
                        ph.he_rgb,
                        (cfg.he_pixel_um,) * 2,
                        route,
                        syn.pixel_size_um if route == "synthesis" else (px, px),
                        synth_rgb=syn.rgb,
                        msi_stack=tic.stack,
                        msi_mask=tic.mask,
                        opts=opts,
                    )
                )
                err = np.linalg.norm(r.transform.fixed_to_moving(he_pts) - msi_true, axis=1)
                row[route] = {
                    **tre_stats(err, px),
                    "seconds": r.seconds + (t_syn if route == "synthesis" else 0),
                    "mi_before": r.metrics["before"]["mi"],
                    "mi_after": r.metrics["after"]["mi"],
                    "dice_before": r.metrics["before"]["dice"],
                    "dice_after": r.metrics["after"]["dice"],
                }
            for k in (4, 6, 10):
                t = time.monotonic()
                m = fit_linear(ph.landmarks_msi_um[:k], ph.landmarks_he_um[:k], "affine")
                inv = np.linalg.inv(m)
                mapped = he_pts @ inv[:2, :2].T + inv[:2, 2]
                row[f"landmarks_{k}"] = {
                    **tre_stats(np.linalg.norm(mapped - msi_true, axis=1), px),
                    "seconds": time.monotonic() - t,
                }
            rows.append(row)
            print(
                f"seed {seed} {row['texture']:<28} deform {deform} rot {row['rotation_deg']:7.1f}: "
                f"synthesis {row['synthesis']['median_px']:.2f} px ({row['synthesis']['seconds']:.1f} s), "
                f"direct {row['direct']['median_px']:.2f} px ({row['direct']['seconds']:.1f} s), "
                f"landmarks 4/6/10 {row['landmarks_4']['median_px']:.2f}/{row['landmarks_6']['median_px']:.2f}/"
                f"{row['landmarks_10']['median_px']:.2f} px",
                flush=True,
            )
    summary = {}
    for deform in sorted({r["deform_px"] for r in rows}, reverse=True):
        sel = [r for r in rows if r["deform_px"] == deform]
        summary[f"deform_{deform}"] = {
            route: {
                "median_of_median_px": float(np.median([r[route]["median_px"] for r in sel])),
                "median_of_p90_px": float(np.median([r[route]["p90_px"] for r in sel])),
                "mean_seconds": float(np.mean([r[route]["seconds"] for r in sel])),
            }
            for route in ("synthesis", "direct", "landmarks_4", "landmarks_6", "landmarks_10")
        }
    print("\nmedian over phantoms of the per-phantom median TRE (MSI pixels of 20 um) [p90]:")
    for k, v in summary.items():
        print(
            f"  {k}: "
            + ", ".join(
                f"{r} {s['median_of_median_px']:.2f} [{s['median_of_p90_px']:.2f}]"
                for r, s in v.items()
            )
        )
        syn, dire = v["synthesis"]["median_of_median_px"], v["direct"]["median_of_median_px"]
        print(f"    synthesis / direct = {syn / max(dire, 1e-9):.2f}")
    if a.json:
        Path(a.json).write_text(
            json.dumps({"rows": rows, "summary": summary, "stages": stages}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
