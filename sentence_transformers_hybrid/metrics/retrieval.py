"""Retrieval metrics on score matrices: pure functions, no models, no I/O.

The kernel ranks every document of every query under one total order, *descending score, ties broken
by the lower document index*, and computes rank-based metrics from it without sorting whole rows:

* the top ``K`` documents per query (``K`` = the largest cutoff asked for) come from ``torch.topk``,
  re-selected for the rare rows whose ``K``-th score is tied, so that the ``K`` kept are exactly the
  first ``K`` of the total order;
* the full-ranking rank of a single document ``j`` of query ``q`` is counted, never sorted:
  ``rank = #{s > s_j} + #{s == s_j and index < j} + 1``. ``rank_distance`` needs it only for the best
  and the worst relevant document of each query.

Queries are processed in chunks of about ``2**21`` scores, so that a ``20k x 20k`` score matrix needs a
few tens of MB of working memory besides itself (it is never copied); metric values are computed in
float64.

Definitions (binary relevance, ``R`` = the relevant documents of a query, ``rel_i`` = 1 when the
document at rank ``i`` is relevant):

* ``map@k`` -- LAReQA's mean average precision: ``AP@k = 1 / min(|R|, k) * sum_{i <= k, rel_i} P@i``.
  trec_eval's ``map_cut_k`` divides by ``|R|`` instead; both agree when ``|R| <= k``.
* ``map`` -- mean average precision over the **full** ranking (no cutoff; LAReQA's original figure):
  ``AP = 1 / |R| * sum_{d in R} P@rank(d)``; with the ranks of the relevant documents sorted,
  ``r_1 < ... < r_|R|``, ``AP = 1 / |R| * sum_j j / r_j``. trec_eval's (and BEIR's) ``map`` over the whole run.
* ``recall@k`` = ``|R in top k| / |R|``; ``precision@k`` = ``|R in top k| / k``;
  ``accuracy@k`` = 1 when at least one relevant document is in the top ``k``.
* ``ndcg@k`` -- binary gains, ``log2`` discount: ``sum_{i <= k} rel_i / log2(i + 1)`` divided by the
  same sum for an ideal ranking (``min(|R|, k)`` relevant documents first).
* ``mrr@k`` -- ``1 / rank`` of the first relevant document if it is within the top ``k``, else 0.
* ``rank_distance`` -- the language-bias measure of Huang et al. (2023), KD-SPD as used by Elmahdy et
  al. (2024): the rank of the lowest-ranked relevant document minus the rank of the highest-ranked
  one, in the full ranking (1-based; 0 for a single relevant document).

``map`` needs the full-ranking rank of every relevant document: those in the top ``K`` have it for free, the
others of a row are counted in one sweep over the row (one compare per relevant document); ``rank_distance`` then
comes from the same ranks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .bias import rank_distance_rows
from .ranking import BLOCK, BLOCK_MIN_DOCS, ranks_of, top_k

__all__ = [
    "LAREQA_METRICS",
    "MIRACL_METRICS",
    "check_finite_scores",
    "max_cutoff",
    "merge_top_k",
    "ranking_metrics",
    "relevant_ranks",
    "retrieval_metrics",
    "top_k_indices",
]

#: The metrics of :func:`retrieval_metrics`, in the order they are returned.
LAREQA_METRICS: tuple[str, ...] = ("map@20", "recall@1", "recall@10", "ndcg@10", "mrr@10", "rank_distance")
#: The metrics of the MIRACL table (Zhang et al., 2023).
MIRACL_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100")

_CUTOFF_METRICS = ("map", "recall", "precision", "accuracy", "ndcg", "mrr")
_METRIC_RE = re.compile(r"^(%s)@([1-9][0-9]*)$" % "|".join(_CUTOFF_METRICS))

#: Scores per query chunk: small enough for the repeated passes over a chunk to hit the CPU cache
#: (measured 3x faster than 256 MB chunks on a 13k x 13k matrix), large enough to amortise Python.
_CHUNK_ELEMENTS = 2**21


def retrieval_metrics(
    scores: Any,
    relevance: Any,
    *,
    chunk_size: int | None = None,
    reduction: str = "mean",
) -> dict[str, Any]:
    """LAReQA retrieval metrics of a score matrix, averaged over queries.

    Args:
        scores: ``[queries x documents]`` float array or tensor (numpy, torch; any float dtype, any
            device); higher is better. It is read chunk by chunk and never copied whole.
        relevance: binary relevance of the same shape: a dense bool (or 0/1) array or tensor, a
            ``scipy.sparse`` matrix or a torch sparse (COO or CSR) tensor.
        chunk_size: queries per chunk; by default ``max(16, 2**21 // documents)`` (about 8 MB of float32
            scores plus their temporaries, which keeps the passes over a chunk in the CPU cache).
        reduction: ``"mean"`` (floats averaged over queries) or ``"none"`` (float64 numpy arrays with
            one value per query).

    Returns:
        ``{"map@20", "recall@1", "recall@10", "ndcg@10", "mrr@10", "rank_distance"}``; see the module
        docstring for the definitions. Ties are broken by the lower document index.

    Raises:
        ValueError: on NaN or infinite scores, a query without any relevant document, shapes that
            differ, or a relevance that is not binary.

    Example:
        >>> import numpy as np
        >>> scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.7]])
        >>> relevance = np.array([[False, True, True], [True, False, True]])
        >>> m = retrieval_metrics(scores, relevance)
        >>> round(m["map@20"], 4), m["recall@1"], m["mrr@10"], m["rank_distance"]
        (0.5833, 0.0, 0.5, 1.0)
    """
    return ranking_metrics(scores, relevance, LAREQA_METRICS, chunk_size=chunk_size, reduction=reduction)


def ranking_metrics(
    scores: Any,
    relevance: Any,
    metrics: Sequence[str] = LAREQA_METRICS,
    *,
    chunk_size: int | None = None,
    reduction: str = "mean",
    check_finite: bool = True,
    top_indices: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Any set of rank-based metrics of a score matrix (the general form of :func:`retrieval_metrics`).

    Args:
        scores: ``[queries x documents]`` float array or tensor, higher is better.
        relevance: binary relevance of the same shape, dense or sparse (see :func:`retrieval_metrics`).
        metrics: names among ``map@k``, ``recall@k``, ``precision@k``, ``accuracy@k``, ``ndcg@k``,
            ``mrr@k`` (any positive ``k``), ``map`` (full ranking) and ``rank_distance``; returned in this order.
        chunk_size: queries per chunk (default: ``max(16, 2**21 // documents)``).
        reduction: ``"mean"`` or ``"none"`` (per-query float64 numpy arrays).
        check_finite: raise on NaN/inf scores (two cheap reductions per chunk); a caller that has already
            checked the same scores may turn it off.
        top_indices: optional precomputed ``[queries x >= K]`` int64 indices of the first ``K`` documents of
            each query in the kernel's order (``K`` = the largest cutoff, at most the number of documents), as
            returned by :func:`top_k_indices` or :func:`merge_top_k`; skips the top-k selection.

    Returns:
        ``{metric: value}``.

    Example:
        >>> import numpy as np
        >>> scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.7]])
        >>> relevance = np.array([[False, True, True], [True, False, True]])
        >>> ranking_metrics(scores, relevance, ["recall@2", "precision@1"])
        {'recall@2': 0.5, 'precision@1': 0.0}
        >>> ranking_metrics(scores, relevance, ["map@1", "map"])   # query 2: relevant at ranks 2 and 3
        {'map@1': 0.0, 'map': 0.5833333333333333}
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    parsed = _parse_metrics(metrics)
    scores_t = as_score_tensor(scores)
    n_queries, n_docs = scores_t.shape
    rel = _Relevance(relevance, (n_queries, n_docs))
    if n_queries == 0:
        raise ValueError("scores has no queries (shape %s)" % (tuple(scores_t.shape),))
    if n_docs == 0:
        raise ValueError("scores has no documents (shape %s)" % (tuple(scores_t.shape),))

    cutoffs = [k for _, k in parsed if k is not None]
    top_k = min(max(cutoffs), n_docs) if cutoffs else 0
    want_distance = any(name == "rank_distance" for name, _ in parsed)
    want_ranks = ("map", None) in parsed
    if chunk_size is None:
        chunk_size = max(16, _CHUNK_ELEMENTS // n_docs)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if top_indices is not None:
        top_indices = torch.as_tensor(top_indices)
        if top_indices.ndim != 2 or top_indices.shape[0] != n_queries or top_indices.shape[1] < top_k:
            raise ValueError(
                f"top_indices has shape {tuple(top_indices.shape)}, expected ({n_queries}, >= {top_k})"
            )

    out: dict[str, list[np.ndarray]] = {_name(m): [] for m in parsed}
    for start in range(0, n_queries, chunk_size):
        stop = min(start + chunk_size, n_queries)
        chunk = scores_t[start:stop]
        if check_finite:
            _check_finite(chunk, start)
        rel_cols, n_rel = rel.chunk(start, stop, device=chunk.device)
        empty = torch.nonzero(n_rel == 0).flatten()
        if len(empty):
            raise ValueError(
                f"query {start + int(empty[0])} has no relevant document "
                f"({len(empty)} such queries in rows {start}..{stop - 1}); every query needs at least one"
            )
        top = None if top_indices is None else top_indices[start:stop, :top_k].to(chunk.device, torch.int64)
        values = _chunk_metrics(chunk, rel_cols, n_rel, parsed, top_k, want_distance, top, want_ranks)
        for key, v in values.items():
            out[key].append(v.cpu().numpy())

    result = {key: np.concatenate(v) for key, v in out.items()}
    if reduction == "none":
        return result
    return {key: float(v.mean(dtype=np.float64)) for key, v in result.items()}


def top_k_indices(scores: Any, k: int, *, chunk_size: int | None = None) -> torch.Tensor:
    """int64 ``[queries x min(k, documents)]``: the first ``k`` documents of each query, in the kernel's order
    (descending score, ties by lower index).

    Example:
        >>> top_k_indices(np.array([[0.1, 0.5, 0.5, 0.9]]), 3)
        tensor([[3, 1, 2]])
    """
    s = as_score_tensor(scores)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, s.shape[1])
    chunk_size = chunk_size or max(16, _CHUNK_ELEMENTS // max(1, s.shape[1]))
    parts = [_top_k(s[a : a + chunk_size], k) for a in range(0, s.shape[0], chunk_size)]
    return torch.cat(parts) if parts else torch.zeros((0, k), dtype=torch.int64)


def merge_top_k(scores: Any, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` documents per query from ``candidates`` ``[queries x C]`` (distinct column indices of
    ``scores`` that include each query's first ``k``, e.g. the concatenated :func:`top_k_indices` of column
    blocks), in the kernel's order.

    Example:
        >>> s = np.array([[0.1, 0.5, 0.5, 0.9]])
        >>> left, right = top_k_indices(s[:, :2], 2), top_k_indices(s[:, 2:], 2) + 2
        >>> merge_top_k(s, torch.cat([left, right], 1), 3)
        tensor([[3, 1, 2]])
    """
    s = as_score_tensor(scores)
    cand = torch.sort(torch.as_tensor(candidates, dtype=torch.int64).to(s.device), dim=1).values
    if k > cand.shape[1]:
        raise ValueError(f"k = {k} but only {cand.shape[1]} candidates per query")
    return cand.gather(1, _top_k(s.gather(1, cand), k))


