"""Loader for raw SQuAD-format files (XQuAD, MLQA, your own translations) as a :class:`RetrievalBenchmark`.

Paragraphs are split into sentences with `sentencex <https://pypi.org/project/sentencex/>`_ (Wikimedia's
rule-based splitter): it is maintained, pure Python, installs from PyPI with no model or data download at run time,
and covers ~250 languages through language fallback chains, so a language we never tested still gets a sensible
splitter (terminal punctuation of its script) instead of an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from .benchmark import LanguageSplit, RetrievalBenchmark, build_split
from .lareqa import read_json, squad_paragraphs
from .validation import DataValidationError, Validator

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

        >>> bench = load_squad_parallel({"en": "xquad.en.json", "de": "xquad.de.json"}, name="xquad")  # doctest: +SKIP
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
