"""Paired MSI / H&E training data.

A sample is the model input (``(C, Y, X)``, prepared by the channel contract on the MSI working grid)
and the target H&E resampled onto the same grid through the MSI-to-H&E alignment. Working in the MSI
frame is what inference does (the model is applied to an MSI before any registration), so training
and inference see the same geometry.

Alignment of a sample (pairs YAML ``align``): ``truth`` (a phantom's truth.json), ``transform`` (a
registration result, moving = MSI), ``landmarks`` (two napari points CSVs in world um, an affine is
fitted MSI -> H&E), or ``aligned`` (H&E world um equal MSI world um).

Pairs YAML::

    samples:
      - name: s1
        imzml: s1/msi.imzML
        he: s1/he.ome.tif
        align: {truth: s1/truth.json}    # or {transform: reg/transform.json} (from msi2hist register),
                                         # {landmarks_msi: a.csv, landmarks_he: b.csv}, or aligned
        split: train                           # or val, or test (default: train)
        label: s1/tumour_mask.tif              # optional (msi2hist classify): mask on the H&E grid

Paths are relative to the YAML's folder. Train/validation split is by sample, never by patch;
``test`` samples are held out from both and only used by ``msi2hist compare``. The file and its
alignments are read by :mod:`napari_msi2hist.models.pairs` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DEFAULT_TOLERANCE, Tolerance
from ..io.histology import read_histology, to_uint8_rgb
from ..io.imzml import ImzMLFile
from ..msi.ion_images import IonImages, ion_images
from ..msi.peaks import iter_top_peaks
from ..progress import run_to_end
from ..registration.alignment import Alignment
from ..registration.grid import GLASS_RGB, he_on_msi_grid  # noqa: F401  (re-exported)
from .contract import ChannelContract, prepare_input
from .pairs import alignment_of_entry, read_pairs_yaml  # noqa: F401  (re-exported)


@dataclass
class PairedSample:
    """One MSI/H&E pair on the working grid, as training sees it."""

    name: str
    x: np.ndarray  # (C, Y, X) float32, model input space
    y: np.ndarray  # (3, Y, X) float32 in [-1, 1]
    valid: np.ndarray  # (Y, X) bool: target pixels that came from the H&E image
    split: str = "train"


def make_sample(
    name: str,
    ions: IonImages,
    he_rgb: np.ndarray,
    he_px,
    alignment: Alignment,
    contract: ChannelContract,
    split: str = "train",
) -> PairedSample:
    """Pair ion images with their H&E on the contract's working grid.

    Parameters
    ----------
    name : str
        The sample's name.
    ions : IonImages
        Ion images matching the contract.
    he_rgb : ndarray
        ``(Y, X, 3)`` uint8 H&E.
    he_px : tuple of float
        Its pixel size (yx um).
    alignment : Alignment
        MSI -> H&E (:mod:`napari_msi2hist.registration.alignment`).
    contract : ChannelContract
        The model's contract.
    split : str
        ``train``, ``val`` or ``test``.

    Returns
    -------
    PairedSample
        The model input ``x``, the H&E ``y`` in [-1, 1] and its validity mask.
    """
    x = prepare_input(ions, contract)
    rgb, valid = he_on_msi_grid(he_rgb, he_px, alignment, x.shape[1:], contract.working_pixel_um)
    y = (np.moveaxis(rgb, -1, 0).astype(np.float32) / 127.5) - 1.0
    return PairedSample(name, x, y, valid, split)


def _msi_px(imz, e: dict) -> None:
    """Apply the entry's MSI pixel size (or refuse when neither it nor the file has one)."""
    from ..pixel_size import resolve_pixel_size

    imz.pixel_size_um = resolve_pixel_size(
        imz.pixel_size_um, e.get("moving_pixel_um"), "moving", e["imzml"]
    )


def contract_from_data(
    entries: list[dict],
    n_peaks: int = 50,
    mz: list[float] | None = None,
    tolerance=DEFAULT_TOLERANCE,
    norm: str = "tic",
    working_pixel_um: float = 10.0,
    padding: str = "white",
) -> tuple[ChannelContract, list[IonImages]]:
    """Build a channel contract from the training samples.

    The m/z are the top N of the first training sample's mean spectrum, unless given; the channel
    statistics come from all training samples' ion images.

    Parameters
    ----------
    entries : list of dict
        Pairs entries (all samples; ``split`` picks the training ones).
    n_peaks : int
        Peaks to pick when ``mz`` is None.
    mz : list of float, optional
        The m/z channels.
    tolerance : Tolerance
        Window half-width of the extraction.
    norm : str
        Per-spectrum normalisation of the extraction.
    working_pixel_um : float
        The model's working pixel.
    padding : str
        How the input beyond the tissue is padded (``white``, ...).

    Returns
    -------
    contract : ChannelContract
        With statistics.
    stacks : list of IonImages
        Every entry's ion images, in order (reused by :func:`load_samples`).
    """
    train = [e for e in entries if e["split"] == "train"] or entries
    if mz is None:
        with ImzMLFile(train[0]["imzml"]) as imz:
            _msi_px(imz, train[0])
            mz = run_to_end(iter_top_peaks(imz, n_peaks, norm)).tolist()
    c = ChannelContract(
        mz=tuple(float(m) for m in mz),
        tolerance_value=Tolerance.coerce(tolerance).value,
        tolerance_unit=Tolerance.coerce(tolerance).unit,
        spectrum_norm=norm,
        working_pixel_um=working_pixel_um,
        padding=padding,
    )
    stacks = []
    for e in entries:
        with ImzMLFile(e["imzml"]) as imz:
            _msi_px(imz, e)
            stacks.append(ion_images(imz, np.asarray(c.mz), tolerance=c.tolerance, norm=norm))
    tr = [s for s, e in zip(stacks, entries, strict=True) if e["split"] == "train"] or stacks
    return c.with_stats([s.stack for s in tr], [s.mask for s in tr]), stacks


