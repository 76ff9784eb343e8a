"""Source adapters: monolingual QA training data as a single-language :class:`ParallelCorpus`.

The paper's training data kinds, each tagged with a ``source`` name so that the sampler can draw sources
proportionally after :func:`~sentence_transformers_hybrid.translate.translate_parallel` has added the other
languages:

* :func:`squad_to_corpus`: SQuAD-format files (SQuAD, XQuAD, MLQA, LAReQA): question -> its paragraph, or the
  sentence holding its answer.
* :func:`pairs_to_corpus`: (query, positive passage) pairs from a Hugging Face ``datasets.Dataset``, as in
  Natural Questions (``sentence-transformers/natural-questions``: ``query``, ``answer``) or MS MARCO
  (``sentence-transformers/msmarco-*``: ``query``, ``positive``), with deduplication and length filters.

Whatever an adapter removes is never dropped silently: it is counted, logged with examples, and listed in
``corpus.report`` (one entry per removed row, with the reason).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .corpus import ParallelCorpus
from .lareqa import read_json, squad_paragraphs
from .validation import DataValidationError, Issue, ValidationReport, Validator

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

logger = logging.getLogger(__name__)

_EXAMPLES = 3


def _log_removed(what: str, issues: Sequence[Issue], kept: int) -> None:
    """Log a count per reason and a few examples of what an adapter removed."""
    if not issues:
        logger.info("%s: kept all %d rows", what, kept)
        return
    by_reason: dict[str, list[Issue]] = {}
    for issue in issues:
        by_reason.setdefault(issue.reason.split(":")[0], []).append(issue)
    lines = [f"{what}: kept {kept} rows, removed {len(issues)}:"]
    for reason, items in by_reason.items():
        lines.append(f"  {len(items)} x {reason}, e.g.")
        lines.extend(f"    - {i}" for i in items[:_EXAMPLES])
    logger.warning("\n".join(lines))


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

        >>> corpus = squad_to_corpus("train-v1.1.json", "en", name="squad")  # doctest: +SKIP
        >>> corpus.sources, corpus.languages  # doctest: +SKIP
        (['squad'], ['en'])
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
            for qa in par.get("qas", []) or []:
                qid = str(qa.get("id", "")) if isinstance(qa, dict) else ""
                where = {"file": file, "row": qid or f"paragraph {p_idx}", "language": language}
                if not qid:
                    validator.problem("question without an id", **where)
                    continue
                if qid in seen:
                    validator.problem(f"duplicate question id (also in {seen[qid]!r})", **where)
                    continue
                question = qa.get("question")
                if not isinstance(question, str) or not question.strip():
                    validator.problem("empty question", **where)
                    continue
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
                seen[qid] = file
                groups.append(qid)
                queries.append(question)
                passages.append(text)
    report = validator.finish(f"squad_to_corpus({name!r})")
    removed.issues.extend(report.issues)
    _log_removed(f"squad_to_corpus({name!r})", removed.issues, len(groups))
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
    from .squad import split_sentences

    sentences, spans = split_sentences(par["context"], language)
    if not sentences:
        sentences, spans = [par["context"]], [(0, len(par["context"]))]
    return sentences, np.asarray(spans, dtype=np.int64).reshape(-1, 2)


def _bounds(value: int | tuple[int | None, int | None] | None, arg: str) -> tuple[int | None, int | None]:
    """``int`` applies to query and passage alike; ``(query, passage)`` sets them apart; ``None`` is no limit."""
    if value is None or isinstance(value, (int, np.integer)):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = (value[0], value[1])
    else:
        raise ValueError(f"{arg} must be an int, a (query, passage) pair or None, got {value!r}")
    for v in pair:
        if v is not None and (not isinstance(v, (int, np.integer)) or v < 0):
            raise ValueError(f"{arg} must hold non-negative integers, got {value!r}")
    return pair


def pairs_to_corpus(
    dataset: Dataset | pa.Table,
    query_column: str,
    passage_column: str,
    language: str,
    source: str = "pairs",
    dedup: bool | str = True,
    min_length: int | tuple[int | None, int | None] | None = None,
    max_length: int | tuple[int | None, int | None] | None = None,
    group_column: str | None = None,
) -> ParallelCorpus:
    """(query, positive passage) pairs, e.g. Natural Questions or MS MARCO, as a single-language ParallelCorpus.

    Filters run in this order, vectorised in Arrow, and every removed row is reported (count per reason and
    examples in the log; one entry per row in ``corpus.report``):

    1. empty or missing query / passage;
    2. length: a query or passage shorter than ``min_length`` or longer than ``max_length`` characters (``int``
       for both, or a ``(query, passage)`` pair; ``None`` = no limit);
    3. duplicates (the first occurrence is kept): ``dedup=True`` or ``"query"`` removes repeated queries (a
       repeated query in another group would be an in-batch false negative for the contrastive loss);
       ``"pair"`` only repeated (query, passage) pairs; ``False`` nothing.

    Args:
        dataset: a ``datasets.Dataset`` or ``pyarrow.Table``.
        query_column, passage_column: the columns holding the query and its positive passage (strings).
        language: the language of the data.
        source: the ``source`` name of every group.
        group_column: a column of unique ids to use as group ids; default ``"{source}-{row}"`` (row in ``dataset``).

    Example::

        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"query": ["who wrote faust", "who wrote faust", "x"],
        ...                         "answer": ["Goethe wrote Faust.", "Faust is by Goethe.", "y"]})
        >>> corpus = pairs_to_corpus(ds, "query", "answer", "en", source="nq", min_length=3)
        >>> corpus.groups, len(corpus.report)
        (['nq-0'], 2)
    """
    table = dataset if isinstance(dataset, pa.Table) else dataset.data.table
    wanted = [query_column, passage_column] + ([group_column] if group_column else [])
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise DataValidationError(f"{source}: missing column(s) {missing}; it has {table.column_names}")
    if dedup is True:
        dedup = "query"
    if dedup not in (False, "query", "pair"):
        raise ValueError(f"dedup must be True, False, 'query' or 'pair', got {dedup!r}")
    min_q, min_p = _bounds(min_length, "min_length")
    max_q, max_p = _bounds(max_length, "max_length")
    n = table.num_rows
    cols = {}
    for col in (query_column, passage_column):
        arr = table[col].combine_chunks()
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_null(arr.type)):
            raise DataValidationError(
                f"{source}: column {col!r} is {arr.type}, expected strings (map list or dict columns to one passage "
                "per row first, e.g. dataset.map(lambda r: {'passage': r['passages']['passage_text'][0]}))"
            )
        cols[col] = pc.cast(arr, pa.large_string())
    q, p = cols[query_column], cols[passage_column]
    groups = (
        pc.cast(table[group_column].combine_chunks(), pa.string())
        if group_column
        else pa.array(np.char.add(f"{source}-", np.arange(n).astype(str)).astype(object), pa.string())
    )

    removed = np.zeros(n, dtype=bool)
    reasons: list[tuple[np.ndarray, str | np.ndarray]] = []

    def drop(mask: np.ndarray, reason: str | np.ndarray) -> None:
        mask = mask & ~removed
        if mask.any():
            reasons.append((np.flatnonzero(mask), reason))
            removed[mask] = True

    for arr, col in ((q, query_column), (p, passage_column)):
        empty = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(arr)), 0), True)
        drop(empty.to_numpy(zero_copy_only=False), f"empty {col!r}")
    q_len = pc.fill_null(pc.utf8_length(q), 0).to_numpy(zero_copy_only=False)
    p_len = pc.fill_null(pc.utf8_length(p), 0).to_numpy(zero_copy_only=False)
    for lengths, col, lo, hi in ((q_len, query_column, min_q, max_q), (p_len, passage_column, min_p, max_p)):
        if lo is not None:
            drop(lengths < lo, f"{col!r} shorter than min_length {lo} characters")
        if hi is not None:
            drop(lengths > hi, f"{col!r} longer than max_length {hi} characters")
    if dedup:
        key = q if dedup == "query" else pc.binary_join_element_wise(q, p, pa.scalar("\x00", pa.large_string()))
        codes = pc.dictionary_encode(key).indices.to_numpy(zero_copy_only=False).astype(np.int64)
        codes = np.where(removed, -1 - np.arange(n), codes)  # removed rows never count as first occurrences
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        what = "query" if dedup == "query" else "(query, passage) pair"
        drop(dup, np.array([f"duplicate {what}: same as row {int(first[inverse[r]])}" for r in np.flatnonzero(dup & ~removed)], dtype=object))

    issues: list[Issue] = []
    for rows, reason in reasons:
        texts = q.take(pa.array(rows)).to_pylist()
        gids = groups.take(pa.array(rows)).to_pylist()
        for j, r in enumerate(rows):
            why = reason if isinstance(reason, str) else reason[j]
            issues.append(Issue(f"{why}: query {str(texts[j])[:60]!r}", file=source, row=int(r), group=gids[j], language=language))
    keep = pa.array(~removed)
    kept = int((~removed).sum())
    _log_removed(f"pairs_to_corpus({source!r})", issues, kept)
    out = pa.table(
        {
            "group": groups.filter(keep),
            "lang": pa.array(np.full(kept, language, dtype=object), pa.string()),
            "query": q.filter(keep),
            "passage": p.filter(keep),
            "source": pa.array(np.full(kept, source, dtype=object), pa.string()),
        }
    )
    corpus = ParallelCorpus.from_dataset(out, source_column="source", name=source)
    corpus.report.issues[:0] = issues
    return corpus
