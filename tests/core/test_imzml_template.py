"""The template scan (io/_imzml_template.py) gives exactly what the strict parse gives, or nothing.

Compared on every seed of the mutation corpus, on the corpus itself, on targeted edits of one
spectrum in the middle of a file (each must either leave the result unchanged or send the file to the
other parsers, with the same outcome as the strict parse), and against pyimzml as an independent
reference.
"""

import re
import shutil
import warnings

import numpy as np
import pytest
from imzml_corpus import Case, build_corpus, load_seeds

from napari_msi2hist.io._imzml_template import scan_template, split_template
from napari_msi2hist.io._imzml_xml import columns, parse_imzml_xml
from napari_msi2hist.io.imzml import ImzMLFile
from napari_msi2hist.io.imzml_writer import ImzMLWriter


def _state_key(st):
    return (
        [c.tolist() for c in columns(st)],
        sorted(d.str for d in st.mz_dtypes),
        sorted(d.str for d in st.int_dtypes),
        sorted(st.spectrum_types),
        sorted(st.compressions),
        st.file_content,
        st.scan_settings,
        st.groups,
        st.saw_mzml,
    )


def _template_or_none(path):
    """(template state or None, strict state or the strict parse's error)."""
    try:
        head = parse_imzml_xml(path, header_only=True)
    except Exception as e:  # noqa: BLE001 - the header already fails: no template either
        return None, (type(e).__name__, str(e))
    tst = scan_template(path, head)
    try:
        ref = parse_imzml_xml(path)
    except Exception as e:  # noqa: BLE001 - compared by type and message
        return tst, (type(e).__name__, str(e))
    return tst, ref


def _assert_template_agrees(path):
    """The template scan either declines or equals the strict parse; returns whether it was used."""
    tst, ref = _template_or_none(path)
    if tst is None:
        return False
    assert not isinstance(ref, tuple), f"template scan read a file the strict parse refuses: {ref}"
    assert _state_key(tst) == _state_key(ref)
    return True


def _outcome(path, fast):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = ImzMLFile(path, fast_parse=fast, index_cache=False)
    except Exception as e:  # noqa: BLE001 - compared below, type and message
        return (type(e).__name__, str(e)), None
    out = tuple(
        getattr(f, k).tobytes()
        for k in ("coords_xyz", "mz_offsets", "mz_lengths", "int_offsets", "int_lengths")
    )
    out += (f.mz_dtype, f.int_dtype, f.mode, f.spectrum_type, f.shape_yx, f.pixel_size_um, f.uuid)
    kind = f.scan_kind
    f.close()
    return out, kind


@pytest.fixture(scope="module")
def seeds(shared_data, tmp_path_factory):
    return load_seeds(shared_data / "imzml", tmp_path_factory.mktemp("seeds"))


def test_template_scan_equals_strict_parse_on_every_seed(seeds, tmp_path):
    used = {}
    for name, (xml, ibd, _mzd, _itd) in sorted(seeds.items()):
        p = tmp_path / f"{name}.imzML"
        p.write_bytes(xml)
        p.with_suffix(".ibd").write_bytes(ibd)
        used[name] = _assert_template_agrees(p)
        a, kind = _outcome(p, True)
        assert a == _outcome(p, False)[0], name
        assert kind == ("template" if used[name] else "tokens"), name
    # every seed but MatrixTests_N2 (each spectrum refers to its own param groups) is a template
    expect = {n: n != "MatrixTests_N2" for n in used}
    assert used == expect


def test_template_scan_on_the_mutation_corpus(seeds, tmp_path):
    p = tmp_path / "case.imzML"
    n_used = n_refused = 0
    for case in build_corpus(seeds, 400, seed=16):
        p.write_bytes(case.xml)
        tst, ref = _template_or_none(p)
        if tst is None:
            n_refused += 1
            continue
        n_used += 1
        assert not isinstance(ref, tuple), (case.ops, ref)
        assert _state_key(tst) == _state_key(ref), case.ops
    assert n_used > 100 and n_refused > 100, (n_used, n_refused)


