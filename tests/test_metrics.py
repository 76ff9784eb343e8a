from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sentence_transformers_hybrid.metrics import (
    LAREQA_METRICS,
    merge_top_k,
    ranking_metrics,
    retrieval_metrics,
    top_k_indices,
)

# ----------------------------------------------------------------------------------- references


def reference_ranking(scores: np.ndarray) -> np.ndarray:
    """Full ranking per row: descending score, ties by ascending index (lexsort: last key is primary)."""
    n_docs = scores.shape[1]
    return np.stack([np.lexsort((np.arange(n_docs), -row)) for row in scores])


def reference_metrics(scores: np.ndarray, relevance: np.ndarray) -> dict[str, np.ndarray]:
    """The definitions of the issue, written out with Python loops over one full sort per query."""
    out: dict[str, list[float]] = {m: [] for m in LAREQA_METRICS}
    for order, rel in zip(reference_ranking(scores), relevance):
        ranked_rel = [bool(rel[d]) for d in order]
        n_rel = sum(ranked_rel)
        ap, found = 0.0, 0
        for i, r in enumerate(ranked_rel[:20], start=1):
            if r:
                found += 1
                ap += found / i
        out["map@20"].append(ap / min(n_rel, 20))
        out["recall@1"].append(sum(ranked_rel[:1]) / n_rel)
        out["recall@10"].append(sum(ranked_rel[:10]) / n_rel)
        dcg = sum(1 / math.log2(i + 1) for i, r in enumerate(ranked_rel[:10], start=1) if r)
        idcg = sum(1 / math.log2(i + 1) for i in range(1, min(n_rel, 10) + 1))
        out["ndcg@10"].append(dcg / idcg)
        first = next((i for i, r in enumerate(ranked_rel[:10], start=1) if r), None)
        out["mrr@10"].append(1 / first if first else 0.0)
        rel_ranks = [i for i, r in enumerate(ranked_rel, start=1) if r]
        out["rank_distance"].append(max(rel_ranks) - min(rel_ranks))
    return {k: np.array(v) for k, v in out.items()}


