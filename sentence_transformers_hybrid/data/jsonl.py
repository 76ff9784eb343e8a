"""Users' own parallel training data: JSON Lines files and Hugging Face ``datasets``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .corpus import REQUIRED_FIELDS, ParallelCorpus
from .validation import DataValidationError


def load_parallel_jsonl(path: str | Path, strict: bool = True) -> ParallelCorpus:
    """Load a JSON Lines file with one record ``{"group", "lang", "query", "passage"[, "source"]}`` per line.

    Malformed JSON or a record without a required field raises :class:`DataValidationError` naming the file and
    the 1-based line; with ``strict=False`` such lines are skipped and reported in ``corpus.report``, like empty
    texts and duplicate (group, lang) rows (those name the 0-based record, i.e. the data line without blank lines).

    Example::

        >>> corpus = load_parallel_jsonl("train.jsonl")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"file {str(path)!r} not found")
    records: list[dict[str, Any]] = []
    bad: list[str] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                msg = f"file {str(path)!r}, line {lineno}: malformed JSON ({e.msg} at column {e.colno})"
                if strict:
                    raise DataValidationError(msg) from None
                bad.append(msg)
                continue
            missing = [k for k in REQUIRED_FIELDS if not isinstance(rec, dict) or k not in rec]
            if missing:
                msg = f"file {str(path)!r}, line {lineno}: missing field(s) {missing}; expected {list(REQUIRED_FIELDS)}"
                if strict:
                    raise DataValidationError(msg)
                bad.append(msg)
                continue
            records.append(rec)
    corpus = ParallelCorpus.from_records(records, strict=strict, name=str(path))
    if bad:
        from .validation import Issue

        corpus.report.issues.extend(Issue(m) for m in bad)
    return corpus


def load_parallel_dataset(
    path: str,
    split: str = "train",
    group_column: str = "group",
    language_column: str = "lang",
    query_column: str = "query",
    passage_column: str = "passage",
    source_column: str | None = None,
    **load_kwargs: Any,
) -> ParallelCorpus:
    """Load a Hugging Face data set (Hub id or local folder, via ``datasets.load_dataset``) as a ParallelCorpus.

    Example::

        >>> corpus = load_parallel_dataset("my-org/my-parallel-qa", source_column="source")  # doctest: +SKIP
    """
    from datasets import load_dataset

    dataset = load_dataset(path, split=split, **load_kwargs)
    return ParallelCorpus.from_dataset(
        dataset,
        group_column=group_column,
        language_column=language_column,
        query_column=query_column,
        passage_column=passage_column,
        source_column=source_column,
        name=path,
    )
