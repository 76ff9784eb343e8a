"""Top-k search of query embeddings against a :class:`~.store.CorpusIndex`, block by block of corpus rows.

``backend="exact"`` (default) scores the queries against one block of ``chunk_size`` corpus rows at a time
(rows ``[i * chunk_size, (i + 1) * chunk_size)`` of the corpus, read from the shards' memory maps, so the same
rows meet the same float32 arithmetic however the corpus was sharded), keeps each block's top ``k`` with
:func:`~sentence_transformers_hybrid.metrics.ranking.top_k` and merges it into a running per-query top ``k``
(:func:`~sentence_transformers_hybrid.metrics.ranking.merge_ranked`). The rule is the package's one: score
descending, then corpus row ascending, so a sharded index and a single pass give the same hits. Memory:
``O(chunk_size x query block + queries x k)`` whatever the corpus size (query blocks keep a score block near
``2**24`` floats).

``backend="faiss"``: faiss ``IndexFlatIP`` per shard (exact inner product; needs ``faiss-cpu``, the ``faiss``
extra), merged by the same rule. ``"faiss-hnsw"`` / ``"faiss-ivfpq"``: approximate indexes built per shard,
**labelled approximate** (``SearchResult.approximate``, the run tag, ``metrics.json``).

Example:
    >>> import numpy as np
    >>> from sentence_transformers_hybrid.index import CorpusIndex
    >>> index = CorpusIndex.from_arrays(np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), ["d1", "d2", "d3"])
    >>> result = search(np.array([[0.0, 1.0]]), index, top_k=2)
    >>> result.docids.tolist(), result.scores.astype(float).round(2).tolist()
    ([['d3', 'd2']], [[1.0, 0.8]])
    >>> result.to_run(["q1"])
    {'q1': {'d3': 1.0, 'd2': 0.800000011920929}}
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils import atomic_write_text
from ..metrics.ranking import NO_KEY, merge_ranked, top_k as ranked_top_k
from .store import CorpusIndex, Shard

__all__ = ["BACKENDS", "APPROXIMATE_BACKENDS", "SearchResult", "search", "write_trec_run"]

#: Search backends; the last two are approximate.
BACKENDS: tuple[str, ...] = ("exact", "faiss", "faiss-hnsw", "faiss-ivfpq")
APPROXIMATE_BACKENDS: frozenset[str] = frozenset({"faiss-hnsw", "faiss-ivfpq"})
#: Scores per block of the exact search (query block x corpus block), about 64 MB of float32.
_SCORE_BLOCK = 2**24
#: The kernel's block-max pre-selection measured 6x slower than one ``torch.topk`` on 335 x 50k score blocks
#: (the search's shape; CPU, noisy shared machine): the search selects directly.
_NO_BLOCKS = 2**62


@dataclass(frozen=True)
class SearchResult:
    """The top ``k`` hits of each query: ``scores [nq x k]`` float32 (``-inf`` where fewer than ``k`` hits),
    ``docids [nq x k]`` str (``""`` there), ``rows [nq x k]`` int64 corpus rows (``-1`` there), ``approximate``
    (an ANN backend found them) and the ``backend`` name."""

    scores: np.ndarray
    docids: np.ndarray
    rows: np.ndarray
    approximate: bool = False
    backend: str = "exact"

    def to_run(self, qids: Sequence[str]) -> dict[str, dict[str, float]]:
        """The hits as a BEIR / pytrec_eval run ``{qid: {docid: score}}`` (empty slots left out)."""
        if len(qids) != len(self.scores):
            raise ValueError(f"{len(qids)} qids for {len(self.scores)} queries of the search")
        run: dict[str, dict[str, float]] = {}
        for qid, ids, sc, rows in zip(qids, self.docids.tolist(), self.scores.tolist(), self.rows.tolist()):
            run[str(qid)] = {d: s for d, s, r in zip(ids, sc, rows) if r >= 0}
        return run


def _query_tensor(query_embeddings: Any, dim: int) -> torch.Tensor:
    q = query_embeddings.detach().cpu() if isinstance(query_embeddings, torch.Tensor) else torch.as_tensor(
        np.asarray(query_embeddings))
    if q.ndim != 2:
        raise ValueError(f"query_embeddings must be 2-D [queries x dim], got shape {tuple(q.shape)}")
    if dim and q.shape[1] != dim:
        raise ValueError(f"query_embeddings have dimension {q.shape[1]}, the index {dim}")
    q = q.to(torch.float32).contiguous()
    if not bool(torch.isfinite(q).all()):
        raise ValueError("query_embeddings contain NaN or infinite values")
    return q


def search(
    query_embeddings: Any,
    index: CorpusIndex,
    top_k: int = 100,
    *,
    chunk_size: int = 50_000,
    backend: str = "exact",
    device: str | torch.device | None = None,
    show_progress_bar: bool = False,
) -> SearchResult:
    """The ``top_k`` corpus rows of each query by inner product (use normalised embeddings for cosine).

    Args:
        query_embeddings: ``[queries x dim]`` numpy array or tensor.
        index: the corpus (:class:`CorpusIndex`, on disk or from :meth:`CorpusIndex.from_arrays`).
        top_k: hits per query (fewer when the corpus is smaller; the rest are empty slots).
        chunk_size: corpus rows scored at a time (exact backend) or added to a faiss index at a time.
        backend: one of :data:`BACKENDS`.
        device: where the exact backend computes scores (default: CPU).
        show_progress_bar: a tqdm bar over corpus rows.

    Returns:
        :class:`SearchResult`; ties broken by corpus row (the package's rule, :data:`~sentence_transformers_hybrid.metrics.ranking.TIE_RULE`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    q = _query_tensor(query_embeddings, index.dim).to(dev)
    n_q = q.shape[0]
    best_s = torch.full((n_q, top_k), -math.inf, dtype=torch.float32, device=dev)
    best_k = torch.full((n_q, top_k), NO_KEY, dtype=torch.int64, device=dev)
    bar = None
    if show_progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(index), unit="passage", desc=f"search ({backend})", unit_scale=True)
    if backend == "exact":  # fixed global row blocks: the same arithmetic whatever the sharding
        parts = [(0, _exact_blocks(q, index, top_k, chunk_size, dev, bar))]
    else:
        parts = [(int(index.offsets[s]), _faiss_blocks(q, shard, top_k, chunk_size, backend, bar))
                 for s, shard in enumerate(index.shards)]
    for offset, blocks in parts:
        for rows, scores, keys in blocks:
            keys = torch.where(keys < 0, NO_KEY, keys + offset)  # -1: an ANN index found fewer than k
            merged = merge_ranked(best_s[rows], best_k[rows], scores, keys, top_k)
            best_s[rows], best_k[rows] = merged
    if bar is not None:
        bar.close()
    keys = best_k.cpu().numpy()
    rows = np.where(keys == NO_KEY, -1, keys)
    return SearchResult(
        scores=best_s.cpu().numpy(),
        docids=index.docids_of(rows),
        rows=rows,
        approximate=backend in APPROXIMATE_BACKENDS,
        backend=backend,
    )


