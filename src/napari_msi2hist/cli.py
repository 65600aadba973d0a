"""``msi2hist`` command line. Errors print one line and exit non-zero (``--debug`` shows tracebacks)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ._cli_policy import check_registration_grids, declare, get_plan
from .progress import Progress


class CLIError(Exception):
    pass


class _Bar:
    """A small terminal progress bar (stderr) that stays quiet when stderr is not a terminal."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.stage = None
        self.val = ""

    @staticmethod
    def _postfix(info: dict | None) -> str:
        """Training losses (and validation metrics) shown after the bar."""
        if not info or "losses" not in info:
            return ""
        return " " + " ".join(f"{k}={v:.3g}" for k, v in info["losses"].items())

    def __call__(self, p: Progress):
        if self.quiet:
            return
        now = time.monotonic()
        info = p.info or {}
        if info.get("note"):
            sys.stderr.write(f"{info['note']}\n")
        if "val_mi" in info:  # a validation: its own line, kept in the terminal's history
            self.val = (
                f" | val MI {info['val_mi']:.3f} SSIM {info.get('val_ssim', float('nan')):.3f}"
            )
            sys.stderr.write(
                ("\r" if self.tty else "") + f"step {p.done}/{p.total}:"
                f"{self._postfix(info)}{self.val}" + "\n"
            )
        if (
            p.stage != self.stage
            or now - self.last > (0.1 if self.tty else 5.0)
            or p.done >= p.total
        ):
            self.last = now
            self.stage = p.stage
            width = 30
            k = int(width * p.fraction)
            msg = f"{p.stage:<18} [{'#' * k}{'.' * (width - k)}] {100 * p.fraction:5.1f}%"
            if "losses" in info:
                msg += f" step {p.done}/{p.total}{self._postfix(info)}{self.val}"
            if self.tty:
                sys.stderr.write("\r" + msg + ("\n" if p.done >= p.total else ""))
            else:
                sys.stderr.write(msg + "\n")
            sys.stderr.flush()


def _print_domain(res) -> None:
    """Input-domain warnings of a synthesis (models/domain.py), one line each on stderr."""
    for w in res.domain.warnings if res.domain else ():
        print(f"warning: {w}", file=sys.stderr)


def _add_pixel_args(p, fixed: bool = True, moving: bool = True) -> None:
    """``--fixed-pixel-um`` / ``--moving-pixel-um``: override (or supply) a file's pixel size."""
    if fixed:
        p.add_argument(
            "--fixed-pixel-um",
            type=float,
            help="H&E pixel size in um (required when the file has none; overrides the file's)",
        )
    if moving:
        p.add_argument(
            "--moving-pixel-um",
            type=float,
            help="MSI pixel size in um (required when the file has none; overrides the file's)",
        )


def _tolerance(args):
    from .msi.ion_images import Tolerance

    if args.tol_da is not None:
        return Tolerance(args.tol_da, "da")
    return Tolerance(args.tol_ppm if args.tol_ppm is not None else 10.0, "ppm")


def cmd_info(args) -> int:
    from .io.imzml import open_imzml

    with open_imzml(args.file) as imz:
        info = imz.info()
    if args.json:
        print(
            json.dumps(
                {
                    k: info[k]
                    for k in (
                        "mode",
                        "n_spectra",
                        "shape_yx",
                        "pixel_size_um",
                        "mz_range",
                        "uuid",
                        "duplicate_pixels",
                    )
                }
            )
        )
    else:
        for k, v in info.items():
            print(f"{k:16s} {v}")
    return 0


def pick_and_extract(imz, n_peaks, mz_list, tol, norm, progress=None):
    """Peaks (top-N of the mean spectrum, or an explicit list) and their ion images."""
    from .msi.ion_images import iter_ion_images
    from .msi.peaks import iter_top_peaks
    from .progress import run_to_end

    if mz_list is None:
        mz_list = run_to_end(iter_top_peaks(imz, n_peaks, norm), progress)
    return run_to_end(iter_ion_images(imz, mz_list, tolerance=tol, norm=norm), progress)


