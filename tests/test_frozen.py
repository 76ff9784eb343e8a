"""The frozen-encoder path: the on-disk embedding cache, the lookup module and the composed model."""

from __future__ import annotations

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
