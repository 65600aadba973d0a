"""pix2pix training (and the plain U-Net baseline) as a progress generator shared by CLI and widget.

Objective (seed 000 / pix2pix): conditional GAN loss (``vanilla`` BCE, ``lsgan`` least squares, or
``wgangp`` Wasserstein with gradient penalty, as seed 002 compares) + ``lambda_l1`` * L1, Adam with
beta1 = 0.5, defaults lambda 200 and lr 2e-5 as in seed 000, optional linear decay of the learning rate
to 0 from ``decay_start``. The baseline (``model="unet"``) is a plain U-Net trained with MSE on small
patches. The losses, optimisers and one step are in :mod:`napari_msi2hist.models.objective`.

Resumable and deterministic: every step seeds torch and the patch sampler from ``(seed, step)``, so a
run resumed from ``checkpoints/last.pt`` (weights, both optimisers, scheduler) reproduces the
uninterrupted run exactly. Checkpoints are written atomically every ``checkpoint_every`` steps, at the
end, and when cancelled: a crash loses at most ``checkpoint_every`` steps.

Multi-GPU / multi-node: launched by ``torchrun``, each process wraps the networks in
``DistributedDataParallel`` (gloo on CPU, NCCL on GPU); rank ``r`` samples its own patches from
``(seed, step, r)``; only rank 0 writes files.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._files import write_text_atomic
from ..config import TrainConfig
from ..progress import Cancelled, CancelToken, Progress
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .contract import ChannelContract
from .datasets import PairedSample, PatchSampler
from .inference import pick_device
from .networks import build_discriminator, build_generator, init_weights
from .objective import make_optimisers, train_step, unwrap
from .validation import validation_metrics


def generator_arch(cfg: TrainConfig, in_channels: int) -> dict:
    """Describe the generator a training config builds.

    Parameters
    ----------
    cfg : TrainConfig
        ``model`` (``pix2pix`` or ``unet``), width, depth, norm and dropout.
    in_channels : int
        MSI channels of the contract.

    Returns
    -------
    dict
        The architecture (``name`` and its arguments), stored in the checkpoint.
    """
    if cfg.model == "unet":
        return {
            "name": "baseline_unet",
            "in_channels": in_channels,
            "out_channels": 3,
            "base": cfg.baseline_base,
            "depth": 3,
        }
    return {
        "name": "unet_generator",
        "in_channels": in_channels,
        "out_channels": 3,
        "ngf": cfg.ngf,
        "depth": cfg.depth,
        "norm": cfg.norm,
        "dropout": cfg.dropout,
    }


def discriminator_arch(cfg: TrainConfig, in_channels: int) -> dict:
    # WGAN-GP's penalty is per sample: no batch norm in its critic
    """Describe the PatchGAN discriminator a pix2pix training config builds.

    It sees the MSI channels and the H&E (``in_channels + 3``); WGAN-GP's penalty is per sample, so
    its critic uses instance norm, never batch norm.

    Parameters
    ----------
    cfg : TrainConfig
        Width, layers, norm and GAN mode.
    in_channels : int
        MSI channels of the contract.

    Returns
    -------
    dict
        The architecture (``name`` and its arguments).
    """
    norm = "instance" if cfg.gan_mode == "wgangp" else cfg.norm
    return {
        "name": "patch",
        "in_channels": in_channels + 3,
        "ndf": cfg.ndf,
        "n_layers": cfg.d_layers,
        "norm": norm,
    }


def _dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _state_for_resume(d, opt_g, opt_d, sched_g, sched_d, step, d_arch) -> dict:
    return {
        "step": int(step),
        "discriminator": {k: v.detach().cpu() for k, v in d.state_dict().items()} if d else {},
        "d_arch": d_arch or {},
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict() if opt_d else {},
        "sched_g": sched_g.state_dict(),
        "sched_d": sched_d.state_dict() if sched_d else {},
    }


def _load_state(net: nn.Module, state: dict, source) -> None:
    """``load_state_dict`` whose error names the checkpoint file in one line."""
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{source}: weights do not fit the network ({' '.join(str(e).split())[:240]})"
        ) from None


def _config_of_arch(cfg: TrainConfig, arch: dict) -> TrainConfig:
    """Return ``cfg`` with the generator fields of the architecture actually built.

    (a base checkpoint's or a resumed run's may differ from the command-line defaults).
    """
    from dataclasses import replace

    if arch.get("name") == "unet_generator":
        keys = ("ngf", "depth", "norm", "dropout")
        return replace(cfg, **{k: arch[k] for k in keys if k in arch})
    if arch.get("name") == "baseline_unet" and "base" in arch:
        return replace(cfg, baseline_base=arch["base"])
    return cfg


def _clean_orphans(out: Path) -> None:
    """Remove temporary checkpoint/config files left by a run that was killed while writing."""
    for folder in (out, out / "checkpoints"):
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                if p.is_file() and p.name.split(".")[1] in ("last", "model", "config", "metrics"):
                    p.unlink(missing_ok=True)


def _truncate_log(log_path: Path, start: int) -> None:
    """Keep only the metrics of steps up to ``start`` (a resumed run logs the later ones again)."""
    if not log_path.is_file():
        return
    keep = []
    for line in log_path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= start:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_text_atomic(log_path, "".join(k + "\n" for k in keep))


def iter_train(
    train: list[PairedSample],
    val: list[PairedSample],
    contract: ChannelContract,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    base: str | os.PathLike | Checkpoint | None = None,
    cancel: CancelToken | None = None,
    data_info: dict | None = None,
    keep: dict | None = None,
    rehead: bool = False,
) -> Generator[Progress, None, Path]:
    """Train a generator (pix2pix or the baseline U-Net), resumably.

    Train; yields ``Progress(step, max_steps, "train", info={...losses, val metrics, preview})`` and
    returns the path of the final checkpoint (``OUT_DIR/model.pt``). ``keep``, if given, receives the
    trained networks (``keep["generator"]``), e.g. for comparing DDP ranks.

    With ``base`` the contract's m/z must be the base's, unless ``rehead``: then the base's body and
    decoder are kept and a new input layer is built for ``contract``'s channels (models/rehead.py);
    the first Progress then carries ``info["note"]`` saying so, and the checkpoint records it.

    Parameters
    ----------
    train, val : list of PairedSample
        Training and validation samples on the contract's grid.
    contract : ChannelContract
        The MSI channel contract the samples were made with (stored in the checkpoint).
    cfg : TrainConfig
        Model, losses, optimiser, steps, checkpoint and validation cadence, seed, device.
    out_dir : path-like
        The run folder: ``checkpoints/``, ``model.pt``, ``metrics.jsonl``.
    resume : bool
        Continue from ``out_dir``'s last checkpoint (same contract).
    base : path-like or Checkpoint, optional
        A checkpoint to fine-tune from.
    cancel : CancelToken, optional
        Checked every step; a cancelled run saves a checkpoint first, then raises
        :class:`~napari_msi2hist.progress.Cancelled`.
    data_info : dict, optional
        Recorded in the checkpoint (pairs file, sample names).
    keep : dict, optional
        Receives the trained networks (``keep["generator"]``).
    rehead : bool
        With ``base``: build a new input layer for ``contract``'s channels.

    Yields
    ------
    Progress
        One per step (``info``: the losses, and the validation metrics and preview when validated).

    Returns
    -------
    Path
        The final checkpoint, ``out_dir/model.pt``.

    Raises
    ------
    ValueError
        Nothing to resume, or a contract that differs from the run's or the base's (without
        ``rehead``).
    """
    rank, world = _dist_info()
    out = Path(out_dir)
    ck_dir = out / "checkpoints"
    if rank == 0:
        ck_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    in_ch = contract.n_channels
    arch = generator_arch(cfg, in_ch)
    d_arch = discriminator_arch(cfg, in_ch) if cfg.model == "pix2pix" else None
    torch.manual_seed(cfg.seed)
    g = build_generator(arch)
    init_weights(g)
    d = build_discriminator(d_arch) if d_arch else None
    if d is not None:
        init_weights(d)
    start = 0
    last = ck_dir / "last.pt"
    resume_state = None
    if rank == 0:
        _clean_orphans(out)
    if resume and not last.is_file():
        raise ValueError(f"{last}: no checkpoint to resume from (start the run without resume)")
    if resume:
        ck = load_checkpoint(last)
        if ck.contract != contract:
            raise ValueError(f"{last}: the run to resume used another channel contract")
        if ck.arch != arch:  # the run's own architecture (e.g. a fine-tuned base's), not cfg's
            arch = dict(ck.arch)
            g = build_generator(arch)
        resume_state = ck.extra_state
        if d is not None and resume_state.get("d_arch") and resume_state["d_arch"] != d_arch:
            from .checkpoint import check_arch

            check_arch(resume_state["d_arch"], last)
            d_arch = dict(resume_state["d_arch"])
            d = build_discriminator(d_arch)
        _load_state(g, ck.state_dict, last)
        if d is not None and resume_state.get("discriminator"):
            _load_state(d, resume_state["discriminator"], last)
        start = int(resume_state.get("step", 0))
    elif base is not None:
        ck = base if isinstance(base, Checkpoint) else load_checkpoint(base)
        new_head = ck.contract.mz != contract.mz
        if new_head and not rehead:
            raise ValueError(
                f"{ck.path}: base checkpoint has another m/z channel list than the data "
                f"({ck.contract.n_channels} vs {contract.n_channels} channels); re-head it "
                "(train --base with --n-peaks/--mz) to fine-tune it to new channels"
            )
        if ck.arch != arch:  # the base's architecture wins (ngf, depth, norm), with our channels
            arch = {**ck.arch, "in_channels": in_ch}
            torch.manual_seed(cfg.seed)
            g = build_generator(arch)
            init_weights(g)
        if new_head:
            from .rehead import load_reheaded, rehead_message

            skipped = load_reheaded(g, ck.state_dict, "generator")
            note = rehead_message(str(ck.path), ck.contract.n_channels, in_ch, skipped)
            data_info = {
                **(data_info or {"train": [s.name for s in train], "val": [s.name for s in val]}),
                "reheaded_from": str(ck.path),
                "rehead": note,
            }
        else:
            _load_state(
                g,
                {k: v.float() if v.is_floating_point() else v for k, v in ck.state_dict.items()},
                ck.path,
            )
        base_d = ck.extra_state.get("discriminator") if d is not None else None
        if base_d and ck.extra_state.get("d_arch") == d_arch:
            _load_state(d, base_d, ck.path)
        elif base_d and new_head:
            old_d_arch = ck.extra_state.get("d_arch") or {}
            if {**old_d_arch, "in_channels": d_arch["in_channels"]} == d_arch:
                load_reheaded(d, base_d, "discriminator")
    cfg = _config_of_arch(cfg, arch)
    g.to(device).train()
    if d is not None:
        d.to(device).train()
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        g = DDP(g, device_ids=ids)
        if d is not None:
            d = DDP(d, device_ids=ids)
    opt_g, opt_d, sched_g, sched_d = make_optimisers(cfg, g, d)
    if resume_state:
        opt_g.load_state_dict(resume_state["opt_g"])
        sched_g.load_state_dict(resume_state["sched_g"])
        if opt_d is not None:
            opt_d.load_state_dict(resume_state["opt_d"])
            sched_d.load_state_dict(resume_state["sched_d"])
    multiple = unwrap(g).multiple
    patch = cfg.baseline_patch if cfg.model == "unet" else cfg.patch
    if patch:
        patch = max(multiple, -(-patch // multiple) * multiple)
    sampler = PatchSampler(train, patch, multiple, contract.pad_value)
    use_amp = device.type == "cuda" and cfg.amp
    training_meta = {
        "config": asdict(cfg),
        "data": data_info or {"train": [s.name for s in train], "val": [s.name for s in val]},
    }
    log_path = out / "metrics.jsonl"
    if rank == 0:
        write_text_atomic(out / "config.yaml", cfg.to_yaml())
        _truncate_log(log_path, start)

    def save(step: int, final: bool = False) -> Path:
        meta = {**training_meta, "steps": step, "losses": last_losses, "seed": cfg.seed}
        extra = _state_for_resume(
            unwrap(d) if d is not None else None, opt_g, opt_d, sched_g, sched_d, step, d_arch
        )
        p = save_checkpoint(last, unwrap(g), arch, contract, meta, extra)
        if final:
            p = save_checkpoint(out / "model.pt", unwrap(g), arch, contract, meta)
        return p

    last_losses: dict = {}
    t0 = time.monotonic()
    step = start
    first = {"resumed_from": start} if start else {}
    if data_info and data_info.get("rehead") and not start:
        first["note"] = data_info["rehead"]
    yield Progress(step, cfg.max_steps, "train", first or None)
    try:
        while step < cfg.max_steps:
            if cancel is not None:
                cancel.check()
            torch.manual_seed((cfg.seed * 1_000_003 + step) * 131 + rank)
            rng = np.random.default_rng([cfg.seed, step, rank])
            xb, yb = sampler.batch(rng, cfg.batch_size)
            x = torch.from_numpy(xb).to(device)
            y = torch.from_numpy(yb).to(device)
            losses = train_step(g, d, (opt_g, opt_d, sched_g, sched_d), x, y, cfg, use_amp)
            step += 1
            last_losses = losses
            info = {
                "losses": losses,
                "lr": sched_g.get_last_lr()[0],
                "seconds": time.monotonic() - t0,
            }
            if rank == 0 and val and (step % cfg.val_every == 0 or step == cfg.max_steps):
                vm, preview = validation_metrics(
                    unwrap(g), val, multiple, contract.pad_value, device
                )
                info.update(vm)
                info["preview"] = preview
            if rank == 0:
                with open(log_path, "a") as fh:
                    fh.write(
                        json.dumps(
                            {
                                "step": step,
                                **losses,
                                **{k: v for k, v in info.items() if k.startswith("val_")},
                            }
                        )
                        + "\n"
                    )
                if step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
                    save(step)
            yield Progress(step, cfg.max_steps, "train", info)
    except (Cancelled, GeneratorExit):
        if rank == 0 and step > start:
            save(step)
        raise
    if world > 1:
        # DDP broadcasts rank 0's buffers (BatchNorm running statistics) before each forward; each
        # rank then updated its own copy in the last step. Make every rank hold rank 0's model.
        import torch.distributed as dist

        for net in (g, d):
            if net is not None:
                for buf in unwrap(net).buffers():
                    dist.broadcast(buf, 0)
    final = save(step, final=True) if rank == 0 else out / "model.pt"
    if keep is not None:  # hand the trained networks to the caller (each DDP rank has its own)
        keep["generator"] = unwrap(g)
        keep["discriminator"] = unwrap(d) if d is not None else None
    return final
