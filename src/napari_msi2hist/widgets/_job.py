"""``JobWidget``: the base of every dock widget that runs a workflow generator.

It owns what each of them had written again: the thread worker, the button that starts a job and
turns into Cancel while it runs, the progress bar and the status label. A subclass builds its own
form, places ``self.progress`` and ``self.status`` where it wants them, and wires each run button
with :meth:`JobWidget.connect_run` to a ``prepare`` method that snapshots the widget's fields (on the
GUI thread) and returns ``(job, on_done)``: ``job(cancel_token)`` is the generator to run in the
worker, ``on_done(result)`` turns its result into layers on the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QWidget

from ._common import show_progress, show_user_error
from ._workers import start_job

Job = Callable  # cancel token -> a generator of Progress that returns the result
Prepared = tuple[Job, Callable]


class JobWidget(QWidget):
    """A dock widget that runs one job at a time in a thread worker, with progress and cancel.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    cancel_message : str
        Shown when the user cancels a running job.
    """

    def __init__(self, napari_viewer, cancel_message: str = "cancelling...") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.cancel_message = cancel_message
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self._busy_button: QPushButton | None = None
        self._busy_text = ""

    # ------------------------------------------------------------------ wiring
    def connect_run(self, button: QPushButton, prepare: Callable[[], Prepared]) -> None:
        """Clicking ``button`` cancels the running job, or starts ``prepare()``'s job.

        An exception from ``prepare`` (a missing layer, a bad field) is shown to the user and
        starts nothing.
        """
        button.clicked.connect(lambda *_: self._run_or_cancel(button, prepare))

    def _run_or_cancel(self, button: QPushButton, prepare: Callable[[], Prepared]) -> None:
        if self.cancel_job():
            return
        try:
            job, on_done = prepare()
        except Exception as e:  # noqa: BLE001 - shown to the user
            show_user_error(self.status, e)
            return
        self.run_job(job, on_done, button)

    # ------------------------------------------------------------------ running
    def run_job(self, job: Job, on_done: Callable, button: QPushButton | None = None) -> None:
        """Start ``job`` in a worker; ``button`` (if any) reads Cancel until it ends."""
        self._busy_button = button
        if button is not None:
            self._busy_text = button.text()
            button.setText("Cancel")
        self.busy_changed(button)
        self.worker = start_job(
            job,
            self.on_progress,
            on_done,
            on_error=self.status.setText,
            on_finished=self._job_finished,
        )

    def cancel_job(self) -> bool:
        """If a job runs, ask it to stop (at its next check) and return True."""
        if self.worker is None:
            return False
        self.worker.cancel_token.cancel()
        self.status.setText(self.cancel_message)
        return True

    @property
    def cancelled(self) -> bool:
        """Whether the running (or just ending) job was cancelled."""
        return self.worker is not None and self.worker.cancel_token.cancelled

    def _job_finished(self) -> None:
        self.job_finished()
        self.worker = None
        button, self._busy_button = self._busy_button, None
        if button is not None:
            button.setText(self._busy_text)
        self.busy_changed(None)

    # ------------------------------------------------------------------ hooks
    def on_progress(self, p) -> None:
        """Show a :class:`~napari_msi2hist.progress.Progress` (the bar and ``stage: done/total``)."""
        show_progress(self.progress, self.status, p)

    def job_finished(self) -> None:
        """Called when a job ends (done, failed or cancelled), before the worker is dropped."""

    def busy_changed(self, button: QPushButton | None) -> None:
        """Called when a job starts (with its button) and when it ends (with None)."""