# --------------------------------------------------------------------------------------------- input


def _parse_metrics(metrics: Sequence[str]) -> list[tuple[str, int | None]]:
    if isinstance(metrics, str):
        metrics = [metrics]
    parsed: list[tuple[str, int | None]] = []
    for m in metrics:
        if m in ("rank_distance", "map"):
            parsed.append((m, None))
            continue
        match = _METRIC_RE.match(m)
        if match is None:
            raise ValueError(
                f"unknown metric {m!r}: expected rank_distance, map or one of "
                f"{', '.join(n + '@k' for n in _CUTOFF_METRICS)} with k >= 1"
            )
        parsed.append((match.group(1), int(match.group(2))))
    if not parsed:
        raise ValueError("metrics is empty")
    if len({_name(p) for p in parsed}) != len(parsed):
        raise ValueError(f"metrics has duplicates: {list(metrics)}")
    return parsed


def max_cutoff(metrics: Sequence[str]) -> int:
    """The largest ``k`` among ``metric@k`` names (0 when there is none, e.g. only ``rank_distance``)."""
    return max((k for _, k in _parse_metrics(metrics) if k is not None), default=0)


def _name(metric: tuple[str, int | None]) -> str:
    name, k = metric
    return name if k is None else f"{name}@{k}"


def as_score_tensor(scores: Any) -> torch.Tensor:
    """``scores`` as a dense 2-D floating tensor (integers become float64); a clear error for anything else."""
    if isinstance(scores, torch.Tensor):
        t = scores.detach()
        if t.is_sparse or t.layout != torch.strided:
            raise ValueError("scores must be dense (a sparse score tensor was given)")
    else:
        arr = np.asarray(scores)
        if arr.dtype == object:
            raise ValueError("scores must be a numeric [queries x documents] array, got dtype=object")
        t = torch.from_numpy(arr) if arr.dtype.kind == "f" else torch.as_tensor(arr)
    if t.ndim != 2:
        raise ValueError(f"scores must be 2-D [queries x documents], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        if t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"scores must be real numbers, got dtype {t.dtype}")
        t = t.to(torch.float64)  # integer scores: exact in float64 up to 2**53
    return t


def check_finite_scores(scores: torch.Tensor, start: int = 0) -> None:
    """Raise ``ValueError`` naming the first NaN/inf entry of ``scores`` (row numbers offset by ``start``)."""
    _check_finite(scores, start)


def _check_finite(chunk: torch.Tensor, start: int) -> None:
    # amin/amax propagate NaN and reach +-inf: two cheap reductions instead of an isfinite pass
    if bool(torch.isfinite(torch.amin(chunk, 1)).all()) and bool(torch.isfinite(torch.amax(chunk, 1)).all()):
        return
    bad = ~torch.isfinite(chunk)
    row, col = (int(x) for x in torch.nonzero(bad)[0])
    raise ValueError(
        f"scores[{start + row}, {col}] is {float(chunk[row, col])}: scores must be finite "
        f"({int(bad.sum())} non-finite values in rows {start}..{start + chunk.shape[0] - 1})"
    )


class _Relevance:
    """Binary relevance, dense or sparse, served as padded relevant-column lists per query chunk."""

    def __init__(self, relevance: Any, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.dense: torch.Tensor | None = None
        self.indptr: np.ndarray | None = None
        self.indices: np.ndarray | None = None
        try:
            import scipy.sparse as sp
        except ImportError:  # pragma: no cover - scipy comes with sentence-transformers
            sp = None
        if sp is not None and sp.issparse(relevance):
            self._from_csr(relevance.tocsr(), sp)
        elif isinstance(relevance, torch.Tensor) and relevance.layout != torch.strided:
            csr = relevance.detach().cpu()
            csr = csr.coalesce().to_sparse_csr() if csr.layout == torch.sparse_coo else csr.to_sparse_csr()
            self._check_shape(tuple(csr.shape))
            values = csr.values()
            if values.dtype != torch.bool and bool(((values != 0) & (values != 1)).any()):
                raise ValueError("relevance must be binary (0/1 or bool); graded relevance is not supported")
            crow, col = csr.crow_indices().numpy(), csr.col_indices().numpy()
            keep = (values != 0).numpy()
            self._set_lists(crow, col, keep)
        else:
            t = relevance.detach() if isinstance(relevance, torch.Tensor) else torch.as_tensor(np.asarray(relevance))
            self._check_shape(tuple(t.shape))
            if t.dtype != torch.bool:
                if t.is_complex() or bool(((t != 0) & (t != 1)).any()):
                    raise ValueError(
                        f"relevance must be binary (bool or 0/1), got dtype {t.dtype} with other values; "
                        "graded relevance is not supported"
                    )
                t = t != 0
            self.dense = t

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if tuple(shape) != self.shape:
            raise ValueError(f"relevance has shape {tuple(shape)} but scores has shape {self.shape}")

    def _from_csr(self, csr: Any, sp: Any) -> None:
        self._check_shape(csr.shape)
        data = np.asarray(csr.data)
        if data.dtype != bool and np.any((data != 0) & (data != 1)):
            raise ValueError("relevance must be binary (0/1 or bool); graded relevance is not supported")
        if not csr.has_canonical_format:
            csr = csr.copy()
            csr.sum_duplicates()
            data = np.asarray(csr.data)
        self._set_lists(np.asarray(csr.indptr), np.asarray(csr.indices), data != 0)

    def _set_lists(self, indptr: np.ndarray, indices: np.ndarray, keep: np.ndarray) -> None:
        indptr = indptr.astype(np.int64)
        indices = indices.astype(np.int64)
        if not keep.all():  # explicit zeros are not relevant
            row = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))[keep]
            indices = indices[keep]
            indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=len(indptr) - 1))])
        if len(indices) and (indices.min() < 0 or indices.max() >= self.shape[1]):
            raise ValueError(f"relevance has a column index outside 0..{self.shape[1] - 1}")
        self.indptr, self.indices = indptr, indices

    def chunk(self, start: int, stop: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cols [B x Rmax] int64 padded with -1, n_rel [B] int64)`` for queries ``start..stop-1``."""
        if self.dense is not None:
            block = self.dense[start:stop].to(device)
            n_rel = block.sum(1)
            rows, cols = torch.nonzero(block, as_tuple=True)
        else:
            lo, hi = self.indptr[start], self.indptr[stop]
            counts = np.diff(self.indptr[start : stop + 1])
            n_rel = torch.from_numpy(counts).to(device)
            rows = torch.from_numpy(np.repeat(np.arange(stop - start), counts)).to(device)
            cols = torch.from_numpy(self.indices[lo:hi]).to(device)
        n_rel = n_rel.to(torch.int64)
        r_max = int(n_rel.max()) if len(n_rel) else 0
        padded = torch.full((stop - start, max(r_max, 1)), -1, dtype=torch.int64, device=device)
        if len(rows):
            first = torch.cumsum(n_rel, 0) - n_rel  # offset of each row's first entry
            pos = torch.arange(len(rows), device=device) - first[rows]
            padded[rows, pos] = cols
        return padded, n_rel


# -------------------------------------------------------------------------------------------- kernel


#: Largest block width of the block-max pre-selection in :func:`_top_k`; rows of at least
#: ``max(_BLOCK_MIN_DOCS, 4 * k * width)`` documents use it, with the widest power-of-two width that fits.
_BLOCK = BLOCK
_BLOCK_MIN_DOCS = BLOCK_MIN_DOCS


def _top_k(chunk: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B x k]`` of the first ``k`` documents under the package's rule
    (:func:`~sentence_transformers_hybrid.metrics.ranking.top_k`, with this module's block settings)."""
    return top_k(chunk, k, block=_BLOCK, min_docs=_BLOCK_MIN_DOCS)


