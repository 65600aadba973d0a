"""Grid sampling through an Alignment (registration/grid.py) against independent references:
scipy.ndimage.affine_transform for a known affine (odd-sized, non-square images, a rotation,
non-unit and unequal pixel sizes), and the footprint average of a linear ramp, which is the ramp at
the footprint's mapped centre."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_msi2hist.registration.alignment import LinearAlignment
from napari_msi2hist.registration.grid import (
    GLASS_RGB,
    features_on_msi_grid,
    he_on_msi_grid,
    label_on_he_grid,
    placed_like,
)

HE_PX = (0.8, 1.1)  # unequal, non-unit H&E pixel (um)
THETA = np.deg2rad(23.0)
A = 1.15 * np.array([[np.cos(THETA), -np.sin(THETA)], [np.sin(THETA), np.cos(THETA)]])
T = np.array([14.3, -6.7])  # um
ALIGN = LinearAlignment.from_affine(A, T)  # MSI world um -> H&E world um


def _he(h=53, w=71):
    """A smooth odd-sized, non-square RGB image (smooth, so interpolation is well conditioned)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack(
        [
            120 + 100 * np.sin(yy / 7.0) * np.cos(xx / 11.0),
            60 + 2.5 * yy + 0.8 * xx,
            200 - 1.5 * xx + 30 * np.cos((xx + yy) / 9.0),
        ],
        -1,
    )
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _reference(band, grid_shape, working_px, origin, cval):
    """affine_transform: grid index o -> H&E index diag(1/he_px) (A (o wp + origin) + t)."""
    inv_px = np.diag(1.0 / np.asarray(HE_PX))
    matrix = inv_px @ A * working_px
    offset = inv_px @ (A @ np.asarray(origin, float) + T)
    return ndi.affine_transform(
        band, matrix, offset, output_shape=grid_shape, order=1, mode="constant", cval=cval
    )