def reference_full_map(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """AP over the full ranking per query: mean over relevant documents of the precision at their rank."""
    aps = []
    for order, rel in zip(reference_ranking(scores), relevance):
        ranked_rel = rel[order]
        precisions = [ranked_rel[:i].sum() / i for i in range(1, len(order) + 1) if ranked_rel[i - 1]]
        aps.append(np.mean(precisions))
    return np.array(aps)


def random_case(n_queries: int, n_docs: int, max_rel: int, seed: int, ties: bool = False):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: many ties, also at the top-k boundaries
        scores = rng.integers(0, 4, size=(n_queries, n_docs)).astype(np.float32)
    else:
        scores = rng.standard_normal((n_queries, n_docs)).astype(np.float32)
    relevance = np.zeros((n_queries, n_docs), dtype=bool)
    for q in range(n_queries):
        relevance[q, rng.choice(n_docs, size=rng.integers(1, max_rel + 1), replace=False)] = True
    return scores, relevance


# --------------------------------------------------------------------------------- hand-computed


def test_hand_computed_single_query():
    # ranking: doc3 (0.9), doc1 (0.5), doc2 (0.3), doc4 (0.2), doc0 (0.1); relevant docs 1 and 4 at ranks 2 and 4
    scores = np.array([[0.1, 0.5, 0.3, 0.9, 0.2]])
    relevance = np.array([[0, 1, 0, 0, 1]], dtype=bool)
    m = retrieval_metrics(scores, relevance)
    assert list(m) == ["map@20", "recall@1", "recall@10", "ndcg@10", "mrr@10", "rank_distance"]
    assert m["map@20"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert m["recall@1"] == 0.0
    assert m["recall@10"] == 1.0
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert m["mrr@10"] == pytest.approx(0.5)
    assert m["rank_distance"] == 2.0


def test_mean_is_over_queries():
    scores = np.array([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0]])
    relevance = np.array([[1, 0, 0], [0, 0, 1]], dtype=bool)
    m = retrieval_metrics(scores, relevance)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["recall@1"] == pytest.approx(0.5)
    per_query = retrieval_metrics(scores, relevance, reduction="none")
    np.testing.assert_allclose(per_query["map@20"], [1.0, 1 / 3])


def test_ties_are_broken_by_lower_document_index():
    scores = np.full((1, 4), 0.5)
    m = retrieval_metrics(scores, np.array([[0, 0, 1, 0]], dtype=bool))
    assert m["mrr@10"] == pytest.approx(1 / 3)  # docs 0 and 1 come first
    m = retrieval_metrics(scores, np.array([[1, 0, 0, 1]], dtype=bool))
    assert m["rank_distance"] == 3.0  # ranks 1 and 4
    assert m["map@20"] == pytest.approx((1 + 2 / 4) / 2)


def test_ties_at_the_top_k_boundary_use_the_lowest_indices():
    # 30 documents tied at the top: the top 20 are docs 0..19, so doc 25 is outside the cut and doc 19 is in
    scores = np.zeros((2, 40))
    scores[:, :30] = 1.0
    relevance = np.zeros((2, 40), dtype=bool)
    relevance[0, 25] = True
    relevance[1, 19] = True
    per_query = retrieval_metrics(scores, relevance, reduction="none")
    assert per_query["map@20"][0] == 0.0
    assert per_query["map@20"][1] == pytest.approx(1 / 20)


def test_map_at_20_divides_by_min_of_relevant_and_20():
    # 25 relevant documents ranked first: LAReQA AP@20 = 20 / min(25, 20) = 1, trec's map_cut_20 = 20 / 25
    scores = -np.arange(30, dtype=np.float64)[None, :]
    relevance = np.zeros((1, 30), dtype=bool)
    relevance[0, :25] = True
    assert retrieval_metrics(scores, relevance)["map@20"] == pytest.approx(1.0)


def test_rank_distance_uses_the_full_ranking():
    # relevant docs at ranks 1 and 500: far beyond every cutoff
    n_docs = 600
    scores = -np.arange(n_docs, dtype=np.float32)[None, :]
    relevance = np.zeros((1, n_docs), dtype=bool)
    relevance[0, [0, 499]] = True
    assert retrieval_metrics(scores, relevance)["rank_distance"] == 499.0
    relevance[0, [0, 499]] = False
    relevance[0, [300, 550, 420]] = True  # neither end in the top 20
    assert retrieval_metrics(scores, relevance)["rank_distance"] == 250.0


def test_full_map_hand_computed():
    # ranking: doc3, doc1, doc2, doc4, doc0; relevant docs 1, 4, 0 at ranks 2, 4, 5
    scores = np.array([[0.1, 0.5, 0.3, 0.9, 0.2]])
    relevance = np.array([[1, 1, 0, 0, 1]], dtype=bool)
    m = ranking_metrics(scores, relevance, ["map", "map@2"])
    assert m["map"] == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    assert m["map@2"] == pytest.approx((1 / 2) / 2)


def test_full_map_counts_relevant_documents_beyond_every_cutoff():
    # relevant at ranks 1 and 500: map@20 sees one of them, map both
    scores = -np.arange(600, dtype=np.float32)[None, :]
    relevance = np.zeros((1, 600), dtype=bool)
    relevance[0, [0, 499]] = True
    m = ranking_metrics(scores, relevance, ["map@20", "map"])
    assert m["map@20"] == pytest.approx(1 / 2)
    assert m["map"] == pytest.approx((1 + 2 / 500) / 2)


def test_full_map_breaks_ties_by_lower_document_index():
    scores = np.full((1, 4), 0.5)  # ranks = index + 1
    assert ranking_metrics(scores, np.array([[0, 1, 0, 1]], dtype=bool), ["map"])["map"] == pytest.approx(
        (1 / 2 + 2 / 4) / 2
    )


def test_rank_distance_is_the_same_with_or_without_full_map():
    scores, relevance = random_case(40, 120, max_rel=15, seed=11, ties=True)
    alone = ranking_metrics(scores, relevance, ["rank_distance"], reduction="none")["rank_distance"]
    with_map = ranking_metrics(scores, relevance, ["map", "rank_distance"], reduction="none")["rank_distance"]
    np.testing.assert_array_equal(with_map, alone)


def test_cutoffs_beyond_the_number_of_documents():
    scores = np.array([[0.3, 0.2, 0.1]])
    relevance = np.array([[0, 0, 1]], dtype=bool)
    m = ranking_metrics(scores, relevance, ["recall@10", "precision@10", "map@20", "accuracy@2"])
    assert m == pytest.approx({"recall@10": 1.0, "precision@10": 0.1, "map@20": 1 / 3, "accuracy@2": 0.0})


# ------------------------------------------------------------------------------ against references


@pytest.mark.parametrize("ties", [False, True])
def test_matches_brute_force_reference(ties):
    scores, relevance = random_case(60, 150, max_rel=25, seed=1, ties=ties)
    got = retrieval_metrics(scores, relevance, reduction="none")
    want = reference_metrics(scores, relevance)
    for key in LAREQA_METRICS:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("ties", [False, True])
def test_full_map_matches_brute_force_reference(ties):
    scores, relevance = random_case(60, 150, max_rel=25, seed=1, ties=ties)
    scores[::3] *= 10  # some rows with relevant documents in the top 20, some without
    relevance[::4, reference_ranking(scores)[::4, 0]] = True
    got = ranking_metrics(scores, relevance, ["map", *LAREQA_METRICS], reduction="none")
    np.testing.assert_allclose(got["map"], reference_full_map(scores, relevance), rtol=1e-12, atol=1e-12)
    want = reference_metrics(scores, relevance)
    for key in LAREQA_METRICS:  # rank_distance now comes from the counted ranks
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_full_map_alone_without_any_cutoff_matches_the_reference():
    scores, relevance = random_case(30, 80, max_rel=6, seed=12, ties=True)
    got = ranking_metrics(scores, relevance, ["map"], reduction="none", chunk_size=7)["map"]
    np.testing.assert_allclose(got, reference_full_map(scores, relevance), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_block_preselection_of_the_top_k_matches_the_reference(monkeypatch, ties):
    import sentence_transformers_hybrid.metrics.retrieval as metrics

    # wide rows take the block-max path; force it on small rows (needs >= 4 * k * block), short last block
    monkeypatch.setattr(metrics, "_BLOCK", 4)
    monkeypatch.setattr(metrics, "_BLOCK_MIN_DOCS", 0)
    scores, relevance = random_case(60, 403, max_rel=25, seed=8, ties=ties)  # 403 = 100 * 4 + 3
    if ties:  # mostly 0, ~10% 1 (the k-th score: tied across blocks), a few 2 in high-index blocks
        rng = np.random.default_rng(9)
        scores = (rng.random(scores.shape) < 0.1) + (rng.random(scores.shape) < 0.01).astype(np.float32)
    scores[::2, -1] = scores.max() + 1  # the last document, alone in the short last block, ranks first
    got = retrieval_metrics(scores, relevance, reduction="none")
    want = reference_metrics(scores, relevance)
    for key in LAREQA_METRICS:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12, err_msg=key)
    order = reference_ranking(scores)[:, :20]
    np.testing.assert_array_equal(metrics._top_k(torch.from_numpy(scores), 20).numpy(), order)


def test_top_k_of_column_blocks_merge_into_the_top_k_of_the_rows():
    scores, relevance = random_case(30, 100, max_rel=12, seed=10, ties=True)
    edges = [0, 7, 40, 41, 100]  # blocks narrower and wider than k, one of a single document
    tops = [top_k_indices(scores[:, a:b], 20) + a for a, b in zip(edges, edges[1:])]
    merged = merge_top_k(scores, torch.cat(tops, 1), 20)
    np.testing.assert_array_equal(merged.numpy(), reference_ranking(scores)[:, :20])
    np.testing.assert_array_equal(top_k_indices(scores, 20).numpy(), reference_ranking(scores)[:, :20])
    with_top = ranking_metrics(scores, relevance, LAREQA_METRICS, top_indices=merged, reduction="none")
    without = retrieval_metrics(scores, relevance, reduction="none")
    for key in LAREQA_METRICS:
        np.testing.assert_array_equal(with_top[key], without[key])
    with pytest.raises(ValueError, match="top_indices has shape"):
        ranking_metrics(scores, relevance, LAREQA_METRICS, top_indices=merged[:, :10])


def test_chunking_does_not_change_results():
    scores, relevance = random_case(37, 90, max_rel=12, seed=2, ties=True)
    whole = retrieval_metrics(scores, relevance, chunk_size=1000, reduction="none")
    for chunk_size in (1, 5, 16):
        part = retrieval_metrics(scores, relevance, chunk_size=chunk_size, reduction="none")
        for key in LAREQA_METRICS:
            np.testing.assert_array_equal(part[key], whole[key])


def test_matches_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    scores, relevance = random_case(80, 300, max_rel=20, seed=3)  # distinct scores: no tie-breaking involved
    qrels = {f"q{q}": {f"d{d}": 1 for d in np.flatnonzero(relevance[q])} for q in range(len(scores))}
    run = {f"q{q}": {f"d{d}": float(s) for d, s in enumerate(scores[q])} for q in range(len(scores))}
    measures = {"ndcg_cut.10", "recall.1,10", "map_cut.20"}
    trec = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    got = retrieval_metrics(scores, relevance, reduction="none")
    for q in range(len(scores)):
        t = trec[f"q{q}"]
        assert got["ndcg@10"][q] == pytest.approx(t["ndcg_cut_10"], abs=1e-12)
        assert got["recall@1"][q] == pytest.approx(t["recall_1"], abs=1e-12)
        assert got["recall@10"][q] == pytest.approx(t["recall_10"], abs=1e-12)
        assert got["map@20"][q] == pytest.approx(t["map_cut_20"], abs=1e-12)  # every |R| <= 20


def test_full_map_matches_pytrec_eval_map_over_the_full_run():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    scores, relevance = random_case(80, 300, max_rel=40, seed=13)  # distinct scores; |R| up to 40 > 20
    qrels = {f"q{q}": {f"d{d}": 1 for d in np.flatnonzero(relevance[q])} for q in range(len(scores))}
    run = {f"q{q}": {f"d{d}": float(s) for d, s in enumerate(scores[q])} for q in range(len(scores))}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"map"}).evaluate(run)
    got = ranking_metrics(scores, relevance, ["map"], reduction="none")["map"]
    for q in range(len(scores)):
        assert got[q] == pytest.approx(trec[f"q{q}"]["map"], abs=1e-12)


