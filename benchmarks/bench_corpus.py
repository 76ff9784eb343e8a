"""ParallelCorpus.from_dataset on 200k groups x 10 languages (target: well under 30 s on 2 cores).

Also measured: the same on a shuffled and on a split dataset (read through their indices mapping, see
``sentence_transformers_hybrid/data/arrow.py``). Baseline in the same run: building the same corpus row by row from Python records (``from_records`` over a list
of dicts, the way most user code starts) — printed as a ratio.

    python benchmarks/bench_corpus.py [--groups 200000] [--languages 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
from datasets import Dataset

from sentence_transformers_hybrid import ParallelCorpus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=200_000)
    ap.add_argument("--languages", type=int, default=10)
    args = ap.parse_args()
    g, l = args.groups, args.languages
    langs = [f"l{i}" for i in range(l)]
    group = np.repeat(np.arange(g), l).astype(str)
    lang = np.tile(np.array(langs), g)
    rows = g * l
    query = np.char.add("query number ", np.arange(rows).astype(str))
    passage = np.char.add("a somewhat longer passage text for row ", np.arange(rows).astype(str))
    ds = Dataset(pa.table({"group": group, "lang": lang, "query": query, "passage": passage}))
    print(f"{g:,} groups x {l} languages = {rows:,} rows")

    t = time.perf_counter()
    corpus = ParallelCorpus.from_dataset(ds)
    t_ds = time.perf_counter() - t
    assert len(corpus) == g and corpus.num_rows == rows
    print(f"from_dataset: {t_ds:.2f} s")

    # through an indices mapping (shuffle, filter, select, train_test_split) datasets gathers the rows it shows
    shuffled = ds.shuffle(seed=0)
    t = time.perf_counter()
    corpus = ParallelCorpus.from_dataset(shuffled)
    t_sh = time.perf_counter() - t
    assert corpus.queries[:3] == shuffled["query"][:3]
    print(f"from_dataset on ds.shuffle(): {t_sh:.2f} s (reading through the indices mapping)")
    held = ds.train_test_split(test_size=0.1, seed=0)["train"]
    t = time.perf_counter()
    corpus = ParallelCorpus.from_dataset(held)
    print(f"from_dataset on train_test_split()['train'] ({len(held):,} rows): {time.perf_counter() - t:.2f} s")
    assert corpus.num_rows == len(held)

    records = ds.to_list()
    t = time.perf_counter()
    ParallelCorpus.from_records(records)
    t_rec = time.perf_counter() - t
    print(f"from_records (baseline, Python records): {t_rec:.2f} s")
    print(f"ratio from_dataset / from_records = {t_ds / t_rec:.2f}; target from_dataset < 30 s: "
          f"{'OK' if t_ds < 30 else 'MISSED'}")


if __name__ == "__main__":
    main()
