"""The full experiment (mono / cross / hybrid, evaluation, CKA, report) from Python; same as `st-hybrid experiment`.

    python examples/run_experiment.py --preset smoke --data-dir ../shared/data/lareqa --output-dir runs/smoke
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sentence_transformers_hybrid import run_experiment  # noqa: E402
from sentence_transformers_hybrid.experiment.tables import results_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="auto")
    ap.add_argument("--data-dir", default=os.environ.get("STH_DATA_DIR", "../shared/data/lareqa"))
    ap.add_argument("--output-dir", default="runs/experiment")
    args = ap.parse_args()
    summary = run_experiment(args.preset, data_dir=args.data_dir, output_dir=args.output_dir)
    print(results_table(summary))


if __name__ == "__main__":
    main()
