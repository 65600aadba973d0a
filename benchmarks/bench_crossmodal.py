"""Figures for the H&E -> MSI direction on phantoms (seed 003), printed as a table.

Four phantoms with every realism effect on (matrix peaks, drift, ion suppression, hot and missing
pixels, deformation, noise), two of them on real H&E textures; a nuclei-rich annotation drawn on each
H&E as the label. Reports the leave-one-sample-out R2 of the first MSI PCA modes predicted from H&E
colour/texture features, and the AUC of the label predicted from MSI modes and from H&E features,
next to a shuffled-label control (which must stay near 0.5).

    python benchmarks/bench_crossmodal.py [--out /tmp/bench_crossmodal.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_msi2hist.crossmodal.pipeline import iter_build_table
from napari_msi2hist.crossmodal.regression import (
    cross_validated_logistic,
    cross_validated_regression,
    fit_pca,
)
from napari_msi2hist.io.histology import write_ome_tiff
from napari_msi2hist.phantom import PhantomConfig, make_phantom
from napari_msi2hist.progress import run_to_end

ROOT = Path(__file__).resolve().parents[1]
HE = ROOT.parent / "shared" / "data" / "he"
SAMPLES = [(41, None), (42, "henorm_example1.png"), (43, None), (44, "cardinal_rcc-UH0505_12.png")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="msi2hist-xm-"))
    entries = []
    for seed, tex in SAMPLES:
        tex_path = str(HE / tex) if tex and (HE / tex).is_file() else None
        cfg = PhantomConfig(seed=seed, he_image=tex_path, he_max_size=320, procedural_size=256)
        ph = make_phantom(work / f"s{seed}", cfg)
        lab = (ph.he_classes[1] > 0.3).astype(np.uint8) * 255
        write_ome_tiff(work / f"s{seed}" / "label.ome.tif", lab[None], (cfg.he_pixel_um,) * 2)
        entries.append(
            {
                "name": f"s{seed}-{tex or 'procedural'}",
                "imzml": ph.paths["imzml"],
                "he": ph.paths["he"],
                "align": {"truth": ph.paths["truth"]},
                "label": str(work / f"s{seed}" / "label.ome.tif"),
                "base": "/",
            }
        )
    table = run_to_end(iter_build_table(entries, n_peaks=50))
    f, x, g, lab = table.pixels()
    reg = cross_validated_regression(f, x, g, n_components=5, alpha=1.0)
    modes = fit_pca(x, 5).transform(x)
    c_msi = cross_validated_logistic(modes, lab, g)
    c_he = cross_validated_logistic(f, lab, g)
    rng = np.random.default_rng(0)
    shuffled = lab.copy()
    for s in np.unique(g):  # shuffle inside each sample: the label keeps its per-sample rate
        idx = np.flatnonzero(g == s)
        shuffled[idx] = rng.permutation(lab[idx])
    c_ctrl = cross_validated_logistic(f, shuffled, g)
    res = {
        "samples": [e["name"] for e in entries],
        "n_pixels": int(len(x)),
        "explained_variance": [float(v) for v in reg.pca.explained_variance_ratio],
        "r2_oof": [float(v) for v in reg.r2],
        "r2_per_sample": {k: [float(v) for v in r] for k, r in reg.r2_per_sample.items()},
        "auc_from_msi": c_msi.auc,
        "auc_from_he": c_he.auc,
        "auc_shuffled_control": c_ctrl.auc,
        "accuracy_from_msi": c_msi.accuracy,
        "accuracy_from_he": c_he.accuracy,
        "seconds": time.monotonic() - t0,
    }
    print(f"{len(entries)} phantoms, {len(x)} MSI pixels, 50 peaks, colour/texture features")
    print("mode  explained  R2 (leave-one-sample-out)")
    for i, (ev, r2) in enumerate(zip(res["explained_variance"], res["r2_oof"], strict=True)):
        print(f"PC{i + 1:<3d} {ev:9.3f}  {r2:+.3f}")
    print(
        f"label AUC: from MSI modes {c_msi.auc:.3f}, from H&E features {c_he.auc:.3f}, "
        f"shuffled-label control {c_ctrl.auc:.3f}  ({res['seconds']:.0f} s)"
    )
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
