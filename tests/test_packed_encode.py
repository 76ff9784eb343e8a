"""encode_packed: inference with no padding outside attention gives model.encode's vectors (issue 24, item 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentence_transformers_hybrid._packed import encode_packed
from sentence_transformers_hybrid.models.frozen import open_embedding_cache
from sentence_transformers_hybrid.testing import tiny_static_model, tiny_transformer_model

TEXTS = ["the cat sat on the mat", "a dog", "birds fly south in winter", "hi", "der Hund lief schnell nach Hause",
         "le chat noir dort", "el perro", "query: where do birds fly in winter and why do they come back"]


@pytest.fixture(scope="module", params=["bert", "xlm-roberta"])
def model(request, tmp_path_factory):
    return tiny_transformer_model(tmp_path_factory.mktemp(request.param), TEXTS, max_seq_length=64,
                                  model_type=request.param).eval()


@pytest.mark.parametrize(("batch_size", "chunk_size"), [(3, 2), (8, 16), (1, 1), (5, 3)])
def test_vectors_equal_model_encode(model, batch_size, chunk_size):
    texts = [t * (1 + i % 3) for i, t in enumerate(TEXTS)]  # several lengths, a last batch shorter than the others
    want = model.encode(texts, convert_to_tensor=True)
    got = encode_packed(model, texts, batch_size=batch_size, chunk_size=chunk_size)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    normalized = encode_packed(model, texts, batch_size=batch_size, chunk_size=chunk_size, normalize_embeddings=True)
    torch.testing.assert_close(normalized, torch.nn.functional.normalize(want, dim=-1), atol=1e-5, rtol=1e-5)


def test_truncation_at_max_seq_length_and_the_model_mode_restored(model):
    long = " ".join(TEXTS * 4)
    model.max_seq_length, before = 12, model.max_seq_length
    try:
        model.train()  # dropout must not act on the vectors, and the caller's mode comes back
        got = encode_packed(model, [long, "hi"], batch_size=2, chunk_size=1)
        assert model.training
        model.eval()
        torch.testing.assert_close(got, model.encode([long, "hi"], convert_to_tensor=True), atol=1e-5, rtol=1e-5)
    finally:
        model.max_seq_length = before
        model.eval()


def test_refusals_name_the_reason(model):
    with pytest.raises(ValueError, match="no texts"):
        encode_packed(model, [])
    static = tiny_static_model(TEXTS)
    with pytest.raises(ValueError, match="cannot be packed: the model's first module"):
        encode_packed(static, TEXTS)
    tokenizer = model.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        with pytest.raises(ValueError, match="pads on the left"):
            encode_packed(model, TEXTS)
    finally:
        tokenizer.padding_side = side


def test_embedding_cache_stores_the_packed_vectors(model, tmp_path):
    texts = [t * (1 + i % 2) for i, t in enumerate(TEXTS)]
    cache = open_embedding_cache(tmp_path / "c", model, shard_size=3)
    cache.use_packed_encoding(model, chunk_size=2)
    assert cache.encoding_path() == {"encoding": "packed", "chunk_size": 2}
    np.testing.assert_allclose(cache.encode(model, texts, batch_size=3), model.encode(texts), rtol=1e-5, atol=1e-5)
    cache.use_bucketed_encoding(model, compile_encoder=False)  # the last choice wins
    assert cache.encoding_path()["encoding"] == "bucketed"
    with pytest.raises(ValueError, match="cannot be packed"):
        open_embedding_cache(tmp_path / "s", tiny_static_model(TEXTS)).use_packed_encoding(tiny_static_model(TEXTS))


def test_inference_attention_takes_torch_fused_kernel_not_the_math_path(model):
    """encode_packed's attention goes through scaled_dot_product_attention's fused kernel (a mask of another rank
    silently sends torch to its unfused math path: softmax, bmm and masks materialised, measured ~2x slower)."""
    from torch.profiler import profile

    with profile() as prof:
        encode_packed(model, TEXTS, batch_size=4, chunk_size=2)
    names = {e.key for e in prof.key_averages()}
    assert "aten::scaled_dot_product_attention" in names
    assert "aten::_scaled_dot_product_attention_math" not in names, sorted(n for n in names if "attention" in n)
