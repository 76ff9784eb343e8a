"""HybridBatchSampler against the stock sentence-transformers samplers, measured in the same run.

    /work/venv/bin/python benchmarks/bench_sampler.py [--groups 200000] [--languages 10] [--memory-groups 1000000]

1. One epoch, per yielded example: HybridBatchSampler (construction + plan + iteration, mode hybrid) vs
   DefaultBatchSampler over a RandomSampler (exactly what the trainer builds for BatchSamplers.BATCH_SAMPLER) on the
   corpus's rows, vs NoDuplicatesBatchSampler on a subset of those rows (it reads every row through the dataset,
   so a full 2M-row epoch takes minutes; its cost per example is scaled from the subset, and said so).
2. Index memory at 1M groups x 10 languages: the sampler's arrays, the dataset's storage, one epoch plan, and the
   tracemalloc peak while building them (the corpus itself excluded).
3. Training throughput of the stock trainer on a tiny StaticEmbedding model: hybrid sampler on corpus.to_dataset()
   vs the default sampler on the plain (query, passage) rows, same batch size and steps, alternated and repeated.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from anywhere: the package and tests/helpers_models.py live in the checkout
    sys.path.insert(0, ROOT)


def synthetic_corpus(n_groups: int, n_langs: int, missing: float = 0.0, seed: int = 0):
    """A ParallelCorpus built column-wise (no Python strings per row); ``missing`` = share of absent cells."""
    from sentence_transformers_hybrid.data.corpus import ParallelCorpus

    rng = np.random.default_rng(seed)
    mask = np.ones((n_groups, n_langs), dtype=bool)
    if missing:
        mask = rng.random((n_groups, n_langs)) >= missing
        mask[np.arange(n_groups), rng.integers(0, n_langs, n_groups)] = True
    row_index = np.full(mask.shape, -1, dtype=np.int64)
    row_index[mask] = np.arange(int(mask.sum()))
    ids = pc.cast(pa.array(np.arange(int(mask.sum()))), pa.string())
    queries = pc.binary_join_element_wise("question number", ids, " ").cast(pa.large_string())
    passages = pc.binary_join_element_wise("the passage that answers question", ids, " ").cast(pa.large_string())
    groups = pc.cast(pa.array(np.arange(n_groups)), pa.string()).to_pylist()
    return ParallelCorpus(groups, [f"l{i:02d}" for i in range(n_langs)], row_index, queries, passages)


def bench_epoch(corpus, batch_size: int, subset: int, repeats: int = 5) -> None:
    import torch
    from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler
    from torch.utils.data import RandomSampler

    from sentence_transformers_hybrid.sampling import HybridBatchSampler

    print(f"\n== 1. one epoch, batch {batch_size}: {len(corpus):,} groups x {len(corpus.languages)} languages "
          f"({corpus.num_rows:,} rows)")
    t = time.perf_counter()
    ds = corpus.to_dataset()
    t_ds = time.perf_counter() - t
    factory = HybridBatchSampler.configure(corpus, alpha=0.5, mode="hybrid")
    rows = corpus.to_hf_dataset().select_columns(["query", "passage"])
    gen = torch.Generator().manual_seed(42)

    def hybrid_epoch(epoch: int) -> int:
        sampler = factory(ds, batch_size=batch_size, drop_last=False, seed=42)
        sampler.set_epoch(epoch)
        return sum(len(b) for b in sampler)

    def default_epoch(epoch: int) -> int:  # what the trainer builds for BatchSamplers.BATCH_SAMPLER
        sampler = DefaultBatchSampler(RandomSampler(rows, generator=gen), batch_size=batch_size, drop_last=False,
                                      generator=gen, seed=42)
        sampler.set_epoch(epoch)
        return sum(len(b) for b in sampler)

    best = {"hybrid": math.inf, "default": math.inf}
    counts = {}
    for epoch in range(repeats):  # alternate, keep the best: the machine is shared
        for name, fn in (("hybrid", hybrid_epoch), ("default", default_epoch))[:: 1 if epoch % 2 == 0 else -1]:
            t = time.perf_counter()
            counts[name] = fn(epoch)
            best[name] = min(best[name], time.perf_counter() - t)
    t_hybrid, n_hybrid, t_default, n_default = best["hybrid"], counts["hybrid"], best["default"], counts["default"]
    print(f"  to_dataset(): {t_ds:.2f} s for {len(ds):,} pair rows (index built once per corpus)")
    print(f"  best of {repeats} epochs (fresh sampler + plan + iteration each):")
    print(f"  HybridBatchSampler   : {t_hybrid:7.3f} s, {n_hybrid:,} examples -> {1e9 * t_hybrid / n_hybrid:8.1f} ns/example")
    print(f"  DefaultBatchSampler  : {t_default:7.3f} s, {n_default:,} examples -> {1e9 * t_default / n_default:8.1f} ns/example")

    sub = rows.select(range(min(subset, len(rows))))
    t = time.perf_counter()
    nodup = NoDuplicatesBatchSampler(sub, batch_size=batch_size, drop_last=False, generator=gen, seed=42)
    n_nodup = sum(len(b) for b in nodup)
    t_nodup = time.perf_counter() - t
    print(f"  NoDuplicatesBatchSampler on a {len(sub):,}-row subset: {t_nodup:7.2f} s, {n_nodup:,} examples -> "
          f"{1e9 * t_nodup / n_nodup:8.1f} ns/example (scaled per example)")
    per_h, per_d, per_n = t_hybrid / n_hybrid, t_default / n_default, t_nodup / n_nodup
    print(f"  RATIO hybrid / default (per example)       = {per_h / per_d:.3f}  (target <= 1)")
    print(f"  RATIO no_duplicates / hybrid (per example) = {per_n / per_h:.1f}x")


def bench_epoch_missing(n_groups: int, n_langs: int, batch_size: int, repeats: int = 3) -> None:
    """MLQA-like data: half the cells missing, ~1000 language sets: the max-flow path."""
    import torch
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from torch.utils.data import RandomSampler

    from sentence_transformers_hybrid.sampling import HybridBatchSampler

    corpus = synthetic_corpus(n_groups, n_langs, missing=0.5)
    print(f"\n== 1b. one epoch with missing languages (50% of cells, {int(np.unique(corpus.row_index >= 0, axis=0).shape[0])} "
          f"language sets): {len(corpus):,} groups, {corpus.num_rows:,} rows")
    ds = corpus.to_dataset()
    rows = corpus.to_hf_dataset().select_columns(["query", "passage"])
    gen = torch.Generator().manual_seed(0)
    t_default = math.inf
    for epoch in range(repeats):
        t = time.perf_counter()
        n_default = sum(len(b) for b in DefaultBatchSampler(RandomSampler(rows, generator=gen), batch_size=batch_size,
                                                            drop_last=False, generator=gen, seed=0))
        t_default = min(t_default, time.perf_counter() - t)
    print(f"  DefaultBatchSampler  : {1e9 * t_default / n_default:8.1f} ns/example")
    for mode in ("hybrid", "mono", "cross", "mixed"):
        factory = HybridBatchSampler.configure(corpus, mode=mode)  # hybrid: the default alpha 0.5
        best = math.inf
        for epoch in range(repeats):
            t = time.perf_counter()
            sampler = factory(ds, batch_size=batch_size, drop_last=False, seed=0)
            sampler.set_epoch(epoch)
            n = sum(len(b) for b in sampler)
            best = min(best, time.perf_counter() - t)
        print(f"  HybridBatchSampler {mode:6s}: {1e9 * best / n:8.1f} ns/example  "
              f"RATIO / default = {(best / n) / (t_default / n_default):.3f}")


def bench_memory(n_groups: int, n_langs: int, batch_size: int) -> None:
    from sentence_transformers_hybrid.sampling import HybridBatchSampler, PairLayout

    print(f"\n== 2. index memory: {n_groups:,} groups x {n_langs} languages")
    corpus = synthetic_corpus(n_groups, n_langs)
    gc.collect()
    tracemalloc.start()
    ds = corpus.to_dataset()
    sampler = HybridBatchSampler.configure(corpus, alpha=0.5)(ds, batch_size=batch_size, drop_last=False, seed=0)
    plan = sampler.epoch_plan()
    _, peak = tracemalloc.get_traced_memory()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    layout: PairLayout = sampler.layout
    buffers = {}
    for col in ds.data.table.columns:
        for chunk in col.chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    buffers[buf.address] = buf.size
    plan_bytes = sum(a.nbytes for a in (plan.pairs, plan.bounds, plan.batch_mode, plan.batch_language,
                                       plan.batch_source, plan.step))
    mb = 1 / 2**20
    print(f"  corpus.row_index (owned by the corpus) : {corpus.row_index.nbytes * mb:8.1f} MiB")
    print(f"  sampler index arrays (PairLayout)      : {layout.nbytes() * mb:8.1f} MiB")
    print(f"  dataset storage ({len(ds):,} pair rows)  : {sum(buffers.values()) * mb:8.3f} MiB")
    print(f"  one epoch plan                         : {plan_bytes * mb:8.1f} MiB")
    print(f"  tracemalloc: held {current * mb:.1f} MiB, peak {peak * mb:.1f} MiB while building dataset+sampler+plan")
    print(f"  RATIO peak / 1 GiB = {peak / 2**30:.3f}  (target well under 1)")


class _StepClock:
    """Times the steps after ``warmup`` (the trainer's start-up, gc and first batches excluded)."""

    def __new__(cls, warmup: int):
        from transformers import TrainerCallback

        class Clock(TrainerCallback):
            def __init__(self) -> None:
                self.start = self.end = self.cpu_start = self.cpu_end = 0.0

            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == warmup:
                    self.start, self.cpu_start = time.perf_counter(), time.process_time()
                self.end, self.cpu_end = time.perf_counter(), time.process_time()

        return Clock()


def bench_training(n_groups: int, n_langs: int, batch_size: int, steps: int, repeats: int, warmup: int = 20,
                   model_kind: str = "static") -> None:
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers.utils import logging as hf_logging

    from sentence_transformers_hybrid.sampling import HybridBatchSampler

    hf_logging.set_verbosity_error()
    what = "StaticEmbedding(dim 64)" if model_kind == "static" else "tiny BERT (2 layers, hidden 64, random init)"
    print(f"\n== 3. training throughput: {n_groups:,} groups x {n_langs} languages, batch {batch_size}, {steps} steps "
          f"(timed after {warmup}), {what}, {repeats} alternated runs each, 1 torch thread")
    corpus = synthetic_corpus(n_groups, n_langs)
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus.query_texts(np.arange(0, corpus.num_rows, 7)) + ["the passage that answers Query: Passage:"],
                            trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))
    rows = corpus.to_hf_dataset().select_columns(["query", "passage"])

    def run(kind: str, out: str) -> float:
        if model_kind == "static":
            model = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_dim=64)], device="cpu")
        else:
            from sentence_transformers_hybrid.testing import tiny_transformer_model

            texts = corpus.query_texts(np.arange(0, corpus.num_rows, 50)) + corpus.passage_texts(np.arange(0, corpus.num_rows, 50))
            model = tiny_transformer_model(out + "-model", texts, hidden_size=64, intermediate_size=128)
        kwargs = dict(output_dir=out, per_device_train_batch_size=batch_size, learning_rate=3e-5, weight_decay=0.01,
                      prompts={"query": "Query: ", "passage": "Passage: "}, max_steps=steps, report_to="none",
                      use_cpu=True, disable_tqdm=True, save_strategy="no", logging_strategy="no", seed=0)
        callbacks = [_StepClock(warmup)]
        clock = callbacks[0]
        if kind == "hybrid":
            factory = HybridBatchSampler.configure(corpus, alpha=0.5, mode="hybrid")
            args = SentenceTransformerTrainingArguments(batch_sampler=factory, **kwargs)
            train = corpus.to_dataset()
            callbacks.append(factory.callback)
        else:
            args = SentenceTransformerTrainingArguments(**kwargs)
            train = rows
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                             loss=MultipleNegativesRankingLoss(model), callbacks=callbacks)
        trainer.train()
        n = (steps - warmup) * batch_size  # steady state: start-up excluded
        return n / (clock.cpu_end - clock.cpu_start), n / (clock.end - clock.start)

    import tempfile

    import torch

    torch.set_num_threads(1)  # less sensitive to other processes on a shared machine
    cpu: dict[str, list[float]] = {"default": [], "hybrid": []}
    wall: dict[str, list[float]] = {"default": [], "hybrid": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):  # alternate the order: the machine may be shared
            for kind in (("default", "hybrid") if r % 2 == 0 else ("hybrid", "default")):
                c, w = run(kind, os.path.join(tmp, kind))
                cpu[kind].append(c)
                wall[kind].append(w)
    for kind in ("default", "hybrid"):
        print(f"  {kind:7s} sampler: median {np.median(cpu[kind]):7.0f} examples per CPU-second (runs: "
              + ", ".join(f"{x:.0f}" for x in cpu[kind]) + f"); wall-clock median {np.median(wall[kind]):7.0f}/s")
    paired = [h / d for h, d in zip(cpu["hybrid"], cpu["default"])]
    print(f"  RATIO hybrid / default throughput (CPU time, median) = "
          f"{np.median(cpu['hybrid']) / np.median(cpu['default']):.3f}  (target >= 0.95); median of paired runs "
          f"{np.median(paired):.3f}")
    print(f"  RATIO hybrid / default throughput (wall clock, median; noisy on a shared machine) = "
          f"{np.median(wall['hybrid']) / np.median(wall['default']):.3f}")

    # the data path alone (what the sampler choice changes): dataset fetch + transform per batch
    ds, sampler_batches = corpus.to_dataset(), None
    sampler = HybridBatchSampler.configure(corpus)(ds, batch_size=batch_size, drop_last=False, seed=0)
    sampler_batches = list(sampler)[:200]
    rng = np.random.default_rng(0)
    default_batches = [rng.choice(len(rows), batch_size, replace=False).tolist() for _ in range(200)]
    fetch = {"default": math.inf, "hybrid": math.inf}
    for _ in range(5):
        for kind, data, batches in (("hybrid", ds, sampler_batches), ("default", rows, default_batches)):
            t = time.perf_counter()
            for b in batches:
                data.__getitems__(b)
            fetch[kind] = min(fetch[kind], (time.perf_counter() - t) / len(batches))
    step = batch_size / np.median(cpu["default"])
    delta = fetch["hybrid"] - fetch["default"]
    print(f"  data fetch per batch of {batch_size} (best of 3 x 200 batches): hybrid {1e3 * fetch['hybrid']:.2f} ms "
          f"(pair ids + transform), default {1e3 * fetch['default']:.2f} ms (text rows); default step "
          f"{1e3 * step:.1f} CPU-ms")
    print(f"  RATIO hybrid / default throughput implied by the data path = step / (step + extra fetch) = "
          f"{step / (step + max(delta, 0.0)):.3f}  (the only per-step work the sampler choice changes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=200_000)
    parser.add_argument("--languages", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--nodup-subset", type=int, default=20_000)
    parser.add_argument("--memory-groups", type=int, default=1_000_000)
    parser.add_argument("--train-groups", type=int, default=20_000)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--skip", nargs="*", default=[], choices=["epoch", "memory", "training", "transformer"])
    args = parser.parse_args()
    if "epoch" not in args.skip:
        bench_epoch(synthetic_corpus(args.groups, args.languages), args.batch_size, args.nodup_subset)
    if "epoch" not in args.skip:
        bench_epoch_missing(args.groups, args.languages, args.batch_size)
    if "memory" not in args.skip:
        bench_memory(args.memory_groups, args.languages, args.batch_size)
    if "training" not in args.skip:
        bench_training(args.train_groups, args.languages, 64, args.train_steps, args.repeats)
    if "transformer" not in args.skip:
        bench_training(args.train_groups, args.languages, 64, args.train_steps // 2, args.repeats, warmup=10,
                       model_kind="transformer")


if __name__ == "__main__":
    main()
