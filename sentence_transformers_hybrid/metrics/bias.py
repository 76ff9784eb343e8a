"""Language-bias figures on score matrices: pure functions, no models, no I/O.

* :func:`rank_distance_rows`: LAReQA's rank distance (Roy et al. 2020), per query: how far apart in the ranking of
  the multilingual pool the best and the worst of its relevant answers (the same answer in every language) are; a
  model that ranks same-language candidates first pushes the other languages' copies down and the distance up.
* :func:`ranks_of`: exact 1-based ranks of given documents in a score row (counted, not sorted);
* :func:`same_language_share`: per query, the share of its first ``k`` candidates in the multilingual pool that are in
  the query's own language (how often the query's language wins, as RAG studies report it);
* :func:`language_centered`: the post-hoc control (LSAR's "demean", Yang et al. 2021): remove from every embedding
  the mean embedding of its language, then re-normalise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .ranking import ranks_of

__all__ = ["language_centered", "rank_distance_rows", "ranks_of", "same_language_share"]

#: A centered embedding shorter than this (the embeddings are unit vectors before centering) is a zero vector.
ZERO_NORM = 1e-6


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


def same_language_share(top: Any, doc_languages: Any, query_languages: Any, k: int = 20) -> torch.Tensor:
    """Per query, the share of its first ``k`` candidates that are in the query's own language (float64 ``[Q]``).

    Args:
        top: ``[Q x >= min(k, D)]`` document indices of each query in ranking order (e.g. from
            :func:`~sentence_transformers_hybrid.metrics.top_k_indices` on the multilingual pool's scores).
        doc_languages: ``[D]`` language of every document of the pool, as integer codes (or anything
            :func:`torch.as_tensor` turns into integers).
        query_languages: the queries' language code: one integer for all, or ``[Q]``.
        k: the cutoff; a pool smaller than ``k`` counts all its ``D`` documents (the share is over ``min(k, D)``).

    Example:
        >>> top = torch.tensor([[0, 3, 1], [2, 4, 0]])
        >>> doc_languages = torch.tensor([0, 0, 1, 1, 1])   # documents 0-1 in language 0, 2-4 in language 1
        >>> same_language_share(top, doc_languages, 0, k=3)  # query 1: docs 0, 1 of 0, 3, 1; query 2: doc 0 only
        tensor([0.6667, 0.3333], dtype=torch.float64)
    """
    top = torch.as_tensor(top)
    doc_languages = torch.as_tensor(doc_languages).to(top.device)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if top.ndim != 2 or doc_languages.ndim != 1:
        raise ValueError(f"top must be [queries x k] and doc_languages [documents], got shapes "
                         f"{tuple(top.shape)} and {tuple(doc_languages.shape)}")
    kk = min(k, len(doc_languages))
    if top.shape[1] < kk:
        raise ValueError(f"top has {top.shape[1]} documents per query, expected at least min(k, documents) = {kk}")
    q = torch.as_tensor(query_languages, device=top.device)
    q = q.reshape(-1, 1) if q.ndim else q.reshape(1, 1)
    if q.shape[0] not in (1, top.shape[0]):
        raise ValueError(f"query_languages has {q.shape[0]} entries for {top.shape[0]} queries")
    same = doc_languages[top[:, :kk]] == q
    return same.sum(1, dtype=torch.float64) / kk


def language_centered(embeddings: Mapping[str, Any], side: str = "questions") -> dict[str, torch.Tensor]:
    """The post-hoc language-identity removal: per language, ``normalise(u - mean(u))`` with ``u`` the embeddings
    normalised to unit length and ``mean`` taken over that language's embeddings (computed in float64).

    The embeddings of one side (questions, or candidates) go in together, one ``[n x dim]`` array per language; the
    other side is centered by a separate call, on its own means. With unit embeddings (the geometry of cosine
    similarity) this removes the direction every text of a language shares, which is what lets a query's language
    outrank its meaning.

    Args:
        embeddings: ``{language: [n x dim] array or tensor}``.
        side: what the embeddings are (``"questions"``, ``"candidates"``), for error messages.

    Returns:
        ``{language: [n x dim] unit tensor}`` (float32 unless the input is float64).

    Raises:
        ValueError: a language with fewer than two embeddings (no mean to remove), or one whose centered embeddings
            are zero vectors (every embedding equal: zero variance); the message names the language and side.

    Example:
        >>> emb = {"de": torch.tensor([[1.0, 1.0], [1.0, -1.0]]), "en": torch.tensor([[3.0, 0.0], [0.0, 3.0]])}
        >>> out = language_centered(emb)
        >>> out["de"]   # unit vectors (0.71, +-0.71), mean (0.71, 0): what is left is (0, +-1)
        tensor([[ 0.,  1.],
                [ 0., -1.]])
    """
    out: dict[str, torch.Tensor] = {}
    for lang, emb in embeddings.items():
        t = torch.as_tensor(emb).detach()
        if t.ndim != 2:
            raise ValueError(f"{side} of language {lang!r}: embeddings must be [n x dim], got shape {tuple(t.shape)}")
        if t.shape[0] < 2:
            raise ValueError(
                f"{side} of language {lang!r}: {t.shape[0]} embedding(s); centering needs at least two (the mean of "
                "one text is the text itself, nothing would be left)"
            )
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        u = torch.nn.functional.normalize(t.to(torch.float64), dim=1)
        centered = u - u.mean(0, keepdim=True)
        norms = torch.linalg.vector_norm(centered, dim=1)
        zero = norms < ZERO_NORM  # NaN embeddings are not zero: they reach the scores' finiteness check
        if bool(zero.all()):
            raise ValueError(
                f"{side} of language {lang!r}: all {t.shape[0]} embeddings are equal (zero variance), so centering "
                "leaves zero vectors; the language mean cannot be removed"
            )
        if bool(zero.any()):
            i = int(torch.nonzero(zero)[0])
            raise ValueError(
                f"{side} of language {lang!r}: embedding {i} equals the language mean (centered norm "
                f"{float(norms[i]):.1e}; {int(zero.sum())} such), centering would leave a zero vector"
            )
        out[lang] = (centered / norms[:, None]).to(dtype)
    return out