def cmd_peaks(args) -> int:
    from .io.histology import write_ome_tiff
    from .io.imzml import open_imzml
    from .msi.peaks import parse_mz_list

    mz = parse_mz_list(args.mz) if args.mz else None
    out = Path(args.out)
    from .pixel_size import resolve_pixel_size

    with open_imzml(args.file) as imz:
        imz.pixel_size_um = resolve_pixel_size(
            imz.pixel_size_um, args.moving_pixel_um, "moving", args.file
        )
        res = pick_and_extract(imz, args.n_peaks, mz, _tolerance(args), args.norm, _Bar(args.quiet))
    names = [f"mz={m:.4f}" for m in res.mz]
    with get_plan(args).file(out) as tmp:
        write_ome_tiff(tmp, res.stack, imz.pixel_size_um, channel_names=names)
    if not args.quiet:
        print(
            f"wrote {out}: {res.stack.shape[0]} ion images of {res.stack.shape[1]}x{res.stack.shape[2]} px "
            f"(tolerance {res.tolerance}, normalisation {res.norm})"
        )
    return 0


def cmd_phantom(args) -> int:
    from .phantom import PhantomConfig, iter_make_phantom
    from .progress import run_to_end

    cfg = PhantomConfig(seed=args.seed, he_image=args.he, mode=args.mode)
    with get_plan(args).folder(args.out_dir) as tmp:
        ph = run_to_end(iter_make_phantom(tmp, cfg), _Bar(args.quiet))
    if not args.quiet:
        print(
            f"wrote phantom to {args.out_dir}: MSI {ph.msi_shape_yx[0]}x{ph.msi_shape_yx[1]} px at "
            f"{cfg.msi_pixel_um} um, H&E {ph.he_rgb.shape[0]}x{ph.he_rgb.shape[1]} px at {cfg.he_pixel_um} um"
        )
    return 0


def cmd_synthesize(args) -> int:
    from .io.histology import write_ome_tiff
    from .models.inference import InferenceOptions
    from .models.synthesis import iter_synthesize_imzml
    from .progress import run_to_end

    out = Path(args.out)
    opts = InferenceOptions(
        tile=args.tile,
        overlap=args.overlap,
        device=args.device,
        amp=not args.no_amp,
        batch_size=args.batch_size,
        compile=args.compile,
    )
    px = (args.moving_pixel_um,) * 2 if args.moving_pixel_um else None
    res = run_to_end(
        iter_synthesize_imzml(args.file, args.model, opts, strict=args.strict, pixel_size_um=px),
        _Bar(args.quiet),
    )
    _print_domain(res)
    with get_plan(args).file(out) as tmp:
        write_ome_tiff(tmp, res.rgb, res.pixel_size_um)
    if not args.quiet:
        print(
            f"wrote {out}: synthetic H&E {res.rgb.shape[0]}x{res.rgb.shape[1]} px at "
            f"{res.pixel_size_um[0]} um ({Path(res.checkpoint).name})"
        )
    return 0


