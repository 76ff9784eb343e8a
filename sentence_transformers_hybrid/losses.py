"""The paper's loss: stock ``MultipleNegativesRankingLoss`` with in-batch negatives, configured in one place.

Elmahdy et al. (EMNLP 2024) train with the in-batch-negatives contrastive loss (InfoNCE) over cosine similarity at
temperature 0.05, i.e. sentence-transformers' ``MultipleNegativesRankingLoss(model, scale=20.0,
similarity_fct=cos_sim)``. The batches, not the loss, carry the method: pair it with
:class:`~sentence_transformers_hybrid.sampling.HybridBatchSampler`.

:class:`LengthSortedMultipleNegativesRankingLoss` is the same loss (same value, same gradients) with a cheaper
forward on CPUs: each column is encoded in length-sorted chunks, each cut to its own longest sequence, instead of
one batch padded to the longest text of the column.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.util import cos_sim
from torch import Tensor

try:  # sentence-transformers >= 6
    from sentence_transformers.base.losses.merged_forward import embed_columns, merge_feature_batches
except ImportError:  # pragma: no cover - sentence-transformers 5.x embeds each column on its own
    embed_columns = merge_feature_batches = None

from ._compile import CompiledLayers, bucket_width, inverse_permutation
from ._dropout import fast_dropout_active
from ._packed import pack_column, packed_attention_active, packing_problem, position_offset

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

PAPER_TEMPERATURE = 0.05
PAPER_SCALE = 1.0 / PAPER_TEMPERATURE


def hybrid_loss(
    model: SentenceTransformer,
    scale: float | None = None,
    *,
    temperature: float | None = None,
    symmetric: bool = False,
    cached: bool = False,
    mini_batch_size: int = 32,
    gather_across_devices: bool = False,
    chunk_size: int | None = None,
    compile_encoder: bool = False,
    pack_tokens: bool = False,
    fast_dropout: bool = False,
) -> MultipleNegativesRankingLoss | CachedMultipleNegativesRankingLoss:
    """The paper's contrastive loss as a stock sentence-transformers loss object.

    Args:
        model: the model being trained.
        scale: inverse softmax temperature, as sentence-transformers names it. ``None`` (default): from
            ``temperature`` when given, else the paper's 20 (temperature 0.05).
        temperature: alternatively the temperature itself; ``scale = 1 / temperature``. Give one of the two; given
            both, they must agree (``scale * temperature == 1``), else ``ValueError``, also when ``scale`` is 20.
        symmetric: also rank queries for each passage (``directions=("query_to_doc", "doc_to_query")``, one softmax
            per direction, averaged), as in ``MultipleNegativesSymmetricRankingLoss``.
        cached: use ``CachedMultipleNegativesRankingLoss`` (GradCache): the same loss value and gradients, with memory
            bounded by ``mini_batch_size`` instead of the batch size; for batches of 100+ on small GPUs.
        mini_batch_size: chunk size of the cached loss.
        gather_across_devices: gather embeddings across processes, so the in-batch negatives of one step are the
            ``W * batch_size`` examples of all ranks. ``HybridBatchSampler`` makes those one global batch (same
            batch type, distinct groups), so this is safe with it.
        chunk_size: encode each column in length-sorted chunks of this many rows, each cut to its own longest
            sequence (:class:`LengthSortedMultipleNegativesRankingLoss`): the same loss and gradients, less padding.
            ``None`` (default): the stock loss, one padded forward per column. Not combinable with ``cached``.
        compile_encoder: with ``chunk_size``, run the encoder layers compiled by ``torch.compile`` (inductor), the
            chunks padded to a few fixed widths and row counts so that the graphs are reused (see
            :class:`LengthSortedMultipleNegativesRankingLoss`): the same loss and in-batch negatives, dropout at
            the same rate from inductor's generator. Without a working compiler: a warning and the uncompiled path.
        pack_tokens: with ``chunk_size``, encode each column as one packed sequence of its real tokens (no padding
            in the linear layers, layer norms and hidden dropout; attention still per chunk of ``chunk_size`` rows;
            see :mod:`sentence_transformers_hybrid._packed`): the same loss, dropout at the same rate from other
            draws. BERT-family models only; another model stays on the chunked path (its ``training_path`` says
            why). Not combinable with ``compile_encoder``.
        fast_dropout: with ``chunk_size``, draw the dropout masks inside the loss's forward from 64-bit random
            integers (:mod:`sentence_transformers_hybrid._dropout`): the same rate (up to ``2**-33``), a cheaper
            mask, another random stream.

    Returns:
        ``MultipleNegativesRankingLoss`` (``LengthSortedMultipleNegativesRankingLoss`` with ``chunk_size``) or
        ``CachedMultipleNegativesRankingLoss``, with cosine similarity.

    Example::

        >>> from sentence_transformers import SentenceTransformer
        >>> from sentence_transformers.models import StaticEmbedding
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
        >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> model = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_dim=8)])
        >>> loss = hybrid_loss(model)
        >>> loss.scale, loss.similarity_fct.__name__, loss.directions
        (20.0, 'cos_sim', ('query_to_doc',))
    """
    if temperature is not None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        # None, not the paper's value, means "not given": scale=20.0 with temperature=0.1 is a contradiction
        if scale is not None and abs(scale * temperature - 1.0) > 1e-9:
            raise ValueError(f"scale={scale} and temperature={temperature} disagree (scale = 1 / temperature): "
                             "give one of the two")
        scale = 1.0 / temperature
    elif scale is None:
        scale = PAPER_SCALE
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if cached and mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
    if chunk_size is not None and cached:
        raise ValueError(
            f"chunk_size={chunk_size} and cached=True: the cached loss already embeds mini-batches of "
            "mini_batch_size rows; give one of the two"
        )
    if compile_encoder and chunk_size is None:
        raise ValueError("compile_encoder=True needs chunk_size (the compiled path encodes length-sorted chunks)")
    if pack_tokens and chunk_size is None:
        raise ValueError("pack_tokens=True needs chunk_size (the rows of a chunk attend together)")
    if fast_dropout and chunk_size is None:
        raise ValueError("fast_dropout=True needs chunk_size (it is an option of the chunked loss)")
    kwargs = dict(
        scale=float(scale),
        similarity_fct=cos_sim,
        gather_across_devices=gather_across_devices,
        directions=("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",),
        partition_mode="per_direction" if symmetric else "joint",
    )
    if cached:
        return CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size, **kwargs)
    if chunk_size is not None:
        return LengthSortedMultipleNegativesRankingLoss(model, chunk_size=chunk_size, compile_encoder=compile_encoder,
                                                        pack_tokens=pack_tokens, fast_dropout=fast_dropout, **kwargs)
    return MultipleNegativesRankingLoss(model, **kwargs)


class LengthSortedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """``MultipleNegativesRankingLoss`` whose columns are encoded in length-sorted chunks.

    The contrastive batch stays whole: every anchor is still scored against every candidate of the batch (and of
    the other processes with ``gather_across_devices``), by the parent's unchanged
    ``compute_loss_from_embeddings``. Only how the embeddings are computed changes: the rows of a column are sorted
    by length, encoded ``chunk_size`` at a time with the token columns (``input_ids``, ``attention_mask``,
    ``token_type_ids``, ...) cut to the chunk's longest sequence, and the embeddings are put back in the batch's
    order. Without dropout this gives the stock loss's value and gradients up to float rounding; it saves the
    compute the stock loss spends on padding, which on a CPU (where cost grows with the padded width) is most of
    the forward and backward for batches of short and long texts (LAReQA answer sentences: ~50 tokens on
    average, ~120 for a batch of 64 padded to its longest).

    The anchor column is encoded on its own; the candidate columns (positive and hard negatives) are merged into
    one pool first, as the stock loss does, and that pool is sorted. Keys whose rows are not the batch's (batch
    metadata such as ``prompt_length`` when an int, non-tensors) are passed to every chunk untouched. Inputs
    without a padded 2-D ``attention_mask``/``input_ids`` (a ``StaticEmbedding``'s flat token stream, flattened
    FA2 batches) are encoded whole, as by the stock loss.

    With ``embed_once`` (default) the word pieces of all columns are looked up in one call and handed to the model
    as ``inputs_embeds`` (for a ``Transformer`` module whose model takes them, on right-padded batches), so that
    the word-embedding matrix gets one dense gradient per step rather than one per chunk: with a 67k-piece
    vocabulary each is a 104 MB tensor to zero-fill and then add up, which the chunks would otherwise multiply.

    Each chunk is its own forward with gradients kept, so activations of the whole batch stay in memory (unlike
    :class:`~sentence_transformers.losses.CachedMultipleNegativesRankingLoss`); smaller chunks mean less padding
    but more, smaller matrix products. Wrapper losses that hand state between calls through the feature dicts
    (``AdaptiveLayerLoss``) do not see the chunks' dicts.

    With ``compile_encoder`` the encoder layers run compiled by ``torch.compile`` (inductor: fused element-wise
    kernels, dropout masks from inductor's own generator at the same rate) inside this loss's forward only (see
    :mod:`sentence_transformers_hybrid._compile`; outside it the model is the eager one). So that one graph serves
    many steps, every chunk has ``chunk_size`` rows (a short last chunk is filled with copies of its first row,
    whose embeddings are dropped, so they get no gradient) and a width rounded up to one of
    :data:`~sentence_transformers_hybrid._compile.WIDTH_BUCKETS` (added positions are padding: attention mask 0,
    zero embeddings). The loss, its in-batch negatives and the gradients are those of the uncompiled path up to
    float rounding; a new shape is a new compile, counted in :meth:`training_path`. Without a working compiler:
    one ``RuntimeWarning`` naming it, and the uncompiled path.

    With ``pack_tokens`` each column is one packed sequence of its real tokens, longest row first, through the
    model's own forward (positions per token, ``cu_seq_lens_q`` for ``Pooling``), and only attention is computed per
    chunk of ``chunk_size`` rows (:mod:`sentence_transformers_hybrid._packed`): the linear layers, layer norms, GELU
    and hidden dropout run on real tokens only, as one matrix per layer. Same loss and gradients up to float
    rounding without dropout; with dropout the same rate from other draws. Models outside the BERT family, or
    columns that are not right-padded, stay on the chunked path (``training_path()["packed"]`` is then ``False``
    and ``pack_problem`` says why).

    ``embed_once=False`` calls sentence-transformers' own ``embed_columns`` (the anchor column alone, the candidate
    columns merged into one forward) with the chunked encoder in the model's place. ``embed_once=True`` cannot:
    ``embed_columns`` calls the model once per column (anchor, then the merged candidates), and each call would look
    up its own word pieces, i.e. one dense word-embedding gradient per column. The single lookup must see every
    column's token ids before any forward, so this loss merges the candidates with the same stock
    ``merge_feature_batches`` first, looks up once, and then encodes each column.

    Args:
        model: the model being trained.
        chunk_size: rows per forward pass (>= 1); a chunk size of at least the batch size means one forward per
            column, at the column's own longest sequence, as in the stock loss.
        embed_once: one word-embedding lookup per step for all columns and chunks (see above); ``False``: each
            chunk's forward looks up its own tokens.
        compile_encoder: run the encoder layers compiled, on bucketed chunk shapes (see above).
        pack_tokens: encode each column packed, without padding outside attention (see above).
        fast_dropout: dropout masks from 64-bit random draws inside the forward (same rate, cheaper; see
            :mod:`sentence_transformers_hybrid._dropout`).
        **kwargs: the arguments of ``MultipleNegativesRankingLoss`` (``scale``, ``similarity_fct``, ``directions``,
            ``partition_mode``, ``gather_across_devices``, ``hardness_mode``, ``hardness_strength``).

    Example::

        >>> import tempfile, torch
        >>> from sentence_transformers import SentenceTransformer
        >>> from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
        >>> from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        >>> from tokenizers import Tokenizer, models, pre_tokenizers, processors
        >>> from transformers import BertConfig, BertModel, PreTrainedTokenizerFast
        >>> words = "[PAD] [UNK] [CLS] [SEP] who wrote faust goethe in weimar the capital of france is paris".split()
        >>> tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
        >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> tok.post_processor = processors.TemplateProcessing(
        ...     single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        >>> path = tempfile.mkdtemp()
        >>> hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
        >>> _ = hf_tok.save_pretrained(path)
        >>> _ = torch.manual_seed(0)
        >>> config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...                     intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        >>> BertModel(config).save_pretrained(path)
        >>> transformer = Transformer(path)
        >>> model = SentenceTransformer(modules=[transformer, Pooling(16, pooling_mode="mean")], device="cpu")
        >>> chunked = hybrid_loss(model, chunk_size=2)
        >>> type(chunked).__name__, chunked.chunk_size, chunked.scale
        ('LengthSortedMultipleNegativesRankingLoss', 2, 20.0)
        >>> queries = ["who wrote faust", "the capital of france", "who", "faust"]
        >>> passages = ["goethe wrote faust in weimar", "paris", "the capital of france is paris", "goethe"]
        >>> features = [model.preprocess(queries), model.preprocess(passages)]
        >>> with torch.no_grad():
        ...     stock = MultipleNegativesRankingLoss(model)(features, None)
        ...     torch.allclose(chunked(features, None), stock, atol=1e-6)
        True
    """

    def __init__(self, model: SentenceTransformer, chunk_size: int = 16, *, embed_once: bool = True,
                 compile_encoder: bool = False, pack_tokens: bool = False, fast_dropout: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        if compile_encoder and pack_tokens:
            raise ValueError("compile_encoder=True and pack_tokens=True: the compiled path pads chunks to fixed shapes, "
                             "the packed one removes the padding; give one of the two")
        self.chunk_size = chunk_size
        self.embed_once = bool(embed_once)
        self.compile_encoder = bool(compile_encoder)
        self.pack_tokens = bool(pack_tokens)
        self.fast_dropout = bool(fast_dropout)
        self.pack_problem = packing_problem(model) if self.pack_tokens else None
        if self.pack_problem:
            logger.warning("pack_tokens=True but %s: the columns are encoded in padded chunks", self.pack_problem)
        # the packed rows' first position (a walk over the model's modules: once, not per column); None: not packed
        self._position_offset = position_offset(model) if self.pack_tokens and not self.pack_problem else None
        self._packed_columns = 0
        self._layers = CompiledLayers(model, enabled=self.compile_encoder, what=type(self).__name__)

    def training_path(self) -> dict[str, Any]:
        """Which path the forward ran, for the run record: compiled or not (and why not), the graphs built, packed
        or not (and why not)."""
        path = {"loss": type(self).__name__, "chunk_size": self.chunk_size, "embed_once": self.embed_once,
                **self._layers.describe()}
        if self.pack_tokens:
            path.update(packed=self.pack_problem is None and self._packed_columns > 0, pack_problem=self.pack_problem,
                        packed_columns=self._packed_columns)
            if path["packed"]:
                path["path"] = "packed"
        if self.fast_dropout:
            path["dropout"] = "bits (64-bit draws)"
        return path

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        with fast_dropout_active(self.fast_dropout):
            return self._forward(sentence_features, labels)

    def _forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        features = list(sentence_features)
        if not features:
            raise ValueError("Expected at least 2 embeddings, got 0")
        if not self.embed_once and embed_columns is not None:
            chunked = _ChunkedEncoder(self)
            return self.compute_loss_from_embeddings(embed_columns(chunked, features), labels)
        candidates = features[1:]
        merged = merge_feature_batches(candidates) if len(candidates) > 1 and merge_feature_batches else None
        columns = [features[0], *(candidates if merged is None else [merged])]
        if self.embed_once:
            columns = self._looked_up(columns)
        embeddings = [self.embed_length_sorted(column) for column in columns]
        if merged is not None:
            pool = embeddings.pop()
            embeddings += list(pool.reshape(len(candidates), -1, *pool.shape[1:]).unbind(0))
        return self.compute_loss_from_embeddings(embeddings, labels)

    def _looked_up(self, columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The columns with ``input_ids`` replaced by ``inputs_embeds`` from one word-embedding lookup for all.

        A lookup per chunk would give the word-embedding matrix one dense (vocabulary x hidden) gradient per chunk,
        each zero-filled and then summed; one lookup gives one per step. Only where that is the same computation: a
        ``Transformer`` module whose model takes ``inputs_embeds`` (its embeddings module then adds positions and
        token types as it does for ``input_ids``) and right-padded batches (positions counted from the first
        column, as models that derive them from ``input_ids`` do); otherwise the columns are returned unchanged.
        """
        try:
            module = self.model[0]
            lookup = module.auto_model.get_input_embeddings()
            takes_embeds = "inputs_embeds" in inspect.signature(module.auto_model.forward).parameters
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            return columns
        if not isinstance(lookup, torch.nn.Module) or not takes_embeds:
            return columns
        for column in columns:
            ids, mask = column.get("input_ids"), column.get("attention_mask")
            if not (isinstance(ids, Tensor) and isinstance(mask, Tensor) and ids.ndim == 2 and mask.shape == ids.shape):
                return columns
            if "inputs_embeds" in column or "cu_seq_lens_q" in column:
                return columns
            if not _right_padded(mask.bool()):
                return columns
        flat = lookup(torch.cat([column["input_ids"].reshape(-1) for column in columns]))
        out = []
        for column, part in zip(columns, flat.split([column["input_ids"].numel() for column in columns])):
            column = {key: value for key, value in column.items() if key != "input_ids"}
            column["inputs_embeds"] = part.reshape(*column["attention_mask"].shape, -1)
            out.append(column)
        return out

    def embed_length_sorted(self, features: dict[str, Any]) -> Tensor:
        """``self.model(features)["sentence_embedding"]``, computed in length-sorted chunks of ``chunk_size`` rows."""
        mask = features.get("attention_mask")
        if not isinstance(mask, Tensor) or mask.ndim != 2:
            mask = features.get("input_ids")
            mask = mask.new_ones(mask.shape) if isinstance(mask, Tensor) and mask.ndim == 2 else None
        if mask is None or "cu_seq_lens_q" in features:
            return self.model(features)["sentence_embedding"]
        rows, width = mask.shape
        active = mask.bool()
        if self._position_offset is not None and mask is features.get("attention_mask") and _right_padded(active):
            return self._embed_packed(features, active.sum(dim=1))
        # the width each row needs: one past its last attended position (leading padding stays, as positions may
        # depend on it; with right padding this is the row's length)
        needed = torch.where(active, torch.arange(1, width + 1, device=mask.device), 0).amax(dim=1)
        compiled = self._layers.compiled
        if rows <= self.chunk_size and not compiled:
            return self.model(self._take(features, None, int(needed.max()), rows, width))["sentence_embedding"]
        order = torch.sort(needed, descending=True, stable=True).indices
        chunks = []
        for begin in range(0, rows, self.chunk_size):
            index = order[begin : begin + self.chunk_size]
            n, cut = len(index), int(needed[index[0]])
            if compiled:  # fixed shapes: chunk_size rows (copies of the first row dropped below), bucketed widths
                cut = bucket_width(cut, limit=getattr(self.model, "max_seq_length", None))
                if n < self.chunk_size:
                    index = torch.cat([index, index[:1].expand(self.chunk_size - n)])
            chunk = self._take(features, index, cut, rows, width)
            if compiled:
                new = self._layers.note_shape(len(index), cut)
                embedded = self._layers.run(self._encode, chunk, device_type=mask.device.type, new_shape=new)
                chunks.append(embedded[:n])
                compiled = self._layers.compiled  # False from here on when that compile failed
            else:
                chunks.append(self._encode(chunk))
        return torch.cat(chunks, dim=0)[inverse_permutation(order)]

    def _encode(self, chunk: dict[str, Any]) -> Tensor:
        return self.model(chunk)["sentence_embedding"]

    def _embed_packed(self, features: dict[str, Any], lengths: Tensor) -> Tensor:
        """The column as one packed sequence, longest row first (the chunked path's order, so its attention chunks
        are the chunked path's chunks); embeddings returned in the batch's order."""
        order = torch.sort(lengths, descending=True, stable=True).indices
        packed, plan = pack_column(features, order, lengths, self.chunk_size, offset=self._position_offset)
        with packed_attention_active(self.model, plan):
            embedded = self.model(packed)["sentence_embedding"]
        self._packed_columns += 1
        return embedded[inverse_permutation(order)]

    @staticmethod
    def _take(features: dict[str, Any], index: Tensor | None, cut: int, rows: int, width: int) -> dict[str, Any]:
        """The rows ``index`` (all if None) of every per-row tensor, token axes cut to ``cut`` columns (or padded
        with zeros to ``cut`` when wider than the batch: masked-out positions)."""
        out = {}
        for key, value in features.items():
            if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != rows:
                out[key] = value
                continue
            if index is not None:
                value = value[index]
            if value.ndim >= 2 and value.shape[1] == width and cut < width:
                value = value[:, :cut]
            elif value.ndim >= 2 and value.shape[1] == width and cut > width:
                value = torch.nn.functional.pad(value, [0, 0] * (value.ndim - 2) + [0, cut - width])
            out[key] = value
        return out

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "chunk_size": self.chunk_size, "embed_once": self.embed_once,
                "compile_encoder": self.compile_encoder, "pack_tokens": self.pack_tokens,
                "fast_dropout": self.fast_dropout}


