"""One MSI -> H&E mapping type (registration/alignment.py): a registration, a phantom's truth, a
pairs entry, landmarks and a displayed layer pair all answer moving_to_fixed / fixed_to_moving."""

from pathlib import Path

import numpy as np
import pytest

from napari_msi2hist.registration.alignment import (
    Alignment,
    LinearAlignment,
    as_alignment,
    require_alignment,
)
from napari_msi2hist.registration.transforms import Transform
from napari_msi2hist.registration.truth import DisplacementField, PhantomTransform

M = np.array([[0.9, -0.2, 15.0], [0.25, 1.1, -40.0], [0.0, 0.0, 1.0]])  # moving -> fixed, yx um
PTS = np.array([[0.0, 0.0], [100.0, 250.0], [-30.0, 75.5], [400.0, 10.0]])


def _truth(deformed: bool) -> PhantomTransform:
    disp = None
    if deformed:
        yy, xx = np.mgrid[0:6, 0:6]
        disp = DisplacementField(np.stack([np.sin(yy), np.cos(xx)], -1) * 3.0, (100.0, 100.0))
    return PhantomTransform(M[:2, :2], M[:2, 2], disp)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinearAlignment(M),
        lambda: Transform.from_moving_to_fixed_matrix(M),
        lambda: _truth(False),
        lambda: _truth(True),
    ],
    ids=["linear", "registration", "truth", "truth-deformed"],
)
def test_every_mapping_is_an_alignment_both_ways(make):
    a = make()
    assert isinstance(a, Alignment)
    fixed = a.moving_to_fixed(PTS)
    np.testing.assert_allclose(a.fixed_to_moving(fixed), PTS, atol=1e-5)
    if not isinstance(a, PhantomTransform) or a.displacement is None:
        np.testing.assert_allclose(fixed, PTS @ M[:2, :2].T + M[:2, 2], atol=1e-9)
    else:  # the phantom's truth is its forward map, deformation included
        np.testing.assert_array_equal(fixed, a.forward(PTS))
        assert np.abs(fixed - (PTS @ M[:2, :2].T + M[:2, 2])).max() > 0.5


def test_linear_alignment_builders():
    from napari_msi2hist.registration.landmarks import fit_linear

    rng = np.random.default_rng(0)
    mov = rng.uniform(0, 500, (6, 2))
    fix = mov @ M[:2, :2].T + M[:2, 2] + rng.normal(0, 0.5, (6, 2))
    la = LinearAlignment.from_landmarks(mov, fix)
    m = fit_linear(mov, fix, "affine")  # the same one fitter
    a, t = m[:2, :2], m[:2, 2]
    np.testing.assert_array_equal(la.moving_to_fixed(PTS), PTS @ a.T + t)
    np.testing.assert_array_equal(LinearAlignment.from_affine(a, t).matrix_yx_um, la.matrix_yx_um)
    ident = LinearAlignment.identity()
    assert ident.moving_to_fixed(PTS) is PTS  # "aligned": the points themselves
    np.testing.assert_array_equal(ident.fixed_to_moving(PTS), PTS)
    assert isinstance(as_alignment(M), LinearAlignment) and as_alignment(la) is la
    with pytest.raises(ValueError, match="3x3"):
        LinearAlignment(np.eye(2))
    # the samplers take an alignment object, never the bare function or matrix
    assert require_alignment(la) is la
    for bare in (la.moving_to_fixed, M):
        with pytest.raises(TypeError, match="Alignment"):
            require_alignment(bare)
    with pytest.raises(TypeError, match="function"):
        as_alignment(la.moving_to_fixed)


def test_pairs_entry_alignments(tmp_path):
    import json

    from napari_msi2hist.io.points import write_points_csv
    from napari_msi2hist.models.pairs import alignment_of_entry

    assert isinstance(alignment_of_entry("aligned", tmp_path), LinearAlignment)
    tr = Transform.from_moving_to_fixed_matrix(M)
    tr.save(tmp_path / "transform.json")
    got = alignment_of_entry({"transform": "transform.json"}, tmp_path)
    assert isinstance(got, Transform)
    np.testing.assert_allclose(got.moving_to_fixed(PTS), tr.moving_to_fixed(PTS), atol=1e-9)
    write_points_csv(tmp_path / "m.csv", PTS)
    write_points_csv(tmp_path / "f.csv", PTS @ M[:2, :2].T + M[:2, 2])
    lm = alignment_of_entry({"landmarks_msi": "m.csv", "landmarks_he": "f.csv"}, tmp_path)
    np.testing.assert_allclose(lm.matrix_yx_um, M, atol=1e-9)
    truth = {
        "format": "napari-msi2hist phantom truth v1",
        "linear": {"matrix_yx_um": M[:2, :2].tolist(), "offset_yx_um": M[:2, 2].tolist()},
    }
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    ph = alignment_of_entry({"truth": "truth.json"}, Path(tmp_path))
    assert isinstance(ph, PhantomTransform) and isinstance(ph, Alignment)
    np.testing.assert_allclose(ph.moving_to_fixed(PTS), PTS @ M[:2, :2].T + M[:2, 2])
