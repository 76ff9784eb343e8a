"""Data model and loaders: :class:`ParallelCorpus` (training), :class:`RetrievalBenchmark` (evaluation).

* :mod:`.corpus`: ParallelCorpus; :mod:`.pair_dataset`: its pair index and ``to_dataset()``;
* :mod:`.benchmark`: RetrievalBenchmark, LanguageSplit (the LAReQA protocol), ``subsample_benchmark``,
  ``parallel_questions``;
* :mod:`.lareqa`: XQuAD-R / MLQA-R; :mod:`.articles`: a benchmark cut by article into train and dev
  (``split_lareqa_by_article``, ``lareqa_dev_protocol``); :mod:`.squad`: raw SQuAD-format files (benchmark and training corpus);
* :mod:`.pairs`: JSONL / Hugging Face parallel data, ``pairs_to_corpus``;
* :mod:`.miracl`: MIRACL topics / qrels / corpus (``load_miracl``); :mod:`.passages`: ``PassageSource`` (streamed corpus);
* :mod:`.validation`: DataValidationError, ValidationReport;
* :mod:`.arrow`: ``dataset_table`` (a Dataset's rows as it shows them); :mod:`.files`: gzip-aware opening;
* :mod:`.formats`: ``detect_format``, ``load_corpus``, ``load_benchmark`` (what a data argument names).
"""

from __future__ import annotations

from .benchmark import CANDIDATE_WITH_CONTEXT, LanguageSplit, RetrievalBenchmark, parallel_questions, subsample_benchmark
from .arrow import dataset_table
from .corpus import ParallelCorpus
from .formats import detect_format, load_benchmark, load_corpus
from .lareqa import LAREQA_LANGUAGES, load_lareqa
from .miracl import MIRACL_LANGUAGES, MiraclData, load_miracl
from .passages import PassageBatch, PassageSource
from .articles import ArticleSplit, lareqa_dev_protocol, split_lareqa_by_article
from .pairs import load_parallel_dataset, load_parallel_jsonl, pairs_to_corpus
from .squad import load_squad_parallel, split_sentences, squad_to_corpus
from .validation import DataValidationError, ValidationReport

__all__ = [
    "ArticleSplit",
    "lareqa_dev_protocol",
    "split_lareqa_by_article",
    "CANDIDATE_WITH_CONTEXT",
    "DataValidationError",
    "LAREQA_LANGUAGES",
    "LanguageSplit",
    "MIRACL_LANGUAGES",
    "MiraclData",
    "PassageBatch",
    "PassageSource",
    "ParallelCorpus",
    "RetrievalBenchmark",
    "ValidationReport",
    "dataset_table",
    "detect_format",
    "load_benchmark",
    "load_corpus",
    "load_lareqa",
    "load_miracl",
    "load_parallel_dataset",
    "load_parallel_jsonl",
    "load_squad_parallel",
    "pairs_to_corpus",
    "parallel_questions",
    "split_sentences",
    "squad_to_corpus",
    "subsample_benchmark",
]
