"""Compile string rewrite rules into SentencePiece's ``precompiled_charsmap``: the normaliser table of a tokenizer.

`tokenizers`' ``normalizers.Precompiled`` (and SentencePiece itself) read a normalisation table as one blob:

``u32 trie_bytes | trie: trie_bytes / 4 darts-clone units (u32, little-endian) | replacements, NUL-terminated``

The trie maps the UTF-8 bytes of a rule's key to the byte offset of its replacement in the last part; a reader
walks it for the longest key that prefixes the input and copies the replacement found there.

The trie is a *double array* (darts-clone): every node is one u32 *unit* in a flat array; a node whose children
start at ``base`` finds its child for byte ``c`` at index ``base ^ c``. One unit packs::

    bit  31      set on a leaf unit (a value): bits 0-30 hold the value, and the label check below never matches it
    bits 10-30   offset: the node's ``base`` is its own index XOR offset (21 bits here: bit 9, which darts-clone
                 uses to shift a large offset by 8 more bits, is never set, so the array stays under 2**21 units)
    bit  9       offset extension (unused, see above)
    bit  8       has_leaf: the key ending at this node has a value, stored in the leaf unit at ``base ^ 0``
    bits 0-7     label: the byte that leads from the parent to this node (checked: ``unit & (1 << 31 | 0xFF)``)

So a reader at index ``i`` goes to ``i ^ offset(unit[i]) ^ c`` for byte ``c``, and the key read so far has a value
when bit 8 is set (the value is ``unit[i ^ offset] & 0x7FFFFFFF``). As in SentencePiece, the leaf is the child
labelled 0, so a key never holds a NUL byte after a prefix that is itself a key.

Every node gets its own base (``is_base``): two nodes sharing a base would each see the other's children, since a
child is found by its label alone. Bases are placed first-fit, vectorised over a window of free slots.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np

__all__ = ["precompiled_charsmap"]

_LEAF = 1 << 31  # bit 31: a value unit
_HAS_LEAF = 1 << 8  # bit 8: the node's key has a value at base ^ 0
_OFFSET_SHIFT = 10  # bits 10-30: the offset to the node's base
_MAX_OFFSET = 1 << 21


def precompiled_charsmap(rules: Mapping[str, str]) -> bytes:
    """SentencePiece's ``precompiled_charsmap`` blob rewriting each key of ``rules`` to its value.

    Example:
        >>> from tokenizers import normalizers
        >>> blob = precompiled_charsmap({"é": "e", "ß": "ss"})
        >>> normalizers.Precompiled(blob).normalize_str("café straße")
        'cafe strasse'
    """
    values = bytearray()
    trie: dict = {}
    for key in sorted(rules, key=lambda k: k.encode("utf-8")):
        node = trie
        for byte in key.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[-1] = len(values)  # -1 marks a value: the byte offset of its replacement
        values += rules[key].encode("utf-8") + b"\0"
    units = np.zeros(1 << 16, np.uint32)
    used = np.zeros(1 << 16, bool)  # slot holds a unit
    is_base = np.zeros(1 << 16, bool)  # bases are unique: no label aliasing between nodes
    used[0] = True  # the root
    queue = [(trie, 0)]
    free_from = 1
    while queue:
        node, pos = queue.pop()
        labels = sorted(k for k in node if k >= 0)
        slots = np.array(([0] if -1 in node else []) + labels, np.int64)  # the leaf takes label 0
        while True:  # vectorised first fit: candidate free positions for slot 0 in a window
            if free_from + 4096 + 512 > len(used):
                grow = len(used)
                units = np.concatenate([units, np.zeros(grow, np.uint32)])
                used = np.concatenate([used, np.zeros(grow, bool)])
                is_base = np.concatenate([is_base, np.zeros(grow, bool)])
            window = np.flatnonzero(~used[free_from : free_from + 4096]) + free_from
            if len(window) == 0:
                free_from += 4096
                continue
            free_from = int(window[0])
            bases = window ^ slots[0]
            ok = ~is_base[bases]
            for s in slots[1:]:
                ok &= ~used[bases ^ s]
            hit = np.flatnonzero(ok)
            if len(hit):
                base = int(bases[hit[0]])
                break
            free_from = int(window[-1]) + 1
        offset = pos ^ base
        if offset >= _MAX_OFFSET:
            raise ValueError(f"normalisation trie too large for the darts unit encoding ({len(rules)} rules)")
        is_base[base] = True
        units[pos] |= np.uint32((offset << _OFFSET_SHIFT) | (_HAS_LEAF if -1 in node else 0))
        if -1 in node:
            units[base] = np.uint32(_LEAF | node[-1])
            used[base] = True
        for lab in labels:
            units[base ^ lab] = lab  # the child's label; its offset / has_leaf bits are or-ed in when it is placed
            used[base ^ lab] = True
            queue.append((node[lab], base ^ lab))
    # readers probe base ^ byte for any byte: the array must cover every base's 256-block
    n = max(int(np.flatnonzero(used).max()), int(np.flatnonzero(is_base).max()) | 0xFF) + 1
    if n > len(units):
        units = np.concatenate([units, np.zeros(n - len(units), np.uint32)])
    trie_bytes = units[:n].astype("<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(values)
