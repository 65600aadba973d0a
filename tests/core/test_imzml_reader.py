"""The reader against pyimzml (independent reference) and its error paths."""

import shutil
import threading
import warnings

import numpy as np
import pytest

from napari_msi2hist.io.imzml import (
    ImzMLFile,
    ImzMLFormatError,
    ImzMLMissingIbdError,
    ImzMLNonFiniteError,
    ImzMLOffsetError,
    ImzMLTruncatedError,
    ImzMLUUIDMismatchError,
)
from napari_msi2hist.io.imzml_writer import ImzMLWriter

REAL = ["Example_Continuous", "Example_Processed", "MatrixTests_N2", "Combat_40pixel"]


def _pyimzml(path):
    from pyimzml.ImzMLParser import ImzMLParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImzMLParser(str(path))


@pytest.mark.parametrize("name", REAL)
def test_every_spectrum_matches_pyimzml(shared_data, name):
    f = shared_data / "imzml" / f"{name}.imzML"
    ref = _pyimzml(f)
    with ImzMLFile(f) as imz:
        assert imz.n_spectra == len(ref.coordinates)
        assert [tuple(c) for c in imz.coords_xyz.tolist()] == [tuple(c) for c in ref.coordinates]
        for i in range(imz.n_spectra):
            a_mz, a_it = ref.getspectrum(i)
            b_mz, b_it = imz.getspectrum(i)
            assert b_mz.dtype == a_mz.dtype and b_it.dtype == a_it.dtype
            np.testing.assert_array_equal(b_mz, a_mz)
            np.testing.assert_array_equal(b_it, a_it)
        if "pixel size x" in ref.imzmldict:
            assert imz.pixel_size_um == (
                ref.imzmldict["pixel size y"],
                ref.imzmldict["pixel size x"],
            )


def test_metadata_of_real_files(shared_data):
    d = shared_data / "imzml"
    with ImzMLFile(d / "Example_Continuous.imzML") as a:
        assert a.mode == "continuous" and a.shape_yx == (3, 3) and a.pixel_size_um == (100.0, 100.0)
        assert str(a.uuid) == "554a27fa-79d2-4766-9a2c-862e6d78b1f3"
        assert a.spectrum_type == "profile"
    with ImzMLFile(d / "Example_Processed.imzML") as b:
        assert b.mode == "processed" and not b.shared_mz_axis
    with ImzMLFile(d / "Combat_40pixel.imzML") as c:
        # coordinates exceed the declared max count: the larger wins
        assert c.shape_yx[0] >= int(c.rows.max()) + 1 and c.shape_yx[1] >= int(c.cols.max()) + 1
        assert c.spectrum_type == "centroid"


def test_missing_ibd_is_a_clear_error(shared_data):
    f = shared_data / "imzml" / "coords_only_no_ibd.imzML"
    with pytest.raises(ImzMLMissingIbdError, match="coords_only_no_ibd.ibd is missing"):
        ImzMLFile(f)


def _copy(shared_data, tmp_path, name="Example_Continuous"):
    for ext in (".imzML", ".ibd"):
        shutil.copy(shared_data / "imzml" / f"{name}{ext}", tmp_path / f"x{ext}")
    return tmp_path / "x.imzML"


def test_truncated_ibd(shared_data, tmp_path):
    f = _copy(shared_data, tmp_path)
    ibd = f.with_suffix(".ibd")
    data = ibd.read_bytes()
    ibd.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImzMLTruncatedError, match=r"x\.ibd: truncated"):
        ImzMLFile(f)


def test_offset_past_end(shared_data, tmp_path):
    f = _copy(shared_data, tmp_path)
    txt = f.read_text(encoding="latin-1")
    i = txt.rindex('accession="IMS:1000102" name="external offset" value="')
    j = txt.index('"', i + len('accession="IMS:1000102" name="external offset" value="'))
    txt = txt[:i] + 'accession="IMS:1000102" name="external offset" value="99999999' + txt[j:]
    f.write_text(txt, encoding="latin-1")
    with pytest.raises(ImzMLOffsetError, match="past the end"):
        ImzMLFile(f)


