"""What a data argument names, and the loader it goes to: the functions behind ``--train-data`` and ``--benchmark``.

* :func:`detect_format`: a local file is JSON Lines records or a SQuAD-layout JSON document, told by its name and
  its first line (``.jsonl`` / ``.jsonl.gz`` are always JSON Lines; a ``.json`` file can be either);
* :func:`load_corpus`: ``xquad-r`` / ``mlqa-r``, a JSON Lines file, a SQuAD file or a saved ParallelCorpus folder
  as a :class:`~.corpus.ParallelCorpus`;
* :func:`load_benchmark`: ``xquad-r`` / ``mlqa-r`` or ``lang=file.json,lang=file.json`` (SQuAD files) as a
  :class:`~.benchmark.RetrievalBenchmark`.

Whatever they cannot use raises :class:`~.validation.DataValidationError` saying what the argument is and what to
pass instead (with the nearest benchmark name for a typo).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from .benchmark import RetrievalBenchmark
from .corpus import REQUIRED_FIELDS, ParallelCorpus
from .lareqa import LAREQA_LANGUAGES, load_lareqa
from .files import open_maybe_gzip
from .pairs import load_parallel_jsonl
from .squad import load_squad_parallel, squad_to_corpus
from .validation import DataValidationError

FileFormat = Literal["jsonl", "squad"]
_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
_BENCHMARKS = sorted(LAREQA_LANGUAGES)


def detect_format(path: str | Path) -> FileFormat:
    """``"jsonl"`` (one ParallelCorpus record per line) or ``"squad"`` (a SQuAD-layout JSON document) for a file.

    ``.jsonl``, ``.ndjson`` (optionally ``.gz``) are JSON Lines. Any other file is told by its first non-blank line
    (gzip is read through): a JSON object with a record's fields is JSON Lines; a ``{"data": [...]}`` object on
    one line, or the opening of a JSON document spread over several lines, is SQuAD. A JSON array or any other
    value raises :class:`DataValidationError` saying what the file holds and what to pass.

    Example::

        >>> import json, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "train.json")
        >>> with open(path, "w", encoding="utf-8") as f:
        ...     json.dump({"version": "1.1", "data": [{"title": "t", "paragraphs": []}]}, f, indent=1)
        >>> detect_format(path)
        'squad'
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"file {str(path)!r} not found")
    if path.name.lower().endswith(_JSONL_SUFFIXES):
        return "jsonl"
    first = _first_line(path)
    try:
        value = json.loads(first)
    except ValueError:
        stripped = first.strip()
        if stripped.startswith("{") and not stripped.endswith("}"):
            return "squad"  # a JSON document over several lines: the SQuAD loader reads (and checks) it
        if stripped.startswith("{"):
            return "jsonl"  # one malformed record: the JSON Lines loader names the line
        raise DataValidationError(
            f"file {str(path)!r}: its first line is not JSON ({stripped[:40]!r}); expected JSON Lines records "
            f"{list(REQUIRED_FIELDS)} (one object per line) or a SQuAD-format JSON file"
        ) from None
    if isinstance(value, dict):
        if isinstance(value.get("data"), list) and not set(REQUIRED_FIELDS) & set(value):
            return "squad"
        return "jsonl"
    what = "a JSON array" if isinstance(value, list) else f"a JSON {type(value).__name__}"
    raise DataValidationError(
        f"file {str(path)!r} starts with {what}, neither JSON Lines records nor a SQuAD document; write one record "
        f"{{{', '.join(repr(k) for k in REQUIRED_FIELDS)}}} per line (JSON Lines), or pass a SQuAD-format file "
        "({'data': [articles]})"
    )


def _first_line(path: Path) -> str:
    with open_maybe_gzip(path) as f:
        for raw in f:
            line = raw.decode("utf-8-sig", errors="replace")
            if line.strip():
                return line
    raise DataValidationError(f"file {str(path)!r} is empty")


