"""The paper's loss: stock ``MultipleNegativesRankingLoss`` with in-batch negatives, configured in one place.

Elmahdy et al. (EMNLP 2024) train with the in-batch-negatives contrastive loss (InfoNCE) over cosine similarity at
temperature 0.05, i.e. sentence-transformers' ``MultipleNegativesRankingLoss(model, scale=20.0,
similarity_fct=cos_sim)``. The batches, not the loss, carry the method: pair it with
:class:`~sentence_transformers_hybrid.sampling.HybridBatchSampler`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.util import cos_sim

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

PAPER_TEMPERATURE = 0.05
PAPER_SCALE = 1.0 / PAPER_TEMPERATURE


def hybrid_loss(
    model: SentenceTransformer,
    scale: float = PAPER_SCALE,
    *,
    temperature: float | None = None,
    symmetric: bool = False,
    cached: bool = False,
    mini_batch_size: int = 32,
    gather_across_devices: bool = False,
) -> MultipleNegativesRankingLoss | CachedMultipleNegativesRankingLoss:
    """The paper's contrastive loss as a stock sentence-transformers loss object.

    Args:
        model: the model being trained.
        scale: inverse softmax temperature, as sentence-transformers names it (paper: 20, i.e. temperature 0.05).
        temperature: alternatively the temperature itself; ``scale = 1 / temperature``. Give one of the two.
        symmetric: also rank queries for each passage (``directions=("query_to_doc", "doc_to_query")``, one softmax
            per direction, averaged), as in ``MultipleNegativesSymmetricRankingLoss``.
        cached: use ``CachedMultipleNegativesRankingLoss`` (GradCache): the same loss value and gradients, with memory
            bounded by ``mini_batch_size`` instead of the batch size; for batches of 100+ on small GPUs.
        mini_batch_size: chunk size of the cached loss.
        gather_across_devices: gather embeddings across processes, so the in-batch negatives of one step are the
            ``W * batch_size`` examples of all ranks. ``HybridBatchSampler`` makes those one global batch (same
            batch type, distinct groups), so this is safe with it.

    Returns:
        ``MultipleNegativesRankingLoss`` or ``CachedMultipleNegativesRankingLoss`` with cosine similarity.

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
        if scale != PAPER_SCALE and abs(scale * temperature - 1.0) > 1e-9:
            raise ValueError(f"scale={scale} and temperature={temperature} disagree (scale = 1 / temperature)")
        scale = 1.0 / temperature
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if cached and mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
    kwargs = dict(
        scale=float(scale),
        similarity_fct=cos_sim,
        gather_across_devices=gather_across_devices,
        directions=("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",),
        partition_mode="per_direction" if symmetric else "joint",
    )
    if cached:
        return CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size, **kwargs)
    return MultipleNegativesRankingLoss(model, **kwargs)


__all__ = ["PAPER_SCALE", "PAPER_TEMPERATURE", "hybrid_loss"]
