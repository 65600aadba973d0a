"""elastix/transformix parameter files as text: the ``(Key value ...)`` format, written and parsed
without any elastix installation."""

from __future__ import annotations

import re
import shlex

import numpy as np

ELASTIX_FILE = "TransformParameters.{}.txt"


class ElastixFormatError(ValueError):
    """A TransformParameters file this reader cannot use (names the file and the problem)."""


# ----------------------------------------------------------------------------- text format
def _fmt(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (bool, np.bool_)):
        return '"true"' if v else '"false"'
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return repr(float(v))


def format_parameters(params: dict) -> str:
    """Text of an elastix parameter file.

    Parameters
    ----------
    params : dict
        ``{key: value or list of values}``; strings are quoted, numbers written in full precision,
        insertion order kept.

    Returns
    -------
    str
        One ``(Key value ...)`` line per entry.
    """
    lines = []
    for k, v in params.items():
        vals = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
        lines.append(f"({k} {' '.join(_fmt(x) for x in vals)})")
    return "\n".join(lines) + "\n"


def parse_parameters(text: str, source: str = "<text>") -> dict[str, list]:
    """Entries of an elastix parameter file.

    Parameters
    ----------
    text : str
        The file's text (``//`` comments allowed).
    source : str
        Named in error messages.

    Returns
    -------
    dict
        ``{key: [values]}``; numbers become float, quoted strings stay str.

    Raises
    ------
    ElastixFormatError
        A line that is not a ``(Key value ...)`` entry.
    """
    out: dict[str, list] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*(.*?)\s*\)", line)
        if not m:
            raise ElastixFormatError(f"{source}: line {n} is not a (Key value ...) entry: {raw!r}")
        vals = []
        for tok in shlex.split(m.group(2), posix=True):
            try:
                vals.append(float(tok))
            except ValueError:
                vals.append(tok)
        out[m.group(1)] = vals
    return out


# ----------------------------------------------------------------------------- writing
