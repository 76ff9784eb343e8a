"""How inflated is biased linear CKA on independent random data, and how does it shrink with n?

    /work/venv/bin/python benchmarks/cka_bias.py

X and Y are independent standard-normal matrices [n x d]; the population CKA is exactly 0. For each (d, n) the
script prints the mean and standard deviation over 5 seeds of the biased and the debiased estimator.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sentence_transformers_hybrid.metrics.cka import linear_cka  # noqa: E402

SEEDS = 5


def main() -> None:
    print(f"independent N(0, 1) data, population CKA = 0; mean +- sd over {SEEDS} seeds")
    print(f"{'d':>5} {'n':>7} {'biased':>17} {'debiased':>17}")
    for d in (32, 384):
        for n in (100, 300, 1000, 3000, 10000, 30000):
            biased, debiased = [], []
            for seed in range(SEEDS):
                rng = np.random.default_rng(seed)
                X = rng.standard_normal((n, d), dtype=np.float32)
                Y = rng.standard_normal((n, d), dtype=np.float32)
                biased.append(linear_cka(X, Y))
                debiased.append(linear_cka(X, Y, debiased=True))
            print(f"{d:>5} {n:>7} {np.mean(biased):>9.4f} +- {np.std(biased):.4f} "
                  f"{np.mean(debiased):>9.4f} +- {np.std(debiased):.4f}")


if __name__ == "__main__":
    main()
