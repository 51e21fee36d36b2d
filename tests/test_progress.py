from __future__ import annotations

import io
import re

import pytest
from tqdm.auto import tqdm

from deepcompress.progress import LineProgress, log_line, progress


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_bar() -> None:
    stream = io.StringIO()
    items = list(progress(range(5), desc="work", stream=stream))
    assert items == [0, 1, 2, 3, 4]
    assert re.fullmatch(r"work: 5/5 in \d+\.\ds\n", stream.getvalue())
    assert "\r" not in stream.getvalue()


def test_the_line_reports_the_latest_postfix() -> None:
    stream = io.StringIO()
    bar = progress(range(3), desc="train 1/2", stream=stream)
    for i in bar:
        bar.set_postfix(refresh=False, loss=1.0 / (i + 1), epoch=2)
    assert re.fullmatch(r"train 1/2: 3/3 in \d+\.\ds, loss=0\.3333, epoch=2\n", stream.getvalue())


def test_counting_without_an_iterable() -> None:
    stream = io.StringIO()
    with progress(desc="scan", total=3, stream=stream) as bar:
        bar.update()
        bar.update(2)
        bar.close()  # closing twice still writes one line
    assert re.fullmatch(r"scan: 3/3 in \d+\.\ds\n", stream.getvalue())


def test_an_unsized_iterable_reports_its_count_alone() -> None:
    stream = io.StringIO()
    for _ in progress((i for i in range(4)), desc="stream", stream=stream):
        pass
    assert re.fullmatch(r"stream: 4 in \d+\.\ds\n", stream.getvalue())


def test_disabled_progress_yields_the_items_and_writes_nothing() -> None:
    for stream in (io.StringIO(), Terminal()):
        bar = progress(range(3), desc="quiet", enabled=False, stream=stream)
        assert isinstance(bar, LineProgress)
        assert list(bar) == [0, 1, 2]
        assert stream.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar() -> None:
    stream = Terminal()
    bar = progress(range(3), desc="live", stream=stream)
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2]
    assert "live" in stream.getvalue() and "\r" in stream.getvalue()


def test_the_default_stream_is_stderr_at_call_time(capsys: pytest.CaptureFixture[str]) -> None:
    for _ in progress(range(2), desc="captured"):
        pass
    log_line("done")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("captured: 2/2 in ") and err[1] == "done"


def test_log_line_on_a_terminal_goes_through_tqdm() -> None:
    stream = Terminal()
    log_line("hello", stream)
    assert stream.getvalue() == "hello\n"


def test_iterating_a_counter_without_items_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"expected an iterable to iterate over, got None; call update\(n\) instead"):
        list(progress(desc="x", total=2, stream=io.StringIO()))


def test_initial_counts_work_done_before() -> None:
    stream = io.StringIO()
    with progress(desc="sweep", total=8, initial=3, stream=stream) as bar:
        for _ in range(5):
            bar.update()
    assert re.fullmatch(r"sweep: 8/8 in \d+\.\ds\n", stream.getvalue())


def test_initial_with_an_iterable_counts_on_from_it() -> None:
    stream = io.StringIO()
    assert list(progress(range(2), desc="rest", total=5, initial=3, stream=stream)) == [0, 1]
    assert re.fullmatch(r"rest: 5/5 in \d+\.\ds\n", stream.getvalue())


def test_initial_on_a_terminal_is_tqdms() -> None:
    stream = Terminal()
    with progress(desc="live", total=4, initial=3, stream=stream) as bar:
        assert isinstance(bar, tqdm) and bar.n == 3
        bar.update()
        assert bar.n == 4
    assert "3/4" in stream.getvalue()


def test_a_negative_initial_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"progress: expected initial to be a non-negative integer, got -1"):
        progress(desc="x", total=2, initial=-1, stream=io.StringIO())
