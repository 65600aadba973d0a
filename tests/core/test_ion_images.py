"""Ion images, mean spectrum and peak picking against straightforward references built on pyimzml."""

import warnings

import numpy as np
import pytest

from napari_msi2hist.io.imzml import ImzMLFile
from napari_msi2hist.msi.ion_images import Tolerance, ion_images, lazy_ion_images, total_ion_image
from napari_msi2hist.msi.peaks import parse_mz_list, pick_peaks
from napari_msi2hist.msi.spectra import common_mz_axis, mean_spectrum, rebin_linear
from napari_msi2hist.progress import Cancelled, CancelToken, run_to_end


def _reference(path, mz, tol: Tolerance, norm):
    from pyimzml.ImzMLParser import ImzMLParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ImzMLParser(str(path))
    lo, hi = tol.windows(mz)
    ys = [c[1] for c in p.coordinates]
    xs = [c[0] for c in p.coordinates]
    out = np.zeros((len(mz), max(ys), max(xs)))
    for i, (x, y, _z) in enumerate(p.coordinates):
        a, b = (v.astype(np.float64) for v in p.getspectrum(i))
        f = {"none": 1.0, "tic": b.sum(), "rms": np.sqrt(np.mean(b * b)), "median": np.median(b)}[
            norm
        ]
        for c in range(len(mz)):
            out[c, y - 1, x - 1] = b[(a >= lo[c]) & (a <= hi[c])].sum() / f if f > 0 else 0.0
    return out


@pytest.mark.parametrize(
    "name", ["Example_Continuous", "Example_Processed", "MatrixTests_N2", "Combat_40pixel"]
)
@pytest.mark.parametrize("norm", ["none", "tic", "rms", "median"])
@pytest.mark.parametrize("tol", [Tolerance(25, "ppm"), Tolerance(0.25, "da")])
def test_ion_images_match_reference(shared_data, name, norm, tol):
    f = shared_data / "imzml" / f"{name}.imzML"
    with ImzMLFile(f) as imz:
        ms = mean_spectrum(imz)
        mz = pick_peaks(ms.mz, ms.intensity, n_peaks=12).mz
        res = ion_images(imz, mz, tolerance=tol, norm=norm, chunk_bytes=5000)  # many small chunks
        ref = _reference(f, mz, tol, norm)
        ny, nx = ref.shape[1:]
        np.testing.assert_allclose(res.stack[:, :ny, :nx], ref, rtol=2e-6, atol=1e-9)
        assert res.stack.dtype == np.float32 and res.stack.shape == (len(mz), *imz.shape_yx)
        assert res.mask.sum() == imz.n_spectra
        assert (res.stack[:, ~res.mask] == 0).all()
        assert ref.max() > 0 or norm == "median"  # median of sparse spectra can be 0
        lz = lazy_ion_images(imz, mz, tol, norm, rows_per_block=1)
        np.testing.assert_allclose(np.asarray(lz), res.stack, rtol=1e-6)


def test_overlapping_windows_and_inclusive_bounds(tmp_path):
    from napari_msi2hist.io.imzml_writer import ImzMLWriter

    axis = np.array([100.0, 100.5, 101.0, 101.5, 102.0])
    for mode in ("continuous", "processed"):
        p = tmp_path / f"{mode}.imzML"
        with ImzMLWriter(
            p, mode=mode, mz_axis=axis if mode == "continuous" else None, mz_dtype=np.float64
        ) as w:
            w.add_spectrum(1, 1, [1, 2, 4, 8, 16], mz=None if mode == "continuous" else axis)
        with ImzMLFile(p) as imz:
            # windows [100, 101] and [100.5, 101.5] overlap; bounds are inclusive
            r = ion_images(imz, [100.5, 101.0, 103.0], tolerance=Tolerance(0.5, "da"))
            assert r.stack[:, 0, 0].tolist() == [1 + 2 + 4, 2 + 4 + 8, 0]


def test_tic_image_and_mean_spectrum(shared_data):
    f = shared_data / "imzml" / "Example_Continuous.imzML"
    with ImzMLFile(f) as imz:
        tic = total_ion_image(imz)
        ms = mean_spectrum(imz)
        tot = np.zeros(len(ms.mz))
        for i in range(imz.n_spectra):
            mz, it = imz.getspectrum(i)
            assert tic[imz.rows[i], imz.cols[i]] == pytest.approx(
                float(it.astype(np.float64).sum()), rel=1e-6
            )
            tot += it
        np.testing.assert_allclose(ms.intensity, tot / imz.n_spectra, rtol=1e-6)


