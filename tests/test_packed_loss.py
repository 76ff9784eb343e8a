"""pack_tokens: each column one unpadded sequence; the chunked (and so the stock) loss's value and gradients."""

from __future__ import annotations

import logging

import pytest
import torch

from sentence_transformers_hybrid import _packed
from sentence_transformers_hybrid.losses import LengthSortedMultipleNegativesRankingLoss, hybrid_loss
from sentence_transformers_hybrid.testing import tiny_static_model, tiny_transformer_model

from test_chunked_loss import ANCHORS, NEGATIVES, POSITIVES, _assert_same, _features


@pytest.fixture(scope="module", params=["bert", "xlm-roberta"])
def model(request, tmp_path_factory):
    model = tiny_transformer_model(tmp_path_factory.mktemp(request.param), ANCHORS + POSITIVES + NEGATIVES,
                                   max_seq_length=64, model_type=request.param)
    model[0].auto_model.set_attn_implementation("eager")
    return model


@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_value_and_every_gradient_equal_the_chunked_and_the_stock_loss(model, chunk_size):
    model.eval()  # dropout off: both paths must compute the same network
    features = _features(model, ANCHORS, POSITIVES)
    packed = hybrid_loss(model, chunk_size=chunk_size, pack_tokens=True)
    _assert_same(model, hybrid_loss(model, chunk_size=chunk_size), packed, features)
    _assert_same(model, hybrid_loss(model), packed, features)
    path = packed.training_path()
    assert path["packed"] is True and path["path"] == "packed" and path["pack_problem"] is None
    assert path["packed_columns"] >= 2
    assert model[0].auto_model.config._attn_implementation == "eager"  # restored after the forward


def test_symmetric_loss_with_hard_negatives_is_unchanged(model):
    model.eval()
    stock = hybrid_loss(model, symmetric=True)
    packed = LengthSortedMultipleNegativesRankingLoss(model, chunk_size=3, pack_tokens=True,
                                                      directions=stock.directions, partition_mode=stock.partition_mode)
    _assert_same(model, stock, packed, _features(model, ANCHORS, POSITIVES, NEGATIVES))


def test_the_model_sees_one_row_of_real_tokens_and_attention_in_chunks(model, monkeypatch):
    model.eval()
    features = _features(model, ANCHORS, POSITIVES)
    seen = []
    real = _packed.packed_attention

    def spy(module, query, key, value, attention_mask, **kwargs):
        plan = _packed._PLAN.get()
        seen.append((tuple(query.shape), [int(c.valid.sum()) for c in plan.chunks], attention_mask))
        return real(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(_packed, "packed_attention", spy)
    monkeypatch.setitem(__import__("transformers").AttentionInterface._global_mapping, _packed.PACKED_ATTENTION, spy)
    monkeypatch.setattr(_packed, "register_packed_attention", lambda: None)
    with torch.no_grad():
        hybrid_loss(model, chunk_size=5, pack_tokens=True)(features, None)
    layers = model[0].auto_model.config.num_hidden_layers
    tokens = [int(f["attention_mask"].sum()) for f in features]
    assert len(seen) == 2 * layers
    for (shape, per_chunk, mask), total in zip(seen[::layers], tokens):
        assert shape[0] == 1 and shape[2] == total  # one packed row, no padding
        assert sum(per_chunk) == total and len(per_chunk) == 3  # 12 rows in chunks of 5, 5, 2
        assert mask is None  # no (tokens x tokens) mask is built
    assert max(tokens) < sum(f["attention_mask"].numel() for f in features) / 2  # the batches were mostly padding


def test_dropout_stays_on_at_the_models_rate(model):
    """Training mode: the hidden dropout drops the same share of the packed activations."""
    model.train()
    p = model[0].auto_model.config.hidden_dropout_prob
    assert p == pytest.approx(0.1)
    features = _features(model, ANCHORS * 4, POSITIVES * 4)
    dropped = []
    layers = model[0].auto_model.encoder.layer
    hooks = [layer.output.dropout.register_forward_hook(lambda m, a, out: dropped.append((out == 0).float().mean()))
             for layer in layers]
    try:
        with torch.no_grad():
            value = hybrid_loss(model, chunk_size=4, pack_tokens=True)(features, None)
    finally:
        for h in hooks:
            h.remove()
    assert torch.isfinite(value)
    assert len(dropped) == 2 * len(layers)  # one packed forward per column
    assert float(torch.stack(dropped).mean()) == pytest.approx(p, abs=0.02)
    model.eval()


def test_left_padding_stays_on_the_chunked_path(model):
    model.eval()
    features = _features(model, ANCHORS, POSITIVES)
    flipped = [{k: (v.flip(1) if k in ("input_ids", "attention_mask", "token_type_ids") else v) for k, v in f.items()}
               for f in features]
    loss = hybrid_loss(model, chunk_size=4, pack_tokens=True)
    with torch.no_grad():
        loss(flipped, None)
    assert loss.training_path()["packed"] is False


def test_a_model_that_cannot_be_packed_is_named_and_trains_chunked(caplog):
    model = tiny_static_model(ANCHORS + POSITIVES)
    problem = _packed.packing_problem(model)
    assert problem and "Transformer" in problem
    with caplog.at_level(logging.WARNING, logger="sentence_transformers_hybrid.losses"):
        loss = hybrid_loss(model, chunk_size=4, pack_tokens=True)
    assert problem in caplog.text
    value = loss(_features(model, ANCHORS, POSITIVES), None)
    torch.testing.assert_close(value, hybrid_loss(model)(_features(model, ANCHORS, POSITIVES), None))
    path = loss.training_path()
    assert path["packed"] is False and path["pack_problem"] == problem


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="pack_tokens=True needs chunk_size"):
        hybrid_loss(model, pack_tokens=True)
    with pytest.raises(ValueError, match="give one of the two"):
        hybrid_loss(model, chunk_size=4, pack_tokens=True, compile_encoder=True)
    plan = _packed.PackingPlan.build(torch.tensor([2, 1]), chunk_size=2)
    q = torch.zeros(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="outside packed_attention_active"):
        _packed.packed_attention(torch.nn.Module(), q, q, q, None)
    with _packed.packed_attention_active(model, plan), pytest.raises(RuntimeError, match="one packed row of 3"):
        _packed.packed_attention(torch.nn.Module(), q[:, :, :2], q[:, :, :2], q[:, :, :2], None)
