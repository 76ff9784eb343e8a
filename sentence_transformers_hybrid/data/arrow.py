"""The one way the loaders read a ``datasets.Dataset``: the rows it shows, as an Arrow table, in its order.

A ``Dataset`` after ``filter``, ``select``, ``shuffle`` or ``train_test_split`` keeps its whole Arrow table and an
*indices mapping* on top of it; ``dataset.data`` is that whole table, removed and held-out rows included.
:func:`dataset_table` reads through the mapping with public ``datasets`` API only
(``dataset.select_columns(...).with_format("arrow")[:]``).

Cost, measured on 2 busy CPU cores (``benchmarks/bench_corpus.py``): a dataset without a mapping (or after a
contiguous ``select``) is read zero-copy (0.0 s at 2M rows); through a mapping ``datasets`` gathers row by row,
about 1.4 s per 200k rows of four string columns, which is 2.7x cheaper than ``dataset.flatten_indices()``
(3.8 s per 200k rows: it rewrites every column through ``map``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from .validation import DataValidationError

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset


def dataset_table(dataset: Dataset | pa.Table | Any, columns: Sequence[str] | None = None, name: str = "dataset") -> pa.Table:
    """The rows ``dataset`` shows (its indices mapping applied), as one Arrow table in the dataset's order.

    Args:
        dataset: a ``datasets.Dataset`` (filtered, selected, shuffled or split ones included) or a
            ``pyarrow.Table``.
        columns: the columns to read (only those are gathered); ``None`` reads all. A missing column raises
            :class:`DataValidationError` naming ``name``, the missing columns and the ones it has.
        name: how errors name the data set.

    A ``DatasetDict`` (pass one split), an ``IterableDataset`` (streaming: no random access) or anything else
    raises :class:`DataValidationError` saying what to pass instead.

    Example::

        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"q": ["a", "b", "c", "d"], "n": [0, 1, 2, 3]})
        >>> kept = ds.filter(lambda r: r["n"] != 1).shuffle(seed=0)
        >>> list(kept["q"]), dataset_table(kept, ["q"])["q"].to_pylist()
        (['d', 'a', 'c'], ['d', 'a', 'c'])
        >>> ds.data.num_rows, dataset_table(kept).num_rows      # the backing table still holds every row
        (4, 3)
    """
    if isinstance(dataset, pa.Table):
        table = dataset
        _check_columns(table.column_names, columns, name)
        return table.select(list(dict.fromkeys(columns))) if columns is not None else table
    from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

    if isinstance(dataset, (DatasetDict, IterableDatasetDict)):
        raise DataValidationError(
            f"{name}: got a {type(dataset).__name__} with splits {list(dataset)}; pass one split, e.g. "
            f"dataset[{next(iter(dataset), 'train')!r}]"
        )
    if isinstance(dataset, IterableDataset):
        raise DataValidationError(
            f"{name}: got an IterableDataset (streaming), which has no random access; load it without "
            "streaming=True, or materialise the part you want, e.g. Dataset.from_list(list(dataset.take(n)))"
        )
    if not isinstance(dataset, Dataset):
        raise DataValidationError(
            f"{name}: expected a datasets.Dataset or a pyarrow.Table, got {type(dataset).__name__} (Python records: "
            "ParallelCorpus.from_records; a pandas DataFrame: datasets.Dataset.from_pandas(df))"
        )
    _check_columns(dataset.column_names, columns, name)
    if columns is not None:
        dataset = dataset.select_columns(list(dict.fromkeys(columns)))
    table = dataset.with_format("arrow")[:]
    # through an indices mapping datasets returns one record batch per row: one contiguous chunk per column
    if table.num_columns and table.column(0).num_chunks > 1:
        table = table.combine_chunks()
    return table


def _check_columns(have: Sequence[str], wanted: Sequence[str] | None, name: str) -> None:
    if wanted is None:
        return
    missing = [c for c in wanted if c not in have]
    if missing:
        raise DataValidationError(f"{name}: missing column(s) {missing}; it has {list(have)}")


def string_column(
    table: pa.Table, column: str, name: str, integers: bool = False, large: bool = False
) -> pa.Array:
    """Column ``column`` of ``table`` as one Arrow string array (``large_string`` with ``large=True``).

    Strings (and dictionary-encoded strings) pass; so do integers with ``integers=True`` (ids such as ``7`` become
    ``"7"``); an all-null column stays null (the loaders report its rows as empty). Anything else — a list, a
    struct, a float, bytes — raises :class:`DataValidationError` naming ``name``, the column and its type, with a
    hint for list columns (a column must hold one text per row).

    Example::

        >>> t = pa.table({"q": ["a", None], "n": [7, 8], "l": [["x"], ["y", "z"]]})
        >>> string_column(t, "n", "mine", integers=True).to_pylist()
        ['7', '8']
        >>> string_column(t, "l", "mine")
        Traceback (most recent call last):
        ...
        sentence_transformers_hybrid.data.validation.DataValidationError: mine: column 'l' holds list<item: string> values, expected one string per row (map a list column to one text per row first, e.g. dataset.map(lambda r: {'l': r['l'][0]}))
    """
    arr = table[column]
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    kind = arr.type
    if pa.types.is_dictionary(kind) and (pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)):
        arr, kind = arr.dictionary_decode(), kind.value_type
    ok = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
    if integers:
        ok = ok or pa.types.is_integer(kind)
    if not ok:
        expected = "one string or integer id per row" if integers else "one string per row"
        hint = ""
        if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            hint = (f" (map a list column to one text per row first, e.g. dataset.map(lambda r: {{{column!r}: "
                    f"r[{column!r}][0]}}))")
        elif pa.types.is_struct(kind):
            hint = f" (pick one of its fields {[f.name for f in kind]} first, e.g. dataset.flatten())"
        raise DataValidationError(f"{name}: column {column!r} holds {kind} values, expected {expected}{hint}")
    return pc.cast(arr, pa.large_string() if large else pa.string())

