"""The corpus engine: embeddings on disk in shards with manifests, searched shard by shard.

* :mod:`.store`: :class:`CorpusIndex`, :class:`Shard` (memory-mapped shards in corpus order, compact docids);
* :mod:`.search`: :func:`search` (exact running top-k merge; faiss flat / HNSW / IVF-PQ), :class:`SearchResult`,
  :func:`write_trec_run`.
"""

from .search import APPROXIMATE_BACKENDS, BACKENDS, SearchResult, search, write_trec_run
from .store import CorpusIndex, Shard

__all__ = ["APPROXIMATE_BACKENDS", "BACKENDS", "CorpusIndex", "SearchResult", "Shard", "search", "write_trec_run"]
