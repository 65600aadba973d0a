"""Registration on hard sections (partial raster, pieces, marks, flips, any rotation), its verdict,
repeatability, pixel sizes, and the phantom difficulties that make these cases."""

import json

import numpy as np
import pytest

import napari_msi2hist
from napari_msi2hist.cli import main
from napari_msi2hist.io.imzml import ImzMLFile
from napari_msi2hist.msi.ion_images import ion_images
from napari_msi2hist.phantom import PhantomConfig, make_phantom
from napari_msi2hist.progress import run_to_end
from napari_msi2hist.registration.intensity import RegistrationOptions, iter_register
from napari_msi2hist.registration.pipeline import iter_register_msi
from napari_msi2hist.registration.tissue import dice, he_tissue_mask
from napari_msi2hist.registration.verdict import judge

HARD = [
    # seed, coverage, pieces, marks, flip, rotation
    (41, 0.6, 3, True, True, 137.0),
    (42, 0.75, 2, True, False, -101.0),
    (43, 1.0, 1, True, True, 171.0),
]


def _tre_px(ph, tr):
    tissue = np.argwhere(ph.he_classes[0] < 0.3)[::7] * ph.config.he_pixel_um
    true = ph.transform.inverse(tissue)
    p = true / ph.config.msi_pixel_um
    ny, nx = ph.msi_shape_yx
    ok = (p[:, 0] >= 0) & (p[:, 1] >= 0) & (p[:, 0] <= ny - 1) & (p[:, 1] <= nx - 1)
    err = np.linalg.norm(tr.fixed_to_moving(tissue[ok]) - true[ok], axis=1)
    return float(np.median(err) / ph.config.msi_pixel_um)


@pytest.fixture(scope="module")
def hard_phantoms(tmp_path_factory):
    out = []
    for seed, cov, pieces, marks, flip, rot in HARD:
        cfg = PhantomConfig(
            seed=seed,
            procedural_size=200,
            msi_coverage=cov,
            n_pieces=pieces,
            marks=marks,
            flip=flip,
            rotation_deg=rot,
            deform_rms_px=1.0,
        )
        d = tmp_path_factory.mktemp(f"hard{seed}")
        ph = make_phantom(d, cfg)
        mz = sorted(m for v in ph.peaks.values() for m in v)
        with ImzMLFile(ph.paths["imzml"]) as imz:
            ions = ion_images(imz, mz, norm="tic")
        out.append((ph, ions))
    return out


def test_hard_phantoms_register_and_verdict_agrees(hard_phantoms):
    """Direct route on the hard kinds: every phantom within 2 MSI px, none judged 'failed'."""
    for ph, ions in hard_phantoms:
        r = run_to_end(
            iter_register_msi(
                ph.he_rgb,
                (ph.config.he_pixel_um,) * 2,
                "direct",
                (ph.config.msi_pixel_um,) * 2,
                msi_stack=ions.stack,
                msi_mask=ions.mask,
                summary="pca",
                opts=RegistrationOptions(stages=("rigid", "affine")),
            )
        )
        tre = _tre_px(ph, r.transform)
        assert tre < 2.0, (ph.config.seed, tre)
        assert r.transform.meta["flipped"] == ph.config.flip
        assert r.verdict["verdict"] != "failed", r.verdict["reasons"]
        assert r.metrics["after"]["dice"] > r.metrics["before"]["dice"]
        assert r.transform.meta["metric"] == "mattes"  # ion images: mutual information


def test_a_single_exported_image_registers_by_both_metrics(hard_phantoms):
    """A vendor export (one 8-bit image, tissue dark on white, no spectra): no second view can
    outvote a metric's spurious optima, so the direct route registers it by correlation and by MI
    and keeps the pose with the better tissue Dice; the hard phantoms land within 2 MSI px with
    the right mirror state."""
    from napari_msi2hist.registration.preprocess import msi_summary

    for ph, ions in hard_phantoms:
        img = msi_summary(ions.stack, "pca", ions.mask, scaled=False)
        lo, hi = np.percentile(img[ions.mask], [1, 99])
        export = 255 - np.clip(255 * (img - lo) / (hi - lo), 0, 255)  # tissue dark, glass white
        export[~ions.mask] = 255
        r = run_to_end(
            iter_register_msi(
                ph.he_rgb,
                (ph.config.he_pixel_um,) * 2,
                "direct",
                (ph.config.msi_pixel_um,) * 2,
                msi_stack=export.astype(np.uint8)[None].astype(np.float32),
                opts=RegistrationOptions(stages=("rigid", "affine")),
                moving_is_export=True,
            ),
            (seen := []).append,
        )
        # one progress bar for both passes, each named: it never falls back, nor runs to the
        # end twice
        fr = [p.fraction for p in seen]
        assert all(b >= a for a, b in zip(fr, fr[1:], strict=False)) and fr[-1] == 1.0
        names = [p.stage.split(":")[0] for p in seen]
        assert names == sorted(names, key=["correlation", "mutual information"].index)
        assert set(names) == {"correlation", "mutual information"}
        choice = r.transform.meta["metric_choice"]
        dice = choice["tissue_dice"]
        assert choice["chosen"] == max(dice, key=dice.get) == r.transform.meta["metric"]
        assert r.verdict["evidence"]["registration_metric"] == choice["chosen"]
        if choice["chosen"] == "correlation":
            # ITK's correlation is -NCC^2: the verdict judges |NCC|, what was optimised
            assert r.verdict["evidence"]["metric_name"] == "|ncc|"
        ev = r.verdict["evidence"]
        assert ev["metric_after"] >= ev["metric_before"]
        tre = _tre_px(ph, r.transform)
        assert tre < 2.0, (ph.config.seed, tre)
        assert r.transform.meta["flipped"] == ph.config.flip
        # an export is registered as it is (rescaled), not cleaned again: cleaning fitted a plane
        # and row medians to tissue on glass and made real pair A10's glass a ramp
        glass = export >= 255
        assert np.ptp(r.moving_image[glass]) < 1e-6


