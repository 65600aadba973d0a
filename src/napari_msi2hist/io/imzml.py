"""Fast, safe imzML reader.

The XML is parsed once, streaming, with expat; any DTD entity declaration is refused, so neither
"billion laughs" expansion nor external entities can happen. Per-spectrum offsets, lengths and
coordinates are kept in numpy arrays. The ``.ibd`` is never loaded whole: spectra are read with
positioned reads (``os.preadv``), which do not move a shared file position and are therefore safe
from many threads at once (pyimzml's shared seek-and-read handle is known to mix up reads across
threads).

Axis conventions: imzML coordinates are 1-based ``x`` (column) and ``y`` (row). Pixel ``(x, y)`` is
stored at ``row = y - 1, col = x - 1``; image shapes are ``(rows, cols)`` = ``shape_yx``; pixel sizes
are ``pixel_size_um = (y, x)`` in micrometres.
"""

from __future__ import annotations

import os
import re
import threading
import uuid as uuid_mod
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ImzMLError",
    "ImzMLFormatError",
    "ImzMLMissingIbdError",
    "ImzMLTruncatedError",
    "ImzMLOffsetError",
    "ImzMLUUIDMismatchError",
    "ImzMLNonFiniteError",
    "ImzMLUnsupportedError",
    "ImzMLFile",
    "open_imzml",
    "is_imzml_path",
]


class ImzMLError(Exception):
    """Base class of every error this reader raises; the message names the file and the problem."""


class ImzMLFormatError(ImzMLError):
    """The file is not (well-formed) imzML, or uses forbidden XML features such as entities."""


class ImzMLMissingIbdError(ImzMLError):
    """The binary ``.ibd`` file that belongs to the imzML is missing."""


class ImzMLTruncatedError(ImzMLError):
    """The ``.ibd`` is shorter than the data the imzML describes (an interrupted copy, usually)."""


class ImzMLOffsetError(ImzMLError):
    """A spectrum's declared offset/length points outside the ``.ibd``."""


class ImzMLUUIDMismatchError(ImzMLError):
    """The UUID in the imzML differs from the one in the first 16 bytes of the ``.ibd``."""


class ImzMLNonFiniteError(ImzMLError):
    """NaN or infinite intensities were found."""


class ImzMLUnsupportedError(ImzMLError):
    """Valid imzML that this reader does not handle (e.g. compressed binary arrays)."""


# cv accessions (and names, for files that only set names) of binary data types
_DTYPES_BY_ACC = {
    "MS:1000521": np.dtype("<f4"),
    "MS:1000523": np.dtype("<f8"),
    "MS:1000520": np.dtype("<f2"),
    "MS:1000519": np.dtype("<i4"),
    "MS:1000522": np.dtype("<i8"),
    "IMS:1000141": np.dtype("<i4"),
    "IMS:1000142": np.dtype("<i8"),
}
_DTYPES_BY_NAME = {
    "32-bit float": np.dtype("<f4"),
    "64-bit float": np.dtype("<f8"),
    "16-bit float": np.dtype("<f2"),
    "32-bit integer": np.dtype("<i4"),
    "64-bit integer": np.dtype("<i8"),
}
_COMPRESSED = {
    "MS:1000574": "zlib",
    "MS:1002312": "MS-Numpress linear",
    "MS:1002313": "MS-Numpress pic",
    "MS:1002314": "MS-Numpress slof",
}


def is_imzml_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".imzml")


class _Forbidden(Exception):
    pass


@dataclass
class _ArrayDecl:
    kind: str | None = None  # "mz" | "int"
    dtype: np.dtype | None = None
    offset: int | None = None
    length: int | None = None
    enc_length: int | None = None
    compression: str | None = None


