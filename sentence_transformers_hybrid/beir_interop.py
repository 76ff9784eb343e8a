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

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["beir_evaluate", "load_beir_folder", "relevance_from_qrels", "run_from_scores"]


def relevance_from_qrels(
    qrels: Mapping[str, Mapping[str, int]], query_ids: Sequence[str], doc_ids: Sequence[str]
) -> sp.csr_matrix:
    """Boolean CSR ``[len(query_ids) x len(doc_ids)]``: ``True`` where ``qrels[qid][doc_id] > 0``.

    Raises ``ValueError`` for a judged-relevant ``doc_id`` that is not in ``doc_ids`` (BEIR would count it in
    ``|R|`` but could never retrieve it) and for duplicate ``doc_ids``.
    """
    column = {d: i for i, d in enumerate(doc_ids)}
    if len(column) != len(doc_ids):
        raise ValueError("doc_ids has duplicates")
    indptr, indices = [0], []
    for qid in query_ids:
        judged = qrels.get(qid, {})
        for doc_id, grade in judged.items():
            if grade > 0:
                if doc_id not in column:
                    raise ValueError(f"qrels[{qid!r}] judges document {doc_id!r} relevant, but it is not in the corpus")
                indices.append(column[doc_id])
        indptr.append(len(indices))
    rel = sp.csr_matrix(
        (np.ones(len(indices), dtype=bool), np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
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
    from sentence_transformers_hybrid.metrics import _as_score_tensor, _top_k, check_finite_scores

    s = _as_score_tensor(scores)
    check_finite_scores(s)
    if s.shape != (len(query_ids), len(doc_ids)):
        raise ValueError(f"scores has shape {tuple(s.shape)}, expected ({len(query_ids)}, {len(doc_ids)})")
    k = min(top_k, s.shape[1])
    idx = torch.cat([_top_k(s[a : a + 1024], k) for a in range(0, s.shape[0], 1024)]).cpu().numpy()
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
    """``(corpus, queries, qrels)`` of a BEIR folder, read by BEIR's ``GenericDataLoader``."""
    from beir.datasets.data_loader import GenericDataLoader

    return GenericDataLoader(data_folder=data_folder).load(split=split)
