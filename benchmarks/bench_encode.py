"""Encoding speed of the frozen e5-small (the ``cpu`` preset's embedding cache): ``model.encode`` vs the bucketed path.

The README's first command (``st-hybrid experiment --preset cpu``) spends most of its time encoding the 46,235
XQuAD-R + MLQA-R texts once into the embedding cache. This times, in one process on the same texts (the preset's
own: prompts prepended, longest first, shards of 512, batch 64, ``max_seq_length`` 128, the preset's encode dtype:
bf16 autocast where the CPU has bf16 instructions, else float32):

* (old) ``model.encode`` per shard, as the cache did before issue 24;
* (bucketed) :func:`~sentence_transformers_hybrid._compile.encode_bucketed` eager: fixed rows, widths bucketed;
* (compiled) the same with the encoder layers compiled; its compile time (all graphs, first pass) is printed
  apart, and the timed pass runs after it;
* (packed) :func:`~sentence_transformers_hybrid._packed.encode_packed`: each batch one unpadded sequence of its
  real tokens, attention per chunk of 16 rows (what the ``cpu`` preset uses since issue 24's packed encoding).

It prints texts/s of each, the ratio to (old), and the largest difference of the vectors to (old) (max abs and
min cosine). Timings taken while other jobs share the cores are noisy: the passes alternate (old, bucketed,
compiled, packed, repeated ``--repeats`` times) and the best pass of each counts; ``--paths`` picks some.

    STH_DATA_DIR=/work/shared/data/lareqa python benchmarks/bench_encode.py --texts 2048
    STH_DATA_DIR=/work/shared/data/lareqa python benchmarks/bench_encode.py --texts 2048 --paths bucketed,packed
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def preset_texts(data_dir: str, n: int) -> list[str]:
    """The cpu preset's texts (as ``FrozenE5Backbone`` builds them), longest first; every ``len // n``-th kept."""
    from sentence_transformers_hybrid.experiment import resolve_preset
    from sentence_transformers_hybrid.experiment.runner import load_data

    preset = resolve_preset("cpu")
    corpus, bench = load_data(preset, data_dir)
    qp, pp = preset.query_prompt, preset.passage_prompt
    texts = [qp + t for t in corpus.queries] + [pp + t for t in corpus.passages]
    for s in bench.splits.values():
        texts += [qp + t for t in s.questions] + [pp + t for t in s.candidate_texts(with_context=False)]
    texts = sorted(dict.fromkeys(texts), key=len, reverse=True)
    print(f"the cpu preset encodes {len(texts)} distinct texts; timing {min(n, len(texts))} of them (evenly spread)")
    step = max(1, len(texts) // n)
    return texts[::step][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("STH_DATA_DIR"))
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--paths", default="old,bucketed,compiled,packed",
                        help="comma-separated subset of old,bucketed,compiled,packed (old is the baseline, always run)")
    args = parser.parse_args()
    paths = ["old"] + [p for p in ("bucketed", "compiled", "packed") if p in args.paths.split(",")]
    if not args.data_dir:
        parser.error("--data-dir or STH_DATA_DIR")
    torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    from sentence_transformers_hybrid._compile import CompiledLayers, encode_bucketed
    from sentence_transformers_hybrid._packed import encode_packed
    from sentence_transformers_hybrid.experiment.devices import select_device
    from sentence_transformers_hybrid.models.e5 import convert_e5_small

    texts = preset_texts(args.data_dir, args.texts)
    setup = select_device("cpu").with_dtype(args.dtype if args.dtype != "auto" else "auto")
    model = SentenceTransformer(convert_e5_small(), device="cpu").eval()
    model.max_seq_length = 128
    print(f"{setup.describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads; load {os.getloadavg()}")
    shards = [texts[i : i + args.shard] for i in range(0, len(texts), args.shard)]
    compiled = CompiledLayers(model, what="bench_encode")

    def old():
        return torch.cat([model.encode(s, batch_size=args.batch_size, convert_to_tensor=True, show_progress_bar=False)
                          .float() for s in shards])

    def bucketed(layers=None):
        return torch.cat([encode_bucketed(model, s, batch_size=args.batch_size, layers=layers) for s in shards])

    def packed():
        return torch.cat([encode_packed(model, s, batch_size=args.batch_size) for s in shards])

    runs = {"old": old, "bucketed": bucketed, "compiled": lambda: bucketed(compiled), "packed": packed}
    with setup.autocast():
        if "compiled" in paths:
            t = time.perf_counter()
            first = bucketed(compiled)
            print(f"compiled: first pass (compiles {compiled.describe()['graphs']} graphs) "
                  f"{time.perf_counter() - t:.1f} s; {compiled.describe()['path']}", flush=True)
        best: dict[str, float] = {}
        out: dict[str, torch.Tensor] = {}
        for _ in range(args.repeats):
            for name, fn in ((p, runs[p]) for p in paths):
                t = time.perf_counter()
                out[name] = fn()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
                print(f"  {name}: {len(texts) / (time.perf_counter() - t):.1f} texts/s (load {os.getloadavg()[0]:.2f})",
                      flush=True)
    ref = out["old"]
    for name in paths:
        v = out[name]
        cos = torch.nn.functional.cosine_similarity(v, ref, dim=-1).min()
        print(f"({name}) {len(texts) / best[name]:.1f} texts/s, {best['old'] / best[name]:.2f}x "
              f"(old); max |diff| {float((v - ref).abs().max()):.2e}, min cosine {float(cos):.6f}")
    if "compiled" in paths:
        print(f"graphs built by the compiled path: {compiled.describe()['graphs']} "
              f"({', '.join(f'{r}x{w}' for r, w in compiled.describe()['shapes'])}); first pass vs timed: "
              f"{float((first - out['compiled']).abs().max()):.1e}")
    if "packed" in paths and "bucketed" in paths:
        print(f"(packed)/(bucketed) = {best['bucketed'] / best['packed']:.2f}x")


if __name__ == "__main__":
    main()
