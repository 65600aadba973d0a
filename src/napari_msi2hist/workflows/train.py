"""The train / fine-tune job: pairs -> channel contract -> samples -> training run.

Shared by ``msi2hist train`` (pairs from a YAML file) and the Train widget (pairs from a file, or
one pair from open layers). Which contract a run uses is decided in one place
(:func:`contract_and_samples`):

* no base: a new contract from the data (top-N peaks or an explicit m/z list);
* ``base`` alone: the base's own m/z channels (the data must contain them);
* ``base`` with ``rehead``: the base's body and decoder, a new input layer for the data's peaks
  (its grid, padding, tolerance and normalisation stay the base's).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..models.checkpoint import Checkpoint, load_checkpoint
from ..models.training import iter_train
from ..progress import CancelToken, Progress

DEFAULT_N_PEAKS = 50  # seed 000


@dataclass(frozen=True)
class TrainJob:
    """What a training run needs beyond the optimiser settings (:class:`TrainConfig`).

    Parameters
    ----------
    out_dir : str
        The run folder (checkpoints/, model.pt, metrics.jsonl, config.yaml).
    cfg : TrainConfig
        Model, losses, optimiser, steps.
    base : str, optional
        Checkpoint to fine-tune from (``demo``: the bundled model).
    resume : bool
        Continue ``out_dir``'s own run from its last checkpoint.
    rehead : bool
        With ``base``: build a new input layer for the data's channels.
    n_peaks : int, optional
        Top-N peaks of a new contract (default 50).
    mz : tuple of float, optional
        Explicit m/z of a new contract instead of top-N.
    working_pixel_um, padding : float, str, optional
        Grid and padding of a new contract (default: the contract's defaults).
    """

    out_dir: str
    cfg: TrainConfig = TrainConfig()
    base: str | None = None
    resume: bool = False
    rehead: bool = False
    n_peaks: int | None = None
    mz: tuple[float, ...] | None = None
    working_pixel_um: float | None = None
    padding: str | None = None

    def __post_init__(self):
        if self.resume and self.base:
            raise ValueError("resume continues the run's own checkpoint; a base starts a new run")
        if self.rehead and not self.base:
            raise ValueError("re-heading needs a base model")

    @property
    def last_checkpoint(self) -> Path:
        """Where the run's resumable checkpoint is."""
        return Path(self.out_dir) / "checkpoints" / "last.pt"


def load_base(job: TrainJob) -> Checkpoint | None:
    """Load the checkpoint a run starts from: the run's own (resume), the base, or None.

    Parameters
    ----------
    job : TrainJob
        The run (its ``resume`` flag, output folder and ``base``).

    Returns
    -------
    Checkpoint or None
        None when the run starts from scratch.
    """
    if job.resume:
        if not job.last_checkpoint.is_file():
            raise ValueError(f"{job.last_checkpoint}: no checkpoint to resume")
        return load_checkpoint(job.last_checkpoint)
    return load_checkpoint(job.base) if job.base else None


def contract_and_samples(entries: list[dict], job: TrainJob, base: Checkpoint | None):
    """Build the run's channel contract and its paired samples from pairs entries.

    Parameters
    ----------
    entries : list of dict
        Pairs entries (``models.pairs.read_pairs_yaml``), with pixel sizes resolved.
    job : TrainJob
        The run: output folder, training settings, base checkpoint, re-head and resume flags.
    base : Checkpoint or None
        From :func:`load_base`.

    Returns
    -------
    contract : ChannelContract
    samples : list of PairedSample
    """
    from ..models.datasets import contract_from_data, load_samples
    from ..models.rehead import reheaded_contract_kwargs

    if base is not None and not job.rehead:
        # refuses unrelated pairs, on the files as loaded (each read once)
        samples = load_samples(entries, base.contract, check_overlap=True)
        return base.contract, samples
    if base is not None:
        kw = reheaded_contract_kwargs(base.contract)
    else:
        kw = {
            k: v
            for k, v in (("working_pixel_um", job.working_pixel_um), ("padding", job.padding))
            if v is not None
        }
    contract, stacks = contract_from_data(
        entries,
        n_peaks=job.n_peaks if job.n_peaks is not None else DEFAULT_N_PEAKS,
        mz=list(job.mz) if job.mz else None,
        **kw,
    )
    # refuses unrelated or misaligned pairs, on the files as loaded (each read once)
    samples = load_samples(entries, contract, stacks, check_overlap=True)
    return contract, samples


def sample_from_arrays(
    imzml: str | os.PathLike,
    he_rgb: np.ndarray,
    he_px: tuple[float, float],
    alignment,
    job: TrainJob,
    base: Checkpoint | None,
    msi_pixel_um: float | None = None,
):
    """One pair from an imzML and an H&E in memory (the viewer's layers), checked for overlap.

    Parameters
    ----------
    imzml : path
        The MSI.
    he_rgb : ndarray
        ``(Y, X, 3)`` uint8 H&E.
    he_px : tuple of float
        H&E pixel size (um).
    alignment : Alignment
        The MSI -> H&E alignment (:mod:`napari_msi2hist.registration.alignment`).
    job : TrainJob
        The run: output folder, training settings, base checkpoint, re-head and resume flags.
    base : Checkpoint or None
        The checkpoint fine-tuned from (:func:`load_base`); its contract is kept unless the run re-heads.
    msi_pixel_um : float, optional
        MSI pixel size (um) when the imzML has none, or to override it.

    Returns
    -------
    contract : ChannelContract
    train, val : list of PairedSample
        One pair; its validation is the pair itself.
    """
    from ..io.imzml import open_imzml
    from ..models.datasets import contract_from_data, make_sample
    from ..models.overlap import check_pair_overlap
    from ..models.rehead import reheaded_contract_kwargs
    from ..msi.ion_images import ion_images
    from ..pixel_size import resolve_pixel_size
    from ..registration.alignment import require_alignment

    require_alignment(alignment)  # before the ion images are extracted
    entry = {"name": Path(imzml).stem, "imzml": str(imzml), "he": "", "split": "train"}
    entry["moving_pixel_um"] = msi_pixel_um
    if base is not None and not job.rehead:
        contract = base.contract
        with open_imzml(imzml) as imz:
            imz.pixel_size_um = resolve_pixel_size(imz.pixel_size_um, msi_pixel_um, "moving", imzml)
            ions = ion_images(
                imz,
                np.asarray(contract.mz),
                tolerance=contract.tolerance,
                norm=contract.spectrum_norm,
            )
    else:
        kw = reheaded_contract_kwargs(base.contract) if base is not None else {}
        n = job.n_peaks if job.n_peaks is not None else DEFAULT_N_PEAKS
        contract, stacks = contract_from_data([entry], n_peaks=n, **kw)
        ions = stacks[0]
    s = make_sample(entry["name"], ions, he_rgb, he_px, alignment, contract)
    check_pair_overlap(s, ions.mask, ions.pixel_size_um, contract, he_rgb, he_px)
    return contract, [s], [replace(s, split="val")]


def iter_train_job(
    train: list,
    val: list,
    contract,
    job: TrainJob,
    base: Checkpoint | None,
    data_info: dict | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, Path]:
    """Train (or fine-tune, or resume) and return the final checkpoint's path.

    Parameters
    ----------
    train, val : list of PairedSample
        Training and validation samples (:func:`contract_and_samples`).
    contract : ChannelContract
        The MSI channel contract the samples were made with.
    job : TrainJob
        The run: output folder, training settings, base checkpoint, re-head and resume flags.
    base : Checkpoint or None
        From :func:`load_base` (ignored when resuming: the run's own checkpoint is used).
    data_info : dict, optional
        Recorded in the checkpoint (pairs file, sample names).
    cancel : CancelToken, optional
        A cancelled run saves a checkpoint first.

    Yields
    ------
    Progress
        One per training step (``info``: the losses), and per validation.

    Returns
    -------
    Path
        ``out_dir/model.pt``.
    """
    return (
        yield from iter_train(
            train,
            val,
            contract,
            job.cfg,
            job.out_dir,
            resume=job.resume,
            base=None if job.resume else base,
            data_info=data_info,
            cancel=cancel,
            rehead=job.rehead and base is not None,
        )
    )
