"""Train the bundled demo model on phantoms and compare it with the seed-000 U-Net baseline.

Phantoms: training and validation from several seeds and real H&E textures (../shared/data/he) plus
the procedural texture; held-out test phantoms use seeds and a texture never seen in training. Both
models see the same pairs; the evaluation reports MI and SSIM of each model's synthetic H&E against
the ground-truth H&E (resampled onto the MSI working grid through the phantom's true transform),
inside the H&E footprint, per test phantom and averaged.

Writes: src/napari_msi2hist/data/demo_generator.pt (fp16 weights, < 10 MB) and docs/demo_model.json.

Usage (from the project root; about 20-40 minutes on 2 CPU cores):
    python scripts/train_demo_model.py --work /tmp/msi2hist-demo-train [--steps 3000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from napari_msi2hist.models.checkpoint import load_checkpoint, save_checkpoint
from napari_msi2hist.models.compare import evaluate_checkpoint
from napari_msi2hist.models.datasets import contract_from_data, load_samples, split_by_sample
from napari_msi2hist.models.training import TrainConfig, iter_train
from napari_msi2hist.phantom import PhantomConfig, make_phantom
from napari_msi2hist.progress import run_to_end

ROOT = Path(__file__).resolve().parents[1]
HE = ROOT.parent / "shared" / "data" / "he"
TRAIN = [
    (1, None),
    (2, "henorm_example1.png"),
    (3, "cardinal_rcc-MH0204_33.png"),
    (4, "cardinal_rcc-UH0505_12.png"),
    (5, None),
    (6, "cardinal_rcc-UH0710_33.png"),
    (7, "henorm_example1.png"),
    (8, None),
]
VAL = [(9, "cardinal_rcc-UH0505_12.png")]
TEST = [
    (101, "henorm_example2.png"),
    (102, "cardinal_rcc-UH9610_15.png"),
    (103, None),
    (104, "henorm_example2.png"),
]


def phantom_entries(work: Path) -> list[dict]:
    out = []
    for split, items in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        for seed, tex in items:
            d = work / "phantoms" / f"s{seed}"
            cfg = PhantomConfig(
                seed=seed,
                he_image=str(HE / tex) if tex else None,
                he_max_size=320,
                procedural_size=320,
            )
            if not (d / "truth.json").is_file():
                make_phantom(d, cfg, overwrite=True)
            out.append(
                {
                    "name": f"s{seed}-{tex or 'procedural'}",
                    "imzml": str(d / "msi.imzML"),
                    "he": str(d / "he.ome.tif"),
                    "align": {"truth": str(d / "truth.json")},
                    "split": split,
                    "base": "/",
                }
            )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", default="/tmp/msi2hist-demo-train")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--baseline-steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument(
        "--continue-steps",
        type=int,
        default=0,
        help="fine-tune the pix2pix result for this many more steps (new patch seed, lr/2 decaying "
        "to 0); the baseline then trains for the same total number of steps",
    )
    ap.add_argument(
        "--no-install", action="store_true", help="do not copy the model into the package"
    )
    a = ap.parse_args()
    work = Path(a.work)
    t0 = time.monotonic()
    entries = phantom_entries(work)
    fit = [e for e in entries if e["split"] in ("train", "val")]
    contract, stacks = contract_from_data(fit, n_peaks=50, working_pixel_um=10.0, padding="white")
    samples = load_samples(fit, contract, stacks)
    train, val = split_by_sample(samples)
    test = load_samples([{**e, "split": "val"} for e in entries if e["split"] == "test"], contract)
    print(
        f"{len(train)} training, {len(val)} validation, {len(test)} held-out test phantoms; "
        f"{contract.n_channels} channels ({time.monotonic() - t0:.0f} s)",
        flush=True,
    )

    common = dict(
        max_steps=a.steps, lr=a.lr, batch_size=4, checkpoint_every=250, val_every=250, seed=0
    )
    runs = {
        "pix2pix": TrainConfig(
            model="pix2pix",
            gan_mode="vanilla",
            lambda_l1=200.0,
            patch=128,
            ngf=16,
            depth=6,
            ndf=32,
            decay_start=a.steps // 2,
            **common,
        ),
        "unet": TrainConfig(
            model="unet",
            baseline_base=16,
            baseline_patch=32,
            **{**common, "max_steps": (a.baseline_steps or a.steps) + a.continue_steps},
        ),
    }
    bases: dict[str, Path] = {}
    if a.continue_steps:
        runs["pix2pix-continued"] = TrainConfig(
            **{
                **runs["pix2pix"].__dict__,
                "max_steps": a.continue_steps,
                "lr": a.lr / 2,
                "decay_start": 0,
                "seed": 1,
            }
        )
        bases["pix2pix-continued"] = work / "run-pix2pix" / "checkpoints" / "last.pt"
    final_run = "pix2pix-continued" if a.continue_steps else "pix2pix"
    results = {
        "contract": {
            "n_channels": contract.n_channels,
            "working_pixel_um": contract.working_pixel_um,
        },
        "train": [s.name for s in train],
        "val": [s.name for s in val],
        "test": [s.name for s in test],
    }
    for name, cfg in runs.items():
        t = time.monotonic()

        def cb(p, name=name):
            if p.info and "val_mi" in p.info:
                print(
                    f"  {name} step {p.done}: {p.info['losses']} val MI {p.info['val_mi']:.3f} "
                    f"SSIM {p.info['val_ssim']:.3f}",
                    flush=True,
                )

        run_dir = work / f"run-{name}"
        resume = (run_dir / "checkpoints" / "last.pt").is_file()  # resume is refused without one
        final = run_to_end(
            iter_train(train, val, contract, cfg, run_dir, resume=resume, base=bases.get(name)),
            cb,
        )
        results[name] = {
            "config": cfg.__dict__,
            "seconds": time.monotonic() - t,
            "test": evaluate_checkpoint(final, test),
        }
        print(
            f"{name}: {results[name]['test']['mean']} in {results[name]['seconds']:.0f} s",
            flush=True,
        )
    p, u = results[final_run]["test"]["mean"], results["unet"]["test"]["mean"]
    results["delta"] = {"mi": p["mi"] - u["mi"], "ssim": p["ssim"] - u["ssim"]}
    print(
        f"pix2pix - U-Net on held-out phantoms: MI {results['delta']['mi']:+.3f}, SSIM {results['delta']['ssim']:+.3f}"
    )
    (ROOT / "docs" / "demo_model.json").write_text(json.dumps(results, indent=1, default=str))
    if not a.no_install:
        ck = load_checkpoint(work / f"run-{final_run}" / "model.pt")
        dst = ROOT / "src" / "napari_msi2hist" / "data" / "demo_generator.pt"
        dst.parent.mkdir(parents=True, exist_ok=True)
        g = ck.build()
        training = {
            **ck.training,
            "made_by": "scripts/train_demo_model.py",
            "test_metrics": results[final_run]["test"],
            "baseline_test_metrics": results["unet"]["test"],
        }
        save_checkpoint(dst, g, ck.arch, ck.contract, training, half=True)
        print(f"installed {dst} ({dst.stat().st_size / 1e6:.1f} MB)")
        shutil.copy(
            work / f"run-{final_run}" / "config.yaml", ROOT / "docs" / "demo_model_config.yaml"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