def _train_config(args, model: str):
    from .models.training import TrainConfig

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
    from .models.compare import format_table, iter_compare
    from .models.datasets import read_pairs_yaml
    from .progress import run_to_end

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
    from ._cli_policy import signals_to_cancel
    from .progress import Cancelled, CancelToken

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
                _Bar(args.quiet),
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

    from ._cli_policy import signals_to_cancel
    from .models.datasets import contract_from_data, load_samples, read_pairs_yaml, split_by_sample
    from .models.training import iter_train
    from .progress import Cancelled, CancelToken, run_to_end

    entries = read_pairs_yaml(args.pairs)
    for e in entries:  # CLI pixel sizes fill in for entries that give none
        for k in ("fixed_pixel_um", "moving_pixel_um"):
            if e.get(k) is None and getattr(args, k, None) is not None:
                e[k] = getattr(args, k)
    cfg = _train_config(args, args.model)
    out = Path(args.out)
    last = out / "checkpoints" / "last.pt"
    if args.resume and args.base:
        raise CLIError("--resume continues OUT's own checkpoint; --base starts a new run from one")
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
    base = None
    # --base with --n-peaks/--mz: a re-headed model (the base's body and decoder, a new input layer
    # for these channels); --base alone: the base's own m/z channels
    rehead = bool(args.base) and not args.resume and (args.n_peaks is not None or bool(args.mz))
    if (args.base or args.resume) and not rehead:
        from .models.checkpoint import load_checkpoint

        base = load_checkpoint(last if args.resume else args.base)
        contract = base.contract
        samples = load_samples(entries, contract)
    else:
        mz = [float(v) for v in args.mz.split(",")] if args.mz else None
        kw = {"working_pixel_um": args.working_pixel_um, "padding": args.padding}
        if rehead:
            from .models.checkpoint import load_checkpoint
            from .models.rehead import reheaded_contract_kwargs

            base = load_checkpoint(args.base)
            kw = reheaded_contract_kwargs(base.contract)
        contract, stacks = contract_from_data(
            entries, n_peaks=args.n_peaks if args.n_peaks is not None else 50, mz=mz, **kw
        )
        samples = load_samples(entries, contract, stacks)
    train, val = split_by_sample(samples)
    bar = _Bar(args.quiet)
    info = {
        "pairs": str(Path(args.pairs).resolve()),
        "train": [s.name for s in train],
        "val": [s.name for s in val],
    }
    if not args.quiet:
        print(
            f"training {cfg.max_steps} steps on {len(train)} train / {len(val)} validation pair(s); "
            f"checkpoints every {cfg.checkpoint_every} steps in {out / 'checkpoints' / 'last.pt'} "
            f"(resume with --resume), losses and validation in {out / 'metrics.jsonl'}",
            file=sys.stderr,
        )
    token = CancelToken()
    try:
        with signals_to_cancel(token):  # Ctrl-C / SIGTERM: save a checkpoint, then stop
            final = run_to_end(
                iter_train(
                    train,
                    val,
                    contract,
                    cfg,
                    out,
                    resume=args.resume,
                    base=None if args.resume else base,
                    data_info=info,
                    cancel=token,
                    rehead=rehead,
                ),
                bar,
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
    """An image as ``(Y, X, 3)`` uint8 for evaluate: RGB as read, or a ``(3, Y, X)`` / ``(1, Y, X)``
    stack such as ``register``'s registered.ome.tif (NaN outside the moved image becomes white)."""
    import numpy as np

    from .io.histology import to_uint8_rgb

    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 1):
        a = np.repeat(a.reshape(a.shape[:2] + (1,)), 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise CLIError(
            f"{path}: a {a.shape} image: evaluate compares RGB images (or 3-channel stacks)"
        )
    a = a[..., :3]
    if a.dtype.kind == "f":
        a = np.where(np.isfinite(a), a, 255.0 if np.nanmax(a) > 1.0 else 1.0)
    return to_uint8_rgb(a)


def cmd_evaluate(args) -> int:
    import numpy as np

    from .io.histology import read_histology
    from .metrics import all_metrics

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
        from .metrics import frechet_distance
        from .models.backbones import load_backbone, load_lpips_weights, lpips, pooled_features

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


def cmd_register(args) -> int:
    import numpy as np

    from .io.histology import read_histology, to_uint8_rgb
    from .io.imzml import is_imzml_path, open_imzml
    from .phantom import read_points_csv
    from .pixel_size import resolve_pixel_size
    from .progress import run_to_end
    from .registration.intensity import RegistrationOptions
    from .registration.pipeline import iter_register_msi

    out = Path(args.out)
    bar = _Bar(args.quiet)
    he = read_histology(args.fixed)
    for w in he.warnings:
        print(f"warning: {w}", file=sys.stderr)
    he_rgb = to_uint8_rgb(np.asarray(he.levels[0])[..., :3])
    he_px = resolve_pixel_size(he.pixel_size_um, args.fixed_pixel_um, "fixed", args.fixed)
    stages = tuple(s for s in args.stages.split(",") if s)
    opts = RegistrationOptions(
        stages=stages,
        rotation_search=args.rotation_search,
        seed=args.seed,
        scale_range=args.scale_range,
        scale_steps=args.scale_steps if args.scale_range > 1 else 1,
    )
    lm_f = read_points_csv(args.landmarks_fixed) if args.landmarks_fixed else None
    lm_m = read_points_csv(args.landmarks_moving) if args.landmarks_moving else None
    if (lm_f is None) != (lm_m is None):
        raise CLIError("give both --landmarks-fixed and --landmarks-moving")
    if lm_f is not None:
        from .registration.landmarks import check_landmark_pairs

        check_landmark_pairs(lm_m, lm_f, (args.landmarks_moving, args.landmarks_fixed))
    synth = stack = mask = None
    msi_px = None
    mz = None
    if is_imzml_path(args.moving):
        from .msi.ion_images import ion_images, total_ion_image

        with open_imzml(args.moving) as imz:
            msi_px = resolve_pixel_size(
                imz.pixel_size_um, args.moving_pixel_um, "moving", args.moving
            )
            imz.pixel_size_um = msi_px
            if args.route == "synthesis":
                from .models.checkpoint import load_checkpoint
                from .models.inference import InferenceOptions
                from .models.synthesis import extract_for_contract, iter_synthesize

                ckpt = load_checkpoint(args.model)
                ions = run_to_end(extract_for_contract(imz, ckpt), bar)
                res = run_to_end(
                    iter_synthesize(ions, ckpt, InferenceOptions(device=args.device)), bar
                )
                _print_domain(res)
                synth, moving_px = res.rgb, res.pixel_size_um
                stack, mask, mz = ions.stack, ions.mask, ions.mz
            else:
                stack = total_ion_image(imz)[None]
                mask, moving_px = imz.measured_mask(), msi_px
                if args.mz:
                    ions = ion_images(imz, [float(v) for v in args.mz.split(",")])
                    stack, mz = ions.stack, ions.mz
    else:
        img = read_histology(args.moving)
        arr = np.asarray(img.levels[0])
        moving_px = msi_px = resolve_pixel_size(
            img.pixel_size_um, args.moving_pixel_um, "moving", args.moving
        )
        if img.rgb:
            if args.route != "synthesis":
                raise CLIError(
                    f"{args.moving}: an RGB moving image is a synthetic H&E: use --route synthesis"
                )
            synth = to_uint8_rgb(arr)
        else:
            stack = arr if arr.ndim == 3 else arr[None]
            mask = np.ones(stack.shape[-2:], bool)
            if stack.shape[0] > 16:
                raise CLIError(f"{args.moving}: {stack.shape[0]} channels: expected an MSI image")
            if args.route == "synthesis":
                raise CLIError(
                    f"{args.moving}: the synthesis route needs an imzML (and --model) or a synthetic H&E"
                )
    check_registration_grids(
        (he_rgb.shape[:2], he_px, args.fixed),
        ((synth if stack is None else stack[0]).shape[:2], moving_px, args.moving),
    )
    reg = run_to_end(
        iter_register_msi(
            he_rgb,
            he_px,
            args.route,
            moving_px,
            synth_rgb=synth,
            msi_stack=stack,
            msi_mask=mask,
            opts=opts,
            landmarks_fixed=lm_f,
            landmarks_moving=lm_m,
            landmarks_use=args.landmarks_use,
            msi_pixel_um=float(np.mean(msi_px)),
            summary=args.summary,
            fixed_mask=_read_mask(args.fixed_mask, he_rgb.shape[:2]),
            moving_mask=_read_mask(
                args.moving_mask, synth.shape[:2] if synth is not None else stack.shape[-2:]
            ),
        ),
        bar,
    )
    reg.transform.meta.update(
        {
            "fixed": str(Path(args.fixed).resolve()),
            "moving": str(Path(args.moving).resolve()),
            "fixed_pixel_size_um": list(he_px),
            "moving_pixel_size_um": list(moving_px),
            "metrics": reg.metrics,
        }
    )
    from ._limits import check_allocation

    n_layers = 3 if stack is None else stack.shape[0]
    check_allocation(
        2.0 * n_layers * he_rgb.shape[0] * he_rgb.shape[1] * 4,
        f"{n_layers} registered float32 images of {he_rgb.shape[0]} x {he_rgb.shape[1]} px",
        args.fixed,
    )
    # all outputs go to a temporary folder that replaces OUT only once complete
    with get_plan(args).folder(out) as tmp:
        _write_register_outputs(args, tmp, reg, stack, synth, mz, msi_px, moving_px, he_rgb, he_px)
    if not args.quiet:
        b, a = reg.metrics["before"], reg.metrics["after"]
        print(
            f"wrote {out}: transform.json/.h5, registered.ome.tif, report.json; MI {b['mi']:.3f} -> {a['mi']:.3f}, "
            f"Dice {b['dice']:.3f} -> {a['dice']:.3f} ({reg.seconds:.1f} s)"
        )
        if reg.landmarks:
            print(
                f"landmark TRE median {reg.landmarks['tre_median_um']:.1f} um "
                f"({reg.landmarks['tre_median_msi_px']:.2f} MSI px)"
            )
    _print_verdict(reg, args)
    if reg.verdict["verdict"] == "failed" and not args.allow_failed:
        print(
            f"msi2hist register: the registration failed (see {out / 'report.json'}); the outputs "
            "are kept for inspection; --allow-failed exits 0",
            file=sys.stderr,
        )
        return 3
    return 0


def _write_register_outputs(args, out, reg, stack, synth, mz, msi_px, moving_px, he_rgb, he_px):
    import numpy as np

    from .io.histology import write_ome_tiff

    reg.transform.save(out / "transform.json", out / "transform.h5")
    # the moving data resampled onto the H&E grid: every ion image (or the synthetic H&E)
    layers, names = [], []
    if stack is not None:
        for c in range(stack.shape[0]):
            layers.append(
                reg.transform.resample_moving_to_fixed(stack[c], msi_px, he_rgb.shape[:2], he_px)
            )
        names = (
            [f"mz={m:.4f}" for m in mz]
            if mz is not None
            else [f"channel {c}" for c in range(len(layers))]
        )
    else:
        for c in range(3):
            layers.append(
                reg.transform.resample_moving_to_fixed(
                    synth[..., c].astype(np.float32), moving_px, he_rgb.shape[:2], he_px
                )
            )
        names = ["R", "G", "B"]
    write_ome_tiff(
        out / "registered.ome.tif", np.stack(layers).astype(np.float32), he_px, channel_names=names
    )
    report = {
        "route": args.route,
        "stages": [v for v in args.stages.split(",") if v],
        "seconds": reg.seconds,
        "verdict": reg.verdict,
        "metrics": reg.metrics,
        "landmarks": reg.landmarks,
        "seed": args.seed,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))


