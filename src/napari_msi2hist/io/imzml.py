"""Fast, safe imzML reader.

The XML's meaning is defined by one streaming expat parse (:mod:`._imzml_xml`); any DTD entity
declaration is refused, so neither "billion laughs" expansion nor external entities can happen. The
spectrum list is read by the fastest path that provably gives that parse's answer: the index cache
(:mod:`._imzml_index`), the template scan (:mod:`._imzml_template`: the list is the first spectrum
repeated with other numbers), the token scan (:mod:`._imzml_scan`), else the strict parse itself.
Per-spectrum offsets, lengths and coordinates are kept in numpy arrays. The ``.ibd`` is never loaded whole: spectra are read with
positioned reads (``os.preadv``), which do not move a shared file position and are therefore safe
from many threads at once (pyimzml's shared seek-and-read handle is known to mix up reads across
threads).

Axis conventions: imzML coordinates are 1-based ``x`` (column) and ``y`` (row). Pixel ``(x, y)`` is
stored at ``row = y - 1, col = x - 1``; image shapes are ``(rows, cols)`` = ``shape_yx``; pixel sizes
are ``pixel_size_um = (y, x)`` in micrometres.
"""

from __future__ import annotations

import os
import threading
import uuid as uuid_mod
import warnings
from pathlib import Path

import numpy as np

from .._limits import check_allocation
from . import _imzml_index as _index
from ._imzml_errors import (
    ImzMLError,
    ImzMLFormatError,
    ImzMLMissingIbdError,
    ImzMLNonFiniteError,
    ImzMLOffsetError,
    ImzMLTruncatedError,
    ImzMLUnsupportedError,
    ImzMLUUIDMismatchError,
    ImzMLWarning,
)
from ._imzml_scan import scan_spectra
from ._imzml_template import scan_template
from ._imzml_xml import ParseState, columns, n_spectra, parse_imzml_xml

__all__ = [
    "ImzMLError",
    "ImzMLFormatError",
    "ImzMLMissingIbdError",
    "ImzMLTruncatedError",
    "ImzMLOffsetError",
    "ImzMLUUIDMismatchError",
    "ImzMLNonFiniteError",
    "ImzMLUnsupportedError",
    "ImzMLWarning",
    "ImzMLFile",
    "open_imzml",
    "is_imzml_path",
]

# a declared raster larger than the measured extent is kept only up to this many pixels
# beyond ``DECLARED_RASTER_FACTOR`` times the extent (small margins are kept, a header that
# claims 30000 x 30000 for 9 spectra is not)
DECLARED_RASTER_FACTOR = 4
DECLARED_RASTER_SLACK_PX = 65536


def is_imzml_path(path: str | os.PathLike) -> bool:
    """Tell whether a file name is an imzML's (``.imzML``, any case).

    Parameters
    ----------
    path : str or path-like
        The file name (not opened).

    Returns
    -------
    bool
        True for an ``.imzML`` name.
    """
    return str(path).lower().endswith(".imzml")


def _parse_uuid(text: str | None) -> uuid_mod.UUID | None:
    if not text:
        return None
    try:
        return uuid_mod.UUID(text.strip().strip("{}"))
    except ValueError:
        return None


def _unwrap_int32(off: np.ndarray) -> np.ndarray:
    """Unwrap offsets that a writer stored as signed 32-bit integers back to 64-bit.

    In spectrum order, add 2**32 each time the stored value turns from non-negative to negative (the
    repair that pyimzml documents for the same writer bug).
    """
    turns = np.zeros(len(off), np.int64)
    turns[1:] = (off[1:] < 0) & (off[:-1] >= 0)
    return off + np.cumsum(turns) * 2**32


