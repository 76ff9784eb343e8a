"""Frozen-encoder training: encode texts once (cached on disk, resumable), then train a small head on the vectors.

With a frozen encoder, training ``encoder -> head`` is the same computation as training ``lookup(text) -> head``
where ``lookup`` returns the encoder's cached vector. :class:`EmbeddingLookup` is that first module: it lets the
**stock** ``SentenceTransformerTrainer``, data collator, ``HybridBatchSampler`` and MNRL train a head in seconds on
2 CPU cores. :func:`compose_with_encoder` then writes the real model (encoder modules + trained head), which
``SentenceTransformer(path)`` loads and uses on any text.

Example::

    >>> import tempfile
    >>> from sentence_transformers_hybrid.testing import tiny_static_model
    >>> texts = ["query: Who wrote Faust?", "passage: Goethe wrote Faust."]
    >>> encoder = tiny_static_model(texts, dim=8)          # the frozen encoder (the experiment: e5-small)
    >>> cache = EmbeddingCache(tempfile.mkdtemp(), model_id="tiny-static")
    >>> vectors = cache.encode(encoder, texts)
    >>> model = lookup_head_model(texts, vectors)          # EmbeddingLookup -> Dense (identity init) -> Normalize
    >>> model.encode(texts).shape
    (2, 8)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.input_module import InputModule
from tqdm.auto import tqdm

_INDEX = "index.json"


def text_key(text: str) -> str:
    """Stable key of a text (SHA-1 of its UTF-8 bytes)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """On-disk cache of a model's embeddings, keyed by model id and exact text; resumable.

    Vectors are written in ``.npy`` shards (``allow_pickle=False``) plus an ``index.json``; every finished shard is
    committed atomically, so an interrupted encoding resumes where it stopped.

    Args:
        cache_dir: the folder for this model's cache.
        model_id: identifies the encoder (and its settings); stored and checked on reopen.
        shard_size: texts per shard (the most work an interruption can lose).
    """

    def __init__(self, cache_dir: str | Path, model_id: str, shard_size: int = 512) -> None:
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.model_id = model_id
        self.shard_size = shard_size
        self._keys: dict[str, tuple[int, int]] = {}
        self._shards: dict[int, np.ndarray] = {}
        index = self.dir / _INDEX
        if index.is_file():
            meta = json.loads(index.read_text(encoding="utf-8"))
            if meta.get("model_id") != model_id:
                raise ValueError(
                    f"embedding cache {str(self.dir)!r} belongs to model {meta.get('model_id')!r}, not {model_id!r}; "
                    "use another cache folder"
                )
            self._keys = {k: (int(s), int(r)) for k, (s, r) in meta["keys"].items()}
            self._n_shards = int(meta["shards"])
        else:
            self._n_shards = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._keys

    def _commit(self) -> None:
        meta = {"model_id": self.model_id, "shards": self._n_shards, "keys": self._keys}
        tmp = self.dir / (_INDEX + ".tmp")
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp, self.dir / _INDEX)

    def _shard(self, i: int) -> np.ndarray:
        if i not in self._shards:
            self._shards[i] = np.load(self.dir / f"shard-{i:05d}.npy", allow_pickle=False)
        return self._shards[i]

    def encode(
        self,
        model: SentenceTransformer,
        texts: Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        **encode_kwargs: Any,
    ) -> np.ndarray:
        """Vectors of ``texts`` (float32 ``[n x d]``), encoding only those not cached yet."""
        missing = list(dict.fromkeys(t for t in texts if text_key(t) not in self._keys))
        if missing:
            # longest first inside each shard keeps padding low; shards are committed one by one
            bar = tqdm(total=len(missing), desc="encoding (cached)", disable=show_progress_bar is False, unit="text")
            for start in range(0, len(missing), self.shard_size):
                chunk = missing[start : start + self.shard_size]
                vecs = model.encode(chunk, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False,
                                    **encode_kwargs).astype(np.float32)
                shard = self._n_shards
                tmp = self.dir / f"shard-{shard:05d}.tmp.npy"
                np.save(tmp, vecs, allow_pickle=False)
                os.replace(tmp, self.dir / f"shard-{shard:05d}.npy")
                self._shards[shard] = vecs
                for r, t in enumerate(chunk):
                    self._keys[text_key(t)] = (shard, r)
                self._n_shards += 1
                self._commit()
                bar.update(len(chunk))
            bar.close()
        return self.lookup(texts)

    def lookup(self, texts: Sequence[str]) -> np.ndarray:
        """Cached vectors of ``texts``; a text that was never encoded raises ``KeyError`` naming it."""
        out = []
        for t in texts:
            try:
                s, r = self._keys[text_key(t)]
            except KeyError:
                raise KeyError(f"text not in the embedding cache {str(self.dir)!r}: {t[:80]!r}") from None
            out.append(self._shard(s)[r])
        return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)


