"""Loader for raw SQuAD-format files (XQuAD, MLQA, your own translations) as a :class:`RetrievalBenchmark`.

Paragraphs are split into sentences with `sentencex <https://pypi.org/project/sentencex/>`_ (Wikimedia's
rule-based splitter): it is maintained, pure Python, installs from PyPI with no model or data download at run time,
and covers ~250 languages through language fallback chains, so a language we never tested still gets a sensible
splitter (terminal punctuation of its script) instead of an error.

:func:`squad_to_corpus` reads the same files as monolingual training data for translate-train: question -> its
paragraph, or the sentence holding its answer; whatever it removes is counted, logged and listed in
``corpus.report``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from .benchmark import LanguageSplit, RetrievalBenchmark, build_split, checked_question, paragraph_questions
from .lareqa import read_json, squad_paragraphs
from .corpus import ParallelCorpus
from .validation import DataValidationError, Issue, ValidationReport, Validator, log_removed

logger = logging.getLogger(__name__)

_LANG_CODE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def split_sentences(text: str, language: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Split ``text`` into sentences; returns the sentences and their ``[start, end)`` character spans in ``text``.

    Leading and trailing whitespace is not part of a sentence; whitespace-only segments are dropped.

    Example::

        >>> split_sentences("Paris is big. It is old.", "en")
        (['Paris is big.', 'It is old.'], [(0, 13), (14, 24)])
    """
    from sentencex import segment

    sentences: list[str] = []
    spans: list[tuple[int, int]] = []
    offset = 0
    for seg in segment(language, text):
        pos = text.find(seg, offset)
        if pos < 0:  # the splitter changed the text: fall back to the running offset
            pos = offset
        stripped = seg.strip()
        if stripped:
            start = pos + (len(seg) - len(seg.lstrip()))
            sentences.append(stripped)
            spans.append((start, start + len(stripped)))
        offset = pos + len(seg)
    return sentences, spans


def load_squad_parallel(
    files: Mapping[str, str | Path],
    name: str = "squad-parallel",
    strict: bool = True,
) -> RetrievalBenchmark:
    """Build a :class:`RetrievalBenchmark` from one SQuAD-format file per language (e.g. XQuAD or MLQA).

    Questions are aligned across languages by their ``id``; each paragraph is split into sentences
    (:func:`split_sentences`), and a question's relevant candidate is the sentence holding its ``answer_start``.

    Args:
        files: ``{language code: path to a SQuAD v1.1 JSON file}``.
        name: the benchmark's name.
        strict: raise on the first bad question (default) or skip and report it in ``bench.report``.

    Example::

        >>> import os
        >>> xquad = os.path.join(os.environ["STH_DATA_DIR"], "xquad-r")   # LAReQA's files are SQuAD-format too
        >>> bench = load_squad_parallel({"en": f"{xquad}/en.json", "de": f"{xquad}/de.json"}, name="xquad")
        >>> bench.languages, len(bench.splits["en"].questions)
        (['de', 'en'], 1190)
    """
    if not files:
        raise ValueError("load_squad_parallel needs at least one {language: path}")
    validator = Validator(strict)
    splits: dict[str, LanguageSplit] = {}
    for lang, path in files.items():
        if not isinstance(lang, str) or not _LANG_CODE.match(lang):
            raise DataValidationError(
                f"unknown language {lang!r} for file {str(path)!r}: expected an ISO 639 code such as 'en' or 'zh'"
            )
        path = Path(path)
        if not path.is_file():
            raise DataValidationError(f"file {str(path)!r} not found (language {lang!r})")
        paragraphs = squad_paragraphs(read_json(path), str(path))
        prepared = []
        for par in paragraphs:
            sentences, spans = split_sentences(par["context"], lang)
            if not sentences:
                sentences, spans = [par["context"]], [(0, len(par["context"]))]
            prepared.append({**par, "sentences": sentences, "sentence_breaks": spans})
        splits[lang] = build_split(lang, prepared, str(path), validator)
    report = validator.finish(f"load_squad_parallel({name!r})")
    return RetrievalBenchmark(splits, name=name, report=report)


