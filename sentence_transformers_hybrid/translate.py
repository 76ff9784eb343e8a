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

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from .data.corpus import ParallelCorpus

logger = logging.getLogger(__name__)

Translator = Callable[[list[str], str, str], Sequence[str]]

#: ISO 639-1 codes (as used by M2M-100 and LAReQA) -> NLLB-200 (FLORES-200) codes. Codes not listed here can be
#: given in NLLB form directly (``"eng_Latn"``).
NLLB_CODES: dict[str, str] = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "az": "azj_Latn", "be": "bel_Cyrl", "bg": "bul_Cyrl",
    "bn": "ben_Beng", "bs": "bos_Latn", "ca": "cat_Latn", "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn",
    "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn", "et": "est_Latn", "fa": "pes_Arab",
    "fi": "fin_Latn", "fr": "fra_Latn", "ga": "gle_Latn", "gl": "glg_Latn", "gu": "guj_Gujr", "ha": "hau_Latn",
    "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn",
    "ig": "ibo_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "jv": "jav_Latn", "ka": "kat_Geor",
    "kk": "kaz_Cyrl", "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang", "lo": "lao_Laoo", "lt": "lit_Latn",
    "lv": "lvs_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl", "mr": "mar_Deva", "ms": "zsm_Latn",
    "my": "mya_Mymr", "ne": "npi_Deva", "nl": "nld_Latn", "no": "nob_Latn", "pa": "pan_Guru", "pl": "pol_Latn",
    "ps": "pbt_Arab", "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "sd": "snd_Arab", "si": "sin_Sinh",
    "sk": "slk_Latn", "sl": "slv_Latn", "so": "som_Latn", "sq": "als_Latn", "sr": "srp_Cyrl", "sv": "swe_Latn",
    "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu", "th": "tha_Thai", "tl": "tgl_Latn", "tr": "tur_Latn",
    "uk": "ukr_Cyrl", "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn", "xh": "xho_Latn", "yo": "yor_Latn",
    "zh": "zho_Hans", "zu": "zul_Latn",
}  # fmt: skip
_ISO_FROM_NLLB = {v: k for k, v in NLLB_CODES.items()}

_CACHE_FILE = "translations.sqlite3"
_SQL_CHUNK = 500  # host parameters per SELECT ... IN (...)


def _default_progress() -> bool:
    """Progress bars on when logging is at INFO or below, like sentence-transformers."""
    return logger.getEffectiveLevel() <= logging.INFO


