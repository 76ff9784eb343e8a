"""Issue 24's science check: a run record of the compiled training path against the committed one of the same run.

Train hybrid, alpha 0.5, seed 0 for 300 steps with the ``finetune`` preset and ``compile_encoder=True`` (the
compiled path; the preset's default is off until measured faster) into a fresh output folder, alone on the machine (about 20-25 min):

    STH_DATA_DIR=/work/shared/data/lareqa python -c "from sentence_transformers_hybrid.experiment import \\
    resolve_preset, run_experiment; run_experiment(resolve_preset('finetune', modes=('hybrid',), seeds=(0,), \\
    alpha_sweep=(), compile_encoder=True), data_dir='/work/shared/data/lareqa', \\
    output_dir='runs/finetune-compiled-check')"

then compare its record with the committed one:

    python benchmarks/compare_finetune_record.py runs/finetune-compiled-check/runs/hybrid-a0.5-s0.json

The committed records (before issue 24) hold no loss curve. For the curve, train the same run for 50 steps twice,
uncompiled and compiled (records written since issue 24 hold ``loss_curve``, the trainer's loss every 5 steps at
50 steps), and compare the two records with ``--committed``:

    for c in False True; do STH_DATA_DIR=/work/shared/data/lareqa python -c "from sentence_transformers_hybrid.\
    experiment import resolve_preset, run_experiment; run_experiment(resolve_preset('finetune', modes=('hybrid',), \
    seeds=(0,), alpha_sweep=(), max_steps=50, compile_encoder=$c), data_dir='/work/shared/data/lareqa', \
    output_dir='runs/finetune-50-compile-$c')"; done
    python benchmarks/compare_finetune_record.py runs/finetune-50-compile-True/runs/hybrid-a0.5-s0.json \
        --committed runs/finetune-50-compile-False/runs/hybrid-a0.5-s0.json

(there the mAP / rank-distance lines compare two 50-step runs, and the training-path line checks the compiled one).

The packed path with the cheaper dropout mask is checked the same way: ``pack_tokens=True, fast_dropout=True`` in
``resolve_preset`` instead of ``compile_encoder=True``, an output folder of its own, and ``--expect-path packed``.

It prints one PASS / FAIL line per check and exits 1 when any fails:

* MLQA-R mAP@20 of each setting (mono, cross, multi) within ``--map-tol`` (0.005) of the committed record;
* the rank distance (multilingual setting) within ``--rank-tol`` (3 %) of the committed one;
* the training loss over the first 50 steps, where both records hold a curve (``loss_curve``: step -> loss;
  the committed records of before issue 24 hold none, and then this check is SKIPPED and says so);
* which training path the new record says ran (``training_path``): the check is of the compiled path only if
  that path is ``compiled``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COMMITTED = Path(__file__).resolve().parent.parent / "docs" / "results" / "finetune" / "runs" / "hybrid-a0.5-s0.json"
SETTINGS = ("mono", "cross", "multi")


def compare(new: dict, old: dict, map_tol: float = 0.005, rank_tol: float = 0.03,
            loss_steps: int = 50, loss_tol: float = 0.05, expect_path: str = "compiled") -> list[tuple[str, str]]:
    """``[(verdict, line)]`` with verdict PASS / FAIL / SKIP for each check."""
    out = []
    for setting in SETTINGS:
        key = f"{setting}_map@20"
        if key not in new or key not in old:
            out.append(("FAIL", f"{key}: missing in the {'new' if key not in new else 'committed'} record"))
            continue
        d = new[key] - old[key]
        out.append(("PASS" if abs(d) <= map_tol else "FAIL",
                    f"MLQA-R {setting} mAP@20: new {new[key]:.4f}, committed {old[key]:.4f}, difference {d:+.4f} "
                    f"(tolerance {map_tol})"))
    if "rank_distance" in new and "rank_distance" in old and old["rank_distance"]:
        rel = new["rank_distance"] / old["rank_distance"] - 1.0
        out.append(("PASS" if abs(rel) <= rank_tol else "FAIL",
                    f"rank distance: new {new['rank_distance']:.1f}, committed {old['rank_distance']:.1f}, "
                    f"{rel:+.1%} (tolerance {rank_tol:.0%})"))
    else:
        out.append(("FAIL", "rank_distance missing in a record"))
    a, b = _curve(new), _curve(old)
    if a is None or b is None:
        which = [n for n, c in (("new", a), ("committed", b)) if c is None]
        out.append(("SKIP", f"loss curve: the {' and the '.join(which)} record{'s hold' if len(which) > 1 else ' holds'} "
                            "none (loss_curve); not compared"))
    else:
        steps = sorted(s for s in set(a) & set(b) if s <= loss_steps)
        if not steps:
            out.append(("SKIP", f"loss curve: no common step <= {loss_steps}"))
        else:
            worst = max(abs(a[s] - b[s]) / max(abs(b[s]), 1e-9) for s in steps)
            out.append(("PASS" if worst <= loss_tol else "FAIL",
                        f"loss curve, steps {steps[0]}-{steps[-1]} ({len(steps)} points): largest relative "
                        f"difference {worst:.1%} (tolerance {loss_tol:.0%})"))
    path = new.get("training_path") or {}
    ran = str(path.get("path", "not recorded"))
    if expect_path == "packed":  # the dropout mask is shown with the path; the check is of the path
        ran += f"; dropout {path.get('dropout', 'torch')}"
    out.append(("PASS" if ran.startswith(expect_path) else "FAIL",
                f"training path of the new record: {ran} (expected {expect_path}); graphs {path.get('graphs')}"
                + (f"; compile problem: {path['compile_problem']}" if path.get("compile_problem") else "")))
    return out


def _curve(record: dict) -> dict[int, float] | None:
    curve = record.get("loss_curve")
    if not curve:
        return None
    if isinstance(curve, dict):
        return {int(k): float(v) for k, v in curve.items()}
    return {int(s): float(v) for s, v in curve}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("new", help="the new run record (runs/<...>/runs/hybrid-a0.5-s0.json)")
    parser.add_argument("--committed", default=str(COMMITTED))
    parser.add_argument("--map-tol", type=float, default=0.005)
    parser.add_argument("--rank-tol", type=float, default=0.03)
    parser.add_argument("--expect-path", default="compiled", choices=["compiled", "packed"],
                        help="the training path the new record must say ran (compile_encoder=True: compiled; "
                             "pack_tokens=True: packed)")
    args = parser.parse_args(argv)
    new = json.loads(Path(args.new).read_text(encoding="utf-8"))
    old = json.loads(Path(args.committed).read_text(encoding="utf-8"))
    if (new.get("run_id"), old.get("run_id")) != ("hybrid-a0.5-s0", "hybrid-a0.5-s0"):
        print(f"FAIL records of {new.get('run_id')!r} and {old.get('run_id')!r}, expected hybrid-a0.5-s0 twice")
        return 1
    results = compare(new, old, args.map_tol, args.rank_tol, expect_path=args.expect_path)
    for verdict, line in results:
        print(f"{verdict} {line}")
    failed = any(v == "FAIL" for v, _ in results)
    print("FAIL" if failed else "PASS", "overall", f"({args.new} vs {args.committed})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
