"""How the Register widget shows a result: the heavy images are made off the GUI thread.

A B-spline result's registered layer is the moving image resampled onto the H&E grid (checked
against ``Transform.resample_moving_to_fixed`` computed here); on a pyramidal H&E the checkerboard
is on the level the registration used (bounded), with the scale that puts a known tissue point at
the same world position as the H&E layer; and no resample onto the H&E grid runs in the GUI thread
(a spy on ``resample_moving_to_fixed`` records the thread of every call).
"""

import threading

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_msi2hist.io.histology import read_histology, write_ome_tiff
from napari_msi2hist.registration.pipeline import checkerboard
from napari_msi2hist.registration.preprocess import od_image
from napari_msi2hist.registration.transforms import Transform
from napari_msi2hist.widgets.registration import RegisterWidget

RESAMPLE = Transform.resample_moving_to_fixed  # the original, for the expected images


@pytest.fixture
def gui_thread_resamples(monkeypatch):
    """Spy on every ``resample_moving_to_fixed``: a list of 'was it the GUI (main) thread'."""
    calls: list[bool] = []

    def spy(self, *a, **k):
        calls.append(threading.current_thread() is threading.main_thread())
        return RESAMPLE(self, *a, **k)

    monkeypatch.setattr(Transform, "resample_moving_to_fixed", spy)
    return calls


def _synthetic_he(ph) -> np.ndarray:
    """A perfect synthetic H&E: the phantom's H&E seen through its true (deformed) MSI -> H&E map
    on the MSI grid, so that the B-spline stage has a deformation to find."""
    ny, nx = ph.msi_shape_yx
    grid = np.stack(np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij"), -1).reshape(-1, 2)
    he_px, msi_px = ph.config.he_pixel_um, ph.config.msi_pixel_um
    on_he = (ph.transform.forward(grid * msi_px) / he_px).T
    chans = [
        ndi.map_coordinates(
            ndi.uniform_filter(ph.he_rgb[..., c].astype(np.float32), 5), on_he, order=1, cval=242
        ).reshape(ny, nx)
        for c in range(3)
    ]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("in_child", [True, False], ids=["child-process", "worker-thread"])
def test_bspline_result_is_resampled_in_the_worker(
    make_napari_viewer, qtbot, click, gui_thread_resamples, tmp_path, monkeypatch, in_child
):
    """The job runs in a child process (the default), or with ``MSI2HIST_JOB_PROCESS=0`` in the
    worker thread; either way the view is made by the job, never on the GUI thread."""
    from napari_msi2hist.phantom import PhantomConfig, make_phantom
    from napari_msi2hist.workflows import in_process

    monkeypatch.setenv("MSI2HIST_JOB_PROCESS", "1" if in_child else "0")
    children = []
    real = in_process.iter_in_process

    def recording(func, *a, **k):
        children.append(func.__name__)
        return real(func, *a, **k)

    monkeypatch.setattr(in_process, "iter_in_process", recording)

    # deformed enough (2.5 MSI px rms) that the held-out check keeps the B-spline on this small raster
    ph = make_phantom(
        tmp_path / "ph", PhantomConfig(seed=3, procedural_size=160, deform_rms_px=2.5)
    )
    viewer = make_napari_viewer()
    viewer.open(ph.paths["he"], plugin="napari-msi2hist")
    he = viewer.layers[0]
    msi_px = ph.config.msi_pixel_um
    viewer.add_image(
        _synthetic_he(ph),
        rgb=True,
        name="synthetic H&E",
        scale=(msi_px, msi_px),
        metadata={"msi2hist": {"kind": "synthetic_he", "pixel_size_um": [msi_px] * 2}},
    )
    w = RegisterWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.fixed_box.setCurrentText(he.name)
    w.moving_box.setCurrentText("synthetic H&E")
    w.stage_boxes["bspline"].setChecked(True)  # a form field, set as the other fields are
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300000)
    res = w.result
    assert res is not None, w.status.text()
    tr = res.transform
    assert not tr.is_linear, tr.meta.get("bspline")
    # the registered layer: the moving image on the H&E grid (a flat H&E: its own grid)
    ly = viewer.layers["synthetic H&E registered"]
    he_px = tuple(float(v) for v in he.scale[-2:])
    assert tuple(ly.scale[-2:]) == he_px
    want = RESAMPLE(tr, res.moving_image, res.moving_px, he.data.shape[:2], he_px)
    assert ly.data.shape == want.shape and want.std() > 0.01
    np.testing.assert_allclose(ly.data, want, atol=1e-5)
    # the checkerboard, asked for after the job: made in a short worker of its own
    n = len(gui_thread_resamples)
    click(w.checker_btn)
    qtbot.waitUntil(
        lambda: "checkerboard" in viewer.layers and viewer.layers["checkerboard"].visible,
        timeout=60000,
    )
    cb = viewer.layers["checkerboard"]
    assert tuple(cb.scale[-2:]) == he_px
    np.testing.assert_allclose(
        cb.data, checkerboard(od_image(np.asarray(he.data)), want), rtol=1e-4, atol=1e-4
    )
    # every resample onto the H&E grid (the job's metrics, the view, the checkerboard) ran in the
    # child or in a worker thread; the checkerboard reused the job's image instead of resampling
    assert children == (["iter_register_view"] if in_child else [])
    assert not any(gui_thread_resamples), gui_thread_resamples
    assert bool(gui_thread_resamples) != in_child  # in a child, this process resamples nothing
    assert len(gui_thread_resamples) == n
    # off and on again: shown from what was made, no new work
    click(w.checker_btn)
    assert not cb.visible
    click(w.checker_btn)
    assert cb.visible and w._checker_worker is None


