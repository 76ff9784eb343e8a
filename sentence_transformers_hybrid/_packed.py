"""Packed (unpadded) encoding of a column for the training loss: the matrix products on real tokens only.

The chunked loss (:class:`~sentence_transformers_hybrid.losses.LengthSortedMultipleNegativesRankingLoss`) cuts each
length-sorted chunk of ``chunk_size`` rows to its longest row, but every row shorter than that still pays for its
padding in every linear layer, every layer norm, GELU and hidden dropout; on LAReQA's batches that is ~22 % of the
encoder's FLOPs (``benchmarks/bench_finetune.py`` prints it), and each matrix product has only ``chunk_size x
width`` rows. With packing the whole column is one sequence of its real tokens (``(1, tokens, hidden)``, rows one
after the other, longest first) through the model's own forward, as Hugging Face's variable-length
(``DataCollatorWithFlattening``) batches are: positions and token types are given per token, and sentence-
transformers' ``Pooling`` reduces each row's tokens through ``cu_seq_lens_q`` (its flattened path). Only attention
needs the rows apart: :func:`packed_attention`, registered with ``transformers``' ``AttentionInterface`` as
:data:`PACKED_ATTENTION`, copies each chunk of ``chunk_size`` rows (the chunked loss's own chunks; their tokens
are contiguous in the packed sequence) into a zero-padded ``(heads, rows, width, head_dim)`` block (one
``index_copy``, whose gradient is one ``index_select``: no accumulating scatter), runs the eager attention
(scores, additive key mask, softmax, dropout of the attention probabilities at the model's rate, weighted sum),
and selects the real positions back.

So the same function is computed as by the chunked and the stock loss (equal up to float rounding without dropout;
with dropout every position is dropped with the same probability, from a different draw of the random stream);
the matrix products see one ``tokens x hidden`` operand per layer instead of one per chunk. What it supports:
encoder-only models of the BERT family (``bert``, ``roberta``, ``xlm-roberta``: e5, MiniLM, XLM-R) with absolute
positions; :func:`packing_problem` says why another model cannot be packed, and the loss then stays on the
chunked path and says so in its :meth:`training_path`.

Example::

    >>> plan = PackingPlan.build(torch.tensor([3, 2, 1]), chunk_size=2)  # lengths in packed order, longest first
    >>> plan.cu_seq_lens.tolist(), [(c.begin, c.end, tuple(c.valid.shape)) for c in plan.chunks]
    ([0, 3, 5, 6], [(0, 5, (2, 3)), (5, 6, (1, 1))])
    >>> plan.chunks[0].flat.tolist()  # the real positions of the first 2 x 3 block, row-major
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._compile import in_text_order

__all__ = ["PACKED_ATTENTION", "PackedChunk", "PackingPlan", "encode_packed", "pack_column", "packed_attention",
           "packing_problem", "register_packed_attention"]

#: the attention implementation's name in ``transformers``' ``AttentionInterface`` (set on the model's config only
#: inside :func:`packed_attention_active`)
PACKED_ATTENTION = "sth_packed_eager"

#: model types whose attention goes through ``ALL_ATTENTION_FUNCTIONS`` with the forward's keyword arguments and
#: whose embeddings take per-token ``position_ids`` (checked on the installed ``transformers`` by the tests)
PACKABLE_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")

_PLAN: contextvars.ContextVar[PackingPlan | None] = contextvars.ContextVar("sth_packing_plan", default=None)


class PackedChunk(NamedTuple):
    """One attention chunk of a :class:`PackingPlan`: rows ``begin_row`` .. of the packed order, whose tokens are the
    packed positions ``begin`` .. ``end`` (contiguous: rows lie one after the other); ``valid`` ``(rows, width)`` is
    ``True`` at a row's real positions, ``flat`` the indices of those positions in the row-major ``rows x width``
    block (so ``block.view(rows * width, ...)[flat]`` are the packed tokens ``begin .. end`` in order)."""

    begin: int
    end: int
    valid: Tensor
    flat: Tensor


@dataclass(frozen=True)
class PackingPlan:
    """How one column's rows lie in the packed sequence and which rows attend together.

    ``lengths``: the rows' token counts in packed order (longest first); ``cu_seq_lens``: their cumulative offsets
    (``[0, l0, l0 + l1, ...]``); ``chunks``: one :class:`PackedChunk` per ``chunk_size`` consecutive rows.
    """

    lengths: Tensor
    cu_seq_lens: Tensor
    chunks: tuple[PackedChunk, ...]

    @classmethod
    def build(cls, lengths: Tensor, chunk_size: int) -> PackingPlan:
        lengths = lengths.to(torch.long)
        cu = torch.zeros(len(lengths) + 1, dtype=torch.long, device=lengths.device)
        cu[1:] = torch.cumsum(lengths, 0)
        chunks = []
        for begin in range(0, len(lengths), chunk_size):
            part = lengths[begin : begin + chunk_size]
            positions = torch.arange(int(part.max()), device=lengths.device)
            valid = positions.unsqueeze(0) < part.unsqueeze(1)
            flat = valid.reshape(-1).nonzero().squeeze(1)
            chunks.append(PackedChunk(int(cu[begin]), int(cu[begin + len(part)]), valid, flat))
        return cls(lengths, cu, tuple(chunks))

    @property
    def tokens(self) -> int:
        return int(self.cu_seq_lens[-1])


def packing_problem(model: Any) -> str | None:
    """Why the column encoder of ``model`` (a ``SentenceTransformer``) cannot run packed, or ``None`` when it can."""
    try:
        module = model[0]
        auto = module.auto_model
        config = auto.config
    except (AttributeError, IndexError, KeyError, TypeError, NotImplementedError):
        return "the model's first module is not a transformers model (sentence-transformers' Transformer)"
    model_type = getattr(config, "model_type", None)
    if model_type not in PACKABLE_MODEL_TYPES:
        return f"model type {model_type!r} is not one of {', '.join(PACKABLE_MODEL_TYPES)}"
    if getattr(config, "is_decoder", False):
        return "a decoder configuration (causal attention)"
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return f"position_embedding_type {config.position_embedding_type!r} (only absolute positions are packed)"
    for later in list(model)[1:]:
        name = type(later).__name__
        if name not in ("Pooling", "Normalize", "Dense"):
            return f"module {name} after the transformer (only Pooling, Dense and Normalize read packed outputs)"
        if name == "Pooling" and getattr(later, "pooling_mode", None) in ("weightedmean",):
            return "weighted-mean pooling"
        if name == "Pooling" and getattr(later, "include_prompt", True) is False:
            return "a pooling that leaves the prompt's tokens out (include_prompt=False)"
    return None


def register_packed_attention() -> None:
    """Register :func:`packed_attention` as :data:`PACKED_ATTENTION` with ``transformers`` (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)


