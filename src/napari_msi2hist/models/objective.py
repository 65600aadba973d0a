"""The training objective: losses, optimisers, the learning-rate schedule and one optimisation step.

pix2pix (seed 000) trains its generator on a conditional GAN loss plus ``lambda_l1`` * L1, the
discriminator on real and fake (MSI, H&E) pairs. The GAN loss is ``vanilla`` (BCE on logits),
``lsgan`` (least squares) or ``wgangp`` (Wasserstein, the critic with a gradient penalty), as seed
002 compares. Adam uses beta1 = 0.5 (WGAN-GP: 0, 0.9); the learning rate decays linearly to 0 from
``decay_start``. The baseline U-Net (``model="unet"``) has no discriminator and is trained with MSE.

:func:`napari_msi2hist.models.training.iter_train` runs the steps; this module holds what a step
computes, so that the loop there is only bookkeeping (seeds, checkpoints, validation, logging).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import TrainConfig


def unwrap(m: nn.Module) -> nn.Module:
    """Return the network inside a ``DistributedDataParallel`` wrapper (or the network itself).

    Parameters
    ----------
    m : nn.Module
        A network, wrapped or not.

    Returns
    -------
    nn.Module
        ``m.module`` when ``m`` wraps one, else ``m``.
    """
    return m.module if hasattr(m, "module") else m


def gan_loss(mode: str, pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Compute the GAN loss of the discriminator's output for one target.

    Parameters
    ----------
    mode : str
        ``vanilla`` (BCE on logits), ``lsgan`` (least squares) or ``wgangp`` (the critic's term).
    pred : torch.Tensor
        The discriminator's (or critic's) output.
    real : bool
        The target: real (True) or fake.

    Returns
    -------
    torch.Tensor
        The scalar loss.
    """
    if mode == "vanilla":
        target = torch.ones_like(pred) if real else torch.zeros_like(pred)
        return nn.functional.binary_cross_entropy_with_logits(pred, target)
    if mode == "lsgan":
        return ((pred - (1.0 if real else 0.0)) ** 2).mean()
    return -pred.mean() if real else pred.mean()  # wgangp critic terms


def gradient_penalty(d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Compute WGAN-GP's gradient penalty at random points between real and fake pairs.

    Parameters
    ----------
    d : nn.Module
        The critic (unwrapped).
    real, fake : torch.Tensor
        ``(B, C, Y, X)`` real and fake (MSI, H&E) pairs.

    Returns
    -------
    torch.Tensor
        The scalar penalty, the mean of ``(|grad| - 1)^2``.
    """
    a = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    inter = (a * real + (1 - a) * fake).requires_grad_(True)
    out = d(inter)
    (g,) = torch.autograd.grad(out.sum(), inter, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Build the learning-rate factor of a step: 1, then a linear decay to 0 from ``decay_start``.

    Parameters
    ----------
    cfg : TrainConfig
        ``decay_start`` (None: no decay) and ``max_steps``.

    Returns
    -------
    callable
        Step to factor, for ``torch.optim.lr_scheduler.LambdaLR``.
    """

    def f(step: int) -> float:
        if cfg.decay_start is None or step < cfg.decay_start:
            return 1.0
        span = max(1, cfg.max_steps - cfg.decay_start)
        return max(0.0, 1.0 - (step - cfg.decay_start) / span)

    return f


def make_optimisers(cfg: TrainConfig, g: nn.Module, d: nn.Module | None) -> tuple:
    """Build Adam optimisers and their learning-rate schedules for the generator and discriminator.

    Parameters
    ----------
    cfg : TrainConfig
        ``lr``, ``beta1``, ``gan_mode`` (WGAN-GP: betas 0, 0.9) and the schedule's fields.
    g : nn.Module
        The generator.
    d : nn.Module or None
        The discriminator (None for the baseline U-Net).

    Returns
    -------
    opt_g, opt_d, sched_g, sched_d
        The optimisers and ``LambdaLR`` schedules (``opt_d`` and ``sched_d`` None without ``d``).
    """
    betas = (cfg.beta1, 0.999) if cfg.gan_mode != "wgangp" else (0.0, 0.9)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=betas) if d is not None else None
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lr_lambda(cfg))
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lr_lambda(cfg)) if opt_d else None
    return opt_g, opt_d, sched_g, sched_d


def train_step(
    g: nn.Module,
    d: nn.Module | None,
    optimisers: tuple,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    use_amp: bool,
) -> dict[str, float]:
    """Take one optimisation step: the baseline's MSE, or pix2pix's discriminator then generator.

    pix2pix: the discriminator (critic) sees real and fake pairs in one forward (DDP needs one
    forward per backward) and steps; then the generator steps on the adversarial loss plus
    ``lambda_l1`` * L1 (the discriminator's gradients from that pass are cleared before its next
    step). Both schedules step.

    Parameters
    ----------
    g : nn.Module
        The generator (wrapped by DDP or not).
    d : nn.Module or None
        The discriminator, or None for the baseline U-Net.
    optimisers : tuple
        ``(opt_g, opt_d, sched_g, sched_d)`` from :func:`make_optimisers`.
    x, y : torch.Tensor
        The batch: MSI input and H&E target, on the networks' device.
    cfg : TrainConfig
        ``gan_mode``, ``gp_weight``, ``lambda_l1``.
    use_amp : bool
        Run the forwards under bfloat16 autocast.

    Returns
    -------
    dict
        The step's losses: ``mse``; or ``d``, ``g_adv`` and ``l1``.
    """
    opt_g, opt_d, sched_g, sched_d = optimisers
    device_type, amp_dtype = x.device.type, torch.bfloat16
    if d is None:  # U-Net baseline, MSE
        with torch.autocast(device_type, dtype=amp_dtype, enabled=use_amp):
            loss = nn.functional.mse_loss(g(x).float(), y)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        sched_g.step()
        return {"mse": float(loss.detach())}
    with torch.autocast(device_type, dtype=amp_dtype, enabled=use_amp):
        fake = g(x)
    opt_d.zero_grad(set_to_none=True)
    real_pair, fake_pair = torch.cat([x, y], 1), torch.cat([x, fake.detach()], 1)
    with torch.autocast(device_type, dtype=amp_dtype, enabled=use_amp):
        pred_real, pred_fake = d(torch.cat([real_pair, fake_pair], 0)).float().chunk(2)
    if cfg.gan_mode == "wgangp":
        loss_d = pred_fake.mean() - pred_real.mean()
        loss_d = loss_d + cfg.gp_weight * gradient_penalty(
            unwrap(d), real_pair.float(), fake_pair.float()
        )
    else:
        loss_d = 0.5 * (
            gan_loss(cfg.gan_mode, pred_real, True) + gan_loss(cfg.gan_mode, pred_fake, False)
        )
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=amp_dtype, enabled=use_amp):
        pred = d(torch.cat([x, fake], 1)).float()
    adv = gan_loss(cfg.gan_mode, pred, True)
    l1 = nn.functional.l1_loss(fake.float(), y)
    loss_g = adv + cfg.lambda_l1 * l1
    loss_g.backward()
    opt_g.step()
    sched_g.step()
    sched_d.step()
    return {"d": float(loss_d.detach()), "g_adv": float(adv.detach()), "l1": float(l1.detach())}
