"""Read spectra in large, bounded chunks with as few system calls as possible.

Continuous files: consecutive intensity arrays with a constant stride are read with one positioned
read per chunk and viewed as a 2-D ``(n_spectra, n_mz)`` array without copying. Processed files: the
byte span that holds a chunk's m/z and intensity arrays is read once and the variable-length arrays are
gathered into flat arrays with vectorised index arithmetic (no Python loop per spectrum). Layouts that
do not allow this (arrays scattered through the file) fall back to one read per spectrum.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .._limits import check_allocation
from ..io.imzml import ImzMLFile

DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024
# a chunk is read as one span when the span is at most twice the useful bytes plus this slack
SPAN_SLACK_BYTES = 65536


@dataclass
class DenseChunk:
    """Continuous data: ``block[j]`` is the intensity array of spectrum ``index[j]``."""

    index: np.ndarray
    block: np.ndarray


@dataclass
class FlatChunk:
    """Processed data: spectrum ``index[j]`` owns ``mz[starts[j]:starts[j+1]]`` (float64)."""

    index: np.ndarray
    lengths: np.ndarray
    mz: np.ndarray
    intensity: np.ndarray

    @property
    def segment_ids(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.index)), self.lengths)


def _default_subset(imz: ImzMLFile, subset: np.ndarray | None) -> np.ndarray:
    """All spectra that images use (the first at each pixel) unless a subset is given."""
    if subset is not None:
        return np.asarray(subset, np.int64)
    keep = imz.spectrum_subset
    return np.arange(imz.n_spectra) if keep is None else keep


def iter_dense_chunks(
    imz: ImzMLFile, subset: np.ndarray | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[DenseChunk]:
    """Yield continuous-mode chunks in file order (``subset``: spectrum indices to read)."""
    idx_all = _default_subset(imz, subset)
    if len(idx_all) == 0:
        return
    k = int(imz.mz_lengths[0])
    dt = imz.int_dtype
    row_bytes = max(1, k * dt.itemsize)
    order = idx_all[np.argsort(imz.int_offsets[idx_all], kind="stable")]
    offs = imz.int_offsets[order]
    per = max(1, chunk_bytes // row_bytes)
    buf = None
    a = 0
    n = len(order)
    while a < n:
        b = min(n, a + per)
        o = offs[a:b]
        d = np.diff(o)
        stride = int(d[0]) if len(d) else row_bytes
        uniform = len(d) == 0 or (
            (d == stride).all() and stride >= row_bytes and stride % dt.itemsize == 0
        )
        if uniform and stride <= 2 * row_bytes:
            span = int(o[-1] - o[0]) + row_bytes
            if buf is None or buf.nbytes < span:
                buf = np.empty(max(span, min(n, per) * stride), dtype=np.uint8)
            view = buf[:span]
            imz.read_bytes_into(view, int(o[0]))
            block = np.ndarray((b - a, k), dtype=dt, buffer=view, strides=(stride, dt.itemsize))
        else:  # scattered layout: one read per spectrum
            block = np.empty((b - a, k), dtype=dt)
            for j, off in enumerate(o.tolist()):
                imz.read_bytes_into(block[j], off)
        yield DenseChunk(order[a:b], block)
        a = b


def gather_typed(
    buf: np.ndarray, base: int, offsets: np.ndarray, lengths: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """Gather variable-length typed arrays at byte ``offsets`` (relative to ``base``) from ``buf``.

    Shared within ``msi``: the chunk readers here and the window-sum kernels (``_window_sums``).
    """
    total = int(lengths.sum())
    out = np.empty(total, dtype=dtype)
    if total == 0:
        return out
    isz = dtype.itemsize
    rel = offsets - base
    starts_out = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    shift = rel % isz
    for s in np.unique(shift).tolist():
        sel = shift == s
        view = np.frombuffer(buf, dtype=dtype, count=(len(buf) - s) // isz, offset=s)
        el_start = (rel[sel] - s) // isz
        ln = lengths[sel]
        # index of every element: repeat each array's start, add the position within the array
        pos_in = np.arange(int(ln.sum())) - np.repeat(np.cumsum(ln) - ln, ln)
        src = np.repeat(el_start, ln) + pos_in
        dst = np.repeat(starts_out[sel], ln) + pos_in
        out[dst] = view[src]
    return out


@dataclass
class RawChunk:
    """Processed data as read from the file, with where each spectrum lies in it.

    ``buf`` holds the bytes from file offset ``base``; spectrum ``j`` (``index[j]``) has
    ``lengths[j]`` values at byte offsets ``mz_off[j]`` / ``int_off[j]`` (``mz_off`` is None when
    all spectra share ``axis``).
    """

    index: np.ndarray
    buf: np.ndarray
    base: int
    lengths: np.ndarray
    mz_off: np.ndarray | None
    int_off: np.ndarray
    mz_dtype: np.dtype
    int_dtype: np.dtype
    axis: np.ndarray | None = None

    def typed(self, which: str) -> TypedArrays:
        if which == "mz":
            return TypedArrays(self.buf, self.base, self.mz_off, self.mz_dtype)
        return TypedArrays(self.buf, self.base, self.int_off, self.int_dtype)

    def to_flat(self) -> FlatChunk:
        inten = gather_typed(self.buf, self.base, self.int_off, self.lengths, self.int_dtype)
        if self.mz_off is None:
            mz64 = np.tile(self.axis, len(self.index))
        else:
            mz64 = gather_typed(
                self.buf, self.base, self.mz_off, self.lengths, self.mz_dtype
            ).astype(np.float64)
        return FlatChunk(self.index, self.lengths, mz64, inten)


class TypedArrays:
    """Typed, zero-copy views of variable-length arrays inside a byte buffer.

    Arrays whose byte offset is not a multiple of the item size relative to the buffer live in a
    view shifted by that remainder; ``start[j]`` indexes array ``j``'s first element in
    ``views[shift[j]]``.
    """

    def __init__(self, buf: np.ndarray, base: int, offsets: np.ndarray, dtype: np.dtype):
        isz = dtype.itemsize
        rel = offsets - base
        self.shift = rel % isz
        self.start = (rel - self.shift) // isz
        self.views = {
            int(sh): np.frombuffer(
                buf, dtype=dtype, count=(len(buf) - int(sh)) // isz, offset=int(sh)
            )
            for sh in np.unique(self.shift).tolist()
        }

    def take(self, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Element ``pos`` of array ``rows`` (same-shaped integer arrays)."""
        if len(self.views) == 1:
            ((sh, view),) = self.views.items()
            return view[self.start[rows] + pos]
        out = None
        for sh, view in self.views.items():
            m = self.shift[rows] == sh
            vals = view[self.start[rows[m]] + pos[m]]
            if out is None:
                out = np.empty(rows.shape, dtype=vals.dtype)
            out[m] = vals
        return out

    def unsorted(self, lengths: np.ndarray) -> np.ndarray:
        """Boolean per array: True where some ``a[i + 1] >= a[i]`` fails (a descent or a NaN)."""
        out = np.zeros(len(lengths), bool)
        for sh, view in self.views.items():
            g = np.flatnonzero((self.shift == sh) & (lengths > 1))
            if len(g) == 0:
                continue
            bad = ~(view[1:] >= view[:-1])
            st = self.start[g]
            order = np.argsort(st, kind="stable")
            g, st = g[order], st[order]
            en = st + lengths[g] - 1  # pairs (i, i + 1) with i in [st, en)
            idx = np.empty(2 * len(g), np.int64)
            idx[0::2], idx[1::2] = st, en
            if idx[-1] >= len(bad):
                idx = idx[:-1]
            counts = np.add.reduceat(bad, idx, dtype=np.int64)[0::2]
            out[g] = counts[: len(g)] > 0
        return out

    def segment_sums(self, lengths: np.ndarray, square: bool = False) -> np.ndarray:
        """Sum (of squares) of each whole array, in float64, without gathering the elements."""
        out = np.zeros(len(lengths))
        for sh, view in self.views.items():
            g = np.flatnonzero((self.shift == sh) & (lengths > 0))
            if len(g) == 0:
                continue
            src = view.astype(np.float64) ** 2 if square else view
            st = self.start[g]
            order = np.argsort(st, kind="stable")
            g, st = g[order], st[order]
            en = st + lengths[g]
            idx = np.empty(2 * len(g), np.int64)
            idx[0::2], idx[1::2] = st, en
            keep_last = idx[-1] < len(src)
            if not keep_last:
                idx = idx[:-1]
            sums = np.add.reduceat(src, idx, dtype=np.float64)[0::2]
            out[g] = sums[: len(g)]
        return out