@dataclass
class _ParseState:
    groups: dict[str, dict[str, str]] = field(default_factory=dict)
    file_content: dict[str, str] = field(default_factory=dict)
    scan_settings: dict[str, str] = field(default_factory=dict)
    # per spectrum
    xs: list[int] = field(default_factory=list)
    ys: list[int] = field(default_factory=list)
    zs: list[int] = field(default_factory=list)
    mz_off: list[int] = field(default_factory=list)
    mz_len: list[int] = field(default_factory=list)
    int_off: list[int] = field(default_factory=list)
    int_len: list[int] = field(default_factory=list)
    spectrum_types: set = field(default_factory=set)
    mz_dtypes: set = field(default_factory=set)
    int_dtypes: set = field(default_factory=set)
    compressions: set = field(default_factory=set)
    saw_mzml: bool = False
    spectra_at: int | None = None
    spectra_count: int | None = None


class _StopAtSpectra(Exception):
    pass


def _parse_imzml_xml(path: Path, header_only: bool = False) -> _ParseState:
    """Parse with expat. ``header_only`` stops at ``<spectrumList>`` and records its byte offset and
    count in ``st.spectra_at`` / ``st.spectra_count`` (the spectra are then scanned by :func:`_scan_spectra`)."""
    st = _ParseState()
    stack: list[str] = []
    cur_group: dict[str, str] | None = None
    cur_spec: dict | None = None
    cur_array: _ArrayDecl | None = None

    def forbid(*_args):
        raise _Forbidden("entity declarations are not allowed in imzML")

    def apply_params(target: _ArrayDecl, params: dict[str, str]):
        for acc, (name, value) in params.items():
            _apply_array_param(target, acc, name, value)

    def start(name: str, attrs: dict[str, str]):
        nonlocal cur_group, cur_spec, cur_array
        name = name.rsplit(":", 1)[-1]
        stack.append(name)
        if name == "mzML" and len(stack) == 1:
            st.saw_mzml = True
        elif name == "referenceableParamGroup":
            cur_group = {}
            st.groups[attrs.get("id", "")] = cur_group
        elif name == "spectrumList" and header_only:
            st.spectra_at = p.CurrentByteIndex
            st.spectra_count = int(attrs["count"]) if attrs.get("count", "").isdigit() else None
            raise _StopAtSpectra
        elif name == "spectrum":
            cur_spec = {"x": None, "y": None, "z": 1, "mz": None, "int": None, "type": None}
        elif name == "binaryDataArray" and cur_spec is not None:
            cur_array = _ArrayDecl()
            el = attrs.get("encodedLength")
            if el is not None:
                cur_array.enc_length = int(el)
        elif name == "referenceableParamGroupRef":
            ref = attrs.get("ref", "")
            params = st.groups.get(ref, {})
            if cur_array is not None:
                apply_params(cur_array, params)
            elif cur_spec is not None:
                for acc, (pname, _v) in params.items():
                    _spectrum_param(cur_spec, acc, pname, "")
        elif name == "cvParam":
            acc = attrs.get("accession", "")
            pname = attrs.get("name", "")
            value = attrs.get("value", "")
            if cur_group is not None and "referenceableParamGroup" in stack:
                cur_group[acc] = (pname, value)
            elif cur_array is not None:
                _apply_array_param(cur_array, acc, pname, value)
            elif cur_spec is not None:
                _spectrum_param(cur_spec, acc, pname, value)
            elif "fileContent" in stack:
                st.file_content[acc] = value if value else pname
            elif "scanSettings" in stack:
                st.scan_settings[acc] = value

    def end(name: str):
        nonlocal cur_group, cur_spec, cur_array
        name = name.rsplit(":", 1)[-1]
        stack.pop()
        if name == "referenceableParamGroup":
            cur_group = None
        elif name == "binaryDataArray" and cur_spec is not None and cur_array is not None:
            if cur_array.kind in ("mz", "int"):
                cur_spec[cur_array.kind] = cur_array
            cur_array = None
        elif name == "spectrum" and cur_spec is not None:
            _finish_spectrum(st, cur_spec, path)
            cur_spec = None

    p = xml.parsers.expat.ParserCreate()
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.EntityDeclHandler = forbid
    p.UnparsedEntityDeclHandler = forbid
    p.ExternalEntityRefHandler = forbid
    p.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    p.buffer_text = False
    try:
        with open(path, "rb") as fh:
            p.ParseFile(fh)
    except _StopAtSpectra:
        pass
    except _Forbidden as e:
        raise ImzMLFormatError(f"{path}: {e}") from None
    except xml.parsers.expat.ExpatError as e:
        raise ImzMLFormatError(f"{path}: not well-formed XML ({e})") from None
    return st


