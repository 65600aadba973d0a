"""Window sums: the intensity inside each m/z window, per spectrum, for a chunk of spectra.

The kernels of :mod:`napari_msi2hist.msi.ion_images`. A file with a shared m/z axis (continuous)
sums fixed columns (:class:`DensePlan`, ``np.add.reduceat``); a processed file's chunk is searched
(:func:`processed_sums`): a batched binary search on each spectrum's ascending m/z array
(:func:`bisect_sums`), and a sort-based comparison for spectra whose m/z array is not ascending
(:func:`unsorted_sums`). Windows are inclusive, ``lo <= m/z <= hi``.
"""

from __future__ import annotations

import numpy as np

from ._chunks import RawChunk, gather_typed


class DensePlan:
    """Column plan for a shared m/z axis: which columns each window sums.

    Parameters
    ----------
    axis : ndarray
        The file's shared m/z axis (ascending, or not: then each window is found by comparison).
    lo, hi : ndarray
        ``(C,)`` window edges, inclusive.
    """

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
        """Sum each window's columns of a block of spectra.

        Parameters
        ----------
        block : ndarray
            ``(n_spectra, n_mz)`` intensities on the shared axis.

        Returns
        -------
        ndarray
            ``(n_spectra, C)`` float64 window sums.
        """
        out = np.zeros((block.shape[0], self.n_windows), dtype=np.float64)
        if len(self.nonempty):
            g = block[:, self.cols].astype(np.float64, copy=False)
            out[:, self.nonempty] = np.add.reduceat(g, self.starts, axis=1)
        return out


