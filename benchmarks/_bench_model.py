"""The benchmark's own synthesis model: trained once through ``msi2hist train`` on phantoms whose
textures and seeds the registration benchmark never uses (cached outside git)."""

from __future__ import annotations

from pathlib import Path

from napari_msi2hist.cli import main as cli_main
from napari_msi2hist.phantom import PhantomConfig, make_phantom

ROOT = Path(__file__).resolve().parents[1]
HE = ROOT.parent / "shared" / "data" / "he"
# training phantoms: textures and seeds disjoint from the benchmark's
TRAIN = [
    (901, "henorm_example1.png"),
    (902, "cardinal_rcc-MH0204_33.png"),
    (903, None),
    (904, "cardinal_rcc-UH0710_33.png"),
    (905, "cardinal_rcc-UH0505_12.png"),
]
VAL = [(906, None)]


def ensure_model(cache: Path, steps: int = 4000) -> Path:
    """Train (once) a small pix2pix on ``TRAIN`` phantoms; return the checkpoint path.

    One model per step count (``cache/model-<steps>``), so a cache never hands back a model
    trained for another length.
    """
    model = cache / f"model-{steps}"
    ck = model / "checkpoints"
    for name in ("best.pt", "last.pt"):
        if (ck / name).is_file() and (model / "done").is_file():
            return ck / name
    lines = ["samples:"]
    for split, items in (("train", TRAIN), ("val", VAL)):
        for seed, tex in items:
            d = cache / "train_phantoms" / f"s{seed}"
            if not (d / "truth.json").is_file():
                cfg = PhantomConfig(
                    seed=seed,
                    he_image=str(HE / tex) if tex else None,
                    he_max_size=320,
                    procedural_size=320,
                )
                make_phantom(d, cfg, overwrite=True)
            lines += [
                f"  - name: s{seed}",
                f"    imzml: {d / 'msi.imzML'}",
                f"    he: {d / 'he.ome.tif'}",
                f"    align: {{truth: {d / 'truth.json'}}}",
                f"    split: {split}",
            ]
    pairs = cache / "pairs.yaml"
    pairs.write_text("\n".join(lines) + "\n")
    args = ["train", "--pairs", str(pairs), "--out", str(model), "--n-peaks", "30"]
    args += ["--max-steps", str(steps), "--ngf", "16", "--ndf", "16", "--depth", "6"]
    args += ["--patch", "64", "--batch-size", "4", "--lr", "2e-4", "--device", "cpu", "--quiet"]
    args += ["--checkpoint-every", "250", "--val-every", "250"]
    rc = cli_main(args)
    if rc != 0:
        raise RuntimeError("training the benchmark model failed")
    (model / "done").write_text(f"trained {steps} steps\n")
    return ck / "best.pt" if (ck / "best.pt").is_file() else ck / "last.pt"


if __name__ == "__main__":
    import sys

    print(ensure_model(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 4000))