def test_rebinning_conserves_intensity_and_places_peaks():
    axis = common_mz_axis(100, 1000, 50)
    assert np.allclose(np.diff(np.log(axis)), np.log1p(50e-6))
    mz = np.array([200.0, 500.0, 500.0001, 900.0])
    it = np.array([1.0, 2.0, 3.0, 4.0])
    out = rebin_linear(axis, mz, it)[0]
    assert out.sum() == pytest.approx(10.0)
    near = np.abs(axis - 900.0) < 900 * 50e-6
    assert out[near].sum() == pytest.approx(4.0)
    assert out[np.abs(axis - 500.0) < 500 * 60e-6].sum() == pytest.approx(5.0)


def test_processed_mean_spectrum_recovers_peaks(shared_data):
    with (
        ImzMLFile(shared_data / "imzml" / "Example_Processed.imzML") as a,
        ImzMLFile(shared_data / "imzml" / "Example_Continuous.imzML") as b,
    ):
        pa = pick_peaks(*(lambda m: (m.mz, m.intensity))(mean_spectrum(a)), n_peaks=5).mz
        pb = pick_peaks(*(lambda m: (m.mz, m.intensity))(mean_spectrum(b)), n_peaks=5).mz
    # same data in two layouts: the top peaks agree within the bin width
    assert np.all(np.abs(np.sort(pa) - np.sort(pb)) < 0.1)


def test_pick_peaks_prominence_and_separation():
    mz = np.linspace(100, 200, 10001)
    baseline = 50 * np.exp(-(mz - 100) / 20)
    y = baseline.copy()
    for m, h in [(120, 5), (150, 3), (150.002, 2.9), (180, 1)]:
        y += h * np.exp(-0.5 * ((mz - m) / 0.05) ** 2)
    y += 0.3 * np.sin(mz * 40)  # ripple maxima sit on the high baseline
    p = pick_peaks(mz, y, n_peaks=3, min_separation_ppm=100)
    assert np.allclose(p.mz, [120, 150, 180], atol=0.05)
    with pytest.raises(ValueError):
        parse_mz_list("abc")
    assert parse_mz_list("760.5, 782.57;800").tolist() == [760.5, 782.57, 800.0]


def test_cancel_stops_extraction(small_phantom):
    from napari_msi2hist.msi.ion_images import iter_ion_images

    tok = CancelToken()
    with ImzMLFile(small_phantom.paths["imzml"]) as imz:
        gen = iter_ion_images(imz, [500.0], chunk_bytes=20000, cancel=tok)
        next(gen)
        tok.cancel()
        with pytest.raises(Cancelled):
            run_to_end(gen)


