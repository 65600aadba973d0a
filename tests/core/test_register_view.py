"""What the Register widget shows of a result, made off the GUI thread: the overlay grid is the
pyramid level the registration used, bounded in size (never a whole slide's level 0), and the
registered image and the checkerboard on it match a direct resample."""

from types import SimpleNamespace

import numpy as np

from napari_msi2hist.io.histology import read_histology, write_ome_tiff
from napari_msi2hist.registration.pipeline import RegistrationResult, checkerboard
from napari_msi2hist.registration.preprocess import od_image
from napari_msi2hist.registration.transforms import Transform, rotation_scale_matrix_yx
from napari_msi2hist.workflows.register_view import overlay_grid, registered_view
from napari_msi2hist.workflows.wholeslide import level_grid, registration_level

SLIDE = [(40000 >> k, 40000 >> k, 3) for k in range(6)]  # 40,000 px at 0.5 um, 6 levels


def test_level_grid_never_picks_a_whole_slides_level_0():
    # the registration's 8 um: the 8 um level (2,500 px); 6 um: the 4 um level as it is
    g = level_grid(SLIDE, (0.5, 0.5), 8.0)
    assert (g.level, g.factor, g.shape, g.px) == (4, 1, (2500, 2500), (8.0, 8.0))
    g = level_grid(SLIDE, (0.5, 0.5), 6.0)
    # ... which (5,000 px) is over the bound: block-averaged 2x2
    assert (g.level, g.factor, g.shape, g.px) == (3, 2, (2500, 2500), (8.0, 8.0))
    # no pixel given, or a fine one: still at most 4,096 px on a side, from a small level
    for px in (None, 0.5, 1.0):
        g = level_grid(SLIDE, (0.5, 0.5), px)
        assert max(g.shape) <= 4096 and g.level >= 3, g
        assert np.isclose(g.px[0] * g.shape[0], 40000 * 0.5, rtol=1e-3)  # still the whole slide
    g = level_grid(SLIDE, (0.5, 0.5), 1.0, max_side=1000)
    assert max(g.shape) <= 1000 and g.level >= 4
    # a flat image larger than the bound: block-averaged
    g = level_grid([(10000, 6000, 3)], (1.0, 1.0), None)
    assert (g.level, g.factor, g.shape, g.px) == (0, 3, (3333, 2000), (3.0, 3.0))
    # a small flat image: its own grid
    g = level_grid([(160, 150, 3)], (4.0, 4.0), 4.0)
    assert (g.level, g.factor, g.shape, g.px) == (0, 1, (160, 150), (4.0, 4.0))


def test_level_grid_is_the_grid_registration_level_reads(tmp_path):
    rng = np.random.default_rng(0)
    he = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    img = read_histology(write_ome_tiff(tmp_path / "p.ome.tif", he, (0.5, 0.5), pyramid=True))
    for moving_px in (4.0, 10.0, 20.0, 60.0):
        arr, px = registration_level(img, (0.5, 0.5), moving_px)
        g = level_grid([lv.shape for lv in img.levels], (0.5, 0.5), max(px))
        assert g.shape == arr.shape[:2] and g.px == px, (moving_px, g, arr.shape, px)


def _result(deformable: bool) -> RegistrationResult:
    import SimpleITK as sitk

    m = np.eye(3)
    m[:2, :2] = rotation_scale_matrix_yx(9.0, 1.05)
    m[:2, 2] = (30.0, -20.0)
    tr = Transform.from_moving_to_fixed_matrix(m)
    if deformable:
        ref = sitk.Image([64, 64], sitk.sitkFloat32)
        ref.SetSpacing((10.0, 10.0))
        bs = sitk.BSplineTransformInitializer(ref, [4, 4], 3)
        bs.SetParameters(tuple(np.random.default_rng(1).normal(0, 6.0, len(bs.GetParameters()))))
        tr = Transform(sitk.CompositeTransform([tr.itk, bs]))
    tr.meta["registration_fixed_pixel_um"] = [4.0, 4.0]
    mov = np.random.default_rng(2).random((40, 45)).astype(np.float32)
    return RegistrationResult(tr, "direct", 0.0, moving_image=mov, moving_px=(20.0, 20.0))


def test_registered_view_on_a_pyramid_matches_a_direct_resample(tmp_path):
    rng = np.random.default_rng(3)
    he = rng.integers(0, 255, (1200, 1100, 3), dtype=np.uint8)  # 1 um pixels
    img = read_histology(write_ome_tiff(tmp_path / "p.ome.tif", he, (1.0, 1.0), pyramid=True))
    levels = list(img.levels)
    assert [lv.shape[0] for lv in levels] == [1200, 600]
    res = _result(deformable=True)
    view = registered_view(res, levels, (1.0, 1.0), with_checker=True)
    g = view.grid
    # the registration's 4 um: the 2 um level in 2x2 blocks, not level 0
    assert (g.level, g.factor, g.shape, g.px) == (1, 2, (300, 275), (4.0, 4.0))
    want = res.transform.resample_moving_to_fixed(res.moving_image, (20.0, 20.0), g.shape, g.px)
    np.testing.assert_allclose(view.warped, want, atol=1e-6)
    assert view.warped.dtype == np.float32 and view.warped.std() > 0.05
    lv1 = np.asarray(levels[1]).astype(float)
    blocks = np.round(lv1.reshape(300, 2, 275, 2, 3).mean((1, 3)))
    # moved back by the block's centre offset: (1 - 1 um / 4 um) / 2 of a grid pixel
    from scipy import ndimage as ndi

    s = 0.5 * (1 - 1.0 / 4.0)
    blocks = np.stack(
        [
            ndi.shift(blocks[..., c].astype(np.float32), (s, s), order=1, mode="nearest")
            for c in range(3)
        ],
        -1,
    )
    want_cb = checkerboard(od_image(np.round(blocks).astype(np.uint8)), want)
    np.testing.assert_allclose(view.checker, want_cb, rtol=1e-5, atol=1e-5)
    assert view.checker_grid == g
    # a linear result needs no image (the layers' affine shows it); no checker unless asked
    lin = registered_view(_result(deformable=False), levels, (1.0, 1.0))
    assert lin.warped is None and lin.checker is None
    # a bound smaller than the level: a coarser grid, same extent
    small = overlay_grid(res, [lv.shape for lv in levels], (1.0, 1.0), max_side=200)
    assert max(small.shape) <= 200 and small.px[0] > 4.0


def test_registered_view_reads_only_the_grids_level():
    """Level 0 of a (fake) whole slide is never touched: indexing it fails."""

    class Untouchable:
        shape, ndim, dtype = (40000, 40000, 3), 3, np.dtype(np.uint8)

        def __array__(self, *a, **k):
            raise AssertionError("level 0 read")

        def __getitem__(self, k):
            raise AssertionError("level 0 read")

    rng = np.random.default_rng(4)
    levels = [Untouchable()] + [
        SimpleNamespace(shape=(40000 >> k, 40000 >> k, 3)) for k in range(1, 5)
    ]
    levels[4] = rng.integers(0, 255, (2500, 2500, 3), dtype=np.uint8)  # 8 um
    res = _result(deformable=True)
    res.transform.meta["registration_fixed_pixel_um"] = [8.0, 8.0]
    view = registered_view(res, levels, (0.5, 0.5), with_checker=True)
    assert view.grid.level == 4 and view.grid.shape == (2500, 2500)
    assert view.checker.shape == (2500, 2500) and view.warped.shape == (2500, 2500)
