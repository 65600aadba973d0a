"""Safe outputs: atomic writes, and one policy for every command's outputs.

The policy (:class:`OutputPlan`): a command never writes over a file it reads (compared by device and
inode, so symlinks and hard links count), never writes over earlier output unless asked to
(``--overwrite``), and writes multi-file outputs into a temporary sibling folder that is renamed into
place only when complete, so a failed or interrupted run leaves neither a partial folder nor
temporary files behind. Such a folder lists what it wrote in a hidden manifest (``MANIFEST``): a
folder replaced with ``--overwrite`` must hold nothing else, so that files a user put there (notes,
other data) are never deleted with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


class OutputRefused(ValueError):
    """An output would overwrite an input or earlier output; the message names the file."""


MANIFEST = ".msi2hist-output.json"  # in a folder written by OutputPlan.folder: the files it wrote
_OS_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}  # made by file browsers, not by users
_MANIFEST_MAX_BYTES = 16 << 20


def _manifest_files(folder: Path) -> set[str]:
    """The relative names ``folder``'s manifest lists (empty when it has none or it is unreadable)."""
    mf = folder / MANIFEST
    try:
        if not mf.is_file() or mf.stat().st_size > _MANIFEST_MAX_BYTES:
            return set()
        files = json.loads(mf.read_text(encoding="utf-8")).get("files", [])
        return {f for f in files if isinstance(f, str)}
    except (OSError, ValueError, AttributeError):
        return set()


def _walk_files(folder: Path, limit: int = 10000, empty_dirs: bool = False) -> Iterator[Path]:
    """Files under ``folder`` (relative), at most ``limit``; with ``empty_dirs``, empty folders too
    (as ``name/``)."""
    n = 0
    for root, dirs, files in os.walk(folder):
        entries = sorted(files)
        if empty_dirs and not files and not dirs and Path(root) != folder:
            entries = [""]  # the folder itself: someone made it, and replacing would remove it
        for f in entries:
            yield (Path(root) / f).relative_to(folder) if f else Path(root).relative_to(folder)
            n += 1
            if n >= limit:
                return


def write_manifest(folder: str | os.PathLike) -> None:
    """List the files of a finished output folder in its manifest (:data:`MANIFEST`).

    Every writer of a whole folder calls it just before the folder is moved into place, so that a
    later ``--overwrite`` knows what it may replace (:func:`foreign_files`).

    Parameters
    ----------
    folder : path-like
        The finished (temporary) folder.
    """
    from . import __version__

    folder = Path(folder)
    files = [r.as_posix() for r in _walk_files(folder, limit=1_000_000) if r.as_posix() != MANIFEST]
    text = json.dumps({"written_by": f"msi2hist {__version__}", "files": files}, indent=1)
    (folder / MANIFEST).write_text(text + "\n", encoding="utf-8")


def foreign_files(folder: str | os.PathLike) -> list[str]:
    """Files in ``folder`` that its manifest does not list (all of them when it has none).

    Parameters
    ----------
    folder : path-like
        An existing folder.

    Returns
    -------
    list of str
        Relative names, sorted; file-browser files (``.DS_Store`` ...) are not counted.
    """
    folder = Path(folder)
    listed = _manifest_files(folder)
    limit = max(10000, 2 * len(listed))
    seen = list(_walk_files(folder, limit + 1, empty_dirs=True))
    out = [
        r.as_posix() + ("/" if (folder / r).is_dir() else "")
        for r in seen[:limit]
        if r.as_posix() != MANIFEST and r.name not in _OS_FILES and r.as_posix() not in listed
    ]
    if len(seen) > limit:  # not all looked at: what was not cannot be vouched for
        out.append(f"(over {limit} files)")
    return out


def foreign_files_refusal(folder: str | os.PathLike, replacing: bool) -> str | None:
    """The one-line refusal for a folder that holds files msi2hist did not write, or None.

    Parameters
    ----------
    folder : path-like
        An existing output folder.
    replacing : bool
        Whether the run would replace it (``--overwrite``) or write into it.

    Returns
    -------
    str or None
        The message, naming up to three of those files; None when there are none.
    """
    foreign = foreign_files(folder)
    if not foreign:
        return None
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return (
        f"{folder}: holds files msi2hist did not write ({shown}); refusing to "
        f"{'replace' if replacing else 'write into'} it: move them, or choose a new or empty folder"
    )