def _read_mask(path, shape):
    """A mask image (non-zero = inside) that must match ``shape``; None passes through."""
    if not path:
        return None
    import numpy as np

    from .io.histology import read_histology

    a = np.asarray(read_histology(path).levels[0])
    if a.ndim == 3:
        a = a.max(-1)
    if a.shape[:2] != tuple(shape):
        raise CLIError(
            f"{path}: mask is {a.shape[0]}x{a.shape[1]} px, its image {shape[0]}x{shape[1]} px"
        )
    return a > 0


def _print_verdict(reg, args) -> None:
    v = reg.verdict
    check = reg.metrics.get("pixel_size_check") or {}
    if check.get("warning"):
        print(f"warning: {check['warning']}", file=sys.stderr)
    stream = sys.stderr if v["verdict"] != "ok" else sys.stdout
    if args.quiet and v["verdict"] == "ok":
        return
    print(f"verdict: {v['verdict'].upper()}", file=stream)
    for r in v["reasons"]:
        print(f"  {r}", file=stream)


def cmd_transform_points(args) -> int:
    import numpy as np

    from .phantom import read_points_csv, write_points_csv
    from .registration.transforms import Transform

    tr = Transform.load(args.transform)
    pts = read_points_csv(args.points)
    mapped = tr.fixed_to_moving(pts) if args.inverse else tr.moving_to_fixed(pts)
    if not np.isfinite(mapped).all():
        raise CLIError(f"{args.transform}: maps some points of {args.points} to NaN or infinity")
    out = Path(args.out)
    with get_plan(args).file(out) as tmp:
        write_points_csv(tmp, mapped)
    if not args.quiet:
        print(
            f"wrote {out}: {len(mapped)} points mapped {'fixed -> moving' if args.inverse else 'moving -> fixed'}"
        )
    return 0


