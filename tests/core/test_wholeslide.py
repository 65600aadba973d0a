"""Whole-slide pieces: tile-by-tile resampling, pyramidal OME-TIFF / OME-Zarr writers, and the
registration level picked from an H&E pyramid, each against an independent whole-image reference."""

import numpy as np
import pytest
import tifffile

from napari_msi2hist.io.histology import read_histology, write_ome_tiff
from napari_msi2hist.io.ome_pyramid import pyramid_shapes
from napari_msi2hist.progress import run_to_end
from napari_msi2hist.registration.resample import RegionResampler
from napari_msi2hist.registration.transforms import Transform, rotation_scale_matrix_yx
from napari_msi2hist.workflows.wholeslide import iter_apply, registration_level


def _affine(angle=17.0, scale=1.08, shift=(40.0, -25.0)) -> Transform:
    m = np.eye(3)
    m[:2, :2] = rotation_scale_matrix_yx(angle, scale)
    m[:2, 2] = shift
    return Transform.from_moving_to_fixed_matrix(m)


def _bspline(base: Transform) -> Transform:
    """The affine composed with a smooth B-spline displacement (a deformable transform)."""
    import SimpleITK as sitk

    ref = sitk.Image([64, 64], sitk.sitkFloat32)
    ref.SetSpacing((10.0, 10.0))
    bs = sitk.BSplineTransformInitializer(ref, [4, 4], 3)
    rng = np.random.default_rng(1)
    bs.SetParameters(tuple(rng.normal(0, 6.0, len(bs.GetParameters()))))
    comp = sitk.CompositeTransform([base.itk, bs])
    return Transform(comp)


@pytest.mark.parametrize("deformable", [False, True])
def test_tiles_match_the_whole_image_resample(deformable):
    tr = _affine()
    tr = _bspline(tr) if deformable else tr
    rng = np.random.default_rng(0)
    mov = rng.random((60, 70)).astype(np.float32)
    ref = tr.resample_moving_to_fixed(mov, (10, 10), (301, 283), (2.5, 2.5))
    rr = RegionResampler(tr, mov, (10, 10))
    got = np.zeros_like(ref)
    for y in range(0, 301, 64):
        for x in range(0, 283, 64):
            h, w = min(64, 301 - y), min(64, 283 - x)
            got[y : y + h, x : x + w] = rr.region(y, x, (h, w), (2.5, 2.5))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert ref.std() > 0.1  # the moving data lands on the grid


def test_pyramid_shapes():
    assert pyramid_shapes((40000, 30000), 512)[-1] == (625, 469)
    assert len(pyramid_shapes((40000, 30000), 512)) == 7
    assert pyramid_shapes((300, 200), 512) == [(300, 200)]


def test_apply_writes_every_level_as_a_direct_resample(tmp_path):
    import zarr

    tr = _affine()
    rng = np.random.default_rng(2)
    stack = rng.random((2, 40, 50)).astype(np.float32)
    fixed_shape, fixed_px, mpx = (1300, 1100), (0.5, 0.5), (20.0, 20.0)
    files = run_to_end(
        iter_apply(
            tr,
            stack,
            mpx,
            fixed_shape,
            fixed_px,
            tmp_path / "r.ome.tif",
            tmp_path / "r.ome.zarr",
            ["a", "b"],
            tile=256,
        )
    )
    assert [f.name for f in files] == ["r.ome.tif", "r.ome.zarr"]
    with tifffile.TiffFile(files[0]) as tf:
        levels = [lv.asarray() for lv in tf.series[0].levels]
    assert [lv.shape for lv in levels] == [(2, 1300, 1100), (2, 650, 550)]
    img = read_histology(files[0])
    assert img.pixel_size_um == (0.5, 0.5) and img.channel_names == ["a", "b"]
    z = zarr.open_group(str(files[1]), mode="r")
    ms = z.attrs["multiscales"][0]
    assert [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]] == [
        [1.0, 0.5, 0.5],
        [1.0, 1.0, 1.0],
    ]
    for lvl, px in ((0, 0.5), (1, 1.0)):
        shape = pyramid_shapes(fixed_shape, 512)[lvl]
        for c in range(2):
            ref = tr.resample_moving_to_fixed(stack[c], mpx, shape, (px, px))
            np.testing.assert_allclose(levels[lvl][c], ref, atol=1e-5)
            np.testing.assert_allclose(z[str(lvl)][c], ref, atol=1e-5)


