"""The on-disk format of an encoded corpus, and the checks that keep shards of different encodes apart.

A folder holds ``index.json`` (what the whole index was encoded with: the :data:`SETTINGS` fields, the corpus
files, rows, shard size, number of shards) and, per shard ``s``:

* ``shard-{s:05d}.npy``: embeddings ``[rows x dim]`` (float16 by default; bfloat16 stored as its uint16 bits),
  a plain ``.npy`` that ``np.load(mmap_mode="r")`` memory-maps;
* ``shard-{s:05d}.docids.npy``: the docids as a fixed-width UTF-8 ``S`` array;
* ``shard-{s:05d}.json``: the manifest: the settings, the shard's first row and row count, its source lines
  (``segments``: file, first line, rows), ``dim``, timing, and ``finished``.

Write order (:func:`~sentence_transformers_hybrid._utils.atomic_writer`: temporary file, fsync, rename): the data,
then the docids, then the manifest. A crash or a full disk at any point leaves no manifest saying ``finished``
for data that is not all there; a shard whose files do not match its manifest (truncated, another model, prompt
or dtype) is named and re-encoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


__all__ = ["FORMAT", "SETTINGS", "differing_fields", "load_json", "read_index", "shard_paths", "shard_problem"]

FORMAT = 1
#: The fields that must agree between an index folder, its shards and a new encode.
SETTINGS = ("model_fingerprint", "prompt", "dtype", "max_length", "normalized", "shard_size", "source")
STORAGE_DTYPES = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}


def shard_paths(folder: Path, shard: int) -> tuple[Path, Path, Path]:
    """``(embeddings .npy, docids .npy, manifest .json)`` of shard ``shard`` in ``folder``."""
    stem = folder / f"shard-{shard:05d}"
    return stem.with_suffix(".npy"), Path(f"{stem}.docids.npy"), stem.with_suffix(".json")


def differing_fields(have: dict[str, Any], want: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{field: (have, want)}`` for the :data:`SETTINGS` fields that differ."""
    return {k: (have.get(k), want.get(k)) for k in SETTINGS if have.get(k) != want.get(k)}


def describe_fields(diff: dict[str, tuple[Any, Any]]) -> str:
    def short(v: Any) -> str:
        text = json.dumps(v, ensure_ascii=False, default=str)
        return text if len(text) <= 80 else text[:77] + "..."

    return "; ".join(f"{k}: {short(a)} (on disk) vs {short(b)} (now)" for k, (a, b) in diff.items())


def shard_problem(folder: Path, shard: int, settings: dict[str, Any], rows: int) -> str | None:
    """Why shard ``shard`` of ``folder`` cannot be used for an index of ``settings`` (``None``: it can): no
    manifest, unfinished, other settings (naming the fields), another row count, or files shorter or longer
    than the manifest says (a truncated write)."""
    emb_path, ids_path, man_path = shard_paths(folder, shard)
    manifest = load_json(man_path)
    if manifest is None:
        return "no manifest" if not emb_path.exists() else "no readable manifest"
    if not manifest.get("finished"):
        return "not finished"
    diff = differing_fields(manifest, settings)
    if diff:
        return "encoded with other settings: " + describe_fields(diff)
    if manifest.get("rows") != rows:
        return f"{manifest.get('rows')} rows, expected {rows}"
    try:
        emb = np.load(emb_path, mmap_mode="r", allow_pickle=False)
        ids = np.load(ids_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:  # a file cut short cannot be mapped with the shape its header says
        return f"truncated or unreadable data ({err})"
    dim = manifest.get("dim")
    if emb.shape != (rows, dim) or emb.dtype != np.dtype(STORAGE_DTYPES[manifest["dtype"]]) or ids.shape != (rows,):
        return f"data files do not match the manifest (embeddings {emb.shape} {emb.dtype}, docids {ids.shape})"
    return None


def read_index(folder: Path) -> tuple[list[tuple[np.ndarray, np.ndarray, dict[str, Any], Path]], dict[str, Any]]:
    """``(embeddings, docids, manifest, path)`` of every shard of ``folder`` (memory-mapped) and its ``index.json``;
    an error names the first shard that is missing or unusable."""
    info = load_json(folder / "index.json")
    if info is None:
        raise FileNotFoundError(f"{folder} holds no encoded corpus (no readable index.json)")
    shards = []
    for s in range(int(info["num_shards"])):
        rows = min(info["shard_size"], info["rows"] - s * info["shard_size"])
        problem = shard_problem(folder, s, info, rows)
        if problem:
            raise ValueError(f"{shard_paths(folder, s)[0]}: shard {s} of {info['num_shards']} is not usable "
                             f"({problem}); encode the corpus again into {folder} to finish it")
        emb_path, ids_path, man_path = shard_paths(folder, s)
        shards.append((np.load(emb_path, mmap_mode="r", allow_pickle=False),
                       np.load(ids_path, mmap_mode="r", allow_pickle=False), load_json(man_path) or {}, emb_path))
    return shards, info


def load_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` when the file is missing or not a readable object."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
