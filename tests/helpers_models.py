"""Tiny offline SentenceTransformer models for tests (no Hub access, a few hundred KB, built in well under a second).

Reusable by every test module::

    from tests.helpers_models import tiny_static_model, tiny_transformer_model

    model = tiny_transformer_model(tmp_path, texts)   # BERT, 2 layers, hidden 32, WordPiece trained on `texts`
    model = tiny_static_model(texts, dim=32)          # StaticEmbedding (mean of token vectors)

Both are deterministic: the same texts and seed give the same weights and the same embeddings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer(texts: Sequence[str], vocab_size: int = 500):
    """A lower-casing WordPiece ``tokenizers.Tokenizer`` trained on ``texts``, with BERT's [CLS] ... [SEP] template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return tok


def _modules():
    try:  # sentence-transformers >= 6
        from sentence_transformers.base.modules import Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling, StaticEmbedding
    except ImportError:  # pragma: no cover - sentence-transformers 5.x
        from sentence_transformers.models import Pooling, StaticEmbedding, Transformer
    return Transformer, Pooling, StaticEmbedding


def tiny_transformer_model(
    tmp_path: str | Path,
    texts: Sequence[str],
    seed: int = 0,
    *,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 64,
    max_seq_length: int = 64,
    pooling_mode: str = "mean",
):
    """A randomly initialised tiny BERT wrapped as ``Transformer`` + ``Pooling`` (a real ``SentenceTransformer``).

    The model and tokenizer are written to ``tmp_path/tiny-bert-<seed>`` and loaded back through the library's own
    ``Transformer`` module, so ``encode``, ``encode_query``, saving, training and ``output_hidden_states`` all
    behave as with a Hub model.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    Transformer, Pooling, _ = _modules()
    out = Path(tmp_path) / f"tiny-bert-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(texts)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_seq_length,
    )
    hf_tok.save_pretrained(out)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max(128, max_seq_length),
        pad_token_id=tok.token_to_id("[PAD]"),
    )
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        BertModel(config).save_pretrained(out)
    finally:
        torch.random.set_rng_state(gen_state)
    transformer = Transformer(str(out), max_seq_length=max_seq_length)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling_mode)
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


def tiny_static_model(texts: Sequence[str], dim: int = 32, seed: int = 0):
    """A ``StaticEmbedding`` model (mean of per-token vectors) with N(0, 1) weights drawn from ``seed``."""
    from sentence_transformers import SentenceTransformer

    _, _, StaticEmbedding = _modules()
    tok = tiny_tokenizer(texts)
    weights = np.random.default_rng(seed).standard_normal((tok.get_vocab_size(), dim)).astype(np.float32)
    return SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=weights)], device="cpu")
