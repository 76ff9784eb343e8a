"""Issue 22 ("beyond the paper"): the XQuAD-R dev split by article, merge_models, the parallel-query consistency
term, the selection and non-inferiority rules, and the ``beyond`` preset end to end on a tiny model."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sentence_transformers_hybrid import ParallelCorpus, merge_models, parallel_query_dataset
from sentence_transformers_hybrid.data import DataValidationError, split_lareqa_by_article
from sentence_transformers_hybrid.data.articles import check_disjoint, dev_article_positions, lareqa_dev_protocol
from sentence_transformers_hybrid.data.pair_dataset import pair_layout
from sentence_transformers_hybrid.experiment.selection import (
    non_inferior,
    pooled_sd,
    select_candidate,
    worst_margin,
)
from sentence_transformers_hybrid.losses import ParallelConsistencyLoss, hybrid_loss
from sentence_transformers_hybrid.models.merge import ModelMergeError
from sentence_transformers_hybrid.sampling.parallel import PARALLEL_QUERY_COLUMN, parallel_query_rows
from sentence_transformers_hybrid.testing import tiny_static_model, tiny_transformer_model


# ------------------------------------------------------------------------------------------------ dev split
def test_real_xquad_r_gives_10_dev_and_38_train_articles_with_questions_in_every_language(data_dir):
    split = split_lareqa_by_article("xquad-r", data_dir=data_dir)
    assert len(split.dev_articles) == 10 and len(split.train_articles) == 38
    assert not set(split.dev_articles) & set(split.train_articles)
    assert split.dev.name == "xquad-r-dev" and len(split.dev.languages) == 11
    assert all(len(s.questions) > 0 for s in split.dev.splits.values())
    assert all(len(s.questions) > 0 for s in split.train.splits.values())
    assert not set(split.dev.group_ids) & set(split.train.group_ids)
    total = len(split.dev.group_ids) + len(split.train.group_ids)
    from sentence_transformers_hybrid import load_lareqa

    assert total == len(load_lareqa("xquad-r", data_dir=data_dir, languages=["en"]).group_ids)


def test_dev_protocol_returns_the_train_corpus_the_dev_benchmark_and_the_titles(data_dir):
    corpus, dev, titles = lareqa_dev_protocol(data_dir=data_dir, languages=["en", "de"])
    assert titles == split_lareqa_by_article("xquad-r", data_dir=data_dir, languages=["de"]).dev_articles
    assert titles[:2] == ["Super_Bowl_50", "Teacher"]  # positions 0 and 5 of the files
    assert not set(corpus.groups) & set(dev.group_ids) and len(corpus.groups) > 3 * len(dev.group_ids)


def test_dev_article_positions_rule_and_bad_arguments():
    assert dev_article_positions(48) == list(range(0, 48, 5))
    assert dev_article_positions(10, every=3, offset=2) == [2, 5, 8]
    for bad in ({"every": 1}, {"offset": 5}, {"offset": -1}):
        with pytest.raises(ValueError):
            dev_article_positions(48, **bad)


def _write_lareqa(root, langs, articles):
    """A tiny LAReQA-layout folder: articles = [(title, {lang: [question, ...]}), ...]."""
    folder = root / "xquad-r"
    folder.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        data = []
        for a, (title, questions) in enumerate(articles):
            context = f"Sentence one of {title}. Sentence two."
            qas = [{"id": f"{title}-{i}", "question": q, "answers": [{"text": "one", "answer_start": 9}]}
                   for i, q in enumerate(questions.get(lang, []))]
            data.append({"title": title, "paragraphs": [{"context": context, "qas": qas,
                                                         "sentences": [f"Sentence one of {title}.", "Sentence two."],
                                                         "sentence_breaks": [[0, len(f"Sentence one of {title}.")],
                                                                             [len(f"Sentence one of {title}.") + 1,
                                                                              len(context)]]}]})
        (folder / f"{lang}.json").write_text(json.dumps({"data": data}), encoding="utf-8")
    return root


def test_a_dev_split_that_leaves_a_language_without_questions_is_refused(tmp_path):
    articles = [(f"A{i}", {"en": [f"q{i}"], "de": [f"q{i}"]}) for i in range(6)]
    articles[0] = ("A0", {"en": ["q0"]})  # dev articles: positions 0 and 5 -> A0 and A5
    articles[5] = ("A5", {"en": ["q5"]})
    root = _write_lareqa(tmp_path, ["en", "de"], articles)
    with pytest.raises(DataValidationError, match=r"xquad-r-dev: language 'de' .* no question"):
        split_lareqa_by_article("xquad-r", data_dir=root, languages=["en", "de"])


def test_an_article_in_both_splits_is_refused(tmp_path, data_dir):
    articles = [(f"A{i}", {"en": [f"q{i}"]}) for i in range(6)]
    articles[3] = ("A0", {"en": ["q3"]})  # a title twice: one article on both sides
    root = _write_lareqa(tmp_path, ["en"], articles)
    with pytest.raises(DataValidationError, match=r"'A0'.* both splits"):
        split_lareqa_by_article("xquad-r", data_dir=root, languages=["en"])
    split = split_lareqa_by_article("xquad-r", data_dir=data_dir, languages=["en"])
    with pytest.raises(DataValidationError, match="both splits"):
        check_disjoint(split.train, split.train)


def test_articles_that_differ_between_languages_are_refused(tmp_path):
    root = _write_lareqa(tmp_path, ["en", "de"], [(f"A{i}", {"en": ["q"], "de": ["q"]}) for i in range(6)])
    de = json.loads((root / "xquad-r" / "de.json").read_text())
    de["data"][2]["title"] = "Other"
    (root / "xquad-r" / "de.json").write_text(json.dumps(de))
    with pytest.raises(DataValidationError, match=r"de\.json.* position 2"):
        split_lareqa_by_article("xquad-r", data_dir=root, languages=["en", "de"])


def test_dev_titles_pick_the_dev_articles_by_name(tmp_path):
    root = _write_lareqa(tmp_path, ["en"], [(f"A{i}", {"en": [f"q{i}"]}) for i in range(4)])
    split = split_lareqa_by_article("xquad-r", data_dir=root, languages=["en"], dev_titles=["A2"])
    assert split.dev_articles == ["A2"] and split.train_articles == ["A0", "A1", "A3"]
    with pytest.raises(DataValidationError, match="'Nope'"):
        split_lareqa_by_article("xquad-r", data_dir=root, languages=["en"], dev_titles=["Nope"])


# ------------------------------------------------------------------------------------------------ merge_models
TEXTS = ["who wrote faust", "goethe wrote faust in weimar", "the capital of france is paris", "wer schrieb faust",
         "paris", "die hauptstadt von frankreich"]


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _perturbed(model, seed):
    """A copy of ``model`` with other weights (the same architecture and vocabulary)."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return other


