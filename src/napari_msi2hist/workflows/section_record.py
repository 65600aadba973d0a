"""A section folder's completion record (``section.json``), input fingerprints and publication.

A finished section folder holds ``section.json``, written last, with the fingerprints of every input
(:func:`fingerprint`): a rerun compares them (:func:`is_complete`) to tell a finished section from
one whose inputs or config changed. A section is written into a hidden temporary sibling and
published by renaming (:func:`publish_folder`), replacing only a folder that is ours or empty
(:func:`may_replace`). :mod:`napari_msi2hist.workflows.section` re-exports these names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from .section_config import SectionConfig, SectionError

RECORD = "section.json"
RECORD_VERSION = 1
FULL_HASH_MAX = 8 * 2**20  # files up to this size are hashed whole (sha256)
EDGE_BYTES = 2**20  # larger files: size + mtime + first and last MiB


def fingerprint(path: str | os.PathLike) -> str:
    """Take a content fingerprint of a file.

    Files up to 8 MiB: ``sha256:<hex>`` of the whole file. Larger files: ``edge:<hex>``, the sha256 of
    the size, the mtime (ns) and the first and last MiB: cheap on multi-GB ``.ibd`` files, and it
    changes on any rewrite that touches the mtime (an edit in the middle that keeps size and mtime
    is not detected).

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    str
        ``sha256:<hex>`` or ``edge:<hex>``.
    """
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as f:
        if st.st_size <= FULL_HASH_MAX:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
            return "sha256:" + h.hexdigest()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        h.update(f.read(EDGE_BYTES))
        f.seek(st.st_size - EDGE_BYTES)
        h.update(f.read(EDGE_BYTES))
    return "edge:" + h.hexdigest()


def fingerprints(cfg: SectionConfig) -> dict[str, str]:
    """Fingerprint every input of a section.

    Parameters
    ----------
    cfg : SectionConfig
        The section.

    Returns
    -------
    dict
        Role to :func:`fingerprint`.

    Raises
    ------
    SectionError
        An input file is missing.
    """
    out = {}
    for role, path in cfg.inputs().items():
        if not Path(path).is_file():
            raise SectionError(f"{path}: {role} file not found")
        out[role] = fingerprint(path)
    return out


def read_record(folder: str | os.PathLike) -> dict | None:
    """Read the completion record of a section folder.

    Parameters
    ----------
    folder : path-like
        The section's output folder.

    Returns
    -------
    dict or None
        The record, or None when there is none or it is unreadable.
    """
    try:
        return json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return None


def config_key(cfg: SectionConfig) -> dict:
    """Return the config as its completion record holds it: every field but the output folder.

    Parameters
    ----------
    cfg : SectionConfig
        The section.

    Returns
    -------
    dict
        :meth:`SectionConfig.as_dict` without ``out_dir`` (a moved folder is still complete).
    """
    d = cfg.as_dict()
    d.pop("out_dir")
    return d


def is_complete(cfg: SectionConfig, hashes: dict[str, str] | None = None) -> bool:
    """Tell whether a section's folder holds a finished run of exactly this config.

    Parameters
    ----------
    cfg : SectionConfig
        The section (its ``out_dir`` is checked).
    hashes : dict, optional
        Input fingerprints already taken; computed when None.

    Returns
    -------
    bool
        True when the record is ``done``, of the current record version, and its inputs'
        fingerprints and config equal these.
    """
    rec = read_record(cfg.out_dir)
    if not rec or rec.get("status") != "done" or rec.get("record_version") != RECORD_VERSION:
        return False
    try:
        hashes = hashes if hashes is not None else fingerprints(cfg)
    except (OSError, SectionError):
        return False
    return rec.get("inputs") == hashes and rec.get("config") == config_key(cfg)


def may_replace(final: Path) -> None:
    """Refuse to replace a folder that is not a section folder.

    The overwrite policy for a section folder (one function, so the project-wide policy can replace
    it): an existing folder is replaced only when it is one of ours (it holds a ``section.json``) or
    is empty; anything else is refused.

    Parameters
    ----------
    final : Path
        The section's output folder.

    Raises
    ------
    SectionError
        ``final`` exists and is neither empty nor a section folder.
    """
    if final.exists() and (not final.is_dir() or (any(final.iterdir()) and not read_record(final))):
        raise SectionError(f"{final}: exists and is not a section folder; refusing to replace it")


def publish_folder(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder to its final name.

    One rename when ``final`` does not exist; else the old folder is renamed aside first and deleted
    after (a crash in between leaves the old result under a hidden ``.old`` name, never a half-
    written folder under ``final``).

    Parameters
    ----------
    tmp : Path
        The finished folder, beside ``final``.
    final : Path
        Its name once published.
    """
    may_replace(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "EDGE_BYTES",
    "FULL_HASH_MAX",
    "RECORD",
    "RECORD_VERSION",
    "config_key",
    "fingerprint",
    "fingerprints",
    "is_complete",
    "may_replace",
    "publish_folder",
    "read_record",
]
