"""The direct route on real MALDI / H&E pairs (../shared/data/msi_he_pairs): MI and tissue Dice
before and after registration. These pairs have no spectra (so no synthesis route) and no ground truth;
they show that a real MSI-derived image registers to real H&E and that overlap improves.

The files carry no pixel size, so the MSI image's pixel size is set so that its tissue area equals the
H&E's (a scale estimate; the similarity stage then refines it); the MALDI images have a white
background and are inverted so that tissue is bright, as in the H&E's optical density.

Usage: python benchmarks/bench_real_pairs.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_msi2hist.progress import run_to_end
from napari_msi2hist.registration.intensity import RegistrationOptions, od_image
from napari_msi2hist.registration.pipeline import iter_register_msi

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "msi_he_pairs"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--json", default=None)
    ap.add_argument("--stages", default="rigid,affine")
    a = ap.parse_args()
    rows = []
    for he_path in sorted((DATA / "he").glob("*_lowres_he_128.tif")):
        sid = he_path.name.split("_")[0]
        msi_paths = sorted((DATA / "msi").glob(f"{sid}_*maldi_mask.tif"))
        if not msi_paths:
            continue
        he = tifffile.imread(he_path)[..., :3]
        msi = 255.0 - tifffile.imread(msi_paths[0]).astype(np.float32)
        if msi.ndim == 3:
            msi = msi[..., 0]
        he_tissue = (od_image(he) > 0.3).sum()
        msi_tissue = (msi > 0.3 * msi.max()).sum()
        px = float(np.sqrt(he_tissue / max(msi_tissue, 1)))
        t = time.monotonic()
        r = run_to_end(
            iter_register_msi(
                he,
                (1.0, 1.0),
                "direct",
                (px, px),
                msi_stack=msi[None],
                opts=RegistrationOptions(stages=tuple(a.stages.split(",")), metric="mattes"),
            )
        )
        b, f = r.metrics["before"], r.metrics["after"]
        rows.append(
            {
                "id": sid,
                "msi_pixel_estimate": px,
                "mi_before": b["mi"],
                "mi_after": f["mi"],
                "dice_before": b["dice"],
                "dice_after": f["dice"],
                "seconds": time.monotonic() - t,
            }
        )
        print(
            f"{sid:4s} MI {b['mi']:.3f} -> {f['mi']:.3f}   tissue Dice {b['dice']:.3f} -> {f['dice']:.3f}   "
            f"({rows[-1]['seconds']:.1f} s, MSI px = {px:.2f} H&E px)",
            flush=True,
        )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
