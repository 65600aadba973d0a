"""pix2pix against the seed-000 U-Net baseline on the same split, and a peak-count ablation.

For each peak count N (seed 000 used 50; how many are needed is one of its open questions) a channel
contract is built from the training samples' top-N peaks, both models are trained on the same training
samples (same seed, same steps), and each is evaluated on the held-out samples (``split: test`` in the
pairs file, else the validation samples) with MI, NMI, SSIM and PSNR inside the H&E footprint. The
result is a table like the paper's: per N, each model's mean MI and SSIM and the pix2pix - U-Net
deltas.

Every run lives in ``OUT/p{N}-{model}``: an interrupted comparison resumes where it stopped (each
training run resumes from its last checkpoint, finished runs are only evaluated).
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .._files import rows_to_csv, write_text_atomic
from ..config import TrainConfig
from ..metrics import all_metrics
from ..progress import CancelToken, Progress
from .checkpoint import load_checkpoint
from .datasets import contract_from_data, load_samples, split_by_sample
from .inference import to_rgb_uint8
from .training import iter_train
from .validation import predict_sample

METRICS = ("mi", "nmi", "ssim", "psnr")


def evaluate_checkpoint(ckpt_path, samples, device: str = "cpu") -> dict:
    """Score a checkpoint on samples inside each one's H&E footprint.

    Parameters
    ----------
    ckpt_path : path-like
        The checkpoint.
    samples : list of PairedSample
        The samples.
    device : str
        Where to run.

    Returns
    -------
    dict
        Sample name to its metrics (MI, NMI, SSIM, PSNR), and ``mean`` over the samples.
    """
    ck = load_checkpoint(ckpt_path)
    g = ck.build()
    rows = {}
    for s in samples:
        pred = predict_sample(g, s, g.multiple, ck.contract.pad_value, device)
        rows[s.name] = all_metrics(pred, to_rgb_uint8(s.y), s.valid)
    rows["mean"] = {k: float(np.mean([r[k] for r in rows.values()])) for k in METRICS}
    return rows


def iter_compare(
    entries: list[dict],
    out_dir: str | os.PathLike,
    configs: dict[str, TrainConfig],
    n_peaks: Sequence[int] = (50,),
    working_pixel_um: float = 10.0,
    padding: str = "white",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, dict]:
    """Train and evaluate each model for each peak count (seed 000's comparison).

    The results are also written as ``OUT/compare.json`` and ``OUT/compare.csv``.

    Parameters
    ----------
    entries : list of dict
        Pairs entries with ``split`` (``train`` and ``test`` or ``val``).
    out_dir : path-like
        Where each run and the results go.
    configs : dict of TrainConfig
        Model name (``pix2pix``, ``unet``) to its training config.
    n_peaks : sequence of int
        Peak counts to try.
    working_pixel_um : float
        The contracts' working pixel.
    padding : str
        The contracts' padding (``white``, ...).
    cancel : CancelToken, optional
        Checked every training step; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        Training steps over all runs, with a stage per peak count and model.

    Returns
    -------
    dict
        ``held_out`` (the split evaluated), ``models``, ``runs`` (metrics per run) and ``table``
        (:func:`comparison_table`).

    Raises
    ------
    ValueError
        No training sample, or no held-out (``test`` or ``val``) sample.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held = "test" if any(e["split"] == "test" for e in entries) else "val"
    if not any(e["split"] == held for e in entries):
        raise ValueError("the pairs file needs at least one 'split: test' or 'split: val' sample")
    if not any(e["split"] == "train" for e in entries):
        raise ValueError("the pairs file needs at least one 'split: train' sample")
    total = len(n_peaks) * sum(c.max_steps for c in configs.values())
    done = 0
    results: dict = {"held_out": held, "models": list(configs), "runs": {}}
    for n in n_peaks:
        yield Progress(done, total, f"{n} peaks: ion images")
        contract, stacks = contract_from_data(
            entries, n_peaks=n, working_pixel_um=working_pixel_um, padding=padding
        )
        samples = load_samples(entries, contract, stacks)
        train, val = split_by_sample(samples)
        test = [s for s in samples if s.split == held]
        for name, cfg in configs.items():
            run_dir = out / f"p{n}-{name}"
            final = run_dir / "model.pt"
            if not _finished(final, cfg, contract):
                resume = (run_dir / "checkpoints" / "last.pt").is_file()
                gen = iter_train(train, val, contract, cfg, run_dir, resume=resume, cancel=cancel)
                try:
                    while True:
                        p = next(gen)
                        yield replace(
                            p, done=done + p.done, total=total, stage=f"{n} peaks: {name}"
                        )
                except StopIteration as stop:
                    final = stop.value
            done += cfg.max_steps
            results["runs"][f"{n}:{name}"] = {
                "n_peaks": n,
                "model": name,
                "run_dir": str(run_dir),
                "test": evaluate_checkpoint(final, test),
            }
    results["table"] = comparison_table(results)
    write_text_atomic(out / "compare.json", json.dumps(results, indent=1))
    write_text_atomic(out / "compare.csv", rows_to_csv(results["table"]))
    yield Progress(total, total, "done")
    return results


def _finished(path: Path, cfg: TrainConfig, contract) -> bool:
    """Tell whether an earlier call's run already reached its last step with the same settings."""
    if not path.is_file():
        return False
    ck = load_checkpoint(path)
    return (
        ck.contract == contract
        and ck.training.get("steps") == cfg.max_steps
        and ck.training.get("config") == asdict(cfg)
    )


def comparison_table(results: dict) -> list[dict]:
    """Tabulate a comparison: one row per peak count.

    Parameters
    ----------
    results : dict
        From :func:`iter_compare`.

    Returns
    -------
    list of dict
        Each model's mean MI and SSIM, and with both models ``delta_mi``/``delta_ssim`` (pix2pix -
        U-Net).
    """
    rows = []
    for n in sorted({r["n_peaks"] for r in results["runs"].values()}):
        row: dict = {"n_peaks": n}
        for r in results["runs"].values():
            if r["n_peaks"] == n:
                for k in ("mi", "ssim"):
                    row[f"{r['model']}_{k}"] = r["test"]["mean"][k]
        if "pix2pix_mi" in row and "unet_mi" in row:
            row["delta_mi"] = row["pix2pix_mi"] - row["unet_mi"]
            row["delta_ssim"] = row["pix2pix_ssim"] - row["unet_ssim"]
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """Format the comparison table as text, paper style.

    Parameters
    ----------
    rows : list of dict
        From :func:`comparison_table`.

    Returns
    -------
    str
        A header, a rule and one line per row.
    """
    keys = list(dict.fromkeys(k for r in rows for k in r))
    head = " ".join(f"{k:>12s}" for k in keys)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            if v is None:
                cells.append(f"{'':>12s}")
            elif k == "n_peaks":
                cells.append(f"{v:>12d}")
            elif k.startswith("delta"):
                cells.append(f"{v:>+12.4f}")
            else:
                cells.append(f"{v:>12.4f}")
        lines.append(" ".join(cells))
    return "\n".join(lines)