class EmbeddingLookup(InputModule):
    """Input module that returns precomputed vectors for known texts (the frozen encoder's outputs).

    ``preprocess`` maps each text (with its prompt prepended, exactly as the collator or ``encode`` passes it) to a
    row of ``weights`` (as ``input_ids``); ``forward`` returns those rows as ``sentence_embedding``. Unknown texts raise ``KeyError``.
    It is a training device: save the real model with :func:`compose_with_encoder`.
    """

    def __init__(self, texts: Sequence[str], weights: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        weights = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if weights.ndim != 2 or weights.shape[0] != len(texts):
            raise ValueError(f"weights must be [len(texts) x dim], got {tuple(weights.shape)} for {len(texts)} texts")
        self.register_buffer("weights", weights, persistent=False)
        self._row = {t: i for i, t in enumerate(texts)}

    def get_embedding_dimension(self) -> int:
        return int(self.weights.shape[1])

    get_sentence_embedding_dimension = get_embedding_dimension  # sentence-transformers < 6.2

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        # Unknown texts get id -1 and fail in forward(): preprocessing alone (e.g. the trainer's model-card
        # statistics, which tokenize rows without their prompts) must not fail.
        texts = [(prompt or "") + t for t in inputs]
        ids = [self._row.get(t, -1) for t in texts]
        # named input_ids so that the trainer's collect_features() recognises the column's features
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "lookup_texts": texts}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, torch.Tensor]:
        ids = features["input_ids"]
        if (ids < 0).any():
            missing = [t for t, i in zip(features.get("lookup_texts", []), ids.tolist()) if i < 0]
            raise KeyError(f"EmbeddingLookup: {int((ids < 0).sum())} text(s) not precomputed, e.g. {missing[:1]!r}")
        features["sentence_embedding"] = self.weights[ids.to(self.weights.device)]
        return features

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("EmbeddingLookup is a training device; save with compose_with_encoder()")


def identity_dense(dim: int, bias: bool = True):
    """A ``Dense`` layer ``dim -> dim`` initialised to the identity (training starts at the frozen encoder)."""
    from sentence_transformers.base.modules.dense import Dense

    dense = Dense(dim, dim, bias=bias, activation_function=torch.nn.Identity())
    with torch.no_grad():
        dense.linear.weight.copy_(torch.eye(dim))
        if bias:
            dense.linear.bias.zero_()
    return dense


def lookup_head_model(texts: Sequence[str], vectors: np.ndarray, prompts: dict[str, str] | None = None,
                      device: str | None = None) -> SentenceTransformer:
    """``EmbeddingLookup -> Dense (identity init) -> Normalize``: the trainable stand-in of ``encoder -> head``."""
    from sentence_transformers.base.modules.normalize import Normalize

    dim = int(vectors.shape[1])
    return SentenceTransformer(
        modules=[EmbeddingLookup(texts, vectors), identity_dense(dim), Normalize()],
        prompts=prompts,
        device=device or "cpu",
    )


def compose_with_encoder(encoder_path: str, head_model: SentenceTransformer, output_path: str | Path) -> str:
    """Write ``encoder modules + trained head`` as a regular SentenceTransformer directory and return its path."""
    encoder = SentenceTransformer(encoder_path, device="cpu")
    head = [m for m in head_model if not isinstance(m, EmbeddingLookup)]
    model = SentenceTransformer(modules=[*encoder, *head], prompts=dict(encoder.prompts), device="cpu")
    model.save(str(output_path))
    return str(output_path)
