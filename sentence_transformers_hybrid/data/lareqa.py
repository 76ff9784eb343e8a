"""Loader for the released LAReQA benchmarks XQuAD-R and MLQA-R (Roy et al., 2020).

Data is looked up in this order: the ``data_dir`` argument, the ``STH_DATA_DIR`` environment variable, the download
cache (``$STH_CACHE_DIR/lareqa`` or ``~/.cache/sentence-transformers-hybrid/lareqa``); when nothing is found and
``download`` is allowed, the files are fetched from the public LAReQA release on GitHub into the cache.

Licences: XQuAD-R is CC BY-SA 4.0; MLQA-R is CC BY-NC 4.0 (non-commercial use only).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .._utils import atomic_write_bytes, cache_dir
from .benchmark import LanguageSplit, RetrievalBenchmark, build_split
from .files import open_maybe_gzip
from .validation import DataValidationError, Validator

logger = logging.getLogger(__name__)

LAREQA_LANGUAGES: dict[str, list[str]] = {
    "xquad-r": ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"],
    "mlqa-r": ["ar", "de", "en", "es", "hi", "vi", "zh"],
}
#: Public origin of the release: ``{base}/{commit}/{folder}/{lang}.json``.
LAREQA_URL = "https://raw.githubusercontent.com/google-research-datasets/lareqa/{commit}/{folder}/{lang}.json"
LAREQA_COMMITS = {"xquad-r": "5405d2a77e83d5ccb47623a3f9e5604c3f103193", "mlqa-r": "354d67d1cd066854cdfbf5ad0e6105528976141d"}
LICENSES = {"xquad-r": "CC BY-SA 4.0", "mlqa-r": "CC BY-NC 4.0"}


def read_json(path: str | Path) -> dict:
    """Read a JSON file (gzip read through). Malformed or truncated JSON, or text that is not UTF-8, raises
    :class:`DataValidationError` naming the file, line and column."""
    path = Path(path)
    try:
        with open_maybe_gzip(path) as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataValidationError(f"file {str(path)!r} not found") from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataValidationError(f"file {str(path)!r}: cannot be read ({e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataValidationError(
            f"file {str(path)!r}: not UTF-8 text at line {line}, column {column} (byte {raw[e.start]:#04x}); re-encode "
            "the file as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataValidationError(
            f"file {str(path)!r}: malformed or truncated JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None


def squad_paragraphs(data: dict, file: str) -> list[dict]:
    """The paragraphs of a SQuAD-layout document (``data`` -> articles -> ``paragraphs``), checked for shape."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        got = f"an object with keys {sorted(data)[:8]}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise DataValidationError(
            f"file {file!r}: expected a SQuAD layout object with a 'data' list of articles, got {got}"
        )
    out = []
    for a, article in enumerate(data["data"]):
        pars = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(pars, list):
            raise DataValidationError(f"file {file!r}: article {a} has no 'paragraphs' list")
        for p, par in enumerate(pars):
            if not isinstance(par, dict) or not isinstance(par.get("context"), str):
                raise DataValidationError(f"file {file!r}: article {a}, paragraph {p} has no 'context' string")
            out.append(par)
    return out


def _download(name: str, lang: str, target: Path) -> None:
    url = LAREQA_URL.format(commit=LAREQA_COMMITS[name], folder=name, lang=lang)
    logger.info("downloading %s", url)
    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - fixed https URL
        payload = resp.read()
    json.loads(payload)  # never cache a truncated download
    atomic_write_bytes(target, payload)  # synced, renamed into place, the permissions open() would give


def resolve_lareqa_dir(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The directory that holds ``{name}/``: argument, ``$STH_DATA_DIR``, cache, else download into the cache."""
    tried = []
    for candidate in (data_dir, os.environ.get("STH_DATA_DIR")):
        if candidate:
            path = Path(candidate)
            if (path / name).is_dir():
                return path
            tried.append(str(path / name))
            if data_dir is not None:
                raise DataValidationError(
                    f"data directory {str(path)!r} has no {name!r} folder (expected {str(path / name)!r} with "
                    f"{{lang}}.json files)"
                )
    cached = cache_dir() / "lareqa"
    if (cached / name).is_dir() and all((cached / name / f"{lang}.json").is_file() for lang in LAREQA_LANGUAGES[name]):
        return cached
    tried.append(str(cached / name))
    if download:
        try:
            for lang in LAREQA_LANGUAGES[name]:
                target = cached / name / f"{lang}.json"
                if not target.is_file():
                    _download(name, lang, target)
            return cached
        except OSError as e:
            tried.append(f"download from {LAREQA_URL.format(commit=LAREQA_COMMITS[name], folder=name, lang='*')} ({e})")
    raise DataValidationError(
        f"LAReQA {name!r} not found; tried: {tried}. Pass data_dir=... or set STH_DATA_DIR to the folder that "
        f"holds {name}/"
    )


def load_lareqa(
    name: str,
    data_dir: str | Path | None = None,
    languages: Sequence[str] | None = None,
    strict: bool = True,
    download: bool = True,
) -> RetrievalBenchmark:
    """Load XQuAD-R (``"xquad-r"``, 11 languages) or MLQA-R (``"mlqa-r"``, 7 languages) as a RetrievalBenchmark.

    The candidate pool of each language is the ``sentences`` field of every paragraph (duplicates kept), which
    reproduces the released candidate counts exactly (e.g. 1,180 English XQuAD-R candidates, 6,264 English MLQA-R).

    Args:
        name: ``"xquad-r"`` or ``"mlqa-r"``.
        data_dir: folder holding ``xquad-r/`` and ``mlqa-r/``; default ``$STH_DATA_DIR``, then the cache.
        languages: a subset of the benchmark's languages (default: all).
        strict: raise on the first bad question (default); ``False`` skips bad questions and reports them in
            ``bench.report``.
        download: fetch the public release into the cache when no local copy is found.

    Example::

        >>> bench = load_lareqa("mlqa-r")          # data_dir=None: $STH_DATA_DIR, then the cache
        >>> bench.languages, len(bench.splits["en"].sentences)
        (['ar', 'de', 'en', 'es', 'hi', 'vi', 'zh'], 6264)
    """
    key = name.lower()
    if key not in LAREQA_LANGUAGES:
        raise ValueError(f"unknown LAReQA benchmark {name!r}; expected one of {sorted(LAREQA_LANGUAGES)}")
    langs = list(languages) if languages is not None else LAREQA_LANGUAGES[key]
    unknown = [lang for lang in langs if lang not in LAREQA_LANGUAGES[key]]
    if unknown:
        raise DataValidationError(f"unknown language(s) {unknown} for {key}; it has {LAREQA_LANGUAGES[key]}")
    root = resolve_lareqa_dir(key, data_dir, download=download)
    validator = Validator(strict)
    splits: dict[str, LanguageSplit] = {}
    for lang in langs:
        path = root / key / f"{lang}.json"
        if not path.is_file():
            raise DataValidationError(f"file {str(path)!r} not found (language {lang!r} of {key})")
        paragraphs = squad_paragraphs(read_json(path), str(path))
        for p, par in enumerate(paragraphs):
            if "sentences" not in par or "sentence_breaks" not in par:
                raise DataValidationError(
                    f"file {str(path)!r}, paragraph {p}: no 'sentences'/'sentence_breaks' (not a LAReQA file; use "
                    "load_squad_parallel for plain SQuAD-format files)"
                )
        splits[lang] = build_split(lang, paragraphs, str(path), validator)
    report = validator.finish(f"load_lareqa({key!r})")
    return RetrievalBenchmark(splits, name=key, report=report)