def test_uuid_mismatch_names_both(shared_data, tmp_path):
    f = _copy(shared_data, tmp_path)
    ibd = f.with_suffix(".ibd")
    b = bytearray(ibd.read_bytes())
    b[:16] = bytes(range(16))
    ibd.write_bytes(bytes(b))
    with pytest.raises(ImzMLUUIDMismatchError) as e:
        ImzMLFile(f)
    assert "554a27fa-79d2-4766-9a2c-862e6d78b1f3" in str(e.value)
    assert "00010203-0405-0607-0809-0a0b0c0d0e0f" in str(e.value)


def test_not_imzml(tmp_path):
    f = tmp_path / "a.imzML"
    f.write_text("<html><body>hello</body></html>")
    (tmp_path / "a.ibd").write_bytes(b"\0" * 16)
    with pytest.raises(ImzMLFormatError, match="not an imzML"):
        ImzMLFile(f)
    f.write_text("<mzML><unclosed>")
    with pytest.raises(ImzMLFormatError, match="not well-formed"):
        ImzMLFile(f)


def test_entities_are_refused(tmp_path):
    f = tmp_path / "bomb.imzML"
    f.write_text(
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        "<mzML>&lol2;</mzML>"
    )
    (tmp_path / "bomb.ibd").write_bytes(b"\0" * 16)
    with pytest.raises(ImzMLFormatError, match="entity"):
        ImzMLFile(f)
    f.write_text(
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]><mzML>&ext;</mzML>'
    )
    with pytest.raises(ImzMLFormatError, match="entity"):
        ImzMLFile(f)


@pytest.mark.parametrize("mode", ["continuous", "processed"])
@pytest.mark.parametrize(
    "dtypes",
    [
        (np.float32, np.float32),
        (np.float64, np.int32),
        (np.float64, np.int64),
        (np.float32, np.float64),
    ],
)
def test_writer_dtypes_roundtrip_against_pyimzml(tmp_path, mode, dtypes):
    rng = np.random.default_rng(0)
    axis = np.sort(rng.uniform(100, 900, 50))
    kw = dict(mz_axis=axis) if mode == "continuous" else {}
    spectra = []
    with ImzMLWriter(
        tmp_path / "w.imzML",
        mode=mode,
        mz_dtype=dtypes[0],
        int_dtype=dtypes[1],
        pixel_size_um=(12.5, 10.0),
        **kw,
    ) as w:
        for y in range(1, 4):
            for x in range(1, 5):
                it = rng.integers(0, 1000, 50 if mode == "continuous" else 30 + x)
                mz = None if mode == "continuous" else np.sort(rng.uniform(100, 900, len(it)))
                w.add_spectrum(x, y, it, mz=mz)
                spectra.append((mz if mz is not None else axis, it))
    ref = _pyimzml(tmp_path / "w.imzML")
    with ImzMLFile(tmp_path / "w.imzML") as imz:
        assert imz.mode == mode and imz.pixel_size_um == (12.5, 10.0) and imz.shape_yx == (3, 4)
        assert imz.int_dtype == np.dtype(dtypes[1])
        for i in range(imz.n_spectra):
            a, b = ref.getspectrum(i), imz.getspectrum(i)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
            np.testing.assert_allclose(b[1], spectra[i][1])


def test_nan_intensities_are_reported(tmp_path):
    from napari_msi2hist.msi.ion_images import Tolerance, ion_images

    axis = np.linspace(100, 200, 11)
    with ImzMLWriter(tmp_path / "n.imzML", mz_axis=axis) as w:
        w.add_spectrum(1, 1, np.ones(11))
        bad = np.ones(11)
        bad[5] = np.nan
        w.add_spectrum(2, 1, bad)
    with ImzMLFile(tmp_path / "n.imzML") as imz:
        with pytest.raises(ImzMLNonFiniteError, match=r"n\.imzML: spectrum 1 \(x=2, y=1\)"):
            imz.getspectrum(1)
        with pytest.raises(ImzMLNonFiniteError, match="pixel x=2, y=1"):
            ion_images(imz, [150.0], tolerance=Tolerance(1.0, "da"))


