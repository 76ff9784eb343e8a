"""Nothing silently wrong in the data layer: removed rows stay out, derived benchmarks leave the original alone,
and every bad record or argument is answered with an error naming the file, row, group or language."""

from __future__ import annotations

import numpy as np
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


# ---------------------------------------------------------------- item 3: bad records are answered, never merged
def _rec(**kw):
    return {"group": "g1", "lang": "en", "query": "Who?", "passage": "Goethe.", **kw}


def test_missing_group_is_an_error_not_the_string_none():
    recs = [_rec(group=None), _rec(group=None, lang="de")]
    with pytest.raises(DataValidationError, match=r"row 0, language 'en': 'group' is None \(missing\)"):
        ParallelCorpus.from_records(recs)
    corpus = ParallelCorpus.from_records(recs + [_rec(group="g2")], strict=False)
    assert corpus.groups == ["g2"] and [i.row for i in corpus.report] == [0, 1]


@pytest.mark.parametrize("field,value,says", [
    ("lang", 5, r"'lang' is int 5, expected a string"),
    ("query", ["Who?", "Wer?"], r"'query' is list \['Who\?', 'Wer\?'\], expected a string"),
    ("passage", {"text": "x"}, r"'passage' is dict"),
    ("query", None, r"'query' is None \(missing\)"),
    ("group", ["g1"], r"'group' is list \['g1'\], expected a string or an integer id"),
    ("group", float("nan"), r"'group' is float nan"),
    ("source", 3, r"'source' is int 3"),
])
def test_wrongly_typed_record_field_names_row_and_field(field, value, says):
    recs = [_rec(group="g0"), _rec(**{field: value})]
    with pytest.raises(DataValidationError, match=rf"row 1\b.*{says}"):
        ParallelCorpus.from_records(recs)


def test_non_strict_skips_and_reports_wrongly_typed_records(caplog):
    recs = [_rec(group="g0"), _rec(lang=7), _rec(query=["a"]), "not a record", _rec(group=3, lang="de")]
    corpus = ParallelCorpus.from_records(recs, strict=False)
    assert corpus.groups == ["g0", "3"] and [i.row for i in corpus.report] == [1, 2, 3]
    assert "record is str" in str(corpus.report.issues[2])
    assert "skipped 3 bad row(s)" in caplog.text


@pytest.mark.parametrize("column,values,says", [
    ("passage", [["a", "b"]], r"column 'passage' holds list<item: string> values, expected one string per row \(map a list"),
    ("query", [{"text": "q"}], r"column 'query' holds struct<text: string> values.*pick one of its fields \['text'\]"),
    ("lang", [1], r"column 'lang' holds int64 values, expected one string per row"),
    ("group", [[1, 2]], r"column 'group' holds list<item: int64> values, expected one string or integer id per row"),
])
def test_wrongly_typed_dataset_column_names_the_column(column, values, says):
    cols = {"group": ["g"], "lang": ["en"], "query": ["q"], "passage": ["p"], column: values}
    with pytest.raises(DataValidationError, match=rf"^mine: {says}"):
        ParallelCorpus.from_dataset(Dataset.from_dict(cols), name="mine")


def test_pairs_to_corpus_list_column_names_the_column():
    ds = Dataset.from_dict({"query": ["q"], "passages": [["p1", "p2"]]})
    with pytest.raises(DataValidationError, match=r"^nq: column 'passages' holds list<item: string> values"):
        pairs_to_corpus(ds, "query", "passages", "en", source="nq")


# ---------------------------------------------------------------- item 3: JSON Lines files
def _write_jsonl(path, records) -> None:
    import json

    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def test_gzip_jsonl_is_read_through_gzip(tmp_path):
    import gzip
    import json

    from sentence_transformers_hybrid import load_parallel_jsonl

    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(_rec(lang=x)) + "\n" for x in ("en", "de")).encode()))
    corpus = load_parallel_jsonl(path)
    assert corpus.languages == ["de", "en"] and corpus.num_rows == 2