def test_full_map_matches_beir_map_over_the_full_run():
    from beir.retrieval.evaluation import EvaluateRetrieval

    scores, relevance = random_case(40, 200, max_rel=10, seed=14)
    results = {f"q{q}": {f"d{d}": float(scores[q, d]) for d in range(200)} for q in range(len(scores))}
    qrels = {f"q{q}": {f"d{d}": 1 for d in np.flatnonzero(relevance[q])} for q in range(len(scores))}
    _, beir_map, _, _ = EvaluateRetrieval.evaluate(qrels, results, [200])  # MAP@200 = map over the whole run
    got = ranking_metrics(scores, relevance, ["map"])["map"]
    assert got == pytest.approx(beir_map["MAP@200"], abs=6e-6)  # BEIR rounds to 5 decimals


def test_map_differs_from_trec_map_cut_when_more_than_20_relevant():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    scores, relevance = random_case(20, 200, max_rel=60, seed=4)
    relevance[:, :25] = True  # every query has > 20 relevant documents
    qrels = {f"q{q}": {f"d{d}": 1 for d in np.flatnonzero(relevance[q])} for q in range(len(scores))}
    run = {f"q{q}": {f"d{d}": float(s) for d, s in enumerate(scores[q])} for q in range(len(scores))}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"map_cut.20"}).evaluate(run)
    got = retrieval_metrics(scores, relevance, reduction="none")["map@20"]
    n_rel = relevance.sum(1)
    for q in range(len(scores)):  # same sum of precisions, different denominator
        assert got[q] * 20 == pytest.approx(trec[f"q{q}"]["map_cut_20"] * n_rel[q], abs=1e-9)