def cmd_demo(args) -> int:
    """The whole workflow on an embedded phantom (no download), measured against its truth."""
    if args.gui:
        return cmd_gui(args)
    from .demo import run_demo

    with get_plan(args).folder(args.out_dir) as tmp:
        rep = run_demo(
            tmp,
            seed=args.seed,
            n_peaks=args.n_peaks,
            model=args.model,
            progress=_Bar(args.quiet),
        )
    if not args.quiet:
        r = rep["registration"]
        print(
            f"demo written to {args.out_dir} in {rep['seconds']['total']:.0f} s: synthetic H&E MI "
            f"{rep['synthesis_vs_truth']['mi']:.3f} / SSIM {rep['synthesis_vs_truth']['ssim']:.3f} vs truth; "
            f"median TRE synthesis route {r['synthesis']['tre_median_msi_px']:.2f} MSI px, direct route "
            f"{r['direct']['tre_median_msi_px']:.2f} MSI px; open report.html"
        )
        for route in ("synthesis", "direct"):
            print(f"verdict ({route} route): {r[route]['verdict'].upper()}")
            for reason in r[route]["verdict_reasons"]:
                print(f"  {reason}")
    return 0


def cmd_gui(args) -> int:
    """napari with the sample phantom loaded and the four widgets docked (needs the [qt] extra)."""
    try:
        from .widgets.launch import open_gui  # the one GUI import of the CLI (allowed in pyproject)
    except ImportError as e:
        raise CLIError(
            f"the GUI needs napari and a Qt binding ({e}): pip install 'napari-msi2hist[qt]'"
        ) from None
    open_gui()
    return 0