def position_offset(model: Any) -> int:
    """The position of a row's first token: 0 for BERT, ``padding_idx + 1`` for RoBERTa / XLM-R (the rule
    sentence-transformers uses for flattened batches)."""
    for module in model[0].auto_model.modules():
        padding_idx = getattr(module, "padding_idx", None)
        if isinstance(padding_idx, int) and isinstance(getattr(module, "position_embeddings", None),
                                                       torch.nn.Embedding):
            return padding_idx + 1
    return 0


def pack_column(features: dict[str, Any], order: Tensor, lengths: Tensor, chunk_size: int,
                offset: int = 0) -> tuple[dict[str, Any], PackingPlan]:
    """The right-padded column ``features`` as one packed row: rows in ``order`` (their ``lengths``), every per-token
    tensor (``input_ids`` / ``inputs_embeds``, ``token_type_ids``) cut to its real tokens, ``position_ids`` counted
    from ``offset`` per row, and the variable-length keys (``cu_seq_lens_q`` / ``_k``, ``max_length_q`` / ``_k``)
    that the model passes to its attention and ``Pooling`` reads. Other keys are kept as they are."""
    mask = features["attention_mask"]
    rows, width = mask.shape
    plan = PackingPlan.build(lengths[order], chunk_size)
    sorted_mask = mask[order].bool()
    out: dict[str, Any] = {}
    for key, value in features.items():
        if key == "attention_mask":
            continue
        if isinstance(value, Tensor) and value.ndim >= 2 and value.shape[0] == rows and value.shape[1] == width:
            value = value[order][sorted_mask].unsqueeze(0)
        out[key] = value
    positions = torch.arange(width, device=mask.device).expand(rows, width)
    out["position_ids"] = (positions[sorted_mask] + offset).unsqueeze(0)
    cu = plan.cu_seq_lens.to(torch.int32)
    longest = int(plan.lengths.max())
    out.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)
    return out, plan


@contextlib.contextmanager
def packed_attention_active(model: Any, plan: PackingPlan) -> Iterator[None]:
    """The model's attention is :func:`packed_attention` for ``plan`` inside this block, its own outside."""
    register_packed_attention()
    config = model[0].auto_model.config
    before = config._attn_implementation
    token = _PLAN.set(plan)
    config._attn_implementation = PACKED_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before
        _PLAN.reset(token)


