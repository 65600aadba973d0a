"""Top-N peak picking on a (mean) spectrum, with a minimum separation between picked peaks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_N_PEAKS = 50  # seed 000 uses the top 50 peaks


@dataclass(frozen=True)
class PeakList:
    """Picked peaks, sorted by m/z."""

    mz: np.ndarray
    intensity: np.ndarray

    def __len__(self) -> int:
        return len(self.mz)


def local_maxima(intensity: np.ndarray) -> np.ndarray:
    """Find the local maxima of a spectrum.

    A maximum is strictly above its left neighbour, not below its right one, and positive; the end
    points are never maxima (except in a one-sample spectrum).

    Parameters
    ----------
    intensity : array_like
        ``(N,)`` intensities on an ascending m/z axis.

    Returns
    -------
    ndarray of int
        Indices of the maxima, ascending.
    """
    y = np.asarray(intensity, dtype=np.float64)
    if len(y) == 0:
        return np.zeros(0, np.int64)
    if len(y) == 1:
        return np.array([0])
    left = np.concatenate([[np.inf], y[:-1]])  # the end points are never peaks
    right = np.concatenate([y[1:], [np.inf]])
    return np.flatnonzero((y > left) & (y >= right) & (y > 0))


def pick_peaks(
    mz: np.ndarray,
    intensity: np.ndarray,
    n_peaks: int = DEFAULT_N_PEAKS,
    min_separation_ppm: float | None = 20.0,
    min_separation_da: float | None = None,
    window: int = 101,
) -> PeakList:
    """Pick the ``n_peaks`` most prominent local maxima of a spectrum.

    Greedily, by prominence, skipping any peak closer than the minimum separation (ppm of the
    stronger peak's m/z, or Da) to an already picked one. Peaks are ranked by topographic prominence
    within ``window`` samples (scipy.signal), so a slowly varying baseline or matrix background does
    not crowd out real peaks.

    Parameters
    ----------
    mz : array_like
        ``(N,)`` ascending m/z axis.
    intensity : array_like
        ``(N,)`` intensities (e.g. a mean spectrum).
    n_peaks : int
        How many peaks to pick (at least 1); fewer come back when the spectrum has fewer maxima.
    min_separation_ppm : float or None
        Minimum separation in ppm; None for none.
    min_separation_da : float or None
        Minimum separation in Da (used instead of ppm when given).
    window : int
        Window (samples) of the prominence computation.

    Returns
    -------
    PeakList
        The picked peaks, sorted by m/z; ``intensity`` is the apex height.

    Raises
    ------
    ValueError
        ``mz`` and ``intensity`` differ in shape, or ``n_peaks`` < 1.
    """
    from scipy.signal import peak_prominences

    mz = np.asarray(mz, dtype=np.float64)
    y = np.asarray(intensity, dtype=np.float64)
    if mz.shape != y.shape:
        raise ValueError("mz and intensity differ in shape")
    if n_peaks < 1:
        raise ValueError("n_peaks must be >= 1")
    cand = local_maxima(y)
    if len(cand):
        prom = peak_prominences(y, cand, wlen=max(3, window | 1))[0]
        cand = cand[np.argsort(-prom, kind="stable")]
    picked: list[int] = []
    sorted_mz = np.zeros(0)
    for i in cand.tolist():
        m = mz[i]
        sep = (
            min_separation_da
            if min_separation_da is not None
            else ((min_separation_ppm or 0.0) * 1e-6 * m)
        )
        if sep > 0 and len(sorted_mz):
            j = np.searchsorted(sorted_mz, m)
            near = [sorted_mz[k] for k in (j - 1, j) if 0 <= k < len(sorted_mz)]
            if any(abs(m - q) < sep for q in near):
                continue
        picked.append(i)
        sorted_mz = np.sort(mz[picked])
        if len(picked) >= n_peaks:
            break
    sel = np.sort(np.asarray(picked, dtype=np.int64))
    return PeakList(mz[sel], y[sel])


def parse_mz_list(text: str) -> np.ndarray:
    """Parse a list of m/z values typed as text.

    Parameters
    ----------
    text : str
        Values separated by commas, semicolons, spaces or newlines, e.g. ``"760.58, 782.57"``.

    Returns
    -------
    ndarray
        The values (float64), in the order given.

    Raises
    ------
    ValueError
        A value is not a number, is not positive, or there is none.
    """
    parts = [p for p in text.replace(";", ",").replace("\n", ",").replace(" ", ",").split(",") if p]
    try:
        vals = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"not a list of m/z values: {text!r}") from e
    if len(vals) == 0 or (vals <= 0).any():
        raise ValueError(f"m/z values must be positive numbers: {text!r}")
    return vals


def iter_top_peaks(imz, n_peaks: int = DEFAULT_N_PEAKS, norm: str = "tic", cancel=None):
    """Pick the top-N peaks of an imzML's mean spectrum (seed 000's peak selection).

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file.
    n_peaks : int
        How many peaks.
    norm : str
        Per-spectrum normalisation before averaging (``none``, ``tic``, ``rms``, ``median``).
    cancel : CancelToken, optional
        Checked between chunks of spectra; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        Chunks of spectra averaged (stage ``mean spectrum``).

    Returns
    -------
    ndarray
        The peaks' m/z, ascending.
    """
    from .spectra import iter_mean_spectrum

    ms = yield from iter_mean_spectrum(imz, norm=norm, cancel=cancel)
    return pick_peaks(ms.mz, ms.intensity, n_peaks=n_peaks).mz
