"""Backbones: the encoder of a translation model as a sentence-transformers retriever.

:func:`m2m100_encoder` turns an M2M-100 (or NLLB-200, same architecture) checkpoint into a stock
``SentenceTransformer([Transformer, Pooling])`` whose ``Transformer`` holds only the ``M2M100Encoder``. Hybrid
training and CKA then run inside the translation model's own representation space.

Why not ``SentenceTransformer("facebook/m2m100_418M")``? sentence-transformers 6.2 maps an ``M2M100Config`` to
``M2M100Encoder.from_pretrained(checkpoint)``, but the released checkpoints store the encoder under
``model.encoder.*``, so every encoder weight is reported MISSING and *randomly initialised*: a model that encodes
without error and means nothing. Here the full model is loaded with its own class (which knows the layout), the
encoder is taken out, written as an encoder-only checkpoint (``config.architectures == ["M2M100Encoder"]``) and
loaded from there, and its weights are checked against the source. The saved model uses only stock
sentence-transformers modules: ``SentenceTransformer(path)`` loads it offline, without our package and without
``trust_remote_code``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _tokenizer_language(tokenizer: Any, language: str) -> str:
    """The tokenizer's code for ``language``: ISO 639-1 for M2M-100 tokenizers, NLLB codes for NLLB ones."""
    from ..translate.m2m100 import ISO_FROM_NLLB, NLLB_CODES

    if hasattr(tokenizer, "lang_code_to_id"):
        code = ISO_FROM_NLLB.get(language, language)
        if code not in tokenizer.lang_code_to_id:
            raise ValueError(f"language {language!r} is not an M2M-100 language code; expected one of {sorted(tokenizer.lang_code_to_id)}")
        return code
    code = NLLB_CODES.get(language, language)
    if tokenizer.convert_tokens_to_ids(code) in (None, tokenizer.unk_token_id):
        raise ValueError(f"language {language!r} ({code!r}) is not a language token of this tokenizer")
    return code


def m2m100_encoder(
    model_name_or_path: str | Path,
    max_seq_length: int = 128,
    pooling: str = "mean",
    language: str = "en",
    device: str | None = None,
) -> Any:
    """The encoder half of an M2M-100 / NLLB checkpoint as a ``SentenceTransformer`` (encoder + pooling).

    Args:
        model_name_or_path: Hub id or folder of an ``M2M100ForConditionalGeneration`` / ``M2M100Model``
            checkpoint (``facebook/m2m100_418M``, ``facebook/nllb-200-distilled-600M``), or a folder saved by a
            model this function built (encoder only).
        max_seq_length: tokens per text.
        pooling: ``sentence_transformers`` pooling mode (``"mean"``, ``"max"``, ``"cls"``, ...).
        language: the source-language token the tokenizer puts in front of every text (M2M-100's encoder is
            trained with one). The same token is used for every text whatever its language, so that it carries
            no language signal of its own into the embedding; it is saved with the tokenizer.
        device: passed to ``SentenceTransformer``.

    Returns:
        a ``SentenceTransformer`` made of stock modules: ``model.save(path)`` / ``SentenceTransformer(path)``
        round-trip offline.

    Example::

        >>> model = m2m100_encoder("facebook/m2m100_418M", max_seq_length=128)  # downloads 1.9 GB from the Hub  # doctest: +SKIP
        >>> model.encode(["Who wrote Faust?", "Wer schrieb Faust?"]).shape  # needs the model above  # doctest: +SKIP
        (2, 1024)

    The same with a tiny offline checkpoint (:func:`~sentence_transformers_hybrid.testing.build_tiny_m2m100`,
    ``d_model=16``)::

        >>> import tempfile
        >>> from sentence_transformers_hybrid.testing import build_tiny_m2m100
        >>> model = m2m100_encoder(str(build_tiny_m2m100(tempfile.mkdtemp())), max_seq_length=32)
        >>> model.encode(["Who wrote Faust?", "Wer schrieb Faust?"]).shape
        (2, 16)
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoConfig, AutoTokenizer, M2M100Config, M2M100Model
    from transformers.models.m2m_100.modeling_m2m_100 import M2M100Encoder

    path = str(model_name_or_path)
    config = AutoConfig.from_pretrained(path)
    if not isinstance(config, M2M100Config):
        raise ValueError(
            f"{path!r} is a {type(config).__name__} checkpoint (model_type {config.model_type!r}); expected M2M-100 / "
            "NLLB (model_type 'm2m_100')"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.src_lang = _tokenizer_language(tokenizer, language)
    with tempfile.TemporaryDirectory(prefix="m2m100-encoder-") as tmp:
        if list(config.architectures or []) == ["M2M100Encoder"]:  # saved by this function: encoder only
            encoder = M2M100Encoder.from_pretrained(path)
        else:
            encoder = M2M100Model.from_pretrained(path).get_encoder()
        encoder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        transformer = Transformer(tmp, max_seq_length=max_seq_length)
    loaded = transformer.auto_model.state_dict()
    bad = [k for k, v in encoder.state_dict().items() if k not in loaded or not torch.equal(loaded[k].cpu(), v.cpu())]
    del encoder
    if bad:
        raise RuntimeError(f"the encoder of {path!r} did not load intact; differing tensors: {bad[:5]}")
    pool = Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)
    return SentenceTransformer(modules=[transformer, pool], device=device)
