from __future__ import annotations

import csv
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import StaticEmbedding
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from sentence_transformers_hybrid import load_lareqa
from sentence_transformers_hybrid.beir_interop import beir_evaluate, relevance_from_qrels, run_from_scores
from sentence_transformers_hybrid.evaluation import BEIRRetrievalEvaluator, MultilingualRetrievalEvaluator
from sentence_transformers_hybrid.metrics import LAREQA_METRICS

# ------------------------------------------------------------------------------------------ fixtures


def tiny_model(texts: list[str], dim: int = 32, seed: int = 0) -> SentenceTransformer:
    """A StaticEmbedding over a word-level tokenizer trained here: offline, encodes thousands of texts/s."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=5000, special_tokens=["[UNK]"]))
    torch.manual_seed(seed)
    return SentenceTransformer(modules=[StaticEmbedding(tok, embedding_dim=dim)], device="cpu")


@pytest.fixture(scope="module")
def xquad(data_dir):
    return load_lareqa("xquad-r", data_dir=data_dir)


@pytest.fixture(scope="module")
def mlqa(data_dir):
    return load_lareqa("mlqa-r", data_dir=data_dir)


@pytest.fixture(scope="module")
def model(xquad):
    texts = [t for lang in ("de", "en") for t in xquad.splits[lang].questions + xquad.splits[lang].sentences]
    return tiny_model(texts)


def relevant_sets_from_json(data_dir, name: str, languages: list[str]) -> dict[str, dict[str, set[int]]]:
    """{query language: {question id: pool columns of its answer sentences}}, straight from the JSON files."""
    answer_column: dict[str, dict[str, int]] = {}  # language -> question id -> pool column
    offset = 0
    for lang in sorted(languages):
        with open(os.path.join(data_dir, name, f"{lang}.json"), encoding="utf-8") as f:
            data = json.load(f)["data"]
        answer_column[lang] = {}
        n_sentences = 0
        for article in data:
            for par in article["paragraphs"]:
                for qa in par["qas"]:
                    start = qa["answers"][0]["answer_start"]
                    # the sentence whose span holds the answer start (whitespace belongs to the next sentence)
                    s = next(i for i, (_, end) in enumerate(par["sentence_breaks"]) if start < end)
                    answer_column[lang][qa["id"]] = offset + n_sentences + s
                n_sentences += len(par["sentences"])
        offset += n_sentences
    return {
        x: {qid: {answer_column[y][qid] for y in languages if qid in answer_column[y]} for qid in answer_column[x]}
        for x in languages
    }


# ------------------------------------------------------------------------------- relevant sets


@pytest.mark.parametrize("name, sizes", [("xquad-r", {11}), ("mlqa-r", {2, 3, 4})])
def test_multi_setting_relevant_sets_match_the_json(data_dir, xquad, mlqa, name, sizes):
    bench = xquad if name == "xquad-r" else mlqa
    evaluator = MultilingualRetrievalEvaluator(bench, settings=["multi"])
    expected = relevant_sets_from_json(data_dir, name, bench.languages)
    seen_sizes = set()
    for x in bench.languages:
        rows, rel = evaluator.relevance(x, None)
        qids = [bench.splits[x].question_ids[r] for r in rows]
        assert sorted(qids) == sorted(expected[x])  # every question has its own answer in the pool
        got = {qid: set(rel.indices[rel.indptr[i] : rel.indptr[i + 1]].tolist()) for i, qid in enumerate(qids)}
        assert got == expected[x], x
        seen_sizes |= {len(v) for v in got.values()}
    assert seen_sizes == sizes


# --------------------------------------------------------------------------- evaluator on real data


def test_evaluator_on_two_xquad_languages(xquad, model, tmp_path):
    evaluator = MultilingualRetrievalEvaluator(xquad, languages=["en", "de"], batch_size=256)
    metrics = evaluator(model, output_path=str(tmp_path))
    expected_keys = {f"xquad-r_{s}_{m}" for s in ("mono", "cross", "multi") for m in (*LAREQA_METRICS, "map")}
    assert set(metrics) == expected_keys | {"xquad-r_multi_same_language@20"}
    assert evaluator.primary_metric == "xquad-r_multi_map@20"
    for key, value in metrics.items():
        assert np.isfinite(value), key
        if not key.endswith("rank_distance"):
            assert 0.0 <= value <= 1.0, key
    # one relevant candidate per mono/cross query: no spread; two (en + de) in the multi pool
    assert metrics["xquad-r_mono_rank_distance"] == 0.0
    assert metrics["xquad-r_multi_rank_distance"] > 0.0
    # a bag of random word vectors still retrieves by word overlap: far above chance (1/1200) in mono
    assert metrics["xquad-r_mono_mrr@10"] > 0.05

    rows = evaluator.results
    assert [(r["setting"], r["query_language"], r["corpus_language"]) for r in rows] == [
        ("multi", "de", "all"), ("mono", "de", "de"), ("cross", "de", "en"),
        ("multi", "en", "all"), ("cross", "en", "de"), ("mono", "en", "en"),
    ]  # fmt: skip
    assert all(r["queries"] == 1190 for r in rows)
    mono = [r for r in rows if r["setting"] == "mono"]
    assert metrics["xquad-r_mono_map@20"] == pytest.approx(np.mean([r["map@20"] for r in mono]))
    langs, mat = evaluator.pair_matrix("map@20")
    assert langs == ["de", "en"] and mat[1, 0] == rows[4]["map@20"]

    with open(tmp_path / evaluator.csv_file, encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and float(table[0]["map@20"]) == pytest.approx(rows[0]["map@20"])
    with open(tmp_path / evaluator.json_file, encoding="utf-8") as f:
        summary = json.load(f)
    assert summary[-1]["metrics"]["multi_map@20"] == pytest.approx(metrics["xquad-r_multi_map@20"])
    assert summary[-1]["candidate_text"] == "{sentence}\n{context}"


def test_pair_metrics_equal_beir_on_the_exported_setting(xquad, model):
    """The en -> de pair and the en -> pool setting, recomputed with BEIR dicts + pytrec_eval."""
    evaluator = MultilingualRetrievalEvaluator(
        xquad, languages=["de", "en"], settings=["cross", "multi"], candidate_context=False, batch_size=256
    )
    evaluator(model)
    for corpus_languages, row in ((["de"], evaluator.results[3]), (["de", "en"], evaluator.results[2])):
        assert row["query_language"] == "en"
        corpus, queries, qrels = xquad.beir("en", corpus_languages, with_context=False)
        doc_ids = list(corpus)
        q = model.encode(list(queries.values()), convert_to_tensor=True, batch_size=256)
        c = model.encode([d["text"] for d in corpus.values()], convert_to_tensor=True, batch_size=256)
        scores = model.similarity(q, c).numpy()
        run = run_from_scores(scores, list(queries), doc_ids, top_k=100)
        beir = beir_evaluate(qrels, run, k_values=[1, 10, 100])
        for ours, theirs in (("ndcg@10", "ndcg@10"), ("recall@1", "recall@1"), ("recall@10", "recall@10"),
                             ("mrr@10", "mrr@10")):  # fmt: skip
            assert row[ours] == pytest.approx(beir[theirs], abs=6e-6), (corpus_languages, ours)


def test_sentence_only_candidates(xquad):
    ev_ctx = MultilingualRetrievalEvaluator(xquad, languages=["en", "de"])
    ev_sent = MultilingualRetrievalEvaluator(xquad, languages=["en", "de"], candidate_context=False)
    split = xquad.splits["en"]
    i = int(split.answer_sentence[0])
    assert ev_sent.candidate_texts("en")[i] == split.sentences[i]
    assert ev_ctx.candidate_texts("en")[i] == split.sentences[i] + "\n" + split.paragraphs[split.sentence_paragraph[i]]


def test_evaluator_on_two_mlqa_languages(mlqa, model):
    evaluator = MultilingualRetrievalEvaluator(mlqa, languages=["de", "en"], name="mlqa", candidate_context=False, batch_size=256)
    metrics = evaluator(model)
    assert metrics["mlqa_multi_map@20"] == pytest.approx(
        np.mean([r["map@20"] for r in evaluator.results if r["setting"] == "multi"])
    )
    by_pair = {(r["query_language"], r["corpus_language"]): r for r in evaluator.results}
    de, en = mlqa.splits["de"], mlqa.splits["en"]
    shared = len(set(de.question_ids) & set(en.question_ids))
    assert by_pair["de", "en"]["queries"] == shared  # only questions that exist in English have an answer there
    assert by_pair["en", "de"]["queries"] == shared
    assert by_pair["en", "all"]["queries"] == len(en.questions)


def test_precomputed_embeddings_and_prompts(xquad, model):
    evaluator = MultilingualRetrievalEvaluator(
        xquad, languages=["de", "en"], settings=["mono"], query_prompt="q: ", candidate_context=False, batch_size=256
    )
    q, c = evaluator.encode(model)
    assert torch.allclose(q["en"][0], model.encode("q: " + xquad.splits["en"].questions[0], convert_to_tensor=True))
    with pytest.raises(ValueError, match="questions embeddings of language 'de' have shape"):
        evaluator.compute_metrics_from_embeddings({"de": q["de"][:5], "en": q["en"]}, c)
    assert set(evaluator.compute_metrics_from_embeddings(q, c)) == {f"mono_{m}" for m in (*LAREQA_METRICS, "map")}


def test_bad_arguments_raise(xquad):
    with pytest.raises(ValueError, match="settings"):
        MultilingualRetrievalEvaluator(xquad, settings=["bilingual"])
    with pytest.raises(ValueError, match="xx"):
        MultilingualRetrievalEvaluator(xquad, languages=["en", "xx"])


# ----------------------------------------------------- full mAP, same-language share, centering


@pytest.fixture(scope="module")
def small_mlqa(mlqa):
    from sentence_transformers_hybrid.data import subsample_benchmark

    return subsample_benchmark(load_lareqa_languages(mlqa, ["de", "en", "es"]), 60)


def load_lareqa_languages(bench, languages):
    from sentence_transformers_hybrid.data import RetrievalBenchmark

    return RetrievalBenchmark({lang: bench.splits[lang] for lang in languages}, name=bench.name)


def biased_embeddings(bench, dim: int = 24, bias: float = 2.0, seed: int = 0):
    """Meaning (one random vector per question group, shared by its question and answers) + noise + a strong offset
    per language and side: a model whose ranking the query's language dominates."""
    rng = np.random.default_rng(seed)
    meaning = rng.standard_normal((len(bench.group_ids), dim))
    q, c = {}, {}
    for lang, split in bench.splits.items():
        lang_q = bias * rng.standard_normal(dim)  # shared by the language's questions and candidates
        lang_c = lang_q + 0.3 * bias * rng.standard_normal(dim)
        q[lang] = meaning[split.question_groups] + 0.5 * rng.standard_normal((len(split.questions), dim)) + lang_q
        cand = 0.8 * rng.standard_normal((len(split.sentences), dim)) + lang_c
        cand[split.answer_sentence] += meaning[split.question_groups]
        c[lang] = cand
    return q, c