@pytest.mark.parametrize(
    "dtypes", [(np.float64, np.float32), (np.float32, np.int64), (np.float64, np.int32)]
)
def test_processed_mixed_dtypes_and_scattered_reads(tmp_path, dtypes, monkeypatch):
    """Processed files whose arrays are not aligned to the item size, read both in one span and
    packed array by array (a subset of every 7th spectrum is scattered through the file)."""
    from napari_msi2hist.io.imzml_writer import ImzMLWriter
    from napari_msi2hist.msi import _chunks
    from napari_msi2hist.msi._chunks import iter_raw_chunks

    monkeypatch.setattr(_chunks, "SPAN_SLACK_BYTES", 0)
    from napari_msi2hist.msi._window_sums import bisect_sums

    rng = np.random.default_rng(1)
    p = tmp_path / "m.imzML"
    spectra = []
    with ImzMLWriter(p, mode="processed", mz_dtype=dtypes[0], int_dtype=dtypes[1]) as w:
        for i in range(60):
            n = int(rng.integers(0, 40))  # some spectra are empty
            mz = np.sort(rng.uniform(100, 110, n))
            it = rng.integers(1, 100, n)
            w.add_spectrum(i % 10 + 1, i // 10 + 1, it, mz=mz)
            spectra.append((mz.astype(dtypes[0]).astype(np.float64), it.astype(np.float64)))
    targets = np.array([101.0, 103.3, 105.5, 109.9])
    tol = Tolerance(0.2, "da")
    lo, hi = tol.windows(targets)
    with ImzMLFile(p) as imz:
        assert len({int(o) % 8 for o in imz.int_offsets}) > 1 or dtypes[1] == np.int64
        res = ion_images(imz, targets, tolerance=tol)
        subset = np.arange(0, 60, 7)
        raws = list(iter_raw_chunks(imz, subset))
        assert raws[0].base == 0  # packed: the subset is scattered, so no single span read
        got = np.concatenate([bisect_sums(r, lo, hi) for r in raws])
    for i, (mz, it) in enumerate(spectra):
        ref = [it[(mz >= a) & (mz <= b)].sum() for a, b in zip(lo, hi, strict=True)]
        np.testing.assert_allclose(res.stack[:, i // 10, i % 10], ref, rtol=1e-6)
        if i in subset:
            np.testing.assert_allclose(got[list(subset).index(i)], ref, rtol=1e-6)


def test_fast_xml_scan_equals_full_expat_parse(shared_data, small_phantom):
    files = [
        shared_data / "imzml" / f"{n}.imzML"
        for n in ("Example_Continuous", "Example_Processed", "MatrixTests_N2", "Combat_40pixel")
    ]
    for f in files + [small_phantom.paths["imzml"]]:
        a, b = ImzMLFile(f), ImzMLFile(f, fast_parse=False)
        for k in ("coords_xyz", "mz_offsets", "mz_lengths", "int_offsets", "int_lengths"):
            assert np.array_equal(getattr(a, k), getattr(b, k)), (f, k)
        assert (a.mode, a.spectrum_type, a.mz_dtype, a.int_dtype) == (
            b.mode,
            b.spectrum_type,
            b.mz_dtype,
            b.int_dtype,
        )


def test_fast_scan_falls_back_on_unusual_xml(shared_data, tmp_path):
    """Comments inside the spectrum list, or a truncated XML, send the parse to expat."""
    src = (shared_data / "imzml" / "Example_Continuous.imzML").read_bytes()
    (tmp_path / "c.ibd").write_bytes(
        (shared_data / "imzml" / "Example_Continuous.ibd").read_bytes()
    )
    i = src.index(b"<spectrum ")
    (tmp_path / "c.imzML").write_bytes(src[:i] + b"<!-- <spectrum > -->" + src[i:])
    with ImzMLFile(tmp_path / "c.imzML") as imz:
        assert imz.n_spectra == 9
    from napari_msi2hist.io.imzml import ImzMLFormatError

    (tmp_path / "c.imzML").write_bytes(src[: len(src) - 200])
    with pytest.raises(ImzMLFormatError, match="not well-formed"):
        ImzMLFile(tmp_path / "c.imzML")


@pytest.mark.parametrize("norm", ["none", "tic"])
def test_dense_small_reads_same_images_and_progress_per_chunk(small_phantom, monkeypatch, norm):
    """Continuous data is read in small pieces but yields (progress, cancel) per ``chunk_bytes``."""
    import napari_msi2hist.msi.ion_images as mod

    with ImzMLFile(small_phantom.paths["imzml"]) as imz:
        assert imz.shared_mz_axis
        row = int(imz.mz_lengths[0]) * imz.int_dtype.itemsize
        mz = np.linspace(*imz.info()["mz_range"], 7)[1:-1]
        tol = Tolerance(0.5, "da")
        ref = ion_images(imz, mz, tolerance=tol, norm=norm, chunk_bytes=row).stack  # one row each
        monkeypatch.setattr(mod, "DENSE_READ_BYTES", 3 * row)
        gen = mod.iter_ion_images(imz, mz, tolerance=tol, norm=norm, chunk_bytes=10 * row)
        steps = []
        try:
            while True:
                steps.append(next(gen).done)
        except StopIteration as stop:
            res = stop.value
        n = imz.n_spectra
        # 3 pieces of 3 rows per yield: 9 spectra a step, the rest at the end
        assert steps == [*range(9, n, 9), n] or steps == list(range(9, n + 1, 9))
        np.testing.assert_array_equal(res.stack, ref)
        assert ref.max() > 0
