"""Interop round trips on a registered phantom: elastix TransformParameters, QuPath GeoJSON, SpatialData."""

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_msi2hist.cli import main
from napari_msi2hist.io.points import read_points_csv
from napari_msi2hist.registration.transforms import Transform

HE_PX, MSI_PX = 4.0, 20.0


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A phantom registered with the pipeline twice: an affine fitted to the landmarks, and
    rigid+affine+B-spline started from them. Returns (phantom paths, {kind: transform.json})."""
    from napari_msi2hist.phantom import PhantomConfig, make_phantom

    d = tmp_path_factory.mktemp("interop")
    ph = make_phantom(d / "ph", PhantomConfig(seed=3, procedural_size=256, n_mz=300))
    p = ph.paths
    out = {}
    for kind, stages, use in (
        ("linear", "rigid,affine", "fit"),
        ("bspline", "rigid,affine,bspline", "hybrid"),
    ):
        o = d / f"reg_{kind}"
        args = ["register", "--fixed", p["he"], "--moving", p["imzml"], "--out", str(o)]
        args += ["--route", "direct", "--stages", stages, "--landmarks-use", use, "--quiet"]
        args += ["--landmarks-fixed", p["landmarks_he"], "--landmarks-moving", p["landmarks_msi"]]
        # these tests check that formats carry a transform exactly, not how good it is: the
        # direct B-spline result on this small phantom is judged failed (landmark TRE ~3 px)
        args += ["--allow-failed"]
        assert main(args) == 0
        out[kind] = o / "transform.json"
        rep = json.loads((o / "report.json").read_text())
        assert rep["landmarks"]["tre_median_msi_px"] < 3.0  # a registration worth exporting
    assert Transform.load(out["linear"]).is_linear and not Transform.load(out["bspline"]).is_linear
    return p, out


QUPATH = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "a1",
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[60, 60], [200, 62], [196, 190], [64, 186], [60, 60]],
                    [[100, 100], [140, 100], [140, 130], [100, 130], [100, 100]],
                ],
            },
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
            },
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[20, 200], [50, 200], [50, 240], [20, 240], [20, 200]]],
                    [[[210, 20], [240, 20], [240, 50], [210, 50], [210, 20]]],
                ],
            },
            "properties": {"objectType": "annotation", "classification": {"name": "Stroma"}},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [128.5, 77.25]},
            "properties": {"objectType": "annotation", "classification": {"name": "Marker"}},
        },
    ],
}


def _run(*args):
    return main([str(a) for a in args])


def _seg_dist(pts, ring):
    """Distance of each point to the closed polyline ``ring``."""
    a = ring
    b = np.roll(ring, -1, axis=0)
    ab = b - a
    t = np.clip(np.einsum("pkd,kd->pk", pts[:, None] - a[None], ab) / (ab**2).sum(1)[None], 0, 1)
    proj = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(pts[:, None] - proj, axis=-1).min(1)


# ----------------------------------------------------------------------------- elastix
def test_handwritten_elastix_chain_follows_the_manual(tmp_path):
    """Files written by hand as in the elastix manual: an Euler transform, then a B-spline whose
    coefficients are all (dx, dy) (partition of unity: a constant shift inside its grid), chained with
    InitialTransformParametersFileName and combined by "Compose": T(p) = BSpline(Euler(p))."""
    from napari_msi2hist.interop.elastix import ElastixFormatError, read_elastix

    th, c, t, d = 0.3, np.array([50.0, 40.0]), np.array([5.0, -3.0]), np.array([2.5, -1.5])
    (tmp_path / "TP.0.txt").write_text(
        '// rigid\n(Transform "EulerTransform")\n(NumberOfParameters 3)\n'
        f'(TransformParameters {th} {t[0]} {t[1]})\n(InitialTransformParametersFileName "NoInitialTransform")\n'
        '(HowToCombineTransforms "Compose")\n(FixedImageDimension 2)\n(MovingImageDimension 2)\n'
        "(Size 100 80)\n(Spacing 1 1)\n(Origin 0 0)\n(Direction 1 0 0 1)\n"
        f"(CenterOfRotationPoint {c[0]} {c[1]})\n"
    )
    n = 7 * 6
    coef = " ".join([str(d[0])] * n + [str(d[1])] * n)
    (tmp_path / "TP.1.txt").write_text(
        '(Transform "BSplineTransform")\n'
        f"(NumberOfParameters {2 * n})\n(TransformParameters {coef})\n"
        f'(InitialTransformParametersFileName "{tmp_path / "TP.0.txt"}")\n'
        '(HowToCombineTransforms "Compose")\n(FixedImageDimension 2)\n(MovingImageDimension 2)\n'
        "(Size 100 80)\n(Spacing 1 1)\n(Origin 0 0)\n(Direction 1 0 0 1)\n"
        "(GridSize 7 6)\n(GridIndex 0 0)\n(GridSpacing 25 25)\n(GridOrigin -25 -25)\n"
        '(GridDirection 1 0 0 1)\n(BSplineTransformSplineOrder 3)\n(UseCyclicTransform "false")\n'
    )
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    xy = np.random.default_rng(0).uniform(20, 60, (30, 2))  # inside the B-spline's support
    expect = (xy - c) @ rot.T + c + t + d
    # files in pixel units (spacing 1): world um = pixel * pixel size on each side
    tr = read_elastix(tmp_path / "TP.1.txt", (HE_PX, HE_PX), (MSI_PX, MSI_PX))
    got = tr.fixed_to_moving(xy[:, ::-1] * HE_PX)[:, ::-1] / MSI_PX
    np.testing.assert_allclose(got, expect, atol=1e-9)
    assert tr.meta["elastix_transforms"] == ["EulerTransform", "BSplineTransform"]
    # the other order would differ: the rotation does not commute with the shift
    assert np.abs(((xy + d - c) @ rot.T + c + t) - expect).max() > 0.5
    # an affine by hand: a00 a01 a10 a11 tx ty, about the centre
    (tmp_path / "A.txt").write_text(
        '(Transform "AffineTransform")\n(TransformParameters 1.1 0.2 -0.1 0.9 3 4)\n'
        '(CenterOfRotationPoint 10 20)\n(InitialTransformParametersFileName "NoInitialTransform")\n'
    )
    a = read_elastix(tmp_path / "A.txt").fixed_to_moving([[30.0, 40.0]])[
        0, ::-1
    ]  # (x, y) = (40, 30)
    np.testing.assert_allclose(a, [[1.1, 0.2], [-0.1, 0.9]] @ np.array([30.0, 10.0]) + [13, 24])
    (tmp_path / "bad.txt").write_text(
        (tmp_path / "A.txt").read_text() + '(HowToCombineTransforms "Add")\n'
    )
    with pytest.raises(ElastixFormatError, match="bad.txt: HowToCombineTransforms 'Add'"):
        read_elastix(tmp_path / "bad.txt")
    (tmp_path / "orphan.txt").write_text(
        (tmp_path / "TP.1.txt").read_text().replace(str(tmp_path / "TP.0.txt"), "missing.txt")
    )
    with pytest.raises(ElastixFormatError, match="orphan.txt: InitialTransformParametersFileName"):
        read_elastix(tmp_path / "orphan.txt")


@pytest.mark.parametrize("kind", ["linear", "bspline"])
def test_elastix_export_matches_transformix_and_imports_back(registered, kind, tmp_path):
    p, trs = registered
    tr = Transform.load(trs[kind])
    assert (
        _run("export-elastix", "--transform", trs[kind], "--out", tmp_path / "elx", "--quiet") == 0
    )
    files = sorted((tmp_path / "elx").glob("TransformParameters.*.txt"))
    assert len(files) == (1 if kind == "linear" else 2)
    pts_he = read_points_csv(p["landmarks_he"])
    ours = tr.fixed_to_moving(pts_he)
    # and back: import-elastix gives the same mapping and the same landmark QA
    out = tmp_path / "imp" / "transform.json"
    args = ["import-elastix", files[-1], "--units", "um", "--he", p["he"], "--msi", p["imzml"]]
    args += [
        "--out",
        out,
        "--landmarks-he",
        p["landmarks_he"],
        "--landmarks-msi",
        p["landmarks_msi"],
    ]
    assert _run(*args, "--quiet") == 0
    back = Transform.load(out)
    np.testing.assert_allclose(back.fixed_to_moving(pts_he), ours, atol=1e-6)
    rep = json.loads((trs[kind].parent / "report.json").read_text())["landmarks"]
    qa = json.loads(out.read_text())["landmarks"]
    assert qa["tre_median_um"] == pytest.approx(rep["tre_median_um"], abs=1e-5)
    assert _run(*args, "--quiet") == 1  # no overwrite without --overwrite
    itk = pytest.importorskip("itk", reason="itk-elastix not installed (pip install itk-elastix)")
    (tmp_path / "pts.txt").write_text(
        f"point\n{len(pts_he)}\n" + "".join(f"{float(q[1])!r} {float(q[0])!r}\n" for q in pts_he)
    )
    po = itk.ParameterObject.New()
    for f in files:
        po.AddParameterFile(str(f))
    mov = itk.image_from_array(np.zeros((64, 64), np.float32))
    tf = itk.TransformixFilter.New(Input=mov, TransformParameterObject=po)
    tf.SetFixedPointSetFileName(str(tmp_path / "pts.txt"))
    tf.SetOutputDirectory(str(tmp_path))
    tf.SetLogToConsole(False)
    tf.Update()
    rows = (tmp_path / "outputpoints.txt").read_text().splitlines()
    theirs = np.array(
        [[float(v) for v in r.split("OutputPoint = [")[1].split("]")[0].split()] for r in rows]
    )[:, ::-1]
    assert np.abs(theirs - ours).max() < 1e-4  # um; transformix prints about 6 digits


def test_import_elastix_with_the_msi_as_fixed_image(registered, tmp_path):
    """image2image-reg users often register the H&E onto the MSI: the file maps MSI -> H&E."""
    from napari_msi2hist.interop.elastix import write_elastix

    p, trs = registered
    tr = Transform.load(trs["linear"])
    inv = Transform.from_moving_to_fixed_matrix(np.linalg.inv(tr.linear_moving_to_fixed_yx()))
    write_elastix(tmp_path / "e", inv, (63, 63), (MSI_PX, MSI_PX))
    out = tmp_path / "t.json"
    rc = _run(
        "import-elastix", tmp_path / "e" / "TransformParameters.0.txt", "--units", "um",
        "--msi-is-fixed", "--he", p["he"], "--msi", p["imzml"], "--out", out, "--quiet",
    )  # fmt: skip
    assert rc == 0
    pts = read_points_csv(p["landmarks_msi"])
    np.testing.assert_allclose(
        Transform.load(out).moving_to_fixed(pts), tr.moving_to_fixed(pts), atol=1e-6
    )


# ----------------------------------------------------------------------------- GeoJSON
@pytest.mark.parametrize("kind", ["linear", "bspline"])
def test_geojson_round_trip_he_msi_he(registered, kind, tmp_path):
    from napari_msi2hist.interop.geojson import read_geojson

    p, trs = registered
    src = tmp_path / "qupath.geojson"
    src.write_text(json.dumps(QUPATH))
    common = ["--transform", trs[kind], "--he", p["he"], "--msi", p["imzml"], "--quiet"]
    assert _run("annotations-to-msi", "--geojson", src, "--out", tmp_path / "msi", *common) == 0
    on_msi = tmp_path / "msi" / "annotations_msi.geojson"
    back_path = tmp_path / "back.geojson"
    assert _run("regions-to-geojson", "--regions", on_msi, "--out", back_path, *common) == 0
    orig, back = read_geojson(src), read_geojson(back_path)
    assert [f.classification for f in back] == ["Tumor", "Stroma", "Marker"]
    assert [len(f.polygons) for f in back] == [1, 2, 0]
    assert [len(poly) for f in back for poly in f.polygons] == [2, 1, 1]  # the hole is kept
    half = 0.5 * MSI_PX / HE_PX  # half an MSI pixel, in H&E pixels
    for fo, fb in zip(orig, back):
        for po, pb in zip(fo.polygons, fb.polygons):
            for ro, rb in zip(po, pb):
                assert _seg_dist(rb, ro).max() < half  # every vertex back on the original outline
                assert np.linalg.norm(ro[:, None] - rb[None], axis=-1).min(1).max() < half
    assert np.abs(back[2].points - orig[2].points).max() < half
    # the MSI-side GeoJSON is in MSI pixels: the tumour's corner lands where the transform says
    corner_um = (np.array([60.0, 60.0]) - 0.5) * HE_PX
    expect = Transform.load(trs[kind]).fixed_to_moving(corner_um[None])[0] / MSI_PX + 0.5
    got = read_geojson(on_msi)[0].polygons[0][0][0][::-1]
    np.testing.assert_allclose(got, expect, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "bspline"])
def test_class_counts_match_direct_rasterisation(registered, kind, tmp_path):
    """Reference: every MSI pixel centre mapped to the H&E (moving_to_fixed) and tested against the
    original polygons with matplotlib's point-in-polygon, independent of our rasteriser."""
    import tifffile
    from matplotlib.path import Path as MPath

    from napari_msi2hist.io.imzml import open_imzml

    p, trs = registered
    src = tmp_path / "qupath.geojson"
    src.write_text(json.dumps(QUPATH))
    rc = _run("annotations-to-msi", "--geojson", src, "--out", tmp_path / "o", "--transform",
              trs[kind], "--he", p["he"], "--msi", p["imzml"], "--quiet")  # fmt: skip
    assert rc == 0
    rows = (tmp_path / "o" / "class_counts.csv").read_text().split()[1:]
    counts = {r.split(",")[0]: int(r.split(",")[1]) for r in rows}
    with open_imzml(p["imzml"]) as imz:
        mask = imz.measured_mask()
    rr, cc = np.nonzero(mask)
    he_xy = Transform.load(trs[kind]).moving_to_fixed(np.column_stack([rr, cc]) * MSI_PX)[:, ::-1]
    he_xy = he_xy / HE_PX + 0.5  # world um -> QuPath pixels (corner convention)
    ref = {}
    for f in QUPATH["features"][:2]:
        g = f["geometry"]
        polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        inside = np.zeros(len(rr), bool)
        for rings in polys:
            m = MPath(rings[0]).contains_points(he_xy)
            for h in rings[1:]:
                m &= ~MPath(h).contains_points(he_xy)
            inside |= m
        ref[f["properties"]["classification"]["name"]] = int(inside.sum())
    assert ref["Tumor"] > 100 and ref["Stroma"] > 10
    slack = (
        0 if kind == "linear" else 1
    )  # B-spline: straight edges between densified vertices (0 seen)
    for name in ("Tumor", "Stroma"):
        assert abs(counts[name] - ref[name]) <= slack, (name, counts[name], ref[name])
    lab = tifffile.imread(tmp_path / "o" / "labels_msi.tif")
    assert int((lab[mask] == 1).sum()) == counts["Tumor"]
    table = (tmp_path / "o" / "classes.csv").read_text().splitlines()
    assert len(table) == 1 + len(rr) and table[0] == "row,col,y_um,x_um,class"


