"""Nothing silently wrong in the data layer: removed rows stay out, derived benchmarks leave the original alone,
and every bad record or argument is answered with an error naming the file, row, group or language."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset, DatasetDict

from sentence_transformers_hybrid import DataValidationError, ParallelCorpus, pairs_to_corpus
from sentence_transformers_hybrid.data.arrow import dataset_table


# ---------------------------------------------------------------- item 1: a Dataset's rows, as it shows them
def _parallel_ds(groups: int = 6) -> Dataset:
    langs = ["de", "en"]
    return Dataset.from_dict({
        "group": [f"g{g}" for g in range(groups) for _ in langs],
        "lang": [lang for _ in range(groups) for lang in langs],
        "query": [f"q{g}-{lang}" for g in range(groups) for lang in langs],
        "passage": [f"p{g}-{lang}" for g in range(groups) for lang in langs],
    })


def _rows(corpus: ParallelCorpus) -> list[tuple[str, str, str]]:
    return [(r["group"], r["lang"], r["query"]) for r in corpus.to_records()]


def _shown(ds: Dataset) -> list[tuple[str, str, str]]:
    return list(zip(ds["group"], ds["lang"], ds["query"]))


@pytest.mark.parametrize("derive", [
    pytest.param(lambda ds: ds.filter(lambda r: r["group"] not in ("g1", "g4")), id="filter"),
    pytest.param(lambda ds: ds.select([7, 2, 3, 10]), id="select"),
    pytest.param(lambda ds: ds.shuffle(seed=3), id="shuffle"),
    pytest.param(lambda ds: ds.train_test_split(test_size=0.25, seed=0)["train"], id="train_test_split"),
])
def test_from_dataset_reads_exactly_the_rows_a_derived_dataset_shows(derive):
    ds = derive(_parallel_ds())
    corpus = ParallelCorpus.from_dataset(ds)
    assert _rows(corpus) == _shown(ds)
    assert corpus.num_rows == len(ds)


def test_held_out_split_rows_never_reach_training():
    split = _parallel_ds(10).train_test_split(test_size=0.3, seed=1)
    train = ParallelCorpus.from_dataset(split["train"])
    held_out = set(split["test"]["query"])
    assert held_out and not held_out & set(train.queries)


@pytest.mark.parametrize("derive", [
    pytest.param(lambda ds: ds.filter(lambda r: len(r["query"]) > 12), id="filter"),
    pytest.param(lambda ds: ds.select([4, 0, 2]), id="select"),
    pytest.param(lambda ds: ds.shuffle(seed=0), id="shuffle"),
])
def test_pairs_to_corpus_reads_exactly_the_rows_a_derived_dataset_shows(derive):
    ds = derive(Dataset.from_dict({"query": [f"query number {i}" for i in range(6)] + ["q"],
                                   "answer": [f"answer {i}" for i in range(7)]}))
    corpus = pairs_to_corpus(ds, "query", "answer", "en", source="nq", dedup=False)
    assert corpus.queries == ds["query"] and corpus.passages == ds["answer"]
    assert corpus.groups == [f"nq-{i}" for i in range(len(ds))]


def test_dataset_table_keeps_the_order_and_reads_only_the_wanted_columns():
    ds = _parallel_ds().shuffle(seed=5)
    table = dataset_table(ds, ["query", "group"])
    assert table.column_names == ["query", "group"]
    assert table["query"].to_pylist() == ds["query"] and table["query"].num_chunks == 1


def test_dataset_dict_is_answered_with_the_split_to_pass():
    with pytest.raises(DataValidationError, match=r"mine: got a DatasetDict with splits \['train', 'test'\]; pass one split"):
        ParallelCorpus.from_dataset(DatasetDict({"train": _parallel_ds(), "test": _parallel_ds()}), name="mine")


def test_streaming_dataset_is_answered():
    with pytest.raises(DataValidationError, match=r"IterableDataset \(streaming\)"):
        pairs_to_corpus(_parallel_ds().to_iterable_dataset(), "query", "passage", "en")


def test_python_records_given_to_from_dataset_point_to_from_records():
    with pytest.raises(DataValidationError, match=r"got list.*from_records"):
        ParallelCorpus.from_dataset([{"group": "g", "lang": "en", "query": "q", "passage": "p"}])


# ---------------------------------------------------------------- item 2: derived benchmarks leave the original alone
def _fingerprint(bench) -> dict:
    """Every array of every split as bytes, and the relevance of every (query, pool) setting."""
    out = {}
    for lang, s in bench.splits.items():
        for f in ("question_groups", "sentence_paragraph", "answer_sentence", "answer_counts"):
            out[(lang, f)] = getattr(s, f).tobytes()
        for y in [None, *bench.languages]:
            rows, rel = bench.relevance(lang, y)
            out[(lang, y, "rel")] = (rows.tobytes(), rel.indptr.tobytes(), rel.indices.tobytes())
    out["group_ids"] = list(bench.group_ids)
    return out


@pytest.fixture(scope="module")
def mlqa(data_dir):
    from sentence_transformers_hybrid import load_lareqa

    return load_lareqa("mlqa-r", data_dir=data_dir, languages=["ar", "de", "en", "es"])


def test_select_languages_leaves_the_original_benchmark_unchanged(mlqa):
    # MLQA-R's question sets differ per language: realigning de + es alone renumbers the groups
    before = _fingerprint(mlqa)
    sub = mlqa.select_languages(["es", "de"])
    assert sub.languages == ["de", "es"] and sub.group_ids[0] == mlqa.splits["de"].question_ids[0]
    assert _fingerprint(mlqa) == before
    # and the derived one is right on its own: de -> es relevance holds the ids both languages share
    rows, rel = sub.relevance("de", "es")
    assert len(rows) == len(set(sub.splits["de"].question_ids) & set(sub.splits["es"].question_ids))


def test_subsample_benchmark_leaves_the_original_benchmark_unchanged(mlqa):
    from sentence_transformers_hybrid.data import subsample_benchmark

    before = _fingerprint(mlqa)
    small = subsample_benchmark(mlqa.select_languages(["es", "ar"]), 20)
    assert len(small.group_ids) == 20
    assert _fingerprint(mlqa) == before


def test_benchmark_splits_cannot_be_changed_in_place(mlqa):
    split = mlqa.splits["en"]
    with pytest.raises(ValueError, match="read-only"):
        split.question_groups[0] = 5
    with pytest.raises(AttributeError):
        split.question_groups = np.zeros(3, dtype=np.int64)
    with pytest.raises(TypeError):
        mlqa.splits["fr"] = split


def test_building_a_benchmark_leaves_the_callers_splits_alone():
    from sentence_transformers_hybrid import LanguageSplit, RetrievalBenchmark

    groups = np.array([7, 7])
    split = LanguageSplit("de", ["b", "a"], ["B?", "A?"], groups, ["s1", "s2"], ["p"], [0, 0], [0, 1])
    RetrievalBenchmark([LanguageSplit("en", ["a"], ["A?"], [0], ["s"], ["p"], [0], [0]), split])
    assert groups.tolist() == [7, 7] and groups.flags.writeable  # the caller's array
    assert split.question_groups.tolist() == [7, 7]


def test_derived_benchmarks_keep_a_copy_of_the_report(tmp_path):
    import json

    from sentence_transformers_hybrid import load_squad_parallel
    from sentence_transformers_hybrid.data import subsample_benchmark

    doc = {"data": [{"title": "t", "paragraphs": [{"context": "One sentence here. Another one there.", "qas": [
        {"id": "ok", "question": "Which?", "answers": [{"text": "One", "answer_start": 0}]},
        {"id": "bad", "question": "Where?", "answers": [{"text": "x", "answer_start": 999}]}]}]}]}
    for lang in ("en", "de"):
        (tmp_path / f"{lang}.json").write_text(json.dumps(doc), encoding="utf-8")
    bench = load_squad_parallel({"en": tmp_path / "en.json", "de": tmp_path / "de.json"}, strict=False)
    sub = bench.select_languages(["en"])
    assert len(sub.report) == len(bench.report) == 2 and sub.report is not bench.report
    assert len(subsample_benchmark(bench, 1).report) == 2


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_subsample_benchmark_rejects_a_bad_size(mlqa, bad):
    from sentence_transformers_hybrid.data import subsample_benchmark

    with pytest.raises(ValueError, match="max_questions must be a positive integer"):
        subsample_benchmark(mlqa, bad)
