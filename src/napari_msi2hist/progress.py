"""Progress reporting and cancellation for long jobs, in plain Python (no Qt).

Long jobs in this package are generators that ``yield`` :class:`Progress` objects. A caller that wants
the final result drives them with :func:`run_to_end`; the napari widgets run the same generators in a
thread worker and turn each yielded value into a progress-bar update. Cancellation is cooperative: the
job checks a :class:`CancelToken` between yields and raises :class:`Cancelled`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """Raised inside a job when its :class:`CancelToken` was set."""


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` out of ``total`` units of ``stage``."""

    done: int
    total: int
    stage: str = ""
    info: Any = None

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


class CancelToken:
    """A thread-safe flag; jobs call :meth:`check` between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


def run_to_end(
    job: Generator[Progress, None, T], callback: Callable[[Progress], None] | None = None
) -> T:
    """Drive a progress generator to completion and return its ``return`` value."""
    while True:
        try:
            p = next(job)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(p)