def _add_training_args(p) -> None:
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--gan-mode", choices=["vanilla", "lsgan", "wgangp"], default="vanilla")
    p.add_argument("--lambda-l1", type=float, default=200.0, help="L1 weight (seed 000: 200)")
    p.add_argument("--lr", type=float, default=2e-5, help="Adam learning rate (seed 000: 2e-5)")
    p.add_argument(
        "--decay-start", type=int, default=None, help="step from which the LR decays linearly to 0"
    )
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument(
        "--patch", type=int, default=128, help="training crop in working pixels (0: whole images)"
    )
    # defaults shared with the Train widget: TrainConfig's (the bundled demo model's architecture)
    p.add_argument("--ngf", type=int, default=16, help="generator width (pix2pix; default 16)")
    p.add_argument("--depth", type=int, default=6, help="generator U-Net depth (default 6)")
    p.add_argument("--ndf", type=int, default=32, help="PatchGAN discriminator width (default 32)")
    p.add_argument("--working-pixel-um", type=float, default=10.0, help="model grid pixel (um)")
    p.add_argument("--padding", choices=["white", "black"], default="white")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(
        prog="msi2hist", description="MSI to synthetic H&E, and MSI-H&E registration."
    )
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    ap.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="memory budget for allocations inputs decide, e.g. 4G (default: half the available "
        "memory, or $MSI2HIST_MAX_MEMORY)",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="print imzML metadata")
    p.add_argument("file", help="an .imzML file (its .ibd next to it)")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object: mode, n_spectra, shape_yx, pixel_size_um, mz_range, uuid, "
        "duplicate_pixels",
    )
    p.set_defaults(func=cmd_info)
    declare(p, ("file",))

    p = sub.add_parser("peaks", help="pick peaks and write the ion-image stack as OME-TIFF")
    p.add_argument("file", help="an .imzML file")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--n-peaks", type=int, help="top-N peaks of the mean spectrum (seed 000: 50)")
    g.add_argument("--mz", help="comma-separated m/z list, e.g. 760.585,782.567")
    t = p.add_mutually_exclusive_group()
    t.add_argument(
        "--tol-ppm", type=float, help="half-width of each m/z window in ppm (default 10)"
    )
    t.add_argument("--tol-da", type=float, help="half-width of each m/z window in Da")
    p.add_argument(
        "--norm",
        choices=["none", "tic", "rms", "median"],
        default="tic",
        help="per-spectrum normalisation before summing (default tic, as the bundled model)",
    )
    p.add_argument(
        "--out", required=True, help="output .ome.tif ((C, Y, X) float32 with pixel size)"
    )
    _add_pixel_args(p, fixed=False)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_peaks)
    declare(p, ("file",), "out", "file")

    p = sub.add_parser("phantom", help="write a paired MSI + H&E phantom with known transform")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--he", help="real H&E image to use as texture (default: procedural H&E)")
    p.add_argument("--mode", choices=["continuous", "processed"], default="continuous")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing phantom in OUT_DIR"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_phantom)
    declare(p, ("he",), "out_dir", "folder")

    p = sub.add_parser("synthesize", help="synthesise H&E from an imzML with a pix2pix checkpoint")
    p.add_argument("file", help="an .imzML file")
    p.add_argument(
        "--model", required=True, help="checkpoint file, or 'demo' for the bundled model"
    )
    p.add_argument(
        "--out", required=True, help="output RGB .ome.tif (pixel size = the model's working pixel)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument(
        "--tile", type=int, default=512, help="tile size in working pixels (default 512)"
    )
    p.add_argument(
        "--overlap", type=int, default=64, help="overlap between tiles in pixels (default 64)"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="tiles per batch (default: from free memory)"
    )
    p.add_argument(
        "--no-amp", action="store_true", help="full fp32 on GPU (default: bf16 autocast)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 1) when the MSI is outside the model's input domain (m/z coverage, "
        "intensity statistics; see docs/own_data.md) instead of warning",
    )
    _add_pixel_args(p, fixed=False)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_synthesize)
    declare(p, ("file", "model"), "out", "file")

    p = sub.add_parser(
        "train", help="train or fine-tune pix2pix (or the U-Net baseline) on paired MSI/H&E"
    )
    p.add_argument("--pairs", required=True, help="pairs YAML (see docs/training.md)")
    _add_pixel_args(p)
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
    _add_training_args(p)
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
    _add_training_args(p)
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

    p = sub.add_parser("register", help="register an MSI (or its synthetic H&E) to the real H&E")
    p.add_argument("--fixed", required=True, help="the real H&E image")
    p.add_argument(
        "--moving", required=True, help="an .imzML, a synthetic H&E, or an MSI image/stack"
    )
    p.add_argument(
        "--out",
        required=True,
        help="folder for transform.json/.h5, registered.ome.tif, report.json",
    )
    p.add_argument("--route", choices=["synthesis", "direct"], default="synthesis")
    p.add_argument(
        "--model", default="demo", help="checkpoint for the synthesis route (default: bundled demo)"
    )
    p.add_argument("--stages", default="rigid,affine", help="comma list of rigid, affine, bspline")
    p.add_argument("--rotation-search", type=int, default=12, help="start angles tried (0: none)")
    p.add_argument(
        "--mz", help="direct route: m/z whose ion images are resampled into registered.ome.tif"
    )
    p.add_argument("--landmarks-fixed", help="napari points CSV on the H&E (world um)")
    p.add_argument("--landmarks-moving", help="napari points CSV on the MSI (world um), same order")
    p.add_argument("--landmarks-use", choices=["fit", "hybrid", "eval"], default="eval")
    _add_pixel_args(p)
    p.add_argument(
        "--fixed-mask", help="H&E tissue mask image (non-zero = tissue; default: detected)"
    )
    p.add_argument(
        "--moving-mask", help="tissue mask on the moving image's grid (default: detected)"
    )
    p.add_argument(
        "--summary",
        choices=["tic", "pca"],
        default="tic",
        help="direct route: the MSI image registered (TIC or first principal component)",
    )
    p.add_argument(
        "--scale-range",
        type=float,
        default=1.25,
        help="the search tries scales in [1/R, R] around the pixel-size ratio (1: none)",
    )
    p.add_argument("--scale-steps", type=int, default=5, help="scales tried in that range")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the metric sampling (same seed: same result)"
    )
    p.add_argument(
        "--allow-failed",
        action="store_true",
        help="exit 0 even when the verdict is 'failed' (default: exit 3)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_register)
    declare(p, ("fixed", "moving", "model", "landmarks_fixed", "landmarks_moving"), "out", "folder")

    from ._cli_crossmodal import add_parsers

    add_parsers(sub)
    from ._cli_batch import add_parsers as add_batch_parsers
    from ._cli_interop import add_parsers as add_interop_parsers

    add_interop_parsers(sub)
    add_batch_parsers(sub)

    p = sub.add_parser("transform-points", help="map napari points CSV through a transform")
    p.add_argument("--transform", required=True, help="transform.json (or an ITK .tfm/.h5)")
    p.add_argument(
        "--points", required=True, help="napari points CSV in the moving frame (world um)"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--inverse", action="store_true", help="map fixed -> moving instead")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_transform_points)
    declare(p, ("transform", "points"), "out", "file")

    p = sub.add_parser("demo", help="the whole workflow on an embedded phantom, with report.html")
    p.add_argument("out_dir", nargs="?", default="demo_out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-peaks", type=int, default=50)
    p.add_argument("--model", default="demo", help="checkpoint (default: the bundled demo model)")
    p.add_argument(
        "--gui", action="store_true", help="open napari with the phantom and the widgets instead"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    declare(p, ("model",), "out_dir", "folder")

    p = sub.add_parser("gui", help="open napari with the phantom sample and the widgets docked")
    p.set_defaults(func=cmd_gui)
    declare(p)
    return ap


def main(argv: list[str] | None = None) -> int:
    from ._cli_policy import one_line, plan_for, sigterm_as_interrupt
    from ._limits import set_memory_budget

    ap = build_parser()
    args = ap.parse_args(argv)
    args.plan = None
    try:
        set_memory_budget(args.max_memory)
        with sigterm_as_interrupt():
            args.plan = plan_for(args)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"msi2hist {args.command}: interrupted; no output written", file=sys.stderr)
        return 130
    except Exception as e:  # one line, no traceback, unless --debug
        if args.debug:
            raise
        print(f"msi2hist {args.command}: error: {one_line(e, args.plan)}", file=sys.stderr)
        return 1
    finally:
        set_memory_budget(None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
