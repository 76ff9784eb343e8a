"""Fine-tuning speed of multilingual-e5-small on this CPU: float32 padded vs bf16 vs the preset's path.

All parts of one run train on the SAME batches, the protocol's own: ``HybridBatchSampler`` (mode hybrid, alpha 0.5,
seed 0, batch 64) over the XQuAD-R 11-language (question, answer sentence) corpus, ``"query: "`` / ``"passage: "``
prompts, ``max_seq_length`` 128, MNRL scale 20, AdamW lr 3e-5 wd 0.01, every parameter trained, grad-norm clipping
at 1.0 (the trainer's default). One warm-up step, then ``--steps`` timed steps.

* (a) baseline: a raw torch loop in float32, the stock MNRL on batches padded to their longest text, the model as
  ``convert_e5_small()`` loads it (SDPA attention, 250k-piece vocabulary).
* (b) the same raw loop under ``torch.autocast("cpu", dtype=torch.bfloat16)``.
* (c0) the committed path before issue 24: the stock ``SentenceTransformerTrainer`` + ``HybridBatchSampler`` +
  ``hybrid_loss(model, chunk_size=...)`` (length-sorted chunks), ``bf16=True`` (checked to autocast), eager
  attention, the vocabulary trimmed to the XQuAD-R + MLQA-R texts (cached).
* (c) the compiled path of issue 24 (the ``finetune`` preset's ``compile_encoder`` option, off by default until a
  run alone shows it faster): (c0) with ``hybrid_loss(..., compile_encoder=True)``: the encoder layers compiled by
  ``torch.compile`` (inductor) on chunks of fixed rows and bucketed widths. Its graphs are built before the steps
  (one synthetic chunk per width bucket, untimed; the compile time is printed); the graphs dynamo built and those
  built during the timed steps are printed, and a new graph in more than half of them is reported as a
  recompilation storm.
* (p) the packed path (``pack_tokens=True``, off by default): (c0) with each column one unpadded sequence of its real
  tokens through the model's linear layers, layer norms and dropout, attention per chunk of ``--chunk-size`` rows
  (``sentence_transformers_hybrid._packed``). ``--profile`` prints a torch.profiler breakdown of one step of the
  chunked and the packed path in ``--precision`` (what remains).
* (pf) (p) with ``fast_dropout=True``: the dropout masks drawn from 64-bit random integers
  (``sentence_transformers_hybrid._dropout``; same rate, another random stream).

It prints the CPU and its bf16 flags, the load average with every result, pairs/s, the ratios (c)/(a) and (b)/(a),
the float32 and bf16 matmul rates measured in the same run and the limit they imply for the real (unpadded) token
counts. Timings taken while other jobs share the cores are noisy: compare the parts of one run (same batches, the
steps interleaved with the same idle wait), not runs. ``--explore`` adds raw bf16 loops on the trimmed model over chunk sizes and attention implementations, the
per-step overheads outside the matrix products (optimizer, clipping, tokenization, trainer) and a torch.profiler
breakdown of one bf16 step, uncompiled and compiled (what remains).

    STH_DATA_DIR=/work/shared/data/lareqa python benchmarks/bench_finetune.py --steps 6
    STH_DATA_DIR=/work/shared/data/lareqa python benchmarks/bench_finetune.py --steps 6 --explore
    STH_DATA_DIR=/work/shared/data/lareqa python benchmarks/bench_finetune.py --steps 3 --parts a,c0,c  # no bf16 CPU
    STH_DATA_DIR=/work/shared/data/lareqa python benchmarks/bench_finetune.py --steps 4 --parts a,c0,p,pf --precision fp32 --profile
    STH_DATA_DIR=/work/shared/data/lareqa python benchmarks/bench_finetune.py --steps 3 --rounds 3 --parts c0,p,pf --precision fp32  # a drifting machine
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

PROMPTS = {"query": "query: ", "passage": "passage: "}
LR, WD, SCALE, MAX_GRAD_NORM = 3e-5, 0.01, 20.0, 1.0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


# Other people's jobs share the 2 cores. Before every timed step the benchmark waits (untimed) until the CPUs are
# mostly idle, so that a step measures this machine rather than its neighbours; --wait-idle 0 turns that off.
WAIT = {"idle": 0.0, "max_s": 0.0}
STEP_IDLE: list[float] = []  # the idle fraction seen before each step, reported with each result


def cpu_idle(seconds: float = 0.5) -> float:
    """Fraction of the machine's CPU time spent idle over ``seconds`` (from /proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
        return values[3] + values[4], sum(values)

    try:
        idle0, total0 = snap()
        time.sleep(seconds)
        idle1, total1 = snap()
    except OSError:
        return 1.0
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_for_idle() -> None:
    """Block until the CPUs are ``WAIT["idle"]`` idle (or ``WAIT["max_s"]`` passed); records what it saw."""
    if WAIT["idle"] <= 0:
        return
    start = time.perf_counter()
    while True:
        idle = cpu_idle()
        if idle >= WAIT["idle"] or time.perf_counter() - start > WAIT["max_s"]:
            STEP_IDLE.append(idle)
            return


