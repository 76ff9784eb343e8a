"""LengthSortedMultipleNegativesRankingLoss: the stock MNRL's value and gradients, from length-sorted chunks."""

from __future__ import annotations

import copy

import pytest
import torch

from sentence_transformers_hybrid.losses import LengthSortedMultipleNegativesRankingLoss, hybrid_loss
from sentence_transformers_hybrid.testing import tiny_transformer_model

WORDS = "who wrote faust goethe weimar paris capital france river city lima peru boiling water degrees sea".split()


def _text(i: int, n_words: int) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(n_words))


# very different lengths, in no order: 1 to 40 words (the positives in another order than the anchors)
ANCHOR_WORDS = [3, 1, 25, 2, 9, 40, 1, 6, 14, 2, 33, 5]
POSITIVE_WORDS = [30, 2, 1, 12, 4, 1, 38, 7, 3, 20, 2, 9]
ANCHORS = [_text(i, n) for i, n in enumerate(ANCHOR_WORDS)]
POSITIVES = [_text(i + 3, n) for i, n in enumerate(POSITIVE_WORDS)]
NEGATIVES = [_text(i + 5, n) for i, n in enumerate(reversed(ANCHOR_WORDS))]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    model = tiny_transformer_model(tmp_path_factory.mktemp("tiny"), ANCHORS + POSITIVES + NEGATIVES,
                                   max_seq_length=64)
    return model.eval()  # dropout off: the chunked and the padded forwards must see the same network


def _features(model, *columns):
    return [model.preprocess(list(c)) for c in columns]


def _loss_and_grads(model, loss, features):
    model.zero_grad(set_to_none=True)
    value = loss(features, None)
    value.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return value.detach(), grads


def _assert_same(model, stock, chunked, features):
    ref_value, ref_grads = _loss_and_grads(model, stock, features)
    value, grads = _loss_and_grads(model, chunked, features)
    assert value.dtype == ref_value.dtype
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    # every parameter has a gradient (word embeddings included), except BERT's pooler, which mean pooling never uses
    assert {n for n, _ in model.named_parameters() if ".pooler." not in n} <= grads.keys()
    # float32 sums in another order: the error scales with the tensor's magnitude (the token-type embedding's
    # gradient sums every token's, ~10 in size, so its small entries are off by a few 1e-6); a float64 model's
    # rounding is ~1e-9 of float32's, so its tolerances are 1e-6 of these
    tighter = 1e-6 if value.dtype == torch.float64 else 1.0
    for name, ref in ref_grads.items():
        atol = tighter * 1e-6 * max(1.0, float(ref.abs().max()))
        torch.testing.assert_close(grads[name], ref, rtol=tighter * 1e-4, atol=atol, msg=name)


