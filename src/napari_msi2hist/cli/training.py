"""``msi2hist train``, ``compare`` and ``evaluate``: models and their figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._common import CLIError, ProgressBar, add_pixel_args, add_training_args
from ._policy import declare


def _train_config(args, model: str):
    from ..config import TrainConfig

    return TrainConfig(
        model=model,
        gan_mode=args.gan_mode,
        lambda_l1=args.lambda_l1,
        lr=args.lr,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        patch=args.patch,
        ngf=args.ngf,
        depth=args.depth,
        ndf=args.ndf,
        checkpoint_every=args.checkpoint_every,
        val_every=args.val_every,
        seed=args.seed,
        device=args.device,
        decay_start=args.decay_start,
    )


def cmd_compare(args) -> int:
    from ..models.compare import format_table, iter_compare
    from ..models.pairs import read_pairs_yaml
    from ..progress import run_to_end

    entries = read_pairs_yaml(args.pairs)
    try:
        peaks = [int(v) for v in args.peaks.split(",") if v]
    except ValueError as e:
        raise CLIError(f"--peaks {args.peaks!r}: give comma-separated integers") from e
    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if m not in ("pix2pix", "unet")]
    if bad or not models:
        raise CLIError(f"--models {args.models!r}: choose from pix2pix, unet")
    configs = {m: _train_config(args, m) for m in models}
    from ..progress import Cancelled, CancelToken
    from ._policy import signals_to_cancel

    token = CancelToken()
    try:
        with signals_to_cancel(token):  # Ctrl-C / SIGTERM: the run in progress saves, then stop
            res = run_to_end(
                iter_compare(
                    entries,
                    args.out,
                    configs,
                    n_peaks=peaks,
                    working_pixel_um=args.working_pixel_um,
                    padding=args.padding,
                    cancel=token,
                ),
                ProgressBar(args.quiet),
            )
    except Cancelled:
        print(
            f"msi2hist compare: interrupted; the run in progress is saved in {args.out} "
            "(rerun the same command to resume)",
            file=sys.stderr,
        )
        return 130
    if args.json:
        print(json.dumps(res["table"]))
    else:
        print(f"held-out samples: split '{res['held_out']}'; per-sample figures in compare.json")
        print(format_table(res["table"]))
    return 0


def cmd_train(args) -> int:
    import shutil

    from ..models.datasets import split_by_sample
    from ..models.pairs import read_pairs_yaml
    from ..progress import Cancelled, CancelToken, run_to_end
    from ..workflows.train import TrainJob, contract_and_samples, iter_train_job, load_base
    from ._policy import signals_to_cancel

    entries = read_pairs_yaml(args.pairs)
    for e in entries:  # CLI pixel sizes fill in for entries that give none
        for k in ("fixed_pixel_um", "moving_pixel_um"):
            if e.get(k) is None and getattr(args, k, None) is not None:
                e[k] = getattr(args, k)
    out = Path(args.out)
    if args.resume and args.base:
        raise CLIError("--resume continues OUT's own checkpoint; --base starts a new run from one")
    # --base with --n-peaks/--mz: a re-headed model (the base's body and decoder, a new input layer
    # for these channels); --base alone: the base's own m/z channels
    job = TrainJob(
        out_dir=str(out),
        cfg=_train_config(args, args.model),
        base=args.base,
        resume=args.resume,
        rehead=bool(args.base) and (args.n_peaks is not None or bool(args.mz)),
        n_peaks=args.n_peaks,
        mz=tuple(float(v) for v in args.mz.split(",")) if args.mz else None,
        working_pixel_um=args.working_pixel_um,
        padding=args.padding,
    )
    last = job.last_checkpoint
    if args.resume and not last.is_file():
        raise CLIError(f"{last}: no checkpoint to resume (start the run without --resume)")
    if not args.resume and out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise CLIError(
                f"{out}: holds earlier output (a training run?); use --resume to continue it, "
                "--overwrite to discard it, or another --out"
            )
        for name in ("config.yaml", "metrics.jsonl", "model.pt"):  # the run's own files only
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    base = load_base(job)
    contract, samples = contract_and_samples(entries, job, base)
    train, val = split_by_sample(samples)
    info = {
        "pairs": str(Path(args.pairs).resolve()),
        "train": [s.name for s in train],
        "val": [s.name for s in val],
    }
    cfg = job.cfg
    if not args.quiet:
        print(
            f"training {cfg.max_steps} steps on {len(train)} train / {len(val)} validation pair(s); "
            f"checkpoints every {cfg.checkpoint_every} steps in {last} "
            f"(resume with --resume), losses and validation in {out / 'metrics.jsonl'}",
            file=sys.stderr,
        )
    token = CancelToken()
    try:
        with signals_to_cancel(token):  # Ctrl-C / SIGTERM: save a checkpoint, then stop
            final = run_to_end(
                iter_train_job(train, val, contract, job, base, data_info=info, cancel=token),
                ProgressBar(args.quiet),
            )
    except Cancelled:
        if not last.is_file():  # stopped before the first step: leave no half-made run folder
            for name in ("config.yaml", "metrics.jsonl"):
                (out / name).unlink(missing_ok=True)
            for d in (out / "checkpoints", out):
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
        saved = f"checkpoint saved in {last}" if last.is_file() else "nothing saved yet"
        print(f"msi2hist train: interrupted; {saved} (continue with --resume)", file=sys.stderr)
        return 130
    if not args.quiet:
        print(
            f"wrote {final} (metrics in {out / 'metrics.jsonl'}, config in {out / 'config.yaml'})"
        )
    return 0


def _evaluable_rgb(path, a):
    """An image as ``(Y, X, 3)`` uint8 for evaluate (:func:`..io.histology.as_rgb_uint8`)."""
    from ..io.histology import as_rgb_uint8

    try:
        return as_rgb_uint8(a, path)
    except ValueError as e:
        raise CLIError(f"{e}: evaluate compares RGB images (or 3-channel stacks)") from None


def cmd_evaluate(args) -> int:
    import numpy as np

    from ..io.histology import read_histology
    from ..metrics import all_metrics

    pred = _evaluable_rgb(args.pred, np.asarray(read_histology(args.pred).levels[0]))
    truth = _evaluable_rgb(args.truth, np.asarray(read_histology(args.truth).levels[0]))
    if pred.shape[:2] != truth.shape[:2]:
        raise CLIError(
            f"{args.pred}: shape {pred.shape[:2]} differs from {args.truth}: {truth.shape[:2]}"
        )
    mask = None
    if args.mask:
        m = np.asarray(read_histology(args.mask).levels[0])
        mask = (m[..., 0] if m.ndim == 3 else m) > 0
        if mask.shape != pred.shape[:2]:
            raise CLIError(
                f"{args.mask}: mask shape {mask.shape} differs from the images {pred.shape[:2]}"
            )
    res = all_metrics(pred, truth, mask)
    if args.lpips_weights and not args.features:
        raise CLIError("--lpips-weights needs --features (the backbone they calibrate)")
    if args.features:
        from ..metrics import frechet_distance
        from ..models.backbones import load_backbone, load_lpips_weights, lpips, pooled_features

        net = load_backbone(args.features)
        lin = load_lpips_weights(args.lpips_weights, net.channels) if args.lpips_weights else None
        res["lpips"] = lpips(net, pred, truth, lin)
        fa, fb = (
            pooled_features(net, pred, args.fid_tile),
            pooled_features(net, truth, args.fid_tile),
        )
        res["fid"] = frechet_distance(fa, fb) if len(fa) > 1 else float("nan")
        res["fid_tiles"] = len(fa)
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:5s} {v:.4f}")
    return 0


def add_parsers(sub) -> None:
    """The training and evaluation sub-parsers."""
    p = sub.add_parser(
        "train", help="train or fine-tune pix2pix (or the U-Net baseline) on paired MSI/H&E"
    )
    p.add_argument("--pairs", required=True, help="pairs YAML (see docs/training.md)")
    add_pixel_args(p)
    p.add_argument(
        "--out",
        required=True,
        help="run folder: checkpoints/, model.pt, metrics.jsonl, config.yaml",
    )
    p.add_argument(
        "--base",
        help="checkpoint to fine-tune from ('demo': the bundled model). Alone: its m/z channels "
        "are used. With --n-peaks or --mz: re-headed, i.e. its trained body and decoder are kept "
        "and a new input layer is built for your m/z (see docs/own_data.md)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--model", choices=["pix2pix", "unet"], default="pix2pix")
    add_training_args(p)
    p.add_argument(
        "--n-peaks",
        type=int,
        default=None,
        help="top-N peaks for the channel contract (default 50, as seed 000; with --base: "
        "re-head the base to these peaks)",
    )
    p.add_argument(
        "--mz",
        help="explicit comma-separated m/z list instead of top-N (with --base: re-head to them)",
    )
    p.set_defaults(func=cmd_train)
    declare(p, ("pairs", "base"), "out", "run")
    p = sub.add_parser(
        "compare",
        help="pix2pix vs the U-Net baseline on the same split, with a peak-count ablation",
        description="Train each model (same samples, seed and steps) for each peak count and "
        "evaluate on the held-out samples (split: test in the pairs file, else split: val). "
        "Prints a table of mean MI and SSIM with the pix2pix - U-Net deltas and writes "
        "OUT/compare.json (per-sample MI, NMI, SSIM, PSNR) and OUT/compare.csv. Rerunning with "
        "the same OUT resumes.",
    )
    p.add_argument("--pairs", required=True, help="pairs YAML with train, val and test samples")
    p.add_argument("--out", required=True, help="folder for one run per (peaks, model)")
    p.add_argument("--peaks", default="50", help="comma-separated peak counts, e.g. 25,50,100")
    p.add_argument("--models", default="pix2pix,unet", help="comma list of pix2pix, unet")
    add_training_args(p)
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=cmd_compare)
    declare(p, ("pairs",), "out", "run")
    p = sub.add_parser("evaluate", help="MI, NMI, SSIM, PSNR between a synthetic and a real H&E")
    p.add_argument("--pred", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--mask", help="optional mask image (non-zero = inside)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--features",
        help="local ResNet-50 or VGG-16 weights (torchvision layout): adds LPIPS and a tile FID",
    )
    p.add_argument("--lpips-weights", help="local LPIPS linear-layer weights for --features")
    p.add_argument("--fid-tile", type=int, default=128, help="tile size (px) of the FID sets")
    p.set_defaults(func=cmd_evaluate)
    declare(p, ("pred", "truth", "mask", "features", "lpips_weights"))
