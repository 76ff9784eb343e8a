"""Users' own training data: parallel JSON Lines files and Hugging Face ``datasets``, and monolingual
(query, positive) pairs for translate-train.

* :func:`load_parallel_jsonl`, :func:`load_parallel_dataset`: parallel records ``{"group", "lang", "query",
  "passage"[, "source"]}``;
* :func:`pairs_to_corpus`: (query, positive passage) pairs from a ``datasets.Dataset``, as in Natural Questions
  (``sentence-transformers/natural-questions``: ``query``, ``answer``) or MS MARCO (``sentence-transformers/msmarco-*``:
  ``query``, ``positive``), with deduplication and length filters, as a single-language corpus tagged with a
  ``source`` name (:func:`~sentence_transformers_hybrid.translate.translate_parallel` adds the other languages).

Whatever :func:`pairs_to_corpus` removes is never dropped silently: it is counted, logged with examples, and
listed in ``corpus.report`` (one entry per removed row, with the reason).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrow import dataset_table, string_column
from .corpus import REQUIRED_FIELDS, ParallelCorpus, record_problems
from .files import open_maybe_gzip
from .validation import DataValidationError, Issue, log_removed

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

logger = logging.getLogger(__name__)


def load_parallel_jsonl(path: str | Path, strict: bool = True) -> ParallelCorpus:
    """Load a JSON Lines file with one record ``{"group", "lang", "query", "passage"[, "source"]}`` per line.

    A gzip-compressed file (``.jsonl.gz``, told by its first bytes) is read the same way. Malformed JSON, a line
    that is not UTF-8, a record without a required field or with a field of the wrong type (see
    :meth:`ParallelCorpus.from_records`) raises :class:`DataValidationError` naming the file and the 1-based line;
    with ``strict=False`` such lines are skipped and reported in ``corpus.report``, like empty texts and duplicate
    (group, lang) rows (those name the 0-based record, i.e. the data line without blank or skipped lines).

    Example::

        >>> import json, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "train.jsonl")
        >>> with open(path, "w", encoding="utf-8") as f:
        ...     for lang, q in [("en", "Who wrote Faust?"), ("de", "Wer schrieb Faust?")]:
        ...         _ = f.write(json.dumps({"group": "q1", "lang": lang, "query": q, "passage": "Goethe."}) + "\\n")
        >>> load_parallel_jsonl(path)
        ParallelCorpus(groups=1, rows=2, languages=['de', 'en'], sources=['default'])
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"file {str(path)!r} not found")
    records: list[dict[str, Any]] = []
    bad: list[Issue] = []
    file = str(path)

    def problem(lineno: int, reason: str, group: str | None = None, language: str | None = None) -> None:
        if strict:
            where = "".join(f", {k} {v!r}" for k, v in (("group", group), ("language", language)) if v is not None)
            raise DataValidationError(f"file {file!r}, line {lineno}{where}: {reason}")
        bad.append(Issue(reason, file=file, row=f"line {lineno}", group=group, language=language))

    with open_maybe_gzip(path) as f:
        for lineno, raw in _lines(f, file):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                problem(lineno, f"not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); re-encode "
                        "the file as UTF-8")
                continue
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problem(lineno, f"malformed JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(rec, dict):
                problem(lineno, f"a JSON {type(rec).__name__}, expected an object with fields {list(REQUIRED_FIELDS)}")
                continue
            missing = [k for k in REQUIRED_FIELDS if k not in rec]
            if missing:
                problem(lineno, f"missing field(s) {missing}; expected {list(REQUIRED_FIELDS)}")
                continue
            wrong = record_problems(rec)
            if wrong:
                group, lang = rec["group"], rec["lang"]
                problem(lineno, "; ".join(wrong), group if isinstance(group, str) else None,
                        lang if isinstance(lang, str) else None)
                continue
            records.append(rec)
    corpus = ParallelCorpus.from_records(records, strict=strict, name=file)
    if bad:
        log_removed(f"load_parallel_jsonl({file!r})", bad, corpus.num_rows)
        corpus.report.issues[:0] = bad
    return corpus


def _lines(f: IO[bytes], file: str) -> Iterator[tuple[int, bytes]]:
    """``(1-based line number, bytes)``; a corrupt or truncated gzip stream raises naming the file and line."""
    lineno = 0
    try:
        for lineno, raw in enumerate(f, start=1):
            yield lineno, raw
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataValidationError(f"file {file!r}: corrupt or truncated gzip data after line {lineno} ({e})") from None


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

        >>> corpus = load_parallel_dataset("my-org/my-parallel-qa", source_column="source")  # a Hub id: needs the Hub  # doctest: +SKIP

    Local files go through the ``datasets`` builders (``"json"``, ``"csv"``, ``"parquet"``)::

        >>> import json, os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with open(os.path.join(folder, "train.jsonl"), "w", encoding="utf-8") as f:
        ...     for lang in ("en", "de"):
        ...         _ = f.write(json.dumps({"group": "q1", "lang": lang, "query": "?", "passage": "."}) + "\\n")
        >>> load_parallel_dataset("json", data_files=os.path.join(folder, "train.jsonl"), cache_dir=folder)
        ParallelCorpus(groups=1, rows=2, languages=['de', 'en'], sources=['default'])
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
        dataset: a ``datasets.Dataset`` or ``pyarrow.Table``; exactly the rows it shows are read, in its order
            (a filtered, selected, shuffled or split ``Dataset`` never brings its removed rows back).
        query_column, passage_column: the columns holding the query and its positive passage (strings).
        language: the language of the data.
        source: the ``source`` name of every group.
        group_column: a column of unique ids to use as group ids; default ``"{source}-{row}"`` (row in ``dataset``
            as it shows its rows).

    Example::

        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"query": ["who wrote faust", "who wrote faust", "x"],
        ...                         "answer": ["Goethe wrote Faust.", "Faust is by Goethe.", "y"]})
        >>> corpus = pairs_to_corpus(ds, "query", "answer", "en", source="nq", min_length=3)
        >>> corpus.groups, len(corpus.report)
        (['nq-0'], 2)
    """
    wanted = [query_column, passage_column] + ([group_column] if group_column else [])
    table = dataset_table(dataset, wanted, source)
    if dedup is True:
        dedup = "query"
    if dedup not in (False, "query", "pair"):
        raise ValueError(f"dedup must be True, False, 'query' or 'pair', got {dedup!r}")
    min_q, min_p = _bounds(min_length, "min_length")
    max_q, max_p = _bounds(max_length, "max_length")
    n = table.num_rows
    q = string_column(table, query_column, source, large=True)
    p = string_column(table, passage_column, source, large=True)
    groups = (
        string_column(table, group_column, source, integers=True)
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
    log_removed(f"pairs_to_corpus({source!r})", issues, kept)
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