def test_hybrid_loss_chunk_size_none_is_the_stock_loss(model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    assert type(hybrid_loss(model)) is MultipleNegativesRankingLoss
    loss = hybrid_loss(model, chunk_size=16, symmetric=True)
    assert isinstance(loss, LengthSortedMultipleNegativesRankingLoss)
    assert (loss.chunk_size, loss.scale, loss.directions) == (16, 20.0, ("query_to_doc", "doc_to_query"))
    assert loss.get_config_dict()["chunk_size"] == 16 and loss.get_config_dict()["embed_once"] is True
    assert loss.get_config_dict()["partition_mode"] == "per_direction"


@pytest.mark.parametrize("embed_once", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_value_and_every_gradient_equal_the_padded_stock_loss(model, chunk_size, embed_once):
    stock = hybrid_loss(model)
    chunked = LengthSortedMultipleNegativesRankingLoss(model, chunk_size=chunk_size, embed_once=embed_once)
    _assert_same(model, stock, chunked, _features(model, ANCHORS, POSITIVES))


@pytest.mark.parametrize("embed_once", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_symmetric_loss_with_hard_negatives_is_unchanged(model, chunk_size, embed_once):
    stock = hybrid_loss(model, symmetric=True)
    chunked = LengthSortedMultipleNegativesRankingLoss(
        model, chunk_size=chunk_size, embed_once=embed_once, directions=stock.directions,
        partition_mode=stock.partition_mode)
    _assert_same(model, stock, chunked, _features(model, ANCHORS, POSITIVES, NEGATIVES))


def test_the_comparison_sees_a_misordered_batch(model):
    """The batches are sensitive to order: embeddings left in sorted order would fail the tests above."""
    stock = hybrid_loss(model)
    features = _features(model, ANCHORS, POSITIVES)
    with torch.no_grad():
        right = stock(features, None)
        anchor = model(dict(features[0]))["sentence_embedding"]
        positive = model(dict(features[1]))["sentence_embedding"]
        order = torch.sort(features[1]["attention_mask"].sum(1), descending=True, stable=True).indices
        wrong = stock.compute_loss_from_embeddings([anchor, positive[order]], None)
    assert not torch.equal(order, torch.arange(len(POSITIVES)))
    assert abs(float(wrong) - float(right)) > 1e-2


def test_chunks_are_cut_to_their_own_longest_sequence(model):
    widths = []
    handle = model[0].register_forward_pre_hook(
        lambda _, args: widths.append(tuple(args[0]["attention_mask"].shape)))
    try:
        features = _features(model, ANCHORS, POSITIVES)
        padded = [tuple(f["input_ids"].shape) for f in features]
        with torch.no_grad():
            hybrid_loss(model, chunk_size=3)(features, None)
    finally:
        handle.remove()
    lengths = [sorted(f["attention_mask"].sum(1).tolist(), reverse=True) for f in features]
    expected = [(len(chunk), chunk[0]) for col in lengths for chunk in (col[i : i + 3] for i in range(0, 12, 3))]
    assert widths == expected  # 4 chunks per column, each as wide as its longest row
    assert sum(r * w for r, w in widths) < 0.7 * sum(r * w for r, w in padded)
    # the caller's features are not modified
    assert [tuple(f["input_ids"].shape) for f in features] == padded
    assert "sentence_embedding" not in features[0]


def _lookups(model, loss, features):
    """How many times the word-embedding matrix is looked up (each gives it a dense gradient in the backward)."""
    calls = []
    handle = model[0].auto_model.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            loss(features, None)
    finally:
        handle.remove()
    return len(calls)


def test_embed_once_looks_the_word_pieces_up_once_per_step(model):
    features = _features(model, ANCHORS, POSITIVES, NEGATIVES)
    assert _lookups(model, hybrid_loss(model, chunk_size=3), features) == 1
    # 12 anchors in 4 chunks, 24 candidates (positives and negatives merged) in 8
    assert _lookups(model, LengthSortedMultipleNegativesRankingLoss(model, chunk_size=3, embed_once=False),
                    features) == 12
    assert "input_ids" in features[0] and "inputs_embeds" not in features[0]  # the caller's features unchanged


def test_left_padding_falls_back_to_a_lookup_per_chunk(model):
    """Positions may be counted from input_ids: left-padded batches keep them (and so the stock result)."""
    features = _features(model, ANCHORS, POSITIVES)
    for f in features:  # move each row's padding to the left
        lengths = f["attention_mask"].sum(1)
        for key in ("input_ids", "attention_mask"):
            f[key] = torch.stack([row.roll(int(row.numel() - n)) for row, n in zip(f[key], lengths)])
    assert not features[0]["attention_mask"][:, 0].all()
    loss = hybrid_loss(model, chunk_size=5)
    assert _lookups(model, loss, features) == 6
    _assert_same(model, hybrid_loss(model), loss, features)


def test_non_sequence_keys_pass_through(model):
    """Per-batch metadata (prompt_length as an int) reaches every chunk; pooling then excludes the prompt."""
    pooling = model[1]
    features = [model.preprocess(["query: " + t for t in ANCHORS], prompt="query: "), model.preprocess(POSITIVES)]
    assert isinstance(features[0]["prompt_length"], int)
    old = pooling.include_prompt
    pooling.include_prompt = False
    try:
        _assert_same(model, hybrid_loss(model), hybrid_loss(model, chunk_size=5), features)
    finally:
        pooling.include_prompt = old


def test_static_embedding_is_encoded_whole():
    from sentence_transformers_hybrid.testing import tiny_static_model

    model = tiny_static_model(ANCHORS + POSITIVES)
    features = _features(model, ANCHORS, POSITIVES)
    _assert_same(model, hybrid_loss(model), hybrid_loss(model, chunk_size=3), features)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="chunk_size"):
        hybrid_loss(model, chunk_size=0)
    with pytest.raises(ValueError, match="cached"):
        hybrid_loss(model, chunk_size=8, cached=True)


def test_trains_through_the_stock_trainer_with_hybrid_batches(tmp_path):
    """Two SGD steps on HybridBatchSampler batches: the same weights as with the stock loss."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from sentence_transformers_hybrid import HybridBatchSampler, ParallelCorpus

    records = [
        {"group": f"g{g}", "lang": lang, "query": f"{lang} " + _text(g, 1 + (g * 5) % 13),
         "passage": f"{lang} " + _text(g + 2, 1 + (g * 11) % 37)}
        for g in range(16) for lang in ("de", "en", "fr")
    ]
    corpus = ParallelCorpus.from_records(records)
    texts = [r["query"] for r in records] + [r["passage"] for r in records] + ["query: passage:"]

    initial = tiny_transformer_model(tmp_path / "model", texts, max_seq_length=64)
    for module in initial.modules():  # the trainer puts the model in train mode: no dropout, same network
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0

    def train(chunk_size):
        model = copy.deepcopy(initial)  # the same weights and tokenizer for both runs
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp_path / f"out-{chunk_size}"), per_device_train_batch_size=8, learning_rate=0.5,
            optim="sgd", max_steps=2, seed=0, report_to="none", use_cpu=True, disable_tqdm=True,
            save_strategy="no", logging_steps=1, dataloader_drop_last=False,
            batch_sampler=HybridBatchSampler.configure(corpus, alpha=0.5, mode="hybrid"),
            prompts={"query": "query: ", "passage": "passage: "},
        )
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=corpus.to_dataset(),
                                             loss=hybrid_loss(model, chunk_size=chunk_size))
        trainer.train()
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        return before, dict(model.named_parameters()), losses

    before, stock, stock_losses = train(None)
    _, chunked, chunked_losses = train(3)
    assert len(chunked_losses) == 2
    assert chunked_losses == pytest.approx(stock_losses, rel=1e-4)
    changed = [n for n in chunked if not torch.allclose(chunked[n], before[n])]
    assert len(changed) > len(chunked) // 2  # it trained
    for name in stock:
        torch.testing.assert_close(chunked[name], stock[name], rtol=1e-4, atol=1e-6, msg=name)


def test_scale_and_temperature_given_together_must_agree(model):
    """issue 23 item 2: a scale equal to the default is not 'unset'; two ways of saying one thing must agree."""
    with pytest.raises(ValueError, match="disagree"):
        hybrid_loss(model, scale=20.0, temperature=0.1)
    assert hybrid_loss(model, scale=10.0, temperature=0.1).scale == pytest.approx(10.0)
    assert hybrid_loss(model, temperature=0.1).scale == pytest.approx(10.0)
    assert hybrid_loss(model).scale == pytest.approx(20.0)
    with pytest.raises(ValueError, match="chunk_size"):
        hybrid_loss(model, compile_encoder=True)


# the compiled path: short texts (every chunk in the 16-token bucket, so one graph per mode) and 11 rows, so that the
# last chunk of 6 is filled with a copy of its first row
SHORT_A = [_text(i, 1 + (i * 5) % 11) for i in range(11)]
SHORT_P = [_text(i + 4, 1 + (i * 7) % 12) for i in range(11)]


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory):
    # the tiny BERT's own dropout: hidden 0.1, attention 0.1 (eager attention, so that its dropout is a module too)
    model = tiny_transformer_model(tmp_path_factory.mktemp("tiny-dropout"), SHORT_A + SHORT_P, max_seq_length=64)
    model[0].auto_model.set_attn_implementation("eager")
    return model


def test_compiled_path_gives_the_uncompiled_loss_gradients_and_dropout_rate(dropout_model):
    """torch.compile of the encoder layers: the same loss and gradients (dropout off), dropout still at p (on)."""
    from torch._dynamo.utils import counters

    from sentence_transformers_hybrid._compile import WIDTH_BUCKETS, compiler_problem, encoder_layers

    if compiler_problem("cpu") is not None:
        pytest.skip(f"no working torch.compile here: {compiler_problem('cpu')}")
    # float64: the compiled kernels sum in another order than eager's, and how depends on the CPU's vector width; in
    # float32 the token-type embedding's gradient (a sum over every token) then differed by more than 1e-6 on CI's
    # CPU, not on ours. In float64 that rounding is ~1e-15, so a tight tolerance tests the program, not the CPU.
    model = copy.deepcopy(dropout_model).double()
    features = _features(model, SHORT_A, SHORT_P)
    eager = hybrid_loss(model, chunk_size=6)
    compiled = hybrid_loss(model, chunk_size=6, compile_encoder=True)
    breaks = sum(counters["graph_break"].values())
    model.eval()  # dropout off: both paths see the same network
    try:
        _assert_same(model, eager, compiled, features)
    finally:
        model.train()
    path = compiled.training_path()
    assert path["path"].startswith("compiled") and path["compile_problem"] is None
    assert path["shapes"] == [[6, 16]] and 16 in WIDTH_BUCKETS  # 2 chunks a column, all 6 x 16: one graph
    assert path["compiles"] == 1  # dynamo built just that one: both layers share it (a hook on one would split it)
    assert all(layer._compiled_call_impl is None for layer in encoder_layers(model))  # eager outside the loss

    p = model[0].auto_model.config.hidden_dropout_prob
    assert p == pytest.approx(0.1)
    dropped = []

    def record(module, args, output):
        dropped.append((output == 0).float().mean())

    hooks = [layer.output.dropout.register_forward_hook(record) for layer in encoder_layers(model)]
    try:
        with torch.no_grad():  # the forward is what draws the masks; an inference graph compiles faster
            value = compiled(features, None)
    finally:
        for h in hooks:
            h.remove()
    assert torch.isfinite(value)
    assert sum(counters["graph_break"].values()) == breaks  # the hooks ran inside the compiled graph
    # 2 layers x 4 chunks of 6 x 16 x 32 outputs: the share of zeros is the dropout rate (sd ~0.002)
    assert len(dropped) == 8
    assert float(torch.stack(dropped).mean()) == pytest.approx(p, abs=0.02)
    assert compiled.training_path()["graphs"] == 2  # eval and train: no recompilation beyond the two modes


def test_compiled_path_without_a_compiler_warns_and_runs_uncompiled(dropout_model, monkeypatch):
    from sentence_transformers_hybrid import _compile

    monkeypatch.setattr(_compile, "compiler_problem", lambda device_type="cpu": "InvalidCxxCompiler: no g++ (test)")
    model = dropout_model.eval()
    try:
        features = _features(model, SHORT_A, SHORT_P)
        loss = hybrid_loss(model, chunk_size=6, compile_encoder=True)
        with pytest.warns(RuntimeWarning, match="InvalidCxxCompiler: no g\\+\\+"):
            value = loss(features, None)
        ref = hybrid_loss(model, chunk_size=6)(features, None)
    finally:
        model.train()
    torch.testing.assert_close(value, ref)
    path = loss.training_path()
    assert path["path"].startswith("uncompiled") and "no g++" in path["compile_problem"] and path["graphs"] == 0


def test_the_compiler_probe_works_inside_an_encoding_pass():
    """The probe compiles a function and its backward: inside no_grad and autocast (an encoding pass) too."""
    from sentence_transformers_hybrid._compile import compiler_problem

    if compiler_problem("cpu") is not None:
        pytest.skip(f"no working torch.compile here: {compiler_problem('cpu')}")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert compiler_problem.__wrapped__("cpu") is None
