"""Data model and loaders: ParallelCorpus (training), RetrievalBenchmark (evaluation)."""

from __future__ import annotations

from .benchmark import CANDIDATE_WITH_CONTEXT, LanguageSplit, RetrievalBenchmark
from .corpus import ParallelCorpus
from .jsonl import load_parallel_dataset, load_parallel_jsonl
from .lareqa import LAREQA_LANGUAGES, load_lareqa
from .squad import load_squad_parallel, split_sentences
from .validation import DataValidationError, ValidationReport

__all__ = [
    "CANDIDATE_WITH_CONTEXT",
    "DataValidationError",
    "LAREQA_LANGUAGES",
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
