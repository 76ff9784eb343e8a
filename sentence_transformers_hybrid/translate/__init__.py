"""Translate-train: monolingual QA pairs -> a parallel corpus, cached and resumable.

* :mod:`.cache`: :class:`TranslationCache` (SQLite, WAL) and translator identities;
* :mod:`.m2m100`: :class:`M2M100Translator` (M2M-100 / NLLB) and the ISO <-> NLLB code tables;
* :mod:`.pipeline`: :func:`translate_parallel` and :func:`translate_file` (what ``st-hybrid translate`` calls).

A *translator* is any callable ``(texts, source_language, target_language) -> texts`` that returns one string per
input, in order. Its identity in the cache comes from, in this order: the ``translator_id=`` argument, its ``id``
attribute, its ``name`` attribute, or, for a module-level function, ``module.qualname``. Lambdas and nested
functions have no stable name and are refused unless ``translator_id=`` is given.
"""

from .cache import TranslationCache, Translator, text_key, translator_identity
from .m2m100 import ISO_FROM_NLLB, NLLB_CODES, M2M100Translator
from .pipeline import read_input, translate_file, translate_parallel, write_output

__all__ = [
    "ISO_FROM_NLLB",
    "M2M100Translator",
    "NLLB_CODES",
    "TranslationCache",
    "Translator",
    "read_input",
    "text_key",
    "translate_file",
    "translate_parallel",
    "translator_identity",
    "write_output",
]