def test_truncated_gzip_jsonl_names_the_file(tmp_path):
    import gzip
    import json

    from sentence_transformers_hybrid import load_parallel_jsonl

    data = gzip.compress("".join(json.dumps(_rec(group=f"g{i}")) + "\n" for i in range(500)).encode())
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataValidationError, match=r"train.jsonl.gz': corrupt or truncated gzip data after line \d+"):
        load_parallel_jsonl(path)


def test_non_utf8_jsonl_names_the_line(tmp_path):
    import json

    from sentence_transformers_hybrid import load_parallel_jsonl

    path = tmp_path / "latin1.jsonl"
    path.write_bytes((json.dumps(_rec()) + "\n" + json.dumps(_rec(group="g2", query="Café?"), ensure_ascii=False)
                      + "\n").encode("latin-1"))
    with pytest.raises(DataValidationError, match=r"latin1.jsonl', line 2: not UTF-8 text \(byte 0xe9 at column \d+\)"):
        load_parallel_jsonl(path)
    corpus = load_parallel_jsonl(path, strict=False)
    assert corpus.groups == ["g1"] and corpus.report.issues[0].row == "line 2"


def test_utf8_bom_and_non_object_lines_in_jsonl(tmp_path):
    import json

    from sentence_transformers_hybrid import load_parallel_jsonl

    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(_rec()) + "\n").encode())
    assert load_parallel_jsonl(path).groups == ["g1"]
    path.write_text(json.dumps(_rec()) + "\n" + json.dumps([_rec(group="g2")]) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"line 2: a JSON list, expected an object with fields"):
        load_parallel_jsonl(path)


# ---------------------------------------------------------------- item 3: SQuAD-layout files
def _par(qas):
    return {"context": "A b. C d.", "sentences": ["A b.", "C d."], "sentence_breaks": [[0, 4], [5, 9]], "qas": qas}


_GOOD_QA = {"id": "q1", "question": "What?", "answers": [{"text": "C", "answer_start": 5}]}


@pytest.mark.parametrize("qas,row,says", [
    (["oops"], "paragraph 0, question 0", r"the question is a string \('oops'\), expected an object"),
    ([_GOOD_QA, {"id": "q2", "question": "Who?", "answers": ["A"]}], "paragraph 0, question 1",
     r"answer 0 is a string \('A'\), expected an object with 'text' and 'answer_start'"),
    ([{"id": "q2", "question": "Who?", "answers": {"text": "A"}}], "paragraph 0, question 0", r"'answers' is an object"),
    ({"id": "q1"}, "paragraph 0", r"'qas' is an object \(\{'id': 'q1'\}\), expected a list of questions"),
    ([{"id": "q3", "question": 42, "answers": [{"text": "A", "answer_start": 0}]}], "q3", r"'question' is a number \(42\)"),
])
def test_build_split_bad_question_names_file_paragraph_and_index(qas, row, says):
    from sentence_transformers_hybrid.data.benchmark import build_split
    from sentence_transformers_hybrid.data.validation import Validator

    with pytest.raises(DataValidationError, match=rf"file 'f.json', row '{row}', language 'en': {says}"):
        build_split("en", [_par(qas)], "f.json", Validator(True))
    validator = Validator(False)
    if row != "paragraph 0" and qas[0] is _GOOD_QA:
        split = build_split("en", [_par(qas)], "f.json", validator)
        assert split.question_ids == ["q1"]
    else:
        with pytest.raises(DataValidationError, match="no valid question"):
            build_split("en", [_par(qas)], "f.json", validator)
    assert [i.row for i in validator.report] == [row]


def test_bad_sentences_field_names_the_paragraph():
    from sentence_transformers_hybrid.data.benchmark import build_split
    from sentence_transformers_hybrid.data.validation import Validator

    with pytest.raises(DataValidationError, match=r"paragraph 0: 'sentences' is a string"):
        build_split("en", [{**_par([_GOOD_QA]), "sentences": "A b. C d."}], "f.json", Validator(True))
    with pytest.raises(DataValidationError, match=r"paragraph 0: 'sentence_breaks' is a list.*expected \[\[start, end\]"):
        build_split("en", [{**_par([_GOOD_QA]), "sentence_breaks": [["a", "b"]]}], "f.json", Validator(True))


