"""The other direction (seed 003): H&E features on the MSI grid, regression of MSI PCA modes,
classification and biomarkers, cross-validated by sample."""

import numpy as np
import pytest
import torch

from napari_msi2hist.crossmodal.features import features_on_msi_grid, iter_deep_features
from napari_msi2hist.crossmodal.pipeline import iter_build_table, pixels_to_images
from napari_msi2hist.crossmodal.regression import (
    biomarker_table,
    cross_validated_logistic,
    cross_validated_regression,
    fit_logistic,
    fit_pca,
    roc_auc,
    sample_folds,
)
from napari_msi2hist.progress import run_to_end
from napari_msi2hist.registration.alignment import LinearAlignment


@pytest.fixture(scope="module")
def linear_phantoms(tmp_path_factory):
    """Three phantoms whose MSI is a linear function of the H&E's class fractions (no suppression,
    drift, matrix peaks, hot or missing pixels, no deformation), and a nuclei-rich label drawn on
    the H&E."""
    from napari_msi2hist.io.histology import write_ome_tiff
    from napari_msi2hist.phantom import PhantomConfig, make_phantom

    d = tmp_path_factory.mktemp("linear")
    entries, phs = [], []
    for seed in (31, 32, 33):
        cfg = PhantomConfig(
            seed=seed,
            procedural_size=160,
            n_mz=400,
            drift=False,
            ion_suppression=False,
            matrix_peaks=False,
            hot_pixels=0.0,
            missing_pixels=0.0,
            deform_rms_px=0.0,
        )
        ph = make_phantom(d / f"p{seed}", cfg)
        label = (ph.he_classes[1] > 0.3).astype(np.uint8) * 255
        write_ome_tiff(d / f"p{seed}" / "label.ome.tif", label[None], (4.0, 4.0))
        entries.append(
            {
                "name": f"p{seed}",
                "imzml": ph.paths["imzml"],
                "he": ph.paths["he"],
                "align": {"truth": ph.paths["truth"]},
                "label": str(d / f"p{seed}" / "label.ome.tif"),
                "base": "/",
            }
        )
        phs.append(ph)
    mz = sorted(m for v in phs[0].peaks.values() for m in v)
    table = run_to_end(
        iter_build_table(entries, mz=mz, norm="none", tolerance=(1.0, "da"), tissue_only=False)
    )
    return entries, phs, table


def test_features_are_footprint_averages():
    # a linear ramp on a 5 um grid, MSI pixels of 20 um on the same frame: the footprint average of
    # a linear function is its value at the pixel centre
    yy, xx = np.mgrid[0:80, 0:80].astype(np.float32)
    fmap = np.stack([yy * 5.0, xx * 5.0 + 3.0])
    out, valid = features_on_msi_grid(
        fmap, (5.0, 5.0), LinearAlignment.identity(), (15, 15), (20.0, 20.0)
    )
    cy, cx = np.mgrid[0:15, 0:15] * 20.0
    np.testing.assert_allclose(out[0][valid], cy[valid], atol=1e-3)
    np.testing.assert_allclose(out[1][valid], cx[valid] + 3.0, atol=1e-3)
    assert valid[1:, 1:].all() and not valid[0].any()  # row 0's footprint starts before the map
    # area weighting: a single bright fine pixel spreads over the MSI pixel that covers it
    spot = np.zeros((1, 80, 80), np.float32)
    spot[0, 40, 40] = 16.0  # at 200 um: the centre of MSI pixel (10, 10)
    out, _ = features_on_msi_grid(
        spot, (5.0, 5.0), LinearAlignment.identity(), (15, 15), (20.0, 20.0)
    )
    assert out[0].sum() == pytest.approx(1.0, rel=1e-6) and out[0].argmax() == 10 * 15 + 10


def test_deep_features_tile_by_tile_equal_the_whole_image():
    from napari_msi2hist.models.backbones import VGG16Features

    torch.manual_seed(0)
    net = VGG16Features().eval()
    rgb = (np.random.default_rng(0).random((150, 170, 3)) * 255).astype(np.uint8)
    tiled, stride = run_to_end(iter_deep_features(rgb, net, stage=1, tile=64, margin=32))
    with torch.no_grad():
        t = torch.from_numpy(rgb.astype(np.float32).transpose(2, 0, 1) / 255.0)[None]
        whole = net(t)[1][0].numpy()
    assert stride == 2 and tiled.shape == (128, 75, 85)
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-4)


