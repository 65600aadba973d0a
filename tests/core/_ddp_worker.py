"""Run by tests/core/test_training.py under torchrun: a few DDP steps, then each rank saves its weights."""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from napari_msi2hist.models.contract import ChannelContract
from napari_msi2hist.models.datasets import PairedSample
from napari_msi2hist.models.training import TrainConfig, iter_train
from napari_msi2hist.progress import run_to_end


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    samples = [
        PairedSample(
            f"s{i}",
            rng.standard_normal((3, 48, 48)).astype(np.float32),
            np.tanh(rng.standard_normal((3, 48, 48))).astype(np.float32),
            np.ones((48, 48), bool),
        )
        for i in range(3)
    ]
    contract = ChannelContract(mz=(1.0, 2.0, 3.0), scale=(1.0,) * 3, lo=(0.0,) * 3, hi=(1.0,) * 3)
    cfg = TrainConfig(
        max_steps=3,
        ngf=4,
        depth=4,
        ndf=4,
        patch=32,
        batch_size=2,
        checkpoint_every=100,
        val_every=100,
        lr=1e-3,
        device="cpu",
    )
    keep = {}
    run_to_end(iter_train(samples, [], contract, cfg, Path(out) / "run", keep=keep))
    sd = {f"g.{k}": v for k, v in keep["generator"].state_dict().items()}
    sd.update({f"d.{k}": v for k, v in keep["discriminator"].state_dict().items()})
    torch.save(sd, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
