"""fast_dropout: dropout masks from 64-bit random draws, at the rate and scale of torch's own dropout."""

from __future__ import annotations

import pytest
import torch

from sentence_transformers_hybrid._dropout import bits_dropout, fast_dropout_active
from sentence_transformers_hybrid.losses import hybrid_loss
from sentence_transformers_hybrid.testing import tiny_transformer_model

from test_chunked_loss import ANCHORS, NEGATIVES, POSITIVES, _features


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_rate_scale_and_gradient_are_dropouts(p):
    torch.manual_seed(0)
    x = torch.rand(400, 1000, requires_grad=True)  # an odd-free shape, and 400k elements: rate sd < 0.001
    y = bits_dropout(x, p=p)
    zero = y == 0
    assert float(zero.float().mean()) == pytest.approx(p, abs=0.003)
    torch.testing.assert_close(y[~zero], x[~zero] / (1 - p))
    y.sum().backward()
    torch.testing.assert_close(x.grad, (~zero).float() / (1 - p))
    # both 32-bit halves of a draw are used: the rate holds on the even and on the odd elements alike
    flat = zero.flatten().float()
    assert float(flat[0::2].mean()) == pytest.approx(p, abs=0.004)
    assert float(flat[1::2].mean()) == pytest.approx(p, abs=0.004)
    assert abs(float(torch.corrcoef(torch.stack([flat[0::2], flat[1::2]]))[0, 1])) < 0.01


def test_seeded_edges_and_odd_sizes():
    x = torch.ones(7, 3)
    torch.manual_seed(1)
    a = bits_dropout(x, 0.3)
    torch.manual_seed(1)
    assert torch.equal(a, bits_dropout(x, 0.3))  # the default generator: a seeded run repeats
    assert torch.equal(bits_dropout(x, 0.3, training=False), x) and torch.equal(bits_dropout(x, 0.0), x)
    assert torch.equal(bits_dropout(x, 1.0), torch.zeros_like(x))
    y = x.clone()
    out = bits_dropout(y, 0.5, inplace=True)
    assert out.data_ptr() == y.data_ptr()
    with pytest.raises(ValueError, match="between 0 and 1"):
        bits_dropout(x, 1.5)


def test_only_inside_the_block():
    original = torch.nn.functional.dropout
    with fast_dropout_active():
        assert torch.nn.functional.dropout is bits_dropout
    assert torch.nn.functional.dropout is original
    with fast_dropout_active(False):
        assert torch.nn.functional.dropout is original


@pytest.mark.parametrize("pack", [False, True])
def test_the_loss_drops_at_the_models_rate_and_is_unchanged_without_dropout(tmp_path, pack, monkeypatch):
    from sentence_transformers_hybrid import _dropout

    model = tiny_transformer_model(tmp_path, ANCHORS + POSITIVES + NEGATIVES, max_seq_length=64)
    model[0].auto_model.set_attn_implementation("eager")
    features = _features(model, ANCHORS * 4, POSITIVES * 4)
    fast = hybrid_loss(model, chunk_size=4, pack_tokens=pack, fast_dropout=True)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(features, None), hybrid_loss(model, chunk_size=4)(features, None))
    model.train()
    dropped, calls = [], []
    layers = model[0].auto_model.encoder.layer
    hooks = [layer.output.dropout.register_forward_hook(lambda m, a, out: dropped.append((out == 0).float().mean()))
             for layer in layers]
    real = torch.nn.functional.dropout
    monkeypatch.setattr(_dropout, "bits_dropout", lambda *a, **k: calls.append(1) or bits_dropout(*a, **k))
    try:
        with torch.no_grad():
            value = fast(features, None)
    finally:
        for h in hooks:
            h.remove()
    assert torch.nn.functional.dropout is real  # restored
    assert torch.isfinite(value)
    # every dropout of the forward drew its mask here: embeddings, and per layer attention (per chunk of 4 rows when
    # packed), attention output and output; 2 columns of 48 rows = 12 chunks each
    n = len(layers)
    assert len(calls) == (2 * (1 + n * (12 + 2)) if pack else 2 * 12 * (1 + 3 * n))
    assert float(torch.stack(dropped).mean()) == pytest.approx(0.1, abs=0.02)
    assert fast.training_path()["dropout"].startswith("bits")
    with pytest.raises(ValueError, match="fast_dropout=True needs chunk_size"):
        hybrid_loss(model, fast_dropout=True)