def bisect_sums(raw: RawChunk, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Window sums for processed data by a batched binary search on each spectrum's sorted m/z.

    For every (spectrum, window) query the first m/z >= lo is found by bisection over all queries at
    once (compact arrays of the still-active queries); the window's end is then found by stepping
    forward while m/z <= hi, which also visits exactly the values to sum. Only ~log2(n) m/z values
    per query and the values inside windows are read; no Python loop over spectra. The m/z arrays
    must be ascending (:func:`processed_sums` checks).

    Parameters
    ----------
    raw : RawChunk
        A processed chunk's raw bytes and its spectra's lengths.
    lo, hi : ndarray
        ``(C,)`` window edges, inclusive.

    Returns
    -------
    ndarray
        ``(n_spectra, C)`` float64 window sums.
    """
    n, c = len(raw.index), len(lo)
    mzv, itv = raw.typed("mz"), raw.typed("int")
    L = raw.lengths
    rows = np.repeat(np.arange(n), c)
    q_len = L[rows]
    t_lo = np.tile(lo, n)
    t_hi = np.tile(hi, n)
    # lower bound: first j with mz[j] >= lo
    first = np.zeros(n * c, np.int64)
    act = np.flatnonzero(q_len > 0)
    left = np.zeros(len(act), np.int64)
    right = q_len[act].copy()
    r_act, t_act = rows[act], t_lo[act]
    if len(act):
        # interpolation guess from each spectrum's m/z range, then one probe a step further:
        # for roughly uniform sampling this brackets the answer within ~1/64 of the array
        ln = right
        f = mzv.take(r_act, np.zeros_like(ln)).astype(np.float64)
        e = mzv.take(r_act, ln - 1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            frac = np.clip((t_act - f) / np.where(e > f, e - f, 1.0), 0.0, 1.0)
            frac = np.where(np.isfinite(frac), frac, 0.0)  # NaN/inf ends: any start is safe
            g = np.clip((frac * (ln - 1)).astype(np.int64), 0, ln - 1)
        step = np.maximum(ln >> 6, 4)
        below = mzv.take(r_act, g) < t_act
        left = np.where(below, g + 1, left)
        right = np.where(below, right, g)
        p2 = np.clip(np.where(below, g + step, g - step), 0, ln - 1)
        below2 = mzv.take(r_act, p2) < t_act
        ok = np.where(below, ~below2 & (p2 > g), below2 & (p2 < g))
        left = np.where(ok & ~below, p2 + 1, left)
        right = np.where(ok & below, p2, right)
    while len(act):
        mid = (left + right) >> 1
        go = mzv.take(r_act, mid) < t_act
        left = np.where(go, mid + 1, left)
        right = np.where(go, right, mid)
        done = left >= right
        if done.any():
            first[act[done]] = left[done]
            keep = ~done
            act, left, right, r_act, t_act = (
                act[keep],
                left[keep],
                right[keep],
                r_act[keep],
                t_act[keep],
            )
    # step forward inside each window, summing as we go
    sums = np.zeros(n * c)
    act = np.flatnonzero(first < q_len)
    pos = first[act]
    while len(act):
        r = rows[act]
        inside = mzv.take(r, pos) <= t_hi[act]
        if not inside.all():
            act, pos, r = act[inside], pos[inside], r[inside]
        if len(act) == 0:
            break
        sums[act] += itv.take(r, pos)
        pos = pos + 1
        more = pos < q_len[act]
        if not more.all():
            act, pos = act[more], pos[more]
    return sums.reshape(n, c)


def unsorted_sums(raw: RawChunk, sel: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sum the m/z windows of spectra whose m/z arrays are not ascending.

    All their values are sorted together once, each window is a range of that order, and its values
    are summed per spectrum. Same bounds as the search (``lo <= m/z <= hi``); NaN m/z sort last and
    match nothing.

    Parameters
    ----------
    raw : RawChunk
        A processed chunk's raw bytes.
    sel : ndarray
        Indices (into the chunk) of the spectra to sum.
    lo, hi : ndarray
        ``(C,)`` window edges, inclusive.

    Returns
    -------
    ndarray
        ``(len(sel), C)`` float64 window sums.
    """
    ln = raw.lengths[sel]
    mz = gather_typed(raw.buf, raw.base, raw.mz_off[sel], ln, raw.mz_dtype).astype(np.float64)
    it = gather_typed(raw.buf, raw.base, raw.int_off[sel], ln, raw.int_dtype).astype(np.float64)
    seg = np.repeat(np.arange(len(sel)), ln)
    order = np.argsort(mz)
    ms = mz[order]
    a = np.searchsorted(ms, lo, side="left")
    b = np.searchsorted(ms, hi, side="right")
    out = np.zeros((len(sel), len(lo)))
    for c in np.flatnonzero(b > a).tolist():
        idx = order[a[c] : b[c]]
        out[:, c] = np.bincount(seg[idx], weights=it[idx], minlength=len(sel))
    return out


def subset_chunk(raw: RawChunk, sel: np.ndarray) -> RawChunk:
    """Return the chunk restricted to some of its spectra (sharing its buffer).

    Parameters
    ----------
    raw : RawChunk
        The chunk.
    sel : ndarray
        Indices (into the chunk) of the spectra to keep.

    Returns
    -------
    RawChunk
        The same bytes, with only those spectra's index, lengths and offsets.
    """
    return RawChunk(
        raw.index[sel],
        raw.buf,
        raw.base,
        raw.lengths[sel],
        raw.mz_off[sel],
        raw.int_off[sel],
        raw.mz_dtype,
        raw.int_dtype,
    )


def processed_sums(raw: RawChunk, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sum each m/z window of every spectrum of a processed chunk.

    Spectra whose m/z array is not ascending (or holds NaN) are detected in one vectorised pass over
    the chunk and summed by a full comparison instead of the binary search, which needs ascending
    arrays.

    Parameters
    ----------
    raw : RawChunk
        The chunk's raw m/z and intensity bytes with its spectra's lengths.
    lo, hi : ndarray
        ``(C,)`` window edges, inclusive.

    Returns
    -------
    ndarray
        ``(n_spectra, C)`` float64 window sums.
    """
    uns = raw.typed("mz").unsorted(raw.lengths)
    if not uns.any():
        return bisect_sums(raw, lo, hi)
    out = np.zeros((len(raw.index), len(lo)))
    ok = np.flatnonzero(~uns)
    if len(ok):
        out[ok] = bisect_sums(subset_chunk(raw, ok), lo, hi)
    bad = np.flatnonzero(uns)
    out[bad] = unsorted_sums(raw, bad, lo, hi)
    return out