def test_apply_rgb_is_uint8_rgb_pyramid(tmp_path):
    tr = _affine(angle=-30)
    rng = np.random.default_rng(3)
    rgb = (rng.random((30, 30, 3)) * 255).astype(np.uint8)
    ref = tr.resample_moving_to_fixed(
        rgb[..., 1].astype(np.float32), (10, 10), (1100, 1024), (1, 1)
    )
    for comp, tol in (("zlib", 0.5 + 1e-3), (None, None)):  # lossless; default JPEG for RGB
        (path,) = run_to_end(
            iter_apply(
                tr, rgb, (10.0, 10.0), (1100, 1024), (1.0, 1.0), tmp_path / f"{comp}.ome.tif",
                compression=comp,
            )
        )  # fmt: skip
        img = read_histology(path)
        assert img.rgb and len(img.levels) == 2 and img.levels[0].dtype == np.uint8
        err = np.abs(np.asarray(img.levels[0])[..., 1].astype(float) - ref)
        if tol is not None:
            assert err.max() <= tol  # rounding to uint8 only
        else:
            assert np.median(err) <= 2.0 and err.mean() < 3.0  # JPEG quality 90


def _he(tmp_path, pyramid: bool):
    from napari_msi2hist.phantom import procedural_he

    he = procedural_he(512, np.random.default_rng(0))
    he = np.tile(he, (4, 4, 1))  # 2048 x 2048
    p = write_ome_tiff(tmp_path / f"he{pyramid}.ome.tif", he, (1.0, 1.0), pyramid=pyramid)
    return he, p


def _block_mean(a, f):
    from skimage.measure import block_reduce

    h, w = a.shape[0] // f * f, a.shape[1] // f * f
    return block_reduce(a[:h, :w].astype(float), (f, f, 1), np.mean)


def _centred_block_mean(a, f):
    """The block mean moved back by its centre offset, (1 - 1/f) / 2 of its pixel (linear)."""
    from scipy import ndimage as ndi

    b = _block_mean(a, f)
    s = 0.5 * (1 - 1 / f)
    return np.stack([ndi.shift(b[..., c], (s, s), order=1, mode="nearest") for c in range(3)], -1)


def test_registration_level_from_a_pyramid(tmp_path):
    he, p = _he(tmp_path, pyramid=True)
    img = read_histology(p, lazy=True)
    assert [lv.shape[0] for lv in img.levels] == [2048, 1024, 512]
    arr, px = registration_level(img, (1.0, 1.0), 8.0)  # target 4 um: level 2 as it is
    assert px == (4.0, 4.0) and arr.shape == (512, 512, 3) and arr.dtype == np.uint8
    # the file's own 2x means, rounded twice, then moved by their centre offset and rounded again
    assert np.abs(arr - _centred_block_mean(he, 4)).max() <= 3
    arr, px = registration_level(img, (1.0, 1.0), 20.0)  # target 10 um: level 2, then 2x2 blocks
    assert px == (8.0, 8.0) and arr.shape == (256, 256, 3)
    assert np.abs(arr.astype(float) - _centred_block_mean(he, 8)).max() <= 3


