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


class _FullDisk:
    """A writable file object that accepts ``budget`` bytes and then fails like a full disk (or a crash)."""

    def __init__(self, f, budget: int):
        self._f, self._budget = f, budget

    def write(self, data):
        if len(data) > self._budget:
            self._f.write(data[: self._budget])
            self._f.flush()
            self._budget = 0
            raise OSError(28, "No space left on device (simulated)")
        self._budget -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False

    def __iter__(self):
        return iter(self._f)


@pytest.fixture
def disk_full(monkeypatch):
    """``disk_full(folder, after=N)``: from now on, every file opened for writing below ``folder`` (by ``open``,
    ``Path.write_text`` or ``os.fdopen``) takes ``N`` bytes and then raises ``OSError`` (ENOSPC): what a crash or
    a full disk does to a file written in place."""
    import builtins
    import io

    def install(folder, after: int = 64):
        folder = str(Path(folder).resolve())
        real_open, real_fdopen = builtins.open, os.fdopen

        def below(path) -> bool:
            try:
                return str(Path(path).resolve()).startswith(folder)
            except (TypeError, OSError):
                return False

        def fake_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if any(c in mode for c in "wax+") and not isinstance(file, int) and below(file):
                return _FullDisk(f, after)
            return f

        def fake_fdopen(fd, mode="r", *args, **kwargs):
            f = real_fdopen(fd, mode, *args, **kwargs)
            if any(c in mode for c in "wax+") and below(os.readlink(f"/proc/self/fd/{fd}")):
                return _FullDisk(f, after)
            return f

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "fdopen", fake_fdopen)

    return install
