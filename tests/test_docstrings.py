"""Every docstring example of the package runs, offline on the CPU, as part of the test suite.

Each module's examples run in a fresh temporary working directory with ``STH_DATA_DIR`` pointing at the LAReQA
data, ``STH_CACHE_DIR`` at an empty cache and the Hugging Face Hub switched off. An example that needs the Hub or a
GPU is skipped with ``# doctest: +SKIP`` after a comment saying why; no example hard-codes a machine's path.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re

import pytest

import sentence_transformers_hybrid as pkg
from conftest import lareqa_dir

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
MODULES = [pkg.__name__] + sorted(
    m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".") if not m.name.endswith("__main__")
)
#: examples that read the LAReQA data (from $STH_DATA_DIR)
NEEDS_DATA = re.compile(r"load_lareqa\(|load_corpus\(|collect_texts\(|STH_DATA_DIR")


def _tests(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    return [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, module_name) if t.examples]


def _examples(module_name: str):
    for test in _tests(module_name):
        for ex in test.examples:
            yield test, ex


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A temporary working directory, an empty package cache, the LAReQA data, no Hub; restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = lareqa_dir()
    if data is not None:
        monkeypatch.setenv("STH_DATA_DIR", str(data))
    return data


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name, sandbox):
    tests = _tests(module_name)
    if not tests:
        pytest.skip(f"{module_name} has no docstring example")
    if sandbox is None and any(NEEDS_DATA.search(ex.source) for t in tests for ex in t.examples):
        pytest.skip("LAReQA data not found: set STH_DATA_DIR")
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


@pytest.mark.parametrize("module_name", MODULES)
def test_skipped_examples_say_why(module_name):
    silent = [f"{t.name} line {(t.lineno or 0) + ex.lineno + 1}: {ex.source.strip()}"
              for t, ex in _examples(module_name)
              if ex.options.get(doctest.SKIP) and not re.search(r"#(?!\s*doctest:)\s*\S", ex.source)]
    assert not silent, "a skipped example needs a comment saying why (e.g. '# needs the Hub  # doctest: +SKIP'):\n" + "\n".join(silent)


@pytest.mark.parametrize("module_name", MODULES)
def test_examples_do_not_hard_code_machine_paths(module_name):
    bad = [f"{t.name}: {ex.source.strip()}" for t, ex in _examples(module_name)
           if re.search(r"(/work/|\.\./shared|/home/|/Users/)", ex.source)]
    assert not bad, "read the data from $STH_DATA_DIR (or use tiny data) instead:\n" + "\n".join(bad)


def test_reliability_page_names_existing_tests():
    """Every ``tests/<file>.py::<test>`` that docs/reliability.md cites is a test function in that file."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    cited = re.findall(r"`(tests/\w+\.py)::(\w+)`", (root / "docs" / "reliability.md").read_text(encoding="utf-8"))
    assert len(cited) >= 20
    missing = [f"{f}::{name}" for f, name in cited
               if not (root / f).is_file() or not re.search(rf"^def {name}\(", (root / f).read_text(encoding="utf-8"), re.M)]
    assert not missing, missing
