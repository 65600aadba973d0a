"""The landmark editor without a viewer: undo/redo of states and the error report against an
independent leave-one-out computation."""

import numpy as np

from napari_msi2hist.registration.landmarks import LandmarkEditor


def _pairs(n=6, seed=0):
    rng = np.random.default_rng(seed)
    moving = rng.uniform(0, 2000, (n, 2))
    a = np.array([[1.1, 0.2], [-0.15, 0.95]])
    fixed = moving @ a.T + [30.0, -12.0] + rng.normal(0, 2.0, (n, 2))
    return fixed, moving


def test_undo_redo_walks_the_states_and_an_edit_drops_redo():
    f, m = _pairs()
    ed = LandmarkEditor()
    ed.record(f, m, edit=False)
    f2 = f.copy()
    f2[1] += 50
    ed.record(f2, m)
    back = ed.undo()
    np.testing.assert_array_equal(back[0], f)
    again = ed.redo()
    np.testing.assert_array_equal(again[0], f2)
    assert ed.redo() is None
    ed.undo()
    ed.record(f2 + 1, m)  # a new edit after undo: nothing left to redo
    assert ed.redo() is None
    assert ed.undo() is not None and ed.undo() is None  # the first state stays


def test_report_matches_an_independent_leave_one_out_fit_and_flags_a_moved_point():
    f, m = _pairs(8)
    rep = LandmarkEditor.report(f, m, msi_pixel_um=20.0)
    i = 3
    keep = np.arange(len(f)) != i
    g = np.column_stack([m[keep], np.ones(keep.sum())])
    sol, *_ = np.linalg.lstsq(g, f[keep], rcond=None)
    pred = np.r_[m[i], 1.0] @ sol
    assert np.isclose(rep.tre_um[i], np.linalg.norm(f[i] - pred))
    f_bad = f.copy()
    f_bad[5] += [300.0, 200.0]
    text = LandmarkEditor.text(f_bad, m, 20.0)
    assert "#5:" in text and "OUTLIER" in text.splitlines()[6]
    assert "pair at least 4" in LandmarkEditor.text(f[:3], m[:3], 20.0)
