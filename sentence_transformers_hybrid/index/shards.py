"""Encoding a corpus to disk in shards, resumable and checked (the format: :mod:`.manifest`).

:func:`encode_corpus` streams a :class:`~sentence_transformers_hybrid.data.PassageSource`, encodes the shards
this process owns (all of them; under ``torchrun`` every ``world_size``-th from its rank; with ``shard_id`` /
``num_shards`` every ``num_shards``-th from ``shard_id``), and writes each as it completes. Run it again after a
kill and it resumes at the first unfinished shard; a shard left by another model, prompt or dtype, or truncated,
is named in a warning and encoded again. A folder whose ``index.json`` says another model, prompt, dtype, max
length or corpus is refused, naming the fields, unless ``overwrite=True``.

Example:
    >>> import tempfile
    >>> from sentence_transformers_hybrid.data import PassageSource
    >>> from sentence_transformers_hybrid.testing import tiny_static_model
    >>> source = PassageSource.from_dict({"d1": "Paris is in France.", "d2": "Lima is in Peru."})
    >>> model = tiny_static_model(["Paris is in France.", "Lima is in Peru."], dim=8)
    >>> index = encode_corpus(model, source, tempfile.mkdtemp(), shard_size=1, show_progress_bar=False)
    >>> len(index), len(index.shards), index.shards[0].embeddings.dtype
    (2, 2, dtype('float16'))
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._utils import atomic_write_json, atomic_writer, default_progress
from ..data.passages import PassageSource, encode_docids
from ..data.validation import DataValidationError
from .distributed import dist_context
from .manifest import (
    FORMAT,
    SETTINGS,
    STORAGE_DTYPES,
    describe_fields,
    differing_fields,
    load_json,
    shard_paths,
    shard_problem,
)
from .store import CorpusIndex, Shard

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

__all__ = ["CorpusIndex", "Shard", "encode_corpus", "model_fingerprint", "resolve_prompt"]

ENCODE_DTYPES = tuple(STORAGE_DTYPES)


def model_fingerprint(model: torch.nn.Module) -> str:
    """``sha256:`` of the model's modules (class names) and weights (names, dtypes, shapes, bytes): the same
    weights give the same fingerprint wherever the folder is, other weights another one.

    Example:
        >>> from sentence_transformers_hybrid.testing import tiny_static_model
        >>> a, b = tiny_static_model(["a b"], dim=4, seed=0), tiny_static_model(["a b"], dim=4, seed=1)
        >>> model_fingerprint(a) == model_fingerprint(tiny_static_model(["a b"], dim=4, seed=0)), \