def test_squad_to_corpus_bad_question_names_file_paragraph_and_index(tmp_path):
    import json

    from sentence_transformers_hybrid import squad_to_corpus

    path = tmp_path / "train.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "A b. C d.", "qas": [_GOOD_QA, ["q"]]}]}]}))
    with pytest.raises(DataValidationError, match=r"train.json', row 'paragraph 0, question 1', language 'en': the question is a list"):
        squad_to_corpus(path, "en")
    corpus = squad_to_corpus(path, "en", strict=False)
    assert corpus.groups == ["q1"] and [i.row for i in corpus.report] == ["paragraph 0, question 1"]


def test_non_utf8_json_names_line_and_column(tmp_path):
    from sentence_transformers_hybrid.data.lareqa import read_json

    path = tmp_path / "x.json"
    path.write_bytes(b'{"data": [\n  {"title": "caf\xe9"}]}')
    with pytest.raises(DataValidationError, match=r"x.json': not UTF-8 text at line 2, column 17 \(byte 0xe9\)"):
        read_json(path)


# ---------------------------------------------------------------- item 3: what a data argument names
def _squad_file(path, pretty: bool = True):
    import json

    doc = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Goethe wrote Faust. It is long.",
           "qas": [{"id": "q1", "question": "Who wrote Faust?", "answers": [{"text": "Goethe", "answer_start": 0}]}]}]}]}
    path.write_text(json.dumps(doc, indent=2 if pretty else None), encoding="utf-8")
    return path


@pytest.mark.parametrize("pretty", [True, False])
def test_detect_format_tells_squad_from_json_lines(tmp_path, pretty):
    from sentence_transformers_hybrid.data.formats import detect_format

    assert detect_format(_squad_file(tmp_path / "train.json", pretty)) == "squad"
    _write_jsonl(tmp_path / "records.json", [_rec()])
    assert detect_format(tmp_path / "records.json") == "jsonl"


def test_json_array_file_is_answered_with_what_to_pass(tmp_path):
    import json

    from sentence_transformers_hybrid.data.formats import load_corpus

    (tmp_path / "list.json").write_text(json.dumps([_rec()]), encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"list.json' starts with a JSON array.*one record.*per line"):
        load_corpus(tmp_path / "list.json")


def test_load_corpus_sends_a_squad_file_to_the_squad_loader(tmp_path):
    from sentence_transformers_hybrid.data.formats import load_corpus

    path = _squad_file(tmp_path / "train.json")
    corpus = load_corpus(path, languages=["en"])
    assert corpus.groups == ["q1"] and corpus.sources == ["train"] and corpus.languages == ["en"]
    with pytest.raises(DataValidationError, match=r"train.json' is a SQuAD-format file.*pass that language.*--languages en"):
        load_corpus(path)


def test_load_corpus_applies_languages_to_json_lines(tmp_path):
    from sentence_transformers_hybrid.data.formats import load_corpus

    _write_jsonl(tmp_path / "t.jsonl", [_rec(lang="en"), _rec(lang="de"), _rec(group="g2", lang="fr")])
    assert load_corpus(tmp_path / "t.jsonl", languages=["de", "en"]).languages == ["de", "en"]
    with pytest.raises(DataValidationError, match=r"has no language\(s\) \['zh'\]; it has \['de', 'en', 'fr'\]"):
        load_corpus(tmp_path / "t.jsonl", languages=["zh"])


def test_load_corpus_unknown_name_suggests_the_benchmark(tmp_path):
    from sentence_transformers_hybrid.data.formats import load_corpus

    with pytest.raises(DataValidationError, match=r"training data 'mlqa': no such file or folder.*did you mean 'mlqa-r'\?"):
        load_corpus("mlqa")


