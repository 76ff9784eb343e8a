"""Small helpers every layer uses: the package cache folder, atomic writes, the progress-bar default.

Nothing here imports another module of the package, so any module may import it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "cache_dir", "default_progress"]


def cache_dir() -> Path:
    """The package's cache directory: ``$STH_CACHE_DIR``, else ``$XDG_CACHE_HOME`` (default ``~/.cache``) /
    ``sentence-transformers-hybrid``. Downloads, converted models and embedding caches live below it.

    Example::

        >>> import os
        >>> os.environ["STH_CACHE_DIR"] = "/tmp/sth-cache"
        >>> str(cache_dir())
        '/tmp/sth-cache'
        >>> del os.environ["STH_CACHE_DIR"]
    """
    env = os.environ.get("STH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sentence-transformers-hybrid"


def default_progress(show_progress_bar: bool | None, logger: logging.Logger | None = None) -> bool:
    """sentence-transformers' default for ``show_progress_bar``: on when logging is at INFO or below.

    Example::

        >>> default_progress(True), default_progress(False)
        (True, False)
    """
    if show_progress_bar is not None:
        return bool(show_progress_bar)
    logger = logger or logging.getLogger("sentence_transformers_hybrid")
    return logger.getEffectiveLevel() <= logging.INFO


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and a rename: readers see the old file or the new one,
    never a truncated one (a crash leaves at most a stray ``*.tmp`` file beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text.

    Example::

        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = atomic_write_text(p, "hello")
        >>> p.read_text()
        'hello'
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """``obj`` as JSON (UTF-8, not ASCII-escaped, numpy scalars as floats), written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return float(value)
