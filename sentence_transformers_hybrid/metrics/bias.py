"""Language-bias figures on score matrices: pure functions, no models, no I/O.

* :func:`rank_distance_rows`: LAReQA's rank distance (Roy et al. 2020), per query: how far apart in the ranking of
  the multilingual pool the best and the worst of its relevant answers (the same answer in every language) are; a
  model that ranks same-language candidates first pushes the other languages' copies down and the distance up.
* :func:`ranks_of`: exact 1-based ranks of given documents in a score row (counted, not sorted).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["rank_distance_rows", "ranks_of"]


def _count_per_row(mask_of: Any, n_probes: int, numpy_ok: bool) -> Any:
    """``[B x P]`` int64 counts of ``mask_of(p)`` (a ``[B x D]`` bool array) per row, for each probe ``p``."""
    if numpy_ok:  # numpy's compare + uint8 add-reduce is ~15x faster than torch's bool reductions on CPU
        return np.stack(
            [np.add.reduce(mask_of(p).view(np.uint8), axis=1, dtype=np.int32) for p in range(n_probes)], 1
        ).astype(np.int64)
    return torch.stack([torch.count_nonzero(mask_of(p), dim=1) for p in range(n_probes)], 1)


def ranks_of(chunk: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """1-based full-ranking ranks ``[B x P]`` of documents ``docs[b, p]`` of each row (counted, not sorted).

    ``rank = #{s > s_j} + #{s == s_j and index < j} + 1``; the index-aware tie count runs only on rows where
    another document has the probe's exact score.
    """
    n_probes = docs.shape[1]
    v = chunk.gather(1, docs)  # [B x P]
    numpy_ok = chunk.device.type == "cpu" and chunk.dtype in (torch.float16, torch.float32, torch.float64)
    c, vv = (chunk.numpy(), v.numpy()) if numpy_ok else (chunk, v)
    before = _count_per_row(lambda p: c > vv[:, p : p + 1], n_probes, numpy_ok)
    equal = _count_per_row(lambda p: c == vv[:, p : p + 1], n_probes, numpy_ok)
    before = torch.as_tensor(before, device=chunk.device)
    tied = torch.nonzero((torch.as_tensor(equal, device=chunk.device) > 1).any(1)).flatten()
    if len(tied):
        ar = torch.arange(chunk.shape[1], device=chunk.device)
        sub = chunk[tied][:, None, :]
        before[tied] += torch.count_nonzero((sub == v[tied][:, :, None]) & (ar < docs[tied, :, None]), dim=2)
    return before + 1


def rank_distance_rows(
    chunk: torch.Tensor, rel_cols: torch.Tensor, valid: torch.Tensor, top: torch.Tensor | None
) -> torch.Tensor:
    """LAReQA's language-bias rank distance, per query: rank of the worst relevant document minus rank of the best
    one (1-based, full ranking of the row; 0 for a query with one relevant document).

    Args:
        chunk: ``[B x D]`` scores.
        rel_cols: ``[B x R]`` int64 columns of each row's relevant documents (padded); ``valid``: which are real.
        top: ``[B x K]`` the row's top-K documents in ranking order, if known (their ranks come for free).
    """
    n_docs = chunk.shape[1]
    safe = rel_cols.clamp(min=0)
    rel_scores = chunk.gather(1, safe)
    # best relevant: highest score, then lowest index; worst: lowest score, then highest index
    best_score = torch.where(valid, rel_scores, -math.inf).max(1, keepdim=True).values
    best = torch.where(valid & (rel_scores == best_score), rel_cols, n_docs).min(1).values
    worst_score = torch.where(valid, rel_scores, math.inf).min(1, keepdim=True).values
    worst = torch.where(valid & (rel_scores == worst_score), rel_cols, -1).max(1).values
    n_rel = valid.sum(1)
    rank_best = torch.zeros_like(best)
    rank_worst = torch.zeros_like(worst)
    need_best = n_rel > 1
    need_worst = n_rel > 1
    if top is not None:  # documents already in the top K have their rank for free
        k = top.shape[1]
        pos = torch.arange(1, k + 1, device=chunk.device)
        at_best = top == best[:, None]
        found = at_best.any(1)
        rank_best[found] = (at_best.to(torch.int64) * pos).sum(1)[found]
        need_best &= ~found
        at_worst = top == worst[:, None]
        found = at_worst.any(1)
        rank_worst[found] = (at_worst.to(torch.int64) * pos).sum(1)[found]
        need_worst &= ~found
    need = need_best | need_worst
    if bool(need.any()):  # both probes in one sweep over each row that needs either
        all_rows = bool(need.all())
        rows = None if all_rows else torch.nonzero(need).flatten()
        sub = chunk if all_rows else chunk[rows]
        probes = torch.stack([best, worst], 1) if all_rows else torch.stack([best[rows], worst[rows]], 1)
        ranks = ranks_of(sub, probes)
        if all_rows:
            rank_best = torch.where(need_best, ranks[:, 0], rank_best)
            rank_worst = torch.where(need_worst, ranks[:, 1], rank_worst)
        else:
            rank_best[rows] = torch.where(need_best[rows], ranks[:, 0], rank_best[rows])
            rank_worst[rows] = torch.where(need_worst[rows], ranks[:, 1], rank_worst[rows])
    return torch.where(n_rel > 1, rank_worst - rank_best, 0)
