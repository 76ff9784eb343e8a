"""Corpus encoding for the index (``encode_corpus``): ``model.encode_document`` vs ``pack_tokens=True``.

MIRACL-sized corpora are encoded by :func:`~sentence_transformers_hybrid.index.encode_corpus` batch by batch as the
corpus files stream (``--batch-size`` passages an ``encode`` call, in file order: each batch padded to its longest
passage). ``pack_tokens=True`` sends each batch through the encoder as one packed sequence of its real tokens
(:func:`~sentence_transformers_hybrid._packed.encode_packed`). This times both, in one process, alternated
(``--repeats`` passes, the best pass of each counts), on real Wikipedia paragraphs of MIRACL-like length: the
XQuAD-R contexts of all 11 languages (``title`` = the article, ``text`` = the paragraph), written in MIRACL's
layout to a temporary folder; the converted multilingual-e5-small with its ``passage: `` prompt, ``max_seq_length``
512 (MIRACL's passages are not cut at 128), float32 shards so the vectors compare exactly.

It prints the CPU, the load average, the passages' token counts (real and as padded by the batches), passages/s of
each path, the ratio to ``encode_document`` (the baseline) and the largest difference of the stored vectors.

    STH_DATA_DIR=/work/shared/data/lareqa python benchmarks/bench_index_encode.py --passages 1024
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def paragraphs(data_dir: str, n: int) -> list[dict[str, str]]:
    """XQuAD-R contexts of every language, interleaved language by language, the first ``n``."""
    per_lang = []
    for path in sorted(Path(data_dir, "xquad-r").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        rows = [{"title": a["title"], "text": p["context"]} for a in doc["data"] for p in a["paragraphs"]]
        per_lang.append([{**r, "docid": f"{path.stem}-{i}"} for i, r in enumerate(rows)])
    mixed = [row for group in zip(*per_lang) for row in group]
    return mixed[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("STH_DATA_DIR"))
    parser.add_argument("--passages", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("--data-dir or STH_DATA_DIR")
    torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    from sentence_transformers_hybrid.data import load_miracl
    from sentence_transformers_hybrid.data.miracl import write_miracl_layout
    from sentence_transformers_hybrid.experiment.devices import select_device
    from sentence_transformers_hybrid.index import encode_corpus
    from sentence_transformers_hybrid.models.e5 import convert_e5_small

    # the CPU and precision in the words of the run records (this benchmark encodes in float32)
    print(f"{select_device('cpu', prefer_bf16=False).describe()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load {os.getloadavg()}")
    rows = paragraphs(args.data_dir, args.passages)
    model = SentenceTransformer(convert_e5_small(), device="cpu").eval()
    model.max_seq_length = args.max_seq_length
    texts = [model.prompts.get("passage", "") + f"{r['title']} {r['text']}" for r in rows]
    lengths = np.array([len(ids) for ids in model.tokenizer(texts, truncation=True,
                                                             max_length=args.max_seq_length)["input_ids"]])
    padded = sum(len(lengths[i : i + args.batch_size]) * lengths[i : i + args.batch_size].max()
                 for i in range(0, len(lengths), args.batch_size))
    print(f"{len(rows)} XQuAD-R paragraphs (11 languages), prompt {model.prompts.get('passage')!r}: tokens real "
          f"{int(lengths.sum())} (mean {lengths.mean():.1f}, max {lengths.max()}), padded by batches of "
          f"{args.batch_size} in file order {int(padded)} ({1 - lengths.sum() / padded:.0%} padding)", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-index-encode-") as tmp:
        root = write_miracl_layout(Path(tmp) / "data", "xx", {"q": "x"}, {"q": {rows[0]["docid"]: 1}}, rows, files=2)
        source = load_miracl("xx", data_dir=root).corpus
        best: dict[str, float] = {}
        vectors: dict[str, np.ndarray] = {}
        for rep in range(args.repeats):
            for name, packed in (("encode_document", False), ("pack_tokens", True)):
                folder = Path(tmp) / f"{name}-{rep}"
                t = time.perf_counter()
                index = encode_corpus(model, source, folder, batch_size=args.batch_size, dtype="float32",
                                      shard_size=len(rows), show_progress_bar=False, pack_tokens=packed)
                dt = time.perf_counter() - t
                best[name] = min(best.get(name, float("inf")), dt)
                vectors[name] = np.concatenate([np.asarray(s.embeddings) for s in index.shards])
                print(f"  {name}: {len(rows) / dt:.1f} passages/s (load {os.getloadavg()[0]:.2f})", flush=True)
    base = best["encode_document"]
    for name in best:
        diff = float(np.abs(vectors[name] - vectors["encode_document"]).max())
        print(f"({name}) {len(rows) / best[name]:.1f} passages/s, {base / best[name]:.2f}x (encode_document); "
              f"max |diff| of the stored vectors {diff:.1e}")
    print(f"end: load {os.getloadavg()}")


if __name__ == "__main__":
    main()