def squad_to_corpus(
    path_or_paths: str | Path | Sequence[str | Path],
    language: str,
    name: str = "squad",
    passage: str = "context",
    strict: bool = True,
) -> ParallelCorpus:
    """Read SQuAD-format files into a single-language ParallelCorpus: one group per answerable question.

    Args:
        path_or_paths: one file or several (e.g. SQuAD train + dev); question ids must be unique across them.
        language: the language code of the files (``"en"`` for SQuAD).
        name: the ``source`` name of every group (what the sampler balances on).
        passage: ``"context"`` (the whole paragraph, as in LAReQA's candidates with context) or ``"sentence"``
            (the sentence holding the answer: the paragraph's own ``sentences`` / ``sentence_breaks`` when the
            file has them, as in LAReQA files, else :func:`~sentence_transformers_hybrid.data.split_sentences`).
        strict: malformed questions (no id, empty text, answer outside the paragraph, duplicate id) raise
            :class:`DataValidationError` (default) or, with ``False``, are skipped and reported. Unanswerable
            questions (SQuAD 2.0 ``is_impossible`` or no answer) have no positive passage: they are always
            skipped, counted and reported in ``corpus.report``.

    Example::

        >>> import os
        >>> path = os.path.join(os.environ["STH_DATA_DIR"], "xquad-r", "en.json")   # any SQuAD v1.1 / v2.0 file
        >>> corpus = squad_to_corpus(path, "en", name="xquad-en")
        >>> corpus.sources, corpus.languages, len(corpus)
        (['xquad-en'], ['en'], 1190)
    """
    if passage not in ("context", "sentence"):
        raise ValueError(f"passage must be 'context' or 'sentence', got {passage!r}")
    if not isinstance(language, str) or not language.strip():
        raise ValueError(f"language must be a language code such as 'en', got {language!r}")
    paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    if not paths:
        raise ValueError("squad_to_corpus needs at least one file")
    validator = Validator(strict)
    removed = ValidationReport()
    groups: list[str] = []
    queries: list[str] = []
    passages: list[str] = []
    seen: dict[str, str] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataValidationError(f"file {str(path)!r} not found")
        file = str(path)
        for p_idx, par in enumerate(squad_paragraphs(read_json(path), file)):
            context = par["context"]
            spans: np.ndarray | None = None
            sentences: list[str] = []
            for q_idx, qa in enumerate(paragraph_questions(par, p_idx, file, language, validator)):
                checked = checked_question(qa, p_idx, q_idx, file, language, validator, seen)
                if checked is None:
                    continue
                qid, question, where = checked
                answers = qa.get("answers") or []
                if qa.get("is_impossible") or not answers:
                    removed.issues.append(Issue("unanswerable question: no positive passage", **where))
                    continue
                text = context
                if passage == "sentence":
                    start = answers[0].get("answer_start") if isinstance(answers[0], dict) else None
                    if not isinstance(start, int) or not 0 <= start < len(context):
                        validator.problem(f"answer_start {start!r} outside the paragraph (length {len(context)})", **where)
                        continue
                    if spans is None:
                        sentences, spans = _paragraph_sentences(par, language)
                    s = int(np.searchsorted(spans[:, 1], start, side="right"))
                    if s >= len(sentences):
                        validator.problem(f"answer_start {start} after the last sentence", **where)
                        continue
                    text = sentences[s]
                seen[qid] = f"in {file!r}"
                groups.append(qid)
                queries.append(question)
                passages.append(text)
    report = validator.finish(f"squad_to_corpus({name!r})")
    removed.issues.extend(report.issues)
    log_removed(f"squad_to_corpus({name!r})", removed.issues, len(groups))
    table = pa.table(
        {
            "group": pa.array(groups, pa.string()),
            "lang": pa.array([language] * len(groups), pa.string()),
            "query": pa.array(queries, pa.large_string()),
            "passage": pa.array(passages, pa.large_string()),
            "source": pa.array([name] * len(groups), pa.string()),
        }
    )
    corpus = ParallelCorpus.from_dataset(table, source_column="source", strict=strict, name=name)
    corpus.report.issues[:0] = removed.issues
    return corpus


def _paragraph_sentences(par: dict, language: str) -> tuple[list[str], np.ndarray]:
    """A paragraph's sentences and ``[start, end)`` spans: its own LAReQA fields, else split_sentences."""
    if "sentences" in par and "sentence_breaks" in par:
        return list(par["sentences"]), np.asarray(par["sentence_breaks"], dtype=np.int64).reshape(-1, 2)
    sentences, spans = split_sentences(par["context"], language)
    if not sentences:
        sentences, spans = [par["context"]], [(0, len(par["context"]))]
    return sentences, np.asarray(spans, dtype=np.int64).reshape(-1, 2)
