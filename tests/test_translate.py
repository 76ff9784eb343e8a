"""Translate-train: translate_parallel (cache, resume, errors, alignment), M2M100Translator on a tiny random
M2M-100, the SQuAD / pairs source adapters, translate_file, and the M2M-100 encoder backbone."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("sentencepiece")

from sentence_transformers_hybrid.data import DataValidationError, ParallelCorpus, load_parallel_jsonl  # noqa: E402
from sentence_transformers_hybrid.data.sources import pairs_to_corpus, squad_to_corpus  # noqa: E402
from sentence_transformers_hybrid.testing import build_tiny_m2m100  # noqa: E402
from sentence_transformers_hybrid.translate import (  # noqa: E402
    M2M100Translator,
    TranslationCache,
    translate_file,
    translate_parallel,
    translator_identity,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~30x faster than two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_m2m(tmp_path_factory):
    return build_tiny_m2m100(tmp_path_factory.mktemp("tiny-m2m100"))


@pytest.fixture(scope="module")
def translator(tiny_m2m):
    return M2M100Translator(str(tiny_m2m), max_length=32, max_new_tokens=8, batch_size=3, device="cpu")


class FakeTranslator:
    """Deterministic translator that records every call and can fail on a given call."""

    def __init__(self, id: str = "fake-v1", fail_on_call: int | None = None, exc: BaseException | None = None):
        self.id = id
        self.calls: list[tuple[list[str], str, str]] = []
        self.fail_on_call = fail_on_call
        self.exc = exc or RuntimeError("translation server down")

    @staticmethod
    def expected(text: str, target: str) -> str:
        return f"<{target}> {text[::-1]}"

    def __call__(self, texts, source_language, target_language):
        if self.fail_on_call is not None and len(self.calls) + 1 == self.fail_on_call:
            self.calls.append((list(texts), source_language, target_language))
            raise self.exc
        self.calls.append((list(texts), source_language, target_language))
        return [self.expected(t, target_language) for t in texts]

    @property
    def texts_seen(self) -> list[tuple[str, str]]:
        return [(t, tgt) for texts, _, tgt in self.calls for t in texts]


def english_corpus(n: int = 10, sources: tuple[str, ...] = ("squad", "nq")) -> ParallelCorpus:
    # every third group shares a passage with another group: shared texts are translated once
    return ParallelCorpus.from_records(
        {
            "group": f"g{i}",
            "lang": "en",
            "query": f"question number {i} about topic {i % 4}?",
            "passage": f"Passage {i // 3} says something longer about topic {i // 3}." + " more" * (i // 3),
            "source": sources[i % len(sources)],
        }
        for i in range(n)
    )


# ---------------------------------------------------------------------------------------------- translate_parallel
def test_result_holds_source_rows_and_one_aligned_row_per_group_and_target(tmp_path):
    corpus = english_corpus()
    fake = FakeTranslator()
    out = translate_parallel(corpus, ["de", "zh"], fake, tmp_path, batch_size=4)
    assert out.languages == ["de", "en", "zh"]
    assert sorted(out.groups) == sorted(corpus.groups)
    assert out.num_rows == 3 * len(corpus)
    src = {r["group"]: r for r in corpus.to_records()}
    for rec in out.to_records():
        ref = src[rec["group"]]
        assert rec["source"] == ref["source"]
        if rec["lang"] == "en":
            assert (rec["query"], rec["passage"]) == (ref["query"], ref["passage"])
        else:
            assert rec["query"] == FakeTranslator.expected(ref["query"], rec["lang"])
            assert rec["passage"] == FakeTranslator.expected(ref["passage"], rec["lang"])
    assert not out.report


def test_each_distinct_text_is_translated_once_per_target_in_batches(tmp_path):
    corpus = english_corpus()
    fake = FakeTranslator()
    translate_parallel(corpus, ["de"], fake, tmp_path, batch_size=4)
    distinct = set(corpus.queries) | set(corpus.passages)
    seen = [t for t, _ in fake.texts_seen]
    assert sorted(seen) == sorted(distinct)
    assert all(len(texts) <= 4 for texts, _, _ in fake.calls)
    assert len(fake.calls) == -(-len(distinct) // 4)
    lengths = [len(t) for t in seen]
    assert lengths == sorted(lengths, reverse=True)  # longest first


def test_second_run_is_served_from_the_cache(tmp_path):
    corpus = english_corpus()
    first = translate_parallel(corpus, ["de"], FakeTranslator(), tmp_path)
    again = FakeTranslator()
    second = translate_parallel(corpus, ["de"], again, tmp_path)
    assert again.calls == []
    assert list(second.to_records()) == list(first.to_records())
    # a new target language translates only that language; another translator id starts afresh
    more = FakeTranslator()
    translate_parallel(corpus, ["de", "fr"], more, tmp_path)
    assert {tgt for _, tgt in more.texts_seen} == {"fr"}
    other = FakeTranslator(id="fake-v2")
    translate_parallel(corpus, ["de"], other, tmp_path)
    assert len(other.texts_seen) == len(set(corpus.queries) | set(corpus.passages))


def test_crash_mid_translation_resumes_without_redoing_finished_batches(tmp_path):
    corpus = english_corpus(n=12)
    distinct = set(corpus.queries) | set(corpus.passages)
    crashing = FakeTranslator(fail_on_call=3)
    with pytest.raises(RuntimeError, match="server down"):
        translate_parallel(corpus, ["de"], crashing, tmp_path, batch_size=4)
    done = [t for texts, _, _ in crashing.calls[:2] for t in texts]
    assert len(done) == 8
    with TranslationCache(tmp_path) as cache:
        assert len(cache) == 8  # the two finished batches, not the one in flight
    rerun = FakeTranslator()
    out = translate_parallel(corpus, ["de"], rerun, tmp_path, batch_size=4)
    redone = [t for t, _ in rerun.texts_seen]
    assert not set(redone) & set(done)
    assert sorted(redone + done) == sorted(distinct)
    ref = translate_parallel(corpus, ["de"], FakeTranslator(id="clean"), tmp_path / "clean", batch_size=4)
    assert list(out.to_records()) == list(ref.to_records())


def test_keyboard_interrupt_keeps_finished_batches(tmp_path):
    corpus = english_corpus(n=12)
    with pytest.raises(KeyboardInterrupt):
        translate_parallel(corpus, ["de"], FakeTranslator(fail_on_call=2, exc=KeyboardInterrupt()), tmp_path, batch_size=5)
    with TranslationCache(tmp_path) as cache:
        assert len(cache) == 5


def test_translator_errors_propagate_and_are_never_cached(tmp_path):
    corpus = english_corpus(n=4)
    boom = ValueError("bad request")
    with pytest.raises(ValueError) as info:
        translate_parallel(corpus, ["de"], FakeTranslator(fail_on_call=1, exc=boom), tmp_path)
    assert info.value is boom
    with TranslationCache(tmp_path) as cache:
        assert len(cache) == 0


@pytest.mark.parametrize(
    "bad_output, message",
    [(lambda texts: texts[:-1], "translations for"), (lambda texts: "one string", "expected a list"),
     (lambda texts: [None] * len(texts), "expected str")],
)
def test_malformed_translator_output_is_an_error_and_not_cached(tmp_path, bad_output, message):
    def broken(texts, source_language, target_language):
        return bad_output(texts)

    with pytest.raises(ValueError, match=message):
        translate_parallel(english_corpus(n=4), ["de"], broken, tmp_path, translator_id="broken")
    with TranslationCache(tmp_path) as cache:
        assert len(cache) == 0


def test_anonymous_translators_need_an_explicit_id(tmp_path):
    with pytest.raises(ValueError, match="translator_id"):
        translate_parallel(english_corpus(n=2), ["de"], lambda t, s, g: t, tmp_path)

    def nested(texts, s, t):
        return texts

    with pytest.raises(ValueError, match="no stable name"):
        translator_identity(nested)
    out = translate_parallel(english_corpus(n=2), ["de"], lambda t, s, g: [x + "!" for x in t], tmp_path, translator_id="bang")
    assert out.languages == ["de", "en"]
    assert translator_identity(FakeTranslator(id="x")) == "x"
    assert translator_identity(json.dumps) == "json.dumps"


def test_existing_rows_are_kept_and_only_missing_pairs_translated(tmp_path):
    corpus = ParallelCorpus.from_records([
        {"group": "a", "lang": "en", "query": "Who wrote Faust?", "passage": "Goethe wrote Faust."},
        {"group": "a", "lang": "de", "query": "Wer schrieb Faust?", "passage": "Goethe schrieb Faust."},
        {"group": "b", "lang": "en", "query": "Where is Lima?", "passage": "Lima is in Peru."},
        {"group": "c", "lang": "de", "query": "Wo ist Bonn?", "passage": "Bonn liegt am Rhein."},
    ])
    with pytest.raises(ValueError, match="source_language"):
        translate_parallel(corpus, ["fr"], FakeTranslator(), tmp_path)
    fake = FakeTranslator()
    out = translate_parallel(corpus, ["de"], fake, tmp_path, source_language="en")
    assert sorted(t for t, _ in fake.texts_seen) == ["Lima is in Peru.", "Where is Lima?"]
    rows = {(r["group"], r["lang"]): r["query"] for r in out.to_records()}
    assert rows[("a", "de")] == "Wer schrieb Faust?"
    assert rows[("b", "de")] == FakeTranslator.expected("Where is Lima?", "de")
    assert ("c", "en") not in rows and rows[("c", "de")] == "Wo ist Bonn?"


def test_empty_translations_are_reported_not_kept(tmp_path):
    def drops_short(texts, s, t):
        return ["" if x.startswith("question") else x.upper() for x in texts]  # queries come back empty

    out = translate_parallel(english_corpus(n=3), ["de"], drops_short, tmp_path, translator_id="drops-short")
    assert out.languages == ["en"] and out.num_rows == 3
    assert len(out.report) == 3 and all(i.language == "de" for i in out.report)


def test_bad_arguments_name_the_culprit(tmp_path):
    corpus = english_corpus(n=2)
    with pytest.raises(ValueError, match="'en'"):
        translate_parallel(corpus, ["en"], FakeTranslator(), tmp_path)
    with pytest.raises(ValueError, match="'xx'"):
        translate_parallel(corpus, ["de"], FakeTranslator(), tmp_path, source_language="xx")
    with pytest.raises(ValueError, match="batch_size"):
        translate_parallel(corpus, ["de"], FakeTranslator(), tmp_path, batch_size=0)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "translations.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match="translations.sqlite3"):
        translate_parallel(corpus, ["de"], FakeTranslator(), bad)


def test_cache_is_sqlite_in_wal_mode_storing_digests_only(tmp_path):
    translate_parallel(english_corpus(n=2), ["de"], FakeTranslator(), tmp_path)
    conn = sqlite3.connect(tmp_path / "translations.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tid, src, tgt, key, translation = conn.execute("SELECT * FROM translations LIMIT 1").fetchone()
    assert (tid, src, tgt) == ("fake-v1", "en", "de") and isinstance(key, bytes) and len(key) == 16
    conn.close()


# ------------------------------------------------------------------------------------------------ M2M100Translator
def _reference_translations(tiny_m2m, texts, src: str, tgt: str, max_length: int, max_new_tokens: int) -> list[str]:
    """One text at a time, straight through transformers: no batching, no sorting, no padding."""
    from transformers import M2M100ForConditionalGeneration, M2M100Tokenizer

    tok = M2M100Tokenizer.from_pretrained(str(tiny_m2m))
    model = M2M100ForConditionalGeneration.from_pretrained(str(tiny_m2m)).eval()
    tok.src_lang = src
    lang_ids = set(tok.lang_code_to_id.values())
    out = []
    for text in texts:
        with torch.inference_mode():
            ids = model.generate(**tok([text], truncation=True, max_length=max_length, return_tensors="pt"),
                                 forced_bos_token_id=tok.get_lang_id(tgt), max_new_tokens=max_new_tokens,
                                 num_beams=1, do_sample=False)[0].tolist()
        out.append(tok.decode([i for i in ids if i not in lang_ids], skip_special_tokens=True))
    return out


def test_m2m100_translator_matches_unbatched_generation_in_input_order(tiny_m2m, translator, caplog):
    texts = ["x", "Who wrote Faust?", "Paris is the capital of France and its largest city.", "Москва — столица России.",
             "Wo ist Lima?"]
    with caplog.at_level("WARNING"):
        out = translator(texts, "en", "de")
    assert "1 of 5 texts are longer than max_length=32" in caplog.text
    ref = _reference_translations(tiny_m2m, texts, "en", "de", max_length=32, max_new_tokens=8)
    assert out == ref
    assert len(set(ref)) > 1  # the tiny model's outputs depend on the input, so order is really checked
    assert not any("__de__" in t for t in out)


def test_m2m100_translator_language_codes(translator, tmp_path):
    assert translator.family == "m2m100"
    assert translator.language_code("deu_Latn") == "de"
    with pytest.raises(ValueError, match="'xx'"):
        translator(["hello"], "en", "xx")
    with pytest.raises(ValueError, match="'xx'"):  # checked before any language is translated
        translate_parallel(english_corpus(n=2), ["de", "xx"], translator, tmp_path)
    assert not (tmp_path / "translations.sqlite3").exists() or len(TranslationCache(tmp_path)) == 0
    assert translator([], "en", "de") == []
    assert "beams=1" in translator.id and "max_length=32" in translator.id


def test_nllb_checkpoints_use_flores_codes_through_the_same_interface(tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from sentence_transformers_hybrid.backbones import m2m100_encoder

    path = build_tiny_m2m100(tmp_path / "nllb", tokenizer="nllb")
    nllb = M2M100Translator(str(path), max_length=32, max_new_tokens=6, device="cpu")
    assert nllb.family == "nllb"
    assert (nllb.language_code("de"), nllb.language_code("zho_Hant")) == ("deu_Latn", "zho_Hant")
    with pytest.raises(ValueError, match="'xx'"):
        nllb.language_code("xx")
    texts = ["Who wrote Faust?", "Wer schrieb den Faust?"]
    out = nllb(texts, "en", "de")
    tok = AutoTokenizer.from_pretrained(str(path), src_lang="eng_Latn")
    model = AutoModelForSeq2SeqLM.from_pretrained(str(path)).eval()
    lang_ids = set(tok.convert_tokens_to_ids(["deu_Latn", "eng_Latn"]))
    ref = []
    for text in texts:
        enc = tok([text], return_tensors="pt")
        assert enc["input_ids"][0, 0] == tok.convert_tokens_to_ids("eng_Latn")
        with torch.inference_mode():
            ids = model.generate(**enc, forced_bos_token_id=tok.convert_tokens_to_ids("deu_Latn"), max_new_tokens=6,
                                 num_beams=1, do_sample=False)[0].tolist()
        assert ids[1] == tok.convert_tokens_to_ids("deu_Latn")
        ref.append(tok.decode([i for i in ids if i not in lang_ids], skip_special_tokens=True))
    assert out == ref
    assert m2m100_encoder(path, language="en", device="cpu")[0].tokenizer.src_lang == "eng_Latn"


def test_translate_parallel_with_m2m100_is_cached_and_aligned(tmp_path, tiny_m2m, translator):
    corpus = english_corpus(n=5)
    out = translate_parallel(corpus, ["de"], translator, tmp_path, batch_size=4)
    assert out.languages == ["de", "en"] or len(out.report) > 0  # an empty random output would be reported
    with TranslationCache(tmp_path) as cache:
        assert cache.summary() == [(translator.id, "en", "de", len(set(corpus.queries) | set(corpus.passages)))]
        cached = cache.get(translator.id, "en", "de", corpus.queries)
    for rec in out.to_records():
        if rec["lang"] == "de":
            src_row = corpus.row_index[corpus.groups.index(rec["group"]), 0]
            assert rec["query"] == cached[corpus.queries[src_row]]


# ------------------------------------------------------------------------------------------------------- adapters
SQUAD = {
    "version": "v2.0",
    "data": [
        {"title": "Faust", "paragraphs": [{
            "context": "Faust is a tragic play. It was written by Goethe. It has two parts.",
            "qas": [
                {"id": "q1", "question": "Who wrote Faust?", "answers": [{"text": "Goethe", "answer_start": 42}]},
                {"id": "q2", "question": "How many parts has Faust?", "answers": [{"text": "two", "answer_start": 57}]},
                {"id": "q3", "question": "Who directed Faust?", "answers": [], "is_impossible": True},
            ]}]},
        {"title": "Lima", "paragraphs": [{
            "context": "Lima is the capital of Peru.",
            "qas": [{"id": "q4", "question": "Capital of Peru?", "answers": [{"text": "Lima", "answer_start": 0}]}]}]},
    ],
}


@pytest.fixture
def squad_file(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(SQUAD), encoding="utf-8")
    return path


def test_squad_to_corpus_context_and_sentence_passages(squad_file):
    corpus = squad_to_corpus(squad_file, "en", name="squad")
    recs = {r["group"]: r for r in corpus.to_records()}
    assert sorted(recs) == ["q1", "q2", "q4"]
    assert recs["q1"]["passage"] == SQUAD["data"][0]["paragraphs"][0]["context"]
    assert {r["source"] for r in recs.values()} == {"squad"} and corpus.languages == ["en"]
    assert [i.row for i in corpus.report] == ["q3"] and "unanswerable" in corpus.report.issues[0].reason
    sent = {r["group"]: r["passage"] for r in squad_to_corpus(squad_file, "en", passage="sentence").to_records()}
    assert sent == {"q1": "It was written by Goethe.", "q2": "It has two parts.", "q4": "Lima is the capital of Peru."}


def test_squad_to_corpus_bad_input_names_file_and_question(squad_file, tmp_path):
    with pytest.raises(DataValidationError, match="duplicate question id"):
        squad_to_corpus([squad_file, squad_file], "en")
    bad = json.loads(json.dumps(SQUAD))
    bad["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 999
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"bad\.json.*q4.*answer_start 999"):
        squad_to_corpus(path, "en", passage="sentence")
    assert sorted(squad_to_corpus(path, "en", passage="sentence", strict=False).groups) == ["q1", "q2"]


@pytest.mark.parametrize("q, change, message", [
    (0, {"question": 5}, r"row 'q1', language 'en': 'question' is a number \(5\), expected a string"),
    (0, {"question": "  "}, r"row 'q1', language 'en': empty question"),
    (0, {"id": ""}, r"row 'paragraph 0, question 0', language 'en': question without an id"),
    (1, {"id": "q1"}, r"squad\.json', row 'q1', language 'en': duplicate question id \(also in '.*squad\.json'\)"),
])
def test_squad_to_corpus_shares_the_lareqa_loaders_question_checks(squad_file, q, change, message):
    """The same checks (data.benchmark.checked_question) as the LAReQA loader, and a message naming file and row."""
    bad = json.loads(json.dumps(SQUAD))
    bad["data"][0]["paragraphs"][0]["qas"][q].update(change)
    squad_file.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(DataValidationError, match=message):
        squad_to_corpus(squad_file, "en")


def test_squad_to_corpus_agrees_with_the_lareqa_loader_on_xquad_r(data_dir):
    from sentence_transformers_hybrid.data import load_lareqa

    split = load_lareqa("xquad-r", data_dir=data_dir, languages=["en"], download=False).splits["en"]
    answer = dict(zip(split.question_ids, split.answer_sentence.tolist()))
    path = data_dir / "xquad-r" / "en.json"
    sentences = {r["group"]: r["passage"] for r in squad_to_corpus(path, "en", passage="sentence").to_records()}
    assert sentences == {q: split.sentences[a] for q, a in answer.items()}
    contexts = {r["group"]: r["passage"] for r in squad_to_corpus(path, "en").to_records()}
    assert contexts == {q: split.paragraphs[split.sentence_paragraph[a]] for q, a in answer.items()}
    assert len(contexts) == 1190


def test_pairs_to_corpus_filters_and_reports_what_it_removed(caplog):
    from datasets import Dataset

    ds = Dataset.from_dict({
        "query": ["who wrote faust", "who wrote faust", "where is lima", "", "capital of peru", "q"],
        "answer": ["Goethe wrote Faust.", "Faust is by Goethe.", "Lima is in Peru.", "orphan passage",
                   "x" * 500, "A short query."],
    })
    with caplog.at_level("WARNING"):
        corpus = pairs_to_corpus(ds, "query", "answer", "en", source="nq", min_length=(3, 5), max_length=(100, 200))
    assert corpus.groups == ["nq-0", "nq-2"]
    assert corpus.sources == ["nq"] and corpus.languages == ["en"]
    reasons = {i.row: i.reason for i in corpus.report}
    assert sorted(reasons) == [1, 3, 4, 5]
    assert reasons[1].startswith("duplicate query: same as row 0")
    assert reasons[3].startswith("empty 'query'")
    assert "longer than max_length 200" in reasons[4] and "shorter than min_length 3" in reasons[5]
    assert "removed 4" in caplog.text and "1 x duplicate query" in caplog.text
    pair = pairs_to_corpus(ds, "query", "answer", "en", source="nq", dedup="pair")
    assert "nq-1" in pair.groups
    with pytest.raises(DataValidationError, match="missing column"):
        pairs_to_corpus(ds, "question", "answer", "en")


# ---------------------------------------------------------------------------------------------------- translate_file
def test_translate_file_turns_squad_into_a_parallel_corpus(tmp_path, squad_file, tiny_m2m):
    out_path = tmp_path / "out.jsonl"
    result = translate_file(squad_file, out_path, ["de", "zh"], source_language="en", model_name=str(tiny_m2m),
                            cache_dir=tmp_path / "cache", batch_size=4, max_length=32, device="cpu",
                            source_name="squad-en")
    loaded = load_parallel_jsonl(out_path)
    assert sorted(loaded.groups) == ["q1", "q2", "q4"]
    assert loaded.sources == ["squad-en"]
    assert loaded.num_rows == result.num_rows
    assert set(loaded.languages) <= {"de", "en", "zh"} and "en" in loaded.languages
    # rows dropped for an empty random translation are reported, never silent
    assert loaded.num_rows + sum(i.language in ("de", "zh") for i in result.report) == 9
    assert result.report.issues[0].row == "q3"  # the adapter's report travels with the corpus
    saved = tmp_path / "saved"
    translate_file(out_path, saved, ["fr"], source_language="en", translator=FakeTranslator(), cache_dir=tmp_path / "c2")
    assert "fr" in ParallelCorpus.load_from_disk(saved).languages


def test_translate_file_reads_hf_pair_folders(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"question": ["who wrote faust", "where is lima", "who wrote faust"],
                       "answer": ["Goethe wrote Faust.", "Lima is in Peru.", "Goethe."]}).save_to_disk(str(tmp_path / "nq"))
    fake = FakeTranslator()
    out = translate_file(tmp_path / "nq", tmp_path / "nq.jsonl", ["de"], source_language="en", input_format="hf",
                         query_column="question", passage_column="answer", source_name="nq", translator=fake,
                         cache_dir=tmp_path / "cache")
    assert out.groups == ["nq-0", "nq-1"] and out.sources == ["nq"] and out.languages == ["de", "en"]
    assert len(out.report) == 1  # the duplicate query, removed by pairs_to_corpus and reported
    recs = {(r["group"], r["lang"]): r["passage"] for r in load_parallel_jsonl(tmp_path / "nq.jsonl").to_records()}
    assert recs[("nq-1", "de")] == FakeTranslator.expected("Lima is in Peru.", "de")
    with pytest.raises(ValueError, match="source_language"):
        translate_file(tmp_path / "nq", tmp_path / "x.jsonl", ["de"], input_format="hf", query_column="question",
                       passage_column="answer", translator=fake, cache_dir=tmp_path / "cache")


def test_cli_translate_squad_file(tmp_path, squad_file, tiny_m2m):
    from sentence_transformers_hybrid.cli import main

    out = tmp_path / "cli.jsonl"
    rc = main(["translate", "--input", str(squad_file), "--output", str(out), "--target-languages", "de",
               "--source-language", "en", "--model", str(tiny_m2m), "--cache-dir", str(tmp_path / "cache"),
               "--max-length", "32", "--device", "cpu"])
    assert rc == 0
    corpus = load_parallel_jsonl(out)
    assert sorted(corpus.groups) == ["q1", "q2", "q4"] and "en" in corpus.languages
    with TranslationCache(tmp_path / "cache") as cache:
        assert [row[1:] for row in cache.summary()] == [("en", "de", 5)]  # 3 questions + 2 distinct paragraphs


def test_cli_translated_squad_file_trains_with_the_hybrid_sampler(tmp_path, squad_file, tiny_m2m):
    """The translate issue's end-to-end promise: SQuAD file -> st-hybrid translate -> stock trainer + sampler."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from sentence_transformers_hybrid import HybridBatchSampler
    from sentence_transformers_hybrid.cli import main
    from sentence_transformers_hybrid.testing import tiny_static_model

    out = tmp_path / "cli.jsonl"
    assert main(["translate", "--input", str(squad_file), "--output", str(out), "--target-languages", "de", "zh",
                 "--source-language", "en", "--model", str(tiny_m2m), "--cache-dir", str(tmp_path / "cache"),
                 "--max-length", "32", "--device", "cpu"]) == 0
    corpus = load_parallel_jsonl(out)
    multi = corpus.languages_per_group >= 2
    assert multi.any(), "translation produced no parallel group"
    model = tiny_static_model(corpus.queries + corpus.passages, dim=16, seed=0)
    before = model.encode(corpus.queries[:2])
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "train"), per_device_train_batch_size=2, max_steps=3, learning_rate=0.1,
        report_to="none", save_strategy="no",
        batch_sampler=(factory := HybridBatchSampler.configure(corpus, alpha=0.5, mode="hybrid")),
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=corpus.to_dataset(),
                                         loss=MultipleNegativesRankingLoss(model), callbacks=[factory.callback])
    trainer.train()
    assert trainer.state.global_step == 3
    assert np.abs(model.encode(corpus.queries[:2]) - before).max() > 0