def brute_force_multi(bench, q, c, k: int = 20):
    """Per query language: map@20, map, rank_distance, same_language@20, from one full stable sort per row."""
    langs = bench.languages
    pool = np.concatenate([c[lang] for lang in langs])
    pool = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    pool_lang = np.repeat(np.arange(len(langs)), [len(c[lang]) for lang in langs])
    out = {}
    for i, x in enumerate(langs):
        qx = q[x] / np.linalg.norm(q[x], axis=1, keepdims=True)
        scores = (qx.astype(np.float32) @ pool.astype(np.float32).T).astype(np.float64)
        order = np.argsort(-scores, axis=1, kind="stable")  # ties: lower index first
        answers = bench.group_answer_columns(langs)[bench.splits[x].question_groups]
        rel = np.zeros(scores.shape, dtype=bool)
        for row, cols in enumerate(answers):
            rel[row, cols[cols >= 0]] = True
        ranked = np.take_along_axis(rel, order, 1)
        hits = np.cumsum(ranked, 1)
        ranks = np.arange(1, scores.shape[1] + 1)
        n_rel = rel.sum(1)
        full_ap = (ranked * hits / ranks).sum(1) / n_rel
        ap20 = (ranked[:, :k] * hits[:, :k] / ranks[:k]).sum(1) / np.minimum(n_rel, k)
        rel_ranks = [ranks[r] for r in ranked]
        distance = np.array([r.max() - r.min() for r in rel_ranks])
        same = (pool_lang[order[:, :k]] == i).mean(1)
        out[x] = {"map@20": ap20.mean(), "map": full_ap.mean(), "rank_distance": distance.mean(),
                  "same_language@20": same.mean()}
    return out