def _chunk_metrics(
    chunk: torch.Tensor,
    rel_cols: torch.Tensor,
    n_rel: torch.Tensor,
    parsed: list[tuple[str, int | None]],
    top_k: int,
    want_distance: bool,
    top: torch.Tensor | None = None,
    want_ranks: bool = False,
) -> dict[str, torch.Tensor]:
    dev = chunk.device
    n_rel_f = n_rel.to(torch.float64)
    valid = rel_cols >= 0
    hits: torch.Tensor | None = None
    if top_k:
        if top is None:
            top = _top_k(chunk, top_k)  # [B x K]
        # hits[b, i]: the document at rank i + 1 is relevant
        hits = (top[:, :, None] == rel_cols[:, None, :]).any(2)
        hits_f = hits.to(torch.float64)
        cum = torch.cumsum(hits_f, 1)
        ranks = torch.arange(1, top_k + 1, device=dev, dtype=torch.float64)

    rel_ranks = relevant_ranks(chunk, rel_cols, valid, top) if want_ranks else None

    out: dict[str, torch.Tensor] = {}
    for name, k in parsed:
        if name == "rank_distance":
            if rel_ranks is not None:  # the same figure from the ranks already counted for map
                first = torch.where(valid, rel_ranks, torch.iinfo(torch.int64).max).min(1).values
                last = torch.where(valid, rel_ranks, 0).max(1).values
                out[name] = torch.where(n_rel > 1, last - first, 0).to(torch.float64)
            else:
                out[name] = rank_distance_rows(chunk, rel_cols, valid, top).to(torch.float64)
            continue
        if name == "map" and k is None:
            out["map"] = _full_average_precision(rel_ranks, valid, n_rel_f)
            continue
        kk = min(k, top_k)  # cutoffs beyond the number of documents see every document
        h, c = hits_f[:, :kk], cum[:, :kk]
        if name == "map":
            out[f"map@{k}"] = (h * c / ranks[:kk]).sum(1) / torch.clamp(n_rel_f, max=k)
        elif name == "recall":
            out[f"recall@{k}"] = c[:, -1] / n_rel_f
        elif name == "precision":
            out[f"precision@{k}"] = c[:, -1] / k
        elif name == "accuracy":
            out[f"accuracy@{k}"] = (c[:, -1] > 0).to(torch.float64)
        elif name == "ndcg":
            disc = 1.0 / torch.log2(ranks[:kk] + 1.0)
            ideal = torch.cumsum(disc, 0)[torch.clamp(n_rel, max=kk) - 1]
            out[f"ndcg@{k}"] = (h * disc).sum(1) / ideal
        elif name == "mrr":
            first = torch.where(hits[:, :kk].any(1), hits[:, :kk].to(torch.int8).argmax(1) + 1, 0)
            out[f"mrr@{k}"] = torch.where(first > 0, 1.0 / first.clamp(min=1).to(torch.float64), 0.0)
    return out


