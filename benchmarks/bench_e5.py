"""Offline e5-small: conversion and trimming costs, and CPU fine-tuning throughput.

Run once (CPU, offline):

    STH_DATA_DIR=/work/shared/data/lareqa python benchmarks/bench_e5.py [--steps 2] [--skip-train]

Prints, each against a baseline measured in the same run:
* conversion: weight file size, converted directory size, parameter count, load time of the full
  model (baseline) and of the model converted from the file trimmed to XQuAD-R + MLQA-R;
* training: pairs/s of a full MNRL step (forward + backward + AdamW) for batch 16/32/64 with the
  word-embedding matrix trainable (baseline) and frozen (``freeze_word_embeddings``), max length
  128, English question -> answer sentence pairs from XQuAD-R. Each figure is the median of
  ``--steps`` timed steps after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from sentence_transformers_hybrid.models.e5 import (  # noqa: E402
    convert_e5_small, default_e5_weight_file, read_e5_weight_file)
from sentence_transformers_hybrid.models.frozen import freeze_word_embeddings  # noqa: E402
from sentence_transformers_hybrid.models.trim import collect_texts, trim_e5_weight_file  # noqa: E402


def dir_size(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def load(path: str):
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    model = SentenceTransformer(path, device="cpu")
    return model, time.perf_counter() - t0


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def pairs(data_dir: Path, n: int) -> list[tuple[str, str]]:
    doc = json.loads((data_dir / "xquad-r" / "en.json").read_text(encoding="utf-8"))
    out = []
    for art in doc["data"]:
        for par in art["paragraphs"]:
            for qa in par["qas"]:
                start = qa["answers"][0]["answer_start"]
                sent = next((s for s, (a, b) in zip(par["sentences"], par["sentence_breaks"])
                             if a <= start <= b), par["sentences"][0])
                out.append((qa["question"], sent))
    return out[:n]


def train_rate(model, batch: list[tuple[str, str]], steps: int) -> tuple[float, float]:
    """(pairs per wall second, pairs per CPU second of this process), medians over steps."""
    try:
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss)
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    loss_fn = MultipleNegativesRankingLoss(model, scale=20.0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-5, weight_decay=0.01)
    prep = getattr(model, "preprocess", None) or model.tokenize
    q = prep(["query: " + a for a, _ in batch])
    p = prep(["passage: " + b for _, b in batch])
    model.train()
    wall, cpu = [], []
    for step in range(steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = loss_fn([q, p], None)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:  # the first step (allocations, optimizer state) is a warm-up
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    model.eval()
    return len(batch) / statistics.median(wall), len(batch) / statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("STH_DATA_DIR", "data/lareqa"))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-sizes", default="16,32,64")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-convert", action="store_true",
                    help="train on the cached conversion, skip the size/trim table")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data_dir = Path(args.data_dir)
    src = default_e5_weight_file()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")

    if args.skip_convert:
        full, _ = load(convert_e5_small(model_file=src))
        n_full = sum(p.numel() for p in full.parameters())
        train(full, n_full, data_dir, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        full_dir = convert_e5_small(Path(tmp) / "full", src)
        t_conv = time.perf_counter() - t0
        texts = collect_texts(data_dir)
        t0 = time.perf_counter()
        trim_file = trim_e5_weight_file(texts, Path(tmp) / "e5-lareqa-q4.bin", src)
        t_trim = time.perf_counter() - t0
        t0 = time.perf_counter()
        trim_dir = convert_e5_small(Path(tmp) / "trim", trim_file)
        t_conv_trim = time.perf_counter() - t0
        full, t_load = load(full_dir)
        small, t_load_small = load(trim_dir)
        pieces_full = len(read_e5_weight_file(src).pieces)
        pieces_small = len(read_e5_weight_file(trim_file).pieces)
        n_full = sum(p.numel() for p in full.parameters())
        n_small = sum(p.numel() for p in small.parameters())
        del small
        print("\n## Conversion and trimming (baseline: full model)")
        print(f"{'':34s}{'full':>14s}{'trimmed':>14s}{'ratio':>8s}")
        rows = [
            ("pieces", pieces_full, pieces_small, str),
            ("weight file (Q4_0)", Path(src).stat().st_size, Path(trim_file).stat().st_size, mb),
            ("converted dir (float32)", dir_size(full_dir), dir_size(trim_dir), mb),
            ("parameters", n_full, n_small, lambda n: f"{n / 1e6:.1f} M"),
            ("SentenceTransformer(path) load s", t_load, t_load_small, lambda s: f"{s:.2f}"),
            ("convert_e5_small s", t_conv, t_conv_trim, lambda s: f"{s:.1f}"),
        ]
        for name, a, b, fmt in rows:
            print(f"{name:34s}{fmt(a):>14s}{fmt(b):>14s}{b / a:>8.3f}")
        print(f"trim_e5_weight_file on {len(texts)} texts of {data_dir}: {t_trim:.1f} s")

        if not args.skip_train:
            train(full, n_full, data_dir, args)


def train(full, n_full: int, data_dir: Path, args: argparse.Namespace) -> None:
    """Print pairs/s per batch size, word embeddings trainable (baseline) vs frozen."""
    print(f"load average before training: {os.getloadavg()[0]:.1f} "
          f"(2-core machine shared with other jobs: wall rates are pessimistic)")
    full.max_seq_length = 128
    data = pairs(data_dir, 64)
    n_emb = freeze_word_embeddings(full, frozen=False)
    print(f"\n## CPU training, MNRL + AdamW, max_seq_length 128 "
          f"(baseline: all {n_full / 1e6:.1f} M parameters trainable; frozen: "
          f"{n_emb / 1e6:.1f} M word-embedding parameters fixed)")
    print("pairs/s = pairs per wall second; pairs/CPU-s = per CPU second of this process "
          "(less sensitive to other jobs; x threads ~ the rate on an idle machine)")
    print(f"{'batch':>6s}{'trainable pairs/s':>19s}{'pairs/CPU-s':>13s}"
          f"{'frozen pairs/s':>16s}{'pairs/CPU-s':>13s}{'ratio (CPU)':>13s}")
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        freeze_word_embeddings(full, frozen=False)
        base, base_cpu = train_rate(full, data[:bs], args.steps)
        freeze_word_embeddings(full, frozen=True)
        frozen, frozen_cpu = train_rate(full, data[:bs], args.steps)
        print(f"{bs:>6d}{base:>19.2f}{base_cpu:>13.2f}{frozen:>16.2f}{frozen_cpu:>13.2f}"
              f"{frozen_cpu / base_cpu:>13.2f}", flush=True)
    print(f"load average after training: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