def test_hard_phantoms_synthesis_route_with_both_views(hard_phantoms):
    """Synthesis route on the hard kinds (partial raster, pieces, marks, flips, large turns), the
    bundled model's synthetic H&E with the ion images as second view: every phantom within 2 MSI
    px, none judged 'failed', and the search's ranking used both views."""
    from napari_msi2hist.models.checkpoint import load_checkpoint
    from napari_msi2hist.models.inference import InferenceOptions
    from napari_msi2hist.models.synthesis import extract_for_contract, iter_synthesize

    ckpt = load_checkpoint("demo")
    for ph, _ in hard_phantoms:
        with ImzMLFile(ph.paths["imzml"]) as imz:
            ions = run_to_end(extract_for_contract(imz, ckpt))
        syn = run_to_end(iter_synthesize(ions, ckpt, InferenceOptions(device="cpu")))
        px = ph.config.msi_pixel_um
        r = run_to_end(
            iter_register_msi(
                ph.he_rgb,
                (ph.config.he_pixel_um,) * 2,
                "synthesis",
                syn.pixel_size_um,
                synth_rgb=syn.rgb,
                msi_stack=ions.stack,
                msi_mask=ions.mask,
                summary="pca",
                opts=RegistrationOptions(stages=("rigid", "affine"), seed=0),
                msi_pixel_um=px,
            )
        )
        tre = _tre_px(ph, r.transform)
        assert tre < 2.0, (ph.config.seed, tre)
        assert r.transform.meta["search"]["second_view"] == "MSI summary"
        assert r.verdict["verdict"] != "failed", r.verdict["reasons"]


def test_a_wrong_pair_is_judged_failed(hard_phantoms):
    """The MSI of one section against the H&E of another: nothing can align; the verdict says so."""
    (ph_a, _), (_, ions_b) = hard_phantoms[0], hard_phantoms[1]
    rng = np.random.default_rng(0)
    noise = rng.random(ions_b.stack.shape[-2:]).astype(np.float32)[None]
    r = run_to_end(
        iter_register_msi(
            ph_a.he_rgb,
            (4.0, 4.0),
            "direct",
            (20.0, 20.0),
            msi_stack=noise,
            opts=RegistrationOptions(stages=("rigid",)),
        )
    )
    assert r.verdict["verdict"] in ("failed", "doubtful"), r.verdict


def test_five_runs_give_one_transform():
    ph = make_phantom(None, PhantomConfig(seed=44, procedural_size=160, rotation_deg=80.0))
    from napari_msi2hist.registration.preprocess import od_image

    he = od_image(ph.he_rgb)
    mov = ph.msi_fractions[1:].sum(0).astype(np.float32)
    params = set()
    for _ in range(5):
        tr = run_to_end(
            iter_register(
                he,
                (4, 4),
                mov,
                (20, 20),
                RegistrationOptions(stages=("rigid", "affine", "bspline")),
            )
        )
        flat = [
            tr.itk.GetNthTransform(i).GetParameters() for i in range(tr.itk.GetNumberOfTransforms())
        ]
        params.add(np.asarray([p for f in flat for p in f]).tobytes())
    assert len(params) == 1


def test_sample_cap_applies_and_keeps_the_pose():
    """A cap on metric samples per iteration changes the optimisation (it is applied) but not its
    answer: the capped pose is as close to the phantom's true map on its tissue (median, MSI px)
    as the uncapped one, within 0.1 px."""
    from napari_msi2hist.registration.preprocess import od_image

    ph = make_phantom(
        None, PhantomConfig(seed=46, procedural_size=200, rotation_deg=-35.0, deform_rms_px=0.0)
    )
    he = od_image(ph.he_rgb)
    mov = ph.msi_fractions[1:].sum(0).astype(np.float32)
    tissue = np.argwhere(ph.he_classes[0] < 0.3)[::5] * ph.config.he_pixel_um
    true = ph.transform.inverse(tissue)
    px = ph.config.msi_pixel_um
    out, err = {}, {}
    for cap in (0, 3000):
        opts = RegistrationOptions(stages=("rigid", "affine"), max_samples=cap)
        tr = run_to_end(iter_register(he, (ph.config.he_pixel_um,) * 2, mov, (px, px), opts))
        out[cap] = tr.fixed_to_moving(tissue)
        err[cap] = np.median(np.linalg.norm(out[cap] - true, axis=1)) / px
    assert err[0] < 0.5 and err[3000] < err[0] + 0.1, err
    assert np.abs(out[0] - out[3000]).max() > 1e-6  # the cap bound: another optimisation path


