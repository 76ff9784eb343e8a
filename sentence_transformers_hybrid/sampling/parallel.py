"""A translation of each training question, for the parallel-query consistency term
(:class:`~sentence_transformers_hybrid.losses.ParallelConsistencyLoss`): :func:`parallel_query_dataset`,
:class:`ParallelQueryResolver`, :func:`parallel_query_rows`.

A parallel corpus (XQuAD-R: 11-way) holds each question in several languages. For the pair ``(group g, query
language X, passage language Y)`` the column :data:`PARALLEL_QUERY_COLUMN` holds the question of ``g`` in a language
``Z != X`` of the group, chosen from ``(seed, pair id)`` alone (a hash, not an RNG stream): the same pair gets the same
translation in every epoch, on every process, whatever the batch. ``Z`` is uniform over the group's other languages
and may be ``Y``. A group in one language has no translation: its column repeats the question (the term is 0 there).

The rows, the passages and so the batch's candidates (in-batch negatives) are those of ``corpus.to_dataset()``:
:class:`HybridBatchSampler` draws the same batches from both datasets (the resolver is a ``PairResolver``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..data.pair_dataset import PAIR_COLUMN, PairLayout, PairResolver, pair_layout, training_dataset

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

    from ..data import ParallelCorpus

__all__ = ["PARALLEL_QUERY_COLUMN", "ParallelQueryResolver", "parallel_query_dataset", "parallel_query_rows"]

PARALLEL_QUERY_COLUMN = "query_parallel"

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(seed: int, values: np.ndarray) -> np.ndarray:
    """SplitMix64 of ``(seed, value)``: uint64 hashes, vectorised, the same on every platform."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _MASK64


def parallel_query_rows(layout: PairLayout, pair_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """The corpus row of the translated question of each pair: another language of the pair's group, chosen from
    ``(seed, pair id)`` (the pair's own query row where the group has one language).

    Example::

        >>> from sentence_transformers_hybrid import ParallelCorpus
        >>> from sentence_transformers_hybrid.data.pair_dataset import pair_layout
        >>> corpus = ParallelCorpus.from_records([{"group": "q1", "lang": lang, "query": f"who {lang}", "passage": "p"}
        ...                                       for lang in ("de", "en", "fr")])
        >>> layout = pair_layout(corpus)
        >>> query_rows, _ = layout.rows(np.arange(9))
        >>> rows = parallel_query_rows(layout, np.arange(9), seed=0)
        >>> bool((rows != query_rows).all()), [corpus.queries[r] for r in rows[:3]]
        (True, ['who en', 'who fr', 'who fr'])
    """
    p = np.asarray(pair_ids, dtype=np.int64)
    g, x_lang, _ = layout.decode(p)
    n = layout.n_lang[g]
    x_rank = layout.lang_rank[g, x_lang].astype(np.int64)
    others = np.maximum(n - 1, 1).astype(np.uint64)
    step = 1 + (_mix(seed, p) % others).astype(np.int64)
    z_rank = np.where(n > 1, (x_rank + step) % n, x_rank)
    z_lang = layout.cell_lang[layout.cell_start[g] + z_rank].astype(np.int64)
    return layout.row_index[g, z_lang]


class ParallelQueryResolver(PairResolver):
    """:class:`PairResolver` that also gives :data:`PARALLEL_QUERY_COLUMN` (see :func:`parallel_query_rows`)."""

    def __init__(self, corpus: ParallelCorpus, layout: PairLayout, seed: int = 0) -> None:
        super().__init__(corpus, layout)
        self.seed = int(seed)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = super().__call__(batch)
        rows = parallel_query_rows(self.layout, np.asarray(batch[PAIR_COLUMN], dtype=np.int64), self.seed)
        out[PARALLEL_QUERY_COLUMN] = self.queries.take(pa.array(rows)).to_pylist()
        return out

    def __repr__(self) -> str:
        return (f"ParallelQueryResolver(pairs={self.layout.num_pairs}, signature={self.layout.signature}, "
                f"seed={self.seed})")


def parallel_query_dataset(corpus: ParallelCorpus, seed: int = 0) -> Dataset:
    """``corpus.to_dataset()`` whose rows also hold :data:`PARALLEL_QUERY_COLUMN`: ``{"query", "passage",
    "query_parallel"}``, for :class:`~sentence_transformers_hybrid.losses.ParallelConsistencyLoss` (which takes the
    last column as the translation). Give the trainer the query prompt for that column too
    (``prompts={"query": p, "passage": q, "query_parallel": p}``).

    Example::

        >>> from sentence_transformers_hybrid import ParallelCorpus
        >>> corpus = ParallelCorpus.from_records([
        ...     {"group": "q1", "lang": "en", "query": "Who wrote Faust?", "passage": "Goethe wrote Faust."},
        ...     {"group": "q1", "lang": "de", "query": "Wer schrieb Faust?", "passage": "Goethe schrieb Faust."},
        ... ])
        >>> parallel_query_dataset(corpus, seed=0)[1]
        {'query': 'Wer schrieb Faust?', 'passage': 'Goethe wrote Faust.', 'query_parallel': 'Who wrote Faust?'}
    """
    dataset = training_dataset(corpus)
    return dataset.with_transform(ParallelQueryResolver(corpus, pair_layout(corpus), seed=seed))