@pytest.mark.parametrize("spec,says", [
    ("xquad", r"unknown benchmark 'xquad': expected 'mlqa-r' or 'xquad-r'.*did you mean 'xquad-r'\?"),
    ("en=a.json,de", r"item 'de' is not lang=file.json"),
    ("en=a.json,en=b.json", r"language 'en' is given twice"),
])
def test_load_benchmark_bad_spec_is_answered(spec, says):
    from sentence_transformers_hybrid.data.formats import load_benchmark

    with pytest.raises(DataValidationError, match=says):
        load_benchmark(spec)


def test_load_benchmark_squad_files_follow_languages(tmp_path):
    from sentence_transformers_hybrid.data.formats import load_benchmark

    spec = f"en={_squad_file(tmp_path / 'en.json')},de={_squad_file(tmp_path / 'de.json')}"
    assert load_benchmark(spec, languages=["de"]).languages == ["de"]
    with pytest.raises(DataValidationError, match=r"has no file for language\(s\) \['zh'\]"):
        load_benchmark(spec, languages=["zh"])
    with pytest.raises(DataValidationError, match=r"for a SQuAD file, name its language: lang="):
        load_benchmark(str(tmp_path / "en.json"))


def test_translate_input_format_is_told_by_content(tmp_path):
    import gzip
    import json

    from sentence_transformers_hybrid.translate.pipeline import read_input

    _write_jsonl(tmp_path / "records.json", [_rec(), _rec(lang="de")])
    assert read_input(tmp_path / "records.json").languages == ["de", "en"]
    (tmp_path / "records.jsonl.gz").write_bytes(gzip.compress((json.dumps(_rec()) + "\n").encode()))
    assert read_input(tmp_path / "records.jsonl.gz").num_rows == 1
    assert read_input(_squad_file(tmp_path / "squad.json"), source_language="en").groups == ["q1"]


def test_wrongly_typed_jsonl_field_names_the_line(tmp_path):
    from sentence_transformers_hybrid import load_parallel_jsonl

    path = tmp_path / "t.jsonl"
    _write_jsonl(path, [_rec(), _rec(group="g2", query=["a", "b"])])
    with pytest.raises(DataValidationError, match=r"t.jsonl', line 2, group 'g2', language 'en': 'query' is list"):
        load_parallel_jsonl(path)
    corpus = load_parallel_jsonl(path, strict=False)
    assert corpus.groups == ["g1"] and corpus.report.issues[0].row == "line 2"


# ---------------------------------------------------------------- the corpus's index cannot change under its layout
def _two_by_two() -> ParallelCorpus:
    return ParallelCorpus.from_records([
        {"group": g, "lang": lang, "query": f"q{g}{lang}", "passage": f"p{g}{lang}"}
        for g in ("g0", "g1") for lang in ("de", "en")
    ])


def test_corpus_index_arrays_cannot_be_changed_in_place():
    corpus = _two_by_two()
    with pytest.raises(ValueError, match="read-only"):
        corpus.row_index[1, 1] = -1
    with pytest.raises(ValueError, match="read-only"):
        corpus.group_source[0] = 1
    with pytest.raises(AttributeError, match="row_index is read-only"):
        corpus.row_index = np.zeros((2, 2), dtype=np.int64)
    with pytest.raises(AttributeError, match="group_source is read-only"):
        corpus.group_source = np.zeros(2, dtype=np.int64)


def test_corpus_keeps_its_own_copy_of_the_arrays_it_was_given():
    """An edit of the caller's array (same shape) reaches neither the corpus nor its cached pair layout."""
    import pyarrow as pa

    from sentence_transformers_hybrid.data.pair_dataset import pair_layout

    row_index = np.array([[0, 1], [2, 3]], dtype=np.int64)
    texts = pa.array(["a", "b", "c", "d"], pa.large_string())
    corpus = ParallelCorpus(["g0", "g1"], ["de", "en"], row_index, texts, texts)
    assert pair_layout(corpus).num_pairs == 8
    row_index[1, 1] = -1
    assert corpus.row_index.tolist() == [[0, 1], [2, 3]]
    assert pair_layout(corpus).num_pairs == 8 and len(corpus.to_dataset()) == 8


