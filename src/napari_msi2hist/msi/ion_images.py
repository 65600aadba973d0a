"""Ion images for many m/z at once: a ``(C, Y, X)`` float32 stack, vectorised over spectra.

Channel ``c`` at pixel ``(row, col)`` is the sum of the intensities whose m/z lies within the
tolerance of ``mz[c]``, bounds inclusive: ``mz[c] - tol <= m <= mz[c] + tol`` (``tol`` in Da, or
``tol_ppm * 1e-6 * mz[c]``). Unmeasured pixels are 0 and ``mask`` tells which pixels were measured.

Continuous files are read in large strided chunks and the needed columns are gathered and summed with
``np.add.reduceat``; processed files are read as flat arrays and each value is assigned to its window
with one ``searchsorted`` over the window edges, then summed with ``np.bincount``. Memory is bounded by
the output stack plus one chunk (``chunk_bytes``), whatever the file size.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from ..io.imzml import ImzMLFile, ImzMLNonFiniteError
from ..progress import CancelToken, Progress, run_to_end
from ._chunks import DEFAULT_CHUNK_BYTES, iter_dense_chunks, iter_flat_chunks
from .spectra import check_norm, dense_factors, flat_factors


@dataclass(frozen=True)
class Tolerance:
    """m/z tolerance: ``value`` in ``unit`` ("ppm" or "da")."""

    value: float
    unit: str = "ppm"

    def __post_init__(self):
        if self.unit not in ("ppm", "da"):
            raise ValueError(f"tolerance unit must be 'ppm' or 'da', not {self.unit!r}")
        if not self.value >= 0:
            raise ValueError(f"tolerance must be >= 0, got {self.value}")

    def half_width(self, mz: np.ndarray) -> np.ndarray:
        mz = np.asarray(mz, dtype=np.float64)
        return mz * self.value * 1e-6 if self.unit == "ppm" else np.full_like(mz, self.value)

    def windows(self, mz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mz = np.asarray(mz, dtype=np.float64)
        h = self.half_width(mz)
        return mz - h, mz + h

    def as_dict(self) -> dict:
        return {"value": float(self.value), "unit": self.unit}

    def __str__(self) -> str:
        return f"{self.value:g} {'ppm' if self.unit == 'ppm' else 'Da'}"


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

    def metadata(self) -> dict:
        return {
            "file": self.source,
            "mz": [float(m) for m in self.mz],
            "tolerance": self.tolerance.as_dict(),
            "normalisation": self.norm,
            "pixel_size_um": list(self.pixel_size_um) if self.pixel_size_um else None,
        }


def _layers(lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """Split windows into groups of mutually non-overlapping ones (each group sorted by m/z)."""
    order = np.argsort(lo, kind="stable")
    layers: list[list[int]] = []
    last_hi: list[float] = []
    for i in order.tolist():
        for li, h in enumerate(last_hi):
            if lo[i] > h:
                layers[li].append(i)
                last_hi[li] = hi[i]
                break
        else:
            layers.append([i])
            last_hi.append(hi[i])
    return [np.asarray(g, np.int64) for g in layers]


class _DensePlan:
    """Column plan for a shared m/z axis: which columns each window sums."""

    def __init__(self, axis: np.ndarray, lo: np.ndarray, hi: np.ndarray):
        ax = np.asarray(axis, dtype=np.float64)
        if len(ax) > 1 and not (np.diff(ax) >= 0).all():
            cols = [np.flatnonzero((ax >= a) & (ax <= b)) for a, b in zip(lo, hi, strict=True)]
        else:
            s = np.searchsorted(ax, lo, side="left")
            e = np.searchsorted(ax, hi, side="right")
            cols = [np.arange(a, b) for a, b in zip(s, e, strict=True)]
        self.counts = np.array([len(c) for c in cols])
        self.nonempty = np.flatnonzero(self.counts > 0)
        self.cols = (
            np.concatenate([cols[i] for i in self.nonempty])
            if len(self.nonempty)
            else np.zeros(0, np.int64)
        )
        self.starts = np.concatenate([[0], np.cumsum(self.counts[self.nonempty])[:-1]]).astype(
            np.int64
        )
        self.n_windows = len(lo)

    def apply(self, block: np.ndarray) -> np.ndarray:
        out = np.zeros((block.shape[0], self.n_windows), dtype=np.float64)
        if len(self.nonempty):
            g = block[:, self.cols].astype(np.float64, copy=False)
            out[:, self.nonempty] = np.add.reduceat(g, self.starts, axis=1)
        return out


def _flat_sums(
    mz: np.ndarray,
    w: np.ndarray,
    seg: np.ndarray,
    n: int,
    lo: np.ndarray,
    hi: np.ndarray,
    layers: list[np.ndarray],
) -> np.ndarray:
    """Sum ``w`` per (segment, window) for values whose ``mz`` falls in a window (inclusive)."""
    out = np.zeros((n, len(lo)), dtype=np.float64)
    for g in layers:
        cl = len(g)
        edges = np.empty(2 * cl)
        edges[0::2] = lo[g]
        edges[1::2] = np.nextafter(hi[g], np.inf)  # m <= hi  <=>  m < nextafter(hi)
        k = np.searchsorted(edges, mz, side="right")
        inside = (k & 1) == 1
        win = (k[inside] - 1) >> 1
        sums = np.bincount(seg[inside] * cl + win, weights=w[inside], minlength=n * cl)
        out[:, g] = sums.reshape(n, cl)
    return out


def _extract_rows(imz: ImzMLFile, subset: np.ndarray | None, lo, hi, norm: str, chunk_bytes: int):
    """Yield ``(spectrum_indices, values (n, C) float64)`` per chunk."""
    if imz.shared_mz_axis:
        plan = _DensePlan(imz.mz_axis(), lo, hi)
        for ch in iter_dense_chunks(imz, subset, chunk_bytes):
            vals = plan.apply(ch.block)
            f = dense_factors(ch.block, norm)
            yield ch.index, vals, f
    else:
        layers = _layers(lo, hi)
        for ch in iter_flat_chunks(imz, subset, chunk_bytes):
            n = len(ch.index)
            vals = _flat_sums(
                ch.mz, ch.intensity.astype(np.float64), ch.segment_ids, n, lo, hi, layers
            )
            yield ch.index, vals, flat_factors(ch, norm)


def _normalise(vals: np.ndarray, f: np.ndarray | None) -> np.ndarray:
    if f is None:
        return vals
    ff = np.where(f > 0, f, np.inf)
    return vals / ff[:, None]


def _check_finite(imz: ImzMLFile, stack: np.ndarray):
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
    tolerance: Tolerance = Tolerance(10.0, "ppm"),
    norm: str = "none",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, IonImages]:
    """Extract ion images, yielding progress per chunk; returns :class:`IonImages`."""
    norm = check_norm(norm)
    mz = np.atleast_1d(np.asarray(mz, dtype=np.float64))
    if len(mz) == 0:
        raise ValueError("no m/z values given")
    lo, hi = tolerance.windows(mz)
    ny, nx = imz.shape_yx
    stack = np.zeros((len(mz), ny, nx), dtype=np.float32)
    done = 0
    n = imz.n_spectra
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
    return run_to_end(iter_ion_images(imz, mz, **kw))


def total_ion_image(imz: ImzMLFile, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> np.ndarray:
    """TIC image (float32, 0 where unmeasured)."""
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
    tolerance: Tolerance = Tolerance(10.0, "ppm"),
    norm: str = "none",
    rows_per_block: int | None = None,
):
    """A dask ``(C, Y, X)`` array computed block of rows by block of rows, for display of large files."""
    import dask
    import dask.array as da

    norm = check_norm(norm)
    mz = np.atleast_1d(np.asarray(mz, dtype=np.float64))
    lo, hi = tolerance.windows(mz)
    ny, nx = imz.shape_yx
    if rows_per_block is None:
        rows_per_block = max(1, min(ny, (16 * 2**20) // max(1, 4 * len(mz) * nx)))
    order = np.argsort(imz.rows, kind="stable")
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
