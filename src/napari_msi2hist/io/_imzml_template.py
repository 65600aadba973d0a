"""The template scan: a spectrum list that repeats one spectrum, read at regular-expression speed.

Most imzML writers print every ``<spectrum>`` from one template: the same elements and attributes in
the same order, the same whitespace, only some attribute values (coordinates, offsets, lengths, ids,
indices) differ. :func:`scan_template` takes the first spectrum as that template and reads the whole
list with one compiled pattern built from it, in C. It returns None (the caller then tries the token
scan of :mod:`._imzml_scan`, then the strict parse) unless its answer provably equals the strict
parse's:

* the template (the first spectrum) may hold no comment, CDATA section, processing instruction,
  DOCTYPE or ``&`` reference, and no nested ``spectrum``, ``referenceableParamGroup``, ``mzML``,
  ``run``, ``fileContent`` or ``scanSettings`` element; the header may hold no DOCTYPE;
* the pattern is the template's bytes verbatim except for attribute values that the strict parse
  does not read (any attribute that is not a cvParam's ``accession``/``name``/``value`` or a group
  ref's ``ref``; a cvParam's ``value`` whose accession is not a position, offset or length) and
  hold a digit (ids, indices, encoded lengths, TICs): those match printable ASCII without quotes,
  ``<`` or ``&`` (legal in any attribute value, and ignored by the strict parse);
  and the values of position x/y/z (IMS:1000050/51/52), external offset (IMS:1000102) and external
  array length (IMS:1000103): those match ``-?[0-9]{1,18}`` (what ``int`` reads, always in int64);
* the strict parser itself reads a small document: the header, the ``<spectrumList>`` start tag,
  the template three times (as found; with every read value replaced by a distinct sentinel and
  every ignored value by ``7``; by another sentinel and ``8``), and everything from the last
  ``</spectrumList>`` to the end of the file. It proves the template and the footer well-formed,
  gives the header/footer metadata, array kinds, data types, compressions and spectrum types, and
  says, through the sentinels, which per-spectrum column (x, y, z, offsets, lengths) comes from
  which value of the template and which are the same for every spectrum (defaults, param groups);
  the ignored values must change nothing;
* the matches must tile the spectrum list exactly (summed match lengths equal its length, with only
  whitespace between spectra), and their number must equal the list's ``count`` attribute where
  there is one.

A spectrum list that passes is the template repeated with only the matched values changed: its
well-formedness and meaning follow from the template's, checked by expat, and each spectrum's
columns are the integers at the positions the sentinels named.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ._imzml_errors import ImzMLError
from ._imzml_xml import ParseState, parse_imzml_xml

_FAST_ENCODINGS = {None, "utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"}
# cvParam accessions whose value the strict parse reads (as an integer)
_READ_VALUES = frozenset(
    {"IMS:1000050", "IMS:1000051", "IMS:1000052", "IMS:1000102", "IMS:1000103"}
)
# elements that change the strict parse's state beyond one spectrum: not in a template
_BLOCKED = frozenset(
    {
        b"spectrum",
        b"spectrumList",
        b"referenceableParamGroup",
        b"referenceableParamGroupList",
        b"mzML",
        b"run",
        b"fileContent",
        b"scanSettings",
    }
)
_COLUMNS = ("xs", "ys", "zs", "mz_off", "mz_len", "int_off", "int_len")
_SENTINEL = (7 * 10**18, 8 * 10**18)  # read values in the two probe copies: base + slot index
_IGNORED_PROBE = (b"7", b"8")  # ignored values in the two probe copies

_XML_WS = rb"[ \t\r\n]"
_NAME = rb"[^\s/>\"'=<&]+"
_RE_TAG_NAME = re.compile(rb"<(/?)(" + _NAME + rb")")
_RE_ATTR = re.compile(_XML_WS + rb"+(" + _NAME + rb")" + _XML_WS + rb"*=" + _XML_WS + rb"*([\"'])")
_RE_TAG_END = re.compile(_XML_WS + rb"*(/?)>")
_RE_LIST_START = re.compile(
    rb"<spectrumList((?:"
    + _XML_WS
    + rb"+"
    + _NAME
    + _XML_WS
    + rb"*="
    + _XML_WS
    + rb"*(?:\"[^\"<&]*\"|'[^'<&]*'))*)"
    + _XML_WS
    + rb"*>"
)
_RE_COUNT = re.compile(_XML_WS + rb"count" + _XML_WS + rb"*=" + _XML_WS + rb"*[\"']([^\"']*)[\"']")
_RE_SPECTRUM_END = re.compile(rb"</spectrum" + _XML_WS + rb"*>")
_RE_LEADING_WS = re.compile(_XML_WS + rb"*")
# a value the strict parse reads, and an ignored one (printable ASCII, legal in any attribute)
_READ_RE = rb"(-?[0-9]{1,18})"
_IGNORED_CLASS = rb"[^\"'<&\x00-\x1f\x7f-\xff]*"
_RE_READ_VALUE = re.compile(rb"-?[0-9]{1,18}")
_RE_IGNORED_VALUE = re.compile(_IGNORED_CLASS)
_RE_DIGIT = re.compile(rb"[0-9]")

# bytes read to find the list's start tag and the first spectrum, and the footer at most
_PROBE_BYTES = 4 * 2**20
_MAX_FOOTER = 64 * 2**20
# a template longer than this (or with more slots) is declined: its pattern would be slow to compile
_MAX_TEMPLATE = 1 << 16
_MAX_SLOTS = 4096


class Template:
    """The first spectrum split into literal pieces and value slots.

    ``pieces[0] slot[0] pieces[1] slot[1] ... pieces[-1]`` rebuilds it; ``read[k]`` tells whether the
    strict parse reads slot ``k`` as an integer (else it ignores it).
    """

    def __init__(self, pieces: list[bytes], read: list[bool], values: list[bytes]):
        self.pieces = pieces
        self.read = read
        self.values = values

    def render(self, values: list[bytes]) -> bytes:
        """Return the template with these slot values.

        Parameters
        ----------
        values : list of bytes
            One value per slot.

        Returns
        -------
        bytes
            The spectrum's bytes.
        """
        out = [self.pieces[0]]
        for v, p in zip(values, self.pieces[1:], strict=True):
            out += (v, p)
        return b"".join(out)

    def pattern(self) -> re.Pattern:
        """Compile the pattern of one spectrum followed by whitespace.

        Returns
        -------
        re.Pattern
            One group per value that the strict parse reads, in order. Each slot's class excludes
            the quote that ends it, so only its longest match can succeed and a failing match backs
            off in linear time (no possessive quantifiers: they need Python 3.11).
        """
        parts = [re.escape(self.pieces[0])]
        for read, p in zip(self.read, self.pieces[1:], strict=True):
            parts += (_READ_RE if read else _IGNORED_CLASS, re.escape(p))
        parts.append(_XML_WS + rb"*")
        return re.compile(b"".join(parts))


def split_template(t0: bytes) -> Template | None:
    """Split the first spectrum into literal pieces and value slots.

    Parameters
    ----------
    t0 : bytes
        From ``<spectrum`` to its ``</spectrum>``.

    Returns
    -------
    Template or None
        None where the spectrum holds something the template scan does not take (see the module
        docstring).
    """
    if b"<!" in t0 or b"<?" in t0 or b"&" in t0:
        return None
    slots: list[tuple[int, int, bool]] = []
    pos, first = 0, True
    while True:
        lt = t0.find(b"<", pos)
        if lt < 0:
            break
        m = _RE_TAG_NAME.match(t0, lt)
        if m is None:
            return None
        closing, local = m.group(1), m.group(2).rsplit(b":", 1)[-1]
        if first:
            if closing or local != b"spectrum":
                return None
            first = False
        elif not closing and local in _BLOCKED:
            return None
        p = m.end()
        attrs: list[tuple[bytes, int, int]] = []
        while not closing:
            a = _RE_ATTR.match(t0, p)
            if a is None:
                break
            vs = a.end()
            ve = t0.find(a.group(2), vs)
            if ve < 0:
                return None
            attrs.append((a.group(1), vs, ve))
            p = ve + 1
        e = _RE_TAG_END.match(t0, p)
        if e is None or (closing and e.group(1)):
            return None
        pos = e.end()
        names = {n: t0[vs:ve] for n, vs, ve in attrs}
        cv = local == b"cvParam"
        for n, vs, ve in attrs:
            v = t0[vs:ve]
            if (
                cv
                and n == b"value"
                and names.get(b"accession", b"").decode("latin-1") in _READ_VALUES
            ):
                if _RE_READ_VALUE.fullmatch(v) is None:
                    return None
                slots.append((vs, ve, True))
            elif (cv and n in (b"accession", b"name")) or (
                local == b"referenceableParamGroupRef" and n == b"ref"
            ):
                continue
            elif _RE_DIGIT.search(v) and _RE_IGNORED_VALUE.fullmatch(v):
                slots.append((vs, ve, False))
    if first or not t0.endswith(b">"):
        return None
    pieces, at = [], 0
    for vs, ve, _r in slots:
        pieces.append(t0[at:vs])
        at = ve
    pieces.append(t0[at:])
    return Template(pieces, [r for _s, _e, r in slots], [t0[vs:ve] for vs, ve, _r in slots])


def _probe_values(tpl: Template, k: int) -> list[bytes]:
    return [b"%d" % (_SENTINEL[k] + j) if r else _IGNORED_PROBE[k] for j, r in enumerate(tpl.read)]


def _column_sources(tpl: Template, ms: ParseState) -> list[tuple[str, int]] | None:
    """For each per-spectrum column: ("slot", k) or ("const", value), from the probe parse."""
    out = []
    for name in _COLUMNS:
        v0, va, vb = getattr(ms, name)
        if va == vb:
            if v0 != va:
                return None
            out.append(("const", v0))
            continue
        j = va - _SENTINEL[0]
        if not (0 <= j < len(tpl.read) and tpl.read[j] and vb == _SENTINEL[1] + j):
            return None
        if v0 != int(tpl.values[j]):
            return None
        out.append(("slot", j))
    return out


def _footer_start(fh, size: int, lo: int) -> int | None:
    """Byte offset of the last ``</spectrumList`` at or after ``lo``, searched from the end."""
    win = 1 << 16
    while True:
        start = max(lo, size - win)
        fh.seek(start)
        tail = fh.read(size - start)
        i = tail.rfind(b"</spectrumList")
        if i >= 0:
            return start + i
        if start == lo or win >= _MAX_FOOTER:
            return None
        win *= 4


def scan_template(path: Path, head: ParseState, block_size: int = 16 * 2**20) -> ParseState | None:
    """Read the spectrum list as one repeated template, or tell that it is not one.

    Parameters
    ----------
    path : Path
        The ``.imzML``.
    head : ParseState
        From ``parse_imzml_xml(path, header_only=True)``.
    block_size : int
        Bytes of the spectrum list matched at a time (bounds the memory).

    Returns
    -------
    ParseState or None
        What the strict parse of the whole file returns, the spectra as one block; None where
        that cannot be proven (see the module docstring).
    """
    at = head.spectra_at
    if at is None or head.encoding not in _FAST_ENCODINGS:
        return None
    if head.first_byte[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return None
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(at)
        probe = fh.read(1 << 16)
        if len(header) != at or b"<!DOCTYPE" in header:
            return None
        e = _RE_SPECTRUM_END.search(probe)
        if e is None:  # a long first spectrum: look further
            probe += fh.read(_PROBE_BYTES - len(probe))
        m = _RE_LIST_START.match(probe)
        if m is None:
            return None
        list_tag = probe[: m.end()]
        first = _RE_LEADING_WS.match(probe, m.end()).end()
        e = _RE_SPECTRUM_END.search(probe, first)
        if e is None or not probe.startswith(b"<spectrum", first):
            return None
        t0 = probe[first : e.end()]
        end = _footer_start(fh, size, at + e.end())
        if end is None:
            return None
        fh.seek(end)
        footer = fh.read(size - end)
        if len(t0) > _MAX_TEMPLATE:
            return None
        tpl = split_template(t0)
        if tpl is None or len(tpl.read) > _MAX_SLOTS:
            return None
        mini = b"".join(
            (header, list_tag, t0, tpl.render(_probe_values(tpl, 0)))
            + (tpl.render(_probe_values(tpl, 1)), footer)
        )
        try:
            ms = parse_imzml_xml(path, data=mini)
        except ImzMLError:
            return None
        if not ms.saw_mzml or len(ms.xs) != 3 or ms.blocks:
            return None
        sources = _column_sources(tpl, ms)
        if sources is None:
            return None
        got = _match_list(fh, at + first, end, tpl, sources, block_size)
    if got is None:
        return None
    n, cols = got
    c = _RE_COUNT.search(list_tag)
    if c is not None and c.group(1) != str(n).encode():
        return None
    for name in _COLUMNS:
        setattr(ms, name, [])
    ms.blocks = [tuple(cols)]
    return ms


def _match_list(fh, start: int, end: int, tpl: Template, sources, block_size: int):
    """Match the spectra in ``[start, end)`` one after the other; (count, 7 int64 columns) or None.

    Each match starts where the previous one ended, and the last one ends at ``end``: the matches
    tile the list exactly.
    """
    match = tpl.pattern().match
    prefix = tpl.pieces[0]
    n_read = sum(tpl.read)
    tables: list[np.ndarray] = []
    n = 0
    fh.seek(start)
    remaining = end - start
    carry = b""
    while True:
        chunk = fh.read(min(block_size, remaining))
        remaining -= len(chunk)
        data = carry + chunk if carry else chunk
        if remaining > 0:
            if not chunk:
                return None  # the file shrank
            stop = data.rfind(prefix)
            if stop <= 0:
                if len(data) > 4 * block_size:
                    return None  # no spectrum start in 4 blocks: not this structure
                carry = data
                continue
        else:
            stop = len(data)
        values: list[bytes] = []
        add = values.extend
        pos = k = 0
        while pos < stop:
            m = match(data, pos, stop)
            if m is None:
                return None  # something here differs from the template
            add(m.groups())
            pos = m.end()
            k += 1
        if n_read:
            # every value matched -?[0-9]{1,18}: exact in int64 whichever way it is parsed
            t = np.fromstring(b" ".join(values), dtype=np.int64, sep=" ")
            if t.size != k * n_read:
                return None
            tables.append(t.reshape(k, n_read))
        n += k
        carry = data[stop:]
        if remaining <= 0:
            break
    table = np.concatenate(tables) if tables else np.zeros((n, 0), np.int64)
    col_of = np.cumsum(tpl.read) - 1  # slot index -> column of ``table``
    out = []
    for kind, v in sources:
        if kind == "const":
            out.append(np.full(n, v, np.int64))
        else:
            out.append(np.ascontiguousarray(table[:, col_of[v]]))
    return n, out
