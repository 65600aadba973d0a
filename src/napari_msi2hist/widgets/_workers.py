"""Glue between the core's progress generators and napari thread workers.

``start_job`` runs a generator that yields :class:`~napari_msi2hist.progress.Progress` and returns a
result. With ``MSI2HIST_NOTHREADS=1`` (or ``sync=True``) it runs in the calling thread, which keeps a
synchronous path for debugging and for environments where threads misbehave.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error

from ..progress import Cancelled, CancelToken, Progress


def leave_a_core_for_the_viewer() -> None:
    """Torch uses every core by default, which starves the Qt event loop on small machines; keep one
    core free while a job runs in a worker thread."""
    import sys

    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))


def _friendly(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def start_job(
    job_factory: Callable,
    on_progress: Callable[[Progress], None],
    on_done: Callable,
    on_error: Callable[[str], None] | None = None,
    on_finished: Callable | None = None,
    sync: bool | None = None,
) -> GeneratorWorker | None:
    """Run ``job_factory(cancel_token)`` (a progress generator) and deliver its result to ``on_done``.

    Cancel with ``worker.cancel_token.cancel()``: the job stops at its next check by raising
    :class:`Cancelled` inside the generator, so its own clean-up runs (a training run saves its state).
    (napari's ``worker.quit()`` would stop iterating without telling the generator.)"""
    token = CancelToken()

    def report_error(exc):
        if isinstance(exc, Cancelled):
            return
        msg = _friendly(exc)
        show_error(msg)
        if on_error is not None:
            on_error(msg)

    if sync is None:
        sync = os.environ.get("MSI2HIST_NOTHREADS", "") not in ("", "0")
    if sync:
        gen = job_factory(token)
        try:
            while True:
                try:
                    on_progress(next(gen))
                except StopIteration as stop:
                    on_done(stop.value)
                    break
        except Exception as exc:  # noqa: BLE001 - shown to the user
            report_error(exc)
        finally:
            if on_finished is not None:
                on_finished()
        return None

    def run():
        leave_a_core_for_the_viewer()
        result = yield from job_factory(token)
        return result

    # errors go to report_error (a notification), not re-raised into the Qt event loop
    worker = create_worker(run, _start_thread=False, _ignore_errors=True)
    worker.yielded.connect(on_progress)
    worker.returned.connect(on_done)
    worker.errored.connect(report_error)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.cancel_token = token
    worker.start()
    return worker
