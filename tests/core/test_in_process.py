"""Jobs in a child process (workflows.in_process): progress, result, errors, cancel and a dead child
come back to the caller as they would from the same generator run in place; the Register widget's
job gives the same transform in a child as in the calling thread."""

import os
import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_msi2hist.progress import Cancelled, CancelToken, Progress, run_to_end
from napari_msi2hist.workflows.in_process import (
    JobProcessError,
    iter_in_process,
    iter_job,
)


# jobs: module level, so that a spawned child can import them
def counting_job(n, cancel=None):
    for i in range(n):
        yield Progress(i, n, "counting", info=os.getpid())
    return {"sum": sum(range(n)), "pid": os.getpid(), "arr": np.arange(n) ** 2}


def failing_job(cancel=None):
    yield Progress(0, 1, "about to fail")
    raise ValueError("slide.ome.tif: no pixel size")


class Unpicklable(Exception):
    def __init__(self, msg, handle):  # a second required argument: does not unpickle
        super().__init__(msg)
        self.handle = handle


def unpicklable_error_job(cancel=None):
    yield Progress(0, 1, "x")
    raise Unpicklable("cannot send me", object())


def slow_job(cancel=None):
    for i in range(10_000):
        cancel.check()
        time.sleep(0.01)
        yield Progress(i, 10_000, "slow")
    return "should not get here"


def dying_job(cancel=None):
    yield Progress(0, 1, "dying")
    os._exit(3)


def test_progress_and_result_come_back_from_a_child():
    seen = []
    out = run_to_end(iter_in_process(counting_job, 5), seen.append)
    assert [p.done for p in seen] == [0, 1, 2, 3, 4]
    assert {p.info for p in seen} == {out["pid"]} and out["pid"] != os.getpid()  # another process
    assert out["sum"] == 10 and np.array_equal(out["arr"], np.arange(5) ** 2)


def test_the_jobs_own_error_is_raised_here_with_its_type_and_message():
    with pytest.raises(ValueError, match="slide.ome.tif: no pixel size"):
        run_to_end(iter_in_process(failing_job))
    with pytest.raises(JobProcessError, match="Unpicklable: cannot send me"):
        run_to_end(iter_in_process(unpicklable_error_job))


def test_cancel_stops_the_child_and_raises_cancelled():
    tok = CancelToken()
    gen = iter_in_process(slow_job, cancel=tok)
    t = time.perf_counter()
    next(gen)
    tok.cancel()
    with pytest.raises(Cancelled):
        run_to_end(gen)
    assert time.perf_counter() - t < 30  # not the job's 100 s


def test_a_child_that_dies_is_an_error_not_a_hang():
    with pytest.raises(JobProcessError, match="exit code 3"):
        run_to_end(iter_in_process(dying_job))


def test_closing_the_generator_early_stops_the_child():
    import multiprocessing as mp

    gen = iter_in_process(slow_job)
    next(gen)
    (child,) = mp.active_children()
    gen.close()  # what a napari worker's quit does
    assert not child.is_alive()


def test_switch_runs_the_job_in_place(monkeypatch):
    monkeypatch.setenv("MSI2HIST_JOB_PROCESS", "0")
    assert run_to_end(iter_job(counting_job, 3))["pid"] == os.getpid()
    monkeypatch.setenv("MSI2HIST_JOB_PROCESS", "1")
    assert run_to_end(iter_job(counting_job, 3))["pid"] != os.getpid()


def test_register_view_job_in_a_child_equals_the_job_in_place(tmp_path):
    """The Register widget's job: the same transform (bit for bit) and the same overlay, whether it
    runs in a child or here; the H&E is a pyramid file the child reopens by path."""
    from napari_msi2hist.io.histology import write_ome_tiff
    from napari_msi2hist.registration.transforms import Transform, rotation_scale_matrix_yx
    from napari_msi2hist.workflows.register_view import RegisterViewRequest, iter_register_view

    rng = np.random.default_rng(4)
    n = 600  # H&E 600 x 600 px at 2 um
    blobs = ndi.gaussian_filter(rng.random((n, n)), 8) > 0.5
    env = np.zeros((n, n), bool)
    env[90:520, 120:500] = True
    od = ndi.gaussian_filter((blobs & env).astype(float), 2)
    he = (255 * np.exp(-1.5 * od[..., None] * np.array([0.4, 0.9, 0.5]))).astype(np.uint8)
    path = write_ome_tiff(tmp_path / "he.ome.tif", he, (2.0, 2.0), pyramid=True)
    m = np.eye(3)
    m[:2, :2] = rotation_scale_matrix_yx(25.0, 1.0)
    m[:2, 2] = (100.0, -60.0)
    truth = Transform.from_moving_to_fixed_matrix(m)
    mov = truth.resample_fixed_to_moving(od, (2.0, 2.0), (70, 70), (20.0, 20.0))
    req = RegisterViewRequest(
        he_px=(2.0, 2.0),
        route="direct",
        moving=mov.astype(np.float32),
        moving_px=(20.0, 20.0),
        stages=("rigid", "affine"),
        he_path=str(path),
        with_checker=True,
    )
    here = run_to_end(iter_register_view(req))
    there = run_to_end(iter_in_process(iter_register_view, req))
    a = np.asarray(here.result.transform.itk.GetParameters())
    b = np.asarray(there.result.transform.itk.GetParameters())
    assert np.array_equal(a, b)
    assert there.result.verdict["verdict"] == here.result.verdict["verdict"]
    assert np.array_equal(there.checker, here.checker) and there.grid == here.grid
    pts = np.argwhere(env)[::997] * 2.0  # and it is right: within 0.3 MSI px of the truth
    err = np.linalg.norm(
        there.result.transform.fixed_to_moving(pts) - truth.fixed_to_moving(pts), axis=1
    )
    assert np.median(err) < 0.3 * 20, np.median(err)


def test_a_pyramid_file_that_changed_since_it_was_opened_is_refused(tmp_path):
    """The widget sends a pyramid as its path and the level shapes it showed; a file rewritten since
    is refused with a message naming it, not registered silently."""
    from napari_msi2hist.io.histology import write_ome_tiff
    from napari_msi2hist.workflows.register_view import RegisterViewRequest, iter_register_view

    he = np.full((256, 240, 3), 200, np.uint8)
    path = write_ome_tiff(tmp_path / "he.ome.tif", he, (2.0, 2.0), pyramid=True)
    req = RegisterViewRequest(
        he_px=(2.0, 2.0),
        route="direct",
        moving=np.zeros((20, 20), np.float32),
        moving_px=(20.0, 20.0),
        stages=("rigid",),
        he_path=str(path),
        he_shapes=[(512, 480, 3), (256, 240, 3)],  # what the layer showed: another file
    )
    with pytest.raises(ValueError, match="he.ome.tif: the file changed since it was opened"):
        run_to_end(iter_register_view(req))
