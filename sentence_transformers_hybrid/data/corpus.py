"""``ParallelCorpus``: parallel (query, passage) training data grouped by question.

A *group* is one question with all its translations: one row per (group, language) holding the query and its
positive passage in that language, optionally tagged with the *source* training data set it comes from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrow import dataset_table, string_column
from .validation import ValidationReport, Validator

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

REQUIRED_FIELDS = ("group", "lang", "query", "passage")
_META_FILE = "parallel_corpus.json"


def _encode(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list]:
    """Dictionary-encode a column: (int64 codes, values in first-appearance order). Vectorised in Arrow."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def record_problems(rec: Mapping[str, Any]) -> list[str]:
    """What is wrong with the types of a record's fields (empty when nothing is): ``group`` a string or an integer,
    ``lang``, ``query``, ``passage`` (and ``source`` when given) strings. The record has every required field."""
    out = []
    group = rec["group"]
    if isinstance(group, bool) or not isinstance(group, (str, int, np.integer)):
        out.append(f"'group' is {_describe(group)}, expected a string or an integer id")
    for k in REQUIRED_FIELDS[1:]:
        if not isinstance(rec[k], str):
            out.append(f"{k!r} is {_describe(rec[k])}, expected a string")
    src = rec.get("source")
    if src is not None and not isinstance(src, str):
        out.append(f"'source' is {_describe(src)}, expected a string")
    return out


def _frozen(array: Any) -> np.ndarray:
    """An int64 copy of ``array`` that cannot be written to (no caller keeps a writeable alias of it)."""
    out = np.array(array, dtype=np.int64, copy=True)
    out.flags.writeable = False
    return out


def _describe(value: Any) -> str:
    """``None``, or the type and a short repr of ``value``, for error messages."""
    if value is None:
        return "None (missing)"
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