def test_regression_recovers_the_planted_linear_relation(linear_phantoms):
    # circular by construction: these phantoms make their MSI from crossmodal.features.tissue_classes,
    # four of the fifteen colour features, so this is the upper bound (the regression's arithmetic);
    # the test below is the honest one
    _, _, table = linear_phantoms
    f, x, g, _ = table.pixels()
    res = cross_validated_regression(f, x, g, n_components=5, alpha=1.0)
    # three independent class fractions make the MSI: three modes carry the signal
    assert res.pca.explained_variance_ratio[:3].sum() > 0.85
    assert res.r2[0] > 0.95 and res.r2[1] > 0.95 and res.r2[2] > 0.8, res.r2
    assert set(res.r2_per_sample) == {"p31", "p32", "p33"}
    # reconstructed spectra: out-of-fold predicted modes back to ion intensities
    # (per-pixel noise of one m/z is not predictable; its PCA-denoised value is)
    recon, denoised = res.pca.inverse(res.oof_scores), res.pca.inverse(res.true_scores)
    c = int(np.argmax(x.var(0)))
    assert np.corrcoef(recon[:, c], denoised[:, c])[0, 1] > 0.9
    assert np.corrcoef(recon[:, c], x[:, c])[0, 1] > 0.7
    # images of the predictions, NaN off the mask
    imgs = pixels_to_images(res.oof_scores, table)
    assert imgs[0].shape == (5, *table.samples[0].shape)
    assert np.isnan(imgs[0][:, ~table.samples[0].mask]).all()


@pytest.fixture(scope="module")
def latent_phantoms(tmp_path_factory):
    """Like ``linear_phantoms``, but the MSI is made from the hidden tissue maps the procedural H&E
    was drawn from (``msi_classes="latent"``), not from the colour classes the features contain."""
    from napari_msi2hist.phantom import PhantomConfig, make_phantom

    d = tmp_path_factory.mktemp("latent")
    entries, phs = [], []
    for seed in (31, 32, 33):
        cfg = PhantomConfig(
            seed=seed,
            procedural_size=160,
            n_mz=400,
            drift=False,
            ion_suppression=False,
            matrix_peaks=False,
            hot_pixels=0.0,
            missing_pixels=0.0,
            deform_rms_px=0.0,
            msi_classes="latent",
        )
        ph = make_phantom(d / f"p{seed}", cfg)
        entries.append(
            {
                "name": f"p{seed}",
                "imzml": ph.paths["imzml"],
                "he": ph.paths["he"],
                "align": {"truth": ph.paths["truth"]},
                "base": "/",
            }
        )
        phs.append(ph)
    mz = sorted(m for v in phs[0].peaks.values() for m in v)
    return run_to_end(
        iter_build_table(entries, mz=mz, norm="none", tolerance=(1.0, "da"), tissue_only=False)
    )


def test_regression_on_msi_not_made_from_the_features(latent_phantoms):
    # The MSI follows the tissue the H&E was drawn from (nuclear density, fibres, lumens); the
    # features only see its stain colours, blurred and noisy. Measured (seeds 31-33, leave-one-sample-
    # out): R2 0.87 and 0.82 for the two leading modes (84 % of the variance); the third mode (7 %:
    # "other" tissue inside cell nests against fibre-poor stroma, which the stains do not separate)
    # is not predictable (R2 < 0). Seeds 41-43 and 51-53 gave 0.86/0.74 and 0.89/0.83, hence the
    # thresholds 0.8 and 0.7 rather than the circular test's 0.95.
    f, x, g, _ = latent_phantoms.pixels()
    res = cross_validated_regression(f, x, g, n_components=5, alpha=1.0)
    assert res.pca.explained_variance_ratio[:2].sum() > 0.75
    assert res.r2[0] > 0.8 and res.r2[1] > 0.7, res.r2
    assert min(v[0] for v in res.r2_per_sample.values()) > 0.75, res.r2_per_sample
    # held-out samples do worse than the circular phantoms would let them: the signal is not a
    # linear function of the features
    assert res.r2[0] < 0.95, res.r2


