"""The imzML XML: the strict expat parse that defines what a file means.

Any DTD entity declaration is refused, so neither "billion laughs" expansion nor external entities
can happen. The fast scan of the spectrum list that must agree with this parse is in
:mod:`._imzml_scan`.
"""

from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._imzml_errors import ImzMLFormatError

# cv accessions of binary data types; names are used only where a cvParam has no accession
DTYPES_BY_ACC = {
    "MS:1000521": np.dtype("<f4"),
    "MS:1000523": np.dtype("<f8"),
    "MS:1000520": np.dtype("<f2"),
    "MS:1000519": np.dtype("<i4"),
    "MS:1000522": np.dtype("<i8"),
    "IMS:1000141": np.dtype("<i4"),
    "IMS:1000142": np.dtype("<i8"),
}
DTYPES_BY_NAME = {
    "32-bit float": np.dtype("<f4"),
    "64-bit float": np.dtype("<f8"),
    "16-bit float": np.dtype("<f2"),
    "32-bit integer": np.dtype("<i4"),
    "64-bit integer": np.dtype("<i8"),
}
COMPRESSED = {
    "MS:1000574": "zlib",
    "MS:1002312": "MS-Numpress linear",
    "MS:1002313": "MS-Numpress pic",
    "MS:1002314": "MS-Numpress slof",
}
_INT64 = 2**63


class _Forbidden(Exception):
    pass


class _StopAtSpectra(Exception):
    pass


@dataclass
class ArrayDecl:
    kind: str | None = None  # "mz" | "int"
    dtype: np.dtype | None = None
    offset: int | None = None
    length: int | None = None
    compression: str | None = None


@dataclass
class ParseState:
    groups: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    file_content: dict[str, str] = field(default_factory=dict)
    scan_settings: dict[str, str] = field(default_factory=dict)
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
    blocks: list = field(default_factory=list)  # fast scan: (x, y, z, mz off/len, int off/len)
    saw_mzml: bool = False
    spectra_at: int | None = None
    encoding: str | None = None
    first_byte: bytes = b""


_COLUMNS = ("xs", "ys", "zs", "mz_off", "mz_len", "int_off", "int_len")


def columns(st: ParseState) -> list[np.ndarray]:
    """Return the seven per-spectrum int64 columns.

    The columns are x, y, z, m/z offset, length, intensity offset, length: spectra parsed by expat
    first, then the fast scan's blocks, in document order.
    """
    out = []
    for k, name in enumerate(_COLUMNS):
        parts = [np.asarray(getattr(st, name), np.int64)] + [b[k] for b in st.blocks]
        out.append(np.concatenate(parts) if len(parts) > 1 else parts[0])
    return out


def n_spectra(st: ParseState) -> int:
    return len(st.xs) + sum(len(b[0]) for b in st.blocks)


def _int(value: str, what: str, path: Path, n: int) -> int:
    try:
        v = int(value)
    except ValueError:
        raise ImzMLFormatError(
            f"{path}: spectrum {n}: {what} {value[:40]!r} is not an integer"
        ) from None
    if not -_INT64 <= v < _INT64:
        raise ImzMLFormatError(f"{path}: spectrum {n}: {what} {value[:40]} is out of range")
    return v


def apply_array_param(arr: ArrayDecl, acc: str, name: str, value: str, path: Path, n: int):
    """One cvParam inside a binaryDataArray (or a param group it references)."""
    by_name = name if not acc else ""
    if acc == "MS:1000514" or by_name == "m/z array":
        arr.kind = "mz"
    elif acc == "MS:1000515" or by_name == "intensity array":
        arr.kind = "int"
    elif acc in DTYPES_BY_ACC:
        arr.dtype = DTYPES_BY_ACC[acc]
    elif by_name in DTYPES_BY_NAME:
        arr.dtype = DTYPES_BY_NAME[by_name]
    elif acc == "IMS:1000102":
        arr.offset = _int(value, "external offset", path, n)
    elif acc == "IMS:1000103":
        arr.length = _int(value, "external array length", path, n)
    elif acc in COMPRESSED:
        arr.compression = COMPRESSED[acc]