model_fingerprint(a) == model_fingerprint(b)
        (True, False)
    """
    h = hashlib.sha256()
    for name, module in model.named_modules():
        h.update(f"{name}:{type(module).__name__};".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def resolve_prompt(model: Any, prompt: str | None, prompt_name: str | None, side: str) -> str:
    """The prompt text ``model.encode_query`` / ``encode_document`` will use (``side`` ``"query"`` / ``"document"``),
    recorded in manifests so that another prompt is never mixed in."""
    if prompt is not None:
        return prompt
    prompts = getattr(model, "prompts", {}) or {}
    if prompt_name is None:
        names = ["query"] if side == "query" else ["document", "passage", "corpus"]
        prompt_name = next((n for n in names if n in prompts), getattr(model, "default_prompt_name", None))
    if prompt_name is None:
        return ""
    if prompt_name not in prompts:
        raise ValueError(f"prompt_name {prompt_name!r} is not one of the model's prompts {sorted(prompts)}")
    return prompts[prompt_name]


def _max_length(model: Any) -> int | None:
    n = getattr(model, "max_seq_length", None)
    return int(n) if isinstance(n, (int, float)) and math.isfinite(n) else None


def _to_storage(emb: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)).to(torch.bfloat16).view(
            torch.int16).numpy().view(np.uint16)
    return emb.astype(STORAGE_DTYPES[dtype])


def encode_corpus(
    model: SentenceTransformer,
    source: PassageSource,
    output_dir: str | os.PathLike,
    *,
    prompt: str | None = None,
    prompt_name: str | None = None,
    batch_size: int = 32,
    shard_size: int = 100_000,
    dtype: str = "float16",
    shard_id: int | None = None,
    num_shards: int | None = None,
    overwrite: bool = False,
    show_progress_bar: bool | None = None,
    check_docids: bool = True,
    pack_tokens: bool = False,
) -> CorpusIndex:
    """Encode ``source`` with ``model.encode_document`` into ``output_dir``, shard by shard (see the module doc).

    Args:
        model: a ``SentenceTransformer``; with cosine similarity the embeddings are normalised (search is by
            inner product).
        source: the corpus, streamed.
        output_dir: the index folder (created).
        prompt, prompt_name: the document prompt (default: the model's ``document`` / ``passage`` prompt, as
            ``encode_document`` picks it); recorded in each manifest.
        batch_size: passages per ``encode`` call.
        shard_size: rows per shard.
        dtype: storage dtype, ``float16`` (default), ``float32`` or ``bfloat16``.
        shard_id, num_shards: encode only shards ``s`` with ``s % num_shards == shard_id`` (independent jobs);
            under ``torchrun`` the rank and world size play these roles.
        overwrite: replace an index of other settings instead of refusing.
        show_progress_bar: tqdm over passages (rate and time left); default on at INFO logging.
        check_docids: on completion, refuse a docid that occurs twice (naming both files and lines).
        pack_tokens: encode each batch as one packed sequence of its real tokens
            (:func:`~sentence_transformers_hybrid._packed.encode_packed`: no padding outside attention, the same
            vectors up to float rounding) instead of ``model.encode_document``; BERT / RoBERTa / XLM-R encoders
            only (another model is refused before any work, naming why). Larger ``batch_size`` costs no padding
            then.

    Returns:
        the whole :class:`CorpusIndex` when every shard is finished, else the shards finished so far
        (``index.info["complete"]`` is ``False``: another job or rank still has shards to encode).

    Raises:
        ValueError: the folder holds an index of other settings (the differing fields named), bad arguments.
        DataValidationError: a malformed or truncated corpus file (finished shards are kept), a docid twice.
    """
    if dtype not in ENCODE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(ENCODE_DTYPES)}, got {dtype!r}")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}")
    if (shard_id is None) != (num_shards is None):
        raise ValueError("give shard_id and num_shards together (or neither)")
    if pack_tokens:
        from .._packed import packing_problem

        problem = packing_problem(model)
        if problem:
            raise ValueError(f"pack_tokens=True: this model cannot be packed: {problem}")
    if num_shards is not None and not (num_shards >= 1 and 0 <= shard_id < num_shards):  # type: ignore[operator]
        raise ValueError(f"need 0 <= shard_id < num_shards, got shard_id={shard_id}, num_shards={num_shards}")
    rank, world = (shard_id, num_shards) if num_shards is not None else dist_context()
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)

    normalized = getattr(model, "similarity_fn_name", "cosine") in (None, "cosine")
    settings: dict[str, Any] = {
        "model_fingerprint": model_fingerprint(model),
        "prompt": resolve_prompt(model, prompt, prompt_name, "document"),
        "dtype": dtype,
        "max_length": _max_length(model),
        "normalized": normalized,
        "shard_size": shard_size,
        # the corpus by file names (sizes and times are in index.json's "files"): a file re-downloaded or cut
        # short under the same name resumes, and a changed row count is caught shard by shard
        "source": [d["file"] for d in source.describe()],
    }
    info = _index_info(folder, settings, source, overwrite, rank)
    total_shards = info["num_shards"]
    mine = [s for s in range(total_shards) if s % world == rank]
    todo = []
    for s in mine:
        problem = shard_problem(folder, s, settings, _rows_of(info, s))
        if problem is not None:
            if problem != "no manifest":
                logger.warning("%s: shard %d %s; encoding it again", folder, s, problem)
            todo.append(s)
    if todo:
        _encode_shards(model, source, folder, settings, info, todo, prompt, prompt_name, batch_size,
                       default_progress(show_progress_bar, logger), f"{rank}/{world}", pack_tokens=pack_tokens)
    done = [s for s in range(total_shards) if shard_problem(folder, s, settings, _rows_of(info, s)) is None]
    if len(done) == total_shards:
        index = CorpusIndex.open(folder)
        index.info["complete"] = True
        if check_docids:
            check_unique_docids(index)
        return index
    shards = []
    for s in done:
        emb_path, ids_path, man_path = shard_paths(folder, s)
        shards.append(Shard(np.load(emb_path, mmap_mode="r"), np.load(ids_path, mmap_mode="r"),
                            load_json(man_path) or {}, emb_path))
    return CorpusIndex(shards, path=folder, info={**info, "complete": False, "shards_done": done})


def _encode_packed(model: Any, texts: list[str], prompt: str, normalized: bool, batch_size: int) -> np.ndarray:
    """What ``model.encode_document(texts, prompt=prompt, normalize_embeddings=normalized)`` returns (the prompt
    prepended, ``truncate_dim`` applied before normalising, as sentence-transformers does), encoded packed."""
    from .._packed import encode_packed

    emb = encode_packed(model, [prompt + t for t in texts], batch_size=batch_size)
    dim = getattr(model, "truncate_dim", None)
    if dim:
        emb = emb[:, :dim]
    if normalized:
        emb = torch.nn.functional.normalize(emb, dim=-1)
    return emb.cpu().numpy()


def _rows_of(info: dict[str, Any], shard: int) -> int:
    return min(info["shard_size"], info["rows"] - shard * info["shard_size"])


def _index_info(folder: Path, settings: dict[str, Any], source: PassageSource, overwrite: bool,
                rank: int) -> dict[str, Any]:
    """The folder's ``index.json``: checked against ``settings`` (refused or cleared on a difference), or written."""
    path = folder / "index.json"
    info = load_json(path)
    if info is not None:
        diff = differing_fields(info, settings)
        if diff and not overwrite:
            raise ValueError(f"{folder} holds an index encoded with other settings ({describe_fields(diff)}); "
                             "use another output folder, or overwrite=True (--overwrite) to replace it")
        if diff:
            logger.warning("%s: replacing an index of other settings (%s)", folder, describe_fields(diff))
            for p in folder.glob("shard-*"):
                p.unlink()
            info = None
        elif info.get("rows") is not None:
            return info
    rows = source.count()
    info = {"format": FORMAT, **settings, "rows": rows, "num_shards": max(1, math.ceil(rows / settings["shard_size"])),
            "files": source.describe()}
    if rows == 0:
        raise DataValidationError(f"the corpus ({', '.join(source.names) or 'no files'}) holds no passage")
    atomic_write_json(path, info)  # every rank / job writes the same content, atomically
    return info