def relevant_ranks(
    chunk: torch.Tensor, rel_cols: torch.Tensor, valid: torch.Tensor, top: torch.Tensor | None = None
) -> torch.Tensor:
    """Full-ranking 1-based ranks ``[B x R]`` of each row's relevant documents ``rel_cols`` (padded; ``valid`` says
    which entries are real, the others hold 0).

    A document in the row's top ``K`` (``top``, in ranking order) has its rank for free; the rows with a relevant
    document beyond it are counted by :func:`~sentence_transformers_hybrid.metrics.bias.ranks_of`, every relevant
    document of the row in one sweep.

    Example:
        >>> chunk = torch.tensor([[0.1, 0.5, 0.3, 0.9, 0.2]])
        >>> relevant_ranks(chunk, torch.tensor([[1, 4]]), torch.tensor([[True, True]]))
        tensor([[2, 4]])
    """
    safe = rel_cols.clamp(min=0)
    ranks = torch.zeros(rel_cols.shape, dtype=torch.int64, device=chunk.device)
    need = valid.clone()
    if top is not None and top.shape[1]:
        at = top[:, :, None] == safe[:, None, :]  # [B x K x R]
        found = at.any(1) & valid
        pos = at.to(torch.int64).argmax(1) + 1
        ranks = torch.where(found, pos, ranks)
        need &= ~found
    need_row = need.any(1)
    if bool(need_row.all()):  # the usual case: no row copied
        ranks = torch.where(need, ranks_of(chunk, safe), ranks)
    elif bool(need_row.any()):
        rows = torch.nonzero(need_row).flatten()
        ranks[rows] = torch.where(need[rows], ranks_of(chunk[rows], safe[rows]), ranks[rows])
    return torch.where(valid, ranks, 0)


def _full_average_precision(ranks: torch.Tensor, valid: torch.Tensor, n_rel_f: torch.Tensor) -> torch.Tensor:
    """AP over the full ranking from the ranks of the relevant documents: ``1/|R| * sum_j j / r_j`` (sorted ranks)."""
    big = torch.iinfo(torch.int64).max
    r_sorted = torch.sort(torch.where(valid, ranks, big), dim=1).values
    j = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    real = r_sorted != big
    prec = torch.where(real, j / r_sorted.clamp(max=2**52).to(torch.float64), 0.0)
    return prec.sum(1) / n_rel_f