def test_tissue_mask_leaves_out_marks_and_keeps_pieces():
    ph = make_phantom(None, PhantomConfig(seed=45, procedural_size=200, n_pieces=3, marks=True))
    plain = make_phantom(None, PhantomConfig(seed=45, procedural_size=200, n_pieces=3))
    m = he_tissue_mask(ph.he_rgb)
    truth = ph.he_classes[0] < 0.5
    assert dice(m, truth) > 0.8
    # pixels the marks changed (the plain slide is the same up to the glass margin)
    ny, nx = plain.he_rgb.shape[:2]
    changed = np.zeros(m.shape, bool)
    changed[:, nx:] = ph.he_rgb[:, nx:].astype(int).sum(-1) < 600
    changed[:, :nx] = np.abs(ph.he_rgb[:, :nx].astype(int) - plain.he_rgb.astype(int)).sum(-1) > 60
    assert changed.sum() > 200
    assert (m & changed).sum() < 0.05 * changed.sum()
    from scipy import ndimage as ndi

    assert ndi.label(m)[1] >= 2  # pieces stay pieces


def test_phantom_difficulties_do_what_they_say():
    base = PhantomConfig(seed=46, procedural_size=128)
    a = make_phantom(None, base)
    b = make_phantom(None, base.replace(msi_coverage=0.5))
    c = make_phantom(None, base.replace(flip=True))
    assert np.array_equal(a.he_rgb, b.he_rgb)
    assert min(b.msi_shape_yx[0] / a.msi_shape_yx[0], b.msi_shape_yx[1] / a.msi_shape_yx[1]) <= 0.55
    assert np.linalg.det(c.transform.matrix_yx) < 0 < np.linalg.det(a.transform.matrix_yx)
    # the cropped raster still maps its landmarks onto H&E tissue
    p = np.round(b.landmarks_he_um / base.he_pixel_um).astype(int)
    assert (b.he_classes[0][p[:, 0], p[:, 1]] < 0.6).all()


def test_a_search_winner_at_the_edge_of_its_scales_is_noted():
    """A new user's A13 run: every candidate sat at 1/--scale-range, the pixel sizes were doubted,
    and the verdict said plain ok. It stays ok (the pose may be right) but says to widen the range."""
    base = {"dice_before": 0.2, "dice_after": 0.9, "metric_before": 0.1, "metric_after": 0.5}
    for chosen, noted in ((0.8, True), (1.25, True), (1.0, False), (0.9, False)):
        search = {"scale_range_tried": [0.8, 1.25], "chosen_start": {"scale": chosen}}
        v = judge({**base, "search": search})
        assert v["verdict"] == "ok"
        assert any("widen --scale-range" in r for r in v["reasons"]) == noted, (chosen, v)
    v = judge({**base, "search": {"scale_range_tried": [0.8, 1.25], "chosen_start": {}}})
    assert not any("scale-range" in r for r in v["reasons"])  # "as placed" won: no search scale


def test_verdict_rules():
    assert (
        judge({"dice_before": 0.2, "dice_after": 0.9, "metric_before": 0.1, "metric_after": 0.5})[
            "verdict"
        ]
        == "ok"
    )
    assert judge({"dice_before": 0.2, "dice_after": 0.4})["verdict"] == "failed"
    assert (
        judge({"dice_after": 0.9, "metric_before": 0.5, "metric_after": 0.3})["verdict"] == "failed"
    )
    assert judge({"dice_after": 0.9, "landmark_tre_msi_px": 3.0})["verdict"] == "failed"
    assert judge({"dice_after": 0.9, "route_disagreement_msi_px": 2.5})["verdict"] == "doubtful"
    rival = {
        "best_metric": -0.50,
        "runner_up_metric": -0.49,
        "runner_up_disagreement_um": 100.0,
    }
    assert (
        judge({"dice_after": 0.9, "search": rival, "moving_pixel_um": 20.0})["verdict"]
        == "doubtful"
    )
    # a ranking with two views records its own gap: a candidate that lost by 40 % is no rival
    assert (
        judge(
            {"dice_after": 0.9, "search": {**rival, "runner_up_gap": 0.4}, "moving_pixel_um": 20.0}
        )["verdict"]
        == "ok"
    )
    # disagreeing routes with the cross-check known: only the route whose pose fits worse is
    # flagged, failed when far off; the other gets a note
    base = {"dice_after": 0.9, "route_disagreement_msi_px": 3.0}
    assert judge({**base, "route_fits_worse": True})["verdict"] == "doubtful"
    # under the 2 px tolerance a B-spline route and an affine one differ by the deformation itself
    near = {"dice_after": 0.9, "route_disagreement_msi_px": 1.8, "route_fits_worse": True}
    assert judge(near)["verdict"] == "ok"
    better = judge({**base, "route_fits_worse": False})
    assert better["verdict"] == "ok" and any(r.startswith("note") for r in better["reasons"])
    far = {"dice_after": 0.9, "route_disagreement_msi_px": 30.0, "route_fits_worse": True}
    assert judge(far)["verdict"] == "failed"