def center_by_hand(embeddings):
    out = {}
    for lang, e in embeddings.items():
        u = e / np.linalg.norm(e, axis=1, keepdims=True)
        centered = u - u.mean(0)
        out[lang] = centered / np.linalg.norm(centered, axis=1, keepdims=True)
    return out


def test_multi_rows_and_keys_match_a_brute_force_computation(small_mlqa):
    q, c = biased_embeddings(small_mlqa)
    evaluator = MultilingualRetrievalEvaluator(small_mlqa, name="m", settings=["multi"])
    summary = evaluator.compute_metrics_from_embeddings(q, c)
    want = brute_force_multi(small_mlqa, q, c)
    rows = {r["query_language"]: r for r in evaluator.results}
    assert sorted(rows) == ["de", "en", "es"] and all(r["setting"] == "multi" for r in rows.values())
    for lang, expected in want.items():
        for key, value in expected.items():
            assert rows[lang][key] == pytest.approx(value, rel=1e-9), (lang, key)
    for key in ("map@20", "map", "rank_distance", "same_language@20"):  # mean over query languages
        assert summary[f"multi_{key}"] == pytest.approx(np.mean([want[x][key] for x in want]), rel=1e-9), key


def test_full_map_in_mono_and_cross_matches_a_brute_force_computation(small_mlqa):
    q, c = biased_embeddings(small_mlqa, seed=1)
    evaluator = MultilingualRetrievalEvaluator(small_mlqa, settings=["mono", "cross"])
    summary = evaluator.compute_metrics_from_embeddings(q, c)
    aps = []
    for x in small_mlqa.languages:
        for y in small_mlqa.languages:
            rows, rel = small_mlqa.relevance(x, y)
            qx = q[x][rows] / np.linalg.norm(q[x][rows], axis=1, keepdims=True)
            cy = c[y] / np.linalg.norm(c[y], axis=1, keepdims=True)
            scores = qx.astype(np.float32) @ cy.astype(np.float32).T
            order = np.argsort(-scores, axis=1, kind="stable")
            rank = np.argmax(np.take_along_axis(rel.toarray(), order, 1), 1) + 1  # one relevant candidate
            aps.append(((x == y), np.mean(1.0 / rank)))
    assert summary["mono_map"] == pytest.approx(np.mean([a for m, a in aps if m]), rel=1e-9)
    assert summary["cross_map"] == pytest.approx(np.mean([a for m, a in aps if not m]), rel=1e-9)