def _first_duplicates(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Boolean mask of spectra whose pixel was already taken by an earlier spectrum."""
    order = np.lexsort((np.arange(len(rows)), cols, rows))
    r, c = rows[order], cols[order]
    same = np.zeros(len(rows), bool)
    same[1:] = (r[1:] == r[:-1]) & (c[1:] == c[:-1])
    dup = np.zeros(len(rows), bool)
    dup[order] = same
    return dup


class ImzMLFile:
    """An opened imzML/ibd pair. Cheap to keep around; holds one OS file descriptor.

    Attributes
    ----------
    path, ibd_path : Path
    mode : "continuous" | "processed"
    spectrum_type : "profile" | "centroid" | None
    coords_xyz : (N, 3) int64 array of 1-based imzML coordinates
    rows, cols : (N,) int64 arrays, 0-based pixel row/column of each spectrum
    shape_yx : (rows, cols)
    declared_shape_yx : (rows, cols) from the header (max count of pixels), or None
    pixel_size_um : (y, x) in micrometres or None
    mz_offsets, mz_lengths, int_offsets, int_lengths : (N,) int64 arrays
    mz_dtype, int_dtype : numpy dtypes
    uuid : uuid.UUID or None
    duplicate_mask : (N,) bool, True for a spectrum whose pixel an earlier spectrum already has;
        such spectra are skipped by images and mean spectra (the first one at a pixel is kept)
    n_duplicates : int
    offsets_repaired : bool, True when 32-bit wrapped offsets were repaired
    used_fast_scan : bool, whether the spectrum list was read by a fast scan
    scan_kind : "template" | "tokens" | None, which fast scan: the repeated-template match
        (:mod:`._imzml_template`), the token scan (:mod:`._imzml_scan`), or neither
    index_source : "cache" | "fast" | "strict", where the per-spectrum index came from

    Parameters
    ----------
    path : path-like
        The ``.imzML`` file.
    ibd_path : path-like, optional
        The ``.ibd`` (default: next to the imzML, same name).
    check_uuid : bool
        Refuse an ``.ibd`` whose UUID differs from the imzML's.
    fast_parse : bool
        Use the fast spectrum-list scan (and the index cache) where it agrees with the strict
        parse; False always runs the strict expat parse and neither reads nor writes a cache.
    index_cache : bool or None
        Read/write the sidecar index cache (:mod:`._imzml_index`): None (default) writes it for
        files of at least 5,000 spectra and reads it whenever present, True always, False never.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        ibd_path: str | os.PathLike | None = None,
        check_uuid: bool = True,
        fast_parse: bool = True,
        index_cache: bool | None = None,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise ImzMLError(f"{self.path}: file not found")
        st = parse_imzml_xml(self.path, header_only=fast_parse)
        if not st.saw_mzml:
            raise ImzMLFormatError(f"{self.path}: not an imzML file (no <mzML> root element)")
        self.ibd_path = Path(ibd_path) if ibd_path is not None else self._find_ibd(self.path)
        use_cache = fast_parse and index_cache is not False and _index.enabled()
        key = cached = None
        if use_cache and st.spectra_at is not None:
            key = _index.make_key(self.path, self.ibd_path, st)
            cached = _index.load(self.path, key)
        self.scan_kind = None
        if cached is not None:
            st, self.index_source = cached, "cache"
        elif fast_parse and (tst := scan_template(self.path, st)) is not None:
            st, self.index_source, self.scan_kind = tst, "fast", "template"
        elif fast_parse and scan_spectra(self.path, st):
            self.index_source, self.scan_kind = "fast", "tokens"
        else:
            st, self.index_source = parse_imzml_xml(self.path), "strict"
        self.used_fast_scan = self.index_source == "fast"
        self._from_state(st)
        self._check_ibd(check_uuid)
        self.index_cache_path = None
        if (
            key is not None
            and cached is None
            and (index_cache or self.n_spectra >= _index.MIN_SPECTRA)
        ):
            self.index_cache_path = _index.save(self.path, key, st)
        self._fd = os.open(self.ibd_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._local = threading.local()
        self._mz_range: tuple[float, float] | None = None
        self._shared_axis: np.ndarray | None = None

    # ------------------------------------------------------------------ setup
    def _from_state(self, st: ParseState) -> None:
        if not n_spectra(st):
            raise ImzMLFormatError(f"{self.path}: no spectra with coordinates found (not imzML?)")
        if st.compressions:
            raise ImzMLUnsupportedError(
                f"{self.path}: compressed binary arrays ({', '.join(sorted(st.compressions))}) "
                "are not supported; convert to uncompressed imzML"
            )
        if len(st.mz_dtypes) != 1 or len(st.int_dtypes) != 1:
            raise ImzMLUnsupportedError(f"{self.path}: spectra use different binary data types")
        self.mz_dtype = next(iter(st.mz_dtypes))
        self.int_dtype = next(iter(st.int_dtypes))
        fc = st.file_content
        xs, ys, zs, self.mz_offsets, self.mz_lengths, self.int_offsets, self.int_lengths = columns(
            st
        )
        if "IMS:1000030" in fc:
            self.mode = "continuous"
        elif "IMS:1000031" in fc:
            self.mode = "processed"
        else:
            self.mode = (
                "continuous" if (self.mz_offsets == self.mz_offsets[0]).all() else "processed"
            )
        if len(st.spectrum_types) == 1:
            self.spectrum_type = next(iter(st.spectrum_types))
        elif "MS:1000127" in fc:
            self.spectrum_type = "centroid"
        elif "MS:1000128" in fc:
            self.spectrum_type = "profile"
        else:
            self.spectrum_type = None
        self.uuid = _parse_uuid(fc.get("IMS:1000080"))
        self.coords_xyz = np.column_stack([xs, ys, zs])
        if (self.coords_xyz[:, :2] < 1).any():
            i = int(np.flatnonzero((self.coords_xyz[:, :2] < 1).any(axis=1))[0])
            raise ImzMLFormatError(
                f"{self.path}: spectrum {i} has pixel coordinates {self.coords_xyz[i, :2].tolist()}; "
                "coordinates must be >= 1"
            )
        zs = np.unique(self.coords_xyz[:, 2])
        if len(zs) > 1:
            raise ImzMLUnsupportedError(
                f"{self.path}: 3D imzML (z values {zs[:5].tolist()}...) is not supported"
            )
        self.rows = self.coords_xyz[:, 1] - 1
        self.cols = self.coords_xyz[:, 0] - 1
        self._set_shape(st.scan_settings)
        self._set_pixel_size(st.scan_settings)
        self._check_lengths()
        self.shared_mz_axis = bool(
            (self.mz_offsets == self.mz_offsets[0]).all()
            and (self.mz_lengths == self.mz_lengths[0]).all()
        )
        self.duplicate_mask = _first_duplicates(self.rows, self.cols)
        self.n_duplicates = int(self.duplicate_mask.sum())
        if self.n_duplicates:
            warnings.warn(
                f"{self.path}: {self.n_duplicates} spectra share a pixel with an earlier spectrum; "
                "the first spectrum at each pixel is used and the others are ignored",
                ImzMLWarning,
                stacklevel=3,
            )

    def _set_shape(self, ss: dict[str, str]) -> None:
        def count(acc):
            try:
                v = int(float(ss[acc])) if ss.get(acc) else 0
            except (ValueError, OverflowError):
                return 0
            return v if 0 < v < 2**40 else 0

        decl_y, decl_x = count("IMS:1000043"), count("IMS:1000042")
        self.declared_shape_yx = (decl_y, decl_x) if decl_x and decl_y else None
        ext = (int(self.rows.max()) + 1, int(self.cols.max()) + 1)
        # coordinates may exceed the declared max count: take the larger on each axis
        cand = (max(decl_y, ext[0]), max(decl_x, ext[1]))
        if cand[0] * cand[1] <= DECLARED_RASTER_FACTOR * ext[0] * ext[1] + DECLARED_RASTER_SLACK_PX:
            self.shape_yx = cand
        else:
            self.shape_yx = ext
            warnings.warn(
                f"{self.path}: the header declares a {cand[0]} x {cand[1]} raster but the spectra "
                f"only cover {ext[0]} x {ext[1]} pixels; using {ext[0]} x {ext[1]}",
                ImzMLWarning,
                stacklevel=4,
            )

    def _set_pixel_size(self, ss: dict[str, str]) -> None:
        px, py = ss.get("IMS:1000046"), ss.get("IMS:1000047")
        self.pixel_size_um: tuple[float, float] | None = None
        try:
            if px or py:
                fx = float(px) if px else float(py)
                fy = float(py) if py else fx
                if 0 < fx < float("inf") and 0 < fy < float("inf"):
                    self.pixel_size_um = (fy, fx)
        except ValueError:
            self.pixel_size_um = None

    def _check_lengths(self) -> None:
        for arr, what in ((self.mz_lengths, "m/z"), (self.int_lengths, "intensity")):
            if (arr < 0).any():
                i = int(np.flatnonzero(arr < 0)[0])
                raise ImzMLFormatError(
                    f"{self.path}: spectrum {i} declares a negative {what} array length ({int(arr[i])})"
                )
        diff = self.mz_lengths != self.int_lengths
        if diff.any():
            i = int(np.flatnonzero(diff)[0])
            raise ImzMLFormatError(
                f"{self.path}: spectrum {i} has {int(self.mz_lengths[i])} m/z values but "
                f"{int(self.int_lengths[i])} intensities ({int(diff.sum())} spectra with m/z and "
                "intensity arrays of different lengths)"
            )

    @staticmethod
    def _find_ibd(path: Path) -> Path:
        for cand in (path.with_suffix(".ibd"), path.with_suffix(".IBD"), path.with_suffix(".Ibd")):
            if cand.is_file():
                return cand
        raise ImzMLMissingIbdError(
            f"{path}: the binary file {path.with_suffix('.ibd').name} is missing "
            "(an imzML needs its .ibd next to it, with the same name)"
        )

    def _repair_offsets(self, size: int) -> None:
        self.offsets_repaired = False
        offs = (self.mz_offsets, self.int_offsets)
        if not any((o < 0).any() for o in offs):
            return
        fits_int32 = all(o.min() >= -(2**31) and o.max() < 2**31 for o in offs)
        if not (fits_int32 and size > 2**31):
            o = self.mz_offsets if (self.mz_offsets < 0).any() else self.int_offsets
            i = int(np.flatnonzero(o < 0)[0])
            raise ImzMLOffsetError(
                f"{self.path}: spectrum {i} has a negative offset ({int(o[i])}) into "
                f"{self.ibd_path.name}"
            )
        self.mz_offsets = _unwrap_int32(self.mz_offsets)
        self.int_offsets = _unwrap_int32(self.int_offsets)
        if (self.mz_offsets < 0).any() or (self.int_offsets < 0).any():
            raise ImzMLOffsetError(
                f"{self.path}: negative offsets into {self.ibd_path.name} that are not a 32-bit "
                "wrap-around either (the first offsets are already negative)"
            )
        self.offsets_repaired = True
        warnings.warn(
            f"{self.path}: offsets were written as signed 32-bit integers (a known writer bug); "
            f"repaired for the {size}-byte {self.ibd_path.name}",
            ImzMLWarning,
            stacklevel=4,
        )

    def _check_ibd(self, check_uuid: bool):
        size = self.ibd_path.stat().st_size
        self.ibd_size = size
        if size < 16:
            raise ImzMLTruncatedError(
                f"{self.ibd_path}: only {size} bytes; an .ibd starts with a 16-byte UUID"
            )
        self._repair_offsets(size)
        for ln, dt, what in (
            (self.mz_lengths, self.mz_dtype, "m/z"),
            (self.int_lengths, self.int_dtype, "intensity"),
        ):
            too_long = ln > size // dt.itemsize
            if too_long.any():
                i = int(np.flatnonzero(too_long)[0])
                raise ImzMLOffsetError(
                    f"{self.path}: spectrum {i} declares {int(ln[i])} {what} values, more than "
                    f"{self.ibd_path.name} ({size} bytes) can hold"
                )
        # offsets capped at 2**62: no int64 overflow from absurd values (lengths fit the file)
        mz_end = np.minimum(self.mz_offsets, 2**62) + self.mz_lengths * self.mz_dtype.itemsize
        int_end = np.minimum(self.int_offsets, 2**62) + self.int_lengths * self.int_dtype.itemsize
        bad_off = (self.mz_offsets < 16) | (self.int_offsets < 16)
        if bad_off.any():
            i = int(np.flatnonzero(bad_off)[0])
            raise ImzMLOffsetError(
                f"{self.path}: spectrum {i} has an offset inside the 16-byte UUID header of "
                f"{self.ibd_path.name}"
            )
        need = int(max(mz_end.max(), int_end.max()))
        if need > size:
            total = int(
                (self.mz_lengths[0] if self.shared_mz_axis else self.mz_lengths.sum())
                * self.mz_dtype.itemsize
                + self.int_lengths.sum() * self.int_dtype.itemsize
            )
            starts_past = (self.int_offsets >= size) | (self.mz_offsets >= size)
            if 16 + total == need:
                # data laid out back to back and the file just stops: an interrupted copy
                n_bad = int(((mz_end > size) | (int_end > size)).sum())
                raise ImzMLTruncatedError(
                    f"{self.ibd_path}: truncated: {size} bytes, but {self.path.name} describes "
                    f"{need} bytes of data ({n_bad} of {len(self.int_offsets)} spectra are cut off)"
                )
            i = int(np.flatnonzero((mz_end > size) | (int_end > size))[0])
            raise ImzMLOffsetError(
                f"{self.path}: spectrum {i} points past the end of {self.ibd_path.name} "
                f"(m/z array ends at byte {int(mz_end[i])}, intensity array at byte {int(int_end[i])}, "
                f"file has {size} bytes; {int(starts_past.sum())} arrays start beyond the end)"
            )
        with open(self.ibd_path, "rb") as fh:
            head = fh.read(16)
        self.ibd_uuid = uuid_mod.UUID(bytes=head)
        if check_uuid and self.uuid is not None and self.ibd_uuid != self.uuid:
            raise ImzMLUUIDMismatchError(
                f"{self.path}: UUID mismatch: the imzML says {self.uuid} but {self.ibd_path.name} "
                f"starts with {self.ibd_uuid} (the two files do not belong together)"
            )

    @property
    def spectrum_subset(self) -> np.ndarray | None:
        """Indices of the spectra that images use (None: all of them; see ``duplicate_mask``)."""
        if not self.n_duplicates:
            return None
        return np.flatnonzero(~self.duplicate_mask)

    # ------------------------------------------------------------------ reading
    def close(self) -> None:
        """Close the ``.ibd`` file (idempotent)."""
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __len__(self) -> int:
        return len(self.int_offsets)

    @property
    def n_spectra(self) -> int:
        """Number of spectra in the file."""
        return len(self.int_offsets)

    def read_bytes_into(self, buf: np.ndarray, offset: int) -> None:
        """Fill a buffer from the ``.ibd`` at a byte offset; thread-safe.

        Parameters
        ----------
        buf : ndarray
            A contiguous array, filled in place with its size in bytes.
        offset : int
            Byte offset in the ``.ibd``.

        Raises
        ------
        ImzMLTruncatedError
            The file ends before ``buf`` is full.
        """
        mv = memoryview(buf).cast("B")
        n = mv.nbytes
        got = 0
        if hasattr(os, "preadv"):
            while got < n:
                k = os.preadv(self._fd, [mv[got:]], offset + got)
                if k <= 0:
                    raise ImzMLTruncatedError(
                        f"{self.ibd_path}: unexpected end of file at byte {offset + got}"
                    )
                got += k
        else:  # pragma: no cover - Windows: one handle per thread
            fh = getattr(self._local, "fh", None)
            if fh is None:
                fh = self._local.fh = open(self.ibd_path, "rb", buffering=0)
            fh.seek(offset)
            while got < n:
                k = fh.readinto(mv[got:])
                if not k:
                    raise ImzMLTruncatedError(
                        f"{self.ibd_path}: unexpected end of file at byte {offset + got}"
                    )
                got += k

    def read_array(self, offset: int, length: int, dtype: np.dtype) -> np.ndarray:
        """Read an array of values from the ``.ibd``.

        Parameters
        ----------
        offset : int
            Byte offset in the ``.ibd``.
        length : int
            Number of values.
        dtype : numpy dtype
            Their stored type.

        Returns
        -------
        ndarray
            ``(length,)`` of ``dtype``.

        Raises
        ------
        ImzMLTruncatedError
            A short read.
        """
        out = np.empty(int(length), dtype=dtype)
        if length:
            self.read_bytes_into(out, int(offset))
        return out

    def mz_axis(self) -> np.ndarray:
        """Return the shared m/z axis of a continuous file.

        Returns
        -------
        ndarray
            The stored values in their stored type, read once and cached.

        Raises
        ------
        ImzMLUnsupportedError
            A processed file (its spectra have their own axes).
        """
        if not self.shared_mz_axis:
            raise ImzMLUnsupportedError(
                f"{self.path}: spectra do not share one m/z axis (processed)"
            )
        if self._shared_axis is None:
            self._shared_axis = self.read_array(
                self.mz_offsets[0], self.mz_lengths[0], self.mz_dtype
            )
        return self._shared_axis

    def getspectrum(self, i: int, check_finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Read one spectrum, in the stored dtypes (as pyimzml's ``getspectrum`` does).

        Parameters
        ----------
        i : int
            Spectrum index, 0-based, in file order.
        check_finite : bool
            Refuse NaN or infinite intensities.

        Returns
        -------
        mz, intensity : ndarray
            The spectrum's m/z (a copy of the shared axis for continuous files) and intensities.

        Raises
        ------
        IndexError
            ``i`` out of range.
        ImzMLNonFiniteError
            Non-finite intensities with ``check_finite``.
        """
        i = int(i)
        if not 0 <= i < self.n_spectra:
            raise IndexError(
                f"{self.path}: spectrum index {i} out of range 0..{self.n_spectra - 1}"
            )
        if self.shared_mz_axis:
            mz = self.mz_axis().copy()
        else:
            mz = self.read_array(self.mz_offsets[i], self.mz_lengths[i], self.mz_dtype)
        it = self.read_array(self.int_offsets[i], self.int_lengths[i], self.int_dtype)
        if check_finite and it.dtype.kind == "f" and not np.isfinite(it).all():
            raise ImzMLNonFiniteError(
                f"{self.path}: spectrum {i} (x={self.coords_xyz[i, 0]}, y={self.coords_xyz[i, 1]}) "
                "has NaN or infinite intensities"
            )
        return mz, it

    @property
    def mz_range(self) -> tuple[float, float]:
        """Return the (min, max) m/z over all spectra, ignoring non-finite values.

        Processed files: from the first and last value of each m/z array (imzML stores them
        ascending); a spectrum whose first value exceeds its last, or holds a non-finite end, is
        read whole.
        """
        if self._mz_range is None:
            if self.shared_mz_axis:
                ax = self.mz_axis().astype(np.float64)
                ax = ax[np.isfinite(ax)]
                self._mz_range = (float(ax.min()), float(ax.max())) if len(ax) else (0.0, 0.0)
            else:
                lo, hi = np.inf, -np.inf
                isz = self.mz_dtype.itemsize
                one = np.empty(1, self.mz_dtype)
                offs, lens = self.mz_offsets, self.mz_lengths
                sub = self.spectrum_subset
                if sub is not None:
                    offs, lens = offs[sub], lens[sub]
                for off, n in zip(offs.tolist(), lens.tolist(), strict=True):
                    if n == 0:
                        continue
                    self.read_bytes_into(one, off)
                    a = float(one[0])
                    self.read_bytes_into(one, off + (n - 1) * isz)
                    b = float(one[0])
                    if not (np.isfinite(a) and np.isfinite(b) and a <= b):
                        v = self.read_array(off, n, self.mz_dtype).astype(np.float64)
                        v = v[np.isfinite(v)]
                        if not len(v):
                            continue
                        a, b = float(v.min()), float(v.max())
                    lo, hi = min(lo, a), max(hi, b)
                self._mz_range = (lo, hi) if np.isfinite(lo) else (0.0, 0.0)
        return self._mz_range

    def _check_raster(self, itemsize: int, what: str) -> None:
        ny, nx = self.shape_yx
        check_allocation(
            float(ny) * float(nx) * itemsize, f"{what} of {ny} x {nx} pixels", self.path
        )

    def pixel_index_image(self) -> np.ndarray:
        """Map each raster pixel to the index of its spectrum.

        Returns
        -------
        ndarray
            ``(Y, X)`` int64 spectrum index, -1 where there is none (the first spectrum where several
            share a pixel).
        """
        self._check_raster(8, "a pixel index image")
        idx = np.full(self.shape_yx, -1, dtype=np.int64)
        keep = ~self.duplicate_mask
        idx[self.rows[keep], self.cols[keep]] = np.flatnonzero(keep)
        return idx

    def measured_mask(self) -> np.ndarray:
        """Return the raster pixels that hold a spectrum.

        Returns
        -------
        ndarray
            ``(Y, X)`` bool.
        """
        self._check_raster(1, "a mask")
        m = np.zeros(self.shape_yx, dtype=bool)
        m[self.rows, self.cols] = True
        return m

    def info(self) -> dict:
        """Return the metadata that ``msi2hist info --json`` prints.

        Returns
        -------
        dict
            Mode, spectrum count, raster shape, pixel size, m/z range, UUID, types, file, duplicate
            pixels, declared shape, repaired offsets (JSON-able).
        """
        return {
            "mode": self.mode,
            "n_spectra": int(self.n_spectra),
            "shape_yx": [int(self.shape_yx[0]), int(self.shape_yx[1])],
            "pixel_size_um": list(self.pixel_size_um) if self.pixel_size_um else None,
            "mz_range": [float(self.mz_range[0]), float(self.mz_range[1])],
            "uuid": str(self.uuid) if self.uuid else None,
            "spectrum_type": self.spectrum_type,
            "mz_dtype": self.mz_dtype.name,
            "intensity_dtype": self.int_dtype.name,
            "file": str(self.path),
            "duplicate_pixels": int(self.n_duplicates),
            "declared_shape_yx": list(self.declared_shape_yx) if self.declared_shape_yx else None,
            "offsets_repaired": bool(self.offsets_repaired),
        }


def open_imzml(path: str | os.PathLike, **kw) -> ImzMLFile:
    """Open an imzML (its ``.ibd`` beside it).

    Parameters
    ----------
    path : path-like
        The ``.imzML`` file.
    **kw
        Options of :class:`ImzMLFile`.

    Returns
    -------
    ImzMLFile
        The open file; use it as a context manager to close it.
    """
    return ImzMLFile(path, **kw)