def cpu_line() -> str:
    """The CPU as the run records name it, its family / model numbers and the flags that decide bf16 speed."""
    from sentence_transformers_hybrid.experiment.devices import cpu_info, cpuinfo_fields

    info, fields = cpu_info(), cpuinfo_fields()
    flags = set(fields.get("flags", "").split())
    shown = " ".join(f"{f}={'yes' if f in flags else 'no'}"
                     for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"))
    return (f"CPU: {info['model']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}); "
            f"{info['cores']} logical CPUs; {shown}")


# ------------------------------------------------------------------------------------------------------------ matmul
def matmul_rate(dtype: torch.dtype, m: int = 4096, k: int = 384, n: int = 1536, seconds: float = 1.5) -> float:
    """GFLOP/s of an (m x k) @ (k x n) matmul in ``dtype`` (best of repeated timed blocks)."""
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    for _ in range(3):
        a @ b
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        best = min(best, (time.perf_counter() - t) / 5)
    return 2 * m * k * n / best / 1e9


def matmul_rates(names: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, float]:
    """The rates of a layer's three training matmul shapes (forward, input grad, weight grad), averaged."""
    rates = {}
    wait_for_idle()
    STEP_IDLE.clear()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for name in names:  # wake the thread pool and the oneDNN kernels first
        matmul_rate(dtypes[name], seconds=0.5)
    for name, dtype in ((n, dtypes[n]) for n in names):
        shapes = [(4096, 384, 1536), (4096, 1536, 384), (384, 4096, 1536)]
        each = [matmul_rate(dtype, *s) for s in shapes]
        rates[name] = each[0]
        rates[name + " (fwd, dgrad, wgrad)"] = each
        rates[name + " mean"] = len(each) / sum(1 / r for r in each)
    return rates


# ------------------------------------------------------------------------------------------------------------ data
def protocol_batches(data_dir: str | None, n: int, batch_size: int, seed: int):
    """The first ``n`` hybrid batches (query texts, passage texts) the trainer draws for ``seed``."""
    from sentence_transformers_hybrid import HybridBatchSampler, load_lareqa

    corpus = load_lareqa("xquad-r", data_dir=data_dir).to_parallel_corpus(passage="sentence")
    dataset = corpus.to_dataset()
    sampler = HybridBatchSampler.configure(corpus, mode="hybrid", alpha=0.5)(
        dataset, batch_size=batch_size, drop_last=False, seed=seed
    )
    batches = []
    for indices in sampler:
        rows = dataset[indices]
        batches.append((list(rows["query"]), list(rows["passage"])))
        if len(batches) == n:
            break
    return corpus, batches


def model_paths(data_dir: str) -> tuple[str, str]:
    """The converted e5-small and its vocabulary trimmed to the XQuAD-R + MLQA-R texts (both cached)."""
    from sentence_transformers_hybrid.models.e5 import convert_e5_small, e5_cache_dir
    from sentence_transformers_hybrid.models.trim import collect_texts, trim_vocabulary

    full = convert_e5_small()
    trimmed = e5_cache_dir() / f"{Path(full).name}-lareqa-trim"
    if not (trimmed / "modules.json").is_file():
        texts = collect_texts(data_dir)  # XQuAD-R + MLQA-R: questions, sentences, contexts
        trim_vocabulary(full, texts, trimmed)
    return full, str(trimmed)


def load_model(path: str, attn: str, max_seq_length: int):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu", model_kwargs={"attn_implementation": attn})
    got = model[0].auto_model.config._attn_implementation
    if got != attn:
        raise RuntimeError(f"asked for attn_implementation={attn!r}, the model uses {got!r}")
    model.max_seq_length = max_seq_length
    return model


def features_of(model, queries, passages):
    return [model.preprocess(queries, prompt=PROMPTS["query"]), model.preprocess(passages, prompt=PROMPTS["passage"])]


# ------------------------------------------------------------------------------------------------------------ FLOPs
def layer_flops(lengths: list[int], hidden: int, ffn: int, layers: int) -> float:
    """Training FLOPs (forward + 2x backward) of the encoder layers on sequences of these lengths."""
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * ffn)  # Q, K, V, O and the two FFN matrices
    total = sum(per_token * n + 2 * 2 * n * n * hidden for n in lengths)  # + QK^T and AV
    return 3.0 * layers * total


def chunk_widths(lengths: list[int], chunk_size: int | None) -> list[int]:
    """The width every row is computed at: the batch's longest (None) or its length-sorted chunk's longest."""
    if chunk_size is None:
        return [max(lengths)] * len(lengths)
    ordered = sorted(lengths, reverse=True)
    return [ordered[i - i % chunk_size] for i in range(len(ordered))]


