"""MIRACL's layout read as distributed (topics, TREC qrels, gzipped JSON-lines corpus), and every bad input named."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from sentence_transformers_hybrid.data import DataValidationError, PassageSource, load_miracl
from sentence_transformers_hybrid.data.miracl import check_qrels_docids, miracl_paths, write_miracl_layout

PASSAGES = [{"docid": f"{i // 3}#{i % 3}", "title": f"T{i // 3}", "text": f"text {i}"} for i in range(10)]
QUERIES = {"1": "first question", "2": "second question"}
QRELS = {"1": {"0#1": 1, "1#0": 0}, "2": {"2#2": 1}}


@pytest.fixture
def root(tmp_path):
    return write_miracl_layout(tmp_path, "sw", QUERIES, QRELS, PASSAGES, files=3)


def test_load_miracl_reads_topics_qrels_with_rel_0_rows_and_streams_the_corpus(root):
    data = load_miracl("sw", "dev", root)
    assert data.queries == QUERIES
    assert data.qrels == QRELS  # rel 0 rows are kept (judged non-relevant)
    assert data.judged_queries == ["1", "2"]
    assert [f.name for f in data.corpus.files] == ["docs-00.jsonl.gz", "docs-01.jsonl.gz", "docs-02.jsonl.gz"]
    batches = list(data.corpus.iter_batches(2))
    assert all(len(b.docids) <= 2 and len({b.file}) == 1 for b in batches)
    assert [d for b in batches for d in b.docids] == [p["docid"] for p in PASSAGES]
    assert batches[0].texts[0] == "T0 text 0"  # title + " " + text
    assert [b.first_row for b in batches] == sorted(b.first_row for b in batches)
    assert data.corpus.count() == 10 and data.corpus.locate(4) == (str(data.corpus.files[1]), 1)


def test_skipped_rows_are_not_parsed_and_batches_stop_at_shard_boundaries(root):
    source = load_miracl("sw", data_dir=root).corpus
    got = [(b.first_row, b.docids) for b in source.iter_batches(10, keep=lambda r: r // 4 != 1, boundary=4)]
    rows = [r for first, ids in got for r in range(first, first + len(ids))]
    assert rows == [0, 1, 2, 3, 8, 9]
    assert all(first // 4 == (first + len(ids) - 1) // 4 for first, ids in got)


def test_a_language_with_no_files_names_every_path_tried(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_miracl("yo", data_dir=tmp_path)
    topics, qrels, corpus = miracl_paths("yo", "dev", tmp_path)
    for path in (topics, qrels, corpus):
        assert str(path) in str(err.value)


def test_a_malformed_topics_line_names_file_and_line(root):
    topics = miracl_paths("sw", "dev", root)[0]
    topics.write_text("1\tfirst\n2 no tab here\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=rf"{topics.name}, line 2"):
        load_miracl("sw", data_dir=root)


def test_a_malformed_qrels_line_names_file_and_line(root):
    qrels = miracl_paths("sw", "dev", root)[1]
    qrels.write_text("1 Q0 0#1 1\n1 Q0 1#0\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=rf"{qrels.name}, line 2"):
        load_miracl("sw", data_dir=root)


def test_a_malformed_corpus_line_names_file_and_line(root):
    f = root / "miracl-corpus-v1.0-sw" / "docs-01.jsonl.gz"
    with gzip.open(f, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(PASSAGES[4]) + "\n" + '{"docid": "x", "title": "no text"}\n')
    with pytest.raises(DataValidationError, match=r"docs-01\.jsonl\.gz, line 2"):
        list(load_miracl("sw", data_dir=root).corpus.iter_batches(4))


def test_a_truncated_gz_file_is_named(root):
    f = root / "miracl-corpus-v1.0-sw" / "docs-02.jsonl.gz"
    f.write_bytes(f.read_bytes()[:-12])
    with pytest.raises(DataValidationError, match=r"docs-02\.jsonl\.gz: truncated"):
        list(load_miracl("sw", data_dir=root).corpus.iter_batches(4))


def test_a_docid_twice_across_files_names_both_places(root):
    f = root / "miracl-corpus-v1.0-sw" / "docs-02.jsonl.gz"
    with gzip.open(f, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(PASSAGES[7]) + "\n" + json.dumps({**PASSAGES[1], "text": "again"}) + "\n")
    source = load_miracl("sw", data_dir=root).corpus
    with pytest.raises(DataValidationError) as err:
        source.check_unique()
    assert "'0#1'" in str(err.value)
    assert "docs-00.jsonl.gz, line 2" in str(err.value) and "docs-02.jsonl.gz, line 2" in str(err.value)


def test_a_qrels_docid_absent_from_the_corpus_is_named(root):
    source = load_miracl("sw", data_dir=root).corpus
    with pytest.raises(DataValidationError, match=r"'9#9' \(query '2'\)"):
        check_qrels_docids({"1": {"0#1": 1}, "2": {"9#9": 0}}, source.docids(), language="sw")
    check_qrels_docids(QRELS, source.docids())  # all present: no error


def test_qrels_of_a_query_the_topics_lack_are_refused(root):
    qrels = miracl_paths("sw", "dev", root)[1]
    qrels.write_text(qrels.read_text() + "77 Q0 0#0 1\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match="'77'"):
        load_miracl("sw", data_dir=root)


def test_from_dict_keeps_order_titles_and_plain_texts():
    source = PassageSource.from_dict({"b": {"title": "", "text": "x"}, "a": "y"}, with_title=False)
    (batch,) = list(source.iter_batches(8))
    assert batch.docids == ["b", "a"] and batch.texts == ["x", "y"] and len(source) == 2
    assert source.docids().tolist() == [b"b", b"a"]
    assert np.array_equal(source.docids(), np.array([b"b", b"a"]))