def test_label_image_traces_back_exactly():
    from scipy import ndimage as ndi

    from napari_msi2hist.interop.regions import labels_to_features, rasterize

    rng = np.random.default_rng(4)
    lab = (ndi.gaussian_filter(rng.random((40, 50)), 2.5) * 40).astype(int) % 4
    lab[18:22, 20:26] = 0  # a hole
    feats = labels_to_features(lab, {1: "a", 2: "b", 3: "c"})
    names = [f.classification for f in feats]
    back = rasterize(feats, lab.shape, names)
    lut = np.array([0] + [{"a": 1, "b": 2, "c": 3}[n] for n in names])
    np.testing.assert_array_equal(lut[back], lab)


def test_bad_geojson_is_one_line(tmp_path, capsys, registered):
    p, trs = registered
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    rc = _run("annotations-to-msi", "--geojson", bad, "--out", tmp_path / "o", "--transform",
              trs["linear"], "--he", p["he"], "--msi", p["imzml"], "--quiet")  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "bad.geojson: not a readable GeoJSON" in err[0]
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- SpatialData
def test_core_works_without_spatialdata(tmp_path):
    code = (
        "import sys; sys.modules['spatialdata'] = None\n"
        "import napari_msi2hist.interop.spatialdata_store, napari_msi2hist.workflows.export\n"
        "from napari_msi2hist.cli import main\n"
        "sys.exit(main(['export-spatialdata', '--he', 'x.tif', '--msi', 'x.imzML', '--out', 'o.zarr']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1
    assert 'pip install "napari-msi2hist[spatialdata]"' in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["linear", "bspline"])
