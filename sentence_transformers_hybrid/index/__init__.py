"""The corpus engine: embeddings on disk in shards with manifests, searched shard by shard.

* :mod:`.store`: :class:`CorpusIndex`, :class:`Shard` (memory-mapped shards in corpus order, compact docids);
* :mod:`.shards`: :func:`encode_corpus` (resumable, checked, split over ranks / jobs), :func:`model_fingerprint`;
* :mod:`.manifest`: the on-disk format and its checks;
* :mod:`.search`: :func:`search` (exact running top-k merge; faiss flat / HNSW / IVF-PQ), :class:`SearchResult`,
  :func:`write_trec_run`;
* :mod:`.distributed`: rank, world size, device and barrier under ``torchrun``.
"""

from .distributed import barrier, dist_context, init_distributed, is_main_process, rank_device
from .search import APPROXIMATE_BACKENDS, BACKENDS, SearchResult, search, write_trec_run
from .shards import ENCODE_DTYPES, check_unique_docids, encode_corpus, model_fingerprint, resolve_prompt
from .store import CorpusIndex, Shard

__all__ = [
    "APPROXIMATE_BACKENDS",
    "BACKENDS",
    "ENCODE_DTYPES",
    "CorpusIndex",
    "SearchResult",
    "Shard",
    "barrier",
    "check_unique_docids",
    "dist_context",
    "encode_corpus",
    "init_distributed",
    "is_main_process",
    "model_fingerprint",
    "rank_device",
    "resolve_prompt",
    "search",
    "write_trec_run",
]