def test_matches_beir_evaluate_retrieval():
    from beir.retrieval.evaluation import EvaluateRetrieval

    scores, relevance = random_case(50, 400, max_rel=10, seed=5)
    top = np.argsort(-scores, axis=1)[:, :100]
    results = {f"q{q}": {f"d{d}": float(scores[q, d]) for d in top[q]} for q in range(len(scores))}
    qrels = {f"q{q}": {f"d{d}": 1 for d in np.flatnonzero(relevance[q])} for q in range(len(scores))}
    ndcg, _map, recall, _p = EvaluateRetrieval.evaluate(qrels, results, [1, 10, 20, 100])
    mrr = EvaluateRetrieval.evaluate_custom(qrels, results, [10], metric="mrr")
    got = ranking_metrics(scores, relevance, ["ndcg@10", "recall@1", "recall@10", "recall@100", "mrr@10", "map@20"])
    # BEIR rounds to 5 decimals
    assert got["ndcg@10"] == pytest.approx(ndcg["NDCG@10"], abs=6e-6)
    assert got["recall@1"] == pytest.approx(recall["Recall@1"], abs=6e-6)
    assert got["recall@10"] == pytest.approx(recall["Recall@10"], abs=6e-6)
    assert got["recall@100"] == pytest.approx(recall["Recall@100"], abs=6e-6)
    assert got["mrr@10"] == pytest.approx(mrr["MRR@10"], abs=6e-6)
    assert got["map@20"] == pytest.approx(_map["MAP@20"], abs=6e-6)


