"""Exceptions and warnings of the imzML reader (re-exported by :mod:`napari_msi2hist.io.imzml`)."""

from __future__ import annotations


class ImzMLError(Exception):
    """Base class of every error this reader raises; the message names the file and the problem."""


class ImzMLFormatError(ImzMLError):
    """The file is not (well-formed) imzML, or uses forbidden XML features such as entities."""


class ImzMLMissingIbdError(ImzMLError):
    """The binary ``.ibd`` file that belongs to the imzML is missing."""


class ImzMLTruncatedError(ImzMLError):
    """The ``.ibd`` is shorter than the data the imzML describes (an interrupted copy, usually)."""


class ImzMLOffsetError(ImzMLError):
    """A spectrum's declared offset/length points outside the ``.ibd``."""


class ImzMLUUIDMismatchError(ImzMLError):
    """The UUID in the imzML differs from the one in the first 16 bytes of the ``.ibd``."""


class ImzMLNonFiniteError(ImzMLError):
    """NaN or infinite intensities were found."""


class ImzMLUnsupportedError(ImzMLError):
    """Valid imzML that this reader does not handle (e.g. compressed binary arrays)."""


class ImzMLWarning(UserWarning):
    """Something in the file was repaired or ignored; the message says what and how often."""
