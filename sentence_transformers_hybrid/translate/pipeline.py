"""Translate-train: turn monolingual QA pairs into a parallel corpus with a machine-translation model.

Three pieces:

* :func:`translate_parallel` adds one translated row per (group, target language) to a
  :class:`~sentence_transformers_hybrid.data.ParallelCorpus`. Every finished batch is written to a persistent
  :class:`TranslationCache` (SQLite, WAL mode) before the next one starts, so an interruption loses at most the
  batch in flight, and a rerun translates only what is not cached yet.
* :class:`M2M100Translator` wraps an M2M-100 or NLLB checkpoint from ``transformers`` as a translator: batched,
  sorted by length, greedy or beam search, with a progress bar.
* :func:`translate_file` is what ``st-hybrid translate`` calls: read JSONL / SQuAD / HF input, translate, write.

A *translator* is any callable ``(texts, source_language, target_language) -> texts`` that returns one string per
input, in order. Its identity in the cache comes from, in this order: the ``translator_id=`` argument, its ``id``
attribute, its ``name`` attribute, or, for a module-level function, ``module.qualname``. Lambdas and nested
functions have no stable name and are refused unless ``translator_id=`` is given: two different lambdas would
share (and corrupt) one cache entry, and a rerun could not find the entries of the first run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from .._utils import atomic_writer, default_progress
from ..data.corpus import ParallelCorpus
from .cache import TranslationCache, Translator, text_key, translator_identity
from .m2m100 import M2M100Translator

logger = logging.getLogger(__name__)

__all__ = ["read_input", "translate_file", "translate_parallel", "write_output"]


def _check_output(out: Any, batch: list[str], tid: str, src: str, tgt: str, batch_no: int) -> list[str]:
    """A translator's output must be one string per input; anything else is an error, never cached."""
    where = f"translator {tid!r} ({src} -> {tgt}), batch {batch_no} (first text {batch[0][:60]!r})"
    if isinstance(out, str) or not isinstance(out, Sequence):
        raise ValueError(f"{where}: returned {type(out).__name__}, expected a list of {len(batch)} strings")
    if len(out) != len(batch):
        raise ValueError(f"{where}: returned {len(out)} translations for {len(batch)} texts")
    bad = [i for i, t in enumerate(out) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"{where}: translation {bad[0]} is {type(out[bad[0]]).__name__}, expected str")
    return list(out)