# --------------------------------------------------------------------------------- input forms


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_dense_and_sparse_relevance_agree():
    scores, relevance = random_case(25, 70, max_rel=8, seed=6)
    want = retrieval_metrics(scores, relevance)
    forms = [
        torch.from_numpy(relevance),
        relevance.astype(np.int64),
        sp.csr_matrix(relevance),
        sp.coo_matrix(relevance.astype(np.float32)),
        torch.from_numpy(relevance).to_sparse(),
        torch.from_numpy(relevance.astype(np.float32)).to_sparse_csr(),
    ]
    for form in forms:
        assert retrieval_metrics(torch.from_numpy(scores), form) == want


def test_float64_and_float32_scores_agree_when_order_is_the_same():
    scores, relevance = random_case(10, 50, max_rel=5, seed=7)
    assert retrieval_metrics(scores.astype(np.float64), relevance) == retrieval_metrics(scores, relevance)


def test_sparse_explicit_zeros_are_not_relevant():
    scores = np.array([[0.9, 0.5, 0.1]])
    rel = sp.csr_matrix((np.array([0, 1]), np.array([0, 2]), np.array([0, 2])), shape=(1, 3))
    assert retrieval_metrics(scores, rel)["mrr@10"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_raise(bad):
    scores = np.zeros((3, 4))
    scores[2, 1] = bad
    with pytest.raises(ValueError, match=r"scores\[2, 1\].*finite"):
        retrieval_metrics(scores, np.ones((3, 4), dtype=bool))


def test_query_without_relevant_document_raises():
    relevance = np.ones((3, 4), dtype=bool)
    relevance[1] = False
    with pytest.raises(ValueError, match="query 1 has no relevant document"):
        retrieval_metrics(np.zeros((3, 4)), relevance)
    with pytest.raises(ValueError, match="query 1 has no relevant document"):
        retrieval_metrics(np.zeros((3, 4)), sp.csr_matrix(relevance))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"relevance has shape \(3, 5\) but scores has shape \(3, 4\)"):
        retrieval_metrics(np.zeros((3, 4)), np.ones((3, 5), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(np.zeros(4), np.ones(4, dtype=bool))


def test_graded_relevance_and_unknown_metrics_raise():
    with pytest.raises(ValueError, match="binary"):
        retrieval_metrics(np.zeros((1, 3)), np.array([[0, 2, 1]]))
    with pytest.raises(ValueError, match="unknown metric 'map@0'"):
        ranking_metrics(np.zeros((1, 3)), np.ones((1, 3), dtype=bool), ["map@0"])


def test_full_map_on_nan_scores_raises_the_kernel_error():
    scores = np.zeros((3, 4))
    scores[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"scores\[1, 2\] is nan.*finite"):
        ranking_metrics(scores, np.ones((3, 4), dtype=bool), ["map"])
