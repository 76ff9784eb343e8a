"""The one ranking rule of the package: **score descending, then index ascending** (:data:`TIE_RULE`).

Every ranking in the package comes from here, so the LAReQA kernel (:mod:`.retrieval`), the language-bias figures
(:mod:`.bias`) and the corpus search engine (``index/``) order tied documents the same way:

* :func:`top_k`: the first ``k`` columns of each row (exact under ties, without sorting whole rows);
* :func:`order_ranked` / :func:`merge_ranked`: candidates carrying their own integer keys (e.g. global corpus rows)
  sorted, and a running top-k merged with a new block, under the same rule;
* :func:`ranks_of`: the full-ranking rank of given documents, counted rather than sorted:
  ``rank = #{s > s_j} + #{s == s_j and index < j} + 1``.

An "index" is the document's column in a score row, or, for a corpus searched shard by shard, its row in the
corpus (files in order, lines in order): the same document gets the same key whatever the sharding, so a sharded
search returns what a single pass returns.

Example:
    >>> import torch
    >>> s = torch.tensor([[0.1, 0.5, 0.5, 0.9]])
    >>> top_k(s, 3)
    tensor([[3, 1, 2]])
    >>> ranks_of(s, torch.tensor([[2, 0]]))
    tensor([[3, 4]])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["NO_KEY", "TIE_RULE", "merge_ranked", "order_ranked", "ranks_of", "top_k"]

#: The package's ranking rule, as said in every output that lists hits.
TIE_RULE = "score descending, then index ascending"
#: The key of an empty slot of a running top-k (score ``-inf``): it ranks after every real document.
NO_KEY = torch.iinfo(torch.int64).max

#: Largest block width of the block-max pre-selection in :func:`top_k`; rows of at least
#: ``max(BLOCK_MIN_DOCS, 4 * k * width)`` documents use it, with the widest power-of-two width that fits.
BLOCK = 64
BLOCK_MIN_DOCS = 512


def top_k(chunk: torch.Tensor, k: int, *, block: int = BLOCK, min_docs: int = BLOCK_MIN_DOCS) -> torch.Tensor:
    """Indices ``[B x k]`` of the first ``k`` documents of each row under (descending score, ascending index).

    Wide rows are first cut into blocks of ``width`` documents (a power of two up to ``block``): the first ``k``
    blocks under (descending block maximum, ascending block index) hold the first ``k`` documents (every document
    scoring above the k-th score lies in a block whose maximum is above it, at most ``k - 1`` such blocks; the
    lowest-index documents tied at the k-th score lie in the lowest-index blocks whose maximum equals it). A block
    maximum is a cheap vectorised reduction, so ``torch.topk`` runs on ``k * width`` candidates, not the whole row.

    Example:
        >>> top_k(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), 2)
        tensor([[1, 2]])
    """
    n_docs = chunk.shape[1]
    width = block
    while width > 8 and n_docs < 4 * k * width:
        width //= 2
    if n_docs >= max(min_docs, 4 * k * width):
        n_full = n_docs // width
        block_max = chunk[:, : n_full * width].reshape(chunk.shape[0], n_full, width).amax(2)
        if n_docs % width:
            block_max = torch.cat([block_max, chunk[:, n_full * width :].amax(1, keepdim=True)], 1)
        blocks = torch.sort(top_k(block_max, k, block=block, min_docs=min_docs), dim=1).values  # document order
        cols = (blocks[:, :, None] * width + torch.arange(width, device=chunk.device)).reshape(len(blocks), -1)
        inside = cols < n_docs
        cand = chunk.gather(1, cols.clamp(max=n_docs - 1))
        if not bool(inside.all()):  # past the short last block: -inf never outranks a (finite) score
            cand = torch.where(inside, cand, -math.inf)
        return cols.gather(1, top_k(cand, k, block=block, min_docs=min_docs))
    if k < n_docs:
        # one more than needed: the k-th score is tied beyond the cut iff the (k+1)-th equals it
        values, idx = torch.topk(chunk, k + 1, dim=1, largest=True, sorted=True)
        tied = torch.nonzero(values[:, k - 1] == values[:, k]).flatten()
        values, idx = values[:, :k].contiguous(), idx[:, :k].contiguous()
    else:
        values, idx = torch.topk(chunk, k, dim=1, largest=True, sorted=True)
        tied = idx.new_zeros(0)
    kth = values[:, -1:]
    # topk picks arbitrarily among documents tied at the k-th score: re-select those rows by index
    if len(tied):
        sub = chunk[tied]
        ar = torch.arange(n_docs, device=chunk.device)
        key = torch.where(sub > kth[tied], ar, 2 * n_docs)
        key = torch.where(sub == kth[tied], ar + n_docs, key)
        idx[tied] = key.topk(k, dim=1, largest=False, sorted=False).indices
        values[tied] = sub.gather(1, idx[tied])
    order = order_ranked(values, idx)
    return idx.gather(1, order)


def order_ranked(scores: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The permutation ``[B x C]`` that sorts each row's candidates by (descending score, ascending key).

    Example:
        >>> order_ranked(torch.tensor([[0.5, 0.9, 0.5]]), torch.tensor([[7, 3, 2]]))
        tensor([[1, 2, 0]])
    """
    by_key = torch.sort(keys, dim=1, stable=True).indices
    by_score = torch.sort(scores.gather(1, by_key), dim=1, descending=True, stable=True).indices
    return by_key.gather(1, by_score)


def merge_ranked(
    scores: torch.Tensor, keys: torch.Tensor, new_scores: torch.Tensor, new_keys: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A running top-k ``(scores, keys)`` ``[B x k]`` merged with a block's candidates ``[B x C]`` (keys distinct
    from the running ones): the first ``k`` of their union under the rule, in order. Empty slots hold ``-inf`` and
    :data:`NO_KEY`.

    Example:
        >>> s, key = torch.full((1, 2), -math.inf), torch.full((1, 2), NO_KEY)
        >>> s, key = merge_ranked(s, key, torch.tensor([[0.5, 0.2]]), torch.tensor([[4, 5]]), 2)
        >>> merge_ranked(s, key, torch.tensor([[0.5]]), torch.tensor([[1]]), 2)
        (tensor([[0.5000, 0.5000]]), tensor([[1, 4]]))
    """
    all_scores = torch.cat([scores, new_scores.to(scores.dtype)], 1)
    all_keys = torch.cat([keys, new_keys.to(torch.int64)], 1)
    order = order_ranked(all_scores, all_keys)[:, :k]
    return all_scores.gather(1, order), all_keys.gather(1, order)


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

    Example:
        >>> ranks_of(torch.tensor([[0.3, 0.3, 0.9]]), torch.tensor([[1, 2]]))
        tensor([[3, 1]])
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
