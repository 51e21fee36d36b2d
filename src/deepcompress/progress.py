"""Progress output that suits where it goes: a live bar on a terminal, one line per task in a log.

A tqdm bar redraws itself with carriage returns, which a terminal folds into one line but a log file
(``make demo > log``, CI) keeps as thousands of updates. :func:`progress` therefore returns a tqdm bar
only when the stream is a terminal; otherwise it counts silently and writes a single summary line when
the work is done, e.g. ``train 3/20: 469/469 in 4.2s, loss=0.0412, accuracy=0.9871``.

Both kinds answer the same small API, so callers never ask which one they have: iterate it (or call
``update(n)`` with ``iterable=None``), ``set_postfix(**values)`` for figures shown beside the count
(the summary line reports the latest ones), and ``close()`` or a ``with`` block to finish early.
``initial`` starts the count above zero (work done before, e.g. sweep points a resumed run reuses).
Lines written while a bar runs go through :func:`log_line`, which keeps them clear of a live bar.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO

from tqdm.auto import tqdm


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (streams without ``isatty`` are not)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def log_line(text: str, stream: TextIO | None = None) -> None:
    """Write ``text`` as one line to ``stream`` (default ``sys.stderr``), flushed at once.

    On a terminal the line goes through ``tqdm.write`` so that it lands above any live bar instead of
    through it.
    """
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        tqdm.write(text, file=stream)
    else:
        stream.write(text + "\n")
        stream.flush()


def format_value(value: Any) -> str:
    """Floats with four significant digits, everything else as ``str``."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def sized_length(iterable: Iterable[Any] | None) -> int | None:
    """``len(iterable)`` when it has one (as tqdm infers its total), else ``None``."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


class LineProgress:
    """Counts items silently; writes one summary line (desc, count, seconds, postfix) when finished.

    The line is written once: when the iteration is exhausted or abandoned, or at ``close()``.
    ``stream=None`` makes it fully silent (progress disabled). The count starts at ``initial``.
    """

    def __init__(
        self, iterable: Iterable[Any] | None, desc: str, total: int | None, stream: TextIO | None, initial: int = 0
    ) -> None:
        self.iterable = iterable
        self.desc = desc
        self.total = total if total is not None else sized_length(iterable)
        self.stream = stream
        self.n = initial
        self.postfix: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("expected an iterable to iterate over, got None; call update(n) instead")
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done (for work that is not a single loop)."""
        self.n += n

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Figures to report beside the count; ``refresh`` exists only to match tqdm's signature."""
        self.postfix = values

    def line(self) -> str:
        """The summary: ``desc: n[/total] in S.Ss[, key=value ...]``."""
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        text = f"{self.desc}: {count} in {time.perf_counter() - self.started:.1f}s"
        return ", ".join([text, *(f"{key}={format_value(value)}" for key, value in self.postfix.items())])

    def close(self) -> None:
        """Write the summary line (once)."""
        if self.closed:
            return
        self.closed = True
        if self.stream is not None:
            log_line(self.line(), self.stream)


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    total: int | None = None,
    enabled: bool = True,
    stream: TextIO | None = None,
    initial: int = 0,
) -> tqdm | LineProgress:
    """Progress over ``iterable`` (or ``total`` items counted with ``update``) written to ``stream``.

    ``stream`` defaults to ``sys.stderr`` as it is at call time (so redirected or captured stderr is
    honoured). On a terminal this is a tqdm bar; a bar nested inside another one clears itself when
    done (tqdm's ``leave=None``), a top-level one stays. Anywhere else it is a :class:`LineProgress`
    that writes one line when finished. ``enabled=False`` yields the items and writes nothing.
    ``initial`` items count as done already (as tqdm's ``initial``: the count, not the iterable, starts
    there).
    """
    if isinstance(initial, bool) or not isinstance(initial, int) or initial < 0:
        raise ValueError(f"progress: expected initial to be a non-negative integer, got {initial!r}")
    stream = sys.stderr if stream is None else stream
    if enabled and is_terminal(stream):
        return tqdm(iterable, desc=desc, total=total, file=stream, leave=None, initial=initial)
    return LineProgress(iterable, desc, total, stream if enabled else None, initial)
