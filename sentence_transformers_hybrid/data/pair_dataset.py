"""The pair index of a :class:`~sentence_transformers_hybrid.data.ParallelCorpus` and the training dataset over it.

The stock collator tokenizes every column of a row, so the training dataset carries no metadata columns. Instead
:func:`training_dataset` (= ``ParallelCorpus.to_dataset()``) returns a ``datasets.Dataset`` with one row per *pair*
``(group, query language, passage language)`` that the corpus can form, and a ``with_transform`` resolver
(:class:`PairResolver`) turns a row into ``{"query": ..., "passage": ...}`` texts at load time, so the collator, the
prompts (``{"query": "Query: ", "passage": "Passage: "}``) and the loss see ordinary text pairs.
:class:`PairLayout` is the integer index both this dataset and the sampler
(:mod:`sentence_transformers_hybrid.sampling`) work on.

This lives in the data layer, not in ``sampling/``, because ``ParallelCorpus.to_dataset()`` returns it and the data
layer imports nothing above it. It reads a corpus through :class:`GroupedRows` (what it needs of one), so it does not
import :mod:`.corpus`, which imports it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import weakref
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

PAIR_COLUMN = "pair_id"

__all__ = [
    "PAIR_COLUMN", "GroupedRows", "PairLayout", "PairResolver", "dataset_resolver", "is_unchanged_pair_dataset",
    "pair_layout", "training_dataset",
]


class GroupedRows(Protocol):
    """What the pair index reads of a corpus (:class:`~sentence_transformers_hybrid.data.ParallelCorpus` has it all).

    ``row_index`` and ``group_source`` must not change after the layout is built (``ParallelCorpus`` makes them
    read-only arrays); the layout cache of :func:`pair_layout` is keyed on these two arrays and on the names.
    """

    groups: list[str]
    languages: list[str]
    sources: list[str]

    @property
    def row_index(self) -> np.ndarray:
        """int64 ``[groups, languages]``: row id of each (group, language), ``-1`` where missing."""

    @property
    def group_source(self) -> np.ndarray:
        """int64 ``[groups]``: index into ``sources`` of each group."""

    @property
    def query_column(self) -> pa.Array | pa.ChunkedArray:
        """Query texts by row id."""

    @property
    def passage_column(self) -> pa.Array | pa.ChunkedArray:
        """Passage texts by row id."""

    def __len__(self) -> int:
        """Number of groups."""


class PairLayout:
    """The integer index shared by :func:`training_dataset` and :class:`HybridBatchSampler`.

    Pairs are numbered group by group: group ``g`` with ``n_g`` languages owns the ``n_g * n_g`` pair ids
    ``pair_offset[g] + x * n_g + y`` where ``x``/``y`` are ranks among the group's languages (query / passage).
    Every id in ``[0, num_pairs)`` is a valid pair, so every dataset row resolves. Memory: O(groups + rows).
    """

    def __init__(self, corpus: GroupedRows) -> None:
        row_index = np.asarray(corpus.row_index)
        if row_index.ndim != 2 or row_index.shape[0] == 0 or row_index.shape[1] == 0:
            raise ValueError(f"the corpus is empty: row_index has shape {row_index.shape}")
        mask = row_index >= 0
        self.num_groups, self.num_languages = mask.shape
        self.languages = list(corpus.languages)
        self.sources = list(corpus.sources)
        self.group_source = np.asarray(corpus.group_source, dtype=np.int64)
        self.mask = mask
        self.n_lang = mask.sum(axis=1).astype(np.int64)
        if (self.n_lang == 0).any():
            g = int(np.flatnonzero(self.n_lang == 0)[0])
            raise ValueError(f"group {corpus.groups[g]!r} has no language in row_index")
        li = np.flatnonzero(mask) % self.num_languages  # row-major: cells sorted by (group, language)
        self.cell_start = np.concatenate([[0], np.cumsum(self.n_lang)]).astype(np.int64)
        self.cell_lang = li.astype(np.int16 if self.num_languages < 2**15 else np.int64)
        self.row_index = row_index  # the corpus's own array, shared (not copied)
        self.pair_offset = np.concatenate([[0], np.cumsum(self.n_lang * self.n_lang)]).astype(np.int64)
        self.num_pairs = int(self.pair_offset[-1])
        # language set of each group (its row of the mask), as an id into set_masks
        if self.num_languages <= 62:
            keys = np.zeros(self.num_groups, dtype=np.int64)
            for lang in range(self.num_languages):  # a loop over languages, not rows
                keys |= mask[:, lang].astype(np.int64) << lang
            uniq, set_id = np.unique(keys, return_inverse=True)
            self.set_masks = ((uniq[:, None] >> np.arange(self.num_languages)) & 1).astype(bool)
        else:
            uniq, set_id = np.unique(np.packbits(mask, axis=1), axis=0, return_inverse=True)
            self.set_masks = np.unpackbits(uniq, axis=1, count=self.num_languages).astype(bool)
        self.set_id = set_id.reshape(-1).astype(np.int32)
        # rank of each present language among its group's languages (-1 where absent)
        rank_dtype = np.int8 if self.num_languages < 128 else np.int32
        self.lang_rank = np.where(mask, np.cumsum(mask, axis=1, dtype=rank_dtype) - 1, -1).astype(rank_dtype)
        self.signature = _signature(row_index, self.group_source, self.languages, self.sources)
        self._source_arrays = (corpus.row_index, corpus.group_source)  # what describes() compares by identity

    def describes(self, corpus: GroupedRows) -> bool:
        """Whether this layout is still the index of ``corpus``: the same read-only ``row_index`` and ``group_source``
        arrays it was built from (a frozen array cannot have changed), else the same content, and the same
        language and source names."""
        if list(corpus.languages) != self.languages or list(corpus.sources) != self.sources:
            return False
        rows, src = corpus.row_index, corpus.group_source
        if (rows is self._source_arrays[0] and src is self._source_arrays[1]
                and not _writeable(rows) and not _writeable(src)):
            return True
        return _signature(rows, src, self.languages, self.sources) == self.signature

    # -- pair ids <-> (group, query language, passage language)
    def pair_ids(self, groups: np.ndarray, x_rank: np.ndarray, y_rank: np.ndarray) -> np.ndarray:
        """Pair ids of (group, query-language rank, passage-language rank) triples (ranks among the group's languages)."""
        n = self.n_lang[groups]
        return self.pair_offset[groups] + x_rank * n + y_rank

    def decode(self, pair_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(group, query language, passage language) of each pair id; languages index ``corpus.languages``."""
        p = np.asarray(pair_ids, dtype=np.int64)
        if p.size and (p.min() < 0 or p.max() >= self.num_pairs):
            bad = int(p[(p < 0) | (p >= self.num_pairs)][0])
            raise IndexError(f"pair id {bad} outside [0, {self.num_pairs})")
        g = np.searchsorted(self.pair_offset, p, side="right") - 1
        n = self.n_lang[g]
        q = p - self.pair_offset[g]
        start = self.cell_start[g]
        return g, self.cell_lang[start + q // n].astype(np.int64), self.cell_lang[start + q % n].astype(np.int64)

    def rows(self, pair_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query row id, passage row id) of each pair id."""
        p = np.asarray(pair_ids, dtype=np.int64)
        g = np.searchsorted(self.pair_offset, p, side="right") - 1
        n = self.n_lang[g]
        q = p - self.pair_offset[g]
        start = self.cell_start[g]
        qlang, plang = self.cell_lang[start + q // n], self.cell_lang[start + q % n]
        return self.row_index[g, qlang], self.row_index[g, plang]

    def nbytes(self) -> int:
        """Bytes held by the index arrays (the corpus's own ``row_index`` excluded)."""
        arrays = (self.mask, self.n_lang, self.cell_start, self.cell_lang, self.pair_offset,
                  self.set_id, self.set_masks, self.lang_rank)
        return int(sum(a.nbytes for a in arrays))


def _writeable(array: Any) -> bool:
    return not isinstance(array, np.ndarray) or bool(array.flags.writeable)


def _signature(row_index: Any, group_source: Any, languages: list[str], sources: list[str]) -> str:
    """A digest of the pair index's content: the two arrays (as int64) and the names."""
    digest = hashlib.blake2b(digest_size=8)
    for arr in (row_index, group_source):
        digest.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    digest.update(json.dumps([list(languages), list(sources)]).encode())
    return digest.hexdigest()


_LAYOUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pair_layout(corpus: GroupedRows) -> PairLayout:
    """The (cached) :class:`PairLayout` of ``corpus``, rebuilt when it no longer describes it
    (:meth:`PairLayout.describes`: free for a :class:`~sentence_transformers_hybrid.data.ParallelCorpus`, whose
    arrays are read-only; a content digest for a corpus with writeable ones)."""
    layout = _LAYOUTS.get(corpus)
    if layout is None or not layout.describes(corpus):
        layout = PairLayout(corpus)
        _LAYOUTS[corpus] = layout
    return layout


class PairResolver:
    """The ``with_transform`` of :func:`training_dataset`: pair-id columns -> ``{"query", "passage"}`` texts.

    Holds the layout and the corpus's two Arrow text arrays only (not the corpus object), so it pickles quickly
    for DataLoader workers.
    """

    def __init__(self, corpus: GroupedRows, layout: PairLayout) -> None:
        self.queries = corpus.query_column
        self.passages = corpus.passage_column
        self.layout = layout

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        q_rows, p_rows = self.layout.rows(np.asarray(batch[PAIR_COLUMN], dtype=np.int64))
        return {
            "query": self.queries.take(pa.array(q_rows)).to_pylist(),
            "passage": self.passages.take(pa.array(p_rows)).to_pylist(),
        }

    def __repr__(self) -> str:  # used by datasets' fingerprinting and the model card: keep it short
        return f"PairResolver(pairs={self.layout.num_pairs}, signature={self.layout.signature})"


def training_dataset(corpus: GroupedRows) -> Dataset:
    """The ``train_dataset`` to pair with :class:`~sentence_transformers_hybrid.HybridBatchSampler`: one row per
    (group, query language, passage language) the corpus can form.

    Rows read as ``{"query": str, "passage": str}`` (a ``with_transform`` resolves them), so the stock collator,
    ``prompts={"query": ..., "passage": ...}`` and the stock losses work unchanged. Every row resolves to a valid pair
    (the model-card callback reads rows at start-up), but the sampler alone decides which rows a batch holds: with a
    stock sampler you would train on all n x n language pairs of every group, translations sharing batches.

    Storage: one plain int64 column ``pair_id`` (row ``i`` holds ``i``), 8 bytes a pair: XQuAD-R's 144k pairs take
    1.2 MB, 10M pairs 80 MB (``python benchmarks/bench_corpus.py`` measures building it at 10M pairs).

    Example::

        >>> from sentence_transformers_hybrid import ParallelCorpus
        >>> corpus = ParallelCorpus.from_records([
        ...     {"group": "q1", "lang": "en", "query": "Who wrote Faust?", "passage": "Goethe wrote Faust."},
        ...     {"group": "q1", "lang": "de", "query": "Wer schrieb Faust?", "passage": "Goethe schrieb Faust."},
        ... ])
        >>> ds = corpus.to_dataset()
        >>> len(ds), ds[1]
        (4, {'query': 'Wer schrieb Faust?', 'passage': 'Goethe wrote Faust.'})
    """
    from datasets import Dataset
    from datasets.table import InMemoryTable

    layout = pair_layout(corpus)
    table = pa.table({PAIR_COLUMN: pa.array(np.arange(layout.num_pairs, dtype=np.int64))})
    # an explicit fingerprint: datasets would otherwise hash the whole column
    dataset = Dataset(InMemoryTable(table), fingerprint=f"hybrid-pairs-{layout.signature}")
    return dataset.with_transform(PairResolver(corpus, layout))


def dataset_resolver(dataset: Any) -> PairResolver | None:
    """The PairResolver behind ``dataset``'s transform, also through the trainer's ``add_dataset_name_transform``."""
    fmt = getattr(dataset, "format", None)
    if not isinstance(fmt, dict) or fmt.get("type") != "custom":
        return None
    transform = fmt.get("format_kwargs", {}).get("transform")
    for _ in range(4):
        if isinstance(transform, PairResolver):
            return transform
        if isinstance(transform, functools.partial):
            transform = transform.keywords.get("transform")
        else:
            return None
    return None


def is_unchanged_pair_dataset(dataset: Any, layout: PairLayout, probes: int = 4096) -> bool:
    """Whether ``dataset`` still is ``to_dataset()`` as made: ``num_pairs`` rows and row ``i`` holding pair ``i``.

    A filtered, selected, shuffled or split dataset (``datasets`` keeps an indices mapping for those) fails:
    the length, then the pair ids at ``probes`` evenly spread rows (read through the public formatting API, so the
    mapping applies) are compared; a shuffle moves every one of them with near certainty.
    """
    n = len(dataset)
    if n != layout.num_pairs:
        return False
    if n == 0:
        return True
    rows = np.unique(np.linspace(0, n - 1, min(n, probes)).astype(np.int64))
    raw = dataset.with_format("numpy", columns=[PAIR_COLUMN])
    ids = np.asarray(raw[rows][PAIR_COLUMN], dtype=np.int64)
    return bool(np.array_equal(ids, rows))