def translate_parallel(
    corpus: ParallelCorpus,
    target_languages: Sequence[str],
    translator: Translator,
    cache_dir: str | Path,
    batch_size: int = 32,
    source_language: str | None = None,
    show_progress_bar: bool | None = None,
    translator_id: str | None = None,
) -> ParallelCorpus:
    """Translate the source-language rows of ``corpus`` into ``target_languages``; cached and resumable.

    Both the query and the passage of every group that has a ``source_language`` row are translated. The result
    holds every row of ``corpus`` plus one row per (group, target language) that ``corpus`` lacked, with the same
    group ids and the group's ``source`` kept. Rows that already exist are never overwritten.

    Work is done per distinct text (SQuAD questions share their paragraph, so it is translated once), longest
    texts first, in batches of ``batch_size`` texts. Each finished batch is committed to the cache in
    ``cache_dir`` before the next starts: a crash or Ctrl-C loses at most the batch in flight, and a rerun only
    translates the texts not cached yet. An exception from the translator propagates unchanged and nothing of that
    batch is cached; so does a malformed output (wrong count, non-strings) as a ``ValueError``. An empty
    translation is cached (it is what the model produces) but its row is left out of the result and listed in
    ``result.report``, after what ``corpus.report`` already listed.

    Args:
        corpus: the corpus to translate.
        target_languages: language codes to add (the codes your translator understands, e.g. ``["de", "zh"]``).
        translator: a callable ``(texts, source_language, target_language) -> list of texts``, e.g.
            :class:`M2M100Translator`.
        cache_dir: folder of the persistent cache (``translations.sqlite3`` inside); created if missing.
        batch_size: texts per translator call, and per cache commit.
        source_language: the language to translate from; default: the corpus's only language (required when the
            corpus has several).
        show_progress_bar: a tqdm bar over texts to translate; default on when logging is at INFO or below.
        translator_id: the translator's name in the cache (see :func:`translator_identity`).

    Returns:
        a new :class:`ParallelCorpus`.

    Example::

        >>> from sentence_transformers_hybrid import ParallelCorpus
        >>> from sentence_transformers_hybrid.translate import translate_parallel
        >>> corpus = ParallelCorpus.from_records([
        ...     {"group": "q1", "lang": "en", "query": "Who wrote Faust?", "passage": "Goethe wrote Faust."}])
        >>> def shout(texts, source_language, target_language):
        ...     return [f"[{target_language}] {t.upper()}" for t in texts]
        >>> out = translate_parallel(corpus, ["de"], shout, "/tmp/st-hybrid-doc-cache", translator_id="shout-v1")
        >>> [(r["lang"], r["query"]) for r in out.to_records()]
        [('en', 'Who wrote Faust?'), ('de', '[de] WHO WROTE FAUST?')]
    """
    if isinstance(target_languages, str):
        target_languages = [target_languages]
    targets = list(dict.fromkeys(target_languages))
    if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
        raise ValueError(f"target_languages must be a non-empty list of language codes, got {target_languages!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if source_language is None:
        if len(corpus.languages) != 1:
            raise ValueError(
                f"the corpus has languages {corpus.languages}: pass source_language= to say which one to translate from"
            )
        source_language = corpus.languages[0]
    if source_language not in corpus.languages:
        raise ValueError(f"source_language {source_language!r} is not in the corpus (it has {corpus.languages})")
    if source_language in targets:
        raise ValueError(f"target_languages {targets} include the source language {source_language!r}")
    tid = translator_identity(translator, translator_id)
    check_language = getattr(translator, "language_code", None)
    if callable(check_language):  # an unknown code fails now, not after hours spent on the other languages
        for lang in (source_language, *targets):
            check_language(lang)
    if show_progress_bar is None:
        show_progress_bar = default_progress(None, logger)

    src_col = corpus.languages.index(source_language)
    src_rows = corpus.row_index[:, src_col]
    has_src = np.flatnonzero(src_rows >= 0)
    if len(has_src) < len(corpus):
        logger.warning(
            "translate_parallel: %d of %d groups have no %r row and are kept untranslated",
            len(corpus) - len(has_src), len(corpus), source_language,
        )
    rows = src_rows[has_src]
    # distinct texts of the source rows, dictionary-encoded in Arrow: codes [2 x n] into `unique`
    both = pa.concat_arrays([
        pc.cast(corpus.query_column.take(pa.array(rows)), pa.large_string()),
        pc.cast(corpus.passage_column.take(pa.array(rows)), pa.large_string()),
    ])
    encoded = pc.dictionary_encode(both)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64).reshape(2, len(rows))
    unique = encoded.dictionary.to_pylist()
    lengths = np.asarray(pc.utf8_length(encoded.dictionary).to_numpy(zero_copy_only=False), dtype=np.int64)
    keys = [text_key(t) for t in unique]

    # which (group, target) pairs are missing, per target
    needed: dict[str, np.ndarray] = {}
    for tgt in targets:
        if tgt in corpus.languages:
            needed[tgt] = np.flatnonzero(corpus.row_index[has_src, corpus.languages.index(tgt)] < 0)
        else:
            needed[tgt] = np.arange(len(rows))

    new_tables = []
    with TranslationCache(cache_dir) as cache:
        plans = []
        for tgt in targets:
            want = np.unique(codes[:, needed[tgt]])
            found = cache.get_keys(tid, source_language, tgt, [keys[i] for i in want])
            missing = np.array([i for i in want if keys[i] not in found], dtype=np.int64)
            missing = missing[np.argsort(-lengths[missing], kind="stable")]  # longest first: OOM shows early
            plans.append((tgt, want, found, missing))
            logger.info(
                "translate_parallel %s -> %s (%s): %d distinct texts, %d cached, %d to translate",
                source_language, tgt, tid, len(want), len(want) - len(missing), len(missing),
            )
        total = sum(len(p[3]) for p in plans)
        bar = tqdm(total=total, desc="Translating", unit="text", disable=not show_progress_bar)
        try:
            for tgt, want, found, missing in plans:
                translations: list[str | None] = [None] * len(unique)
                for i in want:
                    if keys[i] in found:
                        translations[i] = found[keys[i]]
                bar.set_postfix_str(f"{source_language}->{tgt}")
                for b, start in enumerate(range(0, len(missing), batch_size)):
                    idx = missing[start : start + batch_size]
                    batch = [unique[i] for i in idx]
                    out = _check_output(translator(batch, source_language, tgt), batch, tid, source_language, tgt, b)
                    cache.put(tid, source_language, tgt, batch, out)
                    for i, t in zip(idx, out):
                        translations[i] = t
                    bar.update(len(batch))
                sel = needed[tgt]
                values = pa.array(translations, pa.large_string())
                g = has_src[sel]
                new_tables.append(
                    pa.table(
                        {
                            "group": pa.array(np.asarray(corpus.groups, dtype=object)[g], pa.string()),
                            "lang": pa.array(np.full(len(sel), tgt, dtype=object), pa.string()),
                            "query": values.take(pa.array(codes[0, sel])),
                            "passage": values.take(pa.array(codes[1, sel])),
                            "source": pa.array(np.asarray(corpus.sources, dtype=object)[corpus.group_source[g]], pa.string()),
                        }
                    )
                )
        finally:
            bar.close()

    base = corpus.to_table()
    table = pa.concat_tables([base, *[t.cast(base.schema) for t in new_tables]])
    result = ParallelCorpus.from_dataset(table, source_column="source", strict=False, name="translate_parallel")
    result.report.issues[:0] = corpus.report.issues  # what the input's loader skipped stays on record
    return result


