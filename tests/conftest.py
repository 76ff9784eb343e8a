from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def lareqa_dir() -> Path | None:
    """The LAReQA data: $STH_DATA_DIR, else ../shared/data/lareqa beside the checkout."""
    env = os.environ.get("STH_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "data" / "lareqa")
    for c in candidates:
        if (c / "xquad-r").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = lareqa_dir()
    if d is None:
        if os.environ.get("CI"):
            pytest.fail("LAReQA data not found: set STH_DATA_DIR (CI must provide it)")
        pytest.skip("LAReQA data not found: set STH_DATA_DIR")
    return d
