"""A sidecar cache of the parsed imzML index, so that re-opening a large file skips the XML scan.

The cache holds what the XML says per spectrum (coordinates, offsets, lengths) and the few header
values the reader needs, as plain arrays in an ``.npz`` (loaded with ``allow_pickle=False``). It is
written next to the imzML as ``.<name>.msi2hist-index.npz``, or, when that folder is read-only, in
``$XDG_CACHE_HOME/napari-msi2hist/imzml-index/`` (``~/.cache`` without XDG_CACHE_HOME) under a name
derived from the imzML's absolute path.

It is used only when its key matches: size, mtime and ctime (nanoseconds) and inode of both the
imzML and the ``.ibd``, the UUID, and a SHA-1 of the XML header; and when the stored arrays have the
expected shape and dtype and match the SHA-256 stored with them. Anything else (a corrupt, foreign,
truncated or stale cache) is ignored and rebuilt. A cached index is validated by the reader exactly
like a parsed one (lengths, offsets, .ibd size, UUID). Writes are atomic (temporary file, fsync,
rename). Set ``MSI2HIST_INDEX_CACHE=0`` to disable the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ._imzml_xml import ParseState, columns

FORMAT = "napari-msi2hist-imzml-index"
VERSION = 1
ENV_VAR = "MSI2HIST_INDEX_CACHE"
# files with fewer spectra parse in well under a second: no sidecar for them unless asked
MIN_SPECTRA = 5000


def enabled() -> bool:
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "no", "false", "off")


def _stat_key(p: Path) -> list[int]:
    s = p.stat()
    return [s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino]


def make_key(path: Path, ibd_path: Path, st: ParseState) -> dict:
    """Build the values a cache must match: file identities, UUID and a hash of the XML header."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        h.update(fh.read(st.spectra_at or 0))
    return {
        "format": FORMAT,
        "version": VERSION,
        "imzml": _stat_key(path),
        "ibd": _stat_key(ibd_path),
        "uuid": st.file_content.get("IMS:1000080", ""),
        "header_sha1": h.hexdigest(),
    }


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "napari-msi2hist" / "imzml-index"


def candidates(path: Path) -> list[Path]:
    """Where the cache of ``path`` may live: next to it first, then the user cache folder."""
    p = path.resolve()
    name = hashlib.sha1(str(p).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return [p.with_name(f".{p.name}.msi2hist-index.npz"), _user_cache_dir() / f"{name}.npz"]


def _checksum(cols: np.ndarray, meta: bytes) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(cols).data)
    h.update(meta)
    return h.hexdigest()


def _to_bytes(a: np.ndarray) -> bytes:
    if a.dtype != np.uint8 or a.ndim != 1:
        raise ValueError("not a byte array")
    return a.tobytes()


def load(path: Path, key: dict) -> ParseState | None:
    """Load the cached index of ``path`` if a cache with exactly this key is intact; else None."""
    for c in candidates(path):
        try:
            if not c.is_file() or c.stat().st_size > 64 * max(key["imzml"][0], 1 << 20):
                continue
            with np.load(c, allow_pickle=False) as z:
                if set(z.files) != {"key", "meta", "cols"}:
                    continue
                stored = json.loads(_to_bytes(z["key"]).decode())
                if {k: v for k, v in stored.items() if k != "sha256"} != key:
                    continue
                meta_b = _to_bytes(z["meta"])
                cols = z["cols"]
            if cols.dtype != np.int64 or cols.ndim != 2 or cols.shape[0] != 7:
                continue
            if _checksum(cols, meta_b) != stored.get("sha256"):
                continue
            meta = json.loads(meta_b.decode())
            st = ParseState()
            st.file_content = {str(k): str(v) for k, v in meta["file_content"].items()}
            st.scan_settings = {str(k): str(v) for k, v in meta["scan_settings"].items()}
            st.spectrum_types = {str(t) for t in meta["spectrum_types"]}
            st.mz_dtypes = {np.dtype(d) for d in meta["mz_dtypes"]}
            st.int_dtypes = {np.dtype(d) for d in meta["int_dtypes"]}
            st.compressions = {str(t) for t in meta["compressions"]}
            if not all(d.kind in "fiu" for d in st.mz_dtypes | st.int_dtypes):
                continue
            st.saw_mzml = True
            st.blocks = [tuple(cols[k] for k in range(7))]
            return st
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError):
            continue
    return None


def save(path: Path, key: dict, st: ParseState) -> Path | None:
    """Write the index atomically next to ``path`` or in the user cache folder.

    None if neither can be written (the cache is an optimisation: failing to write it is not an
    error).
    """
    cols = np.stack(columns(st)).astype(np.int64, copy=False)
    meta = json.dumps(
        {
            "file_content": st.file_content,
            "scan_settings": st.scan_settings,
            "spectrum_types": sorted(st.spectrum_types),
            "mz_dtypes": sorted(d.str for d in st.mz_dtypes),
            "int_dtypes": sorted(d.str for d in st.int_dtypes),
            "compressions": sorted(st.compressions),
        }
    ).encode()
    stored = dict(key, sha256=_checksum(cols, meta))
    for target in candidates(path):
        tmp = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=target.parent)
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    key=np.frombuffer(json.dumps(stored).encode(), np.uint8),
                    meta=np.frombuffer(meta, np.uint8),
                    cols=cols,
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            return target
        except OSError:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            continue
    return None
