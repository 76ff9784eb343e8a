"""Small helpers every layer uses: the package cache folder, atomic writes, the progress-bar default.

Nothing here imports another module of the package, so any module may import it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "append_csv_rows",
    "append_json_history",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "cache_dir",
    "default_progress",
    "file_lock",
    "set_aside",
]

logger = logging.getLogger("sentence_transformers_hybrid")


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


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[io.BufferedWriter]:
    """A binary file to write ``path`` through: a temporary sibling, flushed, synced and renamed over ``path`` when
    the block ends; on an error the temporary file is removed and ``path`` is left as it was. Readers see the old
    file or the new one, never a truncated one (a crash leaves at most a stray ``*.tmp`` file beside it).

    The file gets the permissions ``open(path, "w")`` would give it: an existing file keeps its mode, a new one gets
    ``0o666`` less the umask (``tempfile.mkstemp`` alone would leave every result readable by its owner only).

    Example::

        >>> import os, stat, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "weights.bin"
        >>> with atomic_writer(p) as f:
        ...     _ = f.write(b"0123")
        >>> p.read_bytes(), oct(stat.S_IMODE(p.stat().st_mode)) == oct(0o666 & ~_umask())
        (b'0123', True)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_writer`: the old file or the new one, never a truncated
    one; the permissions ``open(path, "w")`` would give)."""
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


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


# ---------------------------------------------------------------------------------------------- history files
@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock for read-modify-write of ``path`` (a hidden ``.<name>.lock`` beside it; POSIX ``flock``,
    no lock where that does not exist), so that two processes appending to one history never lose a record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path.parent / f".{path.name}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def set_aside(path: str | os.PathLike, why: str) -> Path:
    """Move a damaged record ``path`` to ``path.corrupt`` (``.corrupt.1``, ... if taken) with a warning; returns it."""
    path = Path(path)
    target, n = path.with_name(path.name + ".corrupt"), 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt.{n}")
    os.replace(path, target)
    logger.warning("%s: %s; moved it to %s and started a fresh file", path, why, target.name)
    return target


def append_json_history(path: str | os.PathLike, entry: Any) -> list[Any]:
    """Append ``entry`` to the JSON list in ``path`` (created if missing), atomically; returns the new list.

    A file that is not a readable JSON list (e.g. truncated by a crash of an older version) is moved aside as
    ``*.corrupt`` with a warning and the history starts afresh: one damaged file never stops a training run.

    Example::

        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "h.json"
        >>> _ = append_json_history(p, {"a": 1}); append_json_history(p, {"a": 2})
        [{'a': 1}, {'a': 2}]
    """
    path = Path(path)
    with file_lock(path):
        history: list[Any] = []
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                set_aside(path, f"not readable JSON ({err})")
            else:
                if isinstance(loaded, list):
                    history = loaded
                else:
                    set_aside(path, f"not a JSON list (a {type(loaded).__name__})")
        history.append(entry)
        atomic_write_json(path, history)
    return history


def append_csv_rows(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Append ``rows`` (dicts keyed by the ``header`` columns) to the CSV ``path``, atomically; returns its header.

    Rows never land under the wrong column: when the file's header differs from ``header`` (the metric set
    changed), the file is rewritten with the union of both (its columns first, new ones after; cells a row lacks
    are empty). A file that cannot be parsed (not UTF-8, no header, a row with another number of fields, as a
    truncated last line has) is moved aside as ``*.corrupt`` with a warning and a fresh file is started.

    Example::

        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.csv"
        >>> _ = append_csv_rows(p, ["epoch", "a"], [{"epoch": 0, "a": 1}])
        >>> append_csv_rows(p, ["epoch", "b"], [{"epoch": 1, "b": 2}])
        ['epoch', 'a', 'b']
        >>> print(p.read_text().replace("\\r", ""), end="")
        epoch,a,b
        0,1,
        1,,2
    """
    path = Path(path)
    header = list(header)
    with file_lock(path):
        old_header: list[str] = []
        old_rows: list[list[str]] = []
        if path.is_file() and path.stat().st_size:
            try:
                table = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
                if not table or not table[0]:
                    raise ValueError("no header line")
                bad = next((i for i, r in enumerate(table[1:], start=2) if len(r) != len(table[0])), None)
                if bad is not None:
                    raise ValueError(f"line {bad} has {len(table[bad - 1])} fields, the header {len(table[0])}")
                old_header, old_rows = table[0], table[1:]
            except (UnicodeDecodeError, csv.Error, ValueError) as err:
                set_aside(path, f"not a readable CSV ({err})")
        columns = old_header + [c for c in header if c not in old_header] if old_header else header
        if old_header and columns != old_header:
            logger.warning("%s: its columns differ from this evaluation's (%d new: %s); rewriting it with the union "
                           "of the columns", path, len(columns) - len(old_header), columns[len(old_header):][:5])
        buf = io.StringIO(newline="")
        writer = csv.writer(buf)
        writer.writerow(columns)
        pad = [""] * (len(columns) - len(old_header))
        writer.writerows(r + pad for r in old_rows)
        writer.writerows([row.get(c, "") for c in columns] for row in rows)
        atomic_write_text(path, buf.getvalue())
    return columns
