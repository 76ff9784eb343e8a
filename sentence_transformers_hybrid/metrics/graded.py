"""Cutoff metrics of ranked lists under graded relevance, as trec_eval computes them: pure numpy, no I/O.

A search engine (:mod:`sentence_transformers_hybrid.index`) returns each query's first ``K`` documents, never a
score row over the whole corpus; these functions score such ranked lists against graded qrels. Gains are the grades
themselves (trec_eval's and so BEIR's / pytrec_eval's ``ndcg_cut``: linear gain, ``log2(rank + 1)`` discount, the
ideal ranking built from every judged grade of the query); a document is relevant when its grade is > 0 (trec_eval's
relevance level 1), so ``recall@k``, ``precision@k``, ``mrr@k``, ``accuracy@k`` and ``map@k`` count it whatever its
grade. ``map@k`` is LAReQA's (``1 / min(|R|, k)``, as :func:`~sentence_transformers_hybrid.metrics.ranking_metrics`);
with binary grades every figure equals :func:`~sentence_transformers_hybrid.metrics.ranking_metrics` on the same
ranking.

Example:
    >>> import numpy as np, scipy.sparse as sp
    >>> top = np.array([[2, 0, 1]])                      # the ranking of one query: documents 2, 0, 1
    >>> grades = sp.csr_matrix(np.array([[2, 0, 1]]))    # document 0 has grade 2, document 2 grade 1
    >>> m = ranked_list_metrics(top, grades, ["ndcg@2", "recall@1", "mrr@10"])
    >>> [round(float(v[0]), 4) for v in m.values()]
    [0.8597, 0.5, 1.0]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["RANKED_LIST_METRICS", "parse_cutoff_metrics", "ranked_list_metrics"]

#: The metric families :func:`ranked_list_metrics` computes (each as ``name@k``).
RANKED_LIST_METRICS: tuple[str, ...] = ("ndcg", "recall", "precision", "accuracy", "mrr", "map")
_METRIC_RE = re.compile(r"^(%s)@([1-9][0-9]*)$" % "|".join(RANKED_LIST_METRICS))


def parse_cutoff_metrics(metrics: Sequence[str]) -> list[tuple[str, int]]:
    """``[(family, k), ...]`` of names like ``"ndcg@10"``; anything else raises naming it.

    Example:
        >>> parse_cutoff_metrics(["ndcg@10", "recall@100"])
        [('ndcg', 10), ('recall', 100)]
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    out = []
    for name in metrics:
        match = _METRIC_RE.match(str(name))
        if match is None:
            raise ValueError(
                f"metric {name!r} is not a cutoff metric of a ranked list; use one of "
                f"{', '.join(f'{m}@k' for m in RANKED_LIST_METRICS)} (full-ranking 'map' and 'rank_distance' need "
                "every score of a query: ranking_metrics)"
            )
        out.append((match.group(1), int(match.group(2))))
    if not out:
        raise ValueError("no metric asked for")
    return out


def ranked_list_metrics(top: Any, grades: Any, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-query float64 values of cutoff metrics for ranked lists under graded relevance.

    Args:
        top: int ``[queries x K]``: each query's ranked document columns, best first; ``-1`` pads a list shorter
            than ``K`` (a corpus smaller than ``K``). A cutoff beyond ``K`` sees the ``K`` documents there are.
        grades: ``scipy.sparse`` ``[queries x documents]`` of grades (or a dense array); > 0 is relevant, the
            grade is the gain. Every query needs at least one relevant document.
        metrics: names ``family@k`` (:data:`RANKED_LIST_METRICS`), returned in this order.

    Returns:
        ``{metric: float64 array [queries]}``.
    """
    import scipy.sparse as sp

    parsed = parse_cutoff_metrics(metrics)
    top = np.asarray(top, dtype=np.int64)
    if top.ndim != 2:
        raise ValueError(f"top must be [queries x K], got shape {top.shape}")
    g = sp.csr_matrix(grades, dtype=np.float64)
    g.sum_duplicates()
    if g.shape[0] != top.shape[0]:
        raise ValueError(f"grades has {g.shape[0]} queries but top has {top.shape[0]}")
    if top.size and top.max() >= g.shape[1]:
        raise ValueError(f"top holds column {int(top.max())} but grades has {g.shape[1]} documents")
    g.data = np.where(g.data > 0, g.data, 0.0)  # grades <= 0 are judged non-relevant: no gain
    g.eliminate_zeros()
    n_q, k_top = top.shape
    n_rel = np.diff(g.indptr).astype(np.float64)
    if n_q and (n_rel == 0).any():
        raise ValueError(f"query {int(np.flatnonzero(n_rel == 0)[0])} has no relevant document")

    present = top >= 0
    rows = np.repeat(np.arange(n_q), k_top)
    gain = np.asarray(g[rows, np.where(present, top, 0).ravel()]).reshape(n_q, k_top)
    gain = np.where(present, gain, 0.0)
    hit = gain > 0
    cum = np.cumsum(hit, axis=1, dtype=np.float64)
    ranks = np.arange(1, k_top + 1, dtype=np.float64)

    k_max = max(k for _, k in parsed)
    ideal_cum = _ideal_dcg(g, k_max)

    out: dict[str, np.ndarray] = {}
    for family, k in parsed:
        kk = min(k, k_top)
        found = cum[:, kk - 1] if kk else np.zeros(n_q)
        if family == "ndcg":
            dcg = (gain[:, :kk] / np.log2(ranks[:kk] + 1.0)).sum(1)
            out[f"ndcg@{k}"] = dcg / ideal_cum[:, k - 1]
        elif family == "recall":
            out[f"recall@{k}"] = found / n_rel
        elif family == "precision":
            out[f"precision@{k}"] = found / k
        elif family == "accuracy":
            out[f"accuracy@{k}"] = (found > 0).astype(np.float64)
        elif family == "mrr":
            h = hit[:, :kk]
            first = np.where(h.any(1), h.argmax(1) + 1, 0)
            out[f"mrr@{k}"] = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
        else:  # map@k, LAReQA's normalisation
            prec = np.where(hit[:, :kk], cum[:, :kk] / ranks[:kk], 0.0)
            out[f"map@{k}"] = prec.sum(1) / np.minimum(n_rel, k)
    return out


def _ideal_dcg(g: Any, k_max: int) -> np.ndarray:
    """``[queries x k_max]``: the cumulative DCG of the ideal ranking (every judged gain, largest first)."""
    n_q = g.shape[0]
    counts = np.diff(g.indptr)
    width = max(int(counts.max()) if n_q else 0, k_max)
    padded = np.zeros((n_q, width))
    pos = np.arange(len(g.data)) - np.repeat(g.indptr[:-1], counts)
    padded[np.repeat(np.arange(n_q), counts), pos] = g.data
    best = -np.sort(-padded, axis=1)[:, :k_max]
    return np.cumsum(best / np.log2(np.arange(2, k_max + 2, dtype=np.float64)), axis=1)
