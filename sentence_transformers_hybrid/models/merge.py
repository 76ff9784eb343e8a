"""Weight interpolation of two finished models: :func:`merge_models` (``lam * theta(A) + (1 - lam) * theta(B)``).

Two fine-tunings of one pretrained model usually sit in one basin of the loss, so their weighted mean is a model
too (Wortsman et al. 2022, "Model soups"; Ilharco et al. 2023, "Editing models with task arithmetic"): no training,
one pass over the weights. The two models must have the same architecture: the same modules in the same order, the
same state-dict keys, shapes and dtypes, and (for modules with a tokenizer) the same vocabulary; anything else is
refused naming the module and the parameter that differ.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

__all__ = ["ModelMergeError", "merge_models"]


class ModelMergeError(ValueError):
    """Two models that cannot be interpolated: the message names the differing module and parameter."""


def _module_name(model: SentenceTransformer, index: int) -> str:
    return f"module {index} ({type(model[index]).__name__})"


def _vocab(module) -> dict[str, int] | None:
    tokenizer = getattr(module, "tokenizer", None)
    if tokenizer is None:
        return None
    get_vocab = getattr(tokenizer, "get_vocab", None)
    return get_vocab() if callable(get_vocab) else None


def check_mergeable(a: SentenceTransformer, b: SentenceTransformer) -> None:
    """Raise :class:`ModelMergeError` unless ``a`` and ``b`` have one architecture (modules, state-dict keys, shapes,
    dtypes, tokenizer vocabularies)."""
    if len(a) != len(b):
        raise ModelMergeError(f"model A has {len(a)} modules {[type(m).__name__ for m in a]}, model B {len(b)} "
                              f"{[type(m).__name__ for m in b]}")
    for i in range(len(a)):
        ma, mb = a[i], b[i]
        where = _module_name(a, i)
        if type(ma) is not type(mb):
            raise ModelMergeError(f"{where}: model A has {type(ma).__name__}, model B {type(mb).__name__}")
        inner_a, inner_b = getattr(ma, "auto_model", None), getattr(mb, "auto_model", None)
        if inner_a is not None and inner_b is not None and type(inner_a) is not type(inner_b):
            raise ModelMergeError(f"{where}: model A wraps {type(inner_a).__name__}, model B {type(inner_b).__name__}")
        sa, sb = ma.state_dict(), mb.state_dict()
        if list(sa) != list(sb):
            only_a, only_b = sorted(set(sa) - set(sb)), sorted(set(sb) - set(sa))
            raise ModelMergeError(f"{where}: the parameters differ: only in A {only_a[:5]}, only in B {only_b[:5]}"
                                  + ("" if only_a or only_b else " (same names, another order)"))
        for key in sa:
            ta, tb = sa[key], sb[key]
            if ta.shape != tb.shape:
                raise ModelMergeError(f"{where}, parameter {key!r}: shape {tuple(ta.shape)} in A, {tuple(tb.shape)} in B")
            if ta.dtype != tb.dtype:
                raise ModelMergeError(f"{where}, parameter {key!r}: dtype {ta.dtype} in A, {tb.dtype} in B")
        va, vb = _vocab(ma), _vocab(mb)
        if va != vb:
            if va is None or vb is None:
                raise ModelMergeError(f"{where}: only model {'A' if vb is None else 'B'} has a tokenizer")
            diff = sorted(set(va.items()) ^ set(vb.items()), key=str)[:3]
            raise ModelMergeError(f"{where}: the tokenizer vocabularies differ ({len(va)} vs {len(vb)} pieces; e.g. "
                                  f"{diff}): merged weights would mean other pieces")


def merge_models(model_a: SentenceTransformer, model_b: SentenceTransformer, lam: float) -> SentenceTransformer:
    """``lam * theta(A) + (1 - lam) * theta(B)`` for every floating-point parameter and buffer, as a new model.

    The result is a deep copy of ``model_a`` (its modules, tokenizer, prompts and configuration) holding the
    interpolated weights; neither input changes. Integer buffers (position ids, ...) must be equal and are kept.
    The mean is computed in float32 (then cast back to the parameter's dtype), so ``lam=1`` gives A's weights and
    ``lam=0`` B's exactly.

    Args:
        model_a: the model weighted by ``lam``.
        model_b: the model weighted by ``1 - lam``; the same architecture (:class:`ModelMergeError` otherwise,
            naming the module and the parameter that differ).
        lam: the weight of A, in ``[0, 1]``.

    Example::

        >>> import numpy as np, torch
        >>> from sentence_transformers import SentenceTransformer
        >>> from sentence_transformers.sentence_transformer.modules import StaticEmbedding
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
        >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> a = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=np.ones((3, 2), "float32"))])
        >>> b = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=np.zeros((3, 2), "float32"))])
        >>> merge_models(a, b, 0.25)[0].embedding.weight.tolist()
        [[0.25, 0.25], [0.25, 0.25], [0.25, 0.25]]
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must be a number in [0, 1] (the weight of model A), got {lam!r}")
    check_mergeable(model_a, model_b)
    merged = copy.deepcopy(model_a)
    lam = float(lam)
    for i in range(len(merged)):
        target, sb = merged[i].state_dict(), model_b[i].state_dict()
        out = {}
        for key, ta in target.items():
            tb = sb[key].to(ta.device)
            if ta.is_floating_point():
                mixed = lam * ta.float() + (1.0 - lam) * tb.float()
                out[key] = ta if lam == 1.0 else (tb.clone() if lam == 0.0 else mixed.to(ta.dtype))
            else:
                if not torch.equal(ta, tb):
                    raise ModelMergeError(f"{_module_name(merged, i)}, buffer {key!r}: the non-float values differ "
                                          "between A and B (they cannot be interpolated)")
                out[key] = ta
        merged[i].load_state_dict(out)
    return merged
