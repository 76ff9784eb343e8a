"""Opening local data files: gzip is told by its first bytes, not by its name."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO

GZIP_MAGIC = b"\x1f\x8b"


def open_maybe_gzip(path: str | Path) -> IO[bytes]:
    """Open ``path`` for reading bytes, decompressing it when it is gzip (told by its magic bytes, not its name).

    Example::

        >>> import gzip, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "a.jsonl.gz")
        >>> with gzip.open(path, "wb") as f:
        ...     _ = f.write(b'{"x": 1}\\n')
        >>> with open_maybe_gzip(path) as f:
        ...     f.read()
        b'{"x": 1}\\n'
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")
