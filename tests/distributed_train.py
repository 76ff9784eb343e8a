"""Worker of tests/test_distributed.py, run under ``torchrun --nproc_per_node=2`` (gloo, CPU).

Each rank trains three times with the stock ``SentenceTransformerTrainer``, ``HybridBatchSampler`` and
``hybrid_loss(..., gather_across_devices=True)``: an uninterrupted run, the same run stopped right after the
checkpoint of a step in epoch 1, and that run resumed from its checkpoint. It records the (group, query language,
passage language, source) of every example each rank trained on, step by step, and writes them to
``<out>/rank<r>.json``. The checks live in the test, which reads both ranks' files.

Usage: ``torchrun --nproc_per_node=2 tests/distributed_train.py OUT_DIR``
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LANGUAGES = ("de", "en", "fr")
SOURCES = ("a", "b")
GROUPS_PER_SOURCE = 24  # with batch 4 x 2 ranks: 3 global batches per source, 6 steps per epoch
BATCH_SIZE = 4
MAX_STEPS = 15  # epochs 0, 1 and part of 2
STOP_AT = 8  # epoch 1, after 2 of its 6 steps: the resume must skip into epoch 1's order, not epoch 0's


def records() -> list[dict[str, str]]:
    return [
        {"group": f"{src}{g}", "lang": lang, "source": src,
         "query": f"question {src}{g} {lang}", "passage": f"answer {src}{g} {lang}"}
        for src in SOURCES for g in range(GROUPS_PER_SOURCE) for lang in LANGUAGES
    ]


def train(out: Path, stop_at: int | None = None, resume: str | None = None) -> list[list[list[str]]]:
    """Train once; return this rank's batches in step order, each a list of [group, qlang, plang, source]."""
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    from sentence_transformers_hybrid import HybridBatchSampler, ParallelCorpus, save_from_main_process
    from sentence_transformers_hybrid.losses import hybrid_loss
    from sentence_transformers_hybrid.testing import tiny_static_model

    recs = records()
    by_query = {r["query"]: r for r in recs}
    by_passage = {r["passage"]: r for r in recs}
    corpus = ParallelCorpus.from_records(recs)
    model = tiny_static_model([r["query"] + " " + r["passage"] for r in recs], dim=16, seed=0)
    factory = HybridBatchSampler.configure(corpus, alpha=0.5, mode="hybrid")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BATCH_SIZE, learning_rate=1e-2, max_steps=MAX_STEPS,
        save_strategy="steps", save_steps=STOP_AT, use_cpu=True, ddp_backend="gloo", report_to="none",
        disable_tqdm=True, logging_steps=100, seed=0, dataloader_num_workers=0, batch_sampler=factory,
    )

    class Stop(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.first_step = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            if stop_at is not None and state.global_step >= stop_at:
                control.should_training_stop = True  # the checkpoint of this step is still saved

    stop = Stop()
    trainer = save_from_main_process(SentenceTransformerTrainer(  # else both ranks write each checkpoint at once
        model=model, args=args, train_dataset=corpus.to_dataset(),
        loss=hybrid_loss(model, gather_across_devices=True), callbacks=[factory.callback, stop],
    ))
    seen: list[tuple[str, list[str]]] = []
    preprocess = trainer.data_collator.preprocess_fn

    def spy(inputs, prompt=None, **kwargs):  # called per column (query, then passage) of every collated batch
        seen.append((prompt, list(inputs)))
        return preprocess(inputs, prompt=prompt, **kwargs)

    trainer.data_collator.preprocess_fn = spy
    trainer.train(resume_from_checkpoint=resume)
    trained = trainer.state.global_step - stop.first_step  # the data loader fetches one batch ahead: drop it
    batches = []
    for (_, queries), (_, passages) in list(zip(seen[0::2], seen[1::2]))[:trained]:
        rows = []
        for q, p in zip(queries, passages):
            rq, rp = by_query[q], by_passage[p]
            assert rq["group"] == rp["group"], (q, p)
            rows.append([rq["group"], rq["lang"], rp["lang"], rq["source"]])
        batches.append(rows)
    torch.distributed.barrier()
    return batches


def main(out_dir: str) -> None:
    import torch.distributed as dist

    out = Path(out_dir)
    full = train(out / "full")
    stopped = train(out / "stopped", stop_at=STOP_AT)
    resumed = train(out / "stopped", resume=str(out / "stopped" / f"checkpoint-{STOP_AT}"))
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {"rank": rank, "world_size": world, "batch_size": BATCH_SIZE, "stop_at": STOP_AT,
              "max_steps": MAX_STEPS, "full": full, "stopped": stopped, "resumed": resumed}
    (out / f"rank{rank}.json").write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
