"""sentence-transformers-hybrid: hybrid-batch training and evaluation of multilingual retrievers."""

from __future__ import annotations

__version__ = "0.1.0"

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

__all__ = [
    "CANDIDATE_WITH_CONTEXT",
    "LAREQA_LANGUAGES",
    "DataValidationError",
    "LanguageSplit",
    "ParallelCorpus",
    "RetrievalBenchmark",
    "ValidationReport",
    "load_lareqa",
    "load_parallel_dataset",
    "load_parallel_jsonl",
    "load_squad_parallel",
    "split_sentences",
]
