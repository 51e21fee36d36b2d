"""An offline English sentence corpus: sentences from the Python standard library's docstrings.

Every machine with Python has it, nothing is downloaded, and it is real English prose about many
topics (files, networks, dates, text, maths). The docstrings are read with ``ast`` from the source
files of the running interpreter's standard library (no module is imported, so nothing runs), split
into sentences, and filtered to prose: 6-40 words, starting with a capital letter, ending with a
full stop, and without code-like characters. The result is sorted and de-duplicated, then split by a
hash of each sentence (stable across runs and machines with the same Python version) into the
retraining part and the held-out part, which nothing is tuned on.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sys
import sysconfig
from pathlib import Path

_SENTENCE_END = re.compile(r"(?<=[a-z0-9\)][.!?])\s+(?=[A-Z])")
_CODE_LIKE = re.compile(r"[=<>{}\[\]_`*|\\#@$~^]|\.\w+\(|\b\w+\(\)|::|-->|\.\.\.|https?:|\.py\b")
_PROSE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'\"()\-./%!?]+[.!?]$")


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files (tests, site-packages and demos left out), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))


def docstrings(path: Path) -> list[str]:
    """Every module, class and function docstring of one file (files that do not parse are skipped)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return [doc for doc in (ast.get_docstring(n) for n in nodes) if doc]


def sentences_of(text: str) -> list[str]:
    """The prose sentences of one docstring (paragraphs joined, whitespace collapsed)."""
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.lstrip().startswith((">>>", "-", "*", ":", "..")) or "    " in paragraph:
            continue  # examples, lists, field lists, directives, indented code
        flat = " ".join(paragraph.split())
        for sentence in _SENTENCE_END.split(flat):
            words = sentence.split()
            if 6 <= len(words) <= 40 and _PROSE.match(sentence) and not _CODE_LIKE.search(sentence):
                found.append(sentence)
    return found


def stdlib_sentences() -> list[str]:
    """All distinct prose sentences of the standard library's docstrings, sorted."""
    return sorted({s for path in stdlib_files() for doc in docstrings(path) for s in sentences_of(doc)})


def in_heldout(sentence: str, heldout_per_mille: int) -> bool:
    """Whether ``sentence`` belongs to the held-out part (a stable hash, not Python's salted ``hash``)."""
    digest = hashlib.sha256(sentence.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") % 1000 < heldout_per_mille


def split_corpus(train_size: int, heldout_size: int, heldout_per_mille: int = 200) -> dict[str, object]:
    """The first ``train_size`` retraining and ``heldout_size`` held-out sentences (each part in its
    hash order, so the choice does not follow the alphabet), with a description of the corpus."""
    everything = stdlib_sentences()
    key = lambda s: hashlib.sha256(b"order" + s.encode("utf-8")).hexdigest()  # noqa: E731
    heldout = sorted((s for s in everything if in_heldout(s, heldout_per_mille)), key=key)
    train = sorted((s for s in everything if not in_heldout(s, heldout_per_mille)), key=key)
    if len(train) < train_size or len(heldout) < heldout_size:
        raise ValueError(f"the corpus has {len(train)} retraining and {len(heldout)} held-out sentences; "
                         f"asked for {train_size} and {heldout_size}")
    return {
        "train": train[:train_size],
        "heldout": heldout[:heldout_size],
        "description": {
            "source": "docstrings of the Python standard library (ast, no imports), prose sentences of 6-40 words",
            "python": sys.version.split()[0],
            "stdlib_files": len(stdlib_files()),
            "distinct_sentences": len(everything),
            "split": f"sha256(sentence) mod 1000 < {heldout_per_mille}: held out",
            "train_sentences": train_size,
            "heldout_sentences": heldout_size,
        },
    }
