"""What the plugin's dock widgets share within one viewer, without module globals.

One :class:`Session` per napari viewer (:func:`session_for`), created on first use and dropped with
the viewer. It holds the checkpoints trained in this viewer (the Train widget adds them, the
Synthesise widget offers them) and tells subscribed widgets when one is added. Qt-free: subscribers
are plain callables, held weakly when they are bound methods, so a closed dock does not stay alive
through the session.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable


class Session:
    """Checkpoints trained in one viewer, and the widgets to tell when one is added."""

    def __init__(self) -> None:
        self._checkpoints: list[str] = []
        self._subscribers: list[Callable[[], Callable | None]] = []

    @property
    def checkpoints(self) -> tuple[str, ...]:
        """The checkpoints added so far, oldest first."""
        return tuple(self._checkpoints)

    def subscribe(self, callback: Callable[[str], object]) -> None:
        """Call ``callback(path)`` for every checkpoint added from now on.

        A bound method is held weakly (its widget may be closed and collected); a callback that
        raises ``RuntimeError`` (its Qt object was deleted) is dropped.
        """
        if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
            ref = weakref.WeakMethod(callback)
        else:

            def ref(cb=callback):
                return cb

        self._subscribers.append(ref)

    def add_checkpoint(self, path: str) -> None:
        """Record a new checkpoint (once) and tell every live subscriber, which may select it."""
        path = str(path)
        if path not in self._checkpoints:
            self._checkpoints.append(path)
        alive = []
        for ref in self._subscribers:
            cb = ref()
            if cb is None:
                continue
            try:
                cb(path)
            except RuntimeError:  # its Qt object was deleted (the dock was closed)
                continue
            alive.append(ref)
        self._subscribers = alive


# viewer id -> (weak reference to the viewer, its session); an entry goes with its viewer
_SESSIONS: dict[int, tuple[weakref.ref, Session]] = {}


def session_for(viewer) -> Session:
    """The :class:`Session` of ``viewer``, created on first use, forgotten when the viewer goes."""
    key = id(viewer)
    entry = _SESSIONS.get(key)
    if entry is not None and entry[0]() is viewer:
        return entry[1]
    session = Session()
    _SESSIONS[key] = (weakref.ref(viewer, _forget), session)
    return session


def _forget(ref: weakref.ref) -> None:
    for key, (r, _) in list(_SESSIONS.items()):
        if r is ref:
            del _SESSIONS[key]
