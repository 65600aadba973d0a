"""Ion images for many m/z at once: a ``(C, Y, X)`` float32 stack, vectorised over spectra.

Channel ``c`` at pixel ``(row, col)`` is the sum of the intensities whose m/z lies within the
tolerance of ``mz[c]``, bounds inclusive: ``mz[c] - tol <= m <= mz[c] + tol`` (``tol`` in Da, or
``tol_ppm * 1e-6 * mz[c]``). Unmeasured pixels are 0 and ``mask`` tells which pixels were measured.

Continuous files are read in large strided chunks and the needed columns are gathered and summed with
``np.add.reduceat``; processed files are read chunk by chunk as raw bytes and each window's index range
in every spectrum is found by a batched binary search on the sorted m/z arrays, so only the values
inside windows are gathered (the window-sum kernels are in :mod:`._window_sums`). Memory is bounded
by the output stack plus one chunk (``chunk_bytes``), whatever the file size.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from .._limits import check_allocation
from ..config import DEFAULT_TOLERANCE, Tolerance
from ..io.imzml import ImzMLFile, ImzMLNonFiniteError
from ..progress import CancelToken, Progress, run_to_end
from ._chunks import (
    DEFAULT_CHUNK_BYTES,
    RawChunk,
    iter_dense_chunks,
    iter_flat_chunks,
    iter_raw_chunks,
)
from ._window_sums import DensePlan, processed_sums
from .spectra import check_norm, dense_factors, flat_factors

MAX_QUERIES_PER_CHUNK = (
    1_000_000  # (spectrum, window) pairs searched at once: ~120 MB of work arrays
)
# continuous data is read in pieces of at most this size, small enough to stay in the CPU cache
DENSE_READ_BYTES = 4 * 1024 * 1024


@dataclass
class IonImages:
    """The result of an extraction. ``stack`` is ``(C, Y, X)`` float32."""

    stack: np.ndarray
    mask: np.ndarray
    mz: np.ndarray
    tolerance: Tolerance
    norm: str
    pixel_size_um: tuple[float, float] | None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def annotations(self) -> dict[str, str]:
        """Return what an OME-TIFF of these images keeps so that they survive a file round trip.

        Returns
        -------
        dict of str
            ``tolerance`` (e.g. ``10 ppm``) and ``normalisation``.
        """
        return {"tolerance": str(self.tolerance), "normalisation": self.norm}

    def metadata(self) -> dict:
        """Return the extraction as layer metadata: file, m/z, tolerance, normalisation, pixel size.

        Returns
        -------
        dict
            JSON-able values (``tolerance`` as ``{"value", "unit"}``, ``pixel_size_um`` a list or None).
        """
        return {
            "file": self.source,
            "mz": [float(m) for m in self.mz],
            "tolerance": self.tolerance.as_dict(),
            "normalisation": self.norm,
            "pixel_size_um": list(self.pixel_size_um) if self.pixel_size_um else None,
        }


def _raw_factors(raw: RawChunk, norm: str) -> np.ndarray | None:
    if norm == "none":
        return None
    itv = raw.typed("int")
    if norm == "tic":
        return itv.segment_sums(raw.lengths)
    if norm == "rms":
        return np.sqrt(itv.segment_sums(raw.lengths, square=True) / np.maximum(raw.lengths, 1))
    return flat_factors(raw.to_flat(), norm)


def _join(parts: list):
    """One ``(index, values, factors)`` triple from several consecutive ones."""
    if len(parts) == 1:
        return parts[0]
    idx, vals, fs = zip(*parts, strict=True)
    f = None if fs[0] is None else np.concatenate(fs)
    return np.concatenate(idx), np.concatenate(vals), f


def _extract_rows(imz: ImzMLFile, subset: np.ndarray | None, lo, hi, norm: str, chunk_bytes: int):
    """Yield ``(spectrum_indices, values (n, C) float64)`` per chunk."""
    if imz.shared_mz_axis:
        # read in cache-sized pieces (the window sums then find the rows still in cache: 0.55 s
        # instead of 0.8-1.0 s for 2.1 GB), yield per ``chunk_bytes`` as before (progress, cancel)
        plan = DensePlan(imz.mz_axis(), lo, hi)
        read = min(chunk_bytes, DENSE_READ_BYTES)
        per_yield = max(1, chunk_bytes // read)
        parts: list = []
        for ch in iter_dense_chunks(imz, subset, read):
            parts.append((ch.index, plan.apply(ch.block), dense_factors(ch.block, norm)))
            if len(parts) == per_yield:
                yield _join(parts)
                parts = []
        if parts:
            yield _join(parts)
    else:
        # the window search keeps ~15 int64/float64 values per (spectrum, window) query
        max_spectra = max(1, MAX_QUERIES_PER_CHUNK // max(1, len(lo)))
        for raw in iter_raw_chunks(imz, subset, chunk_bytes, max_spectra):
            yield raw.index, processed_sums(raw, lo, hi), _raw_factors(raw, norm)


def _normalise(vals: np.ndarray, f: np.ndarray | None) -> np.ndarray:
    if f is None:
        return vals
    ff = np.where(f > 0, f, np.inf)
    return vals / ff[:, None]


def _check_finite(imz: ImzMLFile, stack: np.ndarray):
    if np.isfinite(stack).all():
        return
    bad = ~np.isfinite(stack)
    if bad.any():
        c, r, q = (int(v[0]) for v in np.nonzero(bad))
        raise ImzMLNonFiniteError(
            f"{imz.path}: NaN or infinite intensities at pixel x={q + 1}, y={r + 1} "
            f"({int(bad.any(axis=0).sum())} pixels affected)"
        )


def iter_ion_images(
    imz: ImzMLFile,
    mz: np.ndarray,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    norm: str = "none",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, IonImages]:
    """Extract ion images, chunk by chunk of spectra.

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file.
    mz : array_like
        The m/z values (at least one).
    tolerance : Tolerance
        Half-width of each window (ppm of each m/z, or Da).
    norm : str
        Per-spectrum normalisation (``none``, ``tic``, ``rms``, ``median``) applied before summing.
    chunk_bytes : int
        Memory per chunk of spectra read.
    cancel : CancelToken, optional
        Checked between chunks; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        Spectra done so far (stage ``ion images``).

    Returns
    -------
    IonImages
        The ``(C, Y, X)`` float32 stack with its measured-pixel mask, m/z, tolerance, normalisation,
        pixel size and source.

    Raises
    ------
    ValueError
        No m/z given, or an unknown normalisation.
    ImzMLNonFiniteError
        The file holds NaN or infinite intensities.
    """
    norm = check_norm(norm)
    mz = np.atleast_1d(np.asarray(mz, dtype=np.float64))
    if len(mz) == 0:
        raise ValueError("no m/z values given")
    lo, hi = tolerance.windows(mz)
    ny, nx = imz.shape_yx
    # the stack (4 bytes per value), the finiteness check (1) and the mask (1 per pixel)
    check_allocation(
        (5.0 * len(mz) + 1) * ny * nx, f"{len(mz)} ion images of {ny} x {nx} pixels", imz.path
    )
    stack = np.zeros((len(mz), ny, nx), dtype=np.float32)
    done = 0
    n = imz.n_spectra - imz.n_duplicates
    for idx, vals, f in _extract_rows(imz, None, lo, hi, norm, chunk_bytes):
        if cancel is not None:
            cancel.check()
        stack[:, imz.rows[idx], imz.cols[idx]] = _normalise(vals, f).T
        done += len(idx)
        yield Progress(done, n, "ion images")
    _check_finite(imz, stack)
    return IonImages(
        stack, imz.measured_mask(), mz, tolerance, norm, imz.pixel_size_um, str(imz.path)
    )


def ion_images(imz: ImzMLFile, mz, **kw) -> IonImages:
    """Extract ion images: :func:`iter_ion_images` run to the end (no progress, no cancel).

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file.
    mz : array_like
        The m/z values.
    **kw
        Options of :func:`iter_ion_images` (``tolerance``, ``norm``, ``chunk_bytes``).

    Returns
    -------
    IonImages
        The ion-image stack.
    """
    return run_to_end(iter_ion_images(imz, mz, **kw))


def total_ion_image(imz: ImzMLFile, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> np.ndarray:
    """Compute the total ion current (TIC) image.

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file.
    chunk_bytes : int
        Memory per chunk of spectra read.

    Returns
    -------
    ndarray
        ``(Y, X)`` float32 sum of each spectrum, 0 where unmeasured.

    Raises
    ------
    ImzMLNonFiniteError
        The file holds NaN or infinite intensities.
    """
    ny, nx = imz.shape_yx
    check_allocation(4.0 * ny * nx, f"a TIC image of {ny} x {nx} pixels", imz.path)
    img = np.zeros(imz.shape_yx, dtype=np.float32)
    if imz.shared_mz_axis:
        for ch in iter_dense_chunks(imz, chunk_bytes=chunk_bytes):
            img[imz.rows[ch.index], imz.cols[ch.index]] = dense_factors(ch.block, "tic")
    else:
        for ch in iter_flat_chunks(imz, chunk_bytes=chunk_bytes):
            img[imz.rows[ch.index], imz.cols[ch.index]] = flat_factors(ch, "tic")
    if not np.isfinite(img).all():
        _check_finite(imz, img[None])
    return img


def lazy_ion_images(
    imz: ImzMLFile,
    mz,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    norm: str = "none",
    rows_per_block: int | None = None,
):
    """Build ion images as a lazy dask array, for display of large files.

    Each block of rows is extracted when dask computes it (the same sums and normalisation as
    :func:`iter_ion_images`).

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file; it must stay open while the array is computed.
    mz : array_like
        The m/z values.
    tolerance : Tolerance
        Half-width of each window.
    norm : str
        Per-spectrum normalisation.
    rows_per_block : int, optional
        Image rows per dask block (default: about 16 MiB of output per block).

    Returns
    -------
    dask.array.Array
        ``(C, Y, X)`` float32, 0 where unmeasured.
    """
    import dask
    import dask.array as da

    norm = check_norm(norm)
    mz = np.atleast_1d(np.asarray(mz, dtype=np.float64))
    lo, hi = tolerance.windows(mz)
    ny, nx = imz.shape_yx
    if rows_per_block is None:
        rows_per_block = max(1, min(ny, (16 * 2**20) // max(1, 4 * len(mz) * nx)))
    order = np.argsort(imz.rows, kind="stable")
    if imz.n_duplicates:
        order = order[~imz.duplicate_mask[order]]
    row_sorted = imz.rows[order]
    blocks = []
    for r0 in range(0, ny, rows_per_block):
        r1 = min(ny, r0 + rows_per_block)
        a, b = np.searchsorted(row_sorted, [r0, r1])
        subset = order[a:b]

        def compute(subset=subset, r0=r0, r1=r1):
            out = np.zeros((len(mz), r1 - r0, nx), dtype=np.float32)
            for idx, vals, f in _extract_rows(imz, subset, lo, hi, norm, DEFAULT_CHUNK_BYTES):
                out[:, imz.rows[idx] - r0, imz.cols[idx]] = _normalise(vals, f).T
            return out

        blocks.append(
            da.from_delayed(dask.delayed(compute)(), shape=(len(mz), r1 - r0, nx), dtype=np.float32)
        )
    return da.concatenate(blocks, axis=1)