def test_centered_evaluator_equals_the_plain_one_on_centered_embeddings(small_mlqa):
    q, c = biased_embeddings(small_mlqa, seed=2)
    centered = MultilingualRetrievalEvaluator(small_mlqa, center_languages=True)
    got = centered.compute_metrics_from_embeddings(q, c)
    got_rows = centered.results
    plain = MultilingualRetrievalEvaluator(small_mlqa)
    want = plain.compute_metrics_from_embeddings(center_by_hand(q), center_by_hand(c))
    assert got == pytest.approx(want, rel=1e-9)
    assert len(got_rows) == len(plain.results)
    for ours, theirs in zip(got_rows, plain.results):
        numbers = [k for k, v in theirs.items() if not isinstance(v, str)]
        assert {k: v for k, v in ours.items() if isinstance(v, str)} == {
            k: v for k, v in theirs.items() if isinstance(v, str)
        }
        assert {k: ours[k] for k in numbers} == pytest.approx({k: theirs[k] for k in numbers}, rel=1e-9)


def test_one_encoding_serves_plain_and_centered_figures(small_mlqa):
    q, c = biased_embeddings(small_mlqa, seed=3)
    evaluator = MultilingualRetrievalEvaluator(small_mlqa)
    plain = evaluator.compute_metrics_from_embeddings(q, c)
    centered = evaluator.compute_metrics_from_embeddings(q, c, center_languages=True)
    assert centered == pytest.approx(
        MultilingualRetrievalEvaluator(small_mlqa, center_languages=True).compute_metrics_from_embeddings(q, c)
    )
    assert plain == pytest.approx(evaluator.compute_metrics_from_embeddings(q, c, center_languages=False))
    assert centered != plain


def test_centering_removes_an_added_language_offset(small_mlqa):
    q, c = biased_embeddings(small_mlqa, bias=3.0, seed=4)
    evaluator = MultilingualRetrievalEvaluator(small_mlqa, settings=["multi"])
    plain = evaluator.compute_metrics_from_embeddings(q, c)
    centered = evaluator.compute_metrics_from_embeddings(q, c, center_languages=True)
    assert plain["multi_same_language@20"] > 0.9  # the query's language wins the top 20
    assert centered["multi_same_language@20"] < plain["multi_same_language@20"] - 0.3
    assert centered["multi_rank_distance"] < plain["multi_rank_distance"]
    assert centered["multi_map@20"] > plain["multi_map@20"]


def test_centering_a_language_of_one_question_names_language_and_side(small_mlqa):
    from sentence_transformers_hybrid.data import subsample_benchmark

    one = subsample_benchmark(small_mlqa, 1)
    q, c = biased_embeddings(one)
    evaluator = MultilingualRetrievalEvaluator(one, center_languages=True)
    with pytest.raises(ValueError, match="center_languages: questions of language 'de': 1 embedding"):
        evaluator.compute_metrics_from_embeddings(q, c)


def test_centering_zero_variance_candidates_names_language_and_side(small_mlqa):
    q, c = biased_embeddings(small_mlqa)
    c["en"] = np.ones_like(c["en"])
    evaluator = MultilingualRetrievalEvaluator(small_mlqa, center_languages=True)
    with pytest.raises(ValueError, match="candidates of language 'en': all .* embeddings are equal .zero variance"):
        evaluator.compute_metrics_from_embeddings(q, c)


def test_centering_nan_embeddings_gives_the_kernel_error(small_mlqa):
    q, c = biased_embeddings(small_mlqa)
    q["es"][3, 0] = np.nan
    evaluator = MultilingualRetrievalEvaluator(small_mlqa, center_languages=True)
    with pytest.raises(ValueError, match=r"query language 'es': scores\[\d+, \d+\] is nan.*finite"):
        evaluator.compute_metrics_from_embeddings(q, c)


