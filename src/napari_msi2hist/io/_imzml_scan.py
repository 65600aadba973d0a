"""The token scan of the imzML spectrum list, used only where it agrees with the strict parse.

It runs where the template scan (:mod:`._imzml_template`, for lists that repeat their first spectrum)
declines, and before the strict parse.

The fast path (:func:`scan_spectra`) finds the per-spectrum values with regular expressions in C and
assigns them to spectra and arrays by position. It is used only where it provably gives the same
answer as the strict parse; it returns False (and the caller runs the strict parse) otherwise:

* the whole file must be well-formed XML: checked first by expat with no per-element Python
  callbacks (C speed), which also reports comments, processing instructions and CDATA sections in
  the spectrum list; any of those sends the file to the strict parse;
* with no comment/PI/CDATA, no ``'`` and no ``>`` outside tag ends, every ``<`` starts a tag and
  every double-quoted ``accession="..."``/``value="..."`` found is a real attribute;
* namespace prefixes, whitespace around ``=``, a cvParam without an accession, a param group,
  file content or scan settings inside the spectrum list, self-closing or nested spectra/arrays,
  a value that is not a canonical decimal integer, a repeated or conflicting parameter: all fall
  back to the strict parse.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from ._imzml_errors import ImzMLFormatError
from ._imzml_xml import (
    COMPRESSED,
    ArrayDecl,
    ParseState,
    _new_parser,
    _run,
    apply_array_param,
    n_spectra,
)

_FAST_ENCODINGS = {None, "utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"}


def _check_well_formed(path: Path, spectra_at: int, first: bytes) -> bool:
    """Parse the whole file with expat at C speed (no element callbacks).

    Raises nothing: returns False when the file is not well-formed or holds comments, PIs or CDATA
    in the spectrum list.
    """
    seen = []
    p = _new_parser()

    def flag(*_a):
        if p.CurrentByteIndex >= spectra_at:
            seen.append(True)

    p.CommentHandler = flag
    p.ProcessingInstructionHandler = flag
    p.StartCdataSectionHandler = flag
    try:
        _run(p, path, first)
    except ImzMLFormatError:
        return False
    return not seen


# one pass, tokens in document order (their index stands in for their position). Groups: element
# name (spectrum/array start or end), "r" + name of a group ref, accession + value of a cvParam
_CODES = (
    rb"IMS:100(?:0050|0051|0052|0102|0103)|MS:100051[45]|MS:100012[78]|MS:10005(?:19|20|21|22|23)"
    rb"|IMS:100014[12]|MS:1000574|MS:100231[234]"
)


def _attrs_except(name: bytes, possessive: bool) -> bytes:
    """Whole attributes other than ``name``; skipped possessively where the engine allows it.

    Possessive repetition (Python >= 3.11) only saves backtracking: the repeated group can never
    take the attribute ``name`` (negative lookahead), so the plain greedy form (Python 3.10) matches
    exactly the same text.
    """
    return rb"(?:\s+(?!" + name + rb'=)[^\s=>]+="[^"]*")*' + (rb"+" if possessive else b"")


def token_pattern(possessive: bool = sys.version_info >= (3, 11)) -> re.Pattern:
    """Compile the token scan's pattern.

    Parameters
    ----------
    possessive : bool
        Use possessive repetition (needs Python >= 3.11; the default where available).

    Returns
    -------
    re.Pattern
        Five groups: tag, group-ref marker, ref, accession, value.
    """
    return re.compile(
        rb"<(?:(spectrum|/spectrum|binaryDataArray|/binaryDataArray)[\s/>]"
        rb"|(r)eferenceableParamGroupRef"
        + _attrs_except(rb"ref", possessive)
        + rb'\s+ref="([^"]*)"'
        rb"|cvParam"
        + _attrs_except(rb"accession", possessive)
        + rb'\s+accession="('
        + _CODES
        + rb')"'
        rb"(?:" + _attrs_except(rb"value", possessive) + rb'\s+value="([^"]*)")?)'
    )


_RE_TOK = token_pattern()
_TAG_KINDS = {b"spectrum": 0, b"/spectrum": 1, b"binaryDataArray": 2, b"/binaryDataArray": 3}
_VALUE_ACCS = (b"0050", b"0051", b"0052", b"0102", b"0103")
# any of these inside the spectrum list: leave it to the strict parse
# (one literal-prefixed regex, so the engine skips between '<'; whitespace around '=' by find)
_RE_UNUSUAL = re.compile(
    rb"<(?:/?[A-Za-z_][\w.-]*:|(?:referenceableParamGroup|fileContent|scanSettings|mzML)[\s/>])"
)
# a cvParam without accession counts by its name (strict parse): only these names matter
_RE_SPECIAL_NAME = re.compile(
    rb'name="(?:m/z array|intensity array|(?:16|32|64)-bit float|(?:32|64)-bit integer)"'
)
_RE_NO_ACCESSION = re.compile(rb'<cvParam(?![^>]*\saccession=")')
_WS = np.array([32, 9, 10, 13], np.uint8)


def _spaced_eq(body: bytes) -> bool:
    """Whitespace before or after any '=' (legal XML that the value regexes do not expect)."""
    arr = np.frombuffer(body, np.uint8)
    eq = np.flatnonzero(arr == 61)
    if len(eq) == 0:
        return False
    near = np.concatenate([arr[eq[eq > 0] - 1], arr[eq[eq < len(arr) - 1] + 1]])
    return bool(np.isin(near, _WS).any())


_COMPRESSION_CODES = list(COMPRESSED.values())
DTYPE_CODES = [np.dtype("<f4"), np.dtype("<f8"), np.dtype("<f2"), np.dtype("<i4"), np.dtype("<i8")]


def _flag_codes(acc: str) -> tuple[int, int, int, int]:
    """(kind 1=mz 2=int, dtype code+1, spectrum type 1=centroid 2=profile, compression code+1)."""
    probe = ArrayDecl()
    apply_array_param(probe, acc, "", "", Path(), 0)
    kind = {"mz": 1, "int": 2}.get(probe.kind, 0)
    dt = DTYPE_CODES.index(probe.dtype) + 1 if probe.dtype is not None else 0
    stype = 1 if acc == "MS:1000127" else 2 if acc == "MS:1000128" else 0
    comp = _COMPRESSION_CODES.index(probe.compression) + 1 if probe.compression else 0
    return kind, dt, stype, comp


def _alternate(starts: np.ndarray, ends: np.ndarray) -> bool:
    """Tell whether starts and ends interleave strictly: s0 < e0 < s1 < e1 < ..."""
    if len(starts) != len(ends):
        return False
    if len(starts) == 0:
        return True
    seq = np.empty(2 * len(starts), np.int64)
    seq[0::2], seq[1::2] = starts, ends
    return bool((np.diff(seq) > 0).all())


def _scan_block(body: bytes, st: ParseState) -> bool:
    """Scan a block of whole ``<spectrum>`` elements, vectorised (see the module docstring).

    Returns False where the result might differ from the strict parse.
    """
    if (
        b"'" in body
        or body.count(b"<") != body.count(b">")
        or _spaced_eq(body)
        or _RE_UNUSUAL.search(body) is not None
        or (_RE_SPECIAL_NAME.search(body) and _RE_NO_ACCESSION.search(body))
    ):
        return False
    toks = _RE_TOK.findall(body)
    if not toks:
        return True
    cols = np.array(toks).reshape(len(toks), 5)  # bytes, one column per group
    kind = np.full(len(toks), -1, np.int8)
    for name, k in _TAG_KINDS.items():
        kind[cols[:, 0] == name] = k
    kind[cols[:, 1] == b"r"] = 4
    accs = cols[:, 3]
    has_acc = accs != b""
    acc_codes = np.zeros(len(toks), "S4")
    if has_acc.any():
        uniq, inv = np.unique(accs[has_acc], return_inverse=True)
        is_value = np.array([u.startswith(b"IMS:100") and u[-4:] in _VALUE_ACCS for u in uniq])
        kind[np.flatnonzero(has_acc)] = np.where(is_value[inv.reshape(-1)], 5, 6)
        acc_codes[has_acc] = np.array([u[-4:] for u in uniq], "S4")[inv.reshape(-1)]
    tag_pos = np.arange(len(toks), dtype=np.int64)
    spec_s, spec_e = tag_pos[kind == 0], tag_pos[kind == 1]
    bda_s, bda_e = tag_pos[kind == 2], tag_pos[kind == 3]
    if not _alternate(spec_s, spec_e) or not _alternate(bda_s, bda_e):
        return False
    n, nb = len(spec_s), len(bda_s)
    if n == 0:
        return nb == 0 and not (kind == 4).any()
    bda_spec = np.searchsorted(spec_s, bda_s, side="right") - 1
    if (bda_spec < 0).any() or (bda_e[bda_spec >= 0] > spec_e[np.maximum(bda_spec, 0)]).any():
        return False  # an array outside every spectrum, or crossing a spectrum's end

    def owners(pos):
        si = np.searchsorted(spec_s, pos, side="right") - 1
        si = np.where((si >= 0) & (pos < spec_e[np.maximum(si, 0)]), si, -1)
        bi = np.searchsorted(bda_s, pos, side="right") - 1
        in_b = (bi >= 0) & (pos < bda_e[np.maximum(bi, 0)])
        return si, np.where(in_b, bi, -1)

    # flags from group refs and cvParams: (owner spectrum, owner array, codes[4])
    rows_s, rows_b, rows_c = [], [], []
    ref_sel = kind == 4
    if ref_sel.any():
        table = {}
        refs = cols[ref_sel, 2].tolist()
        for g in set(refs):
            codes = np.zeros(4, np.int64)
            for acc in st.groups.get(g.decode("latin-1"), {}):
                if acc.startswith("IMS:1000") and acc[-4:].encode() in _VALUE_ACCS:
                    return False
                c = np.array(_flag_codes(acc))
                if ((codes > 0) & (c > 0)).any():
                    return False
                codes = np.maximum(codes, c)
            table[g] = codes
        si, bi = owners(tag_pos[ref_sel])
        rows_s.append(si)
        rows_b.append(bi)
        rows_c.append(np.array([table[r] for r in refs], np.int64).reshape(-1, 4))
    flag_sel = kind == 6
    flags = accs[flag_sel]
    if len(flags):
        uniq, inv = np.unique(flags, return_inverse=True)
        table = np.array([_flag_codes(f.decode()) for f in uniq.tolist()], np.int64)
        si, bi = owners(tag_pos[flag_sel])
        rows_s.append(si)
        rows_b.append(bi)
        rows_c.append(table[inv.reshape(-1)].reshape(-1, 4))
    bda_codes = np.zeros((nb, 4), np.int64)
    spec_type = np.zeros(n, np.int64)
    if rows_s:
        si, bi, codes = np.concatenate(rows_s), np.concatenate(rows_b), np.concatenate(rows_c)
        inb = bi >= 0
        for col in (0, 1, 3):
            sel = inb & (codes[:, col] > 0)
            if (np.bincount(bi[sel], minlength=nb) > 1).any():
                return False  # set twice: order matters, leave it to the strict parse
            bda_codes[bi[sel], col] = codes[sel, col]
        sel = ~inb & (si >= 0) & (codes[:, 2] > 0)
        if (np.bincount(si[sel], minlength=n) > 1).any():
            return False
        spec_type[si[sel]] = codes[sel, 2]
    # values
    val_sel = kind == 5
    if not val_sel.any():
        return False
    code = acc_codes[val_sel]
    raw = cols[val_sel, 4]  # b"" where value is missing: not an integer, falls back
    try:
        value = raw.astype(np.int64)
    except (ValueError, OverflowError):
        return False
    if not (value.astype(raw.dtype) == raw).all():
        return False  # not a canonical decimal integer ("+5", " 5", "05"): strict parse decides
    si, bi = owners(tag_pos[val_sel])
    xyz = np.zeros((n, 3), dtype=np.int64)
    xyz[:, 2] = 1
    for c, col in ((b"0050", 0), (b"0051", 1), (b"0052", 2)):
        sel = (code == c) & (si >= 0) & (bi < 0)
        cnt = np.bincount(si[sel], minlength=n)
        if (cnt > 1).any() or (col < 2 and (cnt == 0).any()):
            return False
        xyz[si[sel], col] = value[sel]
    bda_off = np.zeros(nb, np.int64)
    bda_len = np.zeros(nb, np.int64)
    for c, target in ((b"0102", bda_off), (b"0103", bda_len)):
        sel = (code == c) & (bi >= 0)
        cnt = np.bincount(bi[sel], minlength=nb)
        if (cnt > 1).any():
            return False
        has = cnt == 1
        target[bi[sel]] = value[sel]
        # arrays that end up as m/z or intensity must carry both values
        if (~has & (bda_codes[:, 0] > 0)).any():
            return False
    mz_b, int_b = bda_codes[:, 0] == 1, bda_codes[:, 0] == 2
    if not (
        (np.bincount(bda_spec[mz_b], minlength=n) == 1).all()
        and (np.bincount(bda_spec[int_b], minlength=n) == 1).all()
        and (bda_codes[mz_b | int_b, 1] > 0).all()
    ):
        return False
    order_mz = np.argsort(bda_spec[mz_b], kind="stable")
    order_int = np.argsort(bda_spec[int_b], kind="stable")
    st.blocks.append(
        (
            xyz[:, 0].copy(),
            xyz[:, 1].copy(),
            xyz[:, 2].copy(),
            bda_off[mz_b][order_mz],
            bda_len[mz_b][order_mz],
            bda_off[int_b][order_int],
            bda_len[int_b][order_int],
        )
    )
    st.mz_dtypes.update(DTYPE_CODES[c - 1] for c in np.unique(bda_codes[mz_b, 1]).tolist())
    st.int_dtypes.update(DTYPE_CODES[c - 1] for c in np.unique(bda_codes[int_b, 1]).tolist())
    comps = np.unique(bda_codes[mz_b | int_b, 3])
    st.compressions.update(_COMPRESSION_CODES[c - 1] for c in comps.tolist() if c)
    st.spectrum_types.update(
        {1: "centroid", 2: "profile"}[t] for t in np.unique(spec_type).tolist() if t
    )
    return True


def scan_spectra(path: Path, st: ParseState, block_size: int = 16 * 2**20) -> bool:
    """Scan the spectrum section without per-element Python callbacks.

    ``st`` comes from ``parse_imzml_xml(path, header_only=True)``. Returns False when the result
    could differ from the strict parse (see the module docstring); the caller then runs it.
    """
    if st.spectra_at is None or st.encoding not in _FAST_ENCODINGS:
        return False
    if st.first_byte[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return False
    if not _check_well_formed(path, st.spectra_at, st.first_byte):
        return False
    n_header = n_spectra(st)
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
            if not _scan_block(body, st):
                return False
            if not chunk:
                break
    return n_spectra(st) > n_header