class ParallelCorpus:
    """Parallel QA training data: groups of (query, passage) pairs, one per language.

    Rows are stored column-wise (Arrow string arrays); ``row_index[g, l]`` gives the row of group ``g`` in language
    ``languages[l]`` or ``-1`` where the group lacks that language. Build it with :meth:`from_records`,
    :meth:`from_dataset`, :func:`load_parallel_jsonl` or ``RetrievalBenchmark.to_parallel_corpus()``.

    Example::

        >>> from sentence_transformers_hybrid import ParallelCorpus
        >>> corpus = ParallelCorpus.from_records([
        ...     {"group": "q1", "lang": "en", "query": "Who wrote Faust?", "passage": "Goethe wrote Faust."},
        ...     {"group": "q1", "lang": "de", "query": "Wer schrieb Faust?", "passage": "Goethe schrieb Faust."},
        ...     {"group": "q2", "lang": "en", "query": "Capital of France?", "passage": "Paris is the capital."},
        ... ])
        >>> len(corpus), corpus.languages, corpus.num_rows
        (2, ['de', 'en'], 3)
        >>> corpus.group_languages("q1")
        ['de', 'en']

    Args (of the constructor; prefer the ``from_*`` builders):
        groups: group ids, one per group.
        languages: language codes (sorted).
        row_index: int64 ``[len(groups), len(languages)]`` row ids, ``-1`` where missing.
        queries, passages: Arrow string arrays indexed by row id.
        sources: names of the source data sets; ``group_source[g]`` indexes into it.
        report: what a non-strict build skipped.
    """

    def __init__(
        self,
        groups: Sequence[str],
        languages: Sequence[str],
        row_index: np.ndarray,
        queries: pa.Array,
        passages: pa.Array,
        sources: Sequence[str] = ("default",),
        group_source: np.ndarray | None = None,
        report: ValidationReport | None = None,
    ) -> None:
        self.groups = list(groups)
        self.languages = list(languages)
        self._row_index = _frozen(row_index)
        self._queries = queries
        self._passages = passages
        self.sources = list(sources)
        self._group_source = _frozen(np.zeros(len(self.groups), dtype=np.int64) if group_source is None else group_source)
        self.report = report if report is not None else ValidationReport()
        if self._row_index.shape != (len(self.groups), len(self.languages)):
            raise ValueError(f"row_index has shape {self._row_index.shape}, expected {(len(self.groups), len(self.languages))}")
        if self._group_source.shape != (len(self.groups),):
            raise ValueError(f"group_source has shape {self._group_source.shape}, expected {(len(self.groups),)}")
        self._group_pos: dict[str, int] | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        # pickle and copy.deepcopy give writeable arrays back: freeze them again
        self.__dict__.update(state)
        self._row_index, self._group_source = _frozen(self._row_index), _frozen(self._group_source)

    @property
    def row_index(self) -> np.ndarray:
        """int64 ``[groups, languages]``: the row of group ``g`` in language ``languages[l]``, ``-1`` where missing.

        Read-only (the corpus's own copy, ``writeable=False``): the pair index and the training dataset built on it
        are cached per corpus, so an edit would leave them describing another corpus. Build a new corpus instead
        (e.g. :meth:`select_languages`, or :meth:`from_records` of edited :meth:`to_records`).
        """
        return self._row_index

    @row_index.setter
    def row_index(self, value: Any) -> None:
        raise AttributeError("ParallelCorpus.row_index is read-only (the pair index is cached on it); build a new corpus")

    @property
    def group_source(self) -> np.ndarray:
        """int64 ``[groups]``: the index into ``sources`` of each group's source. Read-only, like :attr:`row_index`."""
        return self._group_source

    @group_source.setter
    def group_source(self, value: Any) -> None:
        raise AttributeError("ParallelCorpus.group_source is read-only (the pair index is cached on it); build a new corpus")

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], strict: bool = True, name: str = "records") -> ParallelCorpus:
        """Build from mappings ``{"group", "lang", "query", "passage"[, "source"]}``.

        ``group`` is a string or an integer (``7`` becomes ``"7"``); ``lang``, ``query``, ``passage`` and
        ``source`` are strings. A record that is not a mapping, lacks a field, or holds another type (``None``
        included, a list, a float) raises :class:`DataValidationError` naming the record's position, its group and
        language (``strict=False`` skips it and reports it, like every other bad row).
        """
        validator = Validator(strict)
        columns: dict[str, list] = {k: [] for k in (*REQUIRED_FIELDS, "source")}
        has_source = False
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                validator.problem(
                    f"record is {type(rec).__name__}, expected a mapping with fields {list(REQUIRED_FIELDS)}", file=name, row=i
                )
                continue
            missing = [k for k in REQUIRED_FIELDS if k not in rec]
            if missing:
                validator.problem(f"missing field(s) {missing}; expected {list(REQUIRED_FIELDS)}", file=name, row=i)
                continue
            group, src = rec["group"], rec.get("source")
            bad = record_problems(rec)
            if bad:
                validator.problem(
                    "; ".join(bad), file=name, row=i, group=group if isinstance(group, str) else None,
                    language=rec["lang"] if isinstance(rec["lang"], str) else None,
                )
                continue
            columns["group"].append(group if isinstance(group, str) else str(int(group)))
            for k in REQUIRED_FIELDS[1:]:
                columns[k].append(rec[k])
            has_source = has_source or src is not None
            columns["source"].append(src)
        table = pa.table(
            {
                "group": pa.array(columns["group"], pa.string()),
                "lang": pa.array(columns["lang"], pa.string()),
                "query": pa.array(columns["query"], pa.large_string()),
                "passage": pa.array(columns["passage"], pa.large_string()),
                "source": pa.array(
                    [s if s is not None else "default" for s in columns["source"]] if has_source else ["default"] * len(columns["group"]),
                    pa.string(),
                ),
            }
        )
        return cls._from_table(table, validator, name)

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        group_column: str = "group",
        language_column: str = "lang",
        query_column: str = "query",
        passage_column: str = "passage",
        source_column: str | None = None,
        strict: bool = True,
        name: str = "dataset",
    ) -> ParallelCorpus:
        """Build from a ``datasets.Dataset`` (or a ``pyarrow.Table``) with one row per (group, language).

        Exactly the rows the dataset shows are read, in its order: after ``filter``, ``select``, ``shuffle`` or
        ``train_test_split`` the removed or held-out rows stay out (:func:`~.arrow.dataset_table`).

        Columnar and vectorised: 200k groups x 10 languages build in a few seconds
        (``benchmarks/bench_corpus.py``).

        Example::

            >>> from datasets import Dataset
            >>> ds = Dataset.from_dict({"id": [7, 7], "language": ["en", "es"],
            ...                         "q": ["Where is Lima?", "¿Dónde está Lima?"], "p": ["In Peru.", "En Perú."]})
            >>> ParallelCorpus.from_dataset(ds, group_column="id", language_column="language",
            ...                             query_column="q", passage_column="p").groups
            ['7']
        """
        wanted = [group_column, language_column, query_column, passage_column] + ([source_column] if source_column else [])
        table = dataset_table(dataset, wanted, name)
        n = table.num_rows
        source = (
            string_column(table, source_column, name)
            if source_column
            else pa.array(np.full(n, "default", dtype=object), pa.string())
        )
        norm = pa.table(
            {
                "group": string_column(table, group_column, name, integers=True),
                "lang": string_column(table, language_column, name),
                "query": string_column(table, query_column, name, large=True),
                "passage": string_column(table, passage_column, name, large=True),
                "source": source,
            }
        )
        return cls._from_table(norm, Validator(strict), name)

    @classmethod
    def _from_table(cls, table: pa.Table, validator: Validator, name: str) -> ParallelCorpus:
        """Validate and index a normalised table (columns group, lang, query, passage, source)."""
        keep = np.ones(table.num_rows, dtype=bool)
        # null or empty fields
        for col in ("group", "lang", "query", "passage"):
            arr = table[col].combine_chunks()
            bad = pc.or_kleene(pc.is_null(arr), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(arr)), 0))
            bad = pc.fill_null(bad, True).to_numpy(zero_copy_only=False)
            for row in np.flatnonzero(bad & keep):
                validator.problem(
                    f"empty {col!r}",
                    file=name,
                    row=int(row),
                    group=table["group"][int(row)].as_py(),
                    language=table["lang"][int(row)].as_py(),
                )
                keep[row] = False
        if not keep.all():
            table = table.filter(pa.array(keep))
            keep = np.ones(table.num_rows, dtype=bool)
        row_ids = np.arange(table.num_rows, dtype=np.int64)

        group_codes, groups = _encode(table["group"])
        lang_codes, langs = _encode(table["lang"])
        order = np.argsort(np.array(langs, dtype=object)) if langs else np.array([], dtype=np.int64)
        languages = [langs[i] for i in order]
        remap = np.empty(len(langs), dtype=np.int64)
        remap[order] = np.arange(len(langs))
        lang_codes = remap[lang_codes] if len(langs) else lang_codes
        n_lang = len(languages)

        # duplicate (group, lang): keep the first, flag the others
        key = group_codes * max(n_lang, 1) + lang_codes
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        dup_mask = np.ones(len(key), dtype=bool)
        dup_mask[first] = False

        def where(row: int) -> dict[str, Any]:
            return {"file": name, "row": int(row), "group": groups[group_codes[row]], "language": languages[lang_codes[row]]}

        for row in np.flatnonzero(dup_mask):
            validator.problem(f"duplicate (group, lang): also at row {int(first[inverse[row]])}", **where(row))
        # source must be constant within a group: the group's first row names it (group codes are 0..n-1 in
        # first-appearance order, so np.unique's first indices are in group order)
        source_codes, sources = _encode(table["source"])
        _, first_row = np.unique(group_codes, return_index=True)
        group_source = source_codes[first_row]
        bad_source = source_codes != group_source[group_codes]
        for row in np.flatnonzero(bad_source & ~dup_mask):
            validator.problem(
                f"source {sources[source_codes[row]]!r} differs from the group's source "
                f"{sources[group_source[group_codes[row]]]!r}",
                **where(row),
            )
        keep = ~(dup_mask | bad_source)
        if not keep.all():
            table = table.filter(pa.array(keep))
            group_codes, lang_codes, row_ids = group_codes[keep], lang_codes[keep], np.arange(int(keep.sum()))
            # groups that lost every row disappear
            used = np.unique(group_codes)
            if len(used) < len(groups):
                remap_g = np.full(len(groups), -1, dtype=np.int64)
                remap_g[used] = np.arange(len(used))
                groups = [groups[i] for i in used]
                group_source = group_source[used]
                group_codes = remap_g[group_codes]

        row_index = np.full((len(groups), n_lang), -1, dtype=np.int64)
        row_index[group_codes, lang_codes] = row_ids
        report = validator.finish(f"ParallelCorpus from {name}")
        return cls(
            groups=[str(g) for g in groups],
            languages=languages,
            row_index=row_index,
            queries=table["query"].combine_chunks(),
            passages=table["passage"].combine_chunks(),
            sources=sources if sources else ["default"],
            group_source=group_source,
            report=report,
        )

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        """Number of groups."""
        return len(self.groups)

    def __repr__(self) -> str:
        return (
            f"ParallelCorpus(groups={len(self)}, rows={self.num_rows}, languages={self.languages}, "
            f"sources={self.sources})"
        )

    @property
    def num_rows(self) -> int:
        """Number of (group, language) rows."""
        return len(self._queries)

    @property
    def query_column(self) -> pa.Array | pa.ChunkedArray:
        """The queries as the corpus's own Arrow array (row order, no copy)."""
        return self._queries

    @property
    def passage_column(self) -> pa.Array | pa.ChunkedArray:
        """The passages as the corpus's own Arrow array (row order, no copy)."""
        return self._passages

    @property
    def queries(self) -> list[str]:
        """Query texts by row id."""
        return self._queries.to_pylist()

    @property
    def passages(self) -> list[str]:
        """Passage texts by row id."""
        return self._passages.to_pylist()

    def query_texts(self, rows: np.ndarray | Sequence[int]) -> list[str]:
        """Query texts of the given row ids (vectorised ``take``)."""
        return self._queries.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()

    def passage_texts(self, rows: np.ndarray | Sequence[int]) -> list[str]:
        """Passage texts of the given row ids (vectorised ``take``)."""
        return self._passages.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()

    @property
    def language_mask(self) -> np.ndarray:
        """Bool ``[groups x languages]``: which group exists in which language."""
        return self.row_index >= 0

    @property
    def languages_per_group(self) -> np.ndarray:
        """int64 ``[groups]``: number of languages of each group."""
        return self.language_mask.sum(axis=1)

    @property
    def single_language_groups(self) -> list[str]:
        """Groups present in one language only: usable in mono batches, never as a cross-lingual pair."""
        return [self.groups[i] for i in np.flatnonzero(self.languages_per_group == 1)]

    def _group_position(self, group: str) -> int:
        if self._group_pos is None:
            self._group_pos = {g: i for i, g in enumerate(self.groups)}
        try:
            return self._group_pos[str(group)]
        except KeyError:
            raise KeyError(f"unknown group {group!r}") from None

    def group_languages(self, group: str) -> list[str]:
        """Languages in which ``group`` exists."""
        g = self._group_position(group)
        return [self.languages[i] for i in np.flatnonzero(self.row_index[g] >= 0)]

    def row_group(self) -> np.ndarray:
        """int64 ``[rows]``: the group of each row."""
        out = np.empty(self.num_rows, dtype=np.int64)
        g, _ = np.nonzero(self.row_index >= 0)
        out[self.row_index[self.row_index >= 0]] = g
        return out

    def row_language(self) -> np.ndarray:
        """int64 ``[rows]``: the language (index into ``languages``) of each row."""
        out = np.empty(self.num_rows, dtype=np.int64)
        _, lang = np.nonzero(self.row_index >= 0)
        out[self.row_index[self.row_index >= 0]] = lang
        return out

    def to_table(self) -> pa.Table:
        """The rows as an Arrow table with columns group, lang, query, passage, source (row-id order)."""
        rg, rl = self.row_group(), self.row_language()
        return pa.table(
            {
                "group": pa.array(np.array(self.groups, dtype=object)[rg], pa.string()),
                "lang": pa.array(np.array(self.languages, dtype=object)[rl], pa.string()),
                "query": self._queries,
                "passage": self._passages,
                "source": pa.array(np.array(self.sources, dtype=object)[self.group_source[rg]], pa.string()),
            }
        )

    def to_records(self) -> Iterator[dict[str, str]]:
        """Yield the records back: ``{"group", "lang", "query", "passage", "source"}`` in row order."""
        yield from self.to_table().to_pylist()

    def select_languages(self, languages: Sequence[str]) -> ParallelCorpus:
        """A corpus restricted to ``languages`` (groups left with no language are dropped); the new corpus's
        ``report`` keeps what this one's loader skipped."""
        if isinstance(languages, str):
            languages = [languages]
        unknown = [lang for lang in languages if lang not in self.languages]
        if unknown:
            raise ValueError(f"unknown language(s) {unknown}; the corpus has {self.languages}")
        table = self.to_table()
        mask = pc.is_in(table["lang"], pa.array(list(languages), pa.string()))
        out = ParallelCorpus._from_table(table.filter(mask), Validator(True), "select_languages")
        out.report.issues[:0] = self.report.issues
        return out

    # ------------------------------------------------------------------ training / persistence
    def to_dataset(self) -> Dataset:
        """The ``train_dataset`` for ``SentenceTransformerTrainer`` when training with ``HybridBatchSampler``.

        See :func:`sentence_transformers_hybrid.data.pair_dataset.training_dataset` for its shape.
        """
        from .pair_dataset import training_dataset

        return training_dataset(self)

    def to_hf_dataset(self) -> Dataset:
        """The plain records as a ``datasets.Dataset`` (columns group, lang, query, passage, source)."""
        from datasets import Dataset

        return Dataset(self.to_table())

    def save_to_disk(self, path: str | Path) -> None:
        """Save as an Arrow ``datasets`` directory plus ``parallel_corpus.json`` (no pickle)."""
        path = Path(path)
        self.to_hf_dataset().save_to_disk(str(path))
        meta = {"format": "sentence-transformers-hybrid/parallel-corpus", "version": 1, "groups": len(self),
                "rows": self.num_rows, "languages": self.languages, "sources": self.sources}
        (path / _META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load_from_disk(cls, path: str | Path) -> ParallelCorpus:
        """Load a corpus written by :meth:`save_to_disk`."""
        from datasets import load_from_disk

        path = Path(path)
        if not (path / _META_FILE).is_file():
            raise FileNotFoundError(f"{path}: not a saved ParallelCorpus (no {_META_FILE})")
        return cls.from_dataset(load_from_disk(str(path)), source_column="source", name=str(path))

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None, **kwargs) -> Any:
        """Upload the records to the Hugging Face Hub as a data set (``datasets.Dataset.push_to_hub``).

        Load it back with ``ParallelCorpus.from_dataset(load_dataset(repo_id, split="train"), source_column="source")``.
        The token is passed through to ``huggingface_hub`` and never logged.
        """
        return self.to_hf_dataset().push_to_hub(repo_id, private=private, token=token, **kwargs)
