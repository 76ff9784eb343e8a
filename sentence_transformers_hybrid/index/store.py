"""A corpus's embeddings as shards: :class:`Shard` (rows of embeddings + their docids + a manifest) and
:class:`CorpusIndex` (the shards in corpus order), on disk (memory-mapped ``.npy``) or in memory.

A document's *row* is its position in the corpus (files in order, lines in order); shard ``s`` holds rows
``offsets[s]..offsets[s+1]-1``. Search ranks by (score descending, row ascending), so the sharding never changes a
result. Docids are kept as fixed-width UTF-8 bytes (``S`` arrays, e.g. 11 bytes for MIRACL's ``"1234567#12"``),
memory-mapped too, and decoded only for the hits.

Example:
    >>> import numpy as np
    >>> index = CorpusIndex.from_arrays(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    >>> len(index), index.dim, index.docids_of(np.array([2, -1])).tolist()
    (3, 3, ['c', ''])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.passages import duplicate_rows, encode_docids
from .manifest import read_index

__all__ = ["CorpusIndex", "Shard"]


@dataclass
class Shard:
    """Rows ``offset..offset+len-1`` of a corpus: ``embeddings [n x dim]`` (a memmap when on disk), ``docid_bytes``
    (``S`` array), the ``manifest`` that describes them and, on disk, the ``path`` of the embedding file."""

    embeddings: np.ndarray
    docid_bytes: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start..stop-1`` as a float32 array (bfloat16 shards are stored as their uint16 bits)."""
        part = np.asarray(self.embeddings[start:stop])
        if self.manifest.get("dtype") == "bfloat16" or part.dtype == np.uint16:
            return (part.astype(np.uint32) << 16).view(np.float32)
        return np.array(part, dtype=np.float32)  # a writable copy of the block

    @property
    def docids(self) -> np.ndarray:
        """The docids as a numpy array of ``str`` (decoded on each call: use :attr:`docid_bytes` for big shards)."""
        return np.char.decode(np.asarray(self.docid_bytes), "utf-8").astype(str)


class CorpusIndex:
    """The shards of a corpus, in corpus order. ``len(index)`` rows of ``index.dim`` dimensions.

    Build one with :func:`~sentence_transformers_hybrid.index.encode_corpus` (on disk; reopen it with
    :meth:`open`) or :meth:`from_arrays` (in memory, one shard: how small in-memory evaluators use the same
    search code).
    """

    def __init__(self, shards: Sequence[Shard], *, path: Path | None = None, info: dict[str, Any] | None = None):
        self.shards = list(shards)
        self.path = path
        self.info = dict(info or {})
        sizes = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        dims = {int(s.embeddings.shape[1]) for s in self.shards if s.embeddings.ndim == 2}
        if len(dims) > 1:
            raise ValueError(f"the shards have different dimensions: {sorted(dims)}")
        self.dim = dims.pop() if dims else 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"CorpusIndex({len(self)} rows, dim={self.dim}, {len(self.shards)} shards{where})"

    @classmethod
    def from_arrays(cls, embeddings: Any, docids: Sequence[str], *, info: dict[str, Any] | None = None) -> CorpusIndex:
        """An in-memory index of one shard: ``embeddings [n x dim]`` (numpy or torch) and their ``docids``.

        Raises ``ValueError`` when the lengths differ or a docid occurs twice (naming it and both rows).
        """
        if hasattr(embeddings, "detach"):
            embeddings = embeddings.detach().cpu().float().numpy()
        emb = np.asarray(embeddings)
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be 2-D [n x dim], got shape {emb.shape}")
        if emb.dtype.kind != "f":
            emb = emb.astype(np.float32)
        if len(docids) != len(emb):
            raise ValueError(f"{len(docids)} docids for {len(emb)} embeddings")
        ids = encode_docids(docids)
        dup = duplicate_rows(ids)
        if dup is not None:
            raise ValueError(f"docid {ids[dup[0]].decode()!r} occurs twice: rows {dup[0]} and {dup[1]}")
        shard = Shard(emb, ids, {"rows": len(emb), "finished": True, "dtype": str(emb.dtype)})
        return cls([shard], info=info)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Corpus rows ``start..stop-1`` as float32 ``[rows x dim]``, read from the shards they lie in.

        Search scores blocks of fixed global row ranges, so the same rows meet the same arithmetic (bit for bit)
        however the corpus was sharded.
        """
        stop = min(stop, len(self))
        first = int(np.searchsorted(self.offsets, start, side="right") - 1)
        parts = []
        s = first
        while s < len(self.shards) and self.offsets[s] < stop:
            a = max(start, int(self.offsets[s])) - int(self.offsets[s])
            b = min(stop, int(self.offsets[s + 1])) - int(self.offsets[s])
            if b > a:
                parts.append(self.shards[s].block(a, b))
            s += 1
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def docids_of(self, rows: np.ndarray) -> np.ndarray:
        """The docids (``str``) of global ``rows`` (any shape; ``""`` where a row is ``-1``), read only for those rows.

        Example:
            >>> index = CorpusIndex.from_arrays(np.zeros((2, 4)), ["x", "y"])
            >>> index.docids_of(np.array([[1, 0]])).tolist()
            [['y', 'x']]
        """
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        out = np.full(flat.shape, "", dtype=object)
        valid = flat >= 0
        if valid.any():
            if flat.max() >= len(self):
                raise IndexError(f"row {int(flat.max())} is beyond the index's {len(self)} rows")
            shard_of = np.searchsorted(self.offsets, flat, side="right") - 1
            for s in np.unique(shard_of[valid]):
                sel = np.nonzero(valid & (shard_of == s))[0]
                local = flat[sel] - self.offsets[s]
                out[sel] = np.char.decode(np.asarray(self.shards[s].docid_bytes[local]), "utf-8")
        return out.astype(str).reshape(rows.shape)

    def docid_bytes(self) -> np.ndarray:
        """Every docid as one ``S`` array in row order (compact: about ``len(docid)`` bytes a row)."""
        width = max((s.docid_bytes.dtype.itemsize for s in self.shards), default=1)
        return np.concatenate([np.asarray(s.docid_bytes).astype(f"S{width}") for s in self.shards]) if self.shards \
            else np.zeros(0, dtype="S1")

    @classmethod
    def open(cls, output_dir: str | Path) -> CorpusIndex:
        """The finished index in ``output_dir`` (written by :func:`~sentence_transformers_hybrid.index.encode_corpus`).

        Raises ``FileNotFoundError`` naming the folder when it holds no index, and ``ValueError`` naming the first
        shard that is missing or unfinished.
        """
        parts, info = read_index(Path(output_dir))
        return cls([Shard(*p) for p in parts], path=Path(output_dir), info=info)