def test_spatialdata_round_trip(registered, kind, tmp_path):
    sd = pytest.importorskip("spatialdata", reason='needs the extra: pip install ".[spatialdata]"')
    from spatialdata.transformations import get_transformation

    from napari_msi2hist.interop.spatialdata_store import msi_to_global
    from napari_msi2hist.models.datasets import read_pairs_yaml

    p, trs = registered
    ann = tmp_path / "qupath.geojson"
    ann.write_text(json.dumps(QUPATH))
    store = tmp_path / "section.zarr"
    args = ["export-spatialdata", "--he", p["he"], "--msi", p["imzml"], "--transform", trs[kind]]
    args += ["--mz", "400.5,550,701.25", "--tol-da", "0.5", "--norm", "tic", "--out", store]
    args += ["--landmarks-he", p["landmarks_he"], "--landmarks-msi", p["landmarks_msi"]]
    args += ["--annotations", ann, "--quiet"]
    # a synthetic H&E at twice the MSI resolution (its own pixel size, as msi2hist synthesize writes)
    from napari_msi2hist.io.histology import write_ome_tiff

    synth = np.random.default_rng(1).integers(0, 255, (126, 126, 3), dtype=np.uint8)
    write_ome_tiff(tmp_path / "synth.ome.tif", synth, (MSI_PX / 2, MSI_PX / 2))
    args += ["--synthetic", tmp_path / "synth.ome.tif"]
    assert _run(*args) == 0
    assert _run(*args) == 1  # exists: refused ...
    assert _run(*args, "--overwrite") == 0  # ... unless asked
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".section.zarr")]  # no leftovers
    sdata = sd.read_zarr(store)
    assert set(sdata.coordinate_systems) == {"msi", "he", "global"}
    # MSI landmarks through the store's transformations vs msi2hist transform-points
    assert _run("transform-points", "--transform", trs[kind], "--points", p["landmarks_msi"],
                "--out", tmp_path / "cli.csv", "--quiet") == 0  # fmt: skip
    cli = read_points_csv(tmp_path / "cli.csv")
    pts = sdata.points["landmarks_msi"].compute().sort_values("index_in_file")
    xy = pts[["x", "y"]].to_numpy(float)
    np.testing.assert_allclose(xy[:, ::-1], read_points_csv(p["landmarks_msi"]))
    if kind == "linear":
        m = get_transformation(sdata.points["landmarks_msi"], "global").to_affine_matrix(
            ("x", "y"), ("x", "y")
        )
        mapped = (np.column_stack([xy, np.ones(len(xy))]) @ m.T)[:, [1, 0]]
        assert np.abs(mapped - cli).max() < 1e-6
        assert "msi_to_he_displacement_um" not in sdata.images
    else:
        mapped = msi_to_global(sdata, xy[:, ::-1])
        assert np.isfinite(mapped).all()
        assert np.abs(mapped - cli).max() < 0.05 * MSI_PX
        f = sdata.images["msi_to_he_displacement_um"]
        assert list(f.coords["c"].values) == ["dx_um", "dy_um", "valid"]
        assert (sdata.path / "msi2hist" / "transform.h5").is_file()
    # the H&E's global frame is H&E um with pixel centres at index * size
    he_m = get_transformation(sdata.images["he"], "global").to_affine_matrix(("x", "y"), ("x", "y"))
    np.testing.assert_allclose(he_m @ [10.5, 20.5, 1], [10 * HE_PX, 20 * HE_PX, 1])
    # the table: pixels x m/z, linked to the labels
    t = sdata.tables["msi"]
    assert list(t.var["mz"]) == [400.5, 550.0, 701.25]
    assert list(sdata.images["ion_images"].coords["c"].values) == [
        "mz=400.5000",
        "mz=550.0000",
        "mz=701.2500",
    ]
    assert t.uns["msi2hist"]["tolerance"] == {"value": 0.5, "unit": "da"}
    assert t.uns["msi2hist"]["normalisation"] == "tic"
    lab = np.asarray(sdata.labels["msi_pixels"].data)
    r0 = t.obs.iloc[7]
    assert lab[int(r0["row"]), int(r0["col"])] == r0["instance_id"]
    ions = np.asarray(sdata.images["ion_images"].data)
    np.testing.assert_allclose(t.X[7], ions[:, int(r0["row"]), int(r0["col"])])
    # annotation classes per MSI pixel agree with annotations-to-msi
    assert _run("annotations-to-msi", "--geojson", ann, "--out", tmp_path / "a", "--transform",
                trs[kind], "--he", p["he"], "--msi", p["imzml"], "--quiet") == 0  # fmt: skip
    rows = (tmp_path / "a" / "class_counts.csv").read_text().split()[1:]
    counts = {r.split(",")[0]: int(r.split(",")[1]) for r in rows}
    vc = t.obs["annotation_class"].value_counts()
    assert vc["Tumor"] == counts["Tumor"] and vc["Stroma"] == counts["Stroma"]
    # the synthetic H&E sits in the MSI frame at its own pixel size
    sm = get_transformation(sdata.images["synthetic_he"], "msi").to_affine_matrix(
        ("x", "y"), ("x", "y")
    )
    np.testing.assert_allclose(sm @ [3.5, 5.5, 1], [3 * MSI_PX / 2, 5 * MSI_PX / 2, 1])
    # import: the same files back, and a pairs entry the training reads
    assert _run("import-spatialdata", store, "--out", tmp_path / "back", "--quiet") == 0
    from napari_msi2hist.io.histology import read_histology

    sb = read_histology(tmp_path / "back" / "synthetic_he.ome.tif")
    np.testing.assert_array_equal(np.asarray(sb.levels[0]), synth)
    assert tuple(sb.pixel_size_um) == (MSI_PX / 2, MSI_PX / 2)
    entry = read_pairs_yaml(tmp_path / "back" / "pairs.yaml")[0]
    assert entry["imzml"] == str(__import__("pathlib").Path(p["imzml"]).resolve())
    back = Transform.load(tmp_path / "back" / "transform.json")
    q = read_points_csv(p["landmarks_he"])
    np.testing.assert_allclose(
        back.fixed_to_moving(q), Transform.load(trs[kind]).fixed_to_moving(q)
    )
    np.testing.assert_allclose(
        read_points_csv(tmp_path / "back" / "landmarks_he.csv"), read_points_csv(p["landmarks_he"])
    )


def test_interop_folders_are_replaced_only_when_they_hold_nothing_else(tmp_path):
    """The exporters' own all-or-nothing writer (stores, annotation and import folders) leaves the
    manifest too, so --overwrite can replace their earlier output but never a user's file."""
    from napari_msi2hist.interop._files import check_writable, replace_dir, temp_sibling_dir

    out = tmp_path / "section.zarr"
    tmp = temp_sibling_dir(out)
    (tmp / "zarr.json").write_text("{}")
    replace_dir(tmp, out)
    assert check_writable(out, True) == out  # earlier output of ours: may be replaced
    with pytest.raises(FileExistsError, match="exists"):
        check_writable(out, False)
    (out / "my_notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="my_notes.txt"):
        check_writable(out, True)
    theirs = tmp_path / "theirs"
    (theirs / "sub").mkdir(parents=True)
    (theirs / "sub" / "data.bin").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="sub/data.bin"):
        check_writable(theirs, True)
