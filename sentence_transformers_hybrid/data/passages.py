"""A retrieval corpus streamed, never held whole: :class:`PassageSource` reads JSON-lines files (``.jsonl`` or
``.jsonl.gz``, one ``{"docid", "title", "text"}`` object a line, MIRACL's and BEIR's corpus format) file by file
and yields :class:`PassageBatch` es; docids are kept compactly (fixed-width UTF-8 ``S`` arrays) when they must be.

A passage's *row* is its position in the corpus: files in the order given, lines in order (row ``r`` of a file
is its line ``r + 1``; a blank or malformed line is an error naming the file and the line, never skipped).

Example:
    >>> source = PassageSource.from_dict({"d1": {"title": "Paris", "text": "is in France."}, "d2": "Lima."})
    >>> [(b.docids, b.texts) for b in source.iter_batches(8)]
    [(['d1', 'd2'], ['Paris is in France.', 'Lima.'])]
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .files import open_maybe_gzip
from .validation import DataValidationError

__all__ = ["PassageBatch", "PassageSource", "duplicate_rows", "encode_docids"]

#: How a passage becomes the text that is encoded (MIRACL / Pyserini / BEIR: title, a space, the text).
TITLE_FORMAT = "{title} {text}"


def encode_docids(docids: Sequence[str]) -> np.ndarray:
    """Docids as a compact fixed-width UTF-8 ``S`` array (no pickle; ``np.load`` memory-maps it).

    Example:
        >>> encode_docids(["12#0", "7#11"])
        array([b'12#0', b'7#11'], dtype='|S4')
    """
    raw = [str(d).encode("utf-8") for d in docids]
    width = max((len(r) for r in raw), default=1) or 1
    return np.array(raw, dtype=f"S{width}")


def duplicate_rows(ids: np.ndarray) -> tuple[int, int] | None:
    """The rows ``(first, second)`` of a docid that occurs twice in ``ids`` (an ``S`` array; the one whose second
    occurrence comes first), or ``None``. Sorting, not hashing: ``O(rows)`` int64 besides the ids.

    Example:
        >>> duplicate_rows(encode_docids(["a", "b", "b", "a"]))
        (1, 2)
    """
    if len(ids) < 2:
        return None
    order = np.argsort(ids, kind="stable")
    same = np.nonzero(ids[order[1:]] == ids[order[:-1]])[0]
    if not len(same):
        return None
    pairs = np.stack([order[same], order[same + 1]], 1)
    first, second = pairs[np.argmin(pairs[:, 1])]
    # the first occurrence of that docid (a triple's earlier pair sorts before it)
    first = order[np.searchsorted(ids[order], ids[second])]
    return int(first), int(second)


@dataclass
class PassageBatch:
    """Consecutive passages of one file: ``docids``, the ``texts`` to encode, the ``file`` they come from, the line
    of the first one (``first_line``, 1-based) and its corpus row (``first_row``)."""

    docids: list[str]
    texts: list[str]
    file: str
    first_line: int
    first_row: int = 0


def _batches(rows: Iterable[tuple[int, int, Any]], parse: Callable[[Any, int], tuple[str, str]], source: str,
             batch_size: int, keep: Callable[[int], bool] | None, boundary: int | None) -> Iterator[PassageBatch]:
    """Cut ``(row, line, raw)`` items into :class:`PassageBatch` es of consecutive kept rows: at most ``batch_size``
    rows, none crossing a multiple of ``boundary``; ``keep(row)`` false skips a row without parsing it."""
    batch: PassageBatch | None = None
    for r, line_no, raw in rows:
        cut = batch is not None and (len(batch.docids) >= batch_size or (boundary and r % boundary == 0))
        if batch is not None and (cut or batch.first_row + len(batch.docids) != r):
            yield batch
            batch = None
        if keep is not None and not keep(r):
            continue
        docid, text = parse(raw, line_no)
        if batch is None:
            batch = PassageBatch([], [], source, line_no, r)
        batch.docids.append(docid)
        batch.texts.append(text)
    if batch is not None:
        yield batch


class PassageSource:
    """A corpus read file by file (never a dict of all texts): :meth:`from_jsonl_gz` for files, :meth:`from_dict`
    for a small in-memory BEIR corpus ``{docid: {"title", "text"}}``.

    Args:
        files: the JSON-lines files, in corpus order.
        title_format: how ``title`` and ``text`` become the encoded text (``"{text}"`` to leave titles out);
            the result is stripped, so an empty title leaves no leading space.
    """

    def __init__(self, files: Sequence[str | os.PathLike] = (), *, title_format: str = TITLE_FORMAT,
                 records: Sequence[tuple[str, str, str]] | None = None):
        self.files = [Path(f) for f in files]
        self.title_format = title_format
        self._records = list(records) if records is not None else None
        self._counts: list[int] | None = [len(self._records)] if self._records is not None else None

    @classmethod
    def from_jsonl_gz(cls, files: Sequence[str | os.PathLike], *, title_format: str = TITLE_FORMAT) -> PassageSource:
        """The passages of ``files`` (``.jsonl.gz`` or plain ``.jsonl``, told by their bytes), in the order given.

        Raises ``FileNotFoundError`` naming a file that does not exist.
        """
        missing = [str(f) for f in files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"corpus file(s) not found: {', '.join(missing)}")
        return cls(files, title_format=title_format)

    @classmethod
    def from_dict(cls, corpus: Mapping[str, Mapping[str, str] | str], *, with_title: bool = True) -> PassageSource:
        """A small in-memory corpus: ``{docid: {"title": ..., "text": ...}}`` (BEIR) or ``{docid: text}``."""
        records = []
        for docid, doc in corpus.items():
            if isinstance(doc, str):
                records.append((str(docid), "", doc))
            elif isinstance(doc, Mapping) and "text" in doc:
                records.append((str(docid), str(doc.get("title") or ""), str(doc["text"])))
            else:
                raise DataValidationError(f"corpus[{docid!r}] must be a text or a mapping with 'text', got {doc!r:.80}")
        return cls(title_format=TITLE_FORMAT if with_title else "{text}", records=records)

    # ------------------------------------------------------------------------------------------- description
    @property
    def names(self) -> list[str]:
        """A name per part of the corpus: the file paths, or ``"<memory>"`` for :meth:`from_dict`."""
        return ["<memory>"] if self._records is not None else [str(f) for f in self.files]

    def describe(self) -> list[dict[str, Any]]:
        """The corpus files (name, size in bytes, modification time), for manifests: a changed file shows."""
        if self._records is not None:
            return [{"file": "<memory>", "rows": len(self._records)}]
        return [{"file": f.name, "bytes": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in self.files]

    def count(self) -> int:
        """The number of passages (lines), counted once by streaming the files without parsing them."""
        if self._counts is None:
            counts = []
            for f in self.files:
                n = 0
                with self._open(f) as fh:
                    try:
                        for _ in fh:
                            n += 1
                    except (EOFError, OSError, zlib.error) as err:
                        raise _truncated(f, n, err) from err
                counts.append(n)
            self._counts = counts
        return int(sum(self._counts))

    def __len__(self) -> int:
        return self.count()

    def locate(self, row: int) -> tuple[str, int]:
        """``(file, line)`` of corpus row ``row`` (``line`` 1-based)."""
        self.count()
        cum = np.cumsum([0] + list(self._counts or []))
        i = int(np.searchsorted(cum, row, side="right") - 1)
        if not 0 <= row < cum[-1]:
            raise IndexError(f"row {row} is outside the corpus of {int(cum[-1])} passages")
        return self.names[i], int(row - cum[i] + 1)

    # ----------------------------------------------------------------------------------------------- reading
    @staticmethod
    def _open(path: Path):
        return open_maybe_gzip(path)

    def text_of(self, title: str, text: str) -> str:
        return self.title_format.format(title=title, text=text).strip()

    def iter_batches(
        self,
        batch_size: int = 1024,
        *,
        keep: Callable[[int], bool] | None = None,
        boundary: int | None = None,
    ) -> Iterator[PassageBatch]:
        """Batches of at most ``batch_size`` consecutive passages of one file, in corpus order.

        Args:
            batch_size: passages per batch.
            keep: ``keep(row)``: whether to read row ``row``; the others are skipped unparsed (how a rank or a
                resumed encode passes over the shards it does not encode).
            boundary: no batch crosses a multiple of ``boundary`` rows (a shard size).

        Raises:
            DataValidationError: a malformed line (not a JSON object, no ``docid`` / ``text``, blank), naming the
                file and the line; a truncated or corrupt ``.gz`` file, naming it.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self._records is not None:
            rows = ((r, r + 1, rec) for r, rec in enumerate(self._records))
            yield from _batches(rows, lambda rec, _: (rec[0], self.text_of(rec[1], rec[2])), "<memory>",
                                batch_size, keep, boundary)
            return
        row = 0
        for f in self.files:
            read = [0]  # lines read from f so far: a truncation error names the line after them

            def lines(fh, start: int = row):
                for i, raw in enumerate(fh):
                    read[0] = i + 1
                    yield start + i, i + 1, raw

            with self._open(f) as fh:
                try:
                    yield from _batches(lines(fh), lambda raw, n, f=f: self._parse(raw, f, n), str(f),
                                        batch_size, keep, boundary)
                except (EOFError, OSError, zlib.error) as err:
                    if isinstance(err, FileNotFoundError):
                        raise
                    raise _truncated(f, read[0], err) from err
            row += read[0]

    def _parse(self, raw: bytes, path: Path, line_no: int) -> tuple[str, str]:
        try:
            obj = json.loads(raw)
        except ValueError as err:
            what = "a blank line" if not raw.strip() else f"not JSON ({err})"
            raise DataValidationError(f"{path}, line {line_no}: {what}; expected one "
                                      '{"docid", "title", "text"} object a line') from None
        if not isinstance(obj, dict) or "docid" not in obj or "text" not in obj:
            keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise DataValidationError(f"{path}, line {line_no}: expected an object with 'docid' and 'text' "
                                      f"(and 'title'), got {keys}")
        return str(obj["docid"]), self.text_of(str(obj.get("title") or ""), str(obj["text"]))

    def docids(self) -> np.ndarray:
        """Every docid, in row order, as a compact ``S`` array (streams and parses the corpus)."""
        parts = [encode_docids(b.docids) for b in self.iter_batches(65536)]
        if not parts:
            return np.zeros(0, dtype="S1")
        width = max(p.dtype.itemsize for p in parts)
        return np.concatenate([p.astype(f"S{width}") for p in parts])

    def check_unique(self, ids: np.ndarray | None = None) -> None:
        """Raise :class:`DataValidationError` naming both places (file and line) of a docid that occurs twice
        (also across files). ``ids``: the docids in row order if already at hand (else streamed)."""
        ids = self.docids() if ids is None else ids
        dup = duplicate_rows(ids)
        if dup is not None:
            (f1, l1), (f2, l2) = self.locate(dup[0]), self.locate(dup[1])
            raise DataValidationError(f"docid {ids[dup[0]].decode('utf-8')!r} occurs twice: {f1}, line {l1} and "
                                      f"{f2}, line {l2}")


def _truncated(path: Path, line_no: int, err: BaseException) -> DataValidationError:
    return DataValidationError(f"{path}: truncated or corrupt compressed file after line {line_no} ({err}); "
                               "download it again")
