"""Exception types raised by deepcompress.

Every error a user can cause derives from :class:`DeepCompressError`; file-format problems raise
:class:`FormatError`, which is also a ``ValueError`` so generic callers can catch it as bad input.
"""

from __future__ import annotations


class DeepCompressError(Exception):
    """Base class of all deepcompress errors."""


class ConfigError(DeepCompressError, ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


class DataError(DeepCompressError, FileNotFoundError):
    """A dataset file is missing or malformed; the message names the file and the fix."""


class CheckpointError(DeepCompressError, ValueError):
    """A checkpoint does not match the model it is loaded into."""


class FormatError(DeepCompressError, ValueError):
    """A compressed file is malformed.

    ``section`` names the part of the file being read (e.g. ``"header"``, ``"layer fc1 codes"``) and
    ``offset`` the byte offset at which the problem was found, so a corrupt file can be diagnosed.
    """

    def __init__(self, message: str, *, section: str, offset: int) -> None:
        super().__init__(f"{message} (section {section!r}, byte offset {offset})")
        self.section = section
        self.offset = offset
