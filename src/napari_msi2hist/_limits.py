"""One memory budget for every allocation whose size an input file or a config decides.

A small file can declare a huge raster, a checkpoint can declare a huge network, a pixel size of
1e-6 um can ask for a petabyte grid. Code that allocates from such numbers first calls
:func:`check_allocation`, which refuses (``ResourceLimitError``) when the estimate exceeds the budget:
by default half of the memory available now, or what ``--max-memory`` / ``MSI2HIST_MAX_MEMORY`` set.
"""

from __future__ import annotations

import os

ENV_VAR = "MSI2HIST_MAX_MEMORY"
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_override: int | None = None


class ResourceLimitError(ValueError):
    """An operation would allocate more memory than the budget allows."""


def parse_size(text: str | int | float) -> int:
    """Bytes from ``"512M"``, ``"4G"``, ``"1.5GiB"`` or a plain number of bytes.

    Parameters
    ----------
    text : str or int or float
        A size with an optional binary unit (K, M, G, T; ``B``/``iB`` suffixes accepted).

    Returns
    -------
    int
        The size in bytes (positive).
    """
    if isinstance(text, int | float):
        value = float(text)
    else:
        s = str(text).strip().upper().removesuffix("IB").removesuffix("B")
        unit = s[-1] if s and s[-1] in _UNITS else ""
        try:
            value = float(s[: len(s) - len(unit)]) * _UNITS[unit]
        except ValueError:
            raise ValueError(f"not a memory size: {text!r} (use e.g. 512M, 4G)") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"not a memory size: {text!r} (use e.g. 512M, 4G)")
    return int(value)


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``; physical memory where that is unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def set_memory_budget(size: str | int | None) -> None:
    """Set the budget for this process (``None``: back to the default)."""
    global _override
    _override = None if size is None else parse_size(size)


def memory_budget() -> int:
    """The budget in bytes: the explicit setting, else ``$MSI2HIST_MAX_MEMORY``, else half of
    the memory available now."""
    if _override is not None:
        return _override
    env = os.environ.get(ENV_VAR)
    if env:
        return parse_size(env)
    return available_memory() // 2


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style text for a byte count."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def check_allocation(nbytes: float, what: str, source: str | os.PathLike | None = None) -> None:
    """Refuse an allocation of ``nbytes`` that exceeds the budget.

    Parameters
    ----------
    nbytes : float
        The estimated size (may be astronomically large; it is never allocated here).
    what : str
        What would be allocated, for the message (``"a 30000 x 30000 raster"``).
    source : path-like, optional
        The input that asks for it, named first in the message.

    Raises
    ------
    ResourceLimitError
        When ``nbytes`` is not finite or exceeds :func:`memory_budget`.
    """
    budget = memory_budget()
    if not (nbytes == nbytes) or nbytes > budget:  # NaN counts as too large
        where = f"{source}: " if source is not None else ""
        raise ResourceLimitError(
            f"{where}{what} would need {format_bytes(float(nbytes))}, over the memory budget of "
            f"{format_bytes(budget)} (raise it with --max-memory or ${ENV_VAR})"
        )