def _apply_array_param(arr: _ArrayDecl, acc: str, name: str, value: str):
    if acc == "MS:1000514" or name == "m/z array":
        arr.kind = "mz"
    elif acc == "MS:1000515" or name == "intensity array":
        arr.kind = "int"
    elif acc in _DTYPES_BY_ACC:
        arr.dtype = _DTYPES_BY_ACC[acc]
    elif name in _DTYPES_BY_NAME:
        arr.dtype = _DTYPES_BY_NAME[name]
    elif acc == "IMS:1000102":
        arr.offset = int(value)
    elif acc == "IMS:1000103":
        arr.length = int(value)
    elif acc == "IMS:1000104":
        arr.enc_length = int(value)
    elif acc in _COMPRESSED:
        arr.compression = _COMPRESSED[acc]


def _spectrum_param(spec: dict, acc: str, name: str, value: str):
    if acc == "IMS:1000050":
        spec["x"] = int(value)
    elif acc == "IMS:1000051":
        spec["y"] = int(value)
    elif acc == "IMS:1000052":
        spec["z"] = int(value)
    elif acc == "MS:1000127":
        spec["type"] = "centroid"
    elif acc == "MS:1000128":
        spec["type"] = "profile"


def _finish_spectrum(st: _ParseState, spec: dict, path: Path):
    n = len(st.xs)
    if spec["x"] is None or spec["y"] is None:
        raise ImzMLFormatError(f"{path}: spectrum {n} has no position x/y (IMS:1000050/51)")
    mz, it = spec["mz"], spec["int"]
    if mz is None or it is None:
        raise ImzMLFormatError(f"{path}: spectrum {n} lacks an m/z or intensity binaryDataArray")
    for arr, what in ((mz, "m/z"), (it, "intensity")):
        if arr.offset is None or arr.length is None:
            raise ImzMLFormatError(
                f"{path}: spectrum {n} {what} array has no external offset/length (IMS:1000102/103)"
            )
        if arr.dtype is None:
            raise ImzMLFormatError(f"{path}: spectrum {n} {what} array declares no data type")
        if arr.compression:
            st.compressions.add(arr.compression)
    st.xs.append(spec["x"])
    st.ys.append(spec["y"])
    st.zs.append(spec["z"])
    st.mz_off.append(mz.offset)
    st.mz_len.append(mz.length)
    st.int_off.append(it.offset)
    st.int_len.append(it.length)
    st.mz_dtypes.add(mz.dtype)
    st.int_dtypes.add(it.dtype)
    if spec["type"]:
        st.spectrum_types.add(spec["type"])


# two passes over the text: element starts, and cvParam accessions (values or flags)
_RE_TAG = re.compile(
    rb'<(?:(s)pectrum[\s>]|(b)inaryDataArray[\s>]|referenceableParamGroupRef\s+ref="([^"]*)")'
)
_RE_ACC = re.compile(
    rb'accession="(?:IMS:100(0050|0051|0052|0102|0103)"[^>]*?value="([^"]*)"'
    rb'|(MS:100051[45]|MS:100012[78]|MS:10005(?:19|20|21|22|23)|IMS:100014[12]|MS:1000574|MS:100231[234])")'
)


_DTYPE_CODES = [np.dtype("<f4"), np.dtype("<f8"), np.dtype("<f2"), np.dtype("<i4"), np.dtype("<i8")]