def test_a_copied_or_unpickled_corpus_is_read_only_too():
    import copy
    import pickle

    corpus = _two_by_two()
    for clone in (copy.deepcopy(corpus), pickle.loads(pickle.dumps(corpus))):
        assert clone.row_index.tolist() == corpus.row_index.tolist()
        with pytest.raises(ValueError, match="read-only"):
            clone.row_index[0, 0] = -1


class _PlainCorpus:
    """What the pair index reads of a corpus (``data.pair_dataset.GroupedRows``), with writeable arrays."""

    def __init__(self) -> None:
        import pyarrow as pa

        self.groups, self.languages, self.sources = ["g0", "g1"], ["de", "en"], ["default"]
        self.row_index = np.array([[0, 1], [2, 3]], dtype=np.int64)
        self.group_source = np.zeros(2, dtype=np.int64)
        self.query_column = self.passage_column = pa.array(["a", "b", "c", "d"], pa.large_string())

    def __len__(self) -> int:
        return len(self.groups)


def test_pair_layout_follows_an_edit_that_keeps_the_shape():
    """A corpus whose arrays can be written to: the cached layout is checked against their content, so an edit
    that keeps every count is never answered with the stale layout."""
    from sentence_transformers_hybrid.data.pair_dataset import pair_layout

    corpus = _PlainCorpus()
    before = pair_layout(corpus)
    assert pair_layout(corpus) is before and before.num_pairs == 8
    corpus.row_index[1, 1] = -1  # g1 loses 'en': same groups, same languages, same shape
    after = pair_layout(corpus)
    assert after is not before and after.num_pairs == 5 and after.signature != before.signature
    corpus.languages[1] = "fr"  # a renamed language is another corpus too
    assert pair_layout(corpus).languages == ["de", "fr"]


# ---------------------------------------------------------------- a group's source is its first row's, by contract
class _OtherOrderArray(np.ndarray):
    """An array whose repeated fancy-index writes land in another order than today's NumPy does them: NumPy does not
    promise which of several writes to one element is kept, so no result may depend on it."""

    def __setitem__(self, key, value):
        keys = key if isinstance(key, tuple) else (key,)
        if (all(isinstance(k, np.ndarray) and k.ndim == 1 and k.dtype.kind in "iu" for k in keys)
                and np.ndim(value) == 1):
            flipped = tuple(k[::-1] for k in keys)
            return super().__setitem__(flipped if isinstance(key, tuple) else flipped[0], np.asarray(value)[::-1])
        return super().__setitem__(key, value)


def _numpy_writing_in_another_order():
    import types

    numpy = types.ModuleType("numpy_in_another_order")
    numpy.__getattr__ = lambda name: getattr(np, name)
    numpy.full = lambda *args, **kwargs: np.full(*args, **kwargs).view(_OtherOrderArray)
    return numpy


@pytest.mark.parametrize("numpy_order", ["today's", "another"])
def test_the_first_row_of_a_group_names_its_source(monkeypatch, numpy_order):
    from sentence_transformers_hybrid.data import corpus as corpus_module

    if numpy_order == "another":
        monkeypatch.setattr(corpus_module, "np", _numpy_writing_in_another_order())
    records = [{"group": "g1", "lang": lang, "query": f"q {lang}", "passage": f"p {lang}", "source": src}
               for lang, src in (("en", "wiki"), ("de", "news"), ("fr", "news"))]
    records.append({"group": "g2", "lang": "en", "query": "q2", "passage": "p2", "source": "news"})
    with pytest.raises(DataValidationError, match=r"row 1.*source 'news' differs from the group's source 'wiki'"):
        ParallelCorpus.from_records(records)
    corpus = ParallelCorpus.from_records(records, strict=False)
    assert [(r["group"], r["lang"], r["source"]) for r in corpus.to_records()] == [("g1", "en", "wiki"), ("g2", "en", "news")]
    assert sorted(i.row for i in corpus.report) == [1, 2]
