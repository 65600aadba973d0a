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

from ..io.imzml import ImzMLFile

DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024


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


def iter_dense_chunks(
    imz: ImzMLFile, subset: np.ndarray | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[DenseChunk]:
    """Yield continuous-mode chunks in file order (``subset``: spectrum indices to read)."""
    idx_all = np.arange(imz.n_spectra) if subset is None else np.asarray(subset, np.int64)
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


def _gather(
    buf: np.ndarray, base: int, offsets: np.ndarray, lengths: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """Gather variable-length typed arrays at byte ``offsets`` (relative to ``base``) from ``buf``."""
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


def iter_flat_chunks(
    imz: ImzMLFile, subset: np.ndarray | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[FlatChunk]:
    """Yield processed-mode chunks (works for continuous files too, spectrum by spectrum)."""
    idx_all = np.arange(imz.n_spectra) if subset is None else np.asarray(subset, np.int64)
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
        # as many spectra as fit in chunk_bytes (at least one)
        start_bytes = csum[a - 1] if a else 0
        b = int(np.searchsorted(csum, start_bytes + chunk_bytes, side="right"))
        b = min(n, max(b, a + 1))
        sel = order[a:b]
        ilen = imz.int_lengths[sel]
        ioff = imz.int_offsets[sel]
        if shared:
            mlen, moff = ilen, None
            ends = ioff + ilen * its
            begin = int(ioff.min())
        else:
            mlen = imz.mz_lengths[sel]
            moff = imz.mz_offsets[sel]
            ends = np.maximum(ioff + ilen * its, moff + mlen * mzs)
            begin = int(min(ioff.min(), moff.min()))
        span = int(ends.max()) - begin
        useful = int(nbytes[a:b].sum())
        if span <= 2 * useful + 65536:
            buf = np.empty(span, dtype=np.uint8)
            imz.read_bytes_into(buf, begin)
            inten = _gather(buf, begin, ioff, ilen, imz.int_dtype)
            mz = None if shared else _gather(buf, begin, moff, mlen, imz.mz_dtype)
        else:
            inten = np.concatenate(
                [imz.read_array(o, m, imz.int_dtype) for o, m in zip(ioff, ilen, strict=True)]
            )
            mz = (
                None
                if shared
                else np.concatenate(
                    [imz.read_array(o, m, imz.mz_dtype) for o, m in zip(moff, mlen, strict=True)]
                )
            )
        mz64 = np.tile(axis, len(sel)) if shared else mz.astype(np.float64)
        yield FlatChunk(sel, ilen.astype(np.int64), mz64, inten)
        a = b