def token_stats(model, batches, chunk_sizes):
    cfg = model[0].auto_model.config
    dims = (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers)
    stats = {"real": 0.0, "padded": 0.0, **{f"chunk{c}": 0.0 for c in chunk_sizes}}
    tokens = {"query": [], "passage": [], "query padded": [], "passage padded": []}
    for q, p in batches:
        for side, f in zip(("query", "passage"), features_of(model, q, p)):
            lengths = f["attention_mask"].sum(1).tolist()
            tokens[side].append(statistics.mean(lengths))
            tokens[side + " padded"].append(max(lengths))
            stats["real"] += layer_flops(lengths, *dims)
            stats["padded"] += layer_flops(chunk_widths(lengths, None), *dims)
            for c in chunk_sizes:
                stats[f"chunk{c}"] += layer_flops(chunk_widths(lengths, c), *dims)
    n = len(batches)
    return {k: v / n for k, v in stats.items()}, {k: statistics.mean(v) for k, v in tokens.items()}


# ------------------------------------------------------------------------------------------------------------ loops
def raw_loop(path, batches, *, bf16, attn, chunk_size, max_seq_length, warmup, fused=False, profile=None,
             embed_once=True, dropout: bool | str = True, compile_encoder=False, pack_tokens=False,
             fast_dropout=False):
    """A plain torch training loop; returns the timed steps' seconds (after ``warmup`` steps). ``dropout="bits"``:
    the loss's ``fast_dropout`` (masks from 64-bit random draws, ``sentence_transformers_hybrid._dropout``)."""
    from sentence_transformers_hybrid.losses import LengthSortedMultipleNegativesRankingLoss, hybrid_loss

    torch.manual_seed(0)
    model = load_model(path, attn, max_seq_length)
    model.train()
    if not dropout:  # hidden and attention dropout (both read nn.Dropout.p) off
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    loss_fn = hybrid_loss(model, scale=SCALE, chunk_size=chunk_size, compile_encoder=compile_encoder,
                          pack_tokens=pack_tokens, fast_dropout=fast_dropout or dropout == "bits")
    if isinstance(loss_fn, LengthSortedMultipleNegativesRankingLoss):
        loss_fn.embed_once = embed_once
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, fused=fused or None)
    times = _steps(model, loss_fn, optimizer, batches, bf16=bf16, warmup=warmup, profile=profile)
    del model, optimizer
    return times


