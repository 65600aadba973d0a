"""Mean spectrum on a common m/z axis and per-spectrum normalisation factors.

Normalisation divides each spectrum by one factor: ``tic`` (sum of intensities), ``rms`` (root mean
square) or ``median`` (median intensity of the stored values). Normalised intensities are ratios
(e.g. fraction of the TIC); no global rescaling is applied, so eager and lazy results agree.
Spectra whose factor is 0 are left at 0.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from .._limits import check_allocation
from ..io.imzml import ImzMLFile, ImzMLFormatError, ImzMLNonFiniteError
from ..progress import CancelToken, Progress, run_to_end
from ._chunks import DEFAULT_CHUNK_BYTES, FlatChunk, iter_dense_chunks, iter_flat_chunks

NORMALISATIONS = ("none", "tic", "rms", "median")


def check_norm(norm: str) -> str:
    """Check a normalisation name.

    Parameters
    ----------
    norm : str or None
        ``none``, ``tic``, ``rms`` or ``median`` (any case); None or empty means ``none``.

    Returns
    -------
    str
        The name in lower case.

    Raises
    ------
    ValueError
        Another name.
    """
    norm = (norm or "none").lower()
    if norm not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, not {norm!r}")
    return norm


def dense_factors(block: np.ndarray, norm: str) -> np.ndarray | None:
    """Compute the normalisation factor of every row of a dense block of spectra.

    Parameters
    ----------
    block : ndarray
        ``(n, k)`` intensities, one spectrum a row, on a shared m/z axis.
    norm : str
        A checked normalisation name (:func:`check_norm`).

    Returns
    -------
    ndarray or None
        ``(n,)`` float64 factors (TIC, RMS or median of each row), or None for ``none``.
    """
    if norm == "none":
        return None
    if norm == "tic":
        return block.sum(axis=1, dtype=np.float64)
    if norm == "rms":
        b = block.astype(np.float64, copy=False)
        return np.sqrt(np.einsum("ij,ij->i", b, b) / max(1, block.shape[1]))
    return np.median(block, axis=1).astype(np.float64)


def flat_factors(chunk: FlatChunk, norm: str) -> np.ndarray | None:
    """Compute the normalisation factor of every spectrum of a processed chunk.

    Vectorised over the chunk's segments (one segment a spectrum); the median of a segment is that
    of its stored values.

    Parameters
    ----------
    chunk : FlatChunk
        Concatenated spectra with their segment ids and lengths.
    norm : str
        A checked normalisation name (:func:`check_norm`).

    Returns
    -------
    ndarray or None
        ``(n,)`` float64 factors, one per spectrum of the chunk, or None for ``none``.
    """
    if norm == "none":
        return None
    n = len(chunk.index)
    seg = chunk.segment_ids
    w = chunk.intensity.astype(np.float64)
    if norm == "tic":
        return np.bincount(seg, weights=w, minlength=n)
    if norm == "rms":
        s2 = np.bincount(seg, weights=w * w, minlength=n)
        return np.sqrt(s2 / np.maximum(chunk.lengths, 1))
    # median: sort values within each segment, then pick the middle element(s)
    order = np.lexsort((w, seg))
    ws = w[order]
    starts = np.concatenate([[0], np.cumsum(chunk.lengths)[:-1]])
    ln = chunk.lengths
    med = np.zeros(n)
    ok = ln > 0
    lo = starts[ok] + (ln[ok] - 1) // 2
    hi = starts[ok] + ln[ok] // 2
    med[ok] = 0.5 * (ws[lo] + ws[hi])
    return med


def safe_divide_rows(values: np.ndarray, factors: np.ndarray | None) -> np.ndarray:
    """Divide row j of ``values`` by ``factors[j]``; rows with a zero factor become 0.

    Parameters
    ----------
    values : ndarray
        ``(n, k)`` values.
    factors : ndarray or None
        ``(n,)`` factors; None leaves ``values`` as they are.

    Returns
    -------
    ndarray
        The divided values (``values`` itself when ``factors`` is None).
    """
    if factors is None:
        return values
    f = np.where(factors > 0, factors, np.inf)
    return values / f[:, None]


def common_mz_axis(mz_min: float, mz_max: float, resolution_ppm: float = 5.0) -> np.ndarray:
    """Build a log-spaced m/z axis with a constant relative bin width.

    Parameters
    ----------
    mz_min, mz_max : float
        The range (0 < ``mz_min`` < ``mz_max``).
    resolution_ppm : float
        Relative bin width in ppm.

    Returns
    -------
    ndarray
        Bin centres from ``mz_min``, each ``1 + resolution_ppm * 1e-6`` times the previous, up to at
        least ``mz_max``.

    Raises
    ------
    ValueError
        An invalid range.
    """
    if not (mz_max > mz_min > 0):
        raise ValueError(f"invalid m/z range {mz_min}..{mz_max}")
    step = np.log1p(resolution_ppm * 1e-6)
    n = int(np.ceil(np.log(mz_max / mz_min) / step)) + 1
    return mz_min * np.exp(np.arange(n) * step)


def rebin_linear(
    axis: np.ndarray,
    mz: np.ndarray,
    intensity: np.ndarray,
    seg: np.ndarray | None = None,
    n_seg: int = 1,
) -> np.ndarray:
    """Rebin values onto an axis by linear interpolation, conserving their total.

    Each value is split between its two neighbouring bins of ``axis`` in proportion to its distance;
    values outside the axis are dropped.

    Parameters
    ----------
    axis : ndarray
        ``(B,)`` ascending bin centres.
    mz : ndarray
        ``(N,)`` m/z of the values.
    intensity : ndarray
        ``(N,)`` the values.
    seg : ndarray of int, optional
        ``(N,)`` the segment (spectrum) each value belongs to; all in one when None.
    n_seg : int
        Number of segments.

    Returns
    -------
    ndarray
        ``(n_seg, B)`` float64 rebinned intensities.
    """
    nb = len(axis)
    f = np.interp(mz, axis, np.arange(nb, dtype=np.float64))
    i0 = np.clip(np.floor(f).astype(np.int64), 0, nb - 1)
    w1 = f - i0
    i1 = np.minimum(i0 + 1, nb - 1)
    inside = (mz >= axis[0]) & (mz <= axis[-1])
    v = intensity.astype(np.float64) * inside
    s = np.zeros(len(mz), np.int64) if seg is None else seg
    out = np.bincount(s * nb + i0, weights=v * (1 - w1), minlength=n_seg * nb)
    out += np.bincount(s * nb + i1, weights=v * w1, minlength=n_seg * nb)
    return out.reshape(n_seg, nb)


def native_axis_step(imz: ImzMLFile, n_sample: int = 16) -> tuple[str, float]:
    """Find how an imzML's profile spectra are sampled.

    From up to ``n_sample`` spectra spread over the file: ``("da", step)`` when the spacing is more
    constant in Da (e.g. TOF-like linear axes), else ``("ppm", step)`` (at least 0.5 ppm); ``("ppm",
    5)`` for centroid data or spectra too short to tell.

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file.
    n_sample : int
        How many spectra to look at.

    Returns
    -------
    tuple of (str, float)
        The unit (``da`` or ``ppm``) and the median step.
    """
    if imz.spectrum_type == "centroid":
        return "ppm", 5.0
    idx = np.unique(np.linspace(0, imz.n_spectra - 1, min(n_sample, imz.n_spectra)).astype(int))
    da, rel = [], []
    for i in idx:
        mz, _ = imz.getspectrum(i, check_finite=False)
        mz = np.sort(mz.astype(np.float64))
        mz = mz[np.isfinite(mz)]
        if len(mz) > 2:
            d = np.diff(mz)
            da.append(d)
            rel.append(d / mz[1:])
    if not da:
        return "ppm", 5.0
    da, rel = np.concatenate(da), np.concatenate(rel)

    def spread(v):
        q1, q9 = np.quantile(v, [0.1, 0.9])
        return (q9 - q1) / max(np.median(v), 1e-12)

    if spread(da) <= spread(rel):
        return "da", float(np.median(da))
    return "ppm", float(max(0.5, 1e6 * np.median(rel)))


@dataclass(frozen=True)
class MeanSpectrum:
    """A mean spectrum: ``intensity`` on the ``mz`` axis over ``n_spectra`` spectra (``rebinned``: put on a common axis first)."""

    mz: np.ndarray
    intensity: np.ndarray
    n_spectra: int
    norm: str
    rebinned: bool


def iter_mean_spectrum(
    imz: ImzMLFile,
    norm: str = "none",
    resolution_ppm: float | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, MeanSpectrum]:
    """Compute the mean spectrum of an imzML, chunk by chunk.

    Continuous files: the exact mean on their own axis. Processed files: the mean after
    interpolation rebinning (:func:`rebin_linear`) onto a common axis of ``resolution_ppm``
    log-spaced bins (default: the data's own sampling for profile spectra, linear in Da or in ppm,
    whichever is more constant, so that bins are never finer than the data and no comb of empty bins
    appears; 5 ppm for centroid spectra). Only the first spectrum at each pixel counts.

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file.
    norm : str
        Per-spectrum normalisation before averaging (``none``, ``tic``, ``rms``, ``median``).
    resolution_ppm : float, optional
        Bin width of the common axis for processed files (default: see above).
    chunk_bytes : int
        Memory per chunk of spectra read.
    cancel : CancelToken, optional
        Checked between chunks; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        Spectra averaged so far (stage ``mean spectrum``).

    Returns
    -------
    MeanSpectrum
        The mean intensity on its m/z axis.
    """
    norm = check_norm(norm)
    n = imz.n_spectra - imz.n_duplicates  # the first spectrum at each pixel
    done = 0
    if imz.shared_mz_axis:
        axis = imz.mz_axis().astype(np.float64)
        acc = np.zeros(len(axis))
        for ch in iter_dense_chunks(imz, chunk_bytes=chunk_bytes):
            if cancel is not None:
                cancel.check()
            f = dense_factors(ch.block, norm)
            if f is None:
                acc += ch.block.sum(axis=0, dtype=np.float64)
            else:
                acc += (safe_divide_rows(ch.block.astype(np.float64), f)).sum(axis=0)
            done += len(ch.index)
            yield Progress(done, n, "mean spectrum")
        rebinned = False
    else:
        lo, hi = imz.mz_range
        if resolution_ppm is None:
            kind, step = native_axis_step(imz)
        else:
            kind, step = "ppm", resolution_ppm
        if not (np.isfinite(lo) and np.isfinite(hi) and hi >= lo > 0):
            raise ImzMLFormatError(
                f"{imz.path}: m/z range {lo:g}..{hi:g} is not a positive interval; "
                "no mean spectrum can be built"
            )
        if not (step > 0 and np.isfinite(step)):
            kind, step = "ppm", 5.0
        n_bins = (
            (hi - lo) / step + 1
            if kind == "da"
            else np.log(max(hi, 1e-300) / max(lo, 1e-300)) / np.log1p(step * 1e-6) + 1
        )
        check_allocation(
            8.0 * n_bins if np.isfinite(n_bins) else float("inf"),
            f"a mean spectrum over m/z {lo:g}..{hi:g}",
            imz.path,
        )
        if hi == lo:
            axis = np.array([lo])
        elif kind == "da":
            axis = lo + step * np.arange(int(np.ceil((hi - lo) / step)) + 1)
        else:
            axis = common_mz_axis(lo, hi, step)
        acc = np.zeros(len(axis))
        for ch in iter_flat_chunks(imz, chunk_bytes=chunk_bytes):
            if cancel is not None:
                cancel.check()
            f = flat_factors(ch, norm)
            w = ch.intensity.astype(np.float64)
            if f is not None:
                ff = np.where(f > 0, f, np.inf)
                w = w / np.repeat(ff, ch.lengths)
            acc += rebin_linear(axis, ch.mz, w)[0]
            done += len(ch.index)
            yield Progress(done, n, "mean spectrum")
        rebinned = True
    mean = acc / max(1, n)
    if not np.isfinite(mean).all():
        raise ImzMLNonFiniteError(f"{imz.path}: NaN or infinite intensities in the spectra")
    return MeanSpectrum(axis, mean, n, norm, rebinned)


def mean_spectrum(imz: ImzMLFile, **kw) -> MeanSpectrum:
    """Compute the mean spectrum: :func:`iter_mean_spectrum` run to the end.

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file.
    **kw
        Options of :func:`iter_mean_spectrum`.

    Returns
    -------
    MeanSpectrum
        The mean spectrum.
    """
    return run_to_end(iter_mean_spectrum(imz, **kw))


__all__ = [
    "NORMALISATIONS",
    "MeanSpectrum",
    "common_mz_axis",
    "dense_factors",
    "flat_factors",
    "iter_mean_spectrum",
    "mean_spectrum",
    "rebin_linear",
    "safe_divide_rows",
]
