"""The precompiled-charsmap compiler (models/trie.py): its blob read back by the documented bit packing, and by
`tokenizers`' own ``Precompiled`` normaliser."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from tokenizers import normalizers

from sentence_transformers_hybrid.models.trie import precompiled_charsmap


def _read(blob: bytes, key: bytes) -> bytes | None:
    """The replacement of exactly ``key``, walking the units as models/trie.py documents them."""
    (size,) = struct.unpack_from("<I", blob)
    units = np.frombuffer(blob[4 : 4 + size], "<u4")
    values = blob[4 + size :]
    offset = lambda u: int(u) >> 10  # noqa: E731  (bit 9, the extension, is never set)
    pos = 0
    for c in key:
        pos ^= offset(units[pos]) ^ c
        if pos >= len(units) or int(units[pos]) & ((1 << 31) | 0xFF) != c:
            return None
    if not int(units[pos]) >> 8 & 1:
        return None
    leaf = int(units[pos ^ offset(units[pos])])
    assert leaf >> 31 == 1 and not int(units[pos]) >> 9 & 1
    start = leaf & 0x7FFFFFFF
    return values[start : values.index(b"\0", start)]


def _rules(n: int, seed: int) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    alphabet = list("abcé") + ["\u0300", "ß", "中", "\U0001f600"]
    rules = {}
    while len(rules) < n:
        key = "".join(rng.choice(alphabet, size=int(rng.integers(1, 4))))
        rules[key] = "".join(rng.choice(list("xyz "), size=int(rng.integers(0, 3))))
    return rules


@pytest.mark.parametrize("seed", [0, 1])
def test_every_key_reads_back_its_replacement_by_the_documented_packing(seed):
    rules = _rules(60, seed)
    blob = precompiled_charsmap(rules)
    assert all(_read(blob, k.encode()) == v.encode() for k, v in rules.items())
    assert _read(blob, "ab?".encode()) is None


def test_the_tokenizers_normaliser_rewrites_each_character_by_its_rule():
    blob = precompiled_charsmap({"a": "1", "é": "e", "中": "zh", "\U0001f600": ""})
    assert normalizers.Precompiled(blob).normalize_str("abaé中c\U0001f600") == "1b1ezhc"


def test_the_compiler_is_deterministic():
    rules = _rules(40, 3)
    assert precompiled_charsmap(rules) == precompiled_charsmap(dict(reversed(list(rules.items()))))