def test_checkerboard_on_a_pyramid_is_on_the_registration_level(
    make_napari_viewer, small_phantom, qtbot, click, tmp_path, gui_thread_resamples
):
    p = small_phantom.paths
    small = np.asarray(read_histology(p["he"]).levels[0])  # 160 px at 4 um
    big = np.repeat(np.repeat(small, 16, 0), 16, 1)  # 2560 px at 0.25 um: 2560/1280/640
    # a known tissue point: a dark dot centred on level-0 pixel (820, 820), i.e. 205 um
    yy, xx = np.ogrid[:2560, :2560]
    big[(yy - 820) ** 2 + (xx - 820) ** 2 <= 30**2] = 0
    point_um = np.array([820.0, 820.0]) * 0.25
    he_path = write_ome_tiff(tmp_path / "he_pyr.ome.tif", big, (0.25, 0.25), pyramid=True)
    viewer = make_napari_viewer()
    viewer.open(str(he_path), plugin="napari-msi2hist")
    viewer.open(p["imzml"], plugin="napari-msi2hist")
    he = viewer.layers[0]
    assert he.multiscale
    np.testing.assert_allclose(he.data_to_world((820, 820))[-2:], point_um)
    w = RegisterWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.fixed_box.setCurrentText(he.name)
    w.moving_box.setCurrentText("msi TIC")
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300000)
    assert w.result is not None, w.status.text()
    assert "checkerboard" not in viewer.layers and w.reg_view.checker is None  # not asked for
    click(w.checker_btn)  # made in a short worker
    qtbot.waitUntil(lambda: "checkerboard" in viewer.layers, timeout=60000)
    cb = viewer.layers["checkerboard"]
    # the registration's grid (10 um: the 1 um level in 10 x 10 blocks), not level 0's 2560 px
    grid = w.reg_view.checker_grid
    assert grid.px == (10.0, 10.0) and grid.shape == (64, 64) and grid.level == 2
    assert cb.data.shape == (64, 64) and tuple(cb.scale[-2:]) == (10.0, 10.0)
    # the dot lies in an H&E square of the checkerboard: its darkest (highest OD) pixel there is
    # where the H&E layer has it, in world um, within one grid pixel
    win = cb.data[16:24, 16:24]
    iy, ix = np.unravel_index(np.argmax(win), win.shape)
    found = np.asarray(cb.data_to_world((16 + iy, 16 + ix)))[-2:]
    assert np.all(np.abs(found - point_um) <= 10.0), (found, point_um)
    # registering again with the checkerboard shown: the job itself makes the new one
    first = w.reg_view
    click(w.run_btn)
    qtbot.waitUntil(lambda: w.worker is None, timeout=300000)
    assert w.reg_view is not first and w.reg_view.checker is not None
    assert w._checker_worker is None and cb.visible
    np.testing.assert_array_equal(cb.data, w.reg_view.checker)
    assert gui_thread_resamples and not any(gui_thread_resamples)