def _encode_shards(model: Any, source: PassageSource, folder: Path, settings: dict[str, Any], info: dict[str, Any],
                   todo: list[int], prompt: str | None, prompt_name: str | None, batch_size: int,
                   progress: bool, worker: str = "0/1", pack_tokens: bool = False) -> None:
    shard_size = settings["shard_size"]
    wanted = set(todo)
    for s in todo:  # a stale manifest must not outlive the data it described
        shard_paths(folder, s)[2].unlink(missing_ok=True)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(_rows_of(info, s) for s in todo), unit="passage", unit_scale=True,
                   desc=f"encode {folder.name} ({len(todo)} shards)")
    writer: _ShardWriter | None = None
    try:
        for batch in source.iter_batches(batch_size, keep=lambda r: r // shard_size in wanted, boundary=shard_size):
            s = batch.first_row // shard_size
            if writer is not None and writer.shard != s:
                writer.finish()
                writer = None
            if pack_tokens:
                emb = _encode_packed(model, batch.texts, settings["prompt"], settings["normalized"], batch_size)
            else:
                emb = model.encode_document(batch.texts, prompt=prompt, prompt_name=prompt_name,
                                            batch_size=batch_size, convert_to_numpy=True,
                                            normalize_embeddings=settings["normalized"], show_progress_bar=False)
            if writer is None:
                writer = _ShardWriter(folder, s, _rows_of(info, s), int(emb.shape[1]), settings, info)
                writer.worker = worker
            writer.add(batch, emb)
            if bar is not None:
                bar.update(len(batch.texts))
        if writer is not None:
            writer.finish()
            writer = None
    finally:
        if writer is not None:
            writer.abort()
        if bar is not None:
            bar.close()


class _ShardWriter:
    """One shard being written: the embeddings streamed into a temporary ``.npy`` (no memory map: a full disk is
    an ``OSError`` here, not a crash later), then docids, then the finished manifest."""

    def __init__(self, folder: Path, shard: int, rows: int, dim: int, settings: dict[str, Any], info: dict[str, Any]):
        self.folder, self.shard, self.rows, self.dim = folder, shard, rows, dim
        self.settings, self.info = settings, info
        self.emb_path, self.ids_path, self.man_path = shard_paths(folder, shard)
        self._ctx = atomic_writer(self.emb_path)
        self._file = self._ctx.__enter__()
        np.lib.format.write_array_header_1_0(self._file, {
            "descr": STORAGE_DTYPES[settings["dtype"]], "fortran_order": False, "shape": (rows, dim)})
        self.written = 0
        self.docids: list[np.ndarray] = []
        self.segments: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.worker = "0/1"

    def add(self, batch: Any, emb: np.ndarray) -> None:
        if emb.shape[1] != self.dim:
            raise ValueError(f"the model returned {emb.shape[1]}-dim embeddings after {self.dim}-dim ones")
        self._file.write(_to_storage(emb, self.settings["dtype"]).tobytes())
        self.written += len(batch.docids)
        self.docids.append(encode_docids(batch.docids))
        last = self.segments[-1] if self.segments else None
        if last and last["file"] == Path(batch.file).name and last["first_line"] + last["rows"] == batch.first_line:
            last["rows"] += len(batch.docids)
        else:
            self.segments.append({"file": Path(batch.file).name, "first_line": batch.first_line,
                                  "rows": len(batch.docids)})

    def finish(self) -> None:
        if self.written != self.rows:
            self.abort()
            raise DataValidationError(
                f"shard {self.shard} of {self.folder}: the corpus gave {self.written} passages for rows "
                f"{self.shard * self.settings['shard_size']}.., expected {self.rows}; did a corpus file change "
                "since index.json was written? Encode into a fresh folder")
        self._ctx.__exit__(None, None, None)  # flush, fsync, rename
        width = max(p.dtype.itemsize for p in self.docids)
        with atomic_writer(self.ids_path) as f:
            np.save(f, np.concatenate([p.astype(f"S{width}") for p in self.docids]), allow_pickle=False)
        seconds = time.perf_counter() - self.started
        atomic_write_json(self.man_path, {
            "format": FORMAT, "shard": self.shard, "num_shards": self.info["num_shards"],
            **{k: self.settings[k] for k in SETTINGS},
            "first_row": self.shard * self.settings["shard_size"], "rows": self.rows, "dim": self.dim,
            "segments": self.segments, "encoded_by": self.worker, "seconds": round(seconds, 3),
            "passages_per_second": round(self.rows / seconds, 1) if seconds > 0 else None,
            "finished": True,
        })

    def abort(self) -> None:
        try:
            raise RuntimeError("shard aborted")
        except RuntimeError as err:
            try:
                self._ctx.__exit__(RuntimeError, err, err.__traceback__)
            except RuntimeError:
                pass


def locate_row(index: CorpusIndex, row: int) -> str:
    """``"file, line N"`` of corpus row ``row``, from its shard's manifest."""
    s = int(np.searchsorted(index.offsets, row, side="right") - 1)
    local = row - int(index.offsets[s])
    for seg in index.shards[s].manifest.get("segments", []):
        if local < seg["rows"]:
            return f"{seg['file']}, line {seg['first_line'] + local}"
        local -= seg["rows"]
    return f"row {row}"


def check_unique_docids(index: CorpusIndex) -> None:
    """Raise :class:`DataValidationError` naming both places (file and line) of a docid that occurs twice."""
    from ..data.passages import duplicate_rows

    ids = index.docid_bytes()
    dup = duplicate_rows(ids)
    if dup is not None:
        raise DataValidationError(f"{index.path}: docid {ids[dup[0]].decode('utf-8')!r} occurs twice: "
                                  f"{locate_row(index, dup[0])} and {locate_row(index, dup[1])}")


