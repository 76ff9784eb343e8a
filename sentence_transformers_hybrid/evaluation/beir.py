"""Moving between score matrices and BEIR's dicts, and cross-checking our metrics with BEIR / pytrec_eval.

BEIR keeps plain dicts at its boundaries: ``corpus``, ``queries``, ``qrels`` (``{qid: {doc_id: grade}}``) and a
run ``results`` (``{qid: {doc_id: score}}``). :meth:`RetrievalBenchmark.beir` exports any LAReQA setting in
that form; the functions here turn qrels into our relevance matrices, scores into a BEIR run, and evaluate a
run with ``beir.retrieval.evaluation.EvaluateRetrieval`` under our metric names.

Example:
    >>> import numpy as np
    >>> scores = np.array([[0.9, 0.1, 0.5]])
    >>> run = run_from_scores(scores, ["q1"], ["a", "b", "c"], top_k=2)
    >>> run
    {'q1': {'a': 0.9, 'c': 0.5}}
    >>> qrels = {"q1": {"c": 1}}
    >>> relevance_from_qrels(qrels, ["q1"], ["a", "b", "c"]).toarray()
    array([[False, False,  True]])
    >>> beir_evaluate(qrels, run, k_values=[1, 2])["mrr@2"]
    0.5
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import os

import numpy as np
import scipy.sparse as sp
import torch
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from ..data.benchmark import CANDIDATE_WITH_CONTEXT
from ..metrics.graded import parse_cutoff_metrics, ranked_list_metrics
from ..index import CorpusIndex, search
from ..metrics.retrieval import MIRACL_METRICS, as_score_tensor, check_finite_scores, top_k_indices
from .._utils import append_csv_rows
from .encoding import QueryDocumentEncoding, Similarity

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

__all__ = ["BEIRRetrievalEvaluator", "beir_evaluate", "load_beir_folder", "relevance_from_qrels", "run_from_scores"]


def relevance_from_qrels(
    qrels: Mapping[str, Mapping[str, int]], query_ids: Sequence[str], doc_ids: Sequence[str], *, graded: bool = False
) -> sp.csr_matrix:
    """Boolean CSR ``[len(query_ids) x len(doc_ids)]``: ``True`` where ``qrels[qid][doc_id] > 0``; with
    ``graded=True`` the grades themselves (int32, the relevant documents only), for graded nDCG.

    Raises ``ValueError`` for a judged-relevant ``doc_id`` that is not in ``doc_ids`` (BEIR would count it in
    ``|R|`` but could never retrieve it) and for duplicate ``doc_ids``.

    Example:
        >>> relevance_from_qrels({"q": {"b": 2, "a": 0}}, ["q"], ["a", "b"], graded=True).toarray()
        array([[0, 2]], dtype=int32)
    """
    column = {d: i for i, d in enumerate(doc_ids)}
    if len(column) != len(doc_ids):
        raise ValueError("doc_ids has duplicates")
    indptr, indices, grades = [0], [], []
    for qid in query_ids:
        judged = qrels.get(qid, {})
        for doc_id, grade in judged.items():
            if grade > 0:
                if doc_id not in column:
                    raise ValueError(f"qrels[{qid!r}] judges document {doc_id!r} relevant, but it is not in the corpus")
                indices.append(column[doc_id])
                grades.append(grade)
        indptr.append(len(indices))
    data = np.asarray(grades, dtype=np.int32) if graded else np.ones(len(indices), dtype=bool)
    rel = sp.csr_matrix(
        (data, np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(len(query_ids), len(doc_ids)),
    )
    rel.sort_indices()
    return rel


def run_from_scores(
    scores: Any,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    top_k: int = 100,
    rank_scores: bool = False,
) -> dict[str, dict[str, float]]:
    """The BEIR run ``{qid: {doc_id: score}}`` of the ``top_k`` documents of each query.

    The top ``k`` are chosen in our order (descending score, ties by lower index). trec_eval orders a run by
    score and breaks ties by document id (descending), so with ties in the scores the two can rank differently;
    ``rank_scores=True`` writes ``top_k - rank`` instead of the score, which makes the order explicit.
    """
    s = as_score_tensor(scores)
    check_finite_scores(s)
    if s.shape != (len(query_ids), len(doc_ids)):
        raise ValueError(f"scores has shape {tuple(s.shape)}, expected ({len(query_ids)}, {len(doc_ids)})")
    k = min(top_k, s.shape[1])
    idx = top_k_indices(s, k, chunk_size=1024).cpu().numpy()
    if rank_scores:
        values = np.broadcast_to(np.arange(k, 0, -1, dtype=np.float64), idx.shape).tolist()
    else:
        values = np.take_along_axis(s.cpu().numpy(), idx, axis=1).astype(np.float64).tolist()
    doc_arr = np.asarray(doc_ids, dtype=object)
    names = doc_arr[idx].tolist()
    return {qid: dict(zip(n, v)) for qid, n, v in zip(query_ids, names, values)}


def beir_evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    results: Mapping[str, Mapping[str, float]],
    k_values: Sequence[int] = (1, 10, 20, 100),
) -> dict[str, float]:
    """``EvaluateRetrieval.evaluate`` (+ its MRR) under our names: ``ndcg@k``, ``recall@k``, ``precision@k``,
    ``mrr@k`` and ``map_cut@k`` (trec's MAP, which divides by ``|R|``, not LAReQA's ``min(|R|, k)``).

    BEIR rounds to 5 decimals; query and document ids must differ (BEIR drops a hit whose id equals the
    query id: it is called with ``ignore_identical_ids=False`` here).
    """
    from beir.retrieval.evaluation import EvaluateRetrieval

    k_values = list(k_values)
    previous = logging.getLogger("beir.retrieval.evaluation").level
    logging.getLogger("beir.retrieval.evaluation").setLevel(logging.WARNING)
    try:
        ndcg, _map, recall, precision = EvaluateRetrieval.evaluate(
            dict(qrels), dict(results), k_values, ignore_identical_ids=False
        )
        mrr = EvaluateRetrieval.evaluate_custom(dict(qrels), dict(results), k_values, metric="mrr")
    finally:
        logging.getLogger("beir.retrieval.evaluation").setLevel(previous)
    out: dict[str, float] = {}
    for k in k_values:
        out[f"ndcg@{k}"] = ndcg[f"NDCG@{k}"]
        out[f"recall@{k}"] = recall[f"Recall@{k}"]
        out[f"precision@{k}"] = precision[f"P@{k}"]
        out[f"mrr@{k}"] = mrr[f"MRR@{k}"]
        out[f"map_cut@{k}"] = _map[f"MAP@{k}"]
    return out


def load_beir_folder(
    data_folder: str, split: str = "test"
) -> tuple[dict[str, dict[str, str]], dict[str, str], dict[str, dict[str, int]]]:
    """``(corpus, queries, qrels)`` of a BEIR folder: queries and (graded) qrels read by BEIR's ``GenericDataLoader``,
    ``corpus.jsonl`` read here so that a document keeps its ``context`` (what :meth:`RetrievalBenchmark.beir` writes
    with ``with_context=True``; BEIR's loader keeps only ``title`` and ``text``) and a doc id that occurs twice is
    named with both lines instead of the later one silently replacing the earlier."""
    from beir.datasets.data_loader import GenericDataLoader

    loader = GenericDataLoader(data_folder=data_folder)
    loader.corpus = _read_beir_corpus(loader.corpus_file)  # load() then keeps it
    return loader.load(split=split)


def _read_beir_corpus(path: str) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {n}: not JSON ({err.msg})") from None
            if not isinstance(row, dict) or "_id" not in row or "text" not in row:
                raise ValueError(f"{path}, line {n}: a document needs '_id' and 'text', got {line.strip()[:80]!r}")
            doc_id = str(row["_id"])
            if doc_id in first_line:
                raise ValueError(f"{path}: doc id {doc_id!r} occurs twice, lines {first_line[doc_id]} and {n}")
            first_line[doc_id] = n
            doc = {"text": row["text"], "title": row.get("title") or ""}
            if row.get("context") is not None:
                doc["context"] = row["context"]
            corpus[doc_id] = doc
    return corpus


class BEIRRetrievalEvaluator(QueryDocumentEncoding, SentenceEvaluator):
    """Retrieval on a BEIR-format data set (e.g. a MIRACL language): nDCG@10 and Recall@100 by default.

    Takes BEIR's dicts as they are: ``corpus[doc_id] = {"title": ..., "text": ...}`` (or a plain string),
    ``queries[qid] = text``, ``qrels[qid] = {doc_id: grade}``. A document is relevant when its grade is > 0, and
    the grade is its gain for nDCG, as in BEIR's ``EvaluateRetrieval.evaluate`` (trec_eval's ``ndcg_cut``); the
    other metrics count relevant documents whatever their grade. Queries without a relevant document are left out,
    as BEIR and the library's ``InformationRetrievalEvaluator`` do. A document is encoded as
    ``(title + " " + text).strip()``, as the library's evaluator does; a document with a ``context`` (the paragraph
    :meth:`RetrievalBenchmark.beir` writes with ``with_context=True``) as ``CANDIDATE_WITH_CONTEXT``
    (``"{sentence}\\n{context}"``), as :class:`MultilingualRetrievalEvaluator` encodes LAReQA candidates.

    The search is the MIRACL engine's exact search (:func:`sentence_transformers_hybrid.index.search`): corpus
    chunks of ``corpus_chunk_size`` documents against ``query_chunk_size`` queries at a time, each chunk's top
    ``K`` (the largest cutoff) merged into a running top ``K``, ties broken by the package's one rule (score
    descending, then corpus order), so no score matrix over the whole corpus is ever held. Only cutoff
    metrics (``ndcg@k``, ``recall@k``, ``precision@k``, ``accuracy@k``, ``mrr@k``, ``map@k``) are computed
    (:func:`~sentence_transformers_hybrid.metrics.graded.ranked_list_metrics`).

    Args:
        corpus: ``{doc_id: {"title", "text"[, "context"]} | str}``.
        queries: ``{qid: text}``.
        qrels: ``{qid: {doc_id: grade}}``; every judged-relevant ``doc_id`` must be in the corpus.
        name: prefix of the result keys (``f"{name}_{metric}"``).
        metrics: cutoff metric names (``family@k``); the first is the ``primary_metric``.
        batch_size, query_prompt, corpus_prompt, query_prompt_name, corpus_prompt_name, show_progress_bar,
            truncate_dim, write_csv: as in the library's ``InformationRetrievalEvaluator``.
        query_chunk_size: queries searched at a time.
        corpus_chunk_size: corpus rows scored at a time (the score block is ``query_chunk_size x
            corpus_chunk_size``).

    Example:
        >>> from sentence_transformers_hybrid import load_lareqa
        >>> from sentence_transformers_hybrid.testing import tiny_static_model
        >>> corpus, queries, qrels = load_lareqa("xquad-r", languages=["de", "en"]).beir("de")   # $STH_DATA_DIR
        >>> evaluator = BEIRRetrievalEvaluator(corpus, queries, qrels, name="xquad-r-de")
        >>> model = tiny_static_model(list(queries.values()), dim=16)   # any SentenceTransformer
        >>> sorted(evaluator(model))
        ['xquad-r-de_ndcg@10', 'xquad-r-de_recall@100']

    A BEIR folder on disk (``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``) reads the same way::

        >>> from sentence_transformers_hybrid.evaluation.beir import load_beir_folder
        >>> corpus, queries, qrels = load_beir_folder("miracl-sw", split="dev")  # a downloaded BEIR folder  # doctest: +SKIP
    """

    def __init__(
        self,
        corpus: Mapping[str, Any],
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        name: str = "",
        metrics: Sequence[str] = MIRACL_METRICS,
        batch_size: int = 32,
        query_prompt: str | None = None,
        corpus_prompt: str | None = None,
        show_progress_bar: bool | None = None,
        *,
        query_prompt_name: str | None = None,
        corpus_prompt_name: str | None = None,
        truncate_dim: int | None = None,
        write_csv: bool = True,
        query_chunk_size: int = 1024,
        corpus_chunk_size: int = 50_000,
    ) -> None:
        super().__init__()

        self.metrics = tuple(metrics)
        self.top_k = max(k for _, k in parse_cutoff_metrics(self.metrics))  # validates the names
        self.doc_ids = list(corpus)
        self.corpus = [_doc_text(corpus[d], d) for d in self.doc_ids]
        judged = [q for q in queries if any(g > 0 for g in qrels.get(q, {}).values())]
        skipped = len(queries) - len(judged)
        if skipped:
            logger.info(f"{name or 'BEIR'}: {skipped} of {len(queries)} queries have no relevant document; left out")
        if not judged:
            raise ValueError(f"{name or 'BEIR'}: no query has a relevant document in qrels")
        self.query_ids = judged
        self.queries = [queries[q] for q in judged]
        self.grades = relevance_from_qrels(qrels, self.query_ids, self.doc_ids, graded=True)
        self.name = name
        self.set_encoding(batch_size, query_prompt, corpus_prompt, query_prompt_name, corpus_prompt_name,
                           show_progress_bar, truncate_dim, write_csv)
        if query_chunk_size < 1 or corpus_chunk_size < 1:
            raise ValueError(f"query_chunk_size and corpus_chunk_size must be >= 1, got {query_chunk_size} and "
                             f"{corpus_chunk_size}")
        self.query_chunk_size = query_chunk_size
        self.corpus_chunk_size = corpus_chunk_size
        self.primary_metric = self.metrics[0]
        self.csv_file = "BEIR-Retrieval_evaluation" + (f"_{name}" if name else "") + "_results.csv"

    @property
    def relevance_matrix(self) -> sp.csr_matrix:
        """Boolean CSR ``[queries x documents]``: grade > 0."""
        return self.grades > 0

    def search(
        self, query_embeddings: Any, corpus_embeddings: Any, similarity: Similarity | str | None = None
    ) -> np.ndarray:
        """int64 ``[queries x min(K, documents)]``: each query's first ``K`` corpus columns (``K`` = the largest
        cutoff) by the engine's exact search (:func:`sentence_transformers_hybrid.index.search`) and tie rule.
        ``similarity``: ``"cosine"`` (default), ``"dot"``, or the library's / our cosine and dot functions."""
        q, c = _as_float_array(query_embeddings), _as_float_array(corpus_embeddings)
        if q.shape[0] != len(self.query_ids) or c.shape[0] != len(self.doc_ids):
            raise ValueError(
                f"{self.name or 'BEIR'}: embeddings for {q.shape[0]} queries and {c.shape[0]} documents, "
                f"expected {len(self.query_ids)} and {len(self.doc_ids)}"
            )
        for side, x in (("query", q), ("corpus", c)):
            bad = ~np.isfinite(x).all(axis=1)
            if bad.any():
                raise ValueError(f"{self.name or 'BEIR'}: {side} embedding {int(np.flatnonzero(bad)[0])} is not finite "
                                 f"({int(bad.sum())} such rows)")
        if _similarity_name(similarity) == "cosine":
            q, c = _unit_rows(q), _unit_rows(c)
        index = CorpusIndex.from_arrays(c, self.doc_ids)
        k = min(self.top_k, c.shape[0])
        device = query_embeddings.device if isinstance(query_embeddings, torch.Tensor) else None  # GPU stays GPU
        parts = [search(q[a:a + self.query_chunk_size], index, k, chunk_size=self.corpus_chunk_size,
                        device=device).rows
                 for a in range(0, q.shape[0], self.query_chunk_size)]
        return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)

    def compute_metrics_from_embeddings(
        self, query_embeddings: Any, corpus_embeddings: Any, similarity: Similarity | str | None = None
    ) -> dict[str, float]:
        """The metrics (without the name prefix) from ``[queries x dim]`` and ``[corpus x dim]`` embeddings."""
        top = self.search(query_embeddings, corpus_embeddings, similarity)
        per_query = ranked_list_metrics(top, self.grades, self.metrics)
        return {m: float(v.mean()) for m, v in per_query.items()}

    def __call__(
        self,
        model: SentenceTransformer,
        output_path: str | None = None,
        epoch: int = -1,
        steps: int = -1,
        *args: Any,
        **kwargs: Any,
    ) -> dict[str, float]:
        logger.info(f"BEIR retrieval evaluation on {self.name or 'the data set'}: {len(self.queries)} queries, "
                    f"{len(self.corpus)} documents")
        q = self.encode_texts(model, self.queries, "query")
        c = self.encode_texts(model, self.corpus, "corpus")
        summary = self.compute_metrics_from_embeddings(q, c, similarity=model.similarity_fn_name or "cosine")
        logger.info("  " + "  ".join(f"{m}: {v:.4f}" for m, v in summary.items()))
        if output_path is not None and self.write_csv:
            append_csv_rows(os.path.join(output_path, self.csv_file), ["epoch", "steps", *self.metrics],
                            [{"epoch": epoch, "steps": steps, **summary}])  # atomic; see append_csv_rows
        metrics = self.prefix_name_to_metrics(summary, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    @classmethod
    def from_folder(cls, data_folder: str, split: str = "test", **kwargs: Any) -> BEIRRetrievalEvaluator:
        """Load a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``) with BEIR's loader."""
        corpus, queries, qrels = load_beir_folder(data_folder, split=split)
        kwargs.setdefault("name", os.path.basename(os.path.normpath(data_folder)))
        return cls(corpus, queries, qrels, **kwargs)

    def get_config_dict(self) -> dict[str, Any]:
        return self.prompt_config()


def _doc_text(doc: Any, doc_id: str) -> str:
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Mapping) and "text" in doc:
        text = (str(doc.get("title") or "") + " " + str(doc["text"])).strip()
        if doc.get("context") is not None:  # RetrievalBenchmark.beir(with_context=True): the sentence's paragraph
            return CANDIDATE_WITH_CONTEXT.format(sentence=text, context=str(doc["context"]))
        return text
    raise ValueError(f"corpus[{doc_id!r}] must be a string or a dict with 'text' (and 'title'), got {doc!r:.80}")


_COSINE = {"cosine", "cos_sim", "cosine_scores"}
_DOT = {"dot", "dot_product", "dot_score"}


def _similarity_name(similarity: Similarity | str | None) -> str:
    """``"cosine"`` or ``"dot"``: the two similarities an inner-product search serves (cosine on unit rows)."""
    if similarity is None:
        return "cosine"
    name = similarity if isinstance(similarity, str) else getattr(similarity, "__name__", repr(similarity))
    name = getattr(name, "value", name)  # a SimilarityFunction member
    if name in _COSINE:
        return "cosine"
    if name in _DOT:
        return "dot"
    raise ValueError(f"similarity {name!r} is not supported by the exact inner-product search; use 'cosine' or 'dot'")


def _as_float_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [rows x dim], got shape {x.shape}")
    return x


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)
