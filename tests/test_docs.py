"""The Python blocks of README.md and docs/*.md stay in step with the code: each one parses, and every name it
imports from this package exists (a renamed or moved function breaks this test, not a reader's first try).

The blocks are not run: most train or evaluate real models on real data (the docstring examples, run by
tests/test_docstrings.py, are the runnable ones)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 2
            yield pytest.param(page, line, m.group(1), id=f"{page.relative_to(ROOT)}:{line}")


BLOCKS = list(_blocks())


def test_the_docs_have_python_blocks():
    assert len(BLOCKS) >= 20  # the pages above hold 26 today: a broken pattern must not pass by finding none


@pytest.mark.parametrize("page, line, source", BLOCKS)
def test_doc_block_parses_and_its_package_imports_exist(page, line, source):
    tree = ast.parse(source, filename=f"{page.name}:{line}")  # a SyntaxError names the page and the block's line
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sentence_transformers_hybrid"):
            module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names if a.name != "*" and not hasattr(module, a.name)]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("sentence_transformers_hybrid"):
                    importlib.import_module(a.name)
    assert not missing, f"{page.relative_to(ROOT)}, block at line {line}: no such name(s) {missing}"
