"""Scoring a run the official way: trec_eval's measures through pytrec_eval (``pip install pytrec-eval-terrier``).

MIRACL (and Pyserini's tables) score dev runs with ``trec_eval -c -M 100 -m ndcg_cut.10`` and
``trec_eval -c -m recall.100``. pytrec_eval runs trec_eval's own code; the two options are applied here:

* ``-M 100``: each query's run is cut to its first 100 hits in trec_eval's order (score descending, ties by
  docid *descending*: trec_eval re-sorts a run by score and ignores the file's ranks);
* ``-c``: every query of the qrels counts; one with nothing retrieved scores 0 on every measure.

Relevance is trec_eval's: a judgment ``rel >= 1`` is relevant, ``rel 0`` rows are judged non-relevant (they never
count as relevant); nDCG uses the grades as gains.

Example:
    >>> qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 1}}
    >>> run = {"q1": {"d2": 0.9, "d1": 0.8}}           # q2 retrieved nothing: 0 under -c
    >>> per_query = trec_eval(qrels, run)
    >>> round(per_query["q1"]["ndcg_cut_10"], 4), per_query["q2"]["recall_100"]
    (0.6309, 0.0)
    >>> {k: round(v, 4) for k, v in miracl_scores(qrels, run).items()}
    {'ndcg@10': 0.3155, 'recall@100': 0.5}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["MIRACL_MEASURES", "mean_over_queries", "miracl_scores", "trec_eval"]

#: Our metric names -> trec_eval's measures, as MIRACL reports them.
MIRACL_MEASURES: dict[str, str] = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100"}


def _pytrec_eval():
    try:
        import pytrec_eval
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("scoring runs needs pytrec_eval: pip install pytrec-eval-terrier") from err
    return pytrec_eval


def _measure_arg(measure: str) -> str:
    """``ndcg_cut_10`` (a result key) -> ``ndcg_cut.10`` (pytrec_eval's measure argument)."""
    head, _, tail = measure.rpartition("_")
    return f"{head}.{tail}" if head and tail.isdigit() else measure


def trec_eval(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    measures: Sequence[str] = ("ndcg_cut_10", "recall_100"),
    *,
    depth: int | None = 100,
    complete: bool = True,
) -> dict[str, dict[str, float]]:
    """Per-query trec_eval measures ``{qid: {measure: value}}`` of ``run`` against ``qrels``.

    Args:
        qrels: ``{qid: {docid: rel}}`` (rel 0 rows: judged non-relevant).
        run: ``{qid: {docid: score}}``.
        measures: trec_eval measure names as pytrec_eval reports them (``ndcg_cut_10``, ``recall_100``, ``map``,
            ``P_10``, ...).
        depth: trec_eval's ``-M``: hits per query kept, in trec_eval's order (``None``: all).
        complete: trec_eval's ``-c``: queries of the qrels missing from the run score 0 (else they are left out).
    """
    pytrec_eval = _pytrec_eval()
    qrels_i = {str(q): {str(d): int(r) for d, r in judged.items()} for q, judged in qrels.items()}
    run_f: dict[str, dict[str, float]] = {}
    for qid, hits in run.items():
        if str(qid) not in qrels_i:
            continue  # trec_eval scores only the queries of the qrels
        items = [(str(d), float(s)) for d, s in hits.items()]
        if depth is not None and len(items) > depth:
            items = sorted(items, key=lambda x: (x[1], x[0]), reverse=True)[:depth]  # score desc, docid desc
        if items:
            run_f[str(qid)] = dict(items)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels_i, {_measure_arg(m) for m in measures})
    got = evaluator.evaluate(run_f) if run_f else {}
    out: dict[str, dict[str, float]] = {}
    for qid in qrels_i:
        if qid in got:
            out[qid] = {m: float(got[qid][m]) for m in measures}
        elif complete:
            out[qid] = {m: 0.0 for m in measures}
    return out


def mean_over_queries(per_query: Mapping[str, Mapping[str, float]], measure: str) -> float:
    """The mean of ``measure`` over the queries of :func:`trec_eval`'s result (0.0 for none)."""
    values = [v[measure] for v in per_query.values()]
    return float(sum(values) / len(values)) if values else 0.0


def miracl_scores(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{"ndcg@10", "recall@100"}`` as MIRACL reports them (``-c -M 100``, averaged over the qrels' queries)."""
    per_query = trec_eval(qrels, run, tuple(MIRACL_MEASURES.values()), depth=100, complete=True)
    return {name: mean_over_queries(per_query, m) for name, m in MIRACL_MEASURES.items()}