def iter_raw_chunks(
    imz: ImzMLFile,
    subset: np.ndarray | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_spectra: int | None = None,
) -> Iterator[RawChunk]:
    """Yield chunks of spectra as raw bytes with offsets (any layout, continuous or processed).

    At most ``max_spectra`` spectra per chunk when given (bounds per-spectrum work arrays).
    """
    idx_all = _default_subset(imz, subset)
    if len(idx_all) == 0:
        return
    mzs, its = imz.mz_dtype.itemsize, imz.int_dtype.itemsize
    shared = imz.shared_mz_axis
    axis = imz.mz_axis().astype(np.float64) if shared else None
    lo_off = imz.int_offsets if shared else np.minimum(imz.mz_offsets, imz.int_offsets)
    order = idx_all[np.argsort(lo_off[idx_all], kind="stable")]
    nbytes = imz.int_lengths[order] * its + (0 if shared else imz.mz_lengths[order] * mzs)
    csum = np.cumsum(nbytes)
    n = len(order)
    a = 0
    while a < n:
        start_bytes = csum[a - 1] if a else 0
        b = int(np.searchsorted(csum, start_bytes + chunk_bytes, side="right"))
        b = min(n, max(b, a + 1))
        if max_spectra is not None:
            b = min(b, a + max(1, int(max_spectra)))
        sel = order[a:b]
        ilen = imz.int_lengths[sel]
        ioff = imz.int_offsets[sel]
        moff = None if shared else imz.mz_offsets[sel]
        if shared:
            ends = ioff + ilen * its
            begin = int(ioff.min())
        else:
            ends = np.maximum(ioff + ilen * its, moff + imz.mz_lengths[sel] * mzs)
            begin = int(min(ioff.min(), moff.min()))
        span = int(ends.max()) - begin
        useful = int(nbytes[a:b].sum())
        if span <= 2 * useful + SPAN_SLACK_BYTES:
            check_allocation(span, "a read buffer", imz.path)
            buf = np.empty(span, dtype=np.uint8)
            imz.read_bytes_into(buf, begin)
        else:  # scattered arrays: pack them into a fresh buffer, one read per array
            check_allocation(useful, "a read buffer", imz.path)
            buf = np.empty(useful, dtype=np.uint8)
            pos = 0
            new_i = np.empty(len(sel), np.int64)
            new_m = None if shared else np.empty(len(sel), np.int64)
            for j in range(len(sel)):
                if not shared:
                    k = int(imz.mz_lengths[sel[j]]) * mzs
                    imz.read_bytes_into(buf[pos : pos + k], int(moff[j]))
                    new_m[j] = pos
                    pos += k
                k = int(ilen[j]) * its
                imz.read_bytes_into(buf[pos : pos + k], int(ioff[j]))
                new_i[j] = pos
                pos += k
            begin, ioff, moff = 0, new_i, new_m
        yield RawChunk(
            sel, buf, begin, ilen.astype(np.int64), moff, ioff, imz.mz_dtype, imz.int_dtype, axis
        )
        a = b


def iter_flat_chunks(
    imz: ImzMLFile, subset: np.ndarray | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[FlatChunk]:
    """Yield chunks as flat float64 m/z and intensity arrays (works for continuous files too)."""
    for raw in iter_raw_chunks(imz, subset, chunk_bytes):
        yield raw.to_flat()