def test_cross_validation_never_mixes_samples(linear_phantoms):
    groups = np.array(["a", "a", "b", "c", "b", "c", "a"])
    folds = list(sample_folds(groups))
    assert [h for _, _, h in folds] == ["a", "b", "c"]
    for tr, te, held in folds:
        assert set(groups[te]) == {held} and held not in set(groups[tr])
        assert len(tr) + len(te) == len(groups)
    with pytest.raises(ValueError, match="at least two samples"):
        list(sample_folds(np.array(["a", "a"])))
    # a feature that only identifies the sample cannot be learned across samples: out-of-fold R2
    # stays poor even though within-sample fitting would be perfect
    _, _, table = linear_phantoms
    f, x, g, _ = table.pixels()
    ident = np.column_stack([(g == s.name).astype(float) for s in table.samples])
    target = np.array([{"p31": 1.0, "p32": 5.0, "p33": -3.0}[v] for v in g])
    res = cross_validated_regression(ident, np.column_stack([target, target * 2]), g, 1)
    assert res.r2[0] < 0.5


def test_logistic_regression_against_an_independent_optimiser():
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 3))
    y = (x @ [1.5, -2.0, 0.3] + 0.5 * rng.standard_normal(300) > 0).astype(int)
    m = fit_logistic(x, y, l2=2.0)
    z = (x - x.mean(0)) / x.std(0)

    def nll(w):
        s = z @ w[:3] + w[3]
        return np.sum(np.logaddexp(0, s) - y * s) + 0.5 * 2.0 * np.sum(w[:3] ** 2)

    ref = minimize(nll, np.zeros(4), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(m.coef, ref[:3], atol=1e-4)
    assert m.intercept == pytest.approx(ref[3], abs=1e-4)
    # AUC by hand: positives (3, 1), negatives (2, 0): pairs won 3 of 4
    assert roc_auc([1, 1, 0, 0], [3, 1, 2, 0]) == pytest.approx(0.75)
    assert roc_auc([1, 0], [1, 1]) == pytest.approx(0.5)  # a tie counts half
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(x, np.zeros(300))


def test_classification_and_biomarkers_on_phantoms(linear_phantoms):
    _, phs, table = linear_phantoms
    f, x, g, lab = table.pixels()
    assert lab is not None and 0.05 < lab.mean() < 0.95
    pca = fit_pca(x, 5)
    from_msi = cross_validated_logistic(pca.transform(x), lab, g)
    from_he = cross_validated_logistic(f, lab, g)
    assert from_msi.auc > 0.9 and from_he.auc > 0.9, (from_msi.auc, from_he.auc)
    assert set(from_msi.per_sample) == {"p31", "p32", "p33"}
    names = {m: f"nuclear lipid {i}" for i, m in enumerate(phs[0].peaks["nuclei"])}
    rows = biomarker_table(x, table.mz, lab, names)
    # the best separating m/z are the planted nuclei peaks, higher in the label, named from the list
    top = rows[: len(phs[0].peaks["nuclei"])]
    assert {r["mz"] for r in top} == set(phs[0].peaks["nuclei"])
    assert all(r["higher_in"] == "label" and r["name"].startswith("nuclear") for r in top)


def _pairs_yaml(path, entries, with_label=True):
    import yaml

    samples = []
    for e in entries:
        s = {"name": e["name"], "imzml": e["imzml"], "he": e["he"], "align": e["align"]}
        if with_label:
            s["label"] = e["label"]
        samples.append(s)
    path.write_text(yaml.safe_dump({"samples": samples}))
    return path


def test_predict_msi_and_classify_commands(linear_phantoms, tmp_path, capsys):
    import json

    from napari_msi2hist.cli import main
    from napari_msi2hist.io.histology import read_histology

    entries, phs, _ = linear_phantoms
    pairs = _pairs_yaml(tmp_path / "pairs.yaml", entries)
    mz = ",".join(str(m) for m in sorted(m for v in phs[0].peaks.values() for m in v))
    common = ["--pairs", str(pairs), "--mz", mz, "--norm", "none", "--tolerance", "1"]
    common += ["--tolerance-unit", "da", "--n-components", "4", "--json"]
    out = tmp_path / "pred"
    capsys.readouterr()
    assert main(["predict-msi", *common, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["r2"][0] > 0.95 and summary["samples"] == ["p31", "p32", "p33"]
    img = read_histology(out / "p31_pca_predicted.ome.tif")
    assert img.pixel_size_um == (20.0, 20.0)
    arr = np.asarray(img.levels[0])
    assert arr.shape[0] == 4 or arr.shape[-1] == 4
    stack = np.asarray(read_histology(out / "p31_msi_predicted.ome.tif").levels[0])
    assert 21 in stack.shape  # one predicted ion image per m/z
    r2 = (out / "r2.csv").read_text().splitlines()
    assert r2[0].startswith("component,explained_variance,r2,r2_p31") and len(r2) == 5

    names = tmp_path / "names.csv"
    names.write_text(
        "mz,name\n" + "".join(f"{m},nuc{i}\n" for i, m in enumerate(phs[0].peaks["nuclei"]))
    )
    out2 = tmp_path / "cls"
    assert main(["classify", *common, "--out", str(out2), "--names", str(names)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["msi"]["auc"] > 0.9 and s["he"]["auc"] > 0.9
    rows = (out2 / "biomarkers.csv").read_text().splitlines()
    assert rows[0].startswith("mz,auc,separation,higher_in,name") and ",nuc" in rows[1]
    assert (out2 / "p32_label_probability_he.ome.tif").is_file()

    # a sample without a label is named in a one-line error
    bad = _pairs_yaml(tmp_path / "nolabel.yaml", entries, with_label=False)
    assert main(["classify", "--pairs", str(bad), "--out", str(tmp_path / "x"), "--quiet"]) == 1
    assert "samples without a 'label' mask: p31" in capsys.readouterr().err
    # a single sample cannot be cross-validated by sample
    one = _pairs_yaml(tmp_path / "one.yaml", entries[:1])
    assert (
        main(["predict-msi", *common[:2], "--out", str(tmp_path / "y"), "--pairs", str(one)]) == 1
    )
    assert "at least two samples" in capsys.readouterr().err


def test_geojson_annotation_is_rasterised_on_the_he_grid(tmp_path):
    import json

    from napari_msi2hist.crossmodal.pipeline import rasterize_geojson

    square = [[10, 20], [40, 20], [40, 30], [10, 30], [10, 20]]  # x, y (QuPath: pixels)
    hole = [[20, 22], [25, 22], [25, 26], [20, 26], [20, 22]]
    gj = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square, hole]}}
        ],
    }
    p = tmp_path / "tumour.geojson"
    p.write_text(json.dumps(gj))
    m = rasterize_geojson(p, (50, 60))
    assert m[25, 15] and not m[5, 5] and not m[24, 22]  # inside, outside, in the hole
    assert m[:, :10].sum() == 0 and m[31:].sum() == 0  # rows are y, columns are x
    p.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(ValueError, match="tumour.geojson: no Polygon"):
        rasterize_geojson(p, (50, 60))


