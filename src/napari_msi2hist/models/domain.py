"""Is this MSI inside the input domain a model was trained on? Checked before every synthesis.

A pix2pix model sees only what its channel contract feeds it. On data from another chemistry it
gives plausible-looking but meaningless (often near-white) images, so every synthesis measures:

* **m/z coverage**: how many of the model's channels lie inside the file's acquired m/z range (a
  channel outside it is an all-zero input the model never saw), and how many carry any signal;
* **intensity statistics**: the checkpoint stores, per channel, the median positive intensity
  (``scale``) and the 1st/99th percentiles of the log-scaled values (``lo``/``hi``) measured on its
  training data (:meth:`ChannelContract.with_stats`). On in-domain data about 1 % of the scaled
  values fall above ``hi`` by construction; here we measure that fraction and the ratio of the data's
  median positive intensity to the training one.

Thresholds (documented in docs/own_data.md): a warning when a model channel lies outside the file's
m/z range, when more than 10 % of the channels carry no signal, when the median intensity ratio is
off by more than 10x, or when more than 8 % of the scaled values fall outside the training range (in-domain
phantoms: about 2 %; a phantom of another chemistry in the same m/z range: 11 %).
Callers print the warnings (CLI), show a banner (widget) and refuse under ``strict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .contract import ChannelContract, ContractMismatchError, match_channels, normalise_channels

MAX_EMPTY_FRACTION = 0.10
MAX_INTENSITY_RATIO = 10.0
MAX_OUTSIDE_FRACTION = 0.08
MAX_PIXELS = 200_000  # measured pixels the statistics are computed on (evenly subsampled beyond)


class InputDomainError(ContractMismatchError):
    """The MSI lies outside the model's input domain and the caller asked for strictness."""


@dataclass(frozen=True)
class DomainReport:
    """What :func:`check_input_domain` measured; ``warnings`` is empty when the data look in-domain."""

    n_channels: int
    n_in_range: int | None  # model channels inside the file's m/z range (None: range unknown)
    mz_range: tuple[float, float] | None
    n_empty: int  # model channels with no positive intensity in measured pixels
    intensity_ratio: float  # median over channels of data median / training median (positive)
    outside_fraction: float  # fraction of scaled measured values outside [-1, 1] (training ~0.01)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Tell whether the data look in-domain (no warnings)."""
        return not self.warnings

    def summary(self) -> str:
        """Summarise the report in one line.

        Returns
        -------
        str
            Model m/z inside the file's range, channels without signal, the intensity ratio to training
            and the fraction of values outside the training range.
        """
        cov = (
            f"{self.n_in_range}/{self.n_channels} model m/z inside the file's range "
            f"{self.mz_range[0]:.1f}-{self.mz_range[1]:.1f}"
            if self.n_in_range is not None and self.mz_range is not None
            else f"{self.n_channels} model m/z (file m/z range unknown)"
        )
        return (
            f"{cov}; {self.n_empty} without signal; intensity x{self.intensity_ratio:.2g} "
            f"of training; {100 * self.outside_fraction:.0f} % of values outside the training range"
        )


def check_input_domain(
    stack: np.ndarray,
    mask: np.ndarray,
    available_mz,
    contract: ChannelContract,
    mz_range: tuple[float, float] | None = None,
    source: str = "",
) -> DomainReport:
    """Compare ion images with the training statistics stored in a contract.

    The stack is ``(C, Y, X)`` with channels ``available_mz`` and measured pixels ``mask``.

    Parameters
    ----------
    stack, mask, available_mz
        The MSI's ion images, its measured-pixel mask and the m/z of each image.
    contract
        The model's channel contract, with statistics (``scale``/``lo``/``hi``).
    mz_range
        The file's acquired m/z range, if known (from the imzML).
    source
        Name of the data, used in the messages.

    Returns
    -------
    DomainReport
        The measurements and a warning per violated threshold.
    """
    idx = match_channels(contract, available_mz, source)
    pix = np.flatnonzero(np.asarray(mask, bool).ravel())
    if pix.size > MAX_PIXELS:  # statistics on an even subsample: bounded memory on large MSI
        pix = pix[np.linspace(0, pix.size - 1, MAX_PIXELS).astype(np.int64)]
    st = np.asarray(stack)
    x = st.reshape(st.shape[0], -1)[np.ix_(idx, pix)].astype(np.float64)
    n = contract.n_channels
    where = f"{source}: " if source else ""
    warns = []
    n_in = None
    if mz_range is not None:
        mz = np.asarray(contract.mz)
        inside = (mz >= mz_range[0]) & (mz <= mz_range[1])
        n_in = int(inside.sum())
        if n_in < n:
            warns.append(
                f"{where}only {n_in} of the model's {n} m/z lie inside the file's m/z range "
                f"{mz_range[0]:.1f}-{mz_range[1]:.1f}: the model was trained on other chemistry"
            )
    has = (x > 0).any(axis=1) if x.size else np.zeros(n, bool)
    n_empty = int((~has).sum())
    if n_empty > MAX_EMPTY_FRACTION * n:
        warns.append(f"{where}{n_empty} of the model's {n} channels carry no signal in this MSI")
    ratios = []
    for c in np.flatnonzero(has):
        pos = x[c][x[c] > 0]
        ratios.append(float(np.median(pos)) / max(contract.scale[c], 1e-30))
    ratio = float(np.median(ratios)) if ratios else 0.0
    if ratios and not (1 / MAX_INTENSITY_RATIO <= ratio <= MAX_INTENSITY_RATIO):
        warns.append(
            f"{where}intensities are x{ratio:.3g} those the model was trained on "
            f"(normalisation '{contract.spectrum_norm}'); another instrument or chemistry?"
        )
    if x.size:
        z = normalise_channels(x[:, :, None], contract)
        outside = float(np.mean(np.abs(z) > 1.0))
    else:
        outside = 1.0
    if outside > MAX_OUTSIDE_FRACTION:
        warns.append(
            f"{where}{100 * outside:.0f} % of the scaled input lies outside the range seen in "
            f"training (about 1 % there): the synthetic H&E cannot be trusted"
        )
    return DomainReport(n, n_in, mz_range, n_empty, ratio, outside, tuple(warns))
