"""Tiny, randomly initialised models built offline, for tests, benchmarks and runnable documentation examples.

They have the architecture and tokenizer of the real checkpoints (so every code path is the real one) but a
handful of parameters, no download, and translations that are random token strings. Every test module builds its
models here:

* :func:`tiny_transformer_model`: a BERT (2 layers, hidden 32, WordPiece trained on the given texts) as
  ``Transformer`` + ``Pooling``;
* :func:`tiny_static_model`: a ``StaticEmbedding`` (mean of token vectors), N(0, 1) weights from ``seed``;
* :func:`build_tiny_m2m100`: an M2M-100 / NLLB checkpoint folder for translate-train.

All are deterministic: the same texts and seed give the same weights and the same embeddings.

Example::

    >>> model = tiny_static_model(["the cat sat", "a dog ran"], dim=8)
    >>> model.encode(["the cat"]).shape
    (1, 8)
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_SENTENCES = (
    "Who wrote Faust? Goethe wrote Faust in Weimar.",
    "Wer schrieb den Faust? Goethe schrieb ihn in Weimar.",
    "Paris is the capital of France and its largest city.",
    "Où est la tour Eiffel ? Elle est à Paris.",
    "¿Dónde está Lima? Lima está en Perú.",
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Москва — столица России.",
    "北京是中国的首都。",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "What is the boiling point of water at sea level? It is 100 degrees.",
)


def build_tiny_m2m100(
    path: str | Path,
    d_model: int = 16,
    layers: int = 1,
    vocab_pieces: int = 96,
    max_positions: int = 256,
    seed: int = 0,
    init_std: float = 1.0,
    sentences: Sequence[str] = _SENTENCES,
    tokenizer: str = "m2m100",
) -> Path:
    """Write a tiny random M2M-100 (``M2M100ForConditionalGeneration`` + ``M2M100Tokenizer``) to ``path``.

    The tokenizer is a SentencePiece BPE model trained on ``sentences`` (needs the ``sentencepiece`` package); the
    model is ``M2M100Config(d_model=d_model, encoder_layers=layers, decoder_layers=layers, ...)`` initialised with
    ``torch.manual_seed(seed)``. ``init_std`` is far above the usual 0.02 so that different inputs give different
    (random) outputs, which order and alignment tests need. Everything is offline and takes well under a second.

    ``tokenizer="nllb"`` builds an NLLB-200 style checkpoint instead (same model class, an ``NllbTokenizer`` with
    FLORES-200 language tokens such as ``"deu_Latn"`` and a character-level vocabulary from ``sentences``).

    Example::

        >>> from sentence_transformers_hybrid.testing import build_tiny_m2m100
        >>> from sentence_transformers_hybrid.translate import M2M100Translator
        >>> path = build_tiny_m2m100("/tmp/tiny-m2m100")
        >>> translate = M2M100Translator(str(path), max_length=16)
        >>> len(translate(["Who wrote Faust?"], "en", "de"))
        1
    """
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    if tokenizer not in ("m2m100", "nllb"):
        raise ValueError(f"tokenizer must be 'm2m100' or 'nllb', got {tokenizer!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = _m2m100_tokenizer(path, sentences, vocab_pieces) if tokenizer == "m2m100" else _nllb_tokenizer(sentences)
    vocab_size = (
        max(tok.lang_code_to_id.values()) + 1 + tok.num_madeup_words  # + 8 "made-up words", as released
        if tokenizer == "m2m100"
        else len(tok)
    )
    config = M2M100Config(
        vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        max_position_embeddings=max_positions,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        init_std=init_std,
    )
    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(config).eval()
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _m2m100_tokenizer(path: Path, sentences: Sequence[str], vocab_pieces: int):
    """An ``M2M100Tokenizer`` on a SentencePiece BPE model trained on ``sentences`` (files written to ``path``)."""
    import sentencepiece as spm
    from transformers import M2M100Tokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(sentences) * 4),
        model_writer=buf,
        vocab_size=vocab_pieces,
        model_type="bpe",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        unk_id=0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    spm_file = path / "sentencepiece.bpe.model"
    spm_file.write_bytes(buf.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    # fairseq dictionary order, as in the released M2M-100 vocab.json
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(i), len(vocab))
    vocab_file = path / "vocab.json"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return M2M100Tokenizer(str(vocab_file), str(spm_file))


def _nllb_tokenizer(sentences: Sequence[str]):
    """An ``NllbTokenizer`` with a character vocabulary (no merges) and the FLORES-200 language tokens."""
    from transformers import NllbTokenizer

    chars = sorted(set("".join(sentences).replace(" ", "")))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for piece in ["\u2581", *chars, *("\u2581" + c for c in chars)]:
        vocab.setdefault(piece, len(vocab))
    return NllbTokenizer(vocab=vocab, merges=[])


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


def _st_modules():
    from sentence_transformers.sentence_transformer.modules import Pooling, StaticEmbedding, Transformer

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
    model_type: str = "bert",
):
    """A randomly initialised tiny BERT wrapped as ``Transformer`` + ``Pooling`` (a real ``SentenceTransformer``).

    The model and tokenizer are written to ``tmp_path/tiny-bert-<seed>`` and loaded back through the library's own
    ``Transformer`` module, so ``encode``, ``encode_query``, saving, training and ``output_hidden_states`` all
    behave as with a Hub model. ``model_type="xlm-roberta"``: the same sizes as an XLM-R (positions counted from
    the padding id + 1), written to ``tmp_path/tiny-xlm-roberta-<seed>``.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    classes = {"bert": (BertConfig, BertModel), "xlm-roberta": (XLMRobertaConfig, XLMRobertaModel)}
    if model_type not in classes:
        raise ValueError(f"model_type must be one of {sorted(classes)}, got {model_type!r}")
    config_class, model_class = classes[model_type]
    Transformer, Pooling, _ = _st_modules()
    out = Path(tmp_path) / (f"tiny-bert-{seed}" if model_type == "bert" else f"tiny-{model_type}-{seed}")
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
    pad = tok.token_to_id("[PAD]")
    config = config_class(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        # XLM-R's positions start at pad + 1: room for max_seq_length of them past it
        max_position_embeddings=max(128, max_seq_length) + (pad + 1 if model_type == "xlm-roberta" else 0),
        pad_token_id=pad,
    )
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model_class(config).save_pretrained(out)
    finally:
        torch.random.set_rng_state(gen_state)
    transformer = Transformer(str(out), max_seq_length=max_seq_length)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling_mode)
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


def tiny_static_model(texts: Sequence[str], dim: int = 32, seed: int = 0):
    """A ``StaticEmbedding`` model (mean of per-token vectors) with N(0, 1) weights drawn from ``seed``."""
    from sentence_transformers import SentenceTransformer

    _, _, StaticEmbedding = _st_modules()
    tok = tiny_tokenizer(texts)
    weights = np.random.default_rng(seed).standard_normal((tok.get_vocab_size(), dim)).astype(np.float32)
    return SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=weights)], device="cpu")