def test_same_language_share_counts_the_pool_when_smaller_than_k():
    from sentence_transformers_hybrid.metrics import same_language_share

    top = torch.tensor([[2, 0, 1]])
    assert float(same_language_share(top, torch.tensor([0, 1, 0]), 0, k=20)[0]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least min"):
        same_language_share(top[:, :2], torch.tensor([0, 1, 0]), 0, k=20)


def test_centered_evaluator_reports_it_in_its_config(small_mlqa):
    assert MultilingualRetrievalEvaluator(small_mlqa, center_languages=True).get_config_dict()["center_languages"]
    assert "center_languages" not in MultilingualRetrievalEvaluator(small_mlqa).get_config_dict()


# ---------------------------------------------------------------------------------------- trainer


def test_evaluator_metrics_show_up_in_the_trainer_logs(xquad, model, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    en = xquad.splits["en"]
    train = Dataset.from_dict(
        {"anchor": en.questions[:32], "positive": [en.sentences[i] for i in en.answer_sentence[:32]]}
    )
    evaluator = MultilingualRetrievalEvaluator(
        xquad, languages=["de", "en"], show_progress_bar=False, candidate_context=False, batch_size=256
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=16, eval_strategy="steps",
        eval_steps=1, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
    )  # fmt: skip
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train, loss=MultipleNegativesRankingLoss(model), evaluator=evaluator
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_xquad-r_multi_map@20" in h]
    assert [h["step"] for h in evals] == [1, 2]
    assert all(f"eval_xquad-r_{s}_rank_distance" in h for h in evals for s in ("mono", "cross", "multi"))


# --------------------------------------------------------------------------------------------- BEIR


def test_beir_evaluator_matches_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(0)
    corpus = {f"d{i}": {"title": "", "text": f"doc {i}"} for i in range(300)}
    queries = {f"q{i}": f"query {i}" for i in range(40)}
    qrels = {q: {f"d{j}": 1 for j in rng.choice(300, size=rng.integers(1, 6), replace=False)} for q in queries}
    qrels["q0"]["d299"] = 0  # judged non-relevant: ignored
    q_emb, c_emb = rng.standard_normal((40, 16)), rng.standard_normal((300, 16))
    evaluator = BEIRRetrievalEvaluator(corpus, queries, qrels, name="toy", query_chunk_size=7)
    ours = evaluator.compute_metrics_from_embeddings(torch.from_numpy(q_emb), torch.from_numpy(c_emb))
    cos = (q_emb / np.linalg.norm(q_emb, axis=1, keepdims=True)) @ (
        c_emb / np.linalg.norm(c_emb, axis=1, keepdims=True)
    ).T
    run = {q: {d: float(cos[i, j]) for j, d in enumerate(corpus)} for i, q in enumerate(queries)}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    assert ours["ndcg@10"] == pytest.approx(np.mean([t["ndcg_cut_10"] for t in trec.values()]), abs=1e-6)
    assert ours["recall@100"] == pytest.approx(np.mean([t["recall_100"] for t in trec.values()]), abs=1e-6)
    assert evaluator.primary_metric == "ndcg@10"


def test_beir_evaluator_runs_a_model_and_names_results(model, xquad):
    """On 300 documents recall@100 can miss: the value must be the model's own ranking, checked by numpy here."""
    en = xquad.splits["en"]
    rng = np.random.default_rng(0)
    corpus = {f"d{i}": {"title": "", "text": t} for i, t in enumerate(en.sentences[:300])}
    corpus["d0"] = {"title": "Faust", "text": "written by Goethe"}
    queries = {f"q{i}": q for i, q in enumerate(en.questions[:40])}
    qrels = {q: {f"d{j}": 1 for j in rng.choice(300, size=3, replace=False)} for q in queries}
    evaluator = BEIRRetrievalEvaluator(corpus, queries, qrels, name="toy")
    assert evaluator.corpus[0] == "Faust written by Goethe"
    metrics = evaluator(model)
    assert set(metrics) == {"toy_ndcg@10", "toy_recall@100"} and evaluator.primary_metric == "toy_ndcg@10"
    q = model.encode(list(queries.values()), normalize_embeddings=True)
    d = model.encode(evaluator.corpus, normalize_embeddings=True)
    top = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :100]
    rel = [{int(k[1:]) for k in qrels[qid]} for qid in queries]
    recall = np.mean([len(set(t.tolist()) & r) / len(r) for t, r in zip(top, rel)])
    assert metrics["toy_recall@100"] == pytest.approx(recall, abs=1e-6)
    assert 0.0 < metrics["toy_recall@100"] < 1.0  # random relevant documents: some fall outside the top 100


def test_beir_evaluator_encodes_the_context_the_benchmark_export_writes(xquad, model):
    """``RetrievalBenchmark.beir(with_context=True)`` writes each sentence's paragraph as ``context``: the BEIR evaluator
    encodes it as the LAReQA evaluator does (``CANDIDATE_WITH_CONTEXT``) and scores the en -> de setting as it does."""
    corpus, queries, qrels = xquad.beir("en", ["de"], with_context=True)
    evaluator = BEIRRetrievalEvaluator(corpus, queries, qrels, metrics=["ndcg@10", "recall@10", "mrr@10"],
                                       batch_size=256)
    split = xquad.splits["de"]
    assert evaluator.corpus[5] == split.sentences[5] + "\n" + split.paragraphs[split.sentence_paragraph[5]]
    ours = evaluator(model)
    lareqa = MultilingualRetrievalEvaluator(xquad, languages=["de", "en"], settings=["cross"], batch_size=256)
    lareqa(model)
    (row,) = [r for r in lareqa.results if (r["query_language"], r["corpus_language"]) == ("en", "de")]
    for metric in ("ndcg@10", "recall@10", "mrr@10"):
        assert ours[metric] == pytest.approx(row[metric], abs=1e-6), metric


def test_beir_evaluator_keeps_graded_qrels_graded_like_beir_and_pytrec_eval():
    """Grades 1..3 are gains for nDCG (BEIR's ``EvaluateRetrieval.evaluate`` / trec_eval ``ndcg_cut``), not all 1."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(1)
    corpus = {f"d{i:03d}": {"title": "", "text": f"doc {i}"} for i in range(200)}
    queries = {f"q{i}": f"query {i}" for i in range(30)}
    qrels = {}
    for q in queries:
        judged = rng.choice(200, size=int(rng.integers(2, 12)), replace=False)
        qrels[q] = {f"d{j:03d}": int(g) for j, g in zip(judged, rng.integers(0, 4, len(judged)))}
        qrels[q][f"d{judged[0]:03d}"] = int(rng.integers(1, 4))  # at least one relevant
    q_emb, c_emb = rng.standard_normal((30, 16)), rng.standard_normal((200, 16))
    evaluator = BEIRRetrievalEvaluator(corpus, queries, qrels, metrics=["ndcg@10", "recall@100", "ndcg@3"])
    ours = evaluator.compute_metrics_from_embeddings(torch.from_numpy(q_emb), torch.from_numpy(c_emb))
    cos = (q_emb / np.linalg.norm(q_emb, axis=1, keepdims=True)) @ (
        c_emb / np.linalg.norm(c_emb, axis=1, keepdims=True)
    ).T
    run = {q: {d: float(cos[i, j]) for j, d in enumerate(corpus)} for i, q in enumerate(queries)}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "ndcg_cut.3", "recall.100"}).evaluate(run)
    assert ours["ndcg@10"] == pytest.approx(np.mean([t["ndcg_cut_10"] for t in trec.values()]), abs=1e-9)
    assert ours["ndcg@3"] == pytest.approx(np.mean([t["ndcg_cut_3"] for t in trec.values()]), abs=1e-9)
    assert ours["recall@100"] == pytest.approx(np.mean([t["recall_100"] for t in trec.values()]), abs=1e-9)
    beir = beir_evaluate(qrels, run, k_values=[3, 10, 100])  # BEIR's own evaluation (rounded to 5 decimals)
    assert ours["ndcg@10"] == pytest.approx(beir["ndcg@10"], abs=6e-6)
    binary = {q: {d: int(g > 0) for d, g in judged.items()} for q, judged in qrels.items()}
    flat = BEIRRetrievalEvaluator(corpus, queries, binary, metrics=["ndcg@10"]).compute_metrics_from_embeddings(
        torch.from_numpy(q_emb), torch.from_numpy(c_emb))
    assert abs(flat["ndcg@10"] - ours["ndcg@10"]) > 1e-3  # the grades matter on this set


def test_beir_evaluator_searches_with_the_chunked_engine_and_its_tie_rule(monkeypatch):
    """Corpus blocks of 7 rows and query blocks of 3 give the first-K of one full sort (score descending, corpus
    order on ties), through the engine's search, never a score matrix over the whole corpus."""
    import sentence_transformers_hybrid.evaluation.beir as beir_module

    rng = np.random.default_rng(2)
    c_emb = rng.standard_normal((50, 8)).astype(np.float32)
    c_emb[30] = c_emb[4]  # exact ties: the lower corpus row first
    c_emb[41] = c_emb[4]
    q_emb = rng.standard_normal((10, 8)).astype(np.float32)
    q_emb[0] = c_emb[4]
    corpus = {f"z{49 - i}": f"doc {i}" for i in range(50)}  # doc ids in the opposite order of the rows
    queries = {f"q{i}": f"query {i}" for i in range(10)}
    qrels = {q: {"z0": 1} for q in queries}
    calls, engine_search = [], beir_module.search

    def spy(q, index, top_k, **kw):
        calls.append((q.shape[0], len(index), kw["chunk_size"]))
        return engine_search(q, index, top_k, **kw)

    evaluator = BEIRRetrievalEvaluator(corpus, queries, qrels, metrics=["recall@20"], query_chunk_size=3,
                                       corpus_chunk_size=7)
    monkeypatch.setattr(beir_module, "search", spy)
    top = evaluator.search(q_emb, c_emb, "dot")
    want = np.lexsort((np.broadcast_to(np.arange(50), (10, 50)), -(q_emb @ c_emb.T)), axis=1)[:, :20]
    np.testing.assert_array_equal(top, want)
    assert calls == [(3, 50, 7), (3, 50, 7), (3, 50, 7), (1, 50, 7)]
    assert evaluator.search(q_emb, c_emb, "cosine")[0, :3].tolist() == [4, 30, 41]  # cosine 1, tied


def test_beir_evaluator_refuses_what_its_search_cannot_serve():
    corpus, queries, qrels = {"a": "x", "b": "y"}, {"q": "x"}, {"q": {"a": 1}}
    with pytest.raises(ValueError, match="'rank_distance' is not a cutoff metric"):
        BEIRRetrievalEvaluator(corpus, queries, qrels, metrics=["ndcg@10", "rank_distance"])
    evaluator = BEIRRetrievalEvaluator(corpus, queries, qrels)
    with pytest.raises(ValueError, match="similarity 'euclidean' is not supported"):
        evaluator.compute_metrics_from_embeddings(np.ones((1, 2)), np.eye(2), "euclidean")
    with pytest.raises(ValueError, match="corpus embedding 1 is not finite"):
        evaluator.compute_metrics_from_embeddings(np.ones((1, 2)), np.array([[1.0, 0.0], [np.nan, 1.0]]))


def test_a_beir_folder_keeps_the_context_and_graded_qrels(xquad, tmp_path):
    """A BEIR folder written from ``RetrievalBenchmark.beir(with_context=True)`` (BEIR's own loader drops
    ``context``) and a graded qrels file read back as written."""
    from sentence_transformers_hybrid.evaluation.beir import load_beir_folder as load_folder

    corpus, queries, qrels = xquad.beir("en", ["de"], with_context=True)
    qrels[next(iter(qrels))] = {d: 2 for d in qrels[next(iter(qrels))]}
    (tmp_path / "qrels").mkdir()
    with open(tmp_path / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": d, **doc}, ensure_ascii=False) + "\n" for d, doc in corpus.items())
    with open(tmp_path / "queries.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n" for q, t in queries.items())
    with open(tmp_path / "qrels" / "dev.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t{g}\n" for q, judged in qrels.items() for d, g in judged.items())
    got_corpus, got_queries, got_qrels = load_folder(str(tmp_path), split="dev")
    assert got_corpus == corpus and got_queries == queries and got_qrels == qrels
    evaluator = BEIRRetrievalEvaluator.from_folder(str(tmp_path), split="dev")
    split = xquad.splits["de"]
    assert evaluator.corpus[0] == split.sentences[0] + "\n" + split.paragraphs[split.sentence_paragraph[0]]
    with open(tmp_path / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"_id": "de/3", "text": "again"}) + "\n")
    with pytest.raises(ValueError, match=r"corpus.jsonl: doc id 'de/3' occurs twice, lines 4 and %d" % (len(corpus) + 1)):
        load_folder(str(tmp_path), split="dev")


