"""The MIRACL path on real text: MLQA-R (German, English; 300 questions each) written in MIRACL's layout by
``scripts/lareqa_to_miracl.py``, evaluated by ``evaluate_miracl`` (streamed corpus, shards on disk, chunked search,
trec_eval scoring), must score what an in-memory exact search scored by pytrec_eval scores."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from sentence_transformers_hybrid import load_lareqa
from sentence_transformers_hybrid.data.benchmark import subsample_benchmark
from sentence_transformers_hybrid.testing import tiny_static_model

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ["de", "en"]


def _script():
    spec = importlib.util.spec_from_file_location("lareqa_to_miracl", ROOT / "scripts" / "lareqa_to_miracl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench(data_dir):
    return subsample_benchmark(load_lareqa("mlqa-r", data_dir=data_dir, languages=LANGUAGES, download=False), 300)


@pytest.fixture(scope="module")
def model(bench):
    texts = [t for s in bench.splits.values() for t in s.questions + s.sentences]
    return tiny_static_model(texts, dim=32)


def _in_memory_scores(model, docids, texts, topics, qrels) -> dict[str, float]:
    """Exact search over a full score matrix (numpy, ties by corpus row), the top 100 scored by pytrec_eval with
    trec_eval's MIRACL settings (``-c``: every judged query counts; ``-M 100``)."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    q = model.encode([t for _, t in topics], normalize_embeddings=True, convert_to_numpy=True)
    c = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    scores = q.astype(np.float32) @ c.astype(np.float32).T
    top = np.lexsort((np.broadcast_to(np.arange(len(docids)), scores.shape), -scores), axis=1)[:, :100]
    run = {qid: {docids[j]: float(scores[i, j]) for j in top[i]} for i, (qid, _) in enumerate(topics)}
    qrel_dict: dict[str, dict[str, int]] = {}
    for qid, docid, rel in qrels:
        qrel_dict.setdefault(qid, {})[docid] = rel
    per_query = pytrec_eval.RelevanceEvaluator(qrel_dict, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    judged = [qid for qid, judged in qrel_dict.items() if any(r > 0 for r in judged.values())]
    return {
        "ndcg@10": float(np.mean([per_query.get(qid, {}).get("ndcg_cut_10", 0.0) for qid in judged])),
        "recall@100": float(np.mean([per_query.get(qid, {}).get("recall_100", 0.0) for qid in judged])),
        "queries": len(judged),
    }


def test_lareqa_in_miracl_layout_has_the_lareqa_pool(bench, tmp_path):
    script = _script()
    counts = script.write_lareqa_as_miracl(bench, tmp_path, docs_per_file=500)
    for lang in LANGUAGES:
        split = bench.splits[lang]
        assert counts[lang]["passages"] == len(split.sentences) and counts[lang]["files"] == -(-len(split.sentences) // 500)
        files = sorted((tmp_path / f"miracl-corpus-v1.0-{lang}").glob("docs-*.jsonl.gz"))
        assert len(files) == counts[lang]["files"]
        topics = (tmp_path / f"miracl-v1.0-{lang}" / "topics" / f"topics.miracl-v1.0-{lang}-dev.tsv").read_text("utf-8")
        assert len(topics.splitlines()) == counts[lang]["topics"] == len(bench.relevance(lang, [lang])[0])
        rows = [line.split("\t") for line in
                (tmp_path / f"miracl-v1.0-{lang}" / "qrels" / f"qrels.miracl-v1.0-{lang}-dev.tsv").read_text("utf-8").splitlines()]
        assert all(len(r) == 4 and r[1] == "Q0" and r[3] in ("0", "1") for r in rows)
        # the relevant passage of each question is its answer sentence, by text
        docids, texts, _, _ = script.language_tables(bench, lang)
        text_of = dict(zip(docids, texts))
        qrow = {qid: i for i, qid in enumerate(split.question_ids)}
        for qid, _, docid, rel in rows:
            if rel == "1":
                assert text_of[docid] == split.sentences[split.answer_sentence[qrow[qid]]]


def test_miracl_path_equals_in_memory_exact_search_scored_by_pytrec_eval(bench, model, tmp_path):
    from sentence_transformers_hybrid.evaluation.miracl import evaluate_miracl

    script = _script()
    data = tmp_path / "data"
    script.write_lareqa_as_miracl(bench, data, docs_per_file=700)
    out = tmp_path / "out"
    evaluate_miracl(model, LANGUAGES, data_dir=data, output_dir=out, encode_dtype="float32", shard_size=1000,
                    batch_size=256, show_progress_bar=False)
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    for lang in LANGUAGES:
        docids, texts, topics, qrels = script.language_tables(bench, lang)
        want = _in_memory_scores(model, docids, texts, topics, qrels)
        got = metrics["languages"][lang]
        assert got["queries"] == want["queries"] and got["passages"] == len(docids)
        assert got["ndcg@10"] == pytest.approx(want["ndcg@10"], abs=1e-6), lang
        assert got["recall@100"] == pytest.approx(want["recall@100"], abs=1e-6), lang
        assert 0.0 < got["recall@100"] < 1.0  # the model ranks: neither nothing nor everything found
    assert metrics["macro"]["ndcg@10"] == pytest.approx(np.mean([metrics["languages"][x]["ndcg@10"] for x in LANGUAGES]))
    runs = (out / "runs" / "de.trec").read_text("utf-8").splitlines()
    assert len(runs) == 100 * metrics["languages"]["de"]["queries"]