def test_low_dice_that_no_shift_raises_is_a_note_not_a_doubt():
    low = {"dice_before": 0.2, "dice_after": 0.75, "metric_before": 0.1, "metric_after": 0.5}
    assert judge(low)["verdict"] == "doubtful"  # no probe recorded: as before
    shape = judge({**low, "dice_best_shift": 0.755, "dice_best_shift_msi_px": [1.0, 0.0]})
    assert shape["verdict"] == "ok" and any("differ in shape" in r for r in shape["reasons"])
    place = judge({**low, "dice_best_shift": 0.83, "dice_best_shift_msi_px": [-2.0, 1.0]})
    assert place["verdict"] == "doubtful"
    assert any("(-2, +1) MSI px (y, x) raises it to 0.83" in r for r in place["reasons"])
    # the probe never rescues a Dice under min_dice
    bad = {**low, "dice_after": 0.5, "dice_best_shift": 0.5, "dice_best_shift_msi_px": [0.0, 0.0]}
    assert judge(bad)["verdict"] == "failed"


@pytest.mark.parametrize("true_shift", [(0, 0), (2, -1), (-1, 2)])
def test_dice_shift_probe_finds_a_misplacement_and_not_a_shape_difference(true_shift):
    """Moving tissue: an ellipse on a 10 um raster (H&E at 2.5 um). Fixed tissue: the same ellipse
    moved by ``true_shift`` MSI px, with two lobes the moving mask lacks (a shape difference). The
    probe's best shift is the true one, computed independently by Dice of the plain masks."""
    from skimage.draw import ellipse

    from napari_msi2hist.registration.pipeline import overlap_metrics

    mpx, fpx = 10.0, 2.5
    moving = np.zeros((40, 50), bool)
    moving[ellipse(20, 25, 12, 17)] = True
    fixed = np.zeros((160, 200), bool)
    cy, cx = (20 + true_shift[0]) * 4, (25 + true_shift[1]) * 4  # pixel centres at index * size
    fixed[ellipse(cy, cx, 48, 68)] = True
    for sy, sx in ((-1, 1), (1, -1)):  # two opposite lobes: a difference in shape, not in place
        fixed[ellipse(cy + 45 * sy, cx + 55 * sx, 32, 32, shape=fixed.shape)] = True
    m = overlap_metrics(
        fixed.astype(float), (fpx, fpx), moving.astype(float), (mpx, mpx), None,
        fixed_tissue=fixed, moving_tissue=moving, shift_probe_um=mpx,
    )  # fmt: skip
    assert m["best_shift_um"] == [true_shift[0] * mpx, true_shift[1] * mpx]
    assert m["dice_best_shift"] >= m["dice"]
    placed = np.zeros_like(fixed)  # the moving ellipse drawn where the true shift puts it
    placed[ellipse(cy, cx, 48, 68)] = True
    ref = dice(fixed, placed)
    assert abs(m["dice_best_shift"] - ref) < 0.02
    if true_shift == (0, 0):
        assert m["dice_best_shift"] == m["dice"] < 0.8  # the lobe keeps Dice low; no shift helps
    else:
        assert m["dice_best_shift"] - m["dice"] > 0.02


def test_cross_check_blames_the_pose_both_images_like_less():
    """Two results of one raster: one at the true pose, one shifted by 6 MSI px. Scored with each
    route's own image and metric, the shifted one must fit worse."""
    from types import SimpleNamespace

    from napari_msi2hist.registration.transforms import Transform
    from napari_msi2hist.registration.verdict import cross_check_routes

    ph = make_phantom_for_cross_check()
    fixed, he_px, synth, summary, msi_px = ph
    good = Transform.from_moving_to_fixed_matrix(np.eye(3))
    m = np.eye(3)
    m[:2, 2] = (6 * msi_px, -3 * msi_px)
    bad = Transform.from_moving_to_fixed_matrix(m)
    res = {
        "synthesis": SimpleNamespace(transform=bad, moving_image=synth, moving_px=(msi_px, msi_px)),
        "direct": SimpleNamespace(transform=good, moving_image=summary, moving_px=(msi_px, msi_px)),
    }
    pts = np.argwhere(fixed > 0.5)[::9] * np.asarray(he_px)
    cc = cross_check_routes(fixed, he_px, res, pts, msi_px)
    assert cc["disagreement_msi_px"] == pytest.approx(np.hypot(6, 3), abs=0.01)
    assert cc["fits_worse"] == {"synthesis": True, "direct": False}
    assert cc["deficit"]["synthesis"] > 0.1 and cc["deficit"]["direct"] == 0.0


