"""sentence-transformers-hybrid: hybrid-batch training and evaluation of multilingual retrievers.

The public API, nothing else: data types and loaders, the sampler and loss, the evaluators and metric kernels,
CKA, translate-train, the offline encoder converter, and the experiment runner.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .backbones import m2m100_encoder
from .beir_interop import beir_evaluate, load_beir_folder, relevance_from_qrels, run_from_scores
from .cka import (
    MinibatchCKA,
    cka_matrix,
    gram_cka,
    layer_embeddings,
    layerwise_cka,
    linear_cka,
    linear_cka_matrix,
    minibatch_cka,
    plot_cka_heatmap,
    rbf_cka,
)
from .convert import collect_texts, convert_e5_small, freeze_word_embeddings, trim_e5_weight_file, trim_vocabulary
from .data import (
    CANDIDATE_WITH_CONTEXT,
    LAREQA_LANGUAGES,
    DataValidationError,
    LanguageSplit,
    ParallelCorpus,
    RetrievalBenchmark,
    ValidationReport,
    load_lareqa,
    load_parallel_dataset,
    load_parallel_jsonl,
    load_squad_parallel,
    split_sentences,
)
from .data.sources import pairs_to_corpus, squad_to_corpus
from .evaluation import BEIRRetrievalEvaluator, MultilingualRetrievalEvaluator
from .evaluation_cka import CKAEvaluator
from .experiment import PRESETS, Preset, run_experiment
from .frozen import EmbeddingCache, EmbeddingLookup
from .hub import push_model
from .losses import hybrid_loss
from .metrics import ranking_metrics, retrieval_metrics
from .sampling import HybridBatchSampler, HybridBatchSamplerFactory, SamplerConfigCallback, training_dataset
from .translate import M2M100Translator, TranslationCache, translate_file, translate_parallel

__all__ = [
    "BEIRRetrievalEvaluator",
    "CANDIDATE_WITH_CONTEXT",
    "CKAEvaluator",
    "DataValidationError",
    "EmbeddingCache",
    "EmbeddingLookup",
    "HybridBatchSampler",
    "HybridBatchSamplerFactory",
    "LAREQA_LANGUAGES",
    "LanguageSplit",
    "M2M100Translator",
    "MinibatchCKA",
    "MultilingualRetrievalEvaluator",
    "PRESETS",
    "ParallelCorpus",
    "Preset",
    "RetrievalBenchmark",
    "SamplerConfigCallback",
    "TranslationCache",
    "ValidationReport",
    "beir_evaluate",
    "cka_matrix",
    "collect_texts",
    "convert_e5_small",
    "freeze_word_embeddings",
    "gram_cka",
    "hybrid_loss",
    "layer_embeddings",
    "layerwise_cka",
    "linear_cka",
    "linear_cka_matrix",
    "load_beir_folder",
    "load_lareqa",
    "load_parallel_dataset",
    "load_parallel_jsonl",
    "load_squad_parallel",
    "m2m100_encoder",
    "minibatch_cka",
    "pairs_to_corpus",
    "plot_cka_heatmap",
    "push_model",
    "ranking_metrics",
    "rbf_cka",
    "relevance_from_qrels",
    "retrieval_metrics",
    "run_experiment",
    "run_from_scores",
    "split_sentences",
    "squad_to_corpus",
    "translate_file",
    "translate_parallel",
    "trim_e5_weight_file",
    "training_dataset",
    "trim_vocabulary",
]