def test_threads_read_consistently(shared_data):
    """Many threads share one ImzMLFile: positioned reads keep every spectrum intact."""
    f = shared_data / "imzml" / "MatrixTests_N2.imzML"
    with ImzMLFile(f) as imz:
        expected = [imz.getspectrum(i)[1].copy() for i in range(imz.n_spectra)]
        errors = []

        def work(seed):
            r = np.random.default_rng(seed)
            for _ in range(200):
                i = int(r.integers(imz.n_spectra))
                if not np.array_equal(imz.getspectrum(i)[1], expected[i]):
                    errors.append(i)

        ts = [threading.Thread(target=work, args=(s,)) for s in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert errors == []


def test_writer_never_overwrites(tmp_path):
    (tmp_path / "a.imzML").write_text("keep me")
    with pytest.raises(FileExistsError):
        ImzMLWriter(tmp_path / "a.imzML", mz_axis=np.arange(3.0))
    assert (tmp_path / "a.imzML").read_text() == "keep me"


# ---------------------------------------------------------------- hostile inputs, by hand


def _proc_file(tmp_path, spectra, name="p", **kw):
    """Processed file from [(x, y, mz, intensity)], m/z written as given (not sorted)."""
    p = tmp_path / f"{name}.imzML"
    with ImzMLWriter(p, mode="processed", mz_dtype=np.float64, **kw) as w:
        for x, y, mz, it in spectra:
            w.add_spectrum(x, y, np.asarray(it, np.float32), mz=np.asarray(mz, np.float64))
    return p


def _mask_sum(mz, it, lo, hi):
    mz, it = np.asarray(mz, float), np.asarray(it, float)
    return it[(mz >= lo) & (mz <= hi)].sum()


def test_unsorted_mz_arrays_give_correct_ion_images(tmp_path):
    from napari_msi2hist.msi.ion_images import Tolerance, ion_images

    rng = np.random.default_rng(4)
    spectra = []
    for i in range(12):
        mz = rng.uniform(100, 110, 40)
        if i % 3:  # two thirds unsorted, one with a NaN m/z
            mz = np.sort(mz)
        if i == 5:
            mz[7] = np.nan
        spectra.append((i % 4 + 1, i // 4 + 1, mz, rng.integers(1, 100, 40)))
    p = _proc_file(tmp_path, spectra)
    targets = np.array([101.0, 104.5, 108.2])
    tol = Tolerance(0.4, "da")
    lo, hi = tol.windows(targets)
    with ImzMLFile(p) as imz:
        res = ion_images(imz, targets, tolerance=tol)
    for x, y, mz, it in spectra:
        ref = [_mask_sum(mz, it, a, b) for a, b in zip(lo, hi, strict=True)]
        np.testing.assert_allclose(res.stack[:, y - 1, x - 1], ref, rtol=1e-6)


def test_length_mismatch_and_negative_length_are_refused(tmp_path, capsys):
    from napari_msi2hist.cli import main

    p = _proc_file(tmp_path, [(1, 1, [100.0, 101.0], [1, 2]), (2, 1, [100.0], [3])])
    txt = p.read_text()
    key = 'name="external array length" value="1"'
    i = txt.rindex(key)
    bad = txt[:i] + key.replace('"1"', '"2"') + txt[i + len(key) :]
    p.write_text(bad)
    with pytest.raises(ImzMLFormatError, match=r"p\.imzML: spectrum 1 has 1 m/z values but 2"):
        ImzMLFile(p)
    p.write_text(
        txt.replace(
            'name="external array length" value="2"', 'name="external array length" value="-1"', 1
        )
    )
    with pytest.raises(ImzMLFormatError, match="negative m/z array length"):
        ImzMLFile(p)
    assert main(["info", str(p)]) != 0
    assert "negative" in capsys.readouterr().err


def test_duplicate_coordinates_keep_the_first_and_are_counted(tmp_path, capsys):
    import json

    from napari_msi2hist.cli import main
    from napari_msi2hist.io.imzml import ImzMLWarning
    from napari_msi2hist.msi.ion_images import Tolerance, ion_images

    p = _proc_file(
        tmp_path,
        [(1, 1, [100.0], [5]), (2, 1, [100.0], [7]), (1, 1, [100.0], [11]), (1, 1, [100.0], [13])],
    )
    with pytest.warns(ImzMLWarning, match="2 spectra share a pixel"):
        imz = ImzMLFile(p)
    with imz:
        assert imz.n_duplicates == 2 and imz.duplicate_mask.tolist() == [False, False, True, True]
        res = ion_images(imz, [100.0], tolerance=Tolerance(0.1, "da"))
        assert res.stack[0, 0, 0] == 5 and res.stack[0, 0, 1] == 7
        assert imz.pixel_index_image()[0, 0] == 0
        from napari_msi2hist.msi.spectra import mean_spectrum

        assert mean_spectrum(imz).n_spectra == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["info", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["duplicate_pixels"] == 2


def test_png_is_not_an_imzml_file(tmp_path):
    f = tmp_path / "image.imzML"
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(ImzMLFormatError, match=r"image\.imzML: not an imzML file"):
        ImzMLFile(f)


def test_huge_declared_raster_is_not_allocated(tmp_path):
    from napari_msi2hist._limits import set_memory_budget
    from napari_msi2hist.io.imzml import ImzMLWarning
    from napari_msi2hist.msi.ion_images import ion_images

    p = tmp_path / "r.imzML"
    with ImzMLWriter(p, mz_axis=np.array([100.0, 200.0]), shape_yx=(30000, 30000)) as w:
        for i in range(9):
            w.add_spectrum(i % 3 + 1, i // 3 + 1, np.ones(2))
    set_memory_budget("64M")
    try:
        with pytest.warns(ImzMLWarning, match="declares a 30000 x 30000 raster"):
            imz = ImzMLFile(p)
        assert imz.shape_yx == (3, 3) and imz.declared_shape_yx == (30000, 30000)
        assert ion_images(imz, [100.0]).stack.shape == (1, 3, 3)
    finally:
        set_memory_budget(None)


def test_far_away_pixel_is_refused_by_the_memory_budget(tmp_path):
    from napari_msi2hist._limits import ResourceLimitError, set_memory_budget
    from napari_msi2hist.msi.ion_images import ion_images

    p = tmp_path / "far.imzML"
    with ImzMLWriter(p, mz_axis=np.array([100.0, 200.0])) as w:
        w.add_spectrum(1, 1, np.ones(2))
        w.add_spectrum(200000, 100000, np.ones(2))
    set_memory_budget("64M")
    try:
        with ImzMLFile(p) as imz, pytest.raises(ResourceLimitError, match=r"far\.imzML"):
            ion_images(imz, [100.0])
    finally:
        set_memory_budget(None)


def test_signed_32bit_offsets_are_repaired(tmp_path):
    """A writer that stored offsets as signed 32-bit integers: an .ibd over 2**31 bytes (sparse
    here) whose later offsets read as negative numbers. Repaired as pyimzml does, with a warning."""
    from napari_msi2hist.io.imzml import ImzMLWarning

    spectra = [(k + 1, 1, [100.0 + k, 101.0 + k], [k, k + 1]) for k in range(3)]
    p = _proc_file(tmp_path, spectra)
    ibd = p.with_suffix(".ibd")
    data = ibd.read_bytes()
    txt = p.read_text()
    import re

    offs = [int(m) for m in re.findall(r'name="external offset" value="(\d+)"', txt)]
    # spectrum 1 beyond 2**31 (stored negative), spectrum 2 beyond 2**32 (stored small positive)
    new_true = offs[:2] + [2**31 + 1000, 2**31 + 2000, 2**32 + 3000, 2**32 + 4000]
    with open(ibd, "r+b") as fh:
        fh.truncate(new_true[-1] + 64)
        for o, t in zip(offs[2:], new_true[2:], strict=True):
            fh.seek(t)
            fh.write(data[o : o + 16])
    stored = [((t + 2**31) % 2**32) - 2**31 for t in new_true]  # as signed 32-bit
    assert stored[2] < 0 and stored[3] < 0 and 0 <= stored[4]
    for k, o in enumerate(offs):
        txt = txt.replace(
            f'name="external offset" value="{o}"', f'name="external offset" value="X{k}"', 1
        )
    for k, s in enumerate(stored):
        txt = txt.replace(f'value="X{k}"', f'value="{s}"', 1)
    p.write_text(txt)
    with pytest.warns(ImzMLWarning, match="signed 32-bit"):
        imz = ImzMLFile(p)
    with imz:
        assert imz.offsets_repaired
        assert imz.int_offsets.tolist() == new_true[1::2]
        assert imz.mz_offsets.tolist() == new_true[0::2]
        for k in range(3):
            mz, it = imz.getspectrum(k)
            assert mz.tolist() == spectra[k][2] and it.tolist() == spectra[k][3]
    # the same negative offsets in a small .ibd are not a 32-bit wrap: named as such
    with open(ibd, "r+b") as fh:
        fh.truncate(len(data))
    with pytest.raises(ImzMLOffsetError, match="negative offset"):
        ImzMLFile(p)


@pytest.mark.parametrize(
    "insert",
    [
        b'<![CDATA[<cvParam accession="IMS:1000050" value="3"/>]]>',
        b'<?pi <cvParam accession="IMS:1000102" value="99"/>?>',
        b'<userParam name="n" value=\'accession="IMS:1000050" value="3"\'/>',
        b'<userParam name="n">accession="IMS:1000050" value="3"</userParam>',
    ],
)
def test_fast_scan_ignores_fake_values_in_cdata_pi_and_userparam(shared_data, tmp_path, insert):
    src = (shared_data / "imzml" / "Example_Processed.imzML").read_bytes()
    shutil.copy(shared_data / "imzml" / "Example_Processed.ibd", tmp_path / "c.ibd")
    i = src.index(b"<scan ") + src[src.index(b"<scan ") :].index(b">") + 1
    (tmp_path / "c.imzML").write_bytes(src[:i] + insert + src[i:])
    ref = ImzMLFile(shared_data / "imzml" / "Example_Processed.imzML")
    a, b = ImzMLFile(tmp_path / "c.imzML"), ImzMLFile(tmp_path / "c.imzML", fast_parse=False)
    for k in ("coords_xyz", "mz_offsets", "int_offsets", "int_lengths"):
        assert np.array_equal(getattr(a, k), getattr(ref, k)), k
        assert np.array_equal(getattr(b, k), getattr(ref, k)), k


def _outcome(path, fast):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = ImzMLFile(path, fast_parse=fast, index_cache=False)
    except Exception as e:  # noqa: BLE001 - compared below, type and message
        return type(e).__name__, str(e)
    return tuple(getattr(f, k).tobytes() for k in ("coords_xyz", "mz_offsets", "int_offsets")) + (
        f.mz_dtype,
        f.int_dtype,
        f.spectrum_type,
    )


@pytest.mark.parametrize(
    "old,new",
    [
        # a dtype given by name only (no accession) overrides the group's: strict honours it
        (
            b'<referenceableParamGroupRef ref="mzArray"/>',
            b'<referenceableParamGroupRef ref="mzArray"/><cvParam name="32-bit float"/>',
        ),
        (b"</spectrum>", b"</spectrum >"),
        (b'value="1"/>', b'value="01"/>'),
        (
            b'<cvParam cvRef="IMS" accession="IMS:1000050"',
            b'<cvParam cvRef="IMS" accession="IMS:1000050" ',
        ),
        (b"<binary/>", b'<ns:binary xmlns:ns="urn:x"/>'),
        (
            b'accession="IMS:1000051" name="position y"',
            b'accession="IMS:1000051" name = "position y"',
        ),
        (
            b'<referenceableParamGroupRef ref="spectrum1"/>',
            b'<referenceableParamGroupRef ref="spectrum1"/><cvParam accession="MS:1000127"/>',
        ),
        (b"<binary/>", b"<binary>text</binary>"),
    ],
)
def test_fast_scan_and_strict_parse_agree_on_unusual_but_valid_xml(tmp_path, old, new):
    p = _proc_file(
        tmp_path, [(i % 3 + 1, i // 3 + 1, [100.0 + i, 101.0], [1, 2]) for i in range(6)]
    )
    txt = p.read_bytes()
    assert old in txt
    p.write_bytes(txt.replace(old, new, 1))
    assert _outcome(p, True) == _outcome(p, False)