def _box_mean(img, k):
    """k x k mean with edge padding (odd k), written without uniform_filter."""
    r = k // 2
    pad = np.pad(img, r, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(pad, (k, k)).mean((-2, -1))


@pytest.mark.parametrize(
    ("working_px", "origin"),
    [(1.0, (0.0, 0.0)), (2.9, (0.0, 0.0)), (2.9, (-1.45, 3.2))],
    ids=["no-box-filter", "3x3-box", "3x3-box-shifted-origin"],
)
def test_he_on_msi_grid_matches_affine_transform(working_px, origin):
    he = _he()
    grid_shape = (37, 29)  # odd, non-square, not the H&E's shape
    rgb, valid = he_on_msi_grid(he, HE_PX, ALIGN, grid_shape, working_px, grid_origin_um=origin)
    k = max(1, int(round(working_px / float(np.mean(HE_PX)))))
    assert k == (1 if working_px == 1.0 else 3)
    ref = np.stack(
        [
            _reference(_box_mean(he[..., c].astype(np.float64), k), grid_shape, working_px, origin,
                       GLASS_RGB[c])
            for c in range(3)
        ],
        -1,
    )  # fmt: skip
    ref = np.clip(np.round(ref), 0, 255)
    # the samples land inside the H&E on part of the grid and outside on the rest
    assert 0.2 < valid.mean() < 0.95
    diff = np.abs(rgb.astype(np.float64) - ref)
    assert diff[valid].max() <= 1.0  # rounding of x.5 only
    assert (diff[valid] == 0).mean() > 0.99
    # well outside the H&E: the glass colour
    far = ~ndi.binary_dilation(valid, iterations=2)
    assert far.any()
    np.testing.assert_array_equal(rgb[far], np.broadcast_to(GLASS_RGB, rgb[far].shape))
    # valid: the mapped centre lies inside the H&E's pixel-centre hull
    o = np.argwhere(np.ones(grid_shape, bool)) * working_px + np.asarray(origin)
    p = (o @ A.T + T) / np.asarray(HE_PX)
    inside = (p >= 0).all(1) & (p[:, 0] <= he.shape[0] - 1) & (p[:, 1] <= he.shape[1] - 1)
    np.testing.assert_array_equal(valid.ravel(), inside)


def test_he_on_msi_grid_any_alignment_gives_the_same_samples():
    from napari_msi2hist.registration.transforms import Transform

    he = _he()
    a = he_on_msi_grid(he, HE_PX, ALIGN, (21, 17), 2.9)
    b = he_on_msi_grid(he, HE_PX, Transform.from_moving_to_fixed_matrix(ALIGN.matrix_yx_um),
                       (21, 17), 2.9)  # fmt: skip
    assert np.abs(a[0].astype(int) - b[0]).max() <= 1 and (a[1] == b[1]).all()
    with pytest.raises(TypeError, match="Alignment"):
        he_on_msi_grid(he, HE_PX, ALIGN.moving_to_fixed, (21, 17), 2.9)  # a bare function


def test_label_on_he_grid_matches_nearest_affine_transform():
    rng = np.random.default_rng(0)
    labels = (ndi.gaussian_filter(rng.random((41, 27)), 2.0) > 0.5).astype(np.int32)  # labels frame
    lab_px = (2.3, 1.7)
    he_shape = (59, 45)
    got = label_on_he_grid(labels, lab_px, ALIGN, he_shape, HE_PX)
    # H&E index o -> labels index diag(1/lab_px) A^-1 (diag(he_px) o - t)
    ainv = np.linalg.inv(A)
    matrix = np.diag(1.0 / np.asarray(lab_px)) @ ainv @ np.diag(HE_PX)
    offset = -np.diag(1.0 / np.asarray(lab_px)) @ ainv @ T
    # grid-constant: a label pixel covers +-0.5 pixel around its centre, edge pixels included
    ref = ndi.affine_transform(
        labels, matrix, offset, output_shape=he_shape, order=0, mode="grid-constant", cval=0
    )
    ref = ref > 0
    assert 0.05 < got.mean() < 0.95
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(ValueError, match="2D"):
        label_on_he_grid(labels[None], lab_px, ALIGN, he_shape, HE_PX)


def test_features_on_msi_grid_average_a_ramp_to_its_mapped_centre():
    # a linear ramp in the H&E frame: its average over any mapped footprint is its value at the
    # footprint's mapped centre, whatever the rotation and pixel sizes
    h, w = 61, 47
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fmap = np.stack([yy * HE_PX[0], xx * HE_PX[1] + 3.0])
    msi_px = (3.1, 2.3)
    out, valid = features_on_msi_grid(fmap, HE_PX, ALIGN, (13, 19), msi_px)
    centres = np.argwhere(np.ones((13, 19), bool)) * np.asarray(msi_px)
    he = (centres @ A.T + T).reshape(13, 19, 2)
    assert 0.1 < valid.mean() < 0.9
    # valid: the footprint lies on the map, so its centre does
    c = he[valid] / np.asarray(HE_PX)
    assert (c >= -0.5).all() and (c[:, 0] <= h - 0.5).all() and (c[:, 1] <= w - 0.5).all()
    # a footprint within the map's outer half pixel is clamped, not linear: compare one pixel in
    core = ndi.binary_erosion(valid)
    assert core.sum() > 50
    np.testing.assert_allclose(out[0][core], he[..., 0][core], atol=1e-3)
    np.testing.assert_allclose(out[1][core], he[..., 1][core] + 3.0, atol=1e-3)


def test_placed_like_takes_a_linear_alignment():
    from napari_msi2hist.registration.transforms import Transform
    from napari_msi2hist.registration.truth import DisplacementField, PhantomTransform

    got = placed_like(ALIGN, 3, (0.5, 0.25), (1.0, -2.0))
    assert got["scale"] == (1.0, 0.5, 0.25) and got["translate"] == (0.0, 1.0, -2.0)
    np.testing.assert_array_equal(got["affine"][1:, 1:], ALIGN.matrix_yx_um)
    np.testing.assert_array_equal(got["affine"][0], [1, 0, 0, 0])
    tr = Transform.from_moving_to_fixed_matrix(ALIGN.matrix_yx_um)
    np.testing.assert_allclose(placed_like(tr, 2, (1, 1), (0, 0))["affine"], tr.napari_affine())
    field = DisplacementField(np.zeros((4, 4, 2)), (10.0, 10.0))
    with pytest.raises(ValueError, match="affine"):
        placed_like(PhantomTransform(A, T, field), 2, (1, 1), (0, 0))