def make_phantom_for_cross_check():
    """A textured tissue on a 10 um H&E grid and two views of it on a 20 um MSI grid."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:160, :160]
    tissue = (((yy - 80) / 55.0) ** 2 + ((xx - 75) / 40.0) ** 2 < 1).astype(float)
    tex = ndi.gaussian_filter(rng.random((160, 160)), 3)
    fixed = ndi.gaussian_filter(tissue * (0.6 + tex), 1).astype(np.float32)
    synth = fixed[::2, ::2] + 0.05 * rng.random((80, 80)).astype(np.float32)
    summary = (tissue * (1.5 - tex))[::2, ::2].astype(np.float32)  # other modality: anti-texture
    return fixed, (10.0, 10.0), synth, summary, 20.0


def test_register_cli_pixel_sizes_verdict_and_exit_code(tmp_path, hard_phantoms, capsys):
    import tifffile

    ph, _ = hard_phantoms[0]
    he = tmp_path / "he.tif"
    tifffile.imwrite(he, ph.he_rgb)  # no pixel size
    rc = main(
        [
            "register",
            "--fixed",
            str(he),
            "--moving",
            ph.paths["imzml"],
            "--route",
            "direct",
            "--out",
            str(tmp_path / "o1"),
            "--quiet",
        ]
    )
    assert rc == 1  # refused: names the option (checked below through the message helper)
    noise = (np.random.default_rng(1).random((60, 60)) * 255).astype(np.uint8)
    msi = tmp_path / "maldi.png"
    import imageio.v3 as iio

    iio.imwrite(msi, noise)
    args = [
        "register",
        "--fixed",
        str(he),
        "--moving",
        str(msi),
        "--route",
        "direct",
        "--fixed-pixel-um",
        "4",
        "--moving-pixel-um",
        "20",
        "--stages",
        "rigid",
        "--quiet",
    ]
    rc = main([*args, "--out", str(tmp_path / "o2")])
    rep = json.loads((tmp_path / "o2" / "report.json").read_text())
    # the report says what it registered, at which pixel sizes, with which version
    assert rep["inputs"] == {"fixed": str(he.resolve()), "moving": str(msi.resolve())}
    assert rep["fixed_pixel_um"] == [4.0, 4.0] and rep["moving_pixel_um"] == [20.0, 20.0]
    assert rep["version"] == napari_msi2hist.__version__
    # an exported image file, not ion images: registered by both metrics, the better overlap kept
    choice = json.loads((tmp_path / "o2" / "transform.json").read_text())["metric_choice"]
    assert set(choice["tissue_dice"]) == {"correlation", "mattes"}
    assert rep["verdict"]["evidence"]["registration_metric"] == choice["chosen"]
    assert rep["verdict"]["verdict"] in ("failed", "doubtful")
    assert rc == (3 if rep["verdict"]["verdict"] == "failed" else 0)
    loud = [a for a in args if a != "--quiet"]
    capsys.readouterr()
    assert main([*loud, "--out", str(tmp_path / "o3"), "--allow-failed"]) == 0
    # the summary line names the metric that was optimised when it is not MI (|NCC|: a user saw
    # "MI 0.000 -> 0.000" for a run whose correlation went 0 -> 0.135)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("wrote "))
    optimised = "|NCC|" in line and "(the metric it optimised)" in line
    assert optimised == (choice["chosen"] == "correlation"), line


def test_missing_pixel_size_message_names_the_options():
    from napari_msi2hist.pixel_size import MissingPixelSize, resolve_pixel_size

    with pytest.raises(MissingPixelSize, match="--fixed-pixel-um"):
        resolve_pixel_size(None, None, "fixed", "he.png")
    assert resolve_pixel_size(None, 0.5, "moving") == (0.5, 0.5)
    assert resolve_pixel_size((2.0, 3.0), None, "moving") == (2.0, 3.0)


def test_register_names_both_missing_pixel_sizes_at_once(tmp_path, capsys):
    """Two files without pixel sizes: one error that names both options, not one per run."""
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    he, msi = tmp_path / "he.png", tmp_path / "maldi.png"
    iio.imwrite(he, rng.integers(0, 255, (60, 50, 3), dtype=np.uint8))
    iio.imwrite(msi, rng.integers(0, 255, (20, 18), dtype=np.uint8))
    args = ["register", "--fixed", str(he), "--moving", str(msi), "--route", "direct"]
    assert main([*args, "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--fixed-pixel-um" in err and "--moving-pixel-um" in err, err
    assert "he.png, maldi.png" in err
    assert str(he) not in err  # the files are named once, not again as a prefix of every input
    # the fixed one given: the error names the moving one only
    assert main([*args, "--fixed-pixel-um", "2", "--out", str(tmp_path / "o2"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "--moving-pixel-um" in err and "--fixed-pixel-um" not in err, err


def test_an_image_export_on_the_default_route_is_told_which_route_to_take(tmp_path, capsys):
    """A new user's first try: a MALDI export, no --route, no pixel sizes. The route is the first
    thing said (before pixel sizes), and the line names the option that fixes it."""
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    he, msi = tmp_path / "he.png", tmp_path / "maldi.png"
    iio.imwrite(he, rng.integers(0, 255, (60, 50, 3), dtype=np.uint8))
    iio.imwrite(msi, rng.integers(0, 255, (20, 18), dtype=np.uint8))
    args = ["register", "--fixed", str(he), "--moving", str(msi), "--out", str(tmp_path / "o")]
    assert main([*args, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--route direct" in err and "maldi.png" in err, err
    assert "pixel" not in err and "demo_generator" not in err, err
    assert not (tmp_path / "o").exists()


def test_msi_cleaning_removes_stripes_spikes_and_drift():
    from napari_msi2hist.registration.preprocess import clean_msi_image

    rng = np.random.default_rng(5)
    yy, xx = np.indices((60, 70))
    truth = 1.0 + 1.0 * (((yy - 30) / 14.0) ** 2 + ((xx - 33) / 18.0) ** 2 < 1)
    gain = np.exp(0.2 * rng.standard_normal((60, 1))) * (1.0 - 0.4 * yy / 60)
    raw = truth * gain * np.exp(0.03 * rng.standard_normal(truth.shape))
    raw[rng.random(raw.shape) < 0.003] *= 30  # hot pixels
    clean = clean_msi_image(raw)

    def r(a):
        return np.corrcoef(a.ravel(), truth.ravel())[0, 1]

    assert r(clean) > 0.9 > r(np.clip(raw, 0, np.percentile(raw, 99))) + 0.1


def test_glass_frame_is_left_out_beside_cut_tissue():
    from napari_msi2hist.registration.preprocess import pad_with_glass

    img = np.zeros((20, 30), np.float32)
    tissue = np.zeros((20, 30), bool)
    tissue[5:15, 0:10] = True  # the section is cut by the left border
    img[tissue] = 2.0
    framed, valid = pad_with_glass(img, tissue, None, 6)
    assert framed.shape == (32, 42) and np.all(framed[:6] == 0.0)
    assert not valid[6 + 8, 0:6].any()  # left of the cut tissue: unknown, not glass
    assert valid[6 + 8, -6:].all() and valid[0].all()  # elsewhere the frame counts as glass


def test_bspline_is_kept_only_when_it_helps_and_does_not_fold():
    """The B-spline stage against the phantom's true deformation. The moving image is the H&E seen
    through the true (deformed) MSI->H&E map at the MSI grid, a perfect synthetic H&E: the default
    B-spline must be kept and beat its own affine part on TRE; a 12 um mesh on 20 um pixels with no
    fold allowed must be refused and the affine result kept."""
    from scipy import ndimage as ndi

    from napari_msi2hist.registration.deformable import jacobian_folds
    from napari_msi2hist.registration.preprocess import od_image
    from napari_msi2hist.registration.transforms import Transform

    ph = make_phantom(
        None,
        PhantomConfig(seed=46, procedural_size=180, rotation_deg=25.0, deform_rms_px=1.5),
    )
    he = od_image(ph.he_rgb)
    ny, nx = ph.msi_shape_yx
    grid = np.stack(np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij"), -1).reshape(-1, 2)
    on_he = ph.transform.forward(grid * 20.0) / 4.0
    mov = ndi.map_coordinates(ndi.uniform_filter(he, 5), on_he.T, order=1).reshape(ny, nx)

    def reg(**kw):
        opts = RegistrationOptions(stages=("rigid", "affine", "bspline"), **kw)
        return run_to_end(iter_register(he, (4, 4), mov.astype(np.float32), (20, 20), opts))

    kept = reg()
    info = kept.meta["bspline"]
    assert info["accepted"], info["reason"]
    assert not kept.is_linear and info["fold_fraction"] <= 0.001
    # no fold at all on the H&E's own (finer) grid either: the B-spline's grid reaches past every
    # H&E pixel, so that the map does not jump back to the affine alone along the edges
    assert jacobian_folds(kept, he.shape, (4.0, 4.0)) == 0.0
    fp = kept.itk.GetNthTransform(1).GetFixedParameters()  # size, origin, spacing (x, y)
    for ax, n in ((0, he.shape[1]), (1, he.shape[0])):
        start = fp[2 + ax] + fp[4 + ax]  # a cubic grid's region begins one node in
        end = fp[2 + ax] + (fp[ax] - 2) * fp[4 + ax]
        assert start < -4.0 and end > (n - 1) * 4.0 + 4.0, (ax, start, end, n)
    affine_part = Transform(kept.itk.GetNthTransform(0))
    assert affine_part.is_linear
    assert _tre_px(ph, kept) < 0.7 * _tre_px(ph, affine_part)

    # an unbounded 12 um mesh on 20 um pixels chases noise and folds: refused
    strict = reg(bspline_mesh_um=12.0, bspline_max_folds=0.0, bspline_bound=0.0)
    si = strict.meta["bspline"]
    assert si["fold_fraction"] > 0.0, si
    assert not si["accepted"] and strict.is_linear
    assert "affine result is kept" in si["reason"]
    # the same mesh with its coefficients bounded (the default) cannot fold, whatever it decides
    bounded = reg(bspline_mesh_um=12.0, bspline_max_folds=0.0)
    bi = bounded.meta["bspline"]
    assert bi["coefficient_bound_um"] < 0.5 * 12.0 * 1.2
    assert bi["fold_fraction"] == 0.0, bi


def test_bspline_is_judged_by_the_second_view_when_there_is_one():
    """With a second image of the same raster (the MSI summary beside a synthetic H&E), that image,
    which the fit never sees, decides. A deformed section: the B-spline fitted on the first image
    also fits a differently contrasted second one better, and is kept, also when the first image's
    own held-out blocks rate it worse. An undeformed section whose
    first image carries smooth errors of its own (a synthetic H&E's wrong shades): the grid that
    chases them does not fit the clean second view better, and the affine result is kept."""
    from scipy import ndimage as ndi

    from napari_msi2hist.registration.consensus import SecondView
    from napari_msi2hist.registration.preprocess import od_image
    from napari_msi2hist.registration.transforms import Transform

    def pair(deform):
        ph = make_phantom(
            None,
            PhantomConfig(seed=47, procedural_size=180, rotation_deg=-40.0, deform_rms_px=deform),
        )
        he = od_image(ph.he_rgb)
        ny, nx = ph.msi_shape_yx
        grid = np.stack(np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij"), -1)
        on_he = ph.transform.forward(grid.reshape(-1, 2) * 20.0) / 4.0
        mov = ndi.map_coordinates(ndi.uniform_filter(he, 5), on_he.T, order=1).reshape(ny, nx)
        return ph, he, (mov / mov.max()).astype(np.float32)

    def reg(he, first, view):
        opts = RegistrationOptions(stages=("rigid", "affine", "bspline"))
        sv = SecondView(view.astype(np.float32), (20.0, 20.0), None, "second image", "mattes")
        return run_to_end(iter_register(he, (4, 4), first, (20, 20), opts, second_view=sv))

    ph, he, mov = pair(1.5)
    kept = reg(he, mov, np.sqrt(mov))  # same geometry, other contrast
    info = kept.meta["bspline"]
    assert info["accepted"], info["reason"]
    assert "second image" in info["reason"]
    assert info["view_metric_bspline"] < info["view_metric_linear"]
    assert _tre_px(ph, kept) < 0.7 * _tre_px(ph, Transform(kept.itk.GetNthTransform(0)))

    # the same section with smooth wrong shades on the first image: its held-out blocks score the
    # grid as worse (they share the shades), the clean second view as better, and the view is right
    rng = np.random.default_rng(4)
    shades = ndi.gaussian_filter(rng.standard_normal(mov.shape), 1.5)
    shaded = (mov * np.exp(0.3 * shades / shades.std())).astype(np.float32)
    by_view = reg(he, shaded, mov)
    vi = by_view.meta["bspline"]
    assert vi["accepted"] and not vi["heldout_improved"], vi
    assert _tre_px(ph, by_view) < 0.9 * _tre_px(ph, Transform(by_view.itk.GetNthTransform(0)))

    ph0, he0, mov0 = pair(0.0)
    rng = np.random.default_rng(3)
    shades = ndi.gaussian_filter(rng.standard_normal(mov0.shape), 2.0)
    wrong = np.clip(mov0 + 3.0 * shades / shades.std() * mov0.std(), 0, None)
    refused = reg(he0, wrong.astype(np.float32), mov0)
    ri = refused.meta["bspline"]
    assert not ri["accepted"] and refused.is_linear, ri
    assert "second image" in ri["reason"] and "affine result is kept" in ri["reason"]
    assert isinstance(ri["heldout_improved"], bool)  # recorded, not deciding
    assert _tre_px(ph0, refused) < 1.0


def test_fold_count_sees_folds_not_mirrors_rotations_or_borders():
    """A bounded B-spline (coefficients under 0.45 of the mesh spacing, the injectivity bound of
    2-D cubic B-splines) composed with any rotation or a mirror image never folds; the same grid
    with coefficients three times larger does. SimpleITK's own Jacobian filter halves the border
    derivatives, which reads a rotation near 180 degrees as folds along the edges."""
    import SimpleITK as sitk

    from napari_msi2hist.registration.deformable import jacobian_folds
    from napari_msi2hist.registration.transforms import Transform

    img = sitk.GetImageFromArray(np.zeros((48, 64), np.float32))
    img.SetSpacing((20.0, 20.0))
    rng = np.random.default_rng(5)
    for angle in (0.2, 3.0, -2.0):
        for flip in (False, True):
            bs = sitk.BSplineTransformInitializer(img, [6, 8], order=3)
            step = min(bs.GetFixedParameters()[4:6])
            signs = rng.choice([-1.0, 1.0], len(bs.GetParameters()))
            bs.SetParameters((signs * 0.45 * step).tolist())
            a = sitk.AffineTransform(2)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            a.SetMatrix((rot @ np.diag([-1.0 if flip else 1.0, 1.0])).ravel().tolist())
            a.SetCenter((640.0, 480.0))
            tr = Transform(sitk.CompositeTransform([a, bs]))
            assert jacobian_folds(tr, (48, 64), (20.0, 20.0)) == 0.0, (angle, flip)
            bs.SetParameters((signs * 1.5 * step).tolist())
            tr = Transform(sitk.CompositeTransform([a, bs]))
            assert jacobian_folds(tr, (48, 64), (20.0, 20.0)) > 0.05, (angle, flip)


def test_a_whole_section_shrunk_into_a_larger_one_is_not_a_good_overlap():
    """Real pair A10 came back at 0.64x scale inside its H&E section with a Dice of 0.93 counted
    where the raster landed, and 0.64 over the whole section. A raster that shows its section whole
    (tissue clear of the raster's edge) is judged on the whole H&E pieces it lands on; a second
    section elsewhere on the slide, which it does not touch, does not count; a raster that cuts the
    tissue keeps the partial-coverage rule."""
    from skimage.draw import ellipse

    from napari_msi2hist.registration.pipeline import overlap_metrics
    from napari_msi2hist.registration.transforms import Transform

    moving = np.zeros((60, 60), bool)
    moving[ellipse(30, 30, 22, 22)] = True  # a whole section with a glass margin, 10 um px
    fixed = np.zeros((300, 500), bool)  # 2 um px: the same section 440 um across at 150, 150 ...
    fixed[ellipse(150, 150, 110, 110)] = True
    fixed[ellipse(150, 400, 60, 60)] = True  # ... and another section beside it
    fm = fixed.astype(float)

    def at(scale):  # moving world -> fixed world: scaled about the section's centre
        c_m, c_f = np.array([300.0, 300.0]), np.array([300.0, 300.0])
        m = np.eye(3)
        m[:2, :2] *= scale
        m[:2, 2] = c_f - scale * c_m
        return Transform.from_moving_to_fixed_matrix(m)

    kw = dict(fixed_tissue=fixed, moving_tissue=moving)
    right = overlap_metrics(fm, (2.0, 2.0), moving.astype(float), (10.0, 10.0), at(1.0), **kw)
    shrunk = overlap_metrics(fm, (2.0, 2.0), moving.astype(float), (10.0, 10.0), at(0.6), **kw)
    assert right["whole_section"] and shrunk["whole_section"]
    assert right["dice"] > 0.95  # the other section does not count against the right pose
    area = 0.6**2  # the shrunk section covers 36 % of the H&E section's area
    assert shrunk["dice"] == pytest.approx(2 * area / (1 + area), abs=0.03)
    # a raster that cuts the section (its tissue reaches the edge): only where it lands counts
    cut = moving.copy()
    cut[:, 45:] = False
    foot = np.ones(moving.shape, np.float32)
    foot[:, 45:] = 0
    part = overlap_metrics(
        fm, (2.0, 2.0), cut.astype(float), (10.0, 10.0), at(1.0),
        fixed_tissue=fixed, moving_tissue=cut, moving_footprint=foot,
    )  # fmt: skip
    assert not part["whole_section"] and part["dice"] > 0.95


def _fragment_slide(rng):
    """A slide that kept one small fragment of its section, with a step in the glass's shade."""
    from skimage.draw import disk, ellipse

    he = np.full((300, 200, 3), (238, 236, 240), float) + rng.normal(0, 1.0, (300, 200, 3))
    he[:, 130:] -= 4  # uneven illumination / a scanner seam: the glass's only structure
    frag = np.zeros(he.shape[:2], bool)
    frag[disk((210, 60), 9)] = True
    he[frag] = (215, 120, 190)
    msi = np.full((50, 60), 250.0)  # a vendor export: white background, tissue dark
    mt = np.zeros(msi.shape, bool)
    mt[ellipse(25, 30, 18, 25, msi.shape)] = True
    msi[mt] = 90 + 20 * rng.standard_normal(mt.sum())
    return np.clip(he, 0, 255).astype(np.uint8), frag, msi.astype(np.float32), mt


def test_search_never_wins_on_glass_alone():
    """A1-like: with tissue masks the best pose covers the slide's only tissue; NCC alone prefers
    to fit the section's edge to a step in the glass (the old behaviour, checked as the control)."""
    from napari_msi2hist.registration.search import global_search

    he, frag, msi, mt = _fragment_slide(np.random.default_rng(3))
    fixed = -np.log(np.clip(he.astype(float), 1, 255) / 255).sum(-1)
    moving = msi.max() - msi
    landed = {}
    for masks in (False, True):
        kw = dict(fixed_tissue=frag, moving_tissue=mt) if masks else {}
        c = global_search(
            fixed, (1.0, 1.0), np.ones(fixed.shape, bool), moving, (2.0, 2.0),
            angle_step_deg=10, scales=(1.0,), keep=3, **kw,
        )[0]  # fmt: skip
        q = np.linalg.inv(c.matrix_yx) @ np.array([210.0, 60.0, 1.0])  # fragment -> moving um
        py, px = q[:2] / 2.0
        if c.flip:
            px = (msi.shape[1] - 1) - px
        landed[masks] = bool(
            0 <= py < msi.shape[0] and 0 <= px < msi.shape[1] and mt[int(py), int(px)]
        )
    assert landed == {False: False, True: True}


def test_a_slide_with_one_fragment_left_is_covered_and_judged_failed():
    """Real pair A1's case end to end: the pose covers what tissue the H&E has (Dice up from 0),
    and the verdict still fails it, since most of the section is missing from that slide."""
    he, frag, msi, _ = _fragment_slide(np.random.default_rng(3))
    r = run_to_end(
        iter_register_msi(
            he, (1.0, 1.0), "direct", (2.0, 2.0), msi_stack=msi[None], moving_is_export=True,
            opts=RegistrationOptions(stages=("rigid",), scale_range=1.3, scale_steps=3),
        )
    )  # fmt: skip
    assert r.metrics["before"]["dice"] == 0.0
    assert r.metrics["after"]["dice"] > 0.15
    assert r.metrics["after"]["covered_fraction"] > 0.9
    assert r.verdict["verdict"] == "failed"
    # the search records the scales it tried and the start that won, for the verdict's edge note
    search = r.transform.meta["search"]
    assert search["scale_range_tried"] == pytest.approx([1 / 1.3, 1.3])
    assert "chosen_start" in search
