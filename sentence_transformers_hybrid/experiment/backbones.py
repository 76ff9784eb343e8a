"""What a preset trains: a fresh model per run, how it is saved, its prompts and its per-layer CKA.

``static`` (a StaticEmbedding, CI plumbing), ``e5-frozen`` (cached encodings + a linear head, the ``cpu`` preset),
``e5`` (the converted multilingual-e5-small, all parameters trained) and any SentenceTransformer path or Hub id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import ParallelCorpus, RetrievalBenchmark, parallel_questions
from .presets import Preset

__all__ = ["Backbone", "E5Backbone", "FrozenE5Backbone", "HubBackbone", "StaticBackbone", "make_backbone"]


class Backbone:
    """Builds a fresh model per run and saves it; subclasses implement the backbone kinds of the presets."""

    def __init__(self, preset: Preset, corpus: ParallelCorpus, bench: RetrievalBenchmark, out: Path, device: str | None):
        self.preset, self.corpus, self.bench, self.out, self.device = preset, corpus, bench, out, device

    def new_model(self, seed: int):  # pragma: no cover - interface
        raise NotImplementedError

    def pretrained_model(self):
        return self.new_model(0)

    def save(self, model, path: Path) -> None:
        model.save(str(path))

    def prompts(self) -> dict[str, str]:
        return {"query": self.preset.query_prompt, "passage": self.preset.passage_prompt}

    def layer_cka(self, model) -> list[float] | None:
        """Per-layer CKA (embedding output first) of English vs other-language questions, or None."""
        from ..evaluation.cka import layerwise_cka

        if not self.preset.cka_layers:
            return None
        pairs = parallel_questions(self.bench)
        per_lang = [
            layerwise_cka(model, [self.preset.query_prompt + t for t in en], [self.preset.query_prompt + t for t in x],
                          batch_size=self.preset.eval_batch_size, normalize=True)
            for en, x in pairs.values()
        ]
        return np.mean(np.asarray(per_lang, dtype=np.float64), axis=0).tolist()


class StaticBackbone(Backbone):
    """``StaticEmbedding`` over a Unigram tokenizer trained on the training texts (learns little transfer)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        texts = self.corpus.queries + self.corpus.passages
        trainer = trainers.UnigramTrainer(vocab_size=self.preset.static_vocab, special_tokens=["<unk>", "<pad>"],
                                          unk_token="<unk>", show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        tok.enable_padding(pad_id=tok.token_to_id("<pad>"), pad_token="<pad>")
        self.tokenizer = tok

    def new_model(self, seed: int):
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding

        torch.manual_seed(seed)
        module = StaticEmbedding(self.tokenizer, embedding_dim=self.preset.static_dim)
        return SentenceTransformer(modules=[module], device=self.device or "cpu")


class E5Backbone(Backbone):
    """The converted multilingual-e5-small, all parameters trained (gpu and finetune presets).

    With ``preset.trim_vocabulary`` the model is first trimmed to the word pieces of the training and evaluation
    texts (pieces and embeddings unchanged on them; 250k -> ~67k rows, so AdamW and the embedding gradient shrink),
    cached by content; ``preset.attn_implementation`` picks transformers' attention kernel.
    """

    def __init__(self, *args, model_path: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        from ..models.e5 import convert_e5_small

        self.model_path = model_path or convert_e5_small()
        if self.preset.trim_vocabulary:
            from ..models.trim import trimmed_model

            self.source_model_path = self.model_path
            self.model_path = trimmed_model(self.model_path, self.all_texts())

    def all_texts(self) -> list[str]:
        """Every text the experiment encodes (training queries and passages, benchmark questions and candidates)."""
        texts = self.corpus.queries + self.corpus.passages
        for s in self.bench.splits.values():
            texts += s.questions + s.candidate_texts(with_context=self.preset.candidate_context)
        return list(dict.fromkeys(texts))

    def new_model(self, seed: int):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.manual_seed(seed)
        model_kwargs = {"attn_implementation": self.preset.attn_implementation} if self.preset.attn_implementation else None
        model = SentenceTransformer(self.model_path, device=self.device, model_kwargs=model_kwargs)
        model.max_seq_length = self.preset.max_seq_length
        return model


class HubBackbone(E5Backbone):
    """Any SentenceTransformer path or Hub id (e.g. ``xlm-roberta-base``: mean pooling is added by the library)."""

    def __init__(self, *args, model_path: str | None = None, **kwargs):
        Backbone.__init__(self, *args, **kwargs)
        self.model_path = model_path or self.preset.backbone


class FrozenE5Backbone(Backbone):
    """Frozen encoder + linear head trained on cached vectors (cpu preset). See :mod:`.frozen`.

    The vectors are cached under ``cache_dir()/embeddings``, keyed by the encoder's content (weights, configs,
    tokenizer) and every encode setting (``max_seq_length``, prompts, normalisation, ``dtype``): a rerun, or another
    experiment with the same encoder and settings, encodes nothing again; another model never gets these vectors.
    ``dtype="bfloat16"`` encodes under ``torch.autocast`` (its own cache).
    """

    def __init__(self, *args, model_path: str | None = None, dtype: str = "float32", **kwargs):
        super().__init__(*args, **kwargs)
        from sentence_transformers import SentenceTransformer

        from ..models.frozen import open_embedding_cache

        if model_path is None:
            from ..models.e5 import convert_e5_small

            model_path = convert_e5_small()
        self.model_path = model_path
        self.dtype = dtype
        self.encoder = SentenceTransformer(model_path, device=self.device or "cpu")
        self.encoder.max_seq_length = self.preset.max_seq_length
        qp, pp = self.preset.query_prompt, self.preset.passage_prompt
        texts = [qp + t for t in self.corpus.queries] + [pp + t for t in self.corpus.passages]
        for s in self.bench.splits.values():
            texts += [qp + t for t in s.questions]
            texts += [pp + t for t in s.candidate_texts(with_context=self.preset.candidate_context)]
        self.texts = list(dict.fromkeys(texts))
        from .._utils import cache_dir

        self.cache = open_embedding_cache(cache_dir() / "embeddings", self.encoder, model_path=model_path,
                                          prompts={"query": qp, "passage": pp}, dtype=dtype)
        # length-sorted batches tokenized once per shard (the same vectors up to float rounding): packed, i.e. no
        # padding outside attention, where the model allows it and no compile is asked; else widths bucketed
        # (compiled layers only if the preset asks). Speeds in benchmarks/bench_encode.py.
        from .._packed import packing_problem

        if not self.preset.compile_encoder and packing_problem(self.encoder) is None:
            self.cache.use_packed_encoding(self.encoder)
        else:
            self.cache.use_bucketed_encoding(self.encoder, compile_encoder=bool(self.preset.compile_encoder))
        # longest texts first: less padding per batch, and the slowest part is done (and cached) first
        order = sorted(self.texts, key=len, reverse=True)
        self.vectors = self.cache.encode(self.encoder, order, batch_size=self.preset.eval_batch_size)
        self.texts = order

    def new_model(self, seed: int):
        import torch

        from ..models.frozen import lookup_head_model

        torch.manual_seed(seed)
        return lookup_head_model(self.texts, self.vectors, device=self.device)

    def save(self, model, path: Path) -> None:
        from ..models.frozen import compose_with_encoder

        compose_with_encoder(self.model_path, model, path)

    def layer_cka(self, model) -> list[float] | None:
        """The encoder's layers are frozen (same for every mode): CKA of the head's output only."""
        return None


def make_backbone(preset: Preset, corpus, bench, out: Path, device: str | None, model_path: str | None = None,
                  encode_dtype: str = "float32") -> Backbone:
    """The backbone of ``preset``; ``encode_dtype`` is the frozen encoder's encode dtype (``"bfloat16"``: autocast)."""
    if preset.backbone == "static":
        return StaticBackbone(preset, corpus, bench, out, device)
    if preset.backbone == "e5-frozen":
        return FrozenE5Backbone(preset, corpus, bench, out, device, model_path=model_path, dtype=encode_dtype)
    if preset.backbone == "e5":
        return E5Backbone(preset, corpus, bench, out, device, model_path=model_path)
    return HubBackbone(preset, corpus, bench, out, device, model_path=model_path)
