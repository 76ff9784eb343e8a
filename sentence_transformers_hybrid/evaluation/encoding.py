"""What the retrieval evaluators share: their encoding settings, query / document encoding, and cosine scores."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .._utils import default_progress

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger("sentence_transformers_hybrid.evaluation")

__all__ = ["QueryDocumentEncoding", "Similarity", "cosine_scores"]

Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``[len(a) x len(b)]`` in float32, also inside a bf16 ``torch.autocast`` (embeddings may be
    encoded in bf16; scores in bf16 would tie where float32 ranks, and change the metrics).

    Example::

        >>> import torch
        >>> from sentence_transformers_hybrid.evaluation.encoding import cosine_scores
        >>> q = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.bfloat16)
        >>> d = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
        >>> s = cosine_scores(q, d)
        >>> s.dtype, [[round(x, 4) for x in row] for row in s.tolist()]
        (torch.float32, [[1.0, 0.0], [0.7071, 0.7071]])
    """
    with torch.autocast(a.device.type, enabled=False):
        a = torch.nn.functional.normalize(a.float(), dim=-1)
        b = torch.nn.functional.normalize(b.float(), dim=-1)
        return a @ b.T


class QueryDocumentEncoding:
    """What both evaluators share: the encoding settings, encoding queries / documents with them, and their config."""

    _PROMPT_KEYS = ("query_prompt", "query_prompt_name", "corpus_prompt", "corpus_prompt_name", "truncate_dim")

    def set_encoding(self, batch_size: int, query_prompt: str | None, corpus_prompt: str | None,
                      query_prompt_name: str | None, corpus_prompt_name: str | None,
                      show_progress_bar: bool | None, truncate_dim: int | None, write_csv: bool) -> None:
        self.batch_size = batch_size
        self.query_prompt = query_prompt
        self.corpus_prompt = corpus_prompt
        self.query_prompt_name = query_prompt_name
        self.corpus_prompt_name = corpus_prompt_name
        self.show_progress_bar = default_progress(show_progress_bar, logger)
        self.truncate_dim = truncate_dim
        self.write_csv = write_csv

    def encode_texts(self, model: SentenceTransformer, texts: list[str], side: str) -> torch.Tensor:
        """``model.encode_query`` (side "query") or ``model.encode_document`` (side "corpus") with our settings."""
        encode = model.encode_query if side == "query" else model.encode_document
        return encode(
            texts,
            prompt_name=getattr(self, f"{side}_prompt_name"),
            prompt=getattr(self, f"{side}_prompt"),
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
            convert_to_tensor=True,
            truncate_dim=self.truncate_dim,
        )

    def prompt_config(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._PROMPT_KEYS if getattr(self, key) is not None}