def _spectrum_param(spec: dict, acc: str, value: str, path: Path, n: int):
    if acc == "IMS:1000050":
        spec["x"] = _int(value, "position x", path, n)
    elif acc == "IMS:1000051":
        spec["y"] = _int(value, "position y", path, n)
    elif acc == "IMS:1000052":
        spec["z"] = _int(value, "position z", path, n)
    elif acc == "MS:1000127":
        spec["type"] = "centroid"
    elif acc == "MS:1000128":
        spec["type"] = "profile"


def _finish_spectrum(st: ParseState, spec: dict, path: Path):
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


def _new_parser() -> xml.parsers.expat.XMLParserType:
    def forbid(*_args):
        raise _Forbidden("entity declarations are not allowed in imzML")

    p = xml.parsers.expat.ParserCreate()
    p.EntityDeclHandler = forbid
    p.UnparsedEntityDeclHandler = forbid
    p.ExternalEntityRefHandler = forbid
    p.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    return p


def _not_xml_message(path: Path, e: Exception, first: bytes) -> str:
    if not first.lstrip(b"\xef\xbb\xbf\xff\xfe\x00 \t\r\n").startswith(b"<"):
        return f"{path}: not an imzML file (the content is not XML)"
    return f"{path}: not well-formed XML ({e})"


def _run(p, path: Path, first: bytes, data: bytes | None = None):
    try:
        if data is not None:
            p.Parse(data, True)
        else:
            with open(path, "rb") as fh:
                p.ParseFile(fh)
    except _StopAtSpectra:
        pass
    except _Forbidden as e:
        raise ImzMLFormatError(f"{path}: {e}") from None
    except xml.parsers.expat.ExpatError as e:
        raise ImzMLFormatError(_not_xml_message(path, e, first)) from None
    except RecursionError:  # pragma: no cover - expat does not recurse; kept for safety
        raise ImzMLFormatError(f"{path}: XML nested too deeply") from None


def parse_imzml_xml(path: Path, header_only: bool = False, data: bytes | None = None) -> ParseState:
    """Parse an imzML strictly with expat.

    ``header_only`` stops at ``<spectrumList>`` and records its byte offset in ``st.spectra_at``
    (the spectra are then read by :func:`scan_spectra`). ``data``: parse these bytes instead of
    the file's (``path`` then only names the file in messages).
    """
    st = ParseState()
    if data is not None:
        st.first_byte = data[:64]
    else:
        with open(path, "rb") as fh:
            st.first_byte = fh.read(64)
    stack: list[str] = []
    cur_group: dict | None = None
    cur_spec: dict | None = None
    cur_array: ArrayDecl | None = None

    def n_spec() -> int:
        return len(st.xs)

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
            raise _StopAtSpectra
        elif name == "spectrum":
            cur_spec = {"x": None, "y": None, "z": 1, "mz": None, "int": None, "type": None}
        elif name == "binaryDataArray" and cur_spec is not None:
            cur_array = ArrayDecl()
        elif name == "referenceableParamGroupRef":
            params = st.groups.get(attrs.get("ref", ""), {})
            for acc, (pname, value) in params.items():
                if cur_array is not None:
                    apply_array_param(cur_array, acc, pname, value, path, n_spec())
                elif cur_spec is not None:
                    _spectrum_param(cur_spec, acc, value, path, n_spec())
        elif name == "cvParam":
            acc = attrs.get("accession", "")
            pname = attrs.get("name", "")
            value = attrs.get("value", "")
            if cur_group is not None and "referenceableParamGroup" in stack:
                cur_group[acc] = (pname, value)
            elif cur_array is not None:
                apply_array_param(cur_array, acc, pname, value, path, n_spec())
            elif cur_spec is not None:
                _spectrum_param(cur_spec, acc, value, path, n_spec())
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

    def decl(_version, encoding, _standalone):
        st.encoding = encoding.lower() if encoding else None

    p = _new_parser()
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.XmlDeclHandler = decl
    p.buffer_text = False
    _run(p, path, st.first_byte, data)
    return st
