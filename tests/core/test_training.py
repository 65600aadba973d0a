"""Training: determinism across resume, cancel, DDP with two gloo processes, GAN modes, CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_msi2hist.models.checkpoint import load_checkpoint
from napari_msi2hist.models.contract import ChannelContract
from napari_msi2hist.models.datasets import PairedSample, PatchSampler, split_by_sample
from napari_msi2hist.models.training import TrainConfig, iter_train
from napari_msi2hist.progress import Cancelled, CancelToken, run_to_end


def _samples(n=3, size=48, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.standard_normal((3, size, size)).astype(np.float32)
        y = np.tanh(np.stack([x[0] + x[1], x[1] - x[2], x[2]])).astype(
            np.float32
        )  # learnable mapping
        out.append(
            PairedSample(
                f"s{i}", x, y, np.ones((size, size), bool), "val" if i == n - 1 else "train"
            )
        )
    return out


CONTRACT = ChannelContract(mz=(1.0, 2.0, 3.0), scale=(1.0,) * 3, lo=(0.0,) * 3, hi=(1.0,) * 3)
CFG = TrainConfig(
    max_steps=6,
    ngf=4,
    depth=4,
    ndf=4,
    patch=32,
    batch_size=2,
    checkpoint_every=2,
    val_every=3,
    lr=1e-3,
    device="cpu",
    seed=3,
)


def _weights(path):
    return load_checkpoint(path).state_dict


def test_resume_reproduces_uninterrupted_run(tmp_path):
    train, val = split_by_sample(_samples())
    full = run_to_end(iter_train(train, val, CONTRACT, CFG, tmp_path / "a"))
    # interrupted after 3 steps (a cancel saves the state), then resumed to the end
    tok = CancelToken()
    gen = iter_train(train, val, CONTRACT, CFG, tmp_path / "b", cancel=tok)
    for p in gen:
        if p.done == 3:
            tok.cancel()
            with pytest.raises(Cancelled):
                next(gen)
            break
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt").extra_state["step"] == 3
    resumed = run_to_end(iter_train(train, val, CONTRACT, CFG, tmp_path / "b", resume=True))
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the metrics log covers every step once per run segment
    steps = [
        json.loads(ln)["step"] for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_crash_loses_at_most_checkpoint_every_steps(tmp_path):
    train, val = split_by_sample(_samples())
    gen = iter_train(train, val, CONTRACT, CFG, tmp_path)
    for p in gen:
        if p.done == 5:
            break  # the process "dies" here: no cancel, no save
    del gen
    step = load_checkpoint(tmp_path / "checkpoints" / "last.pt").extra_state["step"]
    assert 5 - step <= CFG.checkpoint_every


@pytest.mark.parametrize("mode", ["vanilla", "lsgan", "wgangp"])
def test_gan_modes_reduce_l1(tmp_path, mode):
    train, val = split_by_sample(_samples())
    cfg = TrainConfig(
        **{
            **CFG.__dict__,
            "gan_mode": mode,
            "max_steps": 30,
            "checkpoint_every": 100,
            "val_every": 100,
            "lambda_l1": 100.0,
        }
    )
    l1 = []
    run_to_end(
        iter_train(train, val, CONTRACT, cfg, tmp_path),
        lambda p: l1.append(p.info["losses"]["l1"]) if p.info and "losses" in p.info else None,
    )
    assert all(np.isfinite(l1))
    assert np.mean(l1[-5:]) < np.mean(l1[:5])


def test_baseline_unet_mse_and_lr_decay(tmp_path):
    train, val = split_by_sample(_samples())
    cfg = TrainConfig(
        **{
            **CFG.__dict__,
            "model": "unet",
            "baseline_base": 4,
            "baseline_patch": 16,
            "max_steps": 10,
            "decay_start": 5,
            "checkpoint_every": 100,
        }
    )
    lrs = []
    path = run_to_end(
        iter_train(train, val, CONTRACT, cfg, tmp_path),
        lambda p: lrs.append(p.info["lr"]) if p.info and "lr" in p.info else None,
    )
    assert load_checkpoint(path).arch["name"] == "baseline_unet"
    assert lrs[:4] == [cfg.lr] * 4
    assert lrs[-1] == pytest.approx(0.0) and lrs[6] == pytest.approx(cfg.lr * 0.6)


def test_split_is_by_sample_never_by_patch():
    s = _samples(4)
    train, val = split_by_sample(s)
    assert {x.name for x in train}.isdisjoint({x.name for x in val})
    s[0].name = s[3].name  # the same sample named in both sets
    with pytest.raises(ValueError, match="both training and validation"):
        split_by_sample(s)
    sampler = PatchSampler(train, 16, 16, 1.0)
    xb, yb = sampler.batch(np.random.default_rng(0), 8)
    assert xb.shape == (8, 3, 16, 16) and yb.shape == (8, 3, 16, 16)
    # every patch comes from a training image (not the validation one)
    val_x = val[0].x
    for patch in xb:
        assert not any(
            np.allclose(patch[:, :2, :2], val_x[:, i : i + 2, j : j + 2])
            for i in range(0, 46, 15)
            for j in range(0, 46, 15)
        )


def test_fine_tune_refuses_other_channels(tmp_path):
    train, val = split_by_sample(_samples())
    base = run_to_end(iter_train(train, val, CONTRACT, CFG, tmp_path / "a"))
    other = ChannelContract(mz=(5.0, 6.0, 7.0), scale=(1.0,) * 3, lo=(0.0,) * 3, hi=(1.0,) * 3)
    with pytest.raises(ValueError, match="another m/z channel list"):
        run_to_end(iter_train(train, val, other, CFG, tmp_path / "b", base=base))
    # same channels: fine-tuning starts from the base weights
    cfg = TrainConfig(**{**CFG.__dict__, "max_steps": 1, "lr": 0.0})
    tuned = run_to_end(iter_train(train, val, CONTRACT, cfg, tmp_path / "c", base=base))
    a, b = _weights(base), _weights(tuned)
    assert all(torch.equal(a[k], b[k]) for k in a if "running" not in k and "num_batches" not in k)


@pytest.mark.slow
def test_ddp_two_gloo_processes_hold_identical_weights(tmp_path):
    worker = Path(__file__).with_name("_ddp_worker.py")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(worker),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and they did train: weights differ from a fresh initialisation with the same seed
    assert (tmp_path / "run" / "model.pt").is_file() and not (tmp_path / "run" / "rank1").exists()


def test_train_and_evaluate_cli(tmp_path, phantom_entries, capsys):
    import yaml

    from napari_msi2hist.cli import main

    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(
        yaml.safe_dump(
            {
                "samples": [
                    {
                        "name": e["name"],
                        "imzml": e["imzml"],
                        "he": e["he"],
                        "align": e["align"],
                        "split": e["split"],
                    }
                    for e in phantom_entries
                ]
            }
        )
    )
    out = tmp_path / "run"
    args = [
        "train",
        "--pairs",
        str(pairs),
        "--out",
        str(out),
        "--max-steps",
        "4",
        "--ngf",
        "4",
        "--depth",
        "4",
        "--ndf",
        "4",
        "--patch",
        "32",
        "--batch-size",
        "2",
        "--n-peaks",
        "8",
        "--checkpoint-every",
        "2",
        "--quiet",
    ]
    assert main(args) == 0
    assert {p.name for p in out.iterdir()} >= {
        "model.pt",
        "metrics.jsonl",
        "config.yaml",
        "checkpoints",
    }
    ck = load_checkpoint(out / "model.pt")
    assert ck.contract.n_channels == 8 and ck.training["steps"] == 4
    assert main(args) == 1  # a second run over the first is refused
    assert main(args[:-1] + ["--max-steps", "6", "--resume", "--quiet"]) == 0
    assert load_checkpoint(out / "model.pt").training["steps"] == 6
    # evaluate: identical images score perfectly
    capsys.readouterr()
    he = phantom_entries[0]["he"]
    assert main(["evaluate", "--pred", he, "--truth", he, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (
        set(d) == {"mi", "nmi", "ssim", "psnr"}
        and d["ssim"] == pytest.approx(1.0)
        and d["nmi"] == pytest.approx(2.0)
    )


def test_pairs_file_with_a_registration_transform(tmp_path, phantom_entries):
    """A pairs file can align a sample by a transform from msi2hist register (moving = MSI)."""
    import yaml

    from napari_msi2hist.models.datasets import contract_from_data, load_samples, read_pairs_yaml
    from napari_msi2hist.registration.transforms import Transform
    from napari_msi2hist.registration.truth import load_truth

    e = phantom_entries[0]
    truth = load_truth(e["align"]["truth"])
    m = np.eye(3)
    m[:2, :2], m[:2, 2] = truth.matrix_yx, truth.offset_yx_um  # the truth's linear part
    Transform.from_moving_to_fixed_matrix(m).save(tmp_path / "t.json")
    (tmp_path / "pairs.yaml").write_text(
        yaml.safe_dump(
            {
                "samples": [
                    {
                        "name": "a",
                        "imzml": e["imzml"],
                        "he": e["he"],
                        "align": {"transform": "t.json"},
                    },
                    {
                        "name": "b",
                        "imzml": e["imzml"],
                        "he": e["he"],
                        "align": {"truth": e["align"]["truth"]},
                    },
                ]
            }
        )
    )
    entries = read_pairs_yaml(tmp_path / "pairs.yaml")
    contract, stacks = contract_from_data(entries, n_peaks=5)
    a, b = load_samples(entries, contract, stacks)
    assert (
        np.abs(a.y - b.y)[:, a.valid & b.valid].mean() < 0.15
    )  # differ only by the small deformation