def load_samples(
    entries: list[dict],
    contract: ChannelContract,
    stacks: list[IonImages] | None = None,
    check_overlap: bool = False,
) -> list[PairedSample]:
    """Load paired samples for pairs entries on a contract's grid.

    Parameters
    ----------
    entries : list of dict
        Pairs entries.
    contract : ChannelContract
        The model's contract.
    stacks : list of IonImages, optional
        Ion images already extracted, one per entry (from :func:`contract_from_data`); else
        extracted here.
    check_overlap : bool
        Refuse a pair whose MSI footprint misses the H&E tissue
        (:func:`~napari_msi2hist.models.overlap.check_entry_overlap`), on the files as read here,
        without reading them again.

    Returns
    -------
    list of PairedSample
        One per entry, in order.

    Raises
    ------
    MissingPixelSize
        An H&E or MSI without a pixel size (none given in the entry).
    PairOverlapError
        With ``check_overlap``: the first pair whose MSI footprint misses the H&E tissue.
    """
    from .overlap import check_entry_overlap

    out = []
    for i, e in enumerate(entries):
        if stacks is not None:
            ions = stacks[i]
        else:
            with ImzMLFile(e["imzml"]) as imz:
                _msi_px(imz, e)
                ions = ion_images(
                    imz,
                    np.asarray(contract.mz),
                    tolerance=contract.tolerance,
                    norm=contract.spectrum_norm,
                )
        he = read_histology(e["he"])
        rgb = to_uint8_rgb(np.asarray(he.levels[0])[..., :3])
        from ..pixel_size import resolve_pixel_size

        px = resolve_pixel_size(he.pixel_size_um, e.get("fixed_pixel_um"), "fixed", e["he"])
        sample = make_sample(
            e["name"],
            ions,
            rgb,
            px,
            alignment_of_entry(e["align"], Path(e["base"])),
            contract,
            e["split"],
        )
        if check_overlap:
            check_entry_overlap(e, sample, ions, he, contract)
        out.append(sample)
    return out


def split_by_sample(samples: list[PairedSample]) -> tuple[list[PairedSample], list[PairedSample]]:
    """Split samples into training and validation sets by sample (whole images), never by patch.

    Parameters
    ----------
    samples : list of PairedSample
        The samples, each with its ``split``.

    Returns
    -------
    train, val : list of PairedSample
        The ``train`` and ``val`` samples (``test`` ones are left out).

    Raises
    ------
    ValueError
        A sample name in both sets.
    """
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split == "val"]
    names_t, names_v = {s.name for s in train}, {s.name for s in val}
    if names_t & names_v:
        raise ValueError(f"samples in both training and validation: {sorted(names_t & names_v)}")
    return train, val


class PatchSampler:
    """Random crops of the samples with flips and 90-degree rotations.

    ``patch=0`` returns whole images (padded to the network's multiple). Deterministic from the
    ``rng`` it is given.
    """

    def __init__(self, samples: list[PairedSample], patch: int, multiple: int, pad_value: float):
        if not samples:
            raise ValueError("no training samples")
        self.samples = samples
        self.patch = patch
        self.multiple = multiple
        self.pad_value = pad_value

    def _pad(self, s: PairedSample, ny: int, nx: int):
        c, h, w = s.x.shape
        x = np.full((c, max(h, ny), max(w, nx)), self.pad_value, np.float32)
        y = np.full((3, max(h, ny), max(w, nx)), 1.0, np.float32)
        x[:, :h, :w], y[:, :h, :w] = s.x, s.y
        return x, y

    def batch(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw a batch of augmented crops (or whole images).

        Parameters
        ----------
        rng : numpy.random.Generator
            The source of randomness (same state, same batch).
        n : int
            Batch size.

        Returns
        -------
        x : ndarray
            ``(n, C, p, p)`` model inputs (whole images padded to the largest and to the multiple when
            ``patch`` is 0).
        y : ndarray
            ``(n, 3, p, p)`` H&E targets in [-1, 1] (padding white).
        """
        xs, ys = [], []
        for _ in range(n):
            s = self.samples[int(rng.integers(len(self.samples)))]
            if self.patch:
                p = self.patch
                x, y = self._pad(s, p, p)
                y0 = int(rng.integers(x.shape[1] - p + 1))
                x0 = int(rng.integers(x.shape[2] - p + 1))
                x, y = x[:, y0 : y0 + p, x0 : x0 + p], y[:, y0 : y0 + p, x0 : x0 + p]
            else:
                m = self.multiple
                h, w = s.x.shape[1:]
                x, y = self._pad(s, -(-h // m) * m, -(-w // m) * m)
            k = int(rng.integers(4))
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, :, ::-1]
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        if not self.patch:  # whole images of different sizes: pad to the largest
            hh = max(a.shape[1] for a in xs)
            ww = max(a.shape[2] for a in xs)
            xs = [
                np.pad(
                    a,
                    ((0, 0), (0, hh - a.shape[1]), (0, ww - a.shape[2])),
                    constant_values=self.pad_value,
                )
                for a in xs
            ]
            ys = [
                np.pad(a, ((0, 0), (0, hh - a.shape[1]), (0, ww - a.shape[2])), constant_values=1.0)
                for a in ys
            ]
        return np.stack(xs), np.stack(ys)