def _steps(model, loss_fn, optimizer, batches, *, bf16, warmup, profile):
    times = []
    for i, (queries, passages) in enumerate(batches):
        prof = profile if (profile is not None and i == len(batches) - 1) else contextlib.nullcontext()
        if i >= warmup:
            wait_for_idle()
        t = time.perf_counter()
        with prof:
            features = features_of(model, queries, passages)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(features, None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def trainer_loop(path, corpus, batches, *, attn, chunk_size, max_seq_length, warmup, batch_size, seed,
                 optim="adamw_torch_fused", compile_encoder=False, bf16=True, pack_tokens=False, fast_dropout=False):
    """The stock trainer; returns (timed step seconds, details: autocast seen, same batches, setup seconds)."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    from sentence_transformers_hybrid import HybridBatchSampler
    from sentence_transformers_hybrid.losses import hybrid_loss

    class StepClock(TrainerCallback):
        """Step times from one step's end to the next's (batch drawing and collation included), minus the wait."""

        def __init__(self):
            self.marks, self.waits, self.wait, self.graphs = [], [], 0.0, []

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

        def on_step_begin(self, args, state, control, **kwargs):
            t = time.perf_counter()
            if state.global_step >= warmup:
                wait_for_idle()
            self.wait = time.perf_counter() - t

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())
            self.waits.append(self.wait)
            self.graphs.append(loss.training_path()["compiles"] if hasattr(loss, "training_path") else 0)

    torch.manual_seed(seed)
    t_setup = time.perf_counter()
    model = load_model(path, attn, max_seq_length)
    steps = len(batches)
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out, per_device_train_batch_size=batch_size, learning_rate=LR, weight_decay=WD,
            warmup_steps=0.1, lr_scheduler_type="linear", max_steps=steps, seed=seed, bf16=bf16, use_cpu=True,
            optim=optim, max_grad_norm=MAX_GRAD_NORM,
            # nothing the run does not need: no checkpoints, no progress bar, one log line at the end, no workers
            # (a worker process would take one of the two cores from the matrix products), no pinned memory
            save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_num_workers=0, dataloader_pin_memory=False, dataloader_drop_last=False,
            batch_sampler=HybridBatchSampler.configure(corpus, mode="hybrid", alpha=0.5),
            prompts=dict(PROMPTS),
        )
        loss = hybrid_loss(model, scale=SCALE, chunk_size=chunk_size, compile_encoder=compile_encoder,
                           pack_tokens=pack_tokens, fast_dropout=fast_dropout)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=corpus.to_dataset(), loss=loss)
        clock = StepClock()
        trainer.add_callback(clock)
        seen, autocast = [], []
        collate = trainer.data_collator.preprocess_fn

        def spy(inputs, prompt=None, **kwargs):
            seen.append(list(inputs))
            return collate(inputs, prompt=prompt, **kwargs)

        trainer.data_collator.preprocess_fn = spy
        # the autocast state seen by the encoder (a hook on an encoder layer's Linear would give that layer its own
        # compiled graph)
        hook = model[0].register_forward_pre_hook(
            lambda m, i: autocast.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            if len(autocast) < 1 else None
        )
        setup = time.perf_counter() - t_setup
        t_compile = time.perf_counter()
        if compile_encoder:
            precompile(model, loss, chunk_size, max_seq_length, bf16)
        compile_s = time.perf_counter() - t_compile
        trainer.train()
        hook.remove()
    marks = clock.marks
    times = [b - a - w for a, b, w in zip(marks[:-1], marks[1:], clock.waits)][warmup:]
    drawn = list(zip(seen[0::2], seen[1::2]))
    graphs = clock.graphs
    new_graphs = [b - a for a, b in zip(graphs[warmup - 1:], graphs[warmup:])] if warmup else graphs
    details = {
        "autocast": autocast[0] if autocast else None,
        "same batches": drawn[: len(batches)] == [(q, p) for q, p in batches],
        "setup s": setup,
        "compile s": compile_s,
        "warm-up s": (marks[warmup] - marks[0]) if len(marks) > warmup else float("nan"),
        "path": loss.training_path() if hasattr(loss, "training_path") else None,
        "new graphs in timed steps": new_graphs,
    }
    del trainer, model
    return times, details


def precompile(model, loss, chunk_size, max_seq_length, bf16):
    """Build the compiled loss's graphs for every width bucket up to ``max_seq_length`` before the timed steps.

    One forward and backward of a synthetic batch whose two columns are one chunk of ``chunk_size`` rows at that
    width (under the trainer's autocast); gradients are then dropped and the weights are not stepped. The trainer
    reseeds at ``train()``, so the steps that follow draw the same batches and dropout stream as without it.
    """
    from sentence_transformers_hybrid._compile import WIDTH_BUCKETS, bucket_width

    top = bucket_width(max_seq_length)
    model.train()
    for width in [b for b in WIDTH_BUCKETS if b < top] + [top]:
        ids = torch.full((chunk_size, width), 5, dtype=torch.long)
        mask = torch.ones_like(ids)
        mask[-1, -1] = 0  # padding, as in real chunks: an all-ones mask lets the model drop it (another graph)
        column = {"input_ids": ids, "attention_mask": mask}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            value = loss([dict(column), dict(column)], None)
        value.backward()
        model.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------------------------------------ extras
def overheads(path, batches, max_seq_length):
    """Seconds of the per-step work outside the encoder: tokenization, optimizer step, grad clipping, zeroing."""
    from sentence_transformers.base.trainer import BaseTrainer  # noqa: F401  (import cost outside the timing)

    model = load_model(path, "eager", max_seq_length)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    out = {"params": sum(p.numel() for p in params)}
    emb = model[0].auto_model.get_input_embeddings().weight
    out["word embedding params"] = emb.numel()

    def best(fn, n=5):
        fn()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts)

    q, p = batches[0]
    out["tokenize batch"] = best(lambda: features_of(model, q, p))
    for name, kw in (("AdamW fused", {"fused": True}), ("AdamW foreach", {"foreach": True}),
                     ("AdamW for-loop", {"foreach": False})):
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD, **kw)
        out[f"step {name}"] = best(opt.step)
        del opt
    out["clip_grad_norm_"] = best(lambda: torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM))
    out["zero-filled dense word-embedding grad"] = best(lambda: torch.zeros_like(emb))
    return out


def bf16_gradient_error(path, batch, *, attn, chunk_size, max_seq_length):
    """Relative error of the bf16-autocast gradient (whole model) vs float32, padded stock loss vs chunked loss.

    Under autocast every chunk's weight gradient is a bf16 tensor, and the chunks' gradients of the one cached bf16
    copy of a weight are summed in bf16 before the cast back to float32; this measures what that costs (dropout off,
    so that all runs see the same network).
    """
    from sentence_transformers_hybrid.losses import hybrid_loss

    model = load_model(path, attn, max_seq_length).eval()
    features = features_of(model, *batch)

    def grads(bf16, chunk):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = hybrid_loss(model, scale=SCALE, chunk_size=chunk)(features, None)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]), loss.item()

    ref, ref_loss = grads(False, None)
    out = {}
    for name, bf16, chunk in (("fp32 chunked", False, chunk_size), ("bf16 padded", True, None),
                              ("bf16 chunked", True, chunk_size)):
        g, value = grads(bf16, chunk)
        out[name] = (float((g - ref).norm() / ref.norm()), abs(value - ref_loss))
    return out


def profile_step(path, batches, *, attn, chunk_size, max_seq_length, top=18, compile_encoder=False, bf16=True,
                 pack_tokens=False, fast_dropout=False):
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    # compiled: the warm-up steps build the graphs, the last step is profiled
    n = 4 if compile_encoder else 2
    times = raw_loop(path, batches[:n], bf16=bf16, attn=attn, chunk_size=chunk_size, max_seq_length=max_seq_length,
                     warmup=n - 1, profile=prof, compile_encoder=compile_encoder, pack_tokens=pack_tokens,
                     fast_dropout=fast_dropout)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    groups = {
        "matmul (mm/addmm/bmm/linear)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul"),
        "flash attention (sdpa)": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                                   "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
        "softmax": ("aten::_softmax", "aten::_softmax_backward_data"),
        "zero fill": ("aten::zero_", "aten::fill_", "aten::zeros"),
        "casts / copies": ("aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous"),
        "gelu": ("aten::gelu", "aten::gelu_backward"),
        "layer norm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
        "dropout": ("aten::native_dropout", "aten::native_dropout_backward", "aten::bernoulli_", "aten::mul",
                    "aten::random_"),
        "grad norm": ("aten::linalg_vector_norm", "aten::_foreach_norm"),
        "gather / scatter / mask": ("aten::index", "aten::index_put_", "aten::_index_put_impl_", "aten::index_select",
                                    "aten::masked_fill", "aten::masked_fill_", "aten::nonzero", "aten::index_add_",
                                    "aten::embedding_dense_backward", "aten::index_add"),
    }
    shares = {g: sum(e.self_cpu_time_total for e in events if e.key in keys) / total for g, keys in groups.items()}
    ranges = {  # inclusive times of the ranges the profiler names
        "optimizer step": "Optimizer.step#AdamW.step",
        "zero_grad": "Optimizer.zero_grad#AdamW.zero_grad",
        "embedding backward (dense grads)": "autograd::engine::evaluate_function: EmbeddingBackward0",
    }
    for g, key in ranges.items():
        shares[g + " (incl.)"] = sum(e.cpu_time_total for e in events if e.key == key) / total
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return times[-1], shares, [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in rows], total / 1e6


# ------------------------------------------------------------------------------------------------------------ main
# glibc returns every block above its mmap threshold (at most 32 MiB when adjusted dynamically) to the kernel on
# free, so each step's fresh dense word-embedding gradient (67k x 384 float32 = 104 MB) page-faults in again; these
# keep freed memory in the heap for reuse. They must be set before the process starts.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(16 << 30)}


def run_child(argv: list[str], env: dict[str, str]) -> dict:
    """Run this script again (``--parts c``) with ``env`` added; returns its JSON result."""
    import json
    import sys

    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--result-json", f.name]
        proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("(c0)"):
                print("  child: " + line, flush=True)
        if proc.returncode:
            print(proc.stderr[-3000:])
            raise RuntimeError(f"child benchmark failed ({proc.returncode}): {' '.join(cmd)}")
        return json.loads(Path(f.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per configuration (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=16, help="chunk size of (c)")
    parser.add_argument("--attn", default="eager", choices=["eager", "sdpa"], help="attention of (c)")
    parser.add_argument("--data-dir", default=os.environ.get("STH_DATA_DIR"))
    parser.add_argument("--parts", default="a,b,c0,c,p,pf", help="which of a, b, c0, c, p, pf to run")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the trainer parts (c0, c, p, pf) this many times in turn (c0, p, pf, c0, p, pf, ...): "
                             "on a machine whose speed drifts over minutes the ratios are taken within each round and "
                             "their median is reported")
    parser.add_argument("--profile", action="store_true",
                        help="after the parts: torch.profiler of one step (raw loop, --precision) chunked, and packed with "
                        "fast dropout")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"],
                        help="trainer precision of (c0) and (c): bf16 autocast (the protocol) or float32 (a CPU "
                             "without bf16 instructions, where the finetune preset trains in float32)")
    parser.add_argument("--malloc", action="store_true",
                        help=f"also run (c0) in a child process with {' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items())}")
    parser.add_argument("--explore", action="store_true", help="chunk sizes x attention, overheads, profiler")
    parser.add_argument("--explore-chunks", default="8,16,32")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiler in --explore")
    parser.add_argument("--wait-idle", type=float, default=0.9,
                        help="before each timed step wait (untimed) until this fraction of the CPUs is idle; 0: never")
    parser.add_argument("--wait-max", type=float, default=300.0, help="longest wait before a step, seconds")
    parser.add_argument("--result-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("--data-dir or STH_DATA_DIR (the folder with xquad-r/ and mlqa-r/)")
    parts = set(args.parts.split(","))
    WAIT.update(idle=args.wait_idle, max_s=args.wait_max)

    torch.set_num_threads(args.threads)
    import sentence_transformers
    import transformers

    import sentence_transformers_hybrid

    malloc = {k: os.environ[k] for k in MALLOC_ENV if k in os.environ}
    print(cpu_line())
    print(f"torch {torch.__version__} (threads {torch.get_num_threads()}, mkldnn {torch.backends.mkldnn.is_available()}), "
          f"transformers {transformers.__version__}, sentence-transformers {sentence_transformers.__version__}; "
          f"package {sentence_transformers_hybrid.__file__}; allocator env {malloc or 'default'}")
    print(f"start: {load()}", flush=True)

    n = args.warmup + args.steps
    full_path, trim_path = model_paths(args.data_dir)
    corpus, batches = protocol_batches(args.data_dir, n, args.batch_size, args.seed)
    chunks = sorted({args.chunk_size, *(int(c) for c in args.explore_chunks.split(",") if c)})
    probe = load_model(trim_path, "eager", args.max_seq_length)
    flops, tokens = token_stats(probe, batches[args.warmup:], chunks)
    n_params = sum(p.numel() for p in probe.parameters())
    n_emb = probe[0].auto_model.get_input_embeddings().weight.numel()
    del probe
    print(f"batches: {n} hybrid batches of {args.batch_size} (XQuAD-R, 11 languages, seed {args.seed}, "
          f"{len(corpus.queries)} queries in the corpus), the first {args.warmup} a warm-up")
    print("tokens per row with the prompts (timed batches): query {query:.1f} (batch padded to {query padded:.1f}), "
          "passage {passage:.1f} (padded to {passage padded:.1f})".format(**tokens))
    print(f"trimmed model: {n_params / 1e6:.1f}M parameters ({n_emb / 1e6:.1f}M word embeddings); {trim_path}")
    print("encoder training GFLOP per step (3 x forward, layers only): real tokens {:.0f}, padded {:.0f}, {}".format(
        flops["real"] / 1e9, flops["padded"] / 1e9,
        ", ".join(f"chunks of {c} {flops[f'chunk{c}'] / 1e9:.0f}" for c in chunks)))

    # a CPU without bf16 instructions emulates bf16 matmuls (minutes to time): --precision fp32 times float32 only,
    # and the limit below is then the float32 one
    limit_name = args.precision
    rates = matmul_rates(("fp32", "bf16") if limit_name == "bf16" else ("fp32",))
    print("matmul 4096x384 @ 384x1536: " + ", ".join(f"{n} {rates[n]:.0f} GFLOP/s" for n in ("fp32", "bf16") if n in rates)
          + "; the layer's 3 training shapes (fwd, dgrad, wgrad): " + ", ".join(
              f"{n} {'/'.join(f'{r:.0f}' for r in rates[n + ' (fwd, dgrad, wgrad)'])}"
              for n in ("fp32", "bf16") if n in rates) + f" ({load()})", flush=True)

    results = {}

    def report(key, label, times, extra=""):
        # the median step: one step slowed down by another process's burst does not move it
        pairs = args.batch_size / statistics.median(times)
        results[key] = pairs
        useful = flops["real"] / 1e9 * pairs / args.batch_size
        idle = f"; CPU idle before the steps {min(STEP_IDLE):.0%}-{max(STEP_IDLE):.0%}" if STEP_IDLE else ""
        STEP_IDLE.clear()
        print(f"{label}: {pairs:.2f} pairs/s (median step {statistics.median(times):.2f} s; mean "
              f"{args.batch_size * len(times) / sum(times):.2f} pairs/s; steps {' '.join(f'{t:.2f}' for t in times)}), "
              f"{useful:.0f} useful GFLOP/s{extra} ({load()}{idle})", flush=True)

    common = dict(max_seq_length=args.max_seq_length, warmup=args.warmup)
    if "a" in parts:
        report("a", "(a) raw loop fp32, padded, SDPA, full vocabulary [baseline]",
               raw_loop(full_path, batches, bf16=False, attn="sdpa", chunk_size=None, **common))
    if "b" in parts:
        report("b", "(b) raw loop bf16 autocast, padded, SDPA, full vocabulary",
               raw_loop(full_path, batches, bf16=True, attn="sdpa", chunk_size=None, **common))
    c = args.chunk_size
    bf16 = args.precision == "bf16"
    per_round: dict[str, list[float]] = {}
    trainer_parts = [key for key in ("c0", "c", "p", "pf") if key in parts]
    for rnd, key in ((r, k) for r in range(args.rounds) for k in trainer_parts):
        times, details = trainer_loop(trim_path, corpus, batches, attn=args.attn, chunk_size=c,
                                      batch_size=args.batch_size, seed=args.seed, compile_encoder=key == "c",
                                      bf16=bf16, pack_tokens=key in ("p", "pf"), fast_dropout=key == "pf", **common)
        label = {"c0": f"(c0) committed path: SentenceTransformerTrainer bf16={bf16} + HybridBatchSampler + chunked "
                       f"MNRL (chunk {c}), {args.attn}, trimmed vocabulary",
                 "c": "(c) compiled path: (c0) + compile_encoder=True (torch.compile inductor, encoder layers, "
                      "bucketed chunk shapes)",
                 "p": "(p) packed path: (c0) + pack_tokens=True (each column one unpadded sequence; attention per "
                      "chunk)",
                 "pf": "(pf) packed path + fast_dropout=True (dropout masks from 64-bit random draws)"}[key]
        if key in ("p", "pf"):
            path = details["path"] or {}
            label += f" [packed: {path.get('packed')}{'; ' + path['pack_problem'] if path.get('pack_problem') else ''}]"
        extra = (f"; autocast on, its dtype: {details['autocast']}; same batches as (a)/(b): "
                 f"{details['same batches']}; setup (load + trainer init) {details['setup s']:.1f} s")
        if key == "c":
            path, new = details["path"], details["new graphs in timed steps"]
            storm = sum(1 for g in new if g) > len(new) / 2
            results["c graphs"] = path["compiles"]
            results["c recompiles in timed steps"] = sum(new)
            extra += (f"; {path['path']}; compile (all width buckets, before the steps) {details['compile s']:.0f} s, "
                      f"graphs built {path['compiles']} for {path['graphs']} shapes x modes (rows x width: "
                      f"{', '.join(f'{r}x{w}' for r, w in path['shapes'])}), recompilations during the timed steps "
                      f"{sum(new)}{' -- RECOMPILATION STORM' if storm else ''}"
                      + (f"; compile problem: {path['compile_problem']}" if path["compile_problem"] else ""))
        if args.rounds > 1:
            label += f" [round {rnd + 1} of {args.rounds}]"
        report(key, label, times, extra)
        per_round.setdefault(key, []).append(results[key])
    if args.rounds > 1:  # each part's figure is its median over the rounds; the ratios are taken within rounds
        for key, values in per_round.items():
            results[key] = statistics.median(values)
        for k in ("c", "p", "pf"):
            if k in per_round and "c0" in per_round:
                ratios = [a / b for a, b in zip(per_round[k], per_round["c0"])]
                results[f"{k}/c0 rounds"] = ratios
                print(f"({k})/(c0) by round: {' '.join(f'{r:.2f}x' for r in ratios)}; median {statistics.median(ratios):.2f}x")
    if args.result_json:
        import json

        Path(args.result_json).write_text(json.dumps(results))
        return
    if args.malloc and "c0" in parts:
        argv = ["--parts", "c0", "--precision", args.precision, "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size",
                str(args.batch_size), "--seed", str(args.seed), "--threads", str(args.threads), "--max-seq-length",
                str(args.max_seq_length), "--chunk-size", str(c), "--attn", args.attn, "--data-dir", args.data_dir,
                "--explore-chunks", args.explore_chunks, "--wait-idle", str(args.wait_idle), "--wait-max",
                str(args.wait_max)]
        results["c+malloc"] = run_child(argv, MALLOC_ENV)["c0"]
        print(f"(c0) with the allocator env above: {results['c+malloc']:.2f} pairs/s ({load()})", flush=True)
    if "a" in results:
        print("ratios: " + ", ".join(f"({k})/(a) = {results[k] / results['a']:.2f}x"
                                     for k in ("pf", "p", "c", "c0", "c+malloc", "b") if k in results))
    # with --rounds the ratio is the median of the rounds' ratios (each taken in one round), for every part alike
    for k, what in (("c", "the compiled path"), ("p", "the packed path"), ("pf", "packed + fast dropout")):
        if k in results and "c0" in results:
            ratio = (statistics.median(results[f"{k}/c0 rounds"]) if f"{k}/c0 rounds" in results
                     else results[k] / results["c0"])
            print(f"({k})/(c0) = {ratio:.2f}x ({what} against the committed path"
                  + (f"; median of {args.rounds} rounds' ratios)" if args.rounds > 1 else ")"))
    limit = args.batch_size / (flops["real"] / (rates[f"{limit_name} mean"] * 1e9))
    print(f"{limit_name} matmul limit for the real tokens (encoder layers' matmuls only, at the three shapes' harmonic "
          f"mean {rates[f'{limit_name} mean']:.0f} GFLOP/s): {limit:.1f} pairs/s; "
          + ", ".join(f"({k}) reaches {v / limit:.0%} of it" for k, v in results.items() if " " not in k))

    if args.profile:
        for packed in (False, True):
            step, shares, rows, total = profile_step(trim_path, batches, attn=args.attn, chunk_size=c,
                                                     max_seq_length=args.max_seq_length, bf16=bf16, pack_tokens=packed,
                                                     fast_dropout=packed)
            name = "packed + fast dropout" if packed else "chunked"
            print(f"\n-- profile: one {args.precision} step, raw loop, chunks of {c}, {args.attn}, trimmed, {name}: "
                  f"step {step:.2f} s (profiled; self CPU total {total:.2f} s): "
                  + ", ".join(f"{g} {s:.0%}" for g, s in shares.items() if s >= 0.005) + f" ({load()})", flush=True)
            for key, sec, count in rows:
                print(f"    {key:60s} {sec:7.3f} s  x{count}")

    if args.explore:
        print("\n-- explore: raw loops on the trimmed model (same batches; torch.optim.AdamW defaults, i.e. its "
              "for-loop implementation on CPU, unless fused)", flush=True)
        report("trim-fp32-pad", "raw fp32, padded, sdpa, trimmed",
               raw_loop(trim_path, batches, bf16=False, attn="sdpa", chunk_size=None, **common))
        for attn in ("sdpa", "eager"):
            report(f"trim-bf16-pad-{attn}", f"raw bf16, padded, {attn}, trimmed",
                   raw_loop(trim_path, batches, bf16=True, attn=attn, chunk_size=None, **common))
            for k in chunks:
                report(f"trim-bf16-c{k}-{attn}", f"raw bf16, chunks of {k}, {attn}, trimmed",
                       raw_loop(trim_path, batches, bf16=True, attn=attn, chunk_size=k, **common))
        report("fused", f"raw bf16, chunks of {c}, {args.attn}, trimmed, fused AdamW (the trainer's default)",
               raw_loop(trim_path, batches, bf16=True, attn=args.attn, chunk_size=c, fused=True, **common))
        report("lookup-per-chunk", f"raw bf16, chunks of {c}, {args.attn}, trimmed, fused AdamW, embed_once=False",
               raw_loop(trim_path, batches, bf16=True, attn=args.attn, chunk_size=c, fused=True, embed_once=False,
                        **common))
        report("no-dropout", f"raw bf16, chunks of {c}, {args.attn}, trimmed, fused AdamW, dropout off (NOT the "
                             "protocol: what dropout costs)",
               raw_loop(trim_path, batches, bf16=True, attn=args.attn, chunk_size=c, fused=True, dropout=False,
                        **common))
        report("bits-dropout", f"raw bf16, chunks of {c}, {args.attn}, trimmed, fused AdamW, dropout from 64-bit random "
                               "draws (fast_dropout)",
               raw_loop(trim_path, batches, bf16=True, attn=args.attn, chunk_size=c, fused=True, dropout="bits",
                        **common))
        torch.set_num_threads(1)
        report("threads1", f"raw bf16, chunks of {c}, {args.attn}, trimmed, fused AdamW, 1 thread",
               raw_loop(trim_path, batches, bf16=True, attn=args.attn, chunk_size=c, fused=True, **common))
        torch.set_num_threads(args.threads)
        if "c0" in results:
            gap = 1 / results["c0"] - 1 / results["fused"]
            print(f"trainer (c0) vs the same raw loop: {gap * args.batch_size * 1e3:+.0f} ms/step")

        print("\n-- explore: per-step work outside the encoder layers (best of 5)", flush=True)
        for path, name in ((trim_path, "trimmed"), (full_path, "full vocabulary")):
            o = overheads(path, batches, args.max_seq_length)
            print(f"{name} ({o.pop('params') / 1e6:.1f}M params, {o.pop('word embedding params') / 1e6:.1f}M word "
                  f"embeddings): " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in o.items()) + f" ({load()})")
        x = torch.empty(16, 128, 384)
        for th in (1, args.threads):
            torch.set_num_threads(th)
            t = time.perf_counter()
            for _ in range(20):
                x.bernoulli_(0.9)
            bern = (time.perf_counter() - t) / 20
            t = time.perf_counter()
            for _ in range(20):
                torch.rand_like(x)
            rand = (time.perf_counter() - t) / 20
            print(f"dropout's RNG, 16x128x384 float32, {th} thread(s): bernoulli_ {bern * 1e3:.2f} ms, "
                  f"rand_like {rand * 1e3:.2f} ms")
        torch.set_num_threads(args.threads)

        err = bf16_gradient_error(trim_path, batches[args.warmup], attn=args.attn, chunk_size=c,
                                  max_seq_length=args.max_seq_length)
        print("gradient vs float32 padded (one batch, dropout off), relative L2 error / loss difference: "
              + ", ".join(f"{k} {e:.2e} / {d:.1e}" for k, (e, d) in err.items()) + f" ({load()})", flush=True)

        if not args.no_profile:
            for attn, compiled in [*((a, False) for a in dict.fromkeys((args.attn, "sdpa"))), (args.attn, True)]:
                print(f"\n-- explore: torch.profiler, one {args.precision} step, chunks of {c}, {attn}, trimmed (raw "
                      f"loop, torch.optim.AdamW defaults){', encoder layers compiled: what remains' if compiled else ''}",
                      flush=True)
                step, shares, rows, total = profile_step(trim_path, batches, attn=attn, chunk_size=c,
                                                         max_seq_length=args.max_seq_length, compile_encoder=compiled,
                                                         bf16=bf16)
                print(f"[{attn}{' compiled' if compiled else ''}] step {step:.2f} s (profiled; self CPU total {total:.2f} s): "
                      + ", ".join(f"{g} {s:.0%}" for g, s in shares.items() if s >= 0.005) + f" ({load()})")
                for key, sec, count in rows:
                    print(f"    {key:60s} {sec:7.3f} s  x{count}")
    print(f"end: {load()}")


if __name__ == "__main__":
    main()