def load_corpus(
    spec: str | Path,
    data_dir: str | Path | None = None,
    languages: Sequence[str] | None = None,
    strict: bool = True,
) -> ParallelCorpus:
    """Training data named by ``spec`` (what ``st-hybrid train --train-data`` takes) as a ParallelCorpus.

    Args:
        spec: ``"xquad-r"`` / ``"mlqa-r"`` (the benchmark's (question, answer sentence) pairs), a JSON Lines file
            (``.jsonl``, ``.jsonl.gz``), a SQuAD-format JSON file (one language: pass it as ``languages=[lang]``),
            or a folder written by ``ParallelCorpus.save_to_disk``.
        data_dir: the LAReQA folder (for ``xquad-r`` / ``mlqa-r``).
        languages: keep only these languages (an unknown one raises); for a SQuAD file, its one language.
        strict: raise on the first bad record (default), or skip and report bad records in ``corpus.report``.

    Example::

        >>> corpus = load_corpus("mlqa-r", languages=["de", "en"])   # data from $STH_DATA_DIR
        >>> corpus.languages, len(corpus)
        (['de', 'en'], 1148)
    """
    name = str(spec)
    langs = [languages] if isinstance(languages, str) else (list(languages) if languages is not None else None)
    if name.lower() in LAREQA_LANGUAGES:
        return load_lareqa(name.lower(), data_dir=data_dir, languages=langs, strict=strict).to_parallel_corpus()
    path = Path(spec)
    if path.is_dir():
        corpus = ParallelCorpus.load_from_disk(path)
    elif path.is_file():
        if detect_format(path) == "squad":
            if not langs or len(langs) != 1:
                raise DataValidationError(
                    f"file {name!r} is a SQuAD-format file (its questions are in one language): pass that language, "
                    "e.g. languages=['en'] (command line: --languages en)"
                    + (f"; got {langs}" if langs else "")
                )
            return squad_to_corpus(path, langs[0], name=_source_name(path), strict=strict)
        corpus = load_parallel_jsonl(path, strict=strict)
    else:
        raise DataValidationError(
            f"training data {name!r}: no such file or folder, and not a benchmark name; expected "
            f"{' or '.join(repr(b) for b in _BENCHMARKS)}, a .jsonl file, a SQuAD .json file or a saved ParallelCorpus "
            "folder" + _did_you_mean(name)
        )
    if langs is not None:
        missing = [lang for lang in langs if lang not in corpus.languages]
        if missing:
            raise DataValidationError(f"{name!r} has no language(s) {missing}; it has {corpus.languages}")
        if set(langs) != set(corpus.languages):
            corpus = corpus.select_languages(langs)
    return corpus


def load_benchmark(
    spec: str,
    data_dir: str | Path | None = None,
    languages: Sequence[str] | None = None,
    strict: bool = True,
) -> RetrievalBenchmark:
    """The benchmark named by ``spec`` (what ``st-hybrid evaluate --benchmark`` takes).

    Args:
        spec: ``"xquad-r"`` or ``"mlqa-r"``, or SQuAD-format files as ``"en=a.json,de=b.json"``.
        data_dir: the LAReQA folder (for ``xquad-r`` / ``mlqa-r``).
        languages: keep only these languages (an unknown one raises).
        strict: raise on the first bad question (default), or skip and report bad questions in ``bench.report``.

    Example::

        >>> load_benchmark("xquad", languages=["en"])
        Traceback (most recent call last):
        ...
        sentence_transformers_hybrid.data.validation.DataValidationError: unknown benchmark 'xquad': expected 'mlqa-r' or 'xquad-r', or SQuAD-format files as lang=file.json[,lang=file.json...]; did you mean 'xquad-r'?
    """
    spec = str(spec)
    langs = [languages] if isinstance(languages, str) else (list(languages) if languages is not None else None)
    if spec.lower() in LAREQA_LANGUAGES:
        return load_lareqa(spec.lower(), data_dir=data_dir, languages=langs, strict=strict)
    if "=" not in spec:
        hint = ""
        if Path(spec).is_file():
            hint = f"; for a SQuAD file, name its language: lang={spec}"
        raise DataValidationError(
            f"unknown benchmark {spec!r}: expected {' or '.join(repr(b) for b in _BENCHMARKS)}, or SQuAD-format files "
            "as lang=file.json[,lang=file.json...]" + (hint or _did_you_mean(spec))
        )
    files: dict[str, str] = {}
    for item in spec.split(","):
        lang, sep, file = (part.strip() for part in item.partition("="))
        if not sep or not lang or not file:
            raise DataValidationError(
                f"benchmark {spec!r}: item {item!r} is not lang=file.json (e.g. en=xquad.en.json,de=xquad.de.json)"
            )
        if lang in files:
            raise DataValidationError(f"benchmark {spec!r}: language {lang!r} is given twice ({files[lang]}, {file})")
        files[lang] = file
    if langs is not None:
        missing = [lang for lang in langs if lang not in files]
        if missing:
            raise DataValidationError(f"benchmark {spec!r} has no file for language(s) {missing}; it has {list(files)}")
        files = {lang: files[lang] for lang in langs}
    return load_squad_parallel(files, name="squad", strict=strict)


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), _BENCHMARKS, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _source_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".json"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "squad"