def _detect_format(path: str) -> str:
    from ..data.formats import detect_format

    p = Path(path)
    if p.is_dir():
        return "disk"
    if p.is_file():
        return detect_format(p)  # JSON Lines or SQuAD, told by name and first line
    return "hf"  # not a local path: a Hub data set id


def read_input(
    input: str | Path,
    input_format: str = "auto",
    source_language: str | None = None,
    query_column: str = "query",
    passage_column: str = "passage",
    split: str = "train",
    source_name: str | None = None,
    squad_passage: str = "context",
) -> ParallelCorpus:
    """Read a translate-train input as a ParallelCorpus (see :func:`translate_file` for the formats)."""
    from datasets import Dataset, DatasetDict

    from ..data.pairs import load_parallel_jsonl, pairs_to_corpus
    from ..data.squad import squad_to_corpus

    path = str(input)
    fmt = _detect_format(path) if input_format == "auto" else input_format
    if fmt not in ("jsonl", "squad", "hf", "disk"):
        raise ValueError(f"input_format must be 'auto', 'jsonl', 'squad' or 'hf', got {input_format!r}")
    if fmt == "jsonl":
        return load_parallel_jsonl(path)
    if fmt == "squad":
        if source_language is None:
            raise ValueError(f"input {path!r} is SQuAD-format: pass source_language= (the language of its questions)")
        return squad_to_corpus(path, source_language, name=source_name or "squad", passage=squad_passage)
    if fmt == "disk" and (Path(path) / "parallel_corpus.json").is_file():
        return ParallelCorpus.load_from_disk(path)
    if fmt == "disk" or Path(path).is_dir():
        from datasets import load_from_disk

        dataset = load_from_disk(path)
    else:
        from datasets import load_dataset

        dataset = load_dataset(path, split=split)
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise ValueError(f"input {path!r} has splits {list(dataset)}; pass split= one of them")
        dataset = dataset[split]
    assert isinstance(dataset, Dataset)
    if {"group", "lang", "query", "passage"} <= set(dataset.column_names):
        return ParallelCorpus.from_dataset(
            dataset, source_column="source" if "source" in dataset.column_names else None, name=path
        )
    if source_language is None:
        raise ValueError(f"input {path!r} holds (query, passage) pairs: pass source_language= (their language)")
    return pairs_to_corpus(dataset, query_column, passage_column, source_language, source=source_name or Path(path).name)


