"""Phantoms: deterministic, truth invertible, and the MSI really sits where the truth says."""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_msi2hist.io.histology import read_histology
from napari_msi2hist.io.imzml import ImzMLFile
from napari_msi2hist.io.points import read_points_csv
from napari_msi2hist.msi.ion_images import Tolerance, ion_images
from napari_msi2hist.phantom import PhantomConfig, make_phantom
from napari_msi2hist.registration.transforms import px_to_um, um_to_px
from napari_msi2hist.registration.truth import load_truth


def test_files_and_truth_roundtrip(small_phantom):
    p = small_phantom.paths
    tr = load_truth(p["truth"])
    lm_he, lm_msi = read_points_csv(p["landmarks_he"]), read_points_csv(p["landmarks_msi"])
    assert len(lm_he) == len(lm_msi) == small_phantom.config.n_landmarks
    np.testing.assert_allclose(tr.forward(lm_msi), lm_he, atol=1e-4)
    pts = np.random.default_rng(0).uniform(0, 1000, (50, 2))
    np.testing.assert_allclose(tr.forward(tr.inverse(pts)), pts, atol=1e-5)
    d = json.loads(open(p["truth"]).read())
    assert d["deformation"]["rms_msi_px"] == pytest.approx(1.5, rel=1e-6)
    he = read_histology(p["he"])
    assert he.pixel_size_um == (4.0, 4.0) and he.rgb
    with ImzMLFile(p["imzml"]) as imz:
        assert imz.pixel_size_um == (20.0, 20.0)
        assert imz.shape_yx == tuple(small_phantom.msi_shape_yx)
        # missing pixels are really missing
        assert imz.n_spectra == np.prod(imz.shape_yx) - small_phantom.missing.sum()
    # a csv header napari understands
    assert open(p["landmarks_he"]).readline().strip() == "index,axis-0,axis-1"


def test_deterministic(tmp_path):
    cfg = PhantomConfig(seed=11, procedural_size=96, n_mz=200)
    a = make_phantom(tmp_path / "a", cfg)
    b = make_phantom(tmp_path / "b", cfg)
    assert (tmp_path / "a" / "msi.ibd").read_bytes() == (tmp_path / "b" / "msi.ibd").read_bytes()
    assert np.array_equal(a.he_rgb, b.he_rgb)
    c = make_phantom(None, cfg.replace(seed=12))
    assert not np.array_equal(a.he_rgb, c.he_rgb)


def _nuclei_ion_vs_he(ph, tr, shift_um=(0.0, 0.0)):
    """Correlation between the nuclei ion image mapped into the H&E frame and the H&E nuclei map."""
    with ImzMLFile(ph.paths["imzml"]) as imz:
        mz = ph.peaks["nuclei"] + ph.peaks["stroma"]
        st = ion_images(imz, mz, tolerance=Tolerance(1.0, "da")).stack
    nuc_img = st[: len(ph.peaks["nuclei"])].sum(0)
    he_px = ph.config.he_pixel_um
    hy, hx = ph.he_rgb.shape[:2]
    rr, cc = np.mgrid[0:hy, 0:hx]
    p_he = px_to_um(np.column_stack([rr.ravel(), cc.ravel()]), (he_px, he_px)) + np.asarray(
        shift_um
    )
    p_msi = um_to_px(tr.inverse(p_he), (ph.config.msi_pixel_um,) * 2)
    warped = ndi.map_coordinates(nuc_img, p_msi.T, order=1).reshape(hy, hx)
    k = int(ph.config.msi_pixel_um / he_px)
    ref = ndi.uniform_filter(ph.he_classes[1], k)
    tissue = ph.he_classes[0] < 0.5
    return np.corrcoef(warped[tissue], ref[tissue])[0, 1]


def test_msi_overlaps_he_where_truth_says(small_phantom):
    tr = load_truth(small_phantom.paths["truth"])
    good = _nuclei_ion_vs_he(small_phantom, tr)
    off = _nuclei_ion_vs_he(small_phantom, tr, shift_um=(60.0, -60.0))  # 3 MSI pixels off
    assert good > 0.5
    assert good > off + 0.15


def test_real_texture_and_processed_mode(shared_data, tmp_path):
    cfg = PhantomConfig(
        seed=5,
        he_image=str(shared_data / "he" / "cardinal_rcc-UH0505_12.png"),
        he_max_size=200,
        mode="processed",
        n_mz=300,
    )
    ph = make_phantom(tmp_path, cfg)
    with ImzMLFile(ph.paths["imzml"]) as imz:
        assert imz.mode == "processed" and not imz.shared_mz_axis
    # class maps: glass around the tissue, several tissue classes present
    frac = ph.he_classes.reshape(4, -1).mean(1)
    assert frac[0] > 0.2 and (frac[1:] > 0.02).all()


def test_sample_cache_is_regenerated_when_stale(tmp_path, monkeypatch):
    import json

    from napari_msi2hist import _sample_data

    monkeypatch.setenv("MSI2HIST_CACHE", str(tmp_path))
    monkeypatch.setattr(_sample_data, "SAMPLE_SEED", 9)
    d = _sample_data.ensure_sample_phantom()
    first = (d / "msi.ibd").stat().st_mtime_ns
    assert (
        _sample_data.ensure_sample_phantom() == d and (d / "msi.ibd").stat().st_mtime_ns == first
    )  # reused
    t = json.loads((d / "truth.json").read_text())
    t["phantom_version"] = 1  # as written by an older generator
    (d / "truth.json").write_text(json.dumps(t))
    _sample_data.ensure_sample_phantom()
    assert json.loads((d / "truth.json").read_text())["phantom_version"] != 1


def test_latent_msi_classes_are_not_the_colour_classes():
    # msi_classes="latent": the MSI follows the hidden tissue maps of the procedural H&E, which the
    # colour classes of the features only estimate (the R2 test in test_crossmodal.py relies on it)
    from napari_msi2hist.crossmodal.features import tissue_classes

    base = PhantomConfig(seed=7, procedural_size=96, n_mz=100, deform_rms_px=0.0)
    colour = make_phantom(None, base)
    latent = make_phantom(None, base.replace(msi_classes="latent"))
    np.testing.assert_array_equal(colour.he_rgb, latent.he_rgb)  # the same H&E
    np.testing.assert_allclose(colour.he_classes, tissue_classes(colour.he_rgb))
    np.testing.assert_allclose(latent.he_classes.sum(0), 1.0)
    assert (latent.he_classes >= 0).all()
    tissue = latent.he_classes[0] < 0.5
    for k in (1, 2):  # related (the stain shows the tissue) but not the same map
        r = np.corrcoef(latent.he_classes[k][tissue], colour.he_classes[k][tissue])[0, 1]
        assert 0.3 < r < 0.95, (k, r)
    assert not np.allclose(latent.msi_fractions, colour.msi_fractions, atol=0.05)
    with pytest.raises(ValueError, match="procedural"):
        make_phantom(None, base.replace(msi_classes="latent", n_pieces=2))
    with pytest.raises(ValueError, match="colour or latent"):
        make_phantom(None, base.replace(msi_classes="truth"))
