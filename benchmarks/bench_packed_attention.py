"""Benchmark: the packed path's attention (``_packed.packed_attention``), forward + backward, against its first version.

The packed training path (``pack_tokens=True``) runs every layer's attention chunk by chunk of 16 rows. Its first
version (session 5, kept below as ``gather_attention``, the **baseline**) gathered each chunk's queries, keys and
values out of the whole column by advanced indexing (``t[index]``, a ``(rows, width)`` index with the padding
pointing at position 0) and put the real positions back with a boolean mask; the gradient of each gather is a
full-size zero tensor and an accumulating ``index_put_``, per chunk and tensor. The package's version uses that a
chunk's tokens are contiguous in the packed column: one ``split`` per projection and one ``index_copy_`` into a
zero-padded heads-first block (gradient: one ``index_select``). Both compute the same (checked here: outputs and
gradients equal).

Inputs: the converted e5-small's attention shapes (12 heads x 32) for the two columns of the protocol's first
hybrid batch (64 XQuAD-R queries, 64 answer sentences, seed 0, the prompts, max_seq_length 128), random
projections from a fixed seed, dropout off (its draws are timed by ``bench_finetune.py``). Each configuration
forward + backward, best of ``--repeats``, interleaved baseline / package so that a drifting machine moves both.

    STH_DATA_DIR=/work/shared/data/lareqa python benchmarks/bench_packed_attention.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sentence_transformers_hybrid import _packed  # noqa: E402


class _Training(torch.nn.Module):
    pass


def gather_attention(query, key, value, plan, scaling):
    """The first version's computation (session 5): advanced-index gather per chunk, boolean select back."""
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, head_dim)
    low = torch.finfo(query.dtype).min
    outputs = []
    for chunk in plan.chunks:
        rows, width = chunk.valid.shape
        index = torch.zeros(rows * width, dtype=torch.long)
        index[chunk.flat] = torch.arange(chunk.begin, chunk.end)
        index = index.view(rows, width)
        qc, kc, vc = (t[index].transpose(1, 2) for t in (q, k, v))  # (rows, heads, width, head_dim)
        scores = torch.matmul(qc, kc.transpose(2, 3)) * scaling
        scores = scores.masked_fill(~chunk.valid[:, None, None, :], low)
        probs = torch.nn.functional.softmax(scores, dim=-1)
        out = torch.matmul(probs, vc).transpose(1, 2)
        outputs.append(out[chunk.valid])
    return torch.cat(outputs, dim=0).unsqueeze(0)


def column_lengths(data_dir: str) -> dict[str, torch.Tensor]:
    import bench_finetune as bench

    _, trimmed = bench.model_paths(data_dir)
    _, batches = bench.protocol_batches(data_dir, 1, 64, 0)
    model = bench.load_model(trimmed, "eager", 128)
    features = bench.features_of(model, *batches[0])
    return {name: f["attention_mask"].sum(1).sort(descending=True).values
            for name, f in zip(("query", "passage"), features)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("STH_DATA_DIR"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("--data-dir or STH_DATA_DIR (the folder with xquad-r/ and mlqa-r/)")
    torch.set_num_threads(args.threads)
    from sentence_transformers_hybrid.experiment.devices import select_device

    # the CPU and precision in the words of the run records (this benchmark runs in float32)
    print(f"{select_device('cpu', prefer_bf16=False).describe()}; load {os.getloadavg()[0]:.2f} "
          f"{os.getloadavg()[1]:.2f}; torch {torch.__version__}, {args.threads} threads")
    heads, head_dim, scaling = 12, 32, 32**-0.5
    total = {"baseline": 0.0, "package": 0.0}
    for name, lengths in column_lengths(args.data_dir).items():
        plan = _packed.PackingPlan.build(lengths, 16)
        torch.manual_seed(0)
        leaves = [torch.randn(1, plan.tokens, heads, head_dim, requires_grad=True) for _ in range(3)]
        grad = torch.randn(1, plan.tokens, heads, head_dim)

        def package():
            q, k, v = (t.transpose(1, 2) for t in leaves)
            token = _packed._PLAN.set(plan)
            try:
                out, _ = _packed.packed_attention(_Training(), q, k, v, None, scaling=scaling, dropout=0.0)
            finally:
                _packed._PLAN.reset(token)
            return out

        def baseline():
            q, k, v = (t.transpose(1, 2) for t in leaves)
            return gather_attention(q, k, v, plan, scaling)

        results = {}
        for label, fn in (("baseline", baseline), ("package", package)):
            for t in leaves:
                t.grad = None
            out = fn()
            out.backward(grad)
            results[label] = (out.detach(), [t.grad.clone() for t in leaves])
        same = torch.allclose(results["baseline"][0], results["package"][0], atol=1e-6) and all(
            torch.allclose(a, b, atol=1e-5) for a, b in zip(results["baseline"][1], results["package"][1]))
        if not same:
            raise SystemExit(f"{name} column: the package's attention differs from the baseline's")
        best = {"baseline": float("inf"), "package": float("inf")}
        for _ in range(args.repeats):
            for label, fn in (("baseline", baseline), ("package", package)):
                for t in leaves:
                    t.grad = None
                start = time.perf_counter()
                fn().backward(grad)
                best[label] = min(best[label], time.perf_counter() - start)
        for label in best:
            total[label] += best[label]
        print(f"{name} column: {len(lengths)} rows, {plan.tokens} tokens, {len(plan.chunks)} chunks (widths "
              f"{', '.join(str(c.valid.shape[1]) for c in plan.chunks)}); forward + backward, best of {args.repeats}: "
              f"baseline {best['baseline'] * 1e3:.1f} ms, package {best['package'] * 1e3:.1f} ms, "
              f"{best['baseline'] / best['package']:.2f}x; outputs and gradients equal")
    print(f"both columns (one layer): baseline {total['baseline'] * 1e3:.1f} ms, package {total['package'] * 1e3:.1f} ms, "
          f"{total['baseline'] / total['package']:.2f}x; x 12 layers: {12 * (total['baseline'] - total['package']):.2f} s "
          f"saved a step (load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