def text_key(text: str) -> bytes:
    """The cache key of a text: a 128-bit BLAKE2b digest of its UTF-8 bytes (the exact text, no normalisation)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def translator_identity(translator: Translator, translator_id: str | None = None) -> str:
    """The name under which ``translator``'s outputs are cached (see the module docstring for the order).

    Example::

        >>> translator_identity(lambda texts, s, t: texts, translator_id="identity-v1")
        'identity-v1'
    """
    if translator_id is not None:
        if not isinstance(translator_id, str) or not translator_id.strip():
            raise ValueError(f"translator_id must be a non-empty string, got {translator_id!r}")
        return translator_id
    if not callable(translator):
        raise ValueError(f"translator must be a callable (texts, source_language, target_language) -> texts, got {translator!r}")
    for attr in ("id", "name"):
        value = getattr(translator, attr, None)
        if isinstance(value, str) and value.strip():
            return value
    qualname = getattr(translator, "__qualname__", None)
    module = getattr(translator, "__module__", None)
    if isinstance(qualname, str) and "<lambda>" not in qualname and "<locals>" not in qualname and module:
        return f"{module}.{qualname}"
    raise ValueError(
        f"cannot cache the outputs of {translator!r}: a lambda, nested function or object without an 'id' or 'name' "
        "attribute has no stable name, so a rerun could not find its cached translations and two such translators "
        "would overwrite each other's. Pass translator_id='...' (change it whenever the translator's behaviour "
        "changes) or give the translator an 'id' attribute."
    )


class TranslationCache:
    """Persistent translations: one SQLite row per (translator id, source language, target language, text key).

    WAL journal mode, one transaction per :meth:`put` (so a batch is either fully stored or not at all), safe to
    share between processes on one machine. Only the digest of a source text is stored, never the text itself.

    Example::

        >>> cache = TranslationCache("/tmp/st-hybrid-cache")
        >>> cache.put("my-mt", "en", "de", ["Hello"], ["Hallo"])
        >>> cache.get("my-mt", "en", "de", ["Hello", "Bye"])
        {'Hello': 'Hallo'}
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.path = Path(cache_dir) / _CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=60.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS translations (translator TEXT NOT NULL, source_lang TEXT NOT NULL, "
                "target_lang TEXT NOT NULL, text_key BLOB NOT NULL, translation TEXT NOT NULL, "
                "PRIMARY KEY (translator, source_lang, target_lang, text_key)) WITHOUT ROWID"
            )
            self._conn.commit()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"translation cache {str(self.path)!r} is not a usable SQLite database: {e}") from None

    def get_keys(self, translator: str, source_language: str, target_language: str, keys: Sequence[bytes]) -> dict[bytes, str]:
        """Cached translations of the given text keys: ``{key: translation}`` for the keys found."""
        found: dict[bytes, str] = {}
        head = "SELECT text_key, translation FROM translations WHERE translator=? AND source_lang=? AND target_lang=? AND text_key IN "
        for start in range(0, len(keys), _SQL_CHUNK):
            chunk = list(keys[start : start + _SQL_CHUNK])
            sql = head + "(" + ",".join("?" * len(chunk)) + ")"
            found.update(self._conn.execute(sql, (translator, source_language, target_language, *chunk)).fetchall())
        return found

    def get(self, translator: str, source_language: str, target_language: str, texts: Sequence[str]) -> dict[str, str]:
        """Cached translations of ``texts``: ``{text: translation}`` for the texts found."""
        keys = {text_key(t): t for t in texts}
        return {keys[k]: v for k, v in self.get_keys(translator, source_language, target_language, list(keys)).items()}

    def put(
        self, translator: str, source_language: str, target_language: str, texts: Sequence[str], translations: Sequence[str]
    ) -> None:
        """Store one batch in a single transaction (committed before returning)."""
        if len(texts) != len(translations):
            raise ValueError(f"put: {len(texts)} texts but {len(translations)} translations")
        rows = [(translator, source_language, target_language, text_key(s), t) for s, t in zip(texts, translations)]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO translations VALUES (?, ?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM translations").fetchone()[0]

    def summary(self) -> list[tuple[str, str, str, int]]:
        """``(translator, source language, target language, cached texts)`` per language pair."""
        return self._conn.execute(
            "SELECT translator, source_lang, target_lang, COUNT(*) FROM translations GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> TranslationCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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
        show_progress_bar = _default_progress()

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
        pc.cast(corpus._queries.take(pa.array(rows)), pa.large_string()),
        pc.cast(corpus._passages.take(pa.array(rows)), pa.large_string()),
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


class M2M100Translator:
    """An M2M-100 or NLLB-200 checkpoint from ``transformers`` as a translator for :func:`translate_parallel`.

    Texts are tokenized once, sorted by token length (longest first) and generated in batches of ``batch_size``
    so that little compute goes into padding; outputs come back in input order. Language codes are ISO 639-1
    (``"en"``, ``"de"``, as in LAReQA) for both families: for an NLLB checkpoint they are mapped through
    :data:`NLLB_CODES` (``"de"`` -> ``"deu_Latn"``), and NLLB codes are accepted as they are.

    Args:
        model_name: Hub id or local folder of an ``M2M100ForConditionalGeneration`` checkpoint with an
            ``M2M100Tokenizer`` (``facebook/m2m100_418M``, ``facebook/m2m100_1.2B``) or an ``NllbTokenizer``
            (``facebook/nllb-200-distilled-600M``).
        device: ``"cuda"``, ``"cpu"``, ...; default CUDA when available.
        max_length: input tokens kept per text (longer texts are truncated, with a warning).
        num_beams: beam size; 1 is greedy search.
        batch_size: texts per ``generate`` call.
        max_new_tokens: generated tokens per text; default ``max_length + max_length // 2``.
        dtype: passed to ``from_pretrained`` (e.g. ``torch.float16`` on a GPU).
        show_progress_bar: a tqdm bar per call; default on when logging is at INFO or below.

    The cache identity :attr:`id` is the model name plus the settings that change outputs (``num_beams``,
    ``max_length``, ``max_new_tokens``).

    Example::

        >>> translate = M2M100Translator("facebook/m2m100_418M")  # doctest: +SKIP
        >>> translate(["Who wrote Faust?"], "en", "de")  # doctest: +SKIP
        ['Wer hat Faust geschrieben?']
    """

    def __init__(
        self,
        model_name: str = "facebook/m2m100_418M",
        device: str | None = None,
        max_length: int = 256,
        num_beams: int = 1,
        batch_size: int = 32,
        max_new_tokens: int | None = None,
        dtype: Any = None,
        show_progress_bar: bool | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        for arg, value in (("max_length", max_length), ("num_beams", num_beams), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        self.model_name = str(model_name)
        self.max_length = max_length
        self.num_beams = num_beams
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens if max_new_tokens is not None else max_length + max_length // 2
        self.show_progress_bar = show_progress_bar
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        self.model = AutoModelForSeq2SeqLM.from_pretrained(self.model_name, **kwargs).to(self.device).eval()
        self.family = "m2m100" if hasattr(self.tokenizer, "get_lang_id") else "nllb"
        if self.family == "m2m100":
            language_ids = list(self.tokenizer.lang_code_to_id.values())
        else:
            from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

            ids = self.tokenizer.convert_tokens_to_ids(sorted(set(FAIRSEQ_LANGUAGE_CODES) | set(NLLB_CODES.values())))
            language_ids = [i for i in ids if i is not None and i != self.tokenizer.unk_token_id]
        self._language_ids = torch.tensor(sorted(set(language_ids)), dtype=torch.long)

    @property
    def id(self) -> str:
        """Cache identity: model and output-changing settings."""
        return f"{self.model_name}|beams={self.num_beams}|max_length={self.max_length}|max_new_tokens={self.max_new_tokens}"

    def __repr__(self) -> str:
        return f"M2M100Translator({self.id!r}, family={self.family!r}, device={str(self.device)!r})"

    def language_code(self, language: str) -> str:
        """The model's own code for ``language`` (ISO 639-1 or NLLB form); ValueError if the model lacks it."""
        if self.family == "m2m100":
            code = _ISO_FROM_NLLB.get(language, language)
            if code not in self.tokenizer.lang_code_to_id:
                raise ValueError(
                    f"language {language!r} is not an M2M-100 language code; expected one of "
                    f"{sorted(self.tokenizer.lang_code_to_id)}"
                )
            return code
        code = NLLB_CODES.get(language, language)
        token_id = self.tokenizer.convert_tokens_to_ids(code)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(
                f"language {language!r} ({code!r}) is not a language token of {self.model_name!r}; use an NLLB code "
                "such as 'eng_Latn' or an ISO 639-1 code listed in NLLB_CODES"
            )
        return code

    def _target_token_id(self, code: str) -> int:
        if self.family == "m2m100":
            return self.tokenizer.get_lang_id(code)
        return self.tokenizer.convert_tokens_to_ids(code)

    def __call__(self, texts: Sequence[str], source_language: str, target_language: str) -> list[str]:
        """Translate ``texts`` from ``source_language`` into ``target_language``; one output per input, in order."""
        import torch

        texts = list(texts)
        if not texts:
            return []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"text {i} is {type(t).__name__}, expected str")
        src = self.language_code(source_language)
        forced = self._target_token_id(self.language_code(target_language))
        self.tokenizer.src_lang = src
        encoded = self.tokenizer(texts)["input_ids"]
        lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
        too_long = np.flatnonzero(lengths > self.max_length)
        if len(too_long):
            logger.warning(
                "%d of %d texts are longer than max_length=%d tokens and were truncated (longest: %d tokens)",
                len(too_long), len(texts), self.max_length, int(lengths.max()),
            )
            cut = self.tokenizer([texts[i] for i in too_long], truncation=True, max_length=self.max_length)["input_ids"]
            for i, ids in zip(too_long, cut):
                encoded[i] = ids
            lengths[too_long] = [len(ids) for ids in cut]
        order = np.argsort(-lengths, kind="stable")
        out: list[str] = [""] * len(texts)
        show = self.show_progress_bar if self.show_progress_bar is not None else _default_progress()
        with torch.inference_mode(), tqdm(total=len(texts), desc=f"{source_language}->{target_language}",
                                          unit="text", disable=not show, leave=False) as bar:
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
                generated = self.model.generate(
                    input_ids=batch["input_ids"].to(self.device),
                    attention_mask=batch["attention_mask"].to(self.device),
                    forced_bos_token_id=forced,
                    num_beams=self.num_beams,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                )
                # language tokens are not "special" to every tokenizer version: blank them out before decoding
                generated[torch.isin(generated, self._language_ids.to(generated.device))] = self.tokenizer.pad_token_id
                for i, text in zip(idx, self.tokenizer.batch_decode(generated, skip_special_tokens=True)):
                    out[i] = text
                bar.update(len(idx))
        return out


# ---------------------------------------------------------------------------------------------------- files / CLI
def _detect_format(path: str) -> str:
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "disk"
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        return "squad"
    if p.exists():
        raise ValueError(f"input {path!r}: cannot tell its format from the name; pass input_format='jsonl'|'squad'|'hf'")
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

    from .data.jsonl import load_parallel_jsonl
    from .data.sources import pairs_to_corpus, squad_to_corpus

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
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in corpus.to_records():
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, output)
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
      ``squad_passage="sentence"``) the passage (:func:`~sentence_transformers_hybrid.data.sources.squad_to_corpus`).
    * ``"hf"``: a Hub data set id or a ``save_to_disk`` folder; either ParallelCorpus columns, or (query, passage)
      pairs named by ``query_column`` / ``passage_column``
      (:func:`~sentence_transformers_hybrid.data.sources.pairs_to_corpus`). A folder written by
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

        >>> translate_file("train-v1.1.json", "train-6lang.jsonl", ["de", "es", "zh"], source_language="en")  # doctest: +SKIP
    """
    from .data.lareqa import cache_dir as package_cache_dir

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


__all__ = [
    "M2M100Translator",
    "NLLB_CODES",
    "TranslationCache",
    "translate_file",
    "translate_parallel",
    "translator_identity",
]