def _flag_codes(acc: str, name: str = "") -> tuple[int, int, int, str | None]:
    """(kind 1=mz 2=int 0=none, dtype code+1 or 0, spectrum type 1=centroid 2=profile 0, compression)."""
    probe = _ArrayDecl()
    _apply_array_param(probe, acc, name, "")
    kind = {"mz": 1, "int": 2}.get(probe.kind, 0)
    dt = _DTYPE_CODES.index(probe.dtype) + 1 if probe.dtype is not None else 0
    stype = 1 if acc == "MS:1000127" else 2 if acc == "MS:1000128" else 0
    return kind, dt, stype, probe.compression


def _positions(regex, body) -> tuple[np.ndarray, list]:
    pos, groups = [], []
    for m in regex.finditer(body):
        pos.append(m.start())
        groups.append(m.groups())
    return np.asarray(pos, dtype=np.int64), groups


def _scan_block(body: bytes, st: _ParseState, path: Path) -> bool:
    """Vectorised scan of a block of whole ``<spectrum>`` elements: each token kind is found by a
    literal-prefixed regex (in C) and assigned to its spectrum / binaryDataArray by position with
    ``searchsorted``. Returns False where anything is unusual, so that expat takes over."""
    tag_pos, tags = _positions(_RE_TAG, body)
    kind = np.array([0 if t[0] else 1 if t[1] else 2 for t in tags], dtype=np.int8)
    spec_pos = tag_pos[kind == 0]
    n = len(spec_pos)
    if n == 0:
        return True
    bda_pos = tag_pos[kind == 1]
    nb = len(bda_pos)
    ref_pos = tag_pos[kind == 2]
    ref_names = [t for t in tags if t[2]]
    acc_pos, accs = _positions(_RE_ACC, body)
    is_val = np.array([bool(a[0]) for a in accs], dtype=bool)
    val_pos = acc_pos[is_val]
    vals = [a for a in accs if a[0]]
    flag_pos = acc_pos[~is_val]
    flags = [a for a in accs if not a[0]]
    bda_spec = np.searchsorted(spec_pos, bda_pos, side="right") - 1

    def owners(pos):
        si = np.searchsorted(spec_pos, pos, side="right") - 1
        bi = np.searchsorted(bda_pos, pos, side="right") - 1
        in_b = (bi >= 0) & (bda_spec[np.maximum(bi, 0)] == si)
        return si, np.where(in_b, bi, -1)

    bda_kind = np.zeros(nb, np.int64)
    bda_dt = np.zeros(nb, np.int64)
    spec_type = np.zeros(n, np.int64)

    def apply_codes(si, bi, codes):  # codes: (len, 3) kind, dtype, type
        if len(codes) == 0:
            return
        inb = bi >= 0
        for col, target in ((0, bda_kind), (1, bda_dt)):
            sel = inb & (codes[:, col] > 0)
            target[bi[sel]] = codes[sel, col]
        sel = ~inb & (si >= 0) & (codes[:, 2] > 0)
        spec_type[si[sel]] = codes[sel, 2]

    if len(ref_pos):
        table = {}
        for g in {r[2] for r in ref_names}:
            k = d = t = 0
            for acc, (name, _v) in st.groups.get(g.decode(), {}).items():
                ck, cd, ct, comp = _flag_codes(acc, name)
                if comp:
                    st.compressions.add(comp)
                k, d, t = ck or k, cd or d, ct or t
            table[g] = (k, d, t)
        si, bi = owners(ref_pos)
        apply_codes(
            si, bi, np.array([table[r[2]] for r in ref_names], dtype=np.int64).reshape(-1, 3)
        )
    if len(flag_pos):
        table = {}
        for f in {f[2] for f in flags}:
            ck, cd, ct, comp = _flag_codes(f.decode())
            if comp:
                st.compressions.add(comp)
            table[f] = (ck, cd, ct)
        si, bi = owners(flag_pos)
        apply_codes(si, bi, np.array([table[f[2]] for f in flags], dtype=np.int64).reshape(-1, 3))
    if len(val_pos) == 0:
        return False
    code = np.array([v[0] for v in vals])
    try:
        value = np.array([v[1] for v in vals]).astype(np.int64)
    except ValueError:
        return False
    si, bi = owners(val_pos)
    xyz = np.full((n, 3), -1, dtype=np.int64)
    xyz[:, 2] = 1
    bda_off = np.full(nb, -1, np.int64)
    bda_len = np.full(nb, -1, np.int64)
    for c, col in ((b"0050", 0), (b"0051", 1), (b"0052", 2)):
        sel = (code == c) & (si >= 0)
        xyz[si[sel], col] = value[sel]
    for c, target in ((b"0102", bda_off), (b"0103", bda_len)):
        sel = (code == c) & (bi >= 0)
        target[bi[sel]] = value[sel]
    ok_b = (bda_kind > 0) & (bda_off >= 0) & (bda_len >= 0) & (bda_dt > 0)
    if (xyz[:, :2] < 0).any() or not ok_b.all():
        return False
    mz_b, int_b = bda_kind == 1, bda_kind == 2
    if not (
        (np.bincount(bda_spec[mz_b], minlength=n) == 1).all()
        and (np.bincount(bda_spec[int_b], minlength=n) == 1).all()
    ):
        return False
    order_mz = np.argsort(bda_spec[mz_b])
    order_int = np.argsort(bda_spec[int_b])
    st.xs.extend(xyz[:, 0].tolist())
    st.ys.extend(xyz[:, 1].tolist())
    st.zs.extend(xyz[:, 2].tolist())
    st.mz_off.extend(bda_off[mz_b][order_mz].tolist())
    st.mz_len.extend(bda_len[mz_b][order_mz].tolist())
    st.int_off.extend(bda_off[int_b][order_int].tolist())
    st.int_len.extend(bda_len[int_b][order_int].tolist())
    st.mz_dtypes.update(_DTYPE_CODES[c - 1] for c in np.unique(bda_dt[mz_b]).tolist())
    st.int_dtypes.update(_DTYPE_CODES[c - 1] for c in np.unique(bda_dt[int_b]).tolist())
    st.spectrum_types.update(
        {1: "centroid", 2: "profile"}[t] for t in np.unique(spec_type).tolist() if t
    )
    return True


