"""Ranking refined poses by two views of one raster (registration.consensus)."""

import numpy as np
import pytest

from napari_msi2hist.progress import run_to_end
from napari_msi2hist.registration.consensus import SecondView, consensus_order, view_on_grid
from napari_msi2hist.registration.intensity import RegistrationOptions, iter_register
from napari_msi2hist.registration.transforms import Transform


def test_consensus_order_sums_relative_deficits():
    # candidate 0 is best under the route's metric by 2 %, candidate 1 wins the second view by 60 %
    order, deficits = consensus_order([-0.50, -0.49, -0.30], [0.05, 0.125, 0.10])
    assert order[0] == 1
    assert deficits[1] == pytest.approx(0.02)
    assert deficits[0] == pytest.approx(0.6)
    # a second view with no information (all zero) leaves the route's order
    order, _ = consensus_order([-0.50, -0.49, -0.30], [0.0, 0.0, 0.0])
    assert order == [0, 1, 2]


def _shape(ny, nx, rng, asymmetric=True):
    """Tissue-like image: an ellipse with texture, plus (asymmetric) an off-centre lobe."""
    from scipy import ndimage as ndi

    yy, xx = np.mgrid[:ny, :nx]
    cy, cx = ny / 2, nx / 2
    img = (((yy - cy) / (0.35 * ny)) ** 2 + ((xx - cx) / (0.25 * nx)) ** 2 < 1).astype(float)
    if asymmetric:
        img += 0.8 * (
            (((yy - 0.25 * ny) / (0.1 * ny)) ** 2 + ((xx - 0.3 * nx) / (0.1 * nx)) ** 2) < 1
        )
        img += 0.4 * ndi.gaussian_filter(rng.random((ny, nx)), 2) * (img > 0)
    return ndi.gaussian_filter(img, 1.0).astype(np.float32)


def test_view_on_grid_matches_area_mean():
    rng = np.random.default_rng(2)
    img = rng.random((40, 60)).astype(np.float32)
    out, fp = view_on_grid(SecondView(img, (5.0, 5.0)), (40, 60), (5.0, 5.0))
    np.testing.assert_allclose(out, img, atol=1e-6)
    assert fp.all()
    coarse, _ = view_on_grid(SecondView(img, (5.0, 5.0)), (20, 30), (10.0, 10.0))
    assert coarse.shape == (20, 30)
    assert abs(float(coarse.mean()) - float(img.mean())) < 0.02


def test_second_view_overrules_a_decoy_and_proposes_its_own_poses():
    """The route's image looks like the tissue unturned (a synthetic H&E can look right and be
    wrong); a second view of the same raster shows it turned by a half turn. Alone, the route takes
    the decoy's pose; with the second view, the pose both views support must win (the second view's
    own search proposes it), and the evidence must say how it was chosen."""
    rng = np.random.default_rng(3)
    fixed = _shape(128, 128, rng)
    truth = np.rot90(fixed, 2)[::2, ::2].copy()  # moving pixel 20 um, fixed 10 um
    decoy = _shape(128, 128, np.random.default_rng(7))[::2, ::2].copy()
    opts = RegistrationOptions(stages=("rigid",), seed=0, scale_range=1.0, refine_top=3)
    lobe_fixed = np.array([[0.25 * 128 * 10, 0.3 * 128 * 10]])
    lobe_moving = 2 * np.array([63.5 * 10, 63.5 * 10]) - lobe_fixed[0]  # a half turn

    alone = run_to_end(iter_register(fixed, (10.0, 10.0), decoy, (20.0, 20.0), opts))
    assert np.linalg.norm(alone.fixed_to_moving(lobe_fixed)[0] - lobe_moving) > 300.0
    assert "second_view" not in alone.meta["search"]

    tr = run_to_end(
        iter_register(
            fixed,
            (10.0, 10.0),
            decoy,
            (20.0, 20.0),
            opts,
            second_view=SecondView(truth, (20.0, 20.0), name="MSI summary"),
        )
    )
    s = tr.meta["search"]
    assert s["second_view"] == "MSI summary"
    assert all("deficit" in c and "second_view_metric" in c for c in s["candidates"])
    assert s["candidates"][0].get("refined_on") == "MSI summary"
    assert np.linalg.norm(tr.fixed_to_moving(lobe_fixed)[0] - lobe_moving) < 20.0
    assert isinstance(tr, Transform)