def packed_attention(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor,
                     attention_mask: Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs: Any) -> tuple[Tensor, None]:
    """Eager attention over a packed sequence, chunk by chunk of the active :class:`PackingPlan`.

    ``query`` / ``key`` / ``value``: ``(1, heads, tokens, head_dim)``; returns ``((1, tokens, heads, head_dim),
    None)``, the layout of ``transformers``' attention functions. Within a chunk every row attends to its own real
    positions only (an additive mask of the dtype's lowest value on the others, as the eager path's padding mask),
    the probabilities are dropped out with ``dropout`` in training, and padded query positions are discarded.
    """
    plan = _PLAN.get()
    if plan is None:
        raise RuntimeError(f"{PACKED_ATTENTION} attention was called outside packed_attention_active()")
    if query.shape[0] != 1 or query.shape[2] != plan.tokens:
        raise RuntimeError(f"{PACKED_ATTENTION}: expected one packed row of {plan.tokens} tokens, got query of shape "
                           f"{tuple(query.shape)}")
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    bounds = [chunk.end - chunk.begin for chunk in plan.chunks]
    # each chunk's tokens, (heads, chunk tokens, head_dim): views of the projections; one split (whose gradient
    # is one concatenation) instead of a slice per chunk (whose gradients are full-size zeros added up)
    parts = [t[0].split(bounds, dim=1) for t in (query, key, value)]
    heads, _, head_dim = query.shape[1:]
    low = torch.finfo(query.dtype).min
    outputs = []
    for chunk, q, k, v in zip(plan.chunks, *parts):
        rows, width = chunk.valid.shape

        def block(t: Tensor) -> Tensor:  # (heads, rows, width, head_dim), zeros past each row's end
            padded = t.new_zeros(heads, rows * width, head_dim)
            return padded.index_copy_(1, chunk.flat, t).view(heads, rows, width, head_dim)

        qc, kc, vc = block(q), block(k), block(v)
        bias = torch.zeros(rows, 1, width, dtype=query.dtype, device=query.device)
        bias.masked_fill_(~chunk.valid.unsqueeze(1), low)  # the eager path's additive padding mask
        if not torch.is_grad_enabled() and not (module.training and dropout > 0):
            # inference (encode_packed): the same function through torch's fused kernel (flash attention on CPU),
            # which never holds the rows x width x width scores; training keeps the eager ops and their dropout
            # (the mask 4-D: a 3-D one sends torch to its unfused math path)
            out = torch.nn.functional.scaled_dot_product_attention(qc, kc, vc, attn_mask=bias.unsqueeze(0),
                                                                   scale=scaling)
            outputs.append(out.view(heads, rows * width, head_dim).index_select(1, chunk.flat))
            continue
        scores = torch.matmul(qc, kc.transpose(-1, -2)).mul_(scaling).add_(bias)
        probs = torch.nn.functional.softmax(scores, dim=-1)
        probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
        out = torch.matmul(probs, vc).view(heads, rows * width, head_dim)
        outputs.append(out.index_select(1, chunk.flat))  # the real query positions, in packed order
    return torch.cat(outputs, dim=1).transpose(0, 1).unsqueeze(0), None


def encode_packed(model: Any, texts: list[str], *, batch_size: int = 64, chunk_size: int = 16,
                  normalize_embeddings: bool = False) -> Tensor:
    """``model.encode(texts, convert_to_tensor=True)`` with no padding outside attention: length-sorted batches of
    ``batch_size`` rows, each one packed sequence of its real tokens (:func:`pack_column`), attention per chunk of
    ``chunk_size`` rows (:func:`packed_attention`). The linear layers, layer norms and GELU see real tokens only
    (the bucketed path's widths pad ~20 % of the ``cpu`` preset's tokens); the vectors are the model's up to float
    rounding. For models :func:`packing_problem` accepts (BERT, RoBERTa, XLM-R); another raises ``ValueError``
    naming why.

    Runs under ``torch.no_grad()`` with the model in eval mode (its mode is restored) and whatever autocast the
    caller set; returns float32 ``[len(texts) x d]`` in the order of ``texts``.

    Example::

        >>> import tempfile, torch
        >>> from sentence_transformers_hybrid.testing import tiny_transformer_model
        >>> texts = ["the cat sat on the mat", "a dog", "birds fly south in winter", "hi"]
        >>> model = tiny_transformer_model(tempfile.mkdtemp(), texts).eval()
        >>> torch.allclose(encode_packed(model, texts, batch_size=3, chunk_size=2),
        ...                model.encode(texts, convert_to_tensor=True), atol=1e-5)
        True
    """
    if not texts:
        raise ValueError("encode_packed: no texts")
    problem = packing_problem(model)
    if problem:
        raise ValueError(f"encode_packed: this model cannot be packed: {problem}")
    features = model.preprocess(list(texts))
    mask = features["attention_mask"]
    rows, width = mask.shape
    active = mask.bool()
    lengths = active.sum(1)
    if not bool((active == (torch.arange(width) < lengths.unsqueeze(1))).all()):
        raise ValueError("encode_packed: the tokenizer pads on the left; only right-padded batches are packed")
    order = torch.sort(lengths, descending=True, stable=True).indices
    offset = position_offset(model)
    device = getattr(model, "device", torch.device("cpu"))
    out = []
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for begin in range(0, rows, batch_size):
                index = order[begin : begin + batch_size]
                cut = int(lengths[index[0]])
                batch = {key: (value[index][:, :cut] if value.ndim >= 2 and value.shape[1] == width else value[index])
                         if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == rows else value
                         for key, value in features.items()}
                local = torch.arange(len(index))
                packed, plan = pack_column(batch, local, lengths[index], chunk_size, offset=offset)
                packed = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in packed.items()}
                plan = PackingPlan(plan.lengths.to(device), plan.cu_seq_lens.to(device),
                                   tuple(PackedChunk(c.begin, c.end, c.valid.to(device), c.flat.to(device))
                                         for c in plan.chunks))
                with packed_attention_active(model, plan):
                    out.append(model(packed)["sentence_embedding"].float())
    finally:
        model.train(training)
    return in_text_order(out, order, normalize_embeddings)
