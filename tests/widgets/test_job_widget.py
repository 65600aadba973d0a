"""JobWidget (widgets/_job.py): the worker, Run/Cancel, progress and status every job widget shares."""

import threading

import pytest
from qtpy.QtWidgets import QPushButton, QVBoxLayout

from napari_msi2hist.progress import Progress
from napari_msi2hist.widgets._job import JobWidget


class _Demo(JobWidget):
    def __init__(self, viewer):
        super().__init__(viewer, "stopping...")
        self.run_btn = QPushButton("Go")
        self.results, self.ended, self.busy = [], [], []
        self.fail = False
        self.release = threading.Event()
        lay = QVBoxLayout(self)
        for w in (self.run_btn, self.progress, self.status):
            lay.addWidget(w)
        self.connect_run(self.run_btn, self._prepare)

    def _prepare(self):
        if self.fail:
            raise ValueError("choose a layer first\nsecond line not shown")
        return self._job, self.results.append

    def _job(self, cancel):
        for i in range(1000):
            if i == 1:
                self.release.wait(30)
            cancel.check()
            yield Progress(i + 1, 1000, "counting")
        return "all"

    def job_finished(self):
        self.ended.append(self.cancelled)

    def busy_changed(self, button):
        self.busy.append(button)


@pytest.fixture
def demo(make_napari_viewer, monkeypatch):
    monkeypatch.delenv("MSI2HIST_NOTHREADS", raising=False)
    return _Demo(make_napari_viewer())


def test_run_turns_into_cancel_and_back(demo, qtbot, click):
    click(demo.run_btn)
    assert demo.worker is not None and demo.run_btn.text() == "Cancel"
    qtbot.waitUntil(lambda: demo.progress.value() >= 1, timeout=10000)
    click(demo.run_btn)  # cancel
    assert demo.status.text() == "stopping..."
    demo.release.set()
    qtbot.waitUntil(lambda: demo.worker is None, timeout=10000)
    assert demo.run_btn.text() == "Go" and demo.ended == [True] and demo.results == []
    assert demo.busy == [demo.run_btn, None]
    # a second run goes to the end and delivers its result
    click(demo.run_btn)
    qtbot.waitUntil(lambda: demo.worker is None, timeout=30000)
    assert demo.results == ["all"] and demo.ended == [True, False]
    assert demo.progress.value() == 1000 and demo.status.text() == "counting: 1000/1000"


def test_a_bad_field_starts_nothing(demo, click):
    demo.fail = True
    click(demo.run_btn)
    assert demo.worker is None and demo.run_btn.text() == "Go"
    assert demo.status.text() == "choose a layer first" and demo.busy == []