# ------------------------------------------------------------------------------------------------------- backbone
def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al., 2019), feature-space form, in float64."""
    x = np.asarray(x, np.float64) - np.asarray(x, np.float64).mean(0)
    y = np.asarray(y, np.float64) - np.asarray(y, np.float64).mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def test_linear_cka_reference_is_sound():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(x, x @ q * 3.0) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(20, 6))) < 0.6


def test_m2m100_encoder_is_the_seq2seq_encoder_with_mean_pooling(tmp_path, tiny_m2m):
    from sentence_transformers import SentenceTransformer
    from transformers import M2M100ForConditionalGeneration, M2M100Tokenizer

    from sentence_transformers_hybrid.backbones import m2m100_encoder

    model = m2m100_encoder(tiny_m2m, max_seq_length=128, language="de", device="cpu")
    texts = ["Who wrote Faust?", "Lima is the capital of Peru and a large city."]
    emb = model.encode(texts, convert_to_numpy=True)
    # reference: the full seq2seq model's encoder, tokenizer with the German source token, masked mean
    tok = M2M100Tokenizer.from_pretrained(str(tiny_m2m))
    tok.src_lang = "de"
    full = M2M100ForConditionalGeneration.from_pretrained(str(tiny_m2m)).eval()
    batch = tok(texts, return_tensors="pt", padding=True)
    assert (batch["input_ids"][:, 0] == tok.get_lang_id("de")).all()
    with torch.inference_mode():
        hidden = full.get_encoder()(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    # saves with stock modules only and loads back offline, without our package's classes
    model.save(str(tmp_path / "enc"))
    types = [m["type"] for m in json.loads((tmp_path / "enc" / "modules.json").read_text())]
    assert not any("sentence_transformers_hybrid" in t for t in types)
    again = SentenceTransformer(str(tmp_path / "enc"), device="cpu")
    np.testing.assert_allclose(again.encode(texts), emb, atol=1e-6)
    assert again[0].tokenizer.src_lang == "de"
    with pytest.raises(ValueError, match="'xx'"):
        m2m100_encoder(tiny_m2m, language="xx")


def test_m2m100_encoder_trains_with_mnrl_and_gives_cka(tmp_path, tiny_m2m):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from sentence_transformers_hybrid.backbones import m2m100_encoder

    model = m2m100_encoder(tiny_m2m, max_seq_length=32, device="cpu")
    en = ["Who wrote Faust?", "Where is Lima?", "What is the capital of France?", "How hot is boiling water?",
          "Who lives in Weimar?", "What does the fox do?", "Where is Moscow?", "What is Athens?"]
    de = ["Wer schrieb den Faust?", "Wo ist Lima?", "Was ist die Hauptstadt von Frankreich?", "Wie heiß ist Wasser?",
          "Wer lebt in Weimar?", "Was macht der Fuchs?", "Wo ist Moskau?", "Was ist Athen?"]
    data = Dataset.from_dict({"anchor": en, "positive": de})
    loss = MultipleNegativesRankingLoss(model)

    def full_batch_loss() -> float:
        model.eval()
        with torch.no_grad():
            a = torch.tensor(model.encode(en)); p = torch.tensor(model.encode(de))  # noqa: E702
            scores = torch.nn.functional.cosine_similarity(a[:, None], p[None], dim=-1) * loss.scale
            return torch.nn.functional.cross_entropy(scores, torch.arange(len(en))).item()

    before_loss = full_batch_loss()
    cka_before = linear_cka(model.encode(en), model.encode(de))
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=6, per_device_train_batch_size=8, learning_rate=5e-3,
        warmup_steps=0, report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, seed=0,
        dataloader_num_workers=0,
    )
    SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss).train()
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in weights_before.items())
    assert full_batch_loss() < before_loss
    cka_after = linear_cka(model.encode(en), model.encode(de))
    assert 0.0 < cka_before <= 1.0 + 1e-9 and 0.0 < cka_after <= 1.0 + 1e-9