def test_merge_lambda_one_is_a_zero_is_b_half_is_the_mean(tmp_path):
    a = tiny_transformer_model(tmp_path / "a", TEXTS, seed=0)
    b = _perturbed(a, 1)
    pa, pb = _params(a), _params(b)
    assert any(not torch.equal(pa[k], pb[k]) for k in pa if pa[k].is_floating_point())
    for lam, expect in ((1.0, lambda k: pa[k]), (0.0, lambda k: pb[k]), (0.5, lambda k: (pa[k] + pb[k]) / 2)):
        merged = _params(merge_models(a, b, lam))
        for k, v in merged.items():
            if v.is_floating_point():
                torch.testing.assert_close(v, expect(k), rtol=0, atol=1e-7 if lam == 0.5 else 0)
    assert all(torch.equal(v, pa[k]) for k, v in _params(a).items())  # inputs unchanged
    assert all(torch.equal(v, pb[k]) for k, v in _params(b).items())
    emb = merge_models(a, b, 0.5).encode(["who wrote faust"], convert_to_numpy=True)
    assert emb.shape == (1, 32) and np.isfinite(emb).all()


def test_merge_of_other_shapes_names_the_module_and_parameter(tmp_path):
    a = tiny_transformer_model(tmp_path / "a", TEXTS, seed=0)
    b = tiny_transformer_model(tmp_path / "b", TEXTS, seed=0, intermediate_size=48)
    with pytest.raises(ModelMergeError, match=r"module 0 \(Transformer\), parameter '.*': shape"):
        merge_models(a, b, 0.5)


def test_merge_of_other_architectures_is_refused_naming_the_module(tmp_path):
    a = tiny_transformer_model(tmp_path / "a", TEXTS, seed=0)
    deeper = tiny_transformer_model(tmp_path / "b", TEXTS, seed=0, num_hidden_layers=3)
    with pytest.raises(ModelMergeError, match=r"module 0 \(Transformer\).*only in B \['model\.encoder\.layer\.2"):
        merge_models(a, deeper, 0.5)
    with pytest.raises(ModelMergeError, match="modules"):
        merge_models(a, tiny_static_model(TEXTS), 0.5)
    with pytest.raises(ValueError, match="lam"):
        merge_models(a, a, 1.5)


def test_merge_refuses_the_same_shapes_with_another_vocabulary():
    a = tiny_static_model(TEXTS)
    b = _perturbed(a, 2)
    b[0].tokenizer.add_tokens(["zzz"])  # the embedding matrix keeps its shape; the vocabulary differs
    assert a[0].embedding.weight.shape == b[0].embedding.weight.shape
    with pytest.raises(ModelMergeError, match=r"module 0 \(StaticEmbedding\): the tokenizer vocabularies differ"):
        merge_models(a, b, 0.5)


# ------------------------------------------------------------------------------------------------ consistency term
def _parallel_corpus(groups=6, langs=("de", "en", "fr")):
    return ParallelCorpus.from_records([
        {"group": f"g{i}", "lang": lang, "query": f"q{i} {lang}", "passage": f"p{i} {lang}"}
        for i in range(groups) for lang in langs
    ])


def test_parallel_column_is_another_language_of_the_same_group_and_deterministic():
    corpus = _parallel_corpus()
    layout = pair_layout(corpus)
    ids = np.arange(layout.num_pairs)
    rows = parallel_query_rows(layout, ids, seed=3)
    q_rows, _ = layout.rows(ids)
    group, language = corpus.row_group(), corpus.row_language()
    assert (group[rows] == group[q_rows]).all()
    assert (language[rows] != language[q_rows]).all()
    assert np.array_equal(rows, parallel_query_rows(layout, ids, seed=3))
    assert not np.array_equal(rows, parallel_query_rows(layout, ids, seed=4))
    # every other language is drawn
    assert len(set(zip(language[q_rows].tolist(), language[rows].tolist()))) == 6


def test_parallel_dataset_keeps_queries_and_passages_and_the_sampler_accepts_it():
    from sentence_transformers_hybrid import HybridBatchSampler

    corpus = _parallel_corpus(groups=8)
    plain, parallel = corpus.to_dataset(), parallel_query_dataset(corpus, seed=0)
    assert parallel.column_names == plain.column_names
    rows = parallel[:]
    assert rows["query"] == plain[:]["query"] and rows["passage"] == plain[:]["passage"]
    assert list(rows) == ["query", "passage", PARALLEL_QUERY_COLUMN]
    factory = HybridBatchSampler.configure(corpus, alpha=0.5, mode="hybrid")
    a = list(factory(parallel, batch_size=4, drop_last=False, seed=0))
    b = list(factory(plain, batch_size=4, drop_last=False, seed=0))
    assert a == b  # the same batches: the candidates (in-batch negatives) are unchanged


def test_a_single_language_group_repeats_its_question():
    corpus = ParallelCorpus.from_records([{"group": "solo", "lang": "en", "query": "q", "passage": "p"},
                                          {"group": "pair", "lang": "en", "query": "qe", "passage": "pe"},
                                          {"group": "pair", "lang": "de", "query": "qd", "passage": "pd"}])
    rows = parallel_query_dataset(corpus)[:]
    by_query = dict(zip(rows["query"], rows[PARALLEL_QUERY_COLUMN]))
    assert by_query == {"q": "q", "qe": "qd", "qd": "qe"}