def test_ranked_list_metrics_equal_the_kernel_on_binary_grades_and_use_grades_only_for_ndcg():
    import scipy.sparse as sp

    from sentence_transformers_hybrid.metrics import ranked_list_metrics, ranking_metrics, top_k_indices

    rng = np.random.default_rng(3)
    scores = np.round(rng.standard_normal((40, 120)), 1)  # rounded: many ties
    grades = np.where(rng.random((40, 120)) < 0.05, rng.integers(1, 4, (40, 120)), 0)
    grades[np.arange(40), rng.integers(0, 120, 40)] = 2  # every query has a relevant document
    names = ["ndcg@10", "recall@50", "precision@5", "accuracy@3", "mrr@10", "map@20"]
    top = top_k_indices(scores, 50).numpy()
    binary = ranked_list_metrics(top, sp.csr_matrix(grades > 0), names)
    kernel = ranking_metrics(scores, grades > 0, names, reduction="none")
    for name in names:
        np.testing.assert_allclose(binary[name], kernel[name], atol=1e-12, err_msg=name)
    graded = ranked_list_metrics(top, sp.csr_matrix(grades), names)
    for name in names[1:]:
        np.testing.assert_array_equal(graded[name], binary[name])
    assert not np.allclose(graded["ndcg@10"], binary["ndcg@10"])


