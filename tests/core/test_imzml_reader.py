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
