"""The README's Python examples run as written, against the committed compressed files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert python_blocks(), "README.md should show the Python API"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    exec(compile(python_blocks()[index], f"README.md python block {index}", "exec"), {})
    assert "'n': 10000" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["lenet300_mnist", "lenet5_mnist"])
def test_readme_results_are_the_committed_files(name: str) -> None:
    """The results table quotes each committed file's real size, ratio and decoded accuracy."""
    import json

    from deepcompress.format import inspect_file, load_compressed

    path = ROOT / "experiments" / "results" / f"{name}.dcz"
    report = inspect_file(path)
    error = 100 * (1 - load_compressed(path).metadata["test_accuracy"])
    stages = json.loads(path.with_suffix(".json").read_text())["stages"]
    assert stages[-1]["stage"] == "file" and stages[-1]["accuracy"] == pytest.approx(1 - error / 100)
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(f"| {report_name(name)} |"))
    assert f"{report['file_bytes']:,} B" in row
    assert f"**{report['ratio']:.1f}x**" in row
    assert f"| {error:.2f}% |" in row


def report_name(name: str) -> str:
    return {"lenet300_mnist": "LeNet-300-100", "lenet5_mnist": "LeNet-5"}[name]


def test_readme_benchmark_section_is_the_recorded_results(capsys: pytest.CaptureFixture[str]) -> None:
    """The README quotes benchmarks/results/*.json exactly as benchmarks/summarize.py renders them."""
    import runpy

    runpy.run_path(str(ROOT / "benchmarks" / "summarize.py"), run_name="__main__")
    assert capsys.readouterr().out.strip() in (ROOT / "README.md").read_text()


def test_readme_networks_table_is_the_committed_reports() -> None:
    """The README's table of every network is what experiments/summarize.py renders from the reports."""
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "summarize.py"), "--readme"],
                            capture_output=True, text=True, check=True)
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- networks table: python experiments/summarize.py --readme -->\n")[1].split("\n<!-- end networks table -->")[0]
    assert table == result.stdout.strip()
