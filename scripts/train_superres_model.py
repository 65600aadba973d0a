"""Train the bundled H&E-guided super-resolution model on phantoms and compare it with the baselines.

Training phantoms: procedural H&E and four real H&E textures (../shared/data/he), several seeds and
factors 3-5; held-out phantoms: other seeds and a texture never seen in training (henorm_example2).
Prints and writes docs/superres_model.json: mean PSNR / SSIM of bicubic, guided filter and the
learned model on the held-out phantoms.

Usage (from the project root; a few minutes on 2 CPU cores):
    python scripts/train_superres_model.py [--steps 3000] [--no-install]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from napari_msi2hist.crossmodal.superres import (
    evaluate_methods,
    iter_train_superres,
    save_superres,
)
from napari_msi2hist.phantom.superres import make_sr_phantom
from napari_msi2hist.progress import run_to_end

ROOT = Path(__file__).resolve().parents[1]
HE = ROOT.parent / "shared" / "data" / "he"
TRAIN_TEXTURES = [
    None,
    "henorm_example1.png",
    "cardinal_rcc-MH0204_33.png",
    "cardinal_rcc-UH0505_12.png",
    "cardinal_rcc-UH0710_33.png",
]
TEST = [(201, "henorm_example2.png", 4), (202, None, 4), (203, "cardinal_rcc-UH9610_15.png", 4)]


def _tex(t):
    return str(HE / t) if t else None


def train_phantoms():
    out = []
    for i, tex in enumerate(TRAIN_TEXTURES):
        for j, factor in enumerate((3, 4, 5)):
            out.append(make_sr_phantom(10 * i + j, _tex(tex), factor=factor))
    return out


def test_phantoms():
    return [make_sr_phantom(s, _tex(t), factor=f) for s, t, f in TEST]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--no-install", action="store_true")
    a = ap.parse_args()
    t0 = time.monotonic()
    train = train_phantoms()
    test = test_phantoms()

    def cb(p):
        if p.done % 250 == 0:
            print(f"step {p.done}: L1 {p.info['l1']:.4f}", flush=True)

    net = run_to_end(iter_train_superres(train, steps=a.steps), cb)
    secs = time.monotonic() - t0
    dst = (
        ROOT / "src" / "napari_msi2hist" / "data" / "superres_generator.pt"
        if not a.no_install
        else Path("/tmp/superres_generator.pt")
    )
    meta = {
        "made_by": "scripts/train_superres_model.py",
        "steps": a.steps,
        "train": [p.name for p in train],
        "test": [p.name for p in test],
    }
    save_superres(dst, net, meta)
    res = evaluate_methods(test, dst)
    res["seconds"] = secs
    res["test"] = meta["test"]
    print(json.dumps(res, indent=1))
    if not a.no_install:
        (ROOT / "docs" / "superres_model.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