def test_qrels_for_unknown_documents_raise():
    with pytest.raises(ValueError, match="'zz'.*not in the corpus"):
        relevance_from_qrels({"q": {"zz": 1}}, ["q"], ["a", "b"])


# ----------------------------------------------------------------------------------------- history files
def _small_evaluator(xquad, **kw):
    return MultilingualRetrievalEvaluator(xquad, languages=["de", "en"], batch_size=256, candidate_context=False,
                                          show_progress_bar=False, **kw)


def test_truncated_history_files_are_set_aside_and_a_fresh_one_started(xquad, model, tmp_path, caplog):
    evaluator = _small_evaluator(xquad)
    evaluator(model, output_path=str(tmp_path))
    csv_path, json_path = tmp_path / evaluator.csv_file, tmp_path / evaluator.json_file
    csv_text, json_text = csv_path.read_text(), json_path.read_text()
    csv_path.write_text(csv_text[: len(csv_text) // 2 + 3])  # a crash mid-write: last line cut
    json_path.write_text(json_text[: len(json_text) // 2])
    with caplog.at_level("WARNING"):
        metrics = evaluator(model, output_path=str(tmp_path), epoch=1, steps=10)
    assert (tmp_path / (evaluator.csv_file + ".corrupt")).read_text() == csv_text[: len(csv_text) // 2 + 3]
    assert (tmp_path / (evaluator.json_file + ".corrupt")).is_file()
    assert "moved it to" in caplog.text and evaluator.json_file in caplog.text
    with open(csv_path, encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and {r["steps"] for r in table} == {"10"}
    history = json.loads(json_path.read_text())
    assert len(history) == 1 and history[0]["metrics"]["multi_map@20"] == pytest.approx(metrics["xquad-r_multi_map@20"])


def test_history_written_in_place_never_loses_the_previous_records(xquad, model, tmp_path, disk_full):
    evaluator = _small_evaluator(xquad)
    evaluator(model, output_path=str(tmp_path))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.startswith(".")}
    disk_full(tmp_path, after=40)  # the next write fails after 40 bytes, like a crash or a full disk
    with pytest.raises(OSError, match="No space left"):
        evaluator(model, output_path=str(tmp_path), epoch=1, steps=10)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.startswith(".")} == before


def test_a_csv_of_another_metric_set_gets_the_union_of_columns_not_misaligned_rows(xquad, model, tmp_path):
    evaluator = _small_evaluator(xquad)
    old_header = ["epoch", "steps", "setting", "query_language", "corpus_language", "queries", "candidates",
                  "old_metric", "map@20"]
    with open(tmp_path / evaluator.csv_file, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([old_header, [0, 5, "mono", "de", "de", 1190, 1190, 0.123, 0.5]])
    evaluator(model, output_path=str(tmp_path), epoch=1, steps=10)
    with open(tmp_path / evaluator.csv_file, encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, table = reader.fieldnames, list(reader)
    assert header[: len(old_header)] == old_header and set(LAREQA_METRICS) <= set(header)
    assert table[0]["old_metric"] == "0.123" and table[0]["map@20"] == "0.5" and table[0]["recall@1"] == ""
    for row, result in zip(table[1:], evaluator.results):
        assert row["old_metric"] == "" and row["query_language"] == result["query_language"]
        for m in LAREQA_METRICS:
            assert float(row[m]) == pytest.approx(result[m]), m


def test_beir_csv_history_survives_truncation_and_metric_changes(model, tmp_path, caplog):
    corpus = {"a": "written by Goethe", "b": "the panda is a bear", "c": "rain"}
    path = tmp_path / "BEIR-Retrieval_evaluation_toy_results.csv"
    path.write_text("epoch,steps,ndcg@10,recall@100\n0,1,0.5,1.0\n0,2,0.")  # truncated last line
    with caplog.at_level("WARNING"):
        BEIRRetrievalEvaluator(corpus, {"q": "Goethe"}, {"q": {"a": 1}}, name="toy")(model, str(tmp_path), 1, 3)
    assert "moved it to" in caplog.text and (tmp_path / (path.name + ".corrupt")).is_file()
    BEIRRetrievalEvaluator(corpus, {"q": "Goethe"}, {"q": {"a": 1}}, name="toy", metrics=["mrr@10"])(
        model, str(tmp_path), 1, 4)
    with open(path, encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["steps"] for r in table] == ["3", "4"] and table[1]["ndcg@10"] == "" and table[0]["mrr@10"] == ""
    assert float(table[1]["mrr@10"]) > 0


def test_cka_csv_gets_the_union_of_columns_when_the_languages_change(model, tmp_path):
    from sentence_transformers_hybrid.evaluation import CKAEvaluator

    texts = {lang: [f"{w} {lang}" for w in ("Goethe wrote", "the panda", "a bear", "rain falls", "Paris is")]
             for lang in ("de", "en", "fr")}
    CKAEvaluator({k: texts[k] for k in ("de", "en")}, name="x")(model, str(tmp_path))
    CKAEvaluator(texts, name="x")(model, str(tmp_path))
    with open(tmp_path / "cka_evaluation_x_results.csv", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, table = reader.fieldnames, list(reader)
    assert header[:4] == ["epoch", "steps", "cka_de_en", "cka_mean"] and "cka_en_fr" in header
    assert table[0]["cka_en_fr"] == "" and table[1]["cka_en_fr"] != ""
    assert table[0]["cka_mean"] == table[0]["cka_de_en"]  # one pair: its mean, under its own column


def test_evaluator_history_damaged_inside_the_trainer_does_not_stop_training(xquad, model, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    en = xquad.splits["en"]
    train = Dataset.from_dict({"anchor": en.questions[:32], "positive": [en.sentences[i] for i in en.answer_sentence[:32]]})
    evaluator = _small_evaluator(xquad)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / evaluator.json_file).write_text('[{"epoch": 0, "steps"')  # left by a crash
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=16, eval_strategy="steps",
        eval_steps=1, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
    )  # fmt: skip
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                         loss=MultipleNegativesRankingLoss(model), evaluator=evaluator)
    trainer.train()
    assert trainer.state.global_step == 2
    history = json.loads((tmp_path / "eval" / evaluator.json_file).read_text())
    assert [h["steps"] for h in history] == [1, 2]
