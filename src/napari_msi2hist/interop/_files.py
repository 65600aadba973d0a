"""Overwrite policy and all-or-nothing writes for the interop exporters (GeoJSON, elastix, Zarr).

``check_writable`` is the one place that decides whether an output may be replaced; keep it small
so that a shared policy can take its place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def check_writable(path: str | os.PathLike, overwrite: bool, inputs=()) -> Path:
    """The overwrite policy of the interop writers (one place, to be swapped for a shared one).

    Parameters
    ----------
    path : path-like
        An output.
    overwrite : bool
        Whether an existing ``path`` may be replaced.
    inputs : iterable of path-like
        Inputs of the job: never replaced, whatever ``overwrite`` says.

    Returns
    -------
    Path

    Raises
    ------
    FileExistsError
        With a one-line message naming ``path``.
    """
    path = Path(path)
    for i in inputs:
        if i is not None and Path(i).exists() and Path(i).resolve() == path.resolve():
            raise FileExistsError(f"{path}: is an input; refusing to overwrite it")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; refusing to overwrite (use --overwrite)")
    if path.is_dir():
        from .._files import foreign_files_refusal

        refusal = foreign_files_refusal(path, replacing=True)
        if refusal:  # a folder is replaced whole: never one holding files this tool did not write
            raise FileExistsError(refusal)
    return path


def write_texts_atomic(texts: dict) -> None:
    """Write several text files all or nothing.

    Parameters
    ----------
    texts : dict
        ``{path: text}``; every file goes to a temporary sibling first, then the renames.
    """
    from .._files import atomic_path

    tmps = []
    try:
        for p, t in texts.items():
            tmp = atomic_path(p)
            tmps.append(tmp)
            tmp.write_text(t)
        for tmp, p in zip(tmps, texts):
            os.replace(tmp, p)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise


def temp_sibling_dir(final: str | os.PathLike) -> Path:
    """An empty temporary folder beside ``final`` (same filesystem: the rename is atomic).

    Parameters
    ----------
    final : path-like

    Returns
    -------
    Path
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a finished folder into place.

    An existing ``final`` (allowed by :func:`check_writable`) is moved aside first and removed only
    after the rename succeeded.

    Parameters
    ----------
    tmp : path-like
        The finished folder.
    final : path-like
    """
    tmp, final = Path(tmp), Path(final)
    if tmp.is_dir():
        from .._files import write_manifest

        write_manifest(tmp)  # what a later --overwrite may replace
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
