"""The persistent translation cache (SQLite, WAL mode) and the identity a translator is cached under."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Translator = Callable[[list[str], str, str], Sequence[str]]

CACHE_FILE = "translations.sqlite3"
SQL_CHUNK = 500  # host parameters per SELECT ... IN (...)

__all__ = ["CACHE_FILE", "TranslationCache", "Translator", "text_key", "translator_identity"]


def text_key(text: str) -> bytes:
    """The cache key of a text: a 128-bit BLAKE2b digest of its UTF-8 bytes (the exact text, no normalisation).

    Deliberately not shared with ``models.frozen.text_key`` (SHA-1 hex): each is the key format of a cache already on
    disk (here a 16-byte SQLite ``BLOB`` primary key, there the keys of the embedding cache's JSON index), so one
    function for both would orphan every existing translation or embedding cache; what they share is one
    ``hashlib`` call.
    """
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
        self.path = Path(cache_dir) / CACHE_FILE
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
        for start in range(0, len(keys), SQL_CHUNK):
            chunk = list(keys[start : start + SQL_CHUNK])
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