def atomic_path(final: str | os.PathLike) -> Path:
    """A temporary path next to ``final`` (same filesystem, so ``os.replace`` is atomic), with the
    permissions a normally created file would get (``mkstemp`` makes 0600)."""
    final = Path(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def atomic_leftovers(final: str | os.PathLike) -> list[Path]:
    """The temporary files :func:`atomic_path` made for ``final`` that are still there (a run killed
    in the middle of an atomic write leaves one behind)."""
    final = Path(final)
    return [p for p in final.parent.glob(f".{final.name}.*.tmp") if p.is_file()]


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    tmp = atomic_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def rows_to_csv(rows: list[dict]) -> str:
    """CSV text of dict rows; the header is the union of their keys, in first-seen order."""
    import csv
    import io

    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# ------------------------------------------------------------------------------ output policy
def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def expand_inputs(paths: Iterable[str | os.PathLike | None]) -> list[Path]:
    """The files behind ``paths``: an imzML brings its ``.ibd``; ``None`` entries are dropped."""
    out: list[Path] = []
    for p in paths:
        if p is None or str(p) == "":
            continue
        p = Path(p)
        out.append(p)
        if p.suffix.lower() == ".imzml":
            out += [p.with_suffix(s) for s in (".ibd", ".IBD") if p.with_suffix(s).exists()]
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_temporaries(final: Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID-*`` / ``.NAME.old-PID-*`` siblings of ``final`` left by dead processes."""
    removed = []
    parent = final.parent
    if not parent.is_dir():
        return removed
    for kind in ("tmp", "old"):
        for p in parent.glob(f".{final.name}.{kind}-*"):
            try:
                pid = int(p.name[len(final.name) + len(kind) + 3 :].split("-")[0])
            except ValueError:
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _sibling(final: Path, kind: str) -> Path:
    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


class OutputPlan:
    """The inputs of one command run and how it may write its outputs.

    Parameters
    ----------
    inputs : iterable of path-like
        Every file the command reads (an imzML brings its ``.ibd``).
    overwrite : bool
        Whether earlier output may be replaced (never an input).
    """

    def __init__(self, inputs: Iterable[str | os.PathLike | None] = (), overwrite: bool = False):
        self.inputs: list[Path] = []
        self.outputs: list[Path] = []
        self._ids: dict[tuple[int, int], Path] = {}
        self.overwrite = overwrite
        self.add_inputs(inputs)

    def add_inputs(self, paths: Iterable[str | os.PathLike | None]) -> None:
        """Declare more inputs (e.g. the files a pairs YAML names)."""
        for p in expand_inputs(paths):
            self.inputs.append(p)
            ident = _identity(p)
            if ident is not None:
                self._ids.setdefault(ident, p)

    def _input_at(self, path: Path) -> Path | None:
        ident = _identity(path)
        if ident is not None and ident in self._ids:
            return self._ids[ident]
        rp = path.resolve()
        return next((p for p in self.inputs if p.resolve() == rp), None)

    def check_file(self, out: str | os.PathLike) -> Path:
        """Refuse ``out`` if it is an input or (without ``overwrite``) existing output."""
        out = Path(out)
        src = self._input_at(out)
        if src is not None:
            raise OutputRefused(f"{out}: is the input {src}; refusing to overwrite an input")
        if out.is_dir():
            raise OutputRefused(f"{out}: is a folder; give a file name")
        if (out.exists() or out.is_symlink()) and not self.overwrite:
            raise OutputRefused(
                f"{out}: exists; refusing to overwrite earlier output (use --overwrite or another name)"
            )
        return out

    def check_folder(
        self, out: str | os.PathLike, resumable: bool = False, writes: Iterable[str] = ()
    ) -> Path:
        """Refuse a folder that is or holds an input, or (unless ``overwrite`` or ``resumable``)
        holds earlier output. ``writes`` (relative names) are checked against the inputs too."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            src = self._input_at(out)
            if src is not None:
                raise OutputRefused(f"{out}: is the input {src}; refusing to overwrite an input")
            raise OutputRefused(f"{out}: exists and is not a folder")
        for name in writes:
            src = self._input_at(out / name)
            if src is not None:
                raise OutputRefused(
                    f"{out / name}: is the input {src}; refusing to overwrite an input"
                )
        if not out.is_dir():
            return out
        rout = out.resolve()
        for p in self.inputs:
            rp = p.resolve()
            if rp == rout or rout in rp.parents:
                raise OutputRefused(f"{out}: holds the input {p}; choose another output folder")
        n = 0
        for root, _dirs, files in os.walk(out):
            for f in files:
                n += 1
                src = self._input_at(Path(root) / f)
                if src is not None:
                    raise OutputRefused(
                        f"{Path(root) / f}: is the input {src} (a link); choose another output folder"
                    )
            if n > 10000:
                break
        if resumable or not any(out.iterdir()):
            return out
        refusal = foreign_files_refusal(out, self.overwrite)
        if refusal:  # a folder is replaced whole: it may hold nothing this tool did not write
            raise OutputRefused(refusal)
        if not self.overwrite and _manifest_files(out):
            raise OutputRefused(
                f"{out}: holds earlier output; refusing to overwrite it (use --overwrite or another folder)"
            )
        return out

    @contextlib.contextmanager
    def file(self, out: str | os.PathLike) -> Iterator[Path]:
        """Write one file atomically: yields a temporary path with ``out``'s name, moved into place
        when the block ends without an error, removed otherwise."""
        out = self.check_file(out)
        with self.folder_for(out) as tmp_dir:
            tmp = tmp_dir / out.name
            yield tmp
            if not tmp.exists():
                raise RuntimeError(f"{out}: nothing was written")
            self.check_file(out)
            os.replace(tmp, out)

    @contextlib.contextmanager
    def folder(self, out: str | os.PathLike) -> Iterator[Path]:
        """Write a folder all or nothing: yields a temporary sibling folder that replaces ``out``
        (only) when the block ends without an error; on an error or interrupt it is removed.

        The folder gets a manifest of the files written (:data:`MANIFEST`); an existing ``out``
        is replaced only when it holds nothing else (:func:`foreign_files`)."""
        out = self.check_folder(out)
        with self.folder_for(out) as tmp:
            yield tmp
            write_manifest(tmp)
            self.check_folder(out)
            _swap_in(tmp, out)

    @contextlib.contextmanager
    def folder_for(self, out: Path) -> Iterator[Path]:
        """A temporary sibling folder of ``out``, removed (with any parent folders created for it)
        when the block ends."""
        made = _make_parents(out.parent)
        clean_stale_temporaries(out)
        tmp = _sibling(out, "tmp")
        tmp.mkdir()
        ok = False
        try:
            yield tmp
            ok = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if not ok:
                for d in made:
                    with contextlib.suppress(OSError):
                        d.rmdir()


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p``; returns the folders it created, deepest first."""
    made = []
    p = folder
    while not p.exists():
        made.append(p)
        if p.parent == p:
            break
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return made


def _swap_in(tmp: Path, out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        old = _sibling(out, "old")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)  # an empty folder is replaced too


def validate_name(name: str, source: str | os.PathLike, what: str = "sample name") -> str:
    """A name that becomes part of a file name: no separators, no ``..``, not absolute, not empty.

    Parameters
    ----------
    name : str
        The name (e.g. a sample name from a pairs YAML).
    source : path-like
        The file it came from, named in the message.
    what : str
        What the name is, for the message.

    Returns
    -------
    str
        ``name``, unchanged.

    Raises
    ------
    ValueError
        When the name could escape a folder or hide a file.
    """
    s = str(name)
    bad = (
        not s
        or s in (".", "..")
        or "/" in s
        or "\\" in s
        or "\0" in s
        or s.startswith(".")
        or os.path.isabs(s)
        or len(s) > 200
    )
    if bad:
        raise ValueError(
            f"{source}: {what} {s!r} cannot be used in a file name (no '/', '\\', leading '.', "
            "or '..')"
        )
    return s