@pytest.mark.parametrize("pyramid", [False, True])
def test_registration_level_puts_an_edge_where_it_is(tmp_path, pyramid):
    """A coarse pixel is an area average: its content is centred (px - px0) / 2 past i * px. The
    level read for registration is moved back, so an edge at a known place in level 0's world is
    found there on the coarse grid too (half a coarse pixel off without it: 3.5 um here)."""
    n, edge = 1024, 500.5  # dark left of x = 500.5 um (between level-0 pixels 500 and 501)
    he = np.full((n, n, 3), 235, np.uint8)
    he[:, : int(edge + 0.5)] = 60
    p = write_ome_tiff(tmp_path / "edge.ome.tif", he, (1.0, 1.0), pyramid=pyramid)
    img = read_histology(p, lazy=True)
    arr, px = registration_level(img, (1.0, 1.0), 16.0)  # 8 um: 8x8 blocks (or a level + 2x2)
    assert px == (8.0, 8.0)
    prof = arr[n // 16 : n // 16 + 8, :, 0].astype(float).mean(0)
    half = (60 + 235) / 2
    i = int(np.nonzero(prof >= half)[0][0])  # the first coarse pixel past the middle value
    x = i - 1 + (half - prof[i - 1]) / (prof[i] - prof[i - 1])  # the crossing, in coarse pixels
    assert abs(x * px[1] - edge) < 1.0, (x * px[1], edge)


def test_registration_level_from_a_flat_tiff_reads_blocks(tmp_path):
    he, p = _he(tmp_path, pyramid=False)
    img = read_histology(p, lazy=True)
    assert len(img.levels) == 1 and hasattr(img.levels[0], "dask")
    arr, px = registration_level(img, (1.0, 1.0), 12.0)  # target 6 um: 6x6 blocks of level 0
    assert px == (6.0, 6.0) and arr.shape == (341, 341, 3)
    assert np.abs(arr.astype(float) - _centred_block_mean(he, 6)).max() <= 1.0 + 1e-6
    arr, px = registration_level(img, (1.0, 1.0), 1.0)  # finer than the file: level 0 itself
    assert px == (1.0, 1.0) and np.array_equal(arr, he)


def test_register_cli_on_a_pyramid_never_reads_level_0_whole(tmp_path, small_phantom, monkeypatch):
    """`msi2hist register` on a 3-level pyramidal H&E: registered on the level that matches the
    MSI pixel (no chunk of level 0 is read), written on level 0's grid tile by tile, as accurate
    as the flat-file test (landmark TRE < 2 MSI px)."""
    import json

    import napari_msi2hist.io.histology as histology
    from napari_msi2hist.cli import main
    from napari_msi2hist.io.imzml import open_imzml
    from napari_msi2hist.msi.ion_images import total_ion_image

    p = small_phantom.paths
    small = read_histology(p["he"])
    f = 16  # 160 px at 4 um -> 2560 px at 0.25 um, three levels (2560, 1280, 640)
    big = np.repeat(np.repeat(np.asarray(small.levels[0]), f, 0), f, 1)
    he_path = write_ome_tiff(tmp_path / "he_pyr.ome.tif", big, (0.25, 0.25), pyramid=True)
    real = histology.read_histology
    chunks = []

    def spy(path, lazy=None):
        img = real(path, lazy)
        if str(path) == str(he_path):
            assert hasattr(img.levels[0], "dask")  # opened lazily
            assert [lv.shape[0] for lv in img.levels] == [2560, 1280, 640]

            def seen(block):
                if block.size:  # not dask's zero-size probe of the function
                    chunks.append(block.shape)
                return block

            img.levels[0] = img.levels[0].map_blocks(seen, dtype=img.levels[0].dtype)
        return img

    monkeypatch.setattr(histology, "read_histology", spy)
    out = tmp_path / "reg"
    argv = ["register", "--fixed", str(he_path), "--moving", p["imzml"], "--out", str(out)]
    argv += ["--route", "direct", "--quiet", "--landmarks-fixed", p["landmarks_he"]]
    argv += ["--landmarks-moving", p["landmarks_msi"], "--allow-failed"]
    assert main(argv) == 0
    assert chunks == []  # level 0 never read
    rep = json.loads((out / "report.json").read_text())
    ws = rep["whole_slide"]
    assert ws["level0_shape"] == [2560, 2560] and ws["level0_pixel_um"] == [0.25, 0.25]
    assert ws["registration_pixel_um"][0] > 0.25  # a coarser level
    assert rep["landmarks"]["tre_median_msi_px"] < 2.0
    assert rep["verdict"]["verdict"] != "failed"
    # the output: level 0's grid, pyramidal, each level the TIC resampled through the transform
    monkeypatch.setattr(histology, "read_histology", real)
    img = read_histology(out / "registered.ome.tif", lazy=False)
    assert img.pixel_size_um == (0.25, 0.25) and img.levels[0].shape[-2:] == (2560, 2560)
    assert len(img.levels) == 3
    tr = Transform.load(out / "transform.json")
    with open_imzml(p["imzml"]) as imz:
        tic, mpx = total_ion_image(imz), imz.pixel_size_um
    ref = tr.resample_moving_to_fixed(tic.astype(np.float32), mpx, (640, 640), (1.0, 1.0))
    got = np.asarray(img.levels[2]).reshape(640, 640)  # one channel: the TIC
    assert (ref > 0).mean() > 0.3  # the MSI lands on the grid
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3 * ref.max())
