"""The checks every configuration shares: unknown keys, integers and numbers in a range.

Each raises :class:`~deepcompress.errors.ConfigError` worded "WHERE: expected WHAT, got VALUE", with
WHERE the setting's dotted TOML key (``prune.rounds``, ``quantize.tol``), so a mistake in a config
file names its table and key. ``bool`` is never accepted as a number (``True`` is an ``int`` to Python,
never a count or a rate to a user).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from deepcompress.errors import ConfigError


def reject_unknown(section: str, data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """``ConfigError`` "SECTION: unknown keys [...]; allowed keys are [...]" (allowed in the order given)."""
    allowed = list(allowed)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{section}: unknown keys {unknown}; allowed keys are {allowed}")


def check_patterns(value: object, where: str) -> tuple[str, ...]:
    """``value`` as a tuple of layer-name patterns (a list of strings, possibly empty)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"{where}: expected a list of layer-name patterns, got {value!r}")
    return tuple(value)


def check_int(
    value: object, where: str, *, minimum: int | None = None, maximum: int | None = None, expected: str | None = None
) -> int:
    """``value`` if it is an integer (not a bool) in ``minimum..maximum`` (either bound optional).

    The error says "an integer >= MIN", "an integer in MIN..MAX" or, when given, ``expected``.
    """
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)  # type: ignore[operator]
    if not ok:
        if expected is None:
            both = minimum is not None and maximum is not None
            expected = f"an integer in {minimum}..{maximum}" if both else _bounded("an integer", minimum, maximum)
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")
    return value  # type: ignore[return-value]


def check_number(
    value: object,
    where: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    open_min: bool = False,
    open_max: bool = False,
    expected: str | None = None,
) -> float:
    """``value`` as a float if it is a finite int or float (not a bool) within the bounds.

    ``open_min`` / ``open_max`` exclude the bound itself. The error says "a number in [MIN, MAX)",
    "a finite number >= MIN" (and so on for the bounds given) or, when given, ``expected``.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if open_min else value >= minimum  # type: ignore[operator]
    if ok and maximum is not None:
        ok = value < maximum if open_max else value <= maximum  # type: ignore[operator]
    if not ok:
        if expected is None and minimum is not None and maximum is not None:
            expected = f"a number in {'(' if open_min else '['}{minimum:g}, {maximum:g}{')' if open_max else ']'}"
        elif expected is None:
            expected = _bounded("a finite number", minimum, maximum, open_min, open_max)
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _bounded(noun: str, minimum: float | None, maximum: float | None, open_min: bool = False, open_max: bool = False) -> str:
    """``NOUN >= MIN`` or ``NOUN <= MAX`` (``>`` / ``<`` when open) for at most one bound; NOUN alone for none."""
    if minimum is not None:
        return f"{noun} {'>' if open_min else '>='} {minimum:g}"
    if maximum is not None:
        return f"{noun} {'<' if open_max else '<='} {maximum:g}"
    return noun
