"""The one base class of every configuration choice (pruning method, centroid init, coder, ...)."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from deepcompress.errors import ConfigError

C = TypeVar("C", bound="Choice")


class Choice(str, Enum):
    """A ``str`` Enum whose :meth:`parse` names the allowed values when it rejects one."""

    @classmethod
    def parse(cls: type[C], value: object, what: str) -> C:
        """The member whose value is ``value``; otherwise ``ConfigError`` "WHAT: expected one of [...], got VALUE"."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"{what}: expected one of {[m.value for m in cls]}, got {value!r}") from None