def _right_padded(active: Tensor) -> bool:
    """Whether every row of the boolean attention mask ``active`` starts attended and never attends after a gap."""
    return bool(active[:, 0].all()) and bool((active[:, 1:] <= active[:, :-1]).all())


class _ChunkedEncoder:
    """What ``embed_columns`` calls as the model: ``{"sentence_embedding": loss.embed_length_sorted(features)}``."""

    def __init__(self, loss: LengthSortedMultipleNegativesRankingLoss) -> None:
        self.loss = loss

    def __call__(self, features: dict[str, Any]) -> dict[str, Tensor]:
        return {"sentence_embedding": self.loss.embed_length_sorted(features)}


__all__ = ["PAPER_SCALE", "PAPER_TEMPERATURE", "LengthSortedMultipleNegativesRankingLoss", "hybrid_loss"]


class ParallelConsistencyLoss(torch.nn.Module):
    """A contrastive loss plus a parallel-query consistency term: a question and its translation should rank the
    batch's candidates alike.

    The inputs are the columns of
    :func:`~sentence_transformers_hybrid.sampling.parallel.parallel_query_dataset`: ``(query, passage[, hard
    negatives...], query_parallel)``, the translation last. ``base_loss`` (a ``MultipleNegativesRankingLoss`` or a
    subclass, e.g. :func:`hybrid_loss`'s) sees the other columns as it would without the translation, so its value
    and its in-batch negatives are unchanged. With ``s`` its scale and ``sim`` its similarity, the candidates ``C``
    (every passage and hard negative of the batch) and, for row ``i``, ``p_i = softmax(s * sim(q_i, C))`` and
    ``p'_i = softmax(s * sim(q'_i, C))``::

        loss = base_loss(query, passage, ...) + weight * mean_i [KL(p_i || p'_i) + KL(p'_i || p_i)]

    (the symmetric KL is ``sum_c (p_ic - p'_ic) (log p_ic - log p'_ic)``). Gradients flow through both questions.
    The translation's embedding is computed like the other columns': by ``base_loss.embed_length_sorted`` where the
    base loss has one (:class:`LengthSortedMultipleNegativesRankingLoss`), else one forward of the model.

    Args:
        model: the model being trained.
        base_loss: the contrastive loss (default: ``hybrid_loss(model)``, the paper's MNRL at scale 20).
        weight: ``beta`` of the consistency term (>= 0; 0 gives ``base_loss``'s value).

    Example::

        >>> import numpy as np, torch
        >>> from sentence_transformers import SentenceTransformer
        >>> from sentence_transformers.sentence_transformer.modules import StaticEmbedding
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> words = ["[UNK]", "who", "wrote", "faust", "wer", "schrieb", "goethe", "paris", "capital"]
        >>> tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
        >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> weights = np.random.default_rng(0).standard_normal((len(words), 8)).astype("float32")
        >>> model = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=weights)])
        >>> loss = ParallelConsistencyLoss(model, weight=0.5)
        >>> columns = [["who wrote faust", "capital"], ["goethe", "paris"], ["wer schrieb faust", "capital"]]
        >>> features = [model.preprocess(c) for c in columns]
        >>> base = loss.base_loss(features[:2], None)
        >>> bool(loss(features, None) > base), loss.weight
        (True, 0.5)
    """

    def __init__(self, model: SentenceTransformer, base_loss: MultipleNegativesRankingLoss | None = None,
                 weight: float = 0.1) -> None:
        super().__init__()
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"weight must be a number >= 0, got {weight!r}")
        self.model = model
        self.base_loss = base_loss if base_loss is not None else hybrid_loss(model)
        if not hasattr(self.base_loss, "compute_loss_from_embeddings"):
            raise TypeError(f"base_loss must be a MultipleNegativesRankingLoss (it has compute_loss_from_embeddings), "
                            f"got {type(self.base_loss).__name__}")
        self.weight = float(weight)

    @property
    def scale(self) -> float:
        return float(self.base_loss.scale)

    def _embed(self, features: dict[str, Any]) -> Tensor:
        embed = getattr(self.base_loss, "embed_length_sorted", None)
        return embed(features) if callable(embed) else self.model(features)["sentence_embedding"]

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        # the translation's column is encoded here, outside the base loss's forward: with its dropout masks
        with fast_dropout_active(bool(getattr(self.base_loss, "fast_dropout", False))):
            return self._forward(sentence_features, labels)

    def _forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        features = list(sentence_features)
        if len(features) < 3:
            raise ValueError(f"ParallelConsistencyLoss needs the columns (query, passage, ..., query_parallel), got "
                             f"{len(features)}: train on parallel_query_dataset(corpus)")
        embeddings = [self._embed(f) for f in features]
        *columns, parallel = embeddings
        base = self.base_loss.compute_loss_from_embeddings(columns, labels)
        if self.weight == 0.0:
            return base
        return base + self.weight * self.consistency(columns[0], parallel, torch.cat(columns[1:], dim=0))

    def consistency(self, queries: Tensor, parallel: Tensor, candidates: Tensor) -> Tensor:
        """The mean symmetric KL between the softmax rows of ``queries`` and ``parallel`` over ``candidates``."""
        sim = self.base_loss.similarity_fct
        log_p = torch.log_softmax(self.scale * sim(queries, candidates), dim=-1)
        log_q = torch.log_softmax(self.scale * sim(parallel, candidates), dim=-1)
        return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1).mean()

    def get_config_dict(self) -> dict[str, Any]:
        base = self.base_loss.get_config_dict() if hasattr(self.base_loss, "get_config_dict") else {}
        return {"base_loss": type(self.base_loss).__name__, **base, "consistency_weight": self.weight}


__all__ += ["ParallelConsistencyLoss"]
