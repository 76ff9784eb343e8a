"""The corpus engine: shards on disk with manifests (resume, refuse, re-encode), exact search (= brute force, ties
included; = faiss flat; sharded = single pass), and MIRACL scoring (= pytrec_eval on an in-memory exact search)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sentence_transformers_hybrid.data import DataValidationError, load_miracl
from sentence_transformers_hybrid.data.miracl import write_miracl_layout
from sentence_transformers_hybrid.evaluation.miracl import MIRACLEvaluator, evaluate_miracl
from sentence_transformers_hybrid.index import CorpusIndex, Shard, encode_corpus, search
from sentence_transformers_hybrid.data.passages import encode_docids
from sentence_transformers_hybrid.testing import tiny_static_model

ROOT = Path(__file__).resolve().parent.parent
TOPICS = [f"topic {t}" for t in range(7)]
TEXTS = [f"passage {i} on topic {i % 7} and {i % 5}" for i in range(60)]
PASSAGES = [{"docid": f"{i // 4}#{i % 4}", "title": f"T{i % 3}", "text": t} for i, t in enumerate(TEXTS)]
QUERIES = {f"q{t}": TOPICS[t] for t in range(7)}
QRELS = {f"q{t}": {PASSAGES[t]["docid"]: 1, PASSAGES[t + 7]["docid"]: 1, PASSAGES[t + 1]["docid"]: 0}
         for t in range(6)}  # q6 is unjudged
QRELS["q5"] = {PASSAGES[40]["docid"]: 0, PASSAGES[12]["docid"]: 1}


@pytest.fixture(scope="module")
def model():
    return tiny_static_model(TEXTS + TOPICS, dim=16)


@pytest.fixture
def root(tmp_path):
    return write_miracl_layout(tmp_path / "data", "sw", QUERIES, QRELS, PASSAGES, files=3)


def reference_top(q: np.ndarray, emb: np.ndarray, k: int) -> np.ndarray:
    s = q.astype(np.float64) @ emb.astype(np.float64).T
    rows = np.broadcast_to(np.arange(emb.shape[0]), s.shape)
    return np.lexsort((rows, -s), axis=1)[:, :k]  # score descending, then row ascending


# ------------------------------------------------------------------------------------------------- search
@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_exact_search_equals_brute_force_with_ties_whatever_the_shards_and_chunks(chunk_size):
    rng = np.random.default_rng(0)
    emb = rng.integers(-2, 3, (300, 6)).astype(np.float32)  # small integers: many exact ties
    q = rng.integers(-2, 3, (40, 6)).astype(np.float32)
    ids = [f"d{i}" for i in range(300)]
    want = reference_top(q, emb, 25)
    edges = [0, 11, 12, 150, 300]
    sharded = CorpusIndex([Shard(emb[a:b], encode_docids(ids[a:b])) for a, b in zip(edges, edges[1:])])
    for index in (CorpusIndex.from_arrays(emb, ids), sharded):
        got = search(q, index, top_k=25, chunk_size=chunk_size)
        np.testing.assert_array_equal(got.rows, want)
        np.testing.assert_array_equal(got.docids, np.array(ids)[want])
        np.testing.assert_array_equal(got.scores, (q @ emb.T)[np.arange(40)[:, None], want])
        assert not got.approximate


def test_fewer_passages_than_k_leave_empty_slots():
    got = search(np.ones((1, 2)), CorpusIndex.from_arrays(np.eye(2), ["a", "b"]), top_k=4)
    assert got.docids.tolist() == [["a", "b", "", ""]] and got.rows.tolist() == [[0, 1, -1, -1]]
    assert got.to_run(["q"]) == {"q": {"a": 1.0, "b": 1.0}}


def test_faiss_flat_equals_exact_and_ann_is_labelled_approximate():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(500, 8)).astype(np.float32)
    q = rng.normal(size=(20, 8)).astype(np.float32)
    index = CorpusIndex([Shard(emb[a:b], encode_docids([f"d{i}" for i in range(a, b)])) for a, b in [(0, 200), (200, 500)]])
    exact, flat = search(q, index, top_k=30), search(q, index, top_k=30, backend="faiss")
    np.testing.assert_array_equal(flat.rows, exact.rows)
    np.testing.assert_allclose(flat.scores, exact.scores, rtol=1e-5, atol=1e-5)
    assert not flat.approximate
    hnsw = search(q, index, top_k=10, backend="faiss-hnsw")
    assert hnsw.approximate and hnsw.backend == "faiss-hnsw"


# ----------------------------------------------------------------------------------------------- encoding
def test_encode_writes_float16_memmapped_shards_with_manifests(model, root, tmp_path):
    source = load_miracl("sw", data_dir=root).corpus
    index = encode_corpus(model, source, tmp_path / "ix", shard_size=25, batch_size=8, show_progress_bar=False)
    assert len(index) == 60 and [len(s) for s in index.shards] == [25, 25, 10]
    shard = index.shards[1]
    assert isinstance(shard.embeddings, np.memmap) and shard.embeddings.dtype == np.float16
    m = shard.manifest
    assert m["finished"] and m["rows"] == 25 and m["dtype"] == "float16" and m["model_fingerprint"].startswith("sha256:")
    assert m["segments"][0]["file"].startswith("docs-0") and sum(s["rows"] for s in m["segments"]) == 25
    want = model.encode_document([f"{p['title']} {p['text']}" for p in PASSAGES[25:50]], normalize_embeddings=True)
    np.testing.assert_allclose(shard.embeddings.astype(np.float32), want, atol=2e-3)
    assert shard.docids.tolist() == [p["docid"] for p in PASSAGES[25:50]]


class Killed(Exception):
    pass


def _kill_after(model, monkeypatch, calls: int) -> list[int]:
    seen = []
    real = type(model).encode_document

    def encode_document(self, texts, **kw):
        if len(seen) >= calls:
            raise Killed("simulated kill")
        seen.append(len(texts))
        return real(self, texts, **kw)

    monkeypatch.setattr(type(model), "encode_document", encode_document)
    return seen


def test_a_killed_encode_resumes_at_the_first_unfinished_shard(model, root, tmp_path, monkeypatch):
    source = load_miracl("sw", data_dir=root).corpus
    full = encode_corpus(model, source, tmp_path / "full", shard_size=20, batch_size=10, show_progress_bar=False)
    seen = _kill_after(model, monkeypatch, calls=3)  # shard 0 (2 batches) done, killed inside shard 1
    with pytest.raises(Killed):
        encode_corpus(model, source, tmp_path / "ix", shard_size=20, batch_size=10, show_progress_bar=False)
    manifests = sorted((tmp_path / "ix").glob("shard-*.json"))
    assert [p.name for p in manifests] == ["shard-00000.json"]
    assert not list((tmp_path / "ix").glob(".*.tmp"))  # the unfinished shard left no temporary file
    monkeypatch.undo()
    seen = _kill_after(model, monkeypatch, calls=100)
    resumed = encode_corpus(model, source, tmp_path / "ix", shard_size=20, batch_size=10, show_progress_bar=False)
    assert sum(seen) == 40  # shards 1 and 2 only
    for a, b in zip(resumed.shards, full.shards):
        np.testing.assert_array_equal(np.asarray(a.embeddings), np.asarray(b.embeddings))


def test_a_truncated_corpus_file_is_named_and_finished_shards_are_kept(model, root, tmp_path):
    source = load_miracl("sw", data_dir=root).corpus
    # a first job encodes shards 0, 2, 4; then a corpus file is cut short (an interrupted download)
    encode_corpus(model, source, tmp_path / "ix", shard_size=10, shard_id=0, num_shards=2, show_progress_bar=False)
    f = root / "miracl-corpus-v1.0-sw" / "docs-02.jsonl.gz"
    f.write_bytes(f.read_bytes()[:-12])
    source = load_miracl("sw", data_dir=root).corpus
    with pytest.raises(DataValidationError, match="docs-02.jsonl.gz: truncated"):
        encode_corpus(model, source, tmp_path / "ix", shard_size=10, show_progress_bar=False)
    done = sorted(p.name for p in (tmp_path / "ix").glob("shard-*.json"))
    assert done[:3] == ["shard-00000.json", "shard-00001.json", "shard-00002.json"]  # 0-39 lie before docs-02
    assert all(json.loads((tmp_path / "ix" / n).read_text())["finished"] for n in done)
    with pytest.raises(DataValidationError, match="docs-02.jsonl.gz: truncated"):  # never a fresh count either
        encode_corpus(model, source, tmp_path / "other", shard_size=10, show_progress_bar=False)


def test_a_full_disk_leaves_no_shard_marked_finished(model, root, tmp_path, disk_full):
    source = load_miracl("sw", data_dir=root).corpus
    big = tiny_static_model(TEXTS + TOPICS, dim=64)
    folder = tmp_path / "ix"
    encode_corpus(big, source, folder, shard_size=20, batch_size=4, show_progress_bar=False)  # index.json + shards
    for p in folder.glob("shard-*"):
        p.unlink()
    disk_full(folder, after=1500)  # a shard's data is 20 x 64 x 2 + 128 bytes
    with pytest.raises(OSError):
        encode_corpus(big, source, folder, shard_size=20, batch_size=4, show_progress_bar=False)
    assert not list(folder.glob("shard-*.json")) and not list(folder.glob("shard-*.npy"))


def test_a_folder_of_another_model_or_dtype_is_refused_naming_the_fields_unless_overwrite(model, root, tmp_path):
    source = load_miracl("sw", data_dir=root).corpus
    encode_corpus(model, source, tmp_path / "ix", shard_size=25, show_progress_bar=False)
    other = tiny_static_model(TEXTS + TOPICS, dim=16, seed=5)
    with pytest.raises(ValueError, match="model_fingerprint") as err:
        encode_corpus(other, source, tmp_path / "ix", shard_size=25, show_progress_bar=False)
    assert "dtype" not in str(err.value)
    with pytest.raises(ValueError, match="dtype"):
        encode_corpus(model, source, tmp_path / "ix", shard_size=25, dtype="float32", show_progress_bar=False)
    with pytest.raises(ValueError, match="prompt"):
        encode_corpus(model, source, tmp_path / "ix", shard_size=25, prompt="passage: ", show_progress_bar=False)
    index = encode_corpus(other, source, tmp_path / "ix", shard_size=25, overwrite=True, show_progress_bar=False)
    np.testing.assert_allclose(index.shards[0].embeddings[:2].astype(np.float32),
                               other.encode_document(["T0 " + TEXTS[0], "T1 " + TEXTS[1]], normalize_embeddings=True),
                               atol=2e-3)


def test_a_shard_of_another_model_or_truncated_is_named_and_encoded_again(model, root, tmp_path, caplog):
    source = load_miracl("sw", data_dir=root).corpus
    folder = tmp_path / "ix"
    first = encode_corpus(model, source, folder, shard_size=25, show_progress_bar=False)
    want = [np.asarray(s.embeddings).copy() for s in first.shards]
    m = json.loads((folder / "shard-00001.json").read_text())
    (folder / "shard-00001.json").write_text(json.dumps({**m, "model_fingerprint": "sha256:other"}))
    npy = folder / "shard-00002.npy"
    npy.write_bytes(npy.read_bytes()[:-40])
    with caplog.at_level("WARNING"):
        again = encode_corpus(model, source, folder, shard_size=25, show_progress_bar=False)
    assert "shard 1 encoded with other settings: model_fingerprint" in caplog.text
    assert "shard 2 truncated" in caplog.text
    for s, w in zip(again.shards, want):
        np.testing.assert_array_equal(np.asarray(s.embeddings), w)


def test_a_docid_twice_is_refused_after_encoding_naming_both_places(model, tmp_path):
    passages = PASSAGES[:10] + [{**PASSAGES[3], "text": "dup"}]
    root = write_miracl_layout(tmp_path / "d", "sw", QUERIES, {}, passages, files=2)
    with pytest.raises(DataValidationError, match=r"'0#3' occurs twice: docs-00.jsonl.gz, line 4 and docs-01.jsonl.gz, line 5"):
        encode_corpus(model, load_miracl("sw", data_dir=root).corpus, tmp_path / "ix", shard_size=4,
                      show_progress_bar=False)


def test_independent_shard_jobs_then_a_final_call_equal_one_pass(model, root, tmp_path):
    one = evaluate_miracl(model, ["sw"], root, tmp_path / "one", shard_size=7, show_progress_bar=False)
    for i in range(3):
        partial = evaluate_miracl(model, ["sw"], root, tmp_path / "jobs", shard_size=7, shard_id=i, num_shards=3,
                                  show_progress_bar=False)
        assert partial["shards_done"]["sw"][-1] % 3 == i
    assert not (tmp_path / "jobs" / "metrics.json").exists()
    final = evaluate_miracl(model, ["sw"], root, tmp_path / "jobs", shard_size=7, show_progress_bar=False)
    assert final["languages"] == one["languages"]
    assert (tmp_path / "jobs/runs/sw.trec").read_text() == (tmp_path / "one/runs/sw.trec").read_text()
    # another shard size: other blocks, the same hits
    other = evaluate_miracl(model, ["sw"], root, tmp_path / "two", shard_size=30, show_progress_bar=False)
    assert (tmp_path / "two/runs/sw.trec").read_text() == (tmp_path / "one/runs/sw.trec").read_text()
    assert other["languages"] == one["languages"]


# -------------------------------------------------------------------------------------------------- scoring
def test_miracl_metrics_equal_pytrec_eval_on_an_in_memory_exact_search(model, root, tmp_path):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    out = evaluate_miracl(model, ["sw"], root, tmp_path / "o", top_k=20, shard_size=16, encode_dtype="float32",
                          show_progress_bar=False)
    # in memory: every passage, every query, full score matrix, top 20 by (score desc, row asc)
    docs = model.encode_document([f"{p['title']} {p['text']}" for p in PASSAGES], normalize_embeddings=True)
    qids = list(QUERIES)
    q = model.encode_query([QUERIES[x] for x in qids], normalize_embeddings=True)
    top = reference_top(q, docs, 20)
    scores = q @ docs.T
    run = {qid: {PASSAGES[j]["docid"]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qids)}
    evaluator = pytrec_eval.RelevanceEvaluator(QRELS, {"ndcg_cut.10", "recall.100"})
    per_query = evaluator.evaluate(run)
    for name, key in (("ndcg@10", "ndcg_cut_10"), ("recall@100", "recall_100")):
        want = np.mean([per_query[qid][key] if qid in per_query else 0.0 for qid in QRELS])
        assert out["languages"]["sw"][name] == pytest.approx(want, abs=1e-6), name
    lang = out["languages"]["sw"]
    assert (lang["queries"], lang["judged_queries"], lang["passages"]) == (7, 6, 60)
    assert out["macro"]["ndcg@10"] == lang["ndcg@10"]


def test_queries_with_nothing_retrieved_count_zero_like_trec_eval_c():
    from sentence_transformers_hybrid.metrics.trec import miracl_scores

    qrels = {"a": {"x": 1}, "b": {"y": 1}}
    assert miracl_scores(qrels, {"a": {"x": 1.0}}) == {"ndcg@10": 0.5, "recall@100": 0.5}


def test_the_evaluator_takes_the_same_path_as_evaluate_miracl(model, root, tmp_path):
    data = load_miracl("sw", data_dir=root)
    corpus = {p["docid"]: {"title": p["title"], "text": p["text"]} for p in PASSAGES}
    evaluator = MIRACLEvaluator(data.queries, corpus, data.qrels, name="sw", encode_dtype="float16")
    got = evaluator(model, output_path=str(tmp_path))
    want = evaluate_miracl(model, ["sw"], root, tmp_path / "o", show_progress_bar=False)["languages"]["sw"]
    assert got == {"sw_ndcg@10": want["ndcg@10"], "sw_recall@100": want["recall@100"]}
    assert evaluator.primary_metric == "sw_ndcg@10" and (tmp_path / "MIRACL_evaluation_sw_results.csv").is_file()


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_end_to_end_writes_metrics_runs_and_results(model, root, tmp_path):
    model_dir = tmp_path / "model"
    model.save(str(model_dir))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sentence_transformers_hybrid", "miracl", "--model", str(model_dir), "--data-dir",
           str(root), "--languages", "sw", "--split", "dev", "--output-dir", str(out), "--top-k", "10",
           "--batch-size", "8", "--shard-size", "16", "--encode-dtype", "float32"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"languages", "macro", "model", "index"}
    assert set(metrics["languages"]["sw"]) >= {"ndcg@10", "recall@100", "queries", "passages", "judged_queries"}
    assert metrics["index"]["backend"] == "exact" and metrics["index"]["approximate"] is False
    lines = (out / "runs" / "sw.trec").read_text().splitlines()
    assert len(lines) == 7 * 10 and lines[0].split()[1:4:2] == ["Q0", "1"]
    assert "| sw |" in (out / "results.md").read_text()
    again = subprocess.run(cmd[:-2] + ["--encode-dtype", "float16"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 2 and "dtype" in again.stderr and "--overwrite" in again.stderr
    packed = subprocess.run(cmd[:-4] + ["--output-dir", str(tmp_path / "packed"), "--pack-tokens"] + cmd[-2:],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert packed.returncode == 2 and "cannot be packed" in packed.stderr  # a static model: named, not a crash


def test_an_approximate_index_is_labelled_in_every_output(model, root, tmp_path):
    pytest.importorskip("faiss")
    out = evaluate_miracl(model, ["sw"], root, tmp_path / "o", index="faiss-hnsw", top_k=5, show_progress_bar=False)
    assert out["index"]["approximate"] is True and out["index"]["backend"] == "faiss-hnsw"
    tags = {line.split()[-1] for line in (tmp_path / "o/runs/sw.trec").read_text().splitlines()}
    assert tags and all(t.endswith("-approximate") for t in tags)
    assert "approximate" in (tmp_path / "o/results.md").read_text()


# ------------------------------------------------------------------------------------------ packed encoding
@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_packed_encoding_stores_the_encode_document_vectors_and_the_same_metrics(root, tmp_path, model_type):
    """issue 24: pack_tokens=True encodes with no padding outside attention; prompt, truncate_dim and normalisation
    as encode_document applies them; the scores do not move."""
    from sentence_transformers_hybrid.testing import tiny_transformer_model

    tiny = tiny_transformer_model(tmp_path / "tok", TEXTS + TOPICS + ["passage: T0"], model_type=model_type).eval()
    tiny.prompts = {"query": "query: ", "document": "passage: "}
    source = load_miracl("sw", data_dir=root).corpus
    plain = encode_corpus(tiny, source, tmp_path / "a", shard_size=25, batch_size=8, dtype="float32",
                          show_progress_bar=False)
    packed = encode_corpus(tiny, source, tmp_path / "b", shard_size=25, batch_size=8, dtype="float32",
                           show_progress_bar=False, pack_tokens=True)
    for a, b in zip(plain.shards, packed.shards):
        np.testing.assert_allclose(np.asarray(b.embeddings), np.asarray(a.embeddings), atol=1e-5)
    want = tiny.encode_document([f"{p['title']} {p['text']}" for p in PASSAGES[:25]], normalize_embeddings=True)
    np.testing.assert_allclose(np.asarray(packed.shards[0].embeddings), want, atol=1e-5)
    tiny.truncate_dim = 8
    cut = encode_corpus(tiny, source, tmp_path / "c", shard_size=25, batch_size=8, dtype="float32",
                        show_progress_bar=False, pack_tokens=True)
    want = tiny.encode_document([f"{p['title']} {p['text']}" for p in PASSAGES[:25]], normalize_embeddings=True)
    assert cut.shards[0].embeddings.shape[1] == 8
    np.testing.assert_allclose(np.asarray(cut.shards[0].embeddings), want, atol=1e-5)
    tiny.truncate_dim = None
    one = evaluate_miracl(tiny, ["sw"], root, tmp_path / "m1", show_progress_bar=False)
    two = evaluate_miracl(tiny, ["sw"], root, tmp_path / "m2", show_progress_bar=False, pack_tokens=True)
    assert one["languages"] == two["languages"] and two["index"]["packed_encoding"] is True
    assert one["index"]["packed_encoding"] is False


def test_packed_encoding_refuses_a_model_it_cannot_pack_before_any_work(model, root, tmp_path):
    with pytest.raises(ValueError, match="pack_tokens=True: this model cannot be packed"):
        encode_corpus(model, load_miracl("sw", data_dir=root).corpus, tmp_path / "ix", pack_tokens=True)
    assert not (tmp_path / "ix").exists()