def _writer_file(tmp_path, n=50, name="t", mode="processed"):
    rng = np.random.default_rng(n)
    p = tmp_path / f"{name}.imzML"
    kw = {"mode": "processed", "mz_dtype": np.float64} if mode == "processed" else {}
    if mode == "continuous":
        kw = {"mz_axis": np.linspace(100.0, 200.0, 16)}
    with ImzMLWriter(p, spectrum_type="centroid", **kw) as w:
        for i in range(n):
            k = int(rng.integers(0, 12)) if mode == "processed" else 16
            mz = np.sort(rng.uniform(100, 200, k)) if mode == "processed" else None
            w.add_spectrum(i % 7 + 1, i // 7 + 1, rng.random(k, dtype=np.float32), mz=mz)
    return p


def _spectrum_span(xml: bytes, index: int) -> tuple[int, int]:
    i = xml.index(b'id="Scan=%d"' % (index + 1))
    s = xml.rindex(b"<spectrum ", 0, i)
    return s, xml.index(b"</spectrum>", i) + len(b"</spectrum>")


# edits of spectrum 30 of 50 that leave the strict parse's answer well defined but are not the
# template's structure: the template scan must decline them (the others then decide)
DECLINE = {
    "comment": (b"<scanList", b"<!-- x --><scanList"),
    "attribute_order": (
        b'cvRef="IMS" accession="IMS:1000050"',
        b'accession="IMS:1000050" cvRef="IMS"',
    ),
    "extra_cvparam": (
        b"<scanList",
        b'<cvParam cvRef="MS" accession="MS:1000128" name="profile spectrum" value=""/><scanList',
    ),
    "cdata": (b"<binary/>", b"<binary><![CDATA[<x/>]]></binary>"),
    "pi": (b"<binary/>", b"<binary><?pi x?></binary>"),
    "namespace": (b"<binary/>", b'<ns:binary xmlns:ns="urn:x"/>'),
    "single_quotes": (b'name="position x" value="', b"name='position x' value='"),
    "plus_sign": (b'name="position x" value="', b'name="position x" value="+'),
    "space_in_value": (b'name="position y" value="', b'name="position y" value=" '),
    "amp_in_ignored": (b'id="Scan=31"', b'id="Scan=31&amp;"'),
    "tab_in_ignored": (b'id="Scan=31"', b'id="Scan=\t31"'),
    "non_ascii_in_ignored": (b'id="Scan=31"', b'id="Scan=31\xc3\xa9"'),
    "control_char": (b'id="Scan=31"', b'id="Scan=\x0131"'),
    "twenty_digits": (
        b'name="external offset" value="',
        b'name="external offset" value="1000000000000000000',
    ),
    "text_between": (b"<spectrum ", b"junk<spectrum "),
    "double_space": (b"<spectrum ", b"<spectrum  "),
    "other_accession": (b'accession="IMS:1000050"', b'accession="IMS:1000051"'),
    "open_binary": (b"<binary/>", b"<binary></binary>"),
    "missing_y": (
        b'<cvParam cvRef="IMS" accession="IMS:1000051" name="position y"',
        b'<userParam cvRef="IMS" accession="IMS:1000051" name="position y"',
    ),
    "crlf": (b"\n", b"\r\n"),
    "other_group": (b'ref="mzArray"', b'ref="intensityArray"'),
    "entity_ref": (b'name="no combination" value=""', b'name="no combination" value="&lt;"'),
    "not_well_formed": (b"</scanList>", b"</scan>"),
    "unclosed": (b"</spectrum>", b""),
}
# edits of values that the strict parse ignores: the template scan must take them, same answer
KEEP = {
    "id_text": (b'id="Scan=31"', b'id="x_31-b.c 9:1"'),
    "index": (b'index="30"', b'index="12345678901234567890"'),
    "encoded_length": (
        b'name="external encoded length" value="',
        b'name="external encoded length" value="9',
    ),
    "gt_in_ignored": (b'id="Scan=31"', b'id="Scan>31"'),
    "leading_zeros": (b'name="position x" value="', b'name="position x" value="000'),
    "negative_offset": (b'name="external offset" value="', b'name="external offset" value="-'),
}


@pytest.mark.parametrize("edit", sorted(DECLINE) + sorted(KEEP))
def test_an_edited_spectrum_in_the_middle(tmp_path, edit):
    p = _writer_file(tmp_path)
    xml = p.read_bytes()
    s, e = _spectrum_span(xml, 30)
    old, new = {**DECLINE, **KEEP}[edit]
    spec = xml[s:e]
    assert old in spec
    p.write_bytes(xml[:s] + spec.replace(old, new, 1 if edit != "crlf" else -1) + xml[e:])
    tst, ref = _template_or_none(p)
    if edit in DECLINE:
        assert tst is None
    else:
        assert tst is not None and not isinstance(ref, tuple)
        assert _state_key(tst) == _state_key(ref)
    (a, kind), (b, _) = _outcome(p, True), _outcome(p, False)
    assert a == b
    if not isinstance(a[0], str):  # opened (a negative offset is refused after the scan)
        assert (kind == "template") == (edit in KEEP)


def test_the_list_must_hold_exactly_the_declared_count(tmp_path):
    p = _writer_file(tmp_path)
    xml = p.read_bytes()
    assert _assert_template_agrees(p)
    p.write_bytes(xml.replace(b'<spectrumList count="50"', b'<spectrumList count="49"'))
    assert _template_or_none(p)[0] is None
    assert _outcome(p, True)[0] == _outcome(p, False)[0]


@pytest.mark.parametrize(
    "old,new",
    [
        # the whole file written with other whitespace and attribute order: still one template
        (b"\n", b"\r\n"),
        (b'cvRef="IMS" accession="IMS:', b'accession="IMS:'),
        (b"        ", b"\t"),
    ],
)
def test_uniform_variations_stay_templates(tmp_path, old, new):
    p = _writer_file(tmp_path)
    p.write_bytes(p.read_bytes().replace(old, new))
    assert _assert_template_agrees(p)
    a, kind = _outcome(p, True)
    assert kind == "template" and a == _outcome(p, False)[0]


def test_values_from_param_groups_and_repeated_params(tmp_path):
    """Columns the spectra do not carry come from the groups; a repeated param: the last wins."""
    p = _writer_file(tmp_path, mode="continuous")
    xml = p.read_bytes()
    # every spectrum's m/z array: offset and length moved into the param group
    off = re.search(rb'accession="IMS:1000102" name="external offset" value="(\d+)"', xml).group(1)
    ln = re.search(rb'accession="IMS:1000103" name="external array length" value="(\d+)"', xml)
    group = (
        b'<referenceableParamGroup id="mzArray">'
        b'<cvParam accession="IMS:1000102" value="%s"/><cvParam accession="IMS:1000103" value="%s"/>'
        % (off, ln.group(1))
    )
    xml = xml.replace(b'<referenceableParamGroup id="mzArray">', group, 1)
    xml = re.sub(
        rb'(<referenceableParamGroupRef ref="mzArray"/>)\s*<cvParam[^>]*IMS:1000103[^>]*/>'
        rb"\s*<cvParam[^>]*IMS:1000104[^>]*/>\s*<cvParam[^>]*IMS:1000102[^>]*/>",
        rb"\1",
        xml,
    )
    # a second position x in every spectrum, after y: the strict parse keeps the last one
    xml = re.sub(
        rb'(name="position y" value="(\d+)"/>)',
        rb'\1<cvParam accession="IMS:1000050" value="\2"/>',
        xml,
    )
    p.write_bytes(xml)
    assert _assert_template_agrees(p)
    with ImzMLFile(p, index_cache=False) as f:
        assert f.scan_kind == "template"
        assert (f.coords_xyz[:, 0] == f.coords_xyz[:, 1]).all()
        assert (f.mz_offsets == int(off)).all()


def test_doctype_declines_and_entities_stay_refused(tmp_path):
    p = _writer_file(tmp_path)
    xml = p.read_bytes()
    i = xml.index(b"<mzML")
    p.write_bytes(xml[:i] + b"<!DOCTYPE mzML>" + xml[i:])
    assert _template_or_none(p)[0] is None
    assert _outcome(p, True)[0] == _outcome(p, False)[0]
    p.write_bytes(xml[:i] + b'<!DOCTYPE mzML [<!ENTITY x "y">]>' + xml[i:])
    a, b = _outcome(p, True)[0], _outcome(p, False)[0]
    assert a == b and a[0] == "ImzMLFormatError"


def test_split_template_declines_what_it_does_not_take():
    base = b'<spectrum id="a1"><cvParam accession="IMS:1000050" value="3"/></spectrum>'
    t = split_template(base)
    assert t is not None and t.read == [False, True] and t.render(t.values) == base
    for bad in (
        base.replace(b"<cvParam", b"<!-- c --><cvParam"),
        base.replace(b'value="3"', b'value="3.0"'),
        base.replace(b'value="3"', b'value="+3"'),
        base.replace(b"<cvParam", b"<spectrum/><cvParam"),
        base.replace(b"<cvParam", b"<referenceableParamGroup/><cvParam"),
        base.replace(b'"a1"', b'"a&amp;1"'),
        base.replace(b"<spectrum", b"<spectrumX"),
    ):
        assert split_template(bad) is None, bad


@pytest.mark.parametrize("mode", ["processed", "continuous"])
def test_template_scan_matches_pyimzml(tmp_path, mode):
    from pyimzml.ImzMLParser import ImzMLParser

    p = _writer_file(tmp_path, n=3000, mode=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ImzMLParser(str(p))
    with ImzMLFile(p, index_cache=False) as f:
        assert f.scan_kind == "template"
        assert [tuple(c) for c in f.coords_xyz.tolist()] == [tuple(c) for c in ref.coordinates]
        assert f.mz_offsets.tolist() == ref.mzOffsets
        assert f.mz_lengths.tolist() == ref.mzLengths
        assert f.int_offsets.tolist() == ref.intensityOffsets
        assert f.int_lengths.tolist() == ref.intensityLengths


def test_blocks_cut_anywhere_give_the_same_answer(tmp_path):
    p = _writer_file(tmp_path, n=400)
    head = parse_imzml_xml(p, header_only=True)
    ref = _state_key(parse_imzml_xml(p))
    for block in (700, 1500, 4099, 1 << 20):
        st = scan_template(p, head, block_size=block)
        assert st is not None and _state_key(st) == ref, block
    # a spectrum longer than four blocks: declined, not read wrong
    assert scan_template(p, head, block_size=64) is None


def test_real_files_read_through_the_template(shared_data, tmp_path):
    for name in ("Example_Continuous", "Combat_40pixel"):
        for ext in (".imzML", ".ibd"):
            shutil.copy(shared_data / "imzml" / f"{name}{ext}", tmp_path / f"{name}{ext}")
        a, kind = _outcome(tmp_path / f"{name}.imzML", True)
        assert kind == "template" and a == _outcome(tmp_path / f"{name}.imzML", False)[0]


def test_a_first_spectrum_far_into_the_list_is_found(tmp_path):
    p = _writer_file(tmp_path)
    xml = p.read_bytes()
    i = xml.index(b"<spectrum ")
    p.write_bytes(xml[:i] + b" " * 70000 + xml[i:])  # past the first 64 KiB read
    assert _assert_template_agrees(p)
    big = xml[:i] + b"<!--" + b"x" * 70000 + b"-->" + xml[i:]
    p.write_bytes(big)  # a comment before the first spectrum: declined, strict decides
    assert _template_or_none(p)[0] is None
    assert _outcome(p, True)[0] == _outcome(p, False)[0]


def test_token_pattern_without_possessive_repetition_finds_the_same_tokens(seeds):
    """Python 3.10 has no possessive quantifiers; its greedy pattern must read the same tokens
    as the possessive one on every seed and on mutated files (attributes reordered, added)."""
    from napari_msi2hist.io._imzml_scan import token_pattern

    fast, plain = token_pattern(True), token_pattern(False)
    assert fast.pattern != plain.pattern
    n = 0
    for case in [*(Case(k, *v) for k, v in seeds.items()), *build_corpus(seeds, 150, seed=10)]:
        found = fast.findall(case.xml)
        assert plain.findall(case.xml) == found, case.seed_name
        n += len(found)
    assert n > 1000