def _exact_blocks(q: torch.Tensor, index: CorpusIndex, k: int, chunk_size: int, dev: torch.device, bar: Any):
    """(query rows, block scores [B x k'], corpus rows [B x k']) per (corpus block, query block)."""
    n_q = q.shape[0]
    for a in range(0, len(index), chunk_size):
        block = torch.from_numpy(index.block(a, a + chunk_size)).to(dev)
        kk = min(k, block.shape[0])
        q_block = max(1, _SCORE_BLOCK // block.shape[0])
        for qa in range(0, n_q, q_block):
            scores = q[qa : qa + q_block] @ block.T
            idx = ranked_top_k(scores, kk, min_docs=_NO_BLOCKS)
            yield slice(qa, qa + q_block), scores.gather(1, idx), idx + a
        if bar is not None:
            bar.update(block.shape[0])


def _faiss_blocks(q: torch.Tensor, shard: Shard, k: int, chunk_size: int, backend: str, bar: Any):
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"backend={backend!r} needs faiss: pip install 'sentence-transformers-hybrid[faiss]'") from err
    n, dim = len(shard), int(shard.embeddings.shape[1])
    if n == 0:
        return
    if backend == "faiss":
        fx = faiss.IndexFlatIP(dim)
    elif backend == "faiss-hnsw":
        fx = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        fx.hnsw.efSearch = max(128, 2 * k)
    else:  # faiss-ivfpq: sqrt(n) lists, the largest sub-quantizer count <= 64 that divides dim, 8 bits each
        m = max(d for d in range(1, min(64, dim) + 1) if dim % d == 0)
        nlist = max(1, min(int(math.sqrt(n)), n // 39))
        fx = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, 8 if n >= 256 * 39 else 4,
                              faiss.METRIC_INNER_PRODUCT)
        train = shard.block(0, min(n, 256 * 256))
        fx.train(train)
        fx.nprobe = min(nlist, 16)
    for a in range(0, n, chunk_size):
        fx.add(shard.block(a, a + chunk_size))
    kk = min(k, n)
    scores, idx = fx.search(q.cpu().numpy(), kk)
    idx = torch.from_numpy(idx.astype(np.int64))
    scores = torch.from_numpy(scores.astype(np.float32))
    missing = idx < 0  # an ANN index may return fewer than k
    scores = torch.where(missing, -math.inf, scores)
    if bar is not None:
        bar.update(n)
    yield slice(None), scores, idx


def write_trec_run(path: str | os.PathLike, qids: Sequence[str], result: SearchResult, tag: str) -> Path:
    """Write the hits as a TREC run file (``qid Q0 docid rank score tag``, ranks from 1, empty slots left out),
    atomically. An approximate search gets ``-approximate`` appended to its tag.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> from sentence_transformers_hybrid.index import CorpusIndex
        >>> index = CorpusIndex.from_arrays(np.eye(2), ["a", "b"])
        >>> p = write_trec_run(pathlib.Path(tempfile.mkdtemp()) / "en.trec", ["q"], search(np.eye(2)[:1], index), "m")
        >>> print(p.read_text(), end="")
        q Q0 a 1 1.000000 m
        q Q0 b 2 0.000000 m
    """
    if len(qids) != len(result.scores):
        raise ValueError(f"{len(qids)} qids for {len(result.scores)} queries of the search")
    if result.approximate and not tag.endswith("-approximate"):
        tag = f"{tag}-approximate"
    if any(ch.isspace() for ch in tag) or not tag:
        raise ValueError(f"a TREC run tag must be one word, got {tag!r}")
    lines = []
    for qid, ids, sc, rows in zip(qids, result.docids.tolist(), result.scores.tolist(), result.rows.tolist()):
        rank = 0
        for d, s, r in zip(ids, sc, rows):
            if r >= 0:
                rank += 1
                lines.append(f"{qid} Q0 {d} {rank} {s:.6f} {tag}\n")
    return atomic_write_text(path, "".join(lines))
