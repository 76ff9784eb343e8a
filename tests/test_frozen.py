"""The frozen-encoder path: the on-disk embedding cache, the lookup module and the composed model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import StaticEmbedding
from tokenizers import Tokenizer, models, pre_tokenizers

from sentence_transformers_hybrid.frozen import EmbeddingCache, compose_with_encoder, lookup_head_model

TEXTS = ["the cat sat", "a dog ran far", "der Hund lief", "le chat noir", "query: the cat sat", "el perro corre"]


def tiny_static_model(dim: int = 8, seed: int = 0) -> SentenceTransformer:
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]"] + sorted({w for t in TEXTS for w in t.split()}))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_padding(pad_id=1, pad_token="[PAD]")
    torch.manual_seed(seed)
    return SentenceTransformer(modules=[StaticEmbedding(tok, embedding_dim=dim)], device="cpu")


class CountingModel:
    """Wraps a model and counts the texts it encodes."""

    def __init__(self, model, fail_after: int | None = None):
        self.model, self.calls, self.fail_after = model, 0, fail_after

    def encode(self, texts, **kw):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += len(texts)
        return self.model.encode(texts, **kw)


def test_cache_returns_the_model_vectors_and_encodes_each_text_once(tmp_path):
    model = tiny_static_model()
    counting = CountingModel(model)
    cache = EmbeddingCache(tmp_path, model_id="tiny", shard_size=2)
    vecs = cache.encode(counting, TEXTS + TEXTS[:2])
    np.testing.assert_allclose(vecs, model.encode(TEXTS + TEXTS[:2]), rtol=1e-6)
    assert counting.calls == len(TEXTS)
    cache.encode(counting, TEXTS)
    assert counting.calls == len(TEXTS)


def test_cache_resumes_after_an_interruption(tmp_path):
    model = tiny_static_model()
    interrupted = CountingModel(model, fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingCache(tmp_path, model_id="tiny", shard_size=2).encode(interrupted, TEXTS)
    again = CountingModel(model)
    vecs = EmbeddingCache(tmp_path, model_id="tiny", shard_size=2).encode(again, TEXTS)
    assert again.calls == len(TEXTS) - 4  # the two finished shards were kept
    np.testing.assert_allclose(vecs, model.encode(TEXTS), rtol=1e-6)


def test_cache_refuses_another_model(tmp_path):
    EmbeddingCache(tmp_path, model_id="a").encode(tiny_static_model(), TEXTS[:1])
    with pytest.raises(ValueError, match="belongs to model 'a'"):
        EmbeddingCache(tmp_path, model_id="b")


def test_lookup_model_equals_encoder_at_init_and_composed_model_equals_trained_head(tmp_path):
    encoder = tiny_static_model()
    encoder.save(str(tmp_path / "enc"))
    vecs = encoder.encode(TEXTS)
    head = lookup_head_model(TEXTS, vecs)
    # identity head + normalize == normalized encoder output
    expected = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    np.testing.assert_allclose(head.encode(TEXTS), expected, rtol=1e-5, atol=1e-6)
    # prompts are prepended before the lookup, exactly like the collator does
    np.testing.assert_allclose(head.encode(["the cat sat"], prompt="query: "), expected[4:5], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        head[1].linear.weight.mul_(2.0).add_(0.1)
    trained = head.encode(TEXTS)
    path = compose_with_encoder(str(tmp_path / "enc"), head, tmp_path / "composed")
    composed = SentenceTransformer(path, device="cpu")
    np.testing.assert_allclose(composed.encode(TEXTS), trained, rtol=1e-5, atol=1e-6)


def test_lookup_of_an_unknown_text_names_it():
    head = lookup_head_model(TEXTS, np.ones((len(TEXTS), 4), dtype=np.float32))
    with pytest.raises(KeyError, match="not precomputed"):
        head.encode(["never seen"])


# ------------------------------------------------------------------------------------------ cache keys and faults
from sentence_transformers_hybrid.models.frozen import (  # noqa: E402
    EmbeddingCacheError,
    model_fingerprint,
    open_embedding_cache,
)
from sentence_transformers_hybrid.testing import tiny_static_model as tiny_model, tiny_transformer_model  # noqa: E402


def _frozen_backbone(tmp_path, data_dir, model_path, **preset_fields):
    from sentence_transformers_hybrid.experiment import PRESETS, FrozenE5Backbone, Preset, load_data

    preset = Preset(**{**PRESETS["cpu"].to_dict(), "train_languages": ["de", "en"], "eval_languages": ["de", "en"],
                       "max_train_groups": 40, "max_eval_questions": 20, "max_seq_length": 32, **preset_fields})
    corpus, bench = load_data(preset, data_dir)
    return FrozenE5Backbone(preset, corpus, bench, tmp_path / "out", device="cpu", model_path=str(model_path))


def test_two_models_in_folders_of_the_same_name_get_their_own_vectors(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("STH_CACHE_DIR", str(tmp_path / "cache"))
    texts = ["query: a b", "passage: c d"]
    for run, seed in (("a", 0), ("b", 1)):  # runs/a/hybrid and runs/b/hybrid: same folder name, other weights
        tiny_transformer_model(tmp_path / "tok", TEXTS + texts, seed=seed).save(str(tmp_path / "runs" / run / "hybrid"))
    first = _frozen_backbone(tmp_path, data_dir, tmp_path / "runs" / "a" / "hybrid")
    second = _frozen_backbone(tmp_path, data_dir, tmp_path / "runs" / "b" / "hybrid")
    encoder_b = SentenceTransformer(str(tmp_path / "runs" / "b" / "hybrid"), device="cpu")
    encoder_b.max_seq_length = 32
    fresh = encoder_b.encode(second.texts)
    np.testing.assert_allclose(second.vectors, fresh, rtol=1e-6, atol=1e-6)
    assert second.cache.encoding_path()["encoding"] == "packed"  # a BERT encoder: no padding outside attention
    assert np.abs(first.vectors - second.vectors).max() > 1e-3
    assert first.cache.dir != second.cache.dir and first.cache.dir.name.startswith("hybrid-")
    meta = json.loads((second.cache.dir / "index.json").read_text())
    assert meta["settings"]["model"] == model_fingerprint(tmp_path / "runs" / "b" / "hybrid")
    assert meta["settings"]["max_seq_length"] == 32 and meta["model_path"].endswith("b/hybrid")
    # the same model and settings again (a rerun) reuse the cache: nothing is encoded twice
    again = _frozen_backbone(tmp_path, data_dir, tmp_path / "runs" / "b" / "hybrid")
    assert again.cache.dir == second.cache.dir and len(again.cache) == len(second.cache)


def test_cache_key_covers_model_content_length_prompts_normalisation_and_dtype(tmp_path):
    model = tiny_transformer_model(tmp_path / "tok", TEXTS, seed=0)
    model.save(str(tmp_path / "m"))
    model.save(str(tmp_path / "copy" / "m"))

    def folder(path=tmp_path / "m", **kw):
        m = SentenceTransformer(str(path), device="cpu")
        m.max_seq_length = kw.pop("max_seq_length", 128)
        return open_embedding_cache(tmp_path / "c", m, model_path=path, **kw).dir

    base = folder()
    assert folder(tmp_path / "copy" / "m") == base  # same content elsewhere: same cache
    variants = [folder(max_seq_length=64), folder(prompts={"query": "query: "}), folder(normalize_embeddings=True),
                folder(dtype="bfloat16")]
    assert len({base, *variants}) == 5
    with pytest.raises(ValueError, match="dtype must be one of"):
        folder(dtype="int8")


def test_reopening_a_cache_with_other_settings_names_the_fields(tmp_path):
    model = tiny_transformer_model(tmp_path / "tok", TEXTS, seed=0)
    cache = open_embedding_cache(tmp_path, model, name="m")
    cache.encode(model, TEXTS[:2])
    other = dict(cache.settings, normalize_embeddings=True, dtype="bfloat16")
    with pytest.raises(EmbeddingCacheError, match=r"dtype: cached 'float32', now 'bfloat16'.*normalize_embeddings"):
        EmbeddingCache(cache.dir, model_id=cache.model_id, settings=other)
    with pytest.raises(ValueError, match="normalize_embeddings=False"):
        cache.encode(model, ["not cached yet"], normalize_embeddings=True)
    model.max_seq_length = 7
    with pytest.raises(ValueError, match="max_seq_length=64; the model passed has max_seq_length=7"):
        cache.encode(model, ["not cached yet"])


def test_normalised_cache_stores_unit_vectors(tmp_path):
    model = tiny_model(TEXTS, dim=8, seed=0)
    vecs = open_embedding_cache(tmp_path, model, normalize_embeddings=True).encode(model, TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vecs, model.encode(TEXTS, normalize_embeddings=True), rtol=1e-5, atol=1e-6)


def test_bfloat16_cache_holds_what_an_autocast_encode_gives(tmp_path):
    model = tiny_transformer_model(tmp_path / "tok", TEXTS * 3, seed=0)
    vecs = open_embedding_cache(tmp_path / "c", model, dtype="bfloat16").encode(model, TEXTS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = model.encode(TEXTS, convert_to_tensor=True).float().numpy()
    np.testing.assert_array_equal(vecs, want)
    assert np.abs(vecs - model.encode(TEXTS)).max() > 0  # bf16 really was used, hence its own cache


def test_corrupt_index_is_a_clear_error_and_rebuild_moves_it_aside(tmp_path):
    EmbeddingCache(tmp_path, model_id="tiny").encode(tiny_static_model(), TEXTS[:2])
    (tmp_path / "index.json").write_text('{"model_id": "tiny", "shards": [', encoding="utf-8")  # truncated
    with pytest.raises(EmbeddingCacheError, match=r"index\.json.*corrupt.*delete the folder.*rebuild=True"):
        EmbeddingCache(tmp_path, model_id="tiny")
    (tmp_path / "index.json").write_text('{"model_id": "tiny", "shards": 1, "keys": {"k": [3, 0]}}')
    with pytest.raises(EmbeddingCacheError, match="point to no shard"):
        EmbeddingCache(tmp_path, model_id="tiny")
    cache = EmbeddingCache(tmp_path, model_id="tiny", rebuild=True)
    assert len(cache) == 0 and (tmp_path / "index.json.corrupt").is_file()
    model = tiny_static_model()
    np.testing.assert_allclose(cache.encode(model, TEXTS), model.encode(TEXTS), rtol=1e-6)


def test_a_missing_shard_is_named(tmp_path):
    EmbeddingCache(tmp_path, model_id="tiny").encode(tiny_static_model(), TEXTS[:2])
    shard = next(tmp_path.glob("shard-*.npy"))
    shard.unlink()
    with pytest.raises(EmbeddingCacheError, match=shard.name):
        EmbeddingCache(tmp_path, model_id="tiny").lookup(TEXTS[:1])


class NaNModel(CountingModel):
    def encode(self, texts, **kw):
        out = self.model.encode(texts, **kw)
        out = out.clone() if hasattr(out, "clone") else out.copy()
        for i, t in enumerate(texts):
            if t == "le chat noir":
                out[i, 0] = float("nan")
        return out


def test_non_finite_vectors_are_never_cached(tmp_path):
    model = tiny_static_model()
    cache = EmbeddingCache(tmp_path, model_id="tiny", shard_size=2)
    with pytest.raises(ValueError, match=r"non-finite.*text 3 of the texts passed \('le chat noir'\)"):
        cache.encode(NaNModel(model), TEXTS)
    reopened = EmbeddingCache(tmp_path, model_id="tiny", shard_size=2)
    assert len(reopened) == 2 and "le chat noir" not in reopened  # the shard before it only
    assert np.isfinite(reopened.encode(model, TEXTS)).all()


def test_two_caches_filling_one_folder_keep_each_others_vectors(tmp_path):
    model = tiny_static_model()
    a = EmbeddingCache(tmp_path, model_id="tiny", shard_size=2)
    b = EmbeddingCache(tmp_path, model_id="tiny", shard_size=2)  # e.g. two experiments at once
    a.encode(model, TEXTS[:2])
    b.encode(model, TEXTS[2:])
    reopened = EmbeddingCache(tmp_path, model_id="tiny")
    assert len(reopened) == len(TEXTS)
    np.testing.assert_allclose(reopened.lookup(TEXTS), model.encode(TEXTS), rtol=1e-6)


def test_a_cache_of_the_numbered_shard_layout_still_opens(tmp_path):
    model = tiny_static_model()
    vecs = model.encode(TEXTS[:2]).astype(np.float32)
    np.save(tmp_path / "shard-00000.npy", vecs)
    from sentence_transformers_hybrid.models.frozen import text_key

    (tmp_path / "index.json").write_text(json.dumps(
        {"model_id": "tiny", "shards": 1, "keys": {text_key(t): [0, i] for i, t in enumerate(TEXTS[:2])}}))
    cache = EmbeddingCache(tmp_path, model_id="tiny")
    np.testing.assert_array_equal(cache.lookup(TEXTS[:2]), vecs)
    cache.encode(model, TEXTS)
    np.testing.assert_allclose(EmbeddingCache(tmp_path, model_id="tiny").lookup(TEXTS), model.encode(TEXTS), rtol=1e-6)


# ------------------------------------------------------------------------------------------ encode options in the key
def test_a_vector_cached_with_one_prompt_is_never_returned_for_another(tmp_path):
    model = tiny_static_model()
    cache = EmbeddingCache(tmp_path, model_id="tiny")
    plain = cache.encode(model, ["the cat sat"])
    prompted = cache.encode(model, ["the cat sat"], prompt="query: ")
    np.testing.assert_allclose(prompted, model.encode(["the cat sat"], prompt="query: "), rtol=1e-6)
    assert np.abs(prompted - plain).max() > 1e-3
    reopened = EmbeddingCache(tmp_path, model_id="tiny")  # both are on disk, each under its own key
    np.testing.assert_array_equal(reopened.encode(model, ["the cat sat"], prompt="query: "), prompted)
    np.testing.assert_array_equal(reopened.encode(model, ["the cat sat"]), plain)


def test_a_prompt_name_is_keyed_by_the_prompt_text_it_resolves_to(tmp_path):
    model = tiny_static_model()
    model.prompts = {"query": "query: ", "other": "le chat "}
    counting = CountingModel(model)
    counting.prompts = model.prompts
    cache = EmbeddingCache(tmp_path, model_id="tiny")
    by_name = cache.encode(counting, TEXTS[:2], prompt_name="query")
    by_text = cache.encode(counting, TEXTS[:2], prompt="query: ")  # the same input: encoded once
    assert counting.calls == 2
    np.testing.assert_array_equal(by_name, by_text)
    np.testing.assert_allclose(cache.encode(counting, TEXTS[:2], prompt_name="other"),
                               model.encode(TEXTS[:2], prompt="le chat "), rtol=1e-6)
    with pytest.raises(ValueError, match="prompt_name 'nope'.*'query', 'other'"):
        cache.encode(counting, TEXTS[:1], prompt_name="nope")


def test_truncate_dim_and_normalisation_are_part_of_the_key(tmp_path):
    model = tiny_static_model()
    cache = EmbeddingCache(tmp_path, model_id="tiny")
    full = cache.encode(model, TEXTS)
    short = cache.encode(model, TEXTS, truncate_dim=4)
    unit = cache.encode(model, TEXTS, normalize_embeddings=True)
    assert full.shape == (len(TEXTS), 8) and short.shape == (len(TEXTS), 4)
    np.testing.assert_allclose(short, full[:, :4], rtol=1e-6)
    np.testing.assert_allclose(unit, model.encode(TEXTS, normalize_embeddings=True), rtol=1e-5, atol=1e-6)
    assert np.abs(unit - full).max() > 1e-3
    # the model's own truncate_dim is what a call without the option gets: a default, not another key
    model.truncate_dim = 4
    counting = CountingModel(model)
    counting.truncate_dim = 4
    cache4 = EmbeddingCache(tmp_path / "t", model_id="tiny-4")
    np.testing.assert_array_equal(cache4.encode(counting, TEXTS), cache4.encode(counting, TEXTS, truncate_dim=4))
    assert counting.calls == len(TEXTS)


def test_options_the_cache_cannot_key_are_refused_by_name(tmp_path):
    model = tiny_static_model()
    cache = EmbeddingCache(tmp_path, model_id="tiny")
    with pytest.raises(ValueError, match="precision='int8'"):
        cache.encode(model, TEXTS, precision="int8")
    with pytest.raises(ValueError, match="output_value='token_embeddings'"):
        cache.encode(model, TEXTS, output_value="token_embeddings")
    with pytest.raises(ValueError, match="processing_kwargs"):
        cache.encode(model, TEXTS, processing_kwargs={"text": {"max_length": 2}})
    assert len(cache) == 0
    # options that do not change the vectors pass through, under the plain key
    np.testing.assert_allclose(cache.encode(model, TEXTS, device="cpu", precision="float32"), model.encode(TEXTS),
                               rtol=1e-6)
    assert all(t in cache for t in TEXTS)


def test_bucketed_encoding_gives_the_model_encode_vectors(tmp_path):
    """issue 24: the cache's bucketed path (fixed rows, widths padded to buckets) stores model.encode's vectors."""
    model = tiny_transformer_model(tmp_path / "tok", TEXTS * 3, seed=0).eval()
    texts = [t * (1 + i % 3) for i, t in enumerate(TEXTS)]  # several widths, a last batch shorter than the others
    cache = open_embedding_cache(tmp_path / "c", model, shard_size=5)
    cache.use_bucketed_encoding(model, compile_encoder=False)  # the compiled layers have their own test
    vecs = cache.encode(model, texts, batch_size=3)
    np.testing.assert_allclose(vecs, model.encode(texts), rtol=1e-5, atol=1e-5)
    assert cache.encoding_path()["encoding"] == "bucketed"
    assert open_embedding_cache(tmp_path / "d", model).encoding_path() == {"encoding": "model.encode"}
    bf16 = open_embedding_cache(tmp_path / "e", model, dtype="bfloat16")
    bf16.use_bucketed_encoding(model, compile_encoder=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = model.encode(texts, convert_to_tensor=True).float().numpy()
    np.testing.assert_allclose(bf16.encode(model, texts, batch_size=3), want, atol=3e-2)