def write_output(corpus: ParallelCorpus, output: str | Path) -> None:
    """Write ``corpus`` as JSON Lines (``*.jsonl``) or as a ``save_to_disk`` folder (anything else)."""
    output = Path(output)
    if output.name.lower().endswith(".jsonl"):
        with atomic_writer(output) as f:  # synced, renamed into place; no stray temporary file on an error
            for rec in corpus.to_records():
                f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
    else:
        corpus.save_to_disk(output)


def translate_file(
    input: str | Path,
    output: str | Path,
    target_languages: Sequence[str],
    source_language: str | None = None,
    model_name: str = "facebook/m2m100_418M",
    input_format: str = "auto",
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    device: str | None = None,
    max_length: int = 256,
    num_beams: int = 1,
    query_column: str = "query",
    passage_column: str = "passage",
    split: str = "train",
    source_name: str | None = None,
    squad_passage: str = "context",
    show_progress_bar: bool | None = None,
    translator: Translator | None = None,
    translator_id: str | None = None,
) -> ParallelCorpus:
    """Read, translate and write a translate-train corpus: the function behind ``st-hybrid translate``.

    Input formats (``input_format="auto"`` picks by name):

    * ``"jsonl"`` (``*.jsonl``): ParallelCorpus records ``{"group", "lang", "query", "passage"[, "source"]}``.
    * ``"squad"`` (``*.json``): a SQuAD-format file; questions become queries, their paragraph (or answer sentence,
      ``squad_passage="sentence"``) the passage (:func:`~sentence_transformers_hybrid.data.squad.squad_to_corpus`).
    * ``"hf"``: a Hub data set id or a ``save_to_disk`` folder; either ParallelCorpus columns, or (query, passage)
      pairs named by ``query_column`` / ``passage_column``
      (:func:`~sentence_transformers_hybrid.data.pairs.pairs_to_corpus`). A folder written by
      ``ParallelCorpus.save_to_disk`` is read back as it is.

    Output: ``*.jsonl`` writes records; any other path a ``ParallelCorpus.save_to_disk`` folder that
    ``ParallelCorpus.load_from_disk`` reads.

    Args:
        target_languages: codes to translate into. source_language: the input's language (required for SQuAD
            and pair inputs, and for multilingual corpora).
        model_name: M2M-100 / NLLB checkpoint for :class:`M2M100Translator` (ignored when ``translator`` is given).
        cache_dir: translation cache; default ``$STH_CACHE_DIR/translations`` (``~/.cache/sentence-transformers-
            hybrid/translations``).
        batch_size, device, max_length, num_beams: see :class:`M2M100Translator`.
        translator, translator_id: use another translator (see :func:`translate_parallel`).

    Example::

        >>> translate_file("train-v1.1.json", "train-6lang.jsonl", ["de", "es", "zh"], source_language="en")  # downloads facebook/m2m100_418M from the Hub  # doctest: +SKIP
    """
    from .._utils import cache_dir as package_cache_dir

    corpus = read_input(input, input_format, source_language, query_column, passage_column, split, source_name,
                        squad_passage)
    if translator is None:
        translator = M2M100Translator(model_name, device=device, max_length=max_length, num_beams=num_beams,
                                      batch_size=batch_size, show_progress_bar=False)
    cache = Path(cache_dir) if cache_dir is not None else package_cache_dir() / "translations"
    start = time.perf_counter()
    result = translate_parallel(corpus, target_languages, translator, cache, batch_size=batch_size,
                                source_language=source_language,
                                show_progress_bar=show_progress_bar, translator_id=translator_id)
    logger.info("translated %s in %.1f s: %r", input, time.perf_counter() - start, result)
    write_output(result, output)
    return result
