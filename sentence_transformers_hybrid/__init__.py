"""sentence-transformers-hybrid: hybrid-batch training and evaluation of multilingual retrievers.

The public API, nothing else: data types and loaders, the sampler and loss, the evaluators and metric kernels,
CKA, translate-train, the offline encoder converter, and the experiment runner. Where each lives:
``docs/architecture.md``.

Example: hybrid batches of a parallel corpus (one group = one question in every language). Each batch is X-X-mono
(one language) or X-Y (query and passage in different languages), and the translations of a question never share
a batch::

    >>> from sentence_transformers_hybrid import ParallelCorpus, HybridBatchSampler
    >>> records = [{"group": f"g{i}", "lang": lang, "query": f"q{i} {lang}", "passage": f"p{i} {lang}"}
    ...            for i in range(8) for lang in ("de", "en", "fr")]
    >>> corpus = ParallelCorpus.from_records(records)
    >>> dataset = corpus.to_dataset()
    >>> factory = HybridBatchSampler.configure(corpus, alpha=0.5, mode="hybrid")
    >>> for batch in factory(dataset, batch_size=4, drop_last=False, seed=0):  # a trainer takes factory + callback
    ...     rows = dataset[list(batch)]
    ...     print(list(zip(rows["query"], rows["passage"])))
    [('q0 en', 'p0 fr'), ('q1 de', 'p1 en'), ('q2 fr', 'p2 de'), ('q3 en', 'p3 fr')]
    [('q6 en', 'p6 en'), ('q7 en', 'p7 en'), ('q5 en', 'p5 en'), ('q4 en', 'p4 en')]
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import _compat
from .data import (
    CANDIDATE_WITH_CONTEXT,
    LAREQA_LANGUAGES,
    DataValidationError,
    LanguageSplit,
    ParallelCorpus,
    RetrievalBenchmark,
    ValidationReport,
    load_benchmark,
    load_corpus,
    load_lareqa,
    load_parallel_dataset,
    load_parallel_jsonl,
    lareqa_dev_protocol,
    load_squad_parallel,
    split_lareqa_by_article,
    split_sentences,
)
from .data import pairs_to_corpus, squad_to_corpus
from .evaluation import (
    BEIRRetrievalEvaluator,
    CKAEvaluator,
    MultilingualRetrievalEvaluator,
    beir_evaluate,
    cka_matrix,
    layer_embeddings,
    layerwise_cka,
    load_beir_folder,
    plot_cka_heatmap,
    plot_heatmap,
    relevance_from_qrels,
    run_from_scores,
)
from .data.miracl import MIRACL_LANGUAGES, MiraclData, load_miracl
from .data.passages import PassageSource
from .evaluation.miracl import MIRACLEvaluator, evaluate_miracl
from ._packed import encode_packed
from .index import CorpusIndex, SearchResult, encode_corpus, model_fingerprint, search, write_trec_run
from .metrics.trec import miracl_scores, trec_eval
from .experiment import PRESETS, Preset, push_model, run_experiment
from .losses import ParallelConsistencyLoss, hybrid_loss
from .metrics import (
    MinibatchCKA,
    gram_cka,
    linear_cka,
    linear_cka_matrix,
    minibatch_cka,
    ranking_metrics,
    rbf_cka,
    retrieval_metrics,
)
from .models import (
    EmbeddingCache,
    EmbeddingLookup,
    collect_texts,
    convert_e5_small,
    freeze_word_embeddings,
    m2m100_encoder,
    merge_models,
    trim_e5_weight_file,
    trim_vocabulary,
)
from .sampling import HybridBatchSampler, HybridBatchSamplerFactory, SamplerConfigCallback, training_dataset
from .sampling import parallel_query_dataset, save_from_main_process
from .translate import M2M100Translator, TranslationCache, translate_file, translate_parallel

_compat.install()

__all__ = [
    # MIRACL / corpus engine (issue 21)
    "MIRACL_LANGUAGES",
    "MiraclData",
    "load_miracl",
    "PassageSource",
    "MIRACLEvaluator",
    "evaluate_miracl",
    "CorpusIndex",
    "SearchResult",
    "encode_corpus",
    "encode_packed",
    "model_fingerprint",
    "search",
    "write_trec_run",
    "miracl_scores",
    "trec_eval",
    "ParallelConsistencyLoss",
    "lareqa_dev_protocol",
    "merge_models",
    "parallel_query_dataset",
    "save_from_main_process",
    "split_lareqa_by_article",
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
    "load_benchmark",
    "load_corpus",
    "load_lareqa",
    "load_parallel_dataset",
    "load_parallel_jsonl",
    "load_squad_parallel",
    "m2m100_encoder",
    "minibatch_cka",
    "pairs_to_corpus",
    "plot_cka_heatmap",
    "plot_heatmap",
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
