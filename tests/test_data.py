"""The data model and loaders, checked against counts computed independently from the released JSON files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from sentence_transformers_hybrid import (
    DataValidationError,
    ParallelCorpus,
    load_lareqa,
    load_parallel_jsonl,
    load_squad_parallel,
)

XQUAD = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]
MLQA = ["ar", "de", "en", "es", "hi", "vi", "zh"]


def _raw(data_dir: Path, name: str, lang: str) -> list[dict]:
    """Paragraphs of a released file, read with nothing but json."""
    with open(data_dir / name / f"{lang}.json", encoding="utf-8") as f:
        return [p for a in json.load(f)["data"] for p in a["paragraphs"]]


def _independent_counts(data_dir: Path, name: str, langs: list[str]):
    questions, candidates, ids = {}, {}, {}
    for lang in langs:
        pars = _raw(data_dir, name, lang)
        candidates[lang] = sum(len(p["sentences"]) for p in pars)
        ids[lang] = {qa["id"] for p in pars for qa in p["qas"]}
        questions[lang] = sum(len(p["qas"]) for p in pars)
    return questions, candidates, ids


@pytest.mark.parametrize("name,langs", [("xquad-r", XQUAD), ("mlqa-r", MLQA)])
def test_lareqa_counts_match_the_json(data_dir, name, langs):
    bench = load_lareqa(name, data_dir=data_dir)
    questions, candidates, ids = _independent_counts(data_dir, name, langs)
    assert bench.languages == sorted(langs)
    for lang in langs:
        split = bench.splits[lang]
        assert len(split.questions) == questions[lang]
        assert len(split.sentences) == candidates[lang]
    # relevant-set sizes: mono = 1; cross X->Y = 1 for shared ids; multi = number of languages holding the id
    for x in langs:
        q_rows, rel = bench.relevance(x, x)
        assert len(q_rows) == questions[x] and (np.diff(rel.indptr) == 1).all()
        for y in langs:
            if y == x:
                continue
            q_rows, rel = bench.relevance(x, y)
            assert len(q_rows) == len(ids[x] & ids[y])
            assert (np.diff(rel.indptr) == 1).all()
        q_rows, rel = bench.relevance(x)
        expected = [sum(qid in ids[lang] for lang in langs) for qid in bench.splits[x].question_ids]
        assert np.diff(rel.indptr).tolist() == expected
        assert rel.shape[1] == sum(candidates.values())


def test_xquad_r_released_candidate_counts(data_dir):
    # the LAReQA README's statistics table
    bench = load_lareqa("xquad-r", data_dir=data_dir)
    released = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244, "ru": 1219, "th": 852,
                "tr": 1167, "vi": 1209, "zh": 1196}
    assert {lang: len(s.sentences) for lang, s in bench.splits.items()} == released
    assert {len(s.questions) for s in bench.splits.values()} == {1190}


def test_mlqa_r_released_counts_and_relevant_sets(data_dir):
    bench = load_lareqa("mlqa-r", data_dir=data_dir)
    released_q = {"ar": 517, "de": 512, "en": 1148, "es": 500, "hi": 507, "vi": 511, "zh": 504}
    released_c = {"ar": 2545, "de": 2362, "en": 6264, "es": 1787, "hi": 2426, "vi": 2828, "zh": 2322}
    assert {lang: len(s.questions) for lang, s in bench.splits.items()} == released_q
    assert {lang: len(s.sentences) for lang, s in bench.splits.items()} == released_c
    _, rel = bench.relevance("en")
    assert set(np.diff(rel.indptr).tolist()) == {2, 3, 4}


def test_relevant_candidate_is_the_answer_sentence_in_every_language(data_dir):
    bench = load_lareqa("xquad-r", data_dir=data_dir, languages=["en", "de", "zh"])
    corpus, queries, qrels = bench.beir("de")
    pars = {lang: _raw(data_dir, "xquad-r", lang) for lang in ["de", "en", "zh"]}
    # independent: the sentence whose break holds answer_start, per language
    answer_sentence = {}
    for lang, ps in pars.items():
        for p in ps:
            for qa in p["qas"]:
                start = qa["answers"][0]["answer_start"]
                k = next(i for i, (s, e) in enumerate(p["sentence_breaks"]) if start < e)
                answer_sentence[(lang, qa["id"])] = p["sentences"][k]
    assert len(queries) == 1190
    for qid, rel in list(qrels.items())[:200]:
        lang, raw_id = qid.split("/", 1)
        assert lang == "de"
        texts = sorted(corpus[d]["text"] for d in rel)
        assert texts == sorted(answer_sentence[(x, raw_id)] for x in ["de", "en", "zh"])


def test_ids_are_unique_across_languages(data_dir):
    bench = load_lareqa("mlqa-r", data_dir=data_dir, languages=["en", "de"])
    corpus, queries, qrels = bench.beir("en")
    assert len(corpus) == len(bench.splits["en"].sentences) + len(bench.splits["de"].sentences)
    _, q_de, _ = bench.beir("de")
    assert not set(queries) & set(q_de)


def test_queries_without_relevant_candidate_are_left_out(data_dir):
    bench = load_lareqa("mlqa-r", data_dir=data_dir, languages=["de", "ar"])
    _, queries, qrels = bench.beir("de", "ar")
    de_ids = set(bench.splits["de"].question_ids)
    ar_ids = set(bench.splits["ar"].question_ids)
    assert len(queries) == len(de_ids & ar_ids) < len(de_ids)
    assert all(len(r) == 1 for r in qrels.values())


def test_to_parallel_corpus(data_dir):
    bench = load_lareqa("mlqa-r", data_dir=data_dir)
    corpus = bench.to_parallel_corpus()
    assert len(corpus) == 1148
    assert corpus.num_rows == sum(len(s.questions) for s in bench.splits.values())
    assert set(corpus.languages_per_group.tolist()) == {2, 3, 4}


# ---------------------------------------------------------------- SQuAD-format round trip
def _export_plain_squad(data_dir: Path, name: str, lang: str, out: Path) -> Path:
    with open(data_dir / name / f"{lang}.json", encoding="utf-8") as f:
        doc = json.load(f)
    for a in doc["data"]:
        for p in a["paragraphs"]:
            p.pop("sentences"), p.pop("sentence_breaks")
    path = out / f"{name}.{lang}.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("name,langs", [("xquad-r", ["en", "de", "zh", "th", "ar"]), ("mlqa-r", ["en", "hi", "vi"])])
def test_squad_round_trip_finds_answer_sentences(data_dir, tmp_path, name, langs):
    files = {lang: _export_plain_squad(data_dir, name, lang, tmp_path) for lang in langs}
    bench = load_squad_parallel(files, name=name)
    original = load_lareqa(name, data_dir=data_dir, languages=langs)
    for lang in langs:
        split = bench.splits[lang]
        assert split.question_ids == original.splits[lang].question_ids
        hits = sum(a in split.sentences[s] for a, s in zip(split.answers, split.answer_sentence))
        assert hits / len(split.questions) >= 0.97, (lang, hits, len(split.questions))
    assert bench.group_ids == original.group_ids


def test_squad_file_in_an_untested_language_loads(tmp_path):
    doc = {"data": [{"title": "t", "paragraphs": [{
        "context": "Nairobi ni mji mkuu wa Kenya. Mji huu una watu wengi. Uko karibu na ikweta.",
        "qas": [{"id": "q1", "question": "Mji mkuu wa Kenya ni upi?", "answers": [{"text": "Nairobi", "answer_start": 0}]},
                {"id": "q2", "question": "Uko karibu na nini?", "answers": [{"text": "ikweta", "answer_start": 68}]}],
    }]}]}
    path = tmp_path / "sw.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    bench = load_squad_parallel({"sw": path}, name="tiny-sw")
    split = bench.splits["sw"]
    assert split.sentences == ["Nairobi ni mji mkuu wa Kenya.", "Mji huu una watu wengi.", "Uko karibu na ikweta."]
    assert split.answer_sentence.tolist() == [0, 2]


# ---------------------------------------------------------------- ParallelCorpus
RECORDS = [
    {"group": "g1", "lang": "en", "query": "q1 en", "passage": "p1 en"},
    {"group": "g1", "lang": "de", "query": "q1 de", "passage": "p1 de"},
    {"group": "g2", "lang": "en", "query": "q2 en", "passage": "p2 en", "source": None},
    {"group": "g3", "lang": "fr", "query": "q3 fr", "passage": "p3 fr"},
]


def test_corpus_from_records_round_trip():
    corpus = ParallelCorpus.from_records(RECORDS)
    assert len(corpus) == 3 and corpus.num_rows == 4
    assert corpus.languages == ["de", "en", "fr"]
    back = list(corpus.to_records())
    assert [(r["group"], r["lang"], r["query"], r["passage"]) for r in back] == [
        (r["group"], r["lang"], r["query"], r["passage"]) for r in RECORDS
    ]
    assert corpus.single_language_groups == ["g2", "g3"]
    assert corpus.row_index.tolist() == [[1, 0, -1], [-1, 2, -1], [-1, -1, 3]]


def test_corpus_from_dataset_equals_from_records():
    ds = Dataset.from_list(
        [{"gid": r["group"], "language": r["lang"], "q": r["query"], "p": r["passage"], "src": "a" if i < 2 else "b"}
         for i, r in enumerate(RECORDS)]
    )
    corpus = ParallelCorpus.from_dataset(ds, group_column="gid", language_column="language", query_column="q",
                                         passage_column="p", source_column="src")
    ref = ParallelCorpus.from_records(RECORDS)
    assert corpus.groups == ref.groups and corpus.languages == ref.languages
    assert (corpus.row_index == ref.row_index).all()
    assert corpus.queries == ref.queries and corpus.passages == ref.passages
    assert corpus.sources == ["a", "b"] and corpus.group_source.tolist() == [0, 1, 1]


def test_corpus_save_and_load(tmp_path):
    corpus = ParallelCorpus.from_records([{**r, "source": "s1" if r["group"] != "g3" else "s2"} for r in RECORDS])
    corpus.save_to_disk(tmp_path / "c")
    back = ParallelCorpus.load_from_disk(tmp_path / "c")
    assert list(back.to_records()) == list(corpus.to_records())
    assert back.sources == ["s1", "s2"]


def test_group_ids_of_any_type_become_strings():
    corpus = ParallelCorpus.from_records([{"group": 5, "lang": "en", "query": "a", "passage": "b"}])
    assert corpus.groups == ["5"]


# ---------------------------------------------------------------- bad input
def test_duplicate_group_language_names_group_language_and_rows():
    recs = RECORDS + [{"group": "g1", "lang": "de", "query": "again", "passage": "again"}]
    with pytest.raises(DataValidationError, match=r"row 4.*group 'g1'.*language 'de'.*also at row 1"):
        ParallelCorpus.from_records(recs)


@pytest.mark.parametrize("field", ["query", "passage"])
def test_empty_text_is_an_error_naming_the_row(field):
    recs = [dict(r) for r in RECORDS]
    recs[2][field] = "  "
    with pytest.raises(DataValidationError, match=rf"row 2.*group 'g2'.*language 'en'.*empty '{field}'"):
        ParallelCorpus.from_records(recs)


def test_non_strict_skips_and_reports_every_bad_row(caplog):
    recs = RECORDS + [
        {"group": "g1", "lang": "de", "query": "dup", "passage": "dup"},
        {"group": "g4", "lang": "en", "query": "", "passage": "x"},
        {"group": "g5", "lang": "en", "passage": "x"},
    ]
    corpus = ParallelCorpus.from_records(recs, strict=False)
    assert corpus.num_rows == 4 and len(corpus) == 3
    assert len(corpus.report) == 3
    reasons = " | ".join(str(i) for i in corpus.report)
    assert "duplicate" in reasons and "empty 'query'" in reasons and "missing field" in reasons
    assert "skipped 3 bad row(s)" in caplog.text


def test_missing_field_names_the_record():
    with pytest.raises(DataValidationError, match=r"row 1: missing field\(s\) \['passage'\]"):
        ParallelCorpus.from_records([RECORDS[0], {"group": "x", "lang": "en", "query": "q"}])


def test_inconsistent_source_within_a_group():
    recs = [{**RECORDS[0], "source": "a"}, {**RECORDS[1], "source": "b"}]
    with pytest.raises(DataValidationError, match=r"group 'g1'.*source 'b' differs"):
        ParallelCorpus.from_records(recs)


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n" + '{"group": "g9", "lang": "en", "query": "q"\n', encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"train.jsonl.*line 3: malformed JSON"):
        load_parallel_jsonl(path)
    path.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps({"group": "g", "lang": "en", "query": "q"}) + "\n")
    with pytest.raises(DataValidationError, match=r"line 2: missing field"):
        load_parallel_jsonl(path)
    corpus = load_parallel_jsonl(path, strict=False)
    assert corpus.num_rows == 1 and len(corpus.report) == 1


def test_truncated_lareqa_json_names_file_and_position(data_dir, tmp_path):
    (tmp_path / "xquad-r").mkdir()
    text = (data_dir / "xquad-r" / "en.json").read_text(encoding="utf-8")
    (tmp_path / "xquad-r" / "en.json").write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"en.json.*malformed or truncated JSON at line \d+, column \d+"):
        load_lareqa("xquad-r", data_dir=tmp_path, languages=["en"])


def test_unknown_language_and_benchmark(data_dir):
    with pytest.raises(DataValidationError, match=r"unknown language\(s\) \['fr'\] for mlqa-r"):
        load_lareqa("mlqa-r", data_dir=data_dir, languages=["en", "fr"])
    with pytest.raises(ValueError, match="unknown LAReQA benchmark"):
        load_lareqa("tydi", data_dir=data_dir)
    bench = load_lareqa("mlqa-r", data_dir=data_dir, languages=["en", "de"])
    with pytest.raises(ValueError, match=r"unknown language\(s\) \['el'\]"):
        bench.relevance("en", "el")


def test_missing_data_directory_is_named(tmp_path, monkeypatch):
    with pytest.raises(DataValidationError, match=rf"{tmp_path}.*has no 'xquad-r' folder"):
        load_lareqa("xquad-r", data_dir=tmp_path)
    monkeypatch.setenv("STH_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("STH_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataValidationError, match=r"not found; tried.*nowhere"):
        load_lareqa("mlqa-r", download=False)


def _squad_doc(questions):
    return {"data": [{"title": "t", "paragraphs": [{"context": "One sentence here. Another one there.", "qas": questions}]}]}


def test_answer_start_outside_the_paragraph(tmp_path):
    path = tmp_path / "en.json"
    path.write_text(json.dumps(_squad_doc([{"id": "q7", "question": "Where?", "answers": [{"text": "x", "answer_start": 500}]}])))
    with pytest.raises(DataValidationError, match=r"en.json.*row 'q7'.*language 'en'.*answer_start 500 outside the paragraph"):
        load_squad_parallel({"en": path})


def test_different_answer_count_across_languages(tmp_path):
    one = [{"id": "q1", "question": "Which?", "answers": [{"text": "One", "answer_start": 0}]}]
    two = [{"id": "q1", "question": "Welche?", "answers": [{"text": "One", "answer_start": 0}, {"text": "x", "answer_start": 4}]}]
    (tmp_path / "en.json").write_text(json.dumps(_squad_doc(one)))
    (tmp_path / "de.json").write_text(json.dumps(_squad_doc(two)))
    with pytest.raises(DataValidationError, match=r"question id 'q1' has 2 answer\(s\) in language 'de' but 1 in language 'en'"):
        load_squad_parallel({"en": tmp_path / "en.json", "de": tmp_path / "de.json"})


def test_bad_language_code_for_squad_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(_squad_doc([])))
    with pytest.raises(DataValidationError, match=r"unknown language 'English'"):
        load_squad_parallel({"English": path})


def test_non_strict_squad_load_reports_skipped_questions(tmp_path):
    qs = [{"id": "ok", "question": "Which?", "answers": [{"text": "One", "answer_start": 0}]},
          {"id": "bad", "question": "Where?", "answers": [{"text": "x", "answer_start": -3}]},
          {"id": "empty", "question": " ", "answers": [{"text": "One", "answer_start": 0}]}]
    path = tmp_path / "en.json"
    path.write_text(json.dumps(_squad_doc(qs)))
    bench = load_squad_parallel({"en": path}, strict=False)
    assert bench.splits["en"].question_ids == ["ok"]
    assert sorted(i.row for i in bench.report) == ["bad", "empty"]


def test_single_language_groups_are_allowed_and_known():
    corpus = ParallelCorpus.from_records(RECORDS)
    assert Counter(corpus.languages_per_group.tolist()) == {2: 1, 1: 2}
