"""Run a job generator in a child process, relaying its progress, cancel and result.

A job in a thread worker shares the viewer's GIL. Registration spends long stretches in numpy and
scipy calls that hold it (FFT searches over every shift, masks, block means on a whole slide's
registration level), and each stretch is a stall of the viewer: up to 1.9 s on a 20,000 px slide
(docs/performance.md). :func:`iter_in_process` runs the same generator in a spawned child process
instead; the calling (worker) thread only waits on a queue, so the viewer's GUI thread keeps the
GIL to itself.

The job function and its arguments must be picklable (a module-level function; numpy arrays,
dataclasses, paths: never an open file or a dask array over one). The child is spawned, never
forked (a fork of a process running Qt and other threads is unsafe), runs at a lower priority, and
is stopped when the caller cancels, closes the generator or the job fails.
"""

from __future__ import annotations

import os
import pickle
import queue
import threading
from collections.abc import Callable, Generator
from typing import Any

from ..progress import Cancelled, CancelToken, Progress

# env var: "0" runs such jobs in the calling thread (debugging; a platform where spawning fails)
ENV_SWITCH = "MSI2HIST_JOB_PROCESS"


def process_jobs_enabled() -> bool:
    """Tell whether :func:`iter_job` runs jobs in a child process.

    Returns
    -------
    bool
        False when the environment variable ``MSI2HIST_JOB_PROCESS`` is "0", "false" or "no".
    """
    return os.environ.get(ENV_SWITCH, "1").strip() not in ("0", "false", "no")


class JobProcessError(RuntimeError):
    """The child process died without a result, or its error could not be sent back."""


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` if it pickles and unpickles as itself, else a RuntimeError with its text."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:  # noqa: BLE001 - any failure: send its text instead
        pass
    return JobProcessError(f"{type(exc).__name__}: {exc}")


def _watch(stop_conn, token: CancelToken) -> None:
    """Cancel ``token`` when the caller says stop, or when its end of the pipe closes."""
    try:
        stop_conn.recv()
    except (EOFError, OSError):
        pass
    token.cancel()


def _child(messages, stop_conn, func, args, kwargs, nice: int) -> None:
    """Run ``func(*args, cancel=token, **kwargs)`` in the child and post what it yields.

    Stop requests come over a pipe, not a ``multiprocessing.Event``: setting an Event whose waiter
    died blocks forever (its condition waits for the dead sleeper to wake).
    """
    if nice:
        try:
            os.nice(nice)
        except (AttributeError, OSError):  # Windows; not permitted
            pass
    token = CancelToken()
    threading.Thread(target=_watch, args=(stop_conn, token), daemon=True).start()
    try:
        gen = func(*args, cancel=token, **kwargs)
        while True:
            try:
                p = next(gen)
            except StopIteration as end:
                messages.put(("done", end.value))
                return
            messages.put(("progress", p))
    except Cancelled as e:
        messages.put(("cancelled", str(e)))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
        messages.put(("error", _sendable(e)))


def iter_in_process(
    func: Callable[..., Generator[Progress, None, Any]],
    *args,
    cancel: CancelToken | None = None,
    nice: int = 5,
    poll_s: float = 0.05,
    **kwargs,
) -> Generator[Progress, None, Any]:
    """Run ``func(*args, cancel=token, **kwargs)`` in a spawned child; yield its progress.

    Parameters
    ----------
    func : callable
        A module-level job function: it takes ``cancel`` (a :class:`CancelToken`) and returns a
        generator of :class:`Progress` whose ``return`` value is the result.
    *args, **kwargs
        Its arguments (pickled into the child).
    cancel : CancelToken, optional
        Checked while waiting; when set, the child is told to stop and :class:`Cancelled` is
        raised here once it has.
    nice : int
        How much lower the child's scheduling priority is (POSIX; 0 keeps it).
    poll_s : float
        How often (s) the wait looks at ``cancel`` and at whether the child is still alive.

    Yields
    ------
    Progress
        What the job yields, as it yields it.

    Returns
    -------
    object
        The job's result (unpickled from the child).

    Raises
    ------
    Cancelled
        ``cancel`` was set.
    Exception
        The job's own error, re-raised here (its type kept when it pickles), or
        :class:`JobProcessError` when the child died without a result.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    stop_child, stop_here = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child, args=(messages, stop_child, func, args, kwargs, nice), daemon=True
    )
    proc.start()
    stop_child.close()  # the child's end
    asked = False
    try:
        while True:
            if cancel is not None and cancel.cancelled and not asked:
                asked = True
                try:
                    stop_here.send(True)
                except OSError:  # the child is gone already
                    pass
            try:
                kind, value = messages.get(timeout=poll_s)
            except queue.Empty:
                if not proc.is_alive():
                    try:  # a last message may have arrived as it exited
                        kind, value = messages.get(timeout=1.0)
                    except queue.Empty:
                        raise JobProcessError(
                            f"the job's process ended without a result (exit code {proc.exitcode})"
                        ) from None
                else:
                    continue
            if kind == "progress":
                yield value
            elif kind == "done":
                return value
            elif kind == "cancelled":
                raise Cancelled(value)
            else:
                raise value
    finally:
        stop_here.close()  # a caller that closed us early (GeneratorExit) or failed: the child stops
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        messages.close()


def iter_job(func, *args, cancel: CancelToken | None = None, **kwargs):
    """Run a job in a child process when :func:`process_jobs_enabled`, else right here.

    Parameters
    ----------
    func : callable
        A module-level job function taking ``cancel`` (see :func:`iter_in_process`).
    *args, **kwargs
        Its arguments.
    cancel : CancelToken, optional
        Stops the job at its next check.

    Returns
    -------
    generator
        Yields the job's :class:`Progress` and returns its result.
    """
    if process_jobs_enabled():
        return iter_in_process(func, *args, cancel=cancel, **kwargs)
    return func(*args, cancel=cancel, **kwargs)


__all__ = ["ENV_SWITCH", "JobProcessError", "iter_in_process", "iter_job", "process_jobs_enabled"]