def _scan_spectra(path: Path, st: _ParseState, block_size: int = 32 * 2**20) -> bool:
    """Scan the spectrum section without per-element Python callbacks (see :func:`_scan_block`).

    The header, where DTDs and entities would live, was parsed by expat, which refused any entity
    declaration, so nothing here can expand one. Returns False when the result cannot be trusted
    (count differs from ``spectrumList/@count``, no closing ``</mzML>``, comments or namespace
    prefixes, values before accessions): the caller then parses the whole file with expat, which is
    slower but handles every valid layout and reports the exact problem of an invalid one."""
    tail = b""
    with open(path, "rb") as fh:
        fh.seek(st.spectra_at)
        while True:
            chunk = fh.read(block_size)
            data = tail + chunk
            if chunk:
                cut = data.rfind(b"</spectrum>")
                if cut < 0:
                    tail = data
                    continue
                cut += len(b"</spectrum>")
                body, tail = data[:cut], data[cut:]
            else:
                body, tail = data, b""
            if b"<!--" in body or not _scan_block(body, st, path):
                return False
            if not chunk:
                break
        end = fh.seek(0, 2)
        fh.seek(max(st.spectra_at, end - 4096))
        end_ok = re.search(rb"</mzML>\s*$", fh.read()) is not None
    if not end_ok or not st.xs:
        return False
    return st.spectra_count is None or st.spectra_count == len(st.xs)