def _reference_loss(model, columns, scale, beta):
    """The formula in plain torch: cross-entropy over cos-sim rows + beta * mean symmetric KL, by hand."""
    def embed(texts):
        return model(model.preprocess(texts))["sentence_embedding"]

    q, p, q2 = (embed(c) for c in columns)

    def normed(x):
        return x / x.norm(dim=1, keepdim=True)

    s1 = scale * normed(q) @ normed(p).T
    s2 = scale * normed(q2) @ normed(p).T
    log_p1 = s1 - s1.logsumexp(dim=1, keepdim=True)
    log_p2 = s2 - s2.logsumexp(dim=1, keepdim=True)
    ce = -log_p1.diagonal().mean()
    kl12 = (log_p1.exp() * (log_p1 - log_p2)).sum(dim=1)
    kl21 = (log_p2.exp() * (log_p2 - log_p1)).sum(dim=1)
    return ce + beta * (kl12 + kl21).mean()


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_consistency_loss_value_and_gradients_match_a_hand_written_reference(tmp_path, chunk_size):
    model = tiny_transformer_model(tmp_path, TEXTS, seed=0)
    for m in model.modules():  # no dropout: both computations see the same network
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    columns = [["who wrote faust", "the capital of france", "wer schrieb faust"],
               ["goethe wrote faust in weimar", "paris", "goethe"],
               ["wer schrieb faust", "die hauptstadt von frankreich", "who wrote faust"]]
    kwargs = {"chunk_size": chunk_size} if chunk_size else {}
    loss = ParallelConsistencyLoss(model, hybrid_loss(model, scale=20.0, **kwargs), weight=0.5)
    value = loss([model.preprocess(c) for c in columns], None)
    grads = torch.autograd.grad(value, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    reference = _reference_loss(model, columns, 20.0, 0.5)
    ref_grads = torch.autograd.grad(reference, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-6)
    checked = 0
    for g, r in zip(grads, ref_grads):
        if r is None:
            assert g is None or not g.any()
            continue
        # float32 rounding of a sum's order (threads, chunks) moves an entry by a few 1e-6: the tolerance is
        # scaled to the tensor's magnitude, far below what a missing or wrong term changes
        torch.testing.assert_close(g, r, rtol=1e-4, atol=max(1e-5, 1e-4 * float(r.abs().max())))
        checked += 1
    assert checked > 5
    # the term is there: without it the value and gradients differ
    without = _reference_loss(model, columns, 20.0, 0.0)
    assert float((reference - without).detach()) > 1e-6


def test_consistency_weight_zero_is_the_base_loss_and_bad_inputs_are_refused(tmp_path):
    model = tiny_static_model(TEXTS)
    base = hybrid_loss(model)
    features = [model.preprocess(c) for c in (["who wrote faust", "paris"], ["goethe", "paris"], ["wer", "paris"])]
    loss = ParallelConsistencyLoss(model, base, weight=0.0)
    torch.testing.assert_close(loss(features, None), base(features[:2], None))
    with pytest.raises(ValueError, match="query_parallel"):
        loss(features[:2], None)
    with pytest.raises(ValueError, match="weight"):
        ParallelConsistencyLoss(model, base, weight=-1)
    assert loss.get_config_dict()["consistency_weight"] == 0.0


# ------------------------------------------------------------------------------------------------ the rules
def _row(name, mono, cross, multi, rd=0.0):
    return {"name": name, "mono_map@20": mono, "cross_map@20": cross, "multi_map@20": multi, "rank_distance": rd}


BASE = [_row("mono", .666, .540, .440, 9), _row("cross", .640, .565, .467, 3), _row("hybrid", .657, .567, .472, 4)]


def test_worst_margin_is_the_minimum_over_settings_of_the_margin_over_the_best_baseline():
    assert worst_margin(_row("c", .670, .570, .470), BASE) == pytest.approx(-0.002)  # multi .470 - .472
    assert worst_margin(_row("c", .667, .568, .473), BASE) == pytest.approx(0.001)


def test_selection_maximises_the_worst_margin_then_prefers_the_lower_rank_distance():
    rows = BASE + [_row("a", .670, .570, .470, 2), _row("b", .667, .568, .473, 8), _row("c", .600, .600, .600, 1)]
    assert select_candidate(rows) == "b"  # the only one above every baseline everywhere, despite its rank distance
    rows = BASE + [_row("a", .667, .568, .473, 5), _row("b", .667, .568, .473, 3)]
    assert select_candidate(rows) == "b"
    rows = BASE + [_row("z", .667, .568, .473, 3), _row("y", .667, .568, .473, 3)]
    assert select_candidate(rows) == "y"  # full tie: by name
    # a baseline is never chosen, even when every candidate is worse
    assert select_candidate(BASE + [_row("bad", .1, .1, .1)]) == "bad"


def test_selection_refuses_missing_baselines_duplicates_and_missing_scores():
    with pytest.raises(ValueError, match="baseline"):
        select_candidate(BASE[:2] + [_row("a", .1, .1, .1)])
    with pytest.raises(ValueError, match="more than once"):
        select_candidate(BASE + [_row("a", .1, .1, .1), _row("a", .2, .2, .2)])
    with pytest.raises(ValueError, match="no candidate"):
        select_candidate(BASE)
    with pytest.raises(ValueError, match="multi_map@20"):
        select_candidate(BASE + [{"name": "a", "mono_map@20": .1, "cross_map@20": .1}])


def test_non_inferiority_uses_the_larger_of_the_floor_and_the_pooled_sd():
    tight = {"mono": [.666, .666, .666], "hybrid": [.657, .657, .657]}
    v = non_inferior([.6635, .6635, .6635], tight)  # sd 0: the 0.003 floor decides
    assert v["best"] == "mono" and v["margin"] == pytest.approx(0.003) and v["holds"]
    assert not non_inferior([.6625, .6625, .6625], tight)["holds"]
    loose = {"mono": [.656, .666, .676], "cross": [.5, .5, .5]}
    v = non_inferior([.650, .655, .660], loose)  # pooled sd = sqrt((2e-4 + 5e-5) / 4) ~ .0079
    assert v["pooled_sd"] == pytest.approx(pooled_sd([.650, .655, .660], [.656, .666, .676]))
    assert v["margin"] == pytest.approx(v["pooled_sd"]) and v["margin"] > 0.003
    assert v["holds"] == (v["candidate_mean"] >= v["best_mean"] - v["pooled_sd"])
    assert not non_inferior([.640, .645, .650], loose)["holds"]
    with pytest.raises(ValueError):
        non_inferior([], loose)


# ------------------------------------------------------------------------------------------------ the preset
from sentence_transformers_hybrid.experiment import PRESETS, Preset  # noqa: E402
from sentence_transformers_hybrid.experiment.beyond import (  # noqa: E402
    BASELINE_CANDIDATES,
    Candidate,
    plan_beyond_runs,
    reusable_finetune_record,
    run_beyond,
)
from sentence_transformers_hybrid.experiment.beyond_report import beyond_records, write_beyond_outputs  # noqa: E402

TINY_CANDIDATES = (*BASELINE_CANDIDATES, Candidate("consistency-b0.5", alpha=0.5, consistency_weight=0.5),
                   Candidate("merge-mono-l0.5", kind="merge", merge_with="mono", lam=0.5))


def _tiny_beyond(**fields) -> Preset:
    return Preset(**{**PRESETS["smoke"].to_dict(), "name": "beyond-tiny", "seeds": (0, 1), "alpha_sweep": (),
                     "max_steps": 2, "max_train_groups": 100, "max_eval_questions": 40, "save_models": "none",
                     "train_languages": ["de", "en", "es"], "eval_languages": ["de", "en"], **fields})


def test_the_beyond_preset_has_the_finetune_settings_and_plans_every_run():
    beyond, finetune = PRESETS["beyond"].to_dict(), PRESETS["finetune"].to_dict()
    differ = {k for k in beyond if beyond[k] != finetune[k]}
    assert differ == {"name", "description", "seeds", "alpha_sweep", "save_models"}
    runs = plan_beyond_runs(PRESETS["beyond"])
    dev = [r for r in runs if r.phase == "dev"]
    assert [r.name for r in dev[:3]] == ["mono", "cross", "hybrid"] and len(dev) == 14
    assert sum(r.candidate.kind == "train" for r in dev) == 8  # 3 baselines, 3 alphas, 2 betas; 6 merges
    test = [r for r in runs if r.phase == "test"]
    assert sorted({r.seed for r in test}) == [0, 1, 2, 3, 4] and len(test) == 20
    merge = next(c for c in (r.candidate for r in dev) if c.kind == "merge")
    chosen = [r.run_id for r in plan_beyond_runs(PRESETS["beyond"], chosen=merge) if r.phase == "test"]
    assert chosen[:4] == ["test-mono-s0", "test-cross-s0", "test-hybrid-s0", f"test-{merge.name}-s0"]
    assert [c.params for c in BASELINE_CANDIDATES] == [{}, {}, {}]
    # --seeds picks the test seeds only: the dev phase stays on seed 0
    later = plan_beyond_runs(Preset(**{**PRESETS["beyond"].to_dict(), "seeds": (3, 4)}))
    assert {r.seed for r in later if r.phase == "dev"} == {0} and {r.seed for r in later if r.phase == "test"} == {3, 4}


@pytest.fixture(scope="module")
def beyond_dev(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("beyond") / "exp"
    summary = run_beyond(_tiny_beyond(), data_dir=data_dir, output_dir=out, finetune_dir=None,
                         candidates=TINY_CANDIDATES, phase="dev")
    return out, summary


def test_dev_phase_writes_selection_json_with_the_issue_schema(beyond_dev):
    out, summary = beyond_dev
    selection = json.loads((out / "selection.json").read_text())
    assert set(selection) >= {"rule", "dev", "candidates", "chosen"}
    assert selection["dev"]["benchmark"] == "xquad-r-dev" and len(selection["dev"]["articles"]) == 10
    names = [c["name"] for c in selection["candidates"]]
    assert names == [c.name for c in TINY_CANDIDATES]
    for c in selection["candidates"]:
        assert set(c) >= {"name", "params", "mono_map@20", "cross_map@20", "multi_map@20", "rank_distance"}
        assert all(0 <= c[f"{s}_map@20"] <= 1 for s in ("mono", "cross", "multi"))
    assert [c["params"] for c in selection["candidates"][:3]] == [{}, {}, {}]
    assert selection["candidates"][3]["params"] == {"consistency_weight": 0.5}
    assert selection["candidates"][4]["params"] == {"merge": ["hybrid", "mono"], "lambda": 0.5}
    assert Candidate("hybrid-a0.9", alpha=0.9).params == {"alpha": 0.9}
    assert selection["chosen"] == select_candidate(selection["candidates"]) == summary["chosen"]
    assert selection["chosen"] not in ("mono", "cross", "hybrid")
    # the dev runs never saw MLQA-R, and the merge is the mean of the saved dev models
    records = {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("dev-*.json")}
    assert all(r["phase"] == "dev" and r["seed"] == 0 for r in records.values()) and len(records) == 5
    assert records["dev-consistency-b0.5-s0"]["consistency_weight"] == 0.5
    # a trained record says which training path ran and keeps the loss curve, as the finetune records do
    trained = records["dev-consistency-b0.5-s0"]
    assert "training_path" in trained and sorted(map(int, trained["loss_curve"])) == [1, 2]
    assert records["dev-merge-mono-l0.5-s0"]["train_seconds"] == 0.0
    assert not (out / "runs" / "pretrained.json").exists()
    assert summary["partial"] and "PARTIAL" in (out / "results.md").read_text()


def test_test_phase_reuses_matching_finetune_records_and_resumes_run_by_run(beyond_dev, tmp_path, data_dir,
                                                                             monkeypatch):
    dev_out, _ = beyond_dev
    out = tmp_path / "exp"
    shutil.copytree(dev_out, out)
    config = json.loads((out / "config.json").read_text())
    # a finetune experiment of the same computation (other name, run set and text) with a record of mono seed 1
    finetune = tmp_path / "finetune"
    (finetune / "runs").mkdir(parents=True)
    stored = {**config, "preset": {**config["preset"], "name": "finetune", "seeds": [0, 1, 2], "description": "x"},
              "config_key": "feedbeef"}
    (finetune / "config.json").write_text(json.dumps(stored))
    fake = {"mode": "mono", "alpha": None, "seed": 1, "run_id": "mono-s1", "mono_map@20": 0.5, "cross_map@20": 0.4,
            "multi_map@20": 0.3, "rank_distance": 7.0, "cka_by_layer": None, "train_seconds": 99.0,
            "config_key": "feedbeef"}
    (finetune / "runs" / "mono-s1.json").write_text(json.dumps(fake))
    found, why = reusable_finetune_record(finetune, config, "mono", 1)
    assert found == fake and "reused" in why
    other = {**stored, "preset": {**stored["preset"], "learning_rate": 1.0}}
    (tmp_path / "other" / "runs").mkdir(parents=True)
    (tmp_path / "other" / "config.json").write_text(json.dumps(other))
    (tmp_path / "other" / "runs" / "mono-s1.json").write_text(json.dumps(fake))
    assert reusable_finetune_record(tmp_path / "other", config, "mono", 1)[1].count("preset.learning_rate") == 1

    summary = run_beyond(_tiny_beyond(), data_dir=data_dir, output_dir=out, finetune_dir=finetune,
                         candidates=TINY_CANDIDATES)
    assert not summary["partial"]
    runs = json.loads((out / "runs.json").read_text())
    assert set(runs) >= {"device", "command", "config", "pretrained", "runs"}
    chosen = summary["chosen"]
    assert sorted((r["method"], r["seed"]) for r in runs["runs"]) == sorted(
        (m, s) for m in ("mono", "cross", "hybrid", chosen) for s in (0, 1))
    reused = json.loads((out / "runs" / "test-mono-s1.json").read_text())
    assert reused["reused_from"]["path"].endswith("mono-s1.json") and reused["mono_map@20"] == 0.5
    sha = hashlib.sha256((out / "selection.json").read_bytes()).hexdigest()
    assert all(json.loads(p.read_text())["selection_sha256"] == sha for p in (out / "runs").glob("test-*.json"))
    md = (out / "results.md").read_text()
    assert "PARTIAL" not in md and "## Claims" in md and "non-inferior" in md and "unchanged since" in md

    # resume: a finished protocol trains nothing; a deleted record is the only run redone
    (out / "runs" / "test-cross-s1.json").unlink()
    trained = []
    import sentence_transformers_hybrid.experiment.beyond as beyond_module

    real = beyond_module.train_run
    monkeypatch.setattr(beyond_module, "train_run", lambda *a, **k: trained.append(a[2].run_id) or real(*a, **k))
    again = run_beyond(_tiny_beyond(), data_dir=data_dir, output_dir=out, finetune_dir=finetune,
                       candidates=TINY_CANDIDATES)
    assert trained == ["cross-s1"] and again["chosen"] == chosen and not again["partial"]

    # an edited selection file is named in the report
    (out / "selection.json").write_text((out / "selection.json").read_text() + "\n")
    write_beyond_outputs(out, config=json.loads((out / "config.json").read_text()), device="cpu")
    assert "selection.json changed after the test runs began" in (out / "results.md").read_text()


def test_a_merge_whose_partner_lost_its_weights_is_refused_before_any_run(beyond_dev, tmp_path, data_dir,
                                                                         monkeypatch):
    from sentence_transformers_hybrid.experiment import ExperimentConfigError
    import sentence_transformers_hybrid.experiment.beyond as beyond_module

    out = tmp_path / "exp"
    shutil.copytree(beyond_dev[0], out)
    assert (out / "dev" / "models" / "dev-mono-s0").is_dir()
    # a fresh checkout: the records came with git, the weights did not; the merge and a trained run are still to do
    for name in ("dev-merge-mono-l0.5-s0", "dev-consistency-b0.5-s0"):
        (out / "runs" / f"{name}.json").unlink()
    shutil.rmtree(out / "dev" / "models" / "dev-mono-s0")
    real = beyond_module.train_run
    monkeypatch.setattr(beyond_module, "train_run", lambda *a, **k: pytest.fail("trained before the refusal"))
    with pytest.raises(ExperimentConfigError, match=r"dev-merge-mono-l0\.5-s0 needs the weights of dev-mono-s0.*"
                                                    r"delete .*dev-mono-s0\.json to retrain it") as err:
        run_beyond(_tiny_beyond(), data_dir=data_dir, output_dir=out, finetune_dir=None, candidates=TINY_CANDIDATES,
                   phase="dev")
    assert "dev-hybrid-s0" not in str(err.value)  # its weights are there
    # a finished merge needs no weights: only the trained run is redone
    shutil.copy(beyond_dev[0] / "runs" / "dev-merge-mono-l0.5-s0.json", out / "runs")
    trained = []
    monkeypatch.setattr(beyond_module, "train_run", lambda *a, **k: trained.append(k["label"]) or real(*a, **k))
    run_beyond(_tiny_beyond(), data_dir=data_dir, output_dir=out, finetune_dir=None, candidates=TINY_CANDIDATES,
               phase="dev")
    assert trained == ["dev-consistency-b0.5-s0"]


def test_another_configuration_in_the_folder_is_refused(beyond_dev, tmp_path, data_dir):
    from sentence_transformers_hybrid.experiment import ExperimentConfigError

    out = tmp_path / "exp"
    shutil.copytree(beyond_dev[0], out)
    with pytest.raises(ExperimentConfigError, match=r"preset\.max_steps: stored 2, requested 3"):
        run_beyond(_tiny_beyond(max_steps=3), data_dir=data_dir, output_dir=out, finetune_dir=None,
                   candidates=TINY_CANDIDATES, phase="dev")


def test_the_cli_runs_the_beyond_protocol_and_run_experiment_refuses_it(monkeypatch, tmp_path, capsys):
    import sentence_transformers_hybrid.experiment.beyond as beyond_module
    from sentence_transformers_hybrid.cli import main
    from sentence_transformers_hybrid.experiment import run_experiment

    calls = []

    def fake(preset, **kwargs):
        calls.append((preset, kwargs))
        return {"chosen": "hybrid-a0.9", "claims": [], "partial": True, "missing": ["test-mono-s3"]}

    monkeypatch.setattr(beyond_module, "run_beyond", fake)
    assert main(["experiment", "--preset", "beyond", "--output-dir", str(tmp_path), "--seeds", "0", "1"]) == 0
    assert calls[0][0] == "beyond" and calls[0][1]["seeds"] == (0, 1) and calls[0][1]["output_dir"] == str(tmp_path)
    printed = capsys.readouterr().out
    assert "chosen on dev: hybrid-a0.9" in printed and "PARTIAL" in printed
    with pytest.raises(ValueError, match="run_beyond"):
        run_experiment("beyond", output_dir=tmp_path / "x")


def test_st_hybrid_report_rebuilds_a_beyond_folder(beyond_dev, tmp_path, capsys):
    from sentence_transformers_hybrid.cli import main

    out = tmp_path / "exp"
    shutil.copytree(beyond_dev[0], out)
    (out / "results.md").unlink()
    assert main(["report", "--output-dir", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert md.startswith("# Results: `beyond` preset — PARTIAL (5 of 13 runs)") and "## Dev: the candidates" in md
    assert "PARTIAL" in capsys.readouterr().out
    records = beyond_records(out, json.loads((out / "config.json").read_text()))
    assert len(records["runs"]) == 5 and records["missing"][0] == "test-mono-s0"


def test_train_run_with_a_consistency_weight_uses_the_parallel_column_its_prompt_and_the_wrapped_loss(monkeypatch,
                                                                                                       tmp_path):
    import sentence_transformers

    from sentence_transformers_hybrid.experiment import RunSpec
    from sentence_transformers_hybrid.experiment.training import train_run

    seen = {}

    class FakeTrainer:
        state = SimpleNamespace(log_history=[])  # train_run reads the loss curve from it

        def __init__(self, **kwargs):
            seen.update(kwargs, trainer=self)

        def train(self, resume_from_checkpoint=None):
            seen["rows"] = seen["train_dataset"][:2]

        def _save(self, output_dir=None, state_dict=None):
            pass

    monkeypatch.setattr(sentence_transformers, "SentenceTransformerTrainer", FakeTrainer)
    corpus = _parallel_corpus(groups=8)
    model = tiny_static_model(TEXTS)
    preset = Preset(**{**PRESETS["smoke"].to_dict(), "batch_size": 4, "max_steps": 1, "save_steps": 0})
    prompts = {"query": "query: ", "passage": "passage: "}
    train_run(model, corpus, RunSpec("hybrid", 0.5, 0), preset, tmp_path, prompts, consistency_weight=0.5,
              label="dev-consistency-b0.5-s0")
    assert isinstance(seen["loss"], ParallelConsistencyLoss) and seen["loss"].weight == 0.5
    # the progress bar names the candidate's run, not the sampler's "hybrid-a0.5-s0"
    assert [c.desc for c in seen["callbacks"] if hasattr(c, "desc")] == ["dev-consistency-b0.5-s0"]
    assert seen["args"].prompts == {"query": "query: ", "passage": "passage: ", PARALLEL_QUERY_COLUMN: "query: "}
    assert list(seen["rows"]) == ["query", "passage", PARALLEL_QUERY_COLUMN]
    assert "_save" in vars(seen["trainer"])  # save_from_main_process wrapped this trainer's _save
    seen.clear()
    train_run(model, corpus, RunSpec("hybrid", 0.5, 0), preset, tmp_path, prompts)
    assert not isinstance(seen["loss"], ParallelConsistencyLoss) and list(seen["rows"]) == ["query", "passage"]
    assert [c.desc for c in seen["callbacks"] if hasattr(c, "desc")] == ["hybrid-a0.5-s0"]
    assert PARALLEL_QUERY_COLUMN not in (seen["args"].prompts or {})


def test_the_constant_mono_steps_control_trains_longer_with_the_same_alpha(monkeypatch, tmp_path):
    import sentence_transformers_hybrid.experiment.beyond as beyond_module
    from sentence_transformers_hybrid.experiment.beyond import MONO_STEPS_CONTROL, BeyondRun
    from sentence_transformers_hybrid.experiment.training import TrainResult

    assert MONO_STEPS_CONTROL.params == {"max_steps": 600} and MONO_STEPS_CONTROL.alpha == 0.5
    seen = []
    monkeypatch.setattr(beyond_module, "train_run", lambda model, corpus, spec, preset, *a, **k: seen.append(
        (spec, preset.max_steps, k["consistency_weight"], k["label"])) or TrainResult(1.0, {}))

    class Backbone:
        def new_model(self, seed):
            return tiny_static_model(TEXTS)

        def prompts(self):
            return {}

    ctx = {"preset": PRESETS["beyond"], "out": tmp_path, "resume": True, "train_setup": None}
    _, fields = beyond_module._train_record(BeyondRun("dev", MONO_STEPS_CONTROL, 0), None, Backbone(), ctx)
    assert seen[0][0].mode == "hybrid" and seen[0][0].alpha == 0.5 and seen[0][1] == 600 and fields["max_steps"] == 600
    assert seen[0][3] == "dev-hybrid-steps600-s0"  # the bar and the log name the candidate's run
    beyond_module._train_record(BeyondRun("dev", BASELINE_CANDIDATES[2], 0), None, Backbone(), ctx)
    assert seen[1][1] == PRESETS["beyond"].max_steps == 300


def test_the_console_summary_does_not_claim_a_selection_file_it_did_not_write(tmp_path):
    from sentence_transformers_hybrid.experiment.beyond_report import summary_text

    summary = {"chosen": None, "claims": [], "partial": True, "missing": ["dev-hybrid-s0"]}
    text = summary_text(summary, tmp_path)
    assert "no selection.json yet" in text and "PARTIAL: 1 run(s) missing: dev-hybrid-s0" in text
    (tmp_path / "selection.json").write_text("{}")
    assert f"read {tmp_path / 'selection.json'}" in summary_text(summary, tmp_path)


def test_partial_report_shows_the_dev_runs_so_far_with_margins_once_the_baselines_ran():
    """Before selection.json exists, results.md lists the finished dev runs; a candidate's worst margin (the selection
    rule's quantity) appears only when all three baselines have run, and nothing is marked chosen."""
    from sentence_transformers_hybrid.experiment.beyond_report import beyond_markdown

    def rec(method, mono, cross, multi):
        return {"phase": "dev", "run_id": f"dev-{method}-s0", "method": method, "seed": 0, "mono_map@20": mono,
                "cross_map@20": cross, "multi_map@20": multi, "rank_distance": 90.0}

    runs = [rec("mono", .833, .740, .559), rec("cross", .815, .747, .594), rec("hybrid-a0.75", .827, .745, .576)]
    config = {"runs": [r["run_id"] for r in runs] + ["dev-hybrid-s0", "dev-hybrid-a0.9-s0"], "selection_rule": "x"}
    text = beyond_markdown(config, {"runs": runs, "missing": ["dev-hybrid-s0", "dev-hybrid-a0.9-s0"]})
    assert "No selection yet" in text and "margins once the three baselines have run" in text
    row = next(line for line in text.splitlines() if line.startswith("| `dev-hybrid-a0.75-s0`"))
    assert row.endswith("| 90.0 |  |")  # no margin against two of three baselines
    runs.append(rec("hybrid", .827, .752, .592))
    text = beyond_markdown(config, {"runs": runs, "missing": ["dev-hybrid-a0.9-s0"]})
    row = next(line for line in text.splitlines() if line.startswith("| `dev-hybrid-a0.75-s0`"))
    assert row.endswith("| -0.0180 |")  # min(.827-.833, .745-.752, .576-.594) = multi's -0.018
    assert "| `dev-mono-s0` | `mono` | 0.833 | 0.740 | 0.559 | 90.0 | baseline |" in text
    assert "**(chosen)**" not in text and "Chosen:" not in text


def test_report_names_the_devices_of_the_test_runs_and_repeats_the_claims_per_device():
    """Reused finetune baselines (seeds 0-2, another machine's bf16) beside runs trained here (float32): results.md
    shows which seeds of each method trained where and the claims on each device's runs alone; one device, no
    section."""
    from sentence_transformers_hybrid.experiment.beyond_report import beyond_markdown

    here = "cpu (AMD EPYC, 2 cores); flags: no bf16; float32"
    there = "cpu (AMD EPYC); flags: avx512_bf16; bf16 autocast"

    def rec(method, seed, mono, device):
        return {"phase": "test", "run_id": f"test-{method}-s{seed}", "method": method, "seed": seed,
                "mono_map@20": mono, "cross_map@20": .5, "multi_map@20": .4, "rank_distance": 9.0, "device": device}

    runs = [rec(m, s, .66 if m == "mono" else .65, there) for m in ("mono", "cross", "hybrid") for s in (0, 1, 2)]
    runs += [rec(m, s, .64 if m == "mono" else .65, here) for m in ("mono", "cross", "hybrid") for s in (3, 4)]
    runs += [rec("merge-mono-l0.5", s, .655, here) for s in range(5)]
    config = {"runs": [r["run_id"] for r in runs], "selection_rule": "x"}
    text = beyond_markdown(config, {"runs": runs, "missing": [], "selection": {"chosen": "merge-mono-l0.5"}})
    assert "## Where the test runs trained" in text
    assert "| `mono` | 0, 1, 2 | 3, 4 |" in text and "| `merge-mono-l0.5` | – | 0, 1, 2, 3, 4 |" in text
    # all seeds pooled: mono's mean .652 is best; on the float32 runs alone cross/hybrid (.65) are, and hold
    alone = next(line for line in text.splitlines() if line.startswith(f"- on `{here}` alone"))
    assert "mono 0.655 vs `hybrid` 0.650" in alone and "holds" in alone and f"`{there}` alone" not in text
    assert f"| {here} |" in text  # the per-run times name each run's device
    runs[-1].update(resumed_from="out/checkpoints/test-merge-mono-l0.5-s4/checkpoint-100", train_seconds=600.0)
    text = beyond_markdown(config, {"runs": runs, "missing": [], "selection": {"chosen": "merge-mono-l0.5"}})
    row = next(line for line in text.splitlines() if line.startswith("| `test-merge-mono-l0.5-s4` |"))
    assert row.endswith(f"| 10.0 | – | {here} | resumed from `checkpoint-100`: its minutes up to that checkpoint plus "
                        "after the resume |")
    one = beyond_markdown(config, {"runs": [r for r in runs if r["device"] == here], "missing": [],
                                   "selection": {"chosen": "merge-mono-l0.5"}})
    assert "## Where the test runs trained" not in one


def test_report_compares_the_baselines_retrained_here_with_the_reused_experiments_records_of_the_same_run(tmp_path):
    """X-X-mono and hybrid retrained here (a merge needs their weights) for seeds the reused finetune experiment also
    trained: results.md shows the same run's differences between the two machines; reused runs and seeds the
    finetune experiment lacks have no row, and without any reused record there is no section."""
    from sentence_transformers_hybrid.experiment.beyond_report import beyond_markdown, beyond_records

    here, there = "cpu (float32)", "cpu (bf16 autocast)"
    finetune = tmp_path / "docs" / "results" / "finetune" / "runs"
    finetune.mkdir(parents=True)

    def rec(run_id, mono, cross, multi, rank, device, **extra):
        return {"run_id": run_id, "mono_map@20": mono, "cross_map@20": cross, "multi_map@20": multi,
                "rank_distance": rank, "device": device, **extra}

    for run_id, mono in (("mono-s0", .666), ("hybrid-a0.5-s0", .657), ("cross-s0", .650)):
        (finetune / f"{run_id}.json").write_text(json.dumps(rec(run_id, mono, .56, .47, 350.0, there)))
    (finetune / "pretrained.json").write_text(json.dumps(rec("pretrained", .6, .5, .4, 400.0, there)))
    out = tmp_path / "docs" / "results" / "beyond"
    (out / "runs").mkdir(parents=True)
    # reused_from is written relative to the folder the experiment ran in (the repository root here)
    (out / "runs" / "pretrained.json").write_text(json.dumps(
        rec("pretrained", .6, .5, .4, 400.0, there, reused_from="docs/results/finetune/runs/pretrained.json")))
    test = [rec("test-mono-s0", .660, .565, .470, 357.0, here, method="mono", seed=0, phase="test"),
            rec("test-cross-s0", .650, .56, .47, 350.0, there, method="cross", seed=0, phase="test",
                reused_from={"path": "docs/results/finetune/runs/cross-s0.json"}),
            rec("test-hybrid-s0", .659, .558, .471, 340.0, here, method="hybrid", seed=0, phase="test"),
            rec("test-mono-s3", .661, .56, .47, 350.0, here, method="mono", seed=3, phase="test")]
    for r in test:
        (out / "runs" / f"{r['run_id']}.json").write_text(json.dumps(r))
    config = {"runs": [{"run_id": r["run_id"]} for r in test], "selection_rule": "x"}
    records = beyond_records(out, config)  # from another working directory than the repository root
    assert [t["run_id"] for t in records["twins"]] == ["test-mono-s0", "test-hybrid-s0"]
    text = beyond_markdown(config, records)
    assert "## The same runs on two machines" in text
    row = next(line for line in text.splitlines() if line.startswith("| `test-mono-s0` |"))
    assert row.endswith(f"| {here} | {there} | -0.0060 | +0.0050 | +0.0000 | +7.0 |")
    assert "| `docs/results/finetune/runs/mono-s0.json` |" in row  # as the records name it, not the machine's path
    assert "Largest |Δ| mAP@20 over these 2 run(s): 0.0060" in text
    section = text.split("## The same runs on two machines")[1].split("\n## ")[0]
    assert "test-cross-s0" not in section and "test-mono-s3" not in section
    (out / "runs" / "pretrained.json").write_text(json.dumps(rec("pretrained", .6, .5, .4, 400.0, there)))
    (out / "runs" / "test-cross-s0.json").unlink()
    assert beyond_records(out, config)["twins"] == []


def test_claims_wait_for_a_pooled_sd_and_the_report_says_so():
    """One seed of every method is not enough for the non-inferiority claims (no pooled sd): the report says what
    is missing instead of a verdict; a second seed of the candidate gives one."""
    from sentence_transformers_hybrid.experiment.beyond_report import beyond_markdown, claims

    def rec(method, seed, mono):
        return {"phase": "test", "run_id": f"test-{method}-s{seed}", "method": method, "seed": seed,
                "mono_map@20": mono, "cross_map@20": .57 if method == "hybrid" else .56, "multi_map@20": .47,
                "rank_distance": 360.0}

    runs = [rec("mono", 0, .664), rec("cross", 0, .646), rec("hybrid", 0, .657), rec("merge-mono-l0.75", 0, .662)]
    assert claims(runs, "merge-mono-l0.75") == []
    config = {"runs": [r["run_id"] for r in runs], "selection_rule": "x"}
    text = beyond_markdown(config, {"runs": runs, "missing": [], "selection": {"chosen": "merge-mono-l0.75"}})
    assert "with seeds enough for a pooled sd (three values" in text
    runs.append(rec("mono", 1, .664))  # two seeds of mono, one of the candidate: mono is best, 3 values pooled
    # mono: 3 values pooled; cross: hybrid is best with one seed, no sd yet (this raised before);
    # multi: mono wins the tie
    assert [v["setting"] for v in claims(runs, "merge-mono-l0.75")] == ["mono", "multi"]
    runs.append(rec("merge-mono-l0.75", 1, .660))
    verdicts = claims(runs, "merge-mono-l0.75")
    assert [v["setting"] for v in verdicts] == ["mono", "cross", "multi"]
    assert verdicts[0]["best"] == "mono" and verdicts[0]["candidate_mean"] == pytest.approx(.661)
    # a PARTIAL report says its claims are interim, in results.md and on the console; a finished one does not
    from sentence_transformers_hybrid.experiment.beyond_report import summary_text

    partial = beyond_markdown(config, {"runs": runs, "missing": ["test-mono-s2"],
                                       "selection": {"chosen": "merge-mono-l0.75"}})
    assert "**Interim**: these claims pool the finished runs only (the candidate's seeds 0, 1)" in partial
    assert "waits for the 1 missing run(s)" in partial
    done = beyond_markdown(config, {"runs": runs, "missing": [], "selection": {"chosen": "merge-mono-l0.75"}})
    assert "## Claims" in done and "Interim" not in done
    summary = {"chosen": "merge-mono-l0.75", "claims": verdicts, "partial": True, "missing": ["test-mono-s2"]}
    assert all(line.endswith("(interim: runs missing)") for line in summary_text(summary, ".").splitlines()[1:4])
    assert "interim" not in summary_text({**summary, "partial": False, "missing": []}, ".")