def test_predict_msi_for_an_he_without_msi(linear_phantoms, tmp_path, capsys):
    from napari_msi2hist.cli import main
    from napari_msi2hist.crossmodal.superres import block_mean
    from napari_msi2hist.io.histology import read_histology

    entries, phs, table = linear_phantoms
    pairs = _pairs_yaml(tmp_path / "pairs.yaml", entries[:2], with_label=False)
    mz = sorted(m for v in phs[0].peaks.values() for m in v)
    out = tmp_path / "apply"
    args = ["predict-msi", "--pairs", str(pairs), "--out", str(out), "--quiet"]
    args += ["--mz", ",".join(map(str, mz)), "--norm", "none", "--tolerance", "1"]
    args += ["--tolerance-unit", "da", "--n-components", "4", "--apply-he", entries[2]["he"]]
    assert main(args) == 0
    img = read_histology(out / "he_msi_from_he.ome.tif")
    assert img.pixel_size_um == (20.0, 20.0)
    ions = np.asarray(img.levels[0])
    # the third phantom's nuclei peaks follow its nuclei fraction (20 um = 5 H&E pixels of 4 um)
    nuc = block_mean(phs[2].he_classes[1], 5)
    c = mz.index(phs[2].peaks["nuclei"][0])
    pred = ions[c][: nuc.shape[0], : nuc.shape[1]]
    ok = np.isfinite(pred)
    assert ok.mean() > 0.2 and np.isnan(ions[c]).any()  # glass is left out
    assert np.corrcoef(pred[ok], nuc[ok])[0, 1] > 0.8
