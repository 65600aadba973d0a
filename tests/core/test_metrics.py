"""Metrics against hand-computed values."""

import numpy as np
import pytest

from napari_msi2hist.metrics import (
    frechet_distance,
    mutual_information,
    normalized_mutual_information,
    psnr,
    ssim,
    tre,
)


def test_mutual_information_hand_computed():
    a = np.array([[0.0, 0.0, 1.0, 1.0]])
    assert mutual_information(a, a, bins=2) == pytest.approx(np.log(2))  # one bit, in nats
    b = np.array([[0.0, 1.0, 0.0, 1.0]])
    assert mutual_information(a, b, bins=2) == pytest.approx(0.0, abs=1e-12)  # independent
    assert normalized_mutual_information(a, a, bins=2) == pytest.approx(2.0)
    assert normalized_mutual_information(a, b, bins=2) == pytest.approx(1.0)
    # a mask selects pixels: on the first two pixels a is constant, so MI is 0
    m = np.array([[True, True, False, False]])
    assert mutual_information(a, b, mask=m, bins=2) == pytest.approx(0.0)


def test_psnr_and_ssim():
    a = np.zeros((8, 8))
    b = np.full((8, 8), 0.1)
    assert psnr(a, b) == pytest.approx(20.0)  # MSE 0.01 -> 10 log10(100)
    img = np.random.default_rng(0).random((32, 32))
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(img, 1 - img) < 0
    # RGB uint8 goes through luma: pure grey images compare as their grey values
    rgb = np.repeat((img * 255).astype(np.uint8)[..., None], 3, -1)
    assert ssim(rgb, rgb) == pytest.approx(1.0)


def test_frechet_distance_on_generated_features():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((4000, 3))
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    # a pure shift d adds |d|^2; a scale s of unit covariance adds 3 (1 - s)^2 in 3 dimensions
    assert frechet_distance(f, f + np.array([1.0, 2.0, 0.0])) == pytest.approx(5.0, rel=1e-6)
    assert frechet_distance(f, 2 * f) == pytest.approx(
        3 * (2 - 1) ** 2 * np.var(f, axis=0, ddof=1).mean(), rel=0.05
    )


def test_tre():
    assert tre(np.array([[0.0, 0.0], [3.0, 4.0]]), np.zeros((2, 2))).tolist() == [0.0, 5.0]


def test_landmark_tre_is_measured_in_the_moving_frame():
    """TRE in MSI pixels means an error in the MSI frame: with a 2x scale, a 10 um miss on the
    H&E is a 5 um miss in the MSI; the registration pipeline and the benchmarks share this."""
    import numpy as np

    from napari_msi2hist.metrics import landmark_tre_um
    from napari_msi2hist.registration.transforms import Transform

    m = np.diag([2.0, 2.0, 1.0])
    tr = Transform.from_moving_to_fixed_matrix(m)
    moving = np.array([[10.0, 20.0], [30.0, 5.0], [50.0, 60.0]])
    fixed = moving * 2 + np.array([10.0, 0.0])  # 10 um off in the H&E
    np.testing.assert_allclose(landmark_tre_um(tr, moving, fixed), 5.0)