def _parse_uuid(text: str | None) -> uuid_mod.UUID | None:
    if not text:
        return None
    try:
        return uuid_mod.UUID(text.strip().strip("{}"))
    except ValueError:
        return None


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
    pixel_size_um : (y, x) in micrometres or None
    mz_offsets, mz_lengths, int_offsets, int_lengths : (N,) int64 arrays
    mz_dtype, int_dtype : numpy dtypes
    uuid : uuid.UUID or None
    """

    def __init__(
        self,
        path: str | os.PathLike,
        ibd_path: str | os.PathLike | None = None,
        check_uuid: bool = True,
        fast_parse: bool = True,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise ImzMLError(f"{self.path}: file not found")
        self.ibd_path = Path(ibd_path) if ibd_path is not None else self._find_ibd(self.path)
        st = _parse_imzml_xml(self.path, header_only=fast_parse)
        if fast_parse and (st.spectra_at is None or not _scan_spectra(self.path, st)):
            st = _parse_imzml_xml(self.path)
        if not st.saw_mzml:
            raise ImzMLFormatError(f"{self.path}: not an imzML file (no <mzML> root element)")
        if not st.xs:
            raise ImzMLFormatError(f"{self.path}: no spectra with coordinates found (not imzML?)")
        if st.compressions:
            raise ImzMLUnsupportedError(
                f"{self.path}: compressed binary arrays ({', '.join(sorted(st.compressions))}) "
                "are not supported; convert to uncompressed imzML"
            )
        if len(st.mz_dtypes) != 1 or len(st.int_dtypes) != 1:
            raise ImzMLUnsupportedError(f"{self.path}: spectra use different binary data types")
        self.mz_dtype = st.mz_dtypes.pop()
        self.int_dtype = st.int_dtypes.pop()
        fc = st.file_content
        if "IMS:1000030" in fc:
            self.mode = "continuous"
        elif "IMS:1000031" in fc:
            self.mode = "processed"
        else:
            self.mode = "continuous" if len(set(st.mz_off)) == 1 else "processed"
        if len(st.spectrum_types) == 1:
            self.spectrum_type = next(iter(st.spectrum_types))
        elif "MS:1000127" in fc:
            self.spectrum_type = "centroid"
        elif "MS:1000128" in fc:
            self.spectrum_type = "profile"
        else:
            self.spectrum_type = None
        self.uuid = _parse_uuid(fc.get("IMS:1000080"))
        self.coords_xyz = np.column_stack(
            [np.asarray(st.xs, np.int64), np.asarray(st.ys, np.int64), np.asarray(st.zs, np.int64)]
        )
        if (self.coords_xyz[:, :2] < 1).any():
            raise ImzMLFormatError(f"{self.path}: pixel coordinates must be >= 1")
        zs = np.unique(self.coords_xyz[:, 2])
        if len(zs) > 1:
            raise ImzMLUnsupportedError(
                f"{self.path}: 3D imzML (z values {zs[:5].tolist()}...) is not supported"
            )
        self.rows = self.coords_xyz[:, 1] - 1
        self.cols = self.coords_xyz[:, 0] - 1
        ss = st.scan_settings
        decl_x = int(float(ss["IMS:1000042"])) if ss.get("IMS:1000042") else 0
        decl_y = int(float(ss["IMS:1000043"])) if ss.get("IMS:1000043") else 0
        # coordinates may exceed the declared max count: take the larger
        self.shape_yx = (
            max(decl_y, int(self.rows.max()) + 1),
            max(decl_x, int(self.cols.max()) + 1),
        )
        px, py = ss.get("IMS:1000046"), ss.get("IMS:1000047")
        self.pixel_size_um: tuple[float, float] | None = None
        try:
            if px or py:
                fx = float(px) if px else float(py)
                fy = float(py) if py else fx
                if fx > 0 and fy > 0:
                    self.pixel_size_um = (fy, fx)
        except ValueError:
            self.pixel_size_um = None
        self.mz_offsets = np.asarray(st.mz_off, np.int64)
        self.mz_lengths = np.asarray(st.mz_len, np.int64)
        self.int_offsets = np.asarray(st.int_off, np.int64)
        self.int_lengths = np.asarray(st.int_len, np.int64)
        self.shared_mz_axis = bool(
            (self.mz_offsets == self.mz_offsets[0]).all()
            and (self.mz_lengths == self.mz_lengths[0]).all()
        )
        if self.mode == "continuous" and not (self.int_lengths == self.mz_lengths[0]).all():
            raise ImzMLFormatError(
                f"{self.path}: continuous imzML whose intensity arrays differ in length from the m/z axis"
            )
        self._check_ibd(check_uuid)
        self._fd = os.open(self.ibd_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._local = threading.local()
        self._mz_range: tuple[float, float] | None = None
        self._shared_axis: np.ndarray | None = None

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _find_ibd(path: Path) -> Path:
        for cand in (path.with_suffix(".ibd"), path.with_suffix(".IBD"), path.with_suffix(".Ibd")):
            if cand.is_file():
                return cand
        raise ImzMLMissingIbdError(
            f"{path}: the binary file {path.with_suffix('.ibd').name} is missing "
            "(an imzML needs its .ibd next to it, with the same name)"
        )

    def _check_ibd(self, check_uuid: bool):
        size = self.ibd_path.stat().st_size
        self.ibd_size = size
        if size < 16:
            raise ImzMLTruncatedError(
                f"{self.ibd_path}: only {size} bytes; an .ibd starts with a 16-byte UUID"
            )
        mz_end = self.mz_offsets + self.mz_lengths * self.mz_dtype.itemsize
        int_end = self.int_offsets + self.int_lengths * self.int_dtype.itemsize
        bad_off = (self.mz_offsets < 16) | (self.int_offsets < 16)
        if bad_off.any():
            i = int(np.flatnonzero(bad_off)[0])
            raise ImzMLOffsetError(
                f"{self.path}: spectrum {i} has an offset inside the 16-byte UUID header of {self.ibd_path.name}"
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

    # ------------------------------------------------------------------ reading
    def close(self) -> None:
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
        return len(self.int_offsets)

    def read_bytes_into(self, buf: np.ndarray, offset: int) -> None:
        """Fill ``buf`` (a contiguous numpy array) from the ``.ibd`` at ``offset``; thread-safe."""
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
        out = np.empty(int(length), dtype=dtype)
        if length:
            self.read_bytes_into(out, int(offset))
        return out

    def mz_axis(self) -> np.ndarray:
        """The shared m/z axis of a continuous file (float64 copy of the stored values)."""
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
        """Return ``(mz, intensity)`` of spectrum ``i`` in the stored dtypes (as pyimzml does)."""
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
        if self._mz_range is None:
            if self.shared_mz_axis:
                ax = self.mz_axis()
                self._mz_range = (float(ax.min()), float(ax.max())) if len(ax) else (0.0, 0.0)
            else:
                lo, hi = np.inf, -np.inf
                isz = self.mz_dtype.itemsize
                one = np.empty(1, self.mz_dtype)
                for off, n in zip(self.mz_offsets.tolist(), self.mz_lengths.tolist(), strict=True):
                    if n == 0:
                        continue
                    self.read_bytes_into(one, off)
                    lo = min(lo, float(one[0]))
                    self.read_bytes_into(one, off + (n - 1) * isz)
                    hi = max(hi, float(one[0]))
                self._mz_range = (lo, hi) if np.isfinite(lo) else (0.0, 0.0)
        return self._mz_range

    def pixel_index_image(self) -> np.ndarray:
        """(rows, cols) int64 image holding the spectrum index of each pixel, -1 where none."""
        idx = np.full(self.shape_yx, -1, dtype=np.int64)
        idx[self.rows, self.cols] = np.arange(self.n_spectra)
        return idx

    def measured_mask(self) -> np.ndarray:
        m = np.zeros(self.shape_yx, dtype=bool)
        m[self.rows, self.cols] = True
        return m

    def info(self) -> dict:
        """The metadata that ``msi2hist info --json`` prints."""
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
        }


def open_imzml(path: str | os.PathLike, **kw) -> ImzMLFile:
    return ImzMLFile(path, **kw)
