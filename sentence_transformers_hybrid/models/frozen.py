"""Frozen-encoder training: encode texts once (cached on disk, resumable), then train a small head on the vectors.

With a frozen encoder, training ``encoder -> head`` is the same computation as training ``lookup(text) -> head``
where ``lookup`` returns the encoder's cached vector. :class:`EmbeddingLookup` is that first module: it lets the
**stock** ``SentenceTransformerTrainer``, data collator, ``HybridBatchSampler`` and MNRL train a head in seconds on
2 CPU cores. :func:`compose_with_encoder` then writes the real model (encoder modules + trained head), which
``SentenceTransformer(path)`` loads and uses on any text. :func:`freeze_word_embeddings` freezes part of a model
that is trained (the word-embedding matrix of a fine-tuned encoder).

Example::

    >>> import tempfile
    >>> from sentence_transformers_hybrid.testing import tiny_static_model
    >>> texts = ["query: Who wrote Faust?", "passage: Goethe wrote Faust."]
    >>> encoder = tiny_static_model(texts, dim=8)          # the frozen encoder (the experiment: e5-small)
    >>> cache = EmbeddingCache(tempfile.mkdtemp(), model_id="tiny-static")
    >>> vectors = cache.encode(encoder, texts)
    >>> model = lookup_head_model(texts, vectors)          # EmbeddingLookup -> Dense (identity init) -> Normalize
    >>> model.encode(texts).shape
    (2, 8)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.input_module import InputModule
from tqdm.auto import tqdm

from .._utils import atomic_write_bytes, atomic_write_json

__all__ = [
    "CACHE_FORMAT",
    "ENCODE_DTYPES",
    "EmbeddingCache",
    "EmbeddingCacheError",
    "EmbeddingLookup",
    "KEYED_ENCODE_OPTIONS",
    "PASSED_ENCODE_OPTIONS",
    "compose_with_encoder",
    "embedding_cache_settings",
    "freeze_word_embeddings",
    "identity_dense",
    "lookup_head_model",
    "model_fingerprint",
    "open_embedding_cache",
    "text_key",
    "transformer_module",
    "word_embeddings",
]

_INDEX = "index.json"
_LOCK = ".lock"
#: Version of the cache folder layout (``index.json`` + ``.npy`` shards); part of every cache key.
CACHE_FORMAT = 2
#: The encode dtypes a cache can be keyed by: float32 (no autocast) or an autocast dtype.
ENCODE_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Files of a model folder that do not change its embeddings (the model card is rewritten after training).
_NOT_FINGERPRINTED = {"README.md"}
_digest_memo: dict[tuple, str] = {}


def text_key(text: str) -> str:
    """Stable key of a text (SHA-1 of its UTF-8 bytes)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


#: ``model.encode`` options that change the vectors: :meth:`EmbeddingCache.encode` keys every vector by their
#: resolved values (``prompt_name`` by the prompt text it names).
KEYED_ENCODE_OPTIONS = ("prompt", "prompt_name", "truncate_dim", "normalize_embeddings", "task")
#: ``model.encode`` options that only say where or how fast to encode: passed on, not keyed.
PASSED_ENCODE_OPTIONS = ("device", "pool", "chunk_size")
#: ``model.encode`` options the cache sets itself, with the one value a caller may also pass.
_FIXED_ENCODE_OPTIONS = {"precision": "float32", "output_value": "sentence_embedding"}


# ---------------------------------------------------------------------------------------------- cache keys
def _folder_digest(path: Path) -> str:
    """SHA-256 of every file of a model folder (relative path + bytes), except the model card and hidden files
    (``tokenizer.json`` without the runtime ``truncation`` / ``padding`` state its library saves)."""
    files = sorted(
        f for f in path.rglob("*")
        if f.is_file() and f.name not in _NOT_FINGERPRINTED
        and not any(part.startswith(".") for part in f.relative_to(path).parts)
    )
    stats = tuple((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    memo_key = (str(path.resolve()), stats)
    if memo_key in _digest_memo:
        return _digest_memo[memo_key]
    h = hashlib.sha256()
    for f, (rel, _, _) in zip(files, stats):
        h.update(f"{rel}\0".encode())
        if f.name == "tokenizer.json":
            # the tokenizers library saves its runtime truncation / padding state; max_seq_length is keyed apart
            spec = json.loads(f.read_text(encoding="utf-8"))
            if isinstance(spec, dict):
                spec.pop("truncation", None)
                spec.pop("padding", None)
            h.update(json.dumps(spec, sort_keys=True).encode())
            continue
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    _digest_memo[memo_key] = digest = h.hexdigest()
    return digest


def _instance_digest(model: SentenceTransformer) -> str:
    """SHA-256 of a loaded model: module classes and configs, tokenizers, and every tensor of the state dict."""
    h = hashlib.sha256()
    for module in model:
        h.update(f"{type(module).__module__}.{type(module).__qualname__}\0".encode())
        config = getattr(module, "get_config_dict", None)
        if callable(config):
            h.update(json.dumps(config(), sort_keys=True, default=str).encode())
        tok = getattr(module, "tokenizer", None)
        backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None) or tok
        if hasattr(backend, "to_str"):
            h.update(backend.to_str().encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_fingerprint(model: str | os.PathLike | SentenceTransformer) -> str:
    """What makes a model's embeddings, as a SHA-256 hex digest (content, not name).

    A model folder is fingerprinted by its files (weights, configs, tokenizer; not ``README.md``): two different
    models in folders of the same name get different fingerprints, a copy of a model the same one. A loaded model
    (e.g. from the Hub) by its module classes and configs, tokenizers and state dict. A 100 MB model takes well
    under a second; repeated calls on an unchanged folder are memoised.

    Example::

        >>> from sentence_transformers_hybrid.testing import tiny_static_model
        >>> a, b = tiny_static_model(["a b c"], dim=4, seed=0), tiny_static_model(["a b c"], dim=4, seed=1)
        >>> model_fingerprint(a) == model_fingerprint(a), model_fingerprint(a) == model_fingerprint(b)
        (True, False)
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_dir():
            raise ValueError(f"{path}: not a model folder; pass the loaded SentenceTransformer to fingerprint it")
        return _folder_digest(path)
    return _instance_digest(model)


def embedding_cache_settings(
    model: SentenceTransformer,
    *,
    model_path: str | os.PathLike | None = None,
    prompts: Mapping[str, str] | None = None,
    normalize_embeddings: bool = False,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Everything a cached vector depends on besides its text: the key inputs of :func:`open_embedding_cache`.

    ``model`` (fingerprinted from ``model_path`` when that is its folder, else from the loaded weights), its
    ``max_seq_length``, its own prompts and default prompt, the ``prompts`` the caller prepends, truncation,
    ``normalize_embeddings`` and the encode ``dtype`` (``"float32"``, or ``"bfloat16"`` / ``"float16"`` for
    ``torch.autocast``).
    """
    if dtype not in ENCODE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(ENCODE_DTYPES)}, got {dtype!r}")
    fingerprint = model_fingerprint(model_path if model_path is not None and Path(model_path).is_dir() else model)
    return {
        "format": CACHE_FORMAT,
        "model": fingerprint,
        "max_seq_length": getattr(model, "max_seq_length", None),
        "model_prompts": dict(getattr(model, "prompts", None) or {}),
        "default_prompt_name": getattr(model, "default_prompt_name", None),
        "truncate_dim": getattr(model, "truncate_dim", None),
        "prompts": dict(prompts or {}),
        "normalize_embeddings": bool(normalize_embeddings),
        "dtype": dtype,
    }


def _settings_key(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_embedding_cache(
    root: str | os.PathLike,
    model: SentenceTransformer,
    *,
    model_path: str | os.PathLike | None = None,
    name: str | None = None,
    prompts: Mapping[str, str] | None = None,
    normalize_embeddings: bool = False,
    dtype: str = "float32",
    shard_size: int = 512,
) -> EmbeddingCache:
    """The :class:`EmbeddingCache` of ``model`` with these encode settings, in ``root/<name>-<key>``.

    The key is a digest of :func:`embedding_cache_settings` (model content + every encode setting), stored in the
    folder's ``index.json`` (``settings``, plus ``model_path`` for the reader): another model, another
    ``max_seq_length``, other prompts, normalisation or dtype get their own folder, the same model and settings
    (from any path) share one. ``name`` (default: the folder name of ``model_path``) only makes the folder readable.

    Example::

        >>> import tempfile
        >>> from sentence_transformers_hybrid.testing import tiny_static_model
        >>> encoder = tiny_static_model(["the cat sat", "a dog ran"], dim=8)
        >>> cache = open_embedding_cache(tempfile.mkdtemp(), encoder)
        >>> cache.encode(encoder, ["the cat sat", "a dog ran"]).shape
        (2, 8)
    """
    settings = embedding_cache_settings(model, model_path=model_path, prompts=prompts,
                                        normalize_embeddings=normalize_embeddings, dtype=dtype)
    key = _settings_key(settings)
    label = name or (Path(model_path).resolve().name if model_path is not None else "model")
    info = {"model_path": str(Path(model_path).resolve()) if model_path is not None else None}
    return EmbeddingCache(Path(root) / f"{label}-{key}", model_id=key, shard_size=shard_size, settings=settings,
                          info=info)


# ---------------------------------------------------------------------------------------------- the cache
class EmbeddingCacheError(ValueError):
    """An embedding cache folder that cannot be used as it is (corrupt index or shard, other settings)."""


class EmbeddingCache:
    """On-disk cache of a model's embeddings, keyed by model id (and settings) and exact text; resumable.

    Vectors are written in ``.npy`` shards (``allow_pickle=False``) plus an ``index.json``; every finished shard is
    committed atomically, so an interrupted encoding resumes where it stopped. Shards have unique names and every
    commit merges into the index on disk under a lock, so two processes filling one cache never overwrite each
    other's vectors. A vector that is not finite is never cached: :meth:`encode` raises naming the text.

    :func:`open_embedding_cache` builds the cache of a model keyed by its content and encode settings; use this
    class directly for a cache you key yourself.

    Args:
        cache_dir: the folder for this model's cache.
        model_id: identifies the encoder (and its settings); stored and checked on reopen.
        shard_size: texts per shard (the most work an interruption can lose).
        settings: the key inputs (see :func:`embedding_cache_settings`); stored, checked on reopen (a difference
            raises naming the fields), and applied by :meth:`encode` (``normalize_embeddings``, ``dtype``,
            ``max_seq_length`` of the model passed).
        info: extra metadata written to ``index.json`` (not checked), e.g. the model path.
        rebuild: when the index is corrupt, move it aside (``index.json.corrupt``) and start an empty cache
            instead of raising.
    """

    def __init__(self, cache_dir: str | Path, model_id: str, shard_size: int = 512, *,
                 settings: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None,
                 rebuild: bool = False) -> None:
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.model_id = model_id
        self.shard_size = shard_size
        self.settings = dict(settings) if settings is not None else None
        self.info = dict(info or {})
        self._keys: dict[str, tuple[int, int]] = {}
        self._shard_names: list[str] = []
        self._shards: dict[int, np.ndarray] = {}
        self._index_stat: tuple[int, int, int] | None = None
        index = self.dir / _INDEX
        if not index.is_file():
            return
        try:
            meta = self._read_index()
        except EmbeddingCacheError:
            if not rebuild:
                raise
            os.replace(index, index.with_name(_INDEX + ".corrupt"))
            return
        if meta["model_id"] != model_id:
            raise EmbeddingCacheError(
                f"embedding cache {str(self.dir)!r} belongs to model {meta['model_id']!r}, not {model_id!r}; "
                "use another cache folder"
            )
        stored = meta.get("settings")
        if self.settings is not None and stored is not None and stored != self.settings:
            diff = sorted(k for k in set(stored) | set(self.settings) if stored.get(k) != self.settings.get(k))
            raise EmbeddingCacheError(
                f"embedding cache {str(self.dir)!r} was made with other settings: "
                + "; ".join(f"{k}: cached {stored.get(k)!r}, now {self.settings.get(k)!r}" for k in diff)
                + "; use another cache folder (open_embedding_cache() keys folders by these settings)"
            )
        self._load(meta)

    # -- the index
    def _read_index(self) -> dict[str, Any]:
        """``index.json`` checked and normalised (format 1: numbered shards; format 2: named shards)."""
        index = self.dir / _INDEX
        fix = (f"delete the folder {str(self.dir)!r} to encode again, or open it with "
               "EmbeddingCache(..., rebuild=True), which moves the bad index aside")
        try:
            meta = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise EmbeddingCacheError(f"embedding cache index {str(index)!r} is unreadable or corrupt ({err}); {fix}") from None
        try:
            if not isinstance(meta, dict) or not isinstance(meta.get("keys"), dict):
                raise TypeError("no 'keys' object")
            shards = meta["shards"]
            names = [f"shard-{i:05d}.npy" for i in range(int(shards))] if isinstance(shards, int) else list(shards)
            if not all(isinstance(n, str) for n in names):
                raise TypeError("'shards' must be a count or a list of file names")
            keys = {str(k): (int(s), int(r)) for k, (s, r) in meta["keys"].items()}
            bad = [k for k, (s, r) in keys.items() if not (0 <= s < len(names)) or r < 0]
            if bad:
                raise ValueError(f"{len(bad)} key(s) point to no shard")
        except (KeyError, TypeError, ValueError) as err:
            raise EmbeddingCacheError(f"embedding cache index {str(index)!r} is corrupt ({err}); {fix}") from None
        return {**meta, "model_id": meta.get("model_id"), "shards": names, "keys": keys}

    def _load(self, meta: Mapping[str, Any]) -> None:
        old = {name: self._shards[i] for i, name in enumerate(self._shard_names) if i in self._shards}
        self._shard_names = list(meta["shards"])
        self._keys = dict(meta["keys"])
        self._shards = {i: old[name] for i, name in enumerate(self._shard_names) if name in old}
        self._index_stat = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = (self.dir / _INDEX).stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the cache folder (POSIX ``flock``; no lock where that does not exist)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        with open(self.dir / _LOCK, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _commit_keys(self, shard: str, vectors: np.ndarray, keys: Sequence[str]) -> None:
        """Add one written shard to the index on disk (merged with what other processes committed meanwhile); row
        ``i`` of ``vectors`` under ``keys[i]`` (the vector keys of :meth:`_vector_key`, not texts)."""
        with self._locked():
            if (self.dir / _INDEX).is_file() and self._stat() != self._index_stat:  # another process committed
                disk = self._read_index()
                if disk["model_id"] != self.model_id:
                    raise EmbeddingCacheError(f"embedding cache {str(self.dir)!r} now belongs to model "
                                              f"{disk['model_id']!r}, not {self.model_id!r}")
                self._load(disk)
            s = len(self._shard_names)
            self._shard_names.append(shard)
            self._shards[s] = vectors
            for r, k in enumerate(keys):
                self._keys.setdefault(k, (s, r))
            meta: dict[str, Any] = {"format": CACHE_FORMAT, "model_id": self.model_id}
            if self.settings is not None:
                meta["settings"] = self.settings
            meta.update(self.info)
            meta["shards"] = self._shard_names
            meta["keys"] = self._keys
            atomic_write_json(self.dir / _INDEX, meta, indent=None)
            self._index_stat = self._stat()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._keys

    def _shard(self, i: int) -> np.ndarray:
        if i not in self._shards:
            path = self.dir / self._shard_names[i]
            try:
                self._shards[i] = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as err:
                raise EmbeddingCacheError(
                    f"embedding cache shard {str(path)!r} is missing or corrupt ({err}); delete the folder "
                    f"{str(self.dir)!r} to encode again"
                ) from None
        return self._shards[i]

    def encode(
        self,
        model: SentenceTransformer,
        texts: Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        **encode_kwargs: Any,
    ) -> np.ndarray:
        """Vectors of ``texts`` (float32 ``[n x d]``), encoding only those not cached yet.

        ``encode_kwargs`` go to ``model.encode``. Those that change the vectors (:data:`KEYED_ENCODE_OPTIONS`:
        ``prompt`` / ``prompt_name``, ``truncate_dim``, ``normalize_embeddings``, ``task``) are part of each vector's
        key, by the values they resolve to on ``model`` (``prompt_name`` by its prompt text, an unset option by the
        model's default): a vector cached with one prompt is never returned for another, and
        ``prompt_name="query"`` shares the vectors of ``prompt="query: "``. Vectors made with the model's defaults
        are keyed by their text alone (:meth:`lookup`, ``text in cache``), as caches of earlier versions were.
        :data:`PASSED_ENCODE_OPTIONS` (``device``, ``pool``, ``chunk_size``) are passed on unkeyed; any other option
        (``precision`` other than float32, ``output_value``, model-specific kwargs) raises ``ValueError`` naming it.

        With ``settings``, the model must have the cached ``max_seq_length``; ``normalize_embeddings`` and the
        ``dtype`` (autocast) come from the settings. A non-finite vector raises ``ValueError`` naming the index of
        its text in ``texts``; its shard is not committed.
        """
        autocast = None
        if self.settings is not None:
            want = self.settings.get("max_seq_length")
            have = getattr(model, "max_seq_length", want)
            if want is not None and have != want:
                raise ValueError(f"embedding cache {str(self.dir)!r} holds vectors at max_seq_length={want}; the "
                                 f"model passed has max_seq_length={have}")
            norm = bool(self.settings.get("normalize_embeddings", False))
            if encode_kwargs.setdefault("normalize_embeddings", norm) != norm:
                raise ValueError(f"embedding cache {str(self.dir)!r} holds vectors with normalize_embeddings={norm}; "
                                 f"got normalize_embeddings={encode_kwargs['normalize_embeddings']}")
            autocast = ENCODE_DTYPES[self.settings.get("dtype", "float32")]
        key, encode_kwargs = self._vector_key(model, encode_kwargs)
        position: dict[str, int] = {}
        keys: dict[str, str] = {}
        for i, t in enumerate(texts):
            if t not in position:
                position[t], keys[t] = i, key(t)
        missing = [t for t in position if keys[t] not in self._keys]
        if missing:
            # shards are committed one by one: an interruption loses at most one shard of work
            bar = tqdm(total=len(missing), desc="encoding (cached)", disable=show_progress_bar is False, unit="text")
            for start in range(0, len(missing), self.shard_size):
                chunk = missing[start : start + self.shard_size]
                vecs = self._encode_chunk(model, chunk, batch_size, autocast, encode_kwargs)
                bad = ~np.isfinite(vecs).all(axis=1) if vecs.ndim == 2 else np.ones(len(chunk), dtype=bool)
                if vecs.ndim != 2 or len(vecs) != len(chunk) or bad.any():
                    first = int(np.flatnonzero(bad)[0]) if bad.any() else 0
                    raise ValueError(
                        f"the model returned {'non-finite (NaN/inf) vectors' if bad.any() else f'shape {vecs.shape}'} "
                        f"for {int(bad.sum())} of {len(chunk)} texts, e.g. text {position[chunk[first]]} of the "
                        f"texts passed ({chunk[first][:80]!r}); nothing of this shard was cached in {str(self.dir)!r}"
                    )
                name = f"shard-{uuid.uuid4().hex[:16]}.npy"
                buf = io.BytesIO()
                np.save(buf, vecs, allow_pickle=False)
                atomic_write_bytes(self.dir / name, buf.getvalue())
                self._commit_keys(name, vecs, [keys[t] for t in chunk])
                bar.update(len(chunk))
            bar.close()
        return self._gather([keys[t] for t in texts], texts)

    def _vector_key(self, model: SentenceTransformer, options: Mapping[str, Any]
                    ) -> tuple[Callable[[str], str], dict[str, Any]]:
        """The key function of the vectors ``model.encode(..., **options)`` makes, and the options to pass on.

        The key of a text is :func:`text_key` when the options resolve to what a call without them gives (the
        model's default prompt and ``truncate_dim``, the cache's ``normalize_embeddings``), else a digest of the text
        and the resolved options.
        """
        options = dict(options)
        for name, only in _FIXED_ENCODE_OPTIONS.items():
            value = options.pop(name, only)
            if value != only:
                raise ValueError(f"EmbeddingCache.encode(): {name}={value!r} is not cached "
                                 f"(the cache holds float32 sentence embeddings); pass {name}={only!r} or leave it out")
        unknown = sorted(set(options) - set(KEYED_ENCODE_OPTIONS) - set(PASSED_ENCODE_OPTIONS))
        if unknown:
            raise ValueError(
                f"EmbeddingCache.encode() got {', '.join(unknown)}: the cache cannot tell whether "
                f"{'it changes' if len(unknown) == 1 else 'they change'} the vectors, so it refuses "
                f"{'it' if len(unknown) == 1 else 'them'}; it keys {', '.join(KEYED_ENCODE_OPTIONS)} and passes on "
                f"{', '.join(PASSED_ENCODE_OPTIONS)}"
            )
        prompts = dict(getattr(model, "prompts", None) or {})
        default_name = getattr(model, "default_prompt_name", None)
        prompt, prompt_name = options.pop("prompt", None), options.pop("prompt_name", None)
        if prompt is None and prompt_name is not None:
            if prompt_name not in prompts:
                raise ValueError(f"EmbeddingCache.encode(): prompt_name {prompt_name!r} is not one of the model's "
                                 f"prompts ({', '.join(map(repr, prompts)) or 'it has none'})")
            prompt = prompts[prompt_name]
        if prompt is not None:
            options["prompt"] = prompt  # the text the key names is the text encoded
        default_norm = bool((self.settings or {}).get("normalize_embeddings", False))
        model_dim = getattr(model, "truncate_dim", None)
        default = {"prompt": (prompts.get(default_name) if default_name else None) or "",
                   "truncate_dim": None if model_dim is None else int(model_dim),
                   "normalize_embeddings": default_norm, "task": None}
        dim = options.get("truncate_dim")
        variant = {
            "prompt": default["prompt"] if prompt is None else prompt,
            "truncate_dim": default["truncate_dim"] if dim is None else int(dim),
            "normalize_embeddings": bool(options.get("normalize_embeddings", default_norm)),
            "task": options.get("task"),
        }
        if variant == default:
            return text_key, options
        tag = json.dumps(variant, sort_keys=True)
        return (lambda text: hashlib.sha1(f"{tag}\0{text}".encode("utf-8")).hexdigest()), options

    def use_bucketed_encoding(self, model: SentenceTransformer, compile_encoder: bool = True) -> None:
        """Encode missing texts with :func:`~sentence_transformers_hybrid._compile.encode_bucketed` (length-sorted
        batches of fixed rows and bucketed widths, the encoder layers of ``model`` compiled where a compiler works)
        instead of ``model.encode``: the same vectors up to float rounding (the dtype of the settings still
        applies). Calls with encode arguments other than ``normalize_embeddings``, and models with a default prompt or
        a ``truncate_dim``, keep ``model.encode``."""
        from .._compile import CompiledLayers

        self._bucketed = CompiledLayers(model, enabled=compile_encoder, what="the embedding cache's encoding")
        self._packed_chunk = None

    def use_packed_encoding(self, model: SentenceTransformer, chunk_size: int = 16) -> None:
        """Encode missing texts with :func:`~sentence_transformers_hybrid._packed.encode_packed` (length-sorted
        batches, each one unpadded sequence of its real tokens, attention per chunk of ``chunk_size`` rows) instead of
        ``model.encode``: the same vectors up to float rounding, no padding outside attention. For the models
        :func:`~sentence_transformers_hybrid._packed.packing_problem` accepts (BERT, RoBERTa, XLM-R); another raises
        ``ValueError`` here, naming why. The same calls as :meth:`use_bucketed_encoding` keep ``model.encode``."""
        from .._packed import packing_problem

        problem = packing_problem(model)
        if problem:
            raise ValueError(f"EmbeddingCache.use_packed_encoding(): this model cannot be packed: {problem}")
        self._packed_chunk = int(chunk_size)
        self._bucketed = None

    def encoding_path(self) -> dict[str, Any]:
        """Which encoding ran: ``model.encode``, the packed path, or the bucketed path (compiled or not, graphs
        built)."""
        if getattr(self, "_packed_chunk", None):
            return {"encoding": "packed", "chunk_size": self._packed_chunk}
        bucketed = getattr(self, "_bucketed", None)
        return {"encoding": "model.encode"} if bucketed is None else {"encoding": "bucketed", **bucketed.describe()}

    def _encode_chunk(self, model: SentenceTransformer, chunk: list[str], batch_size: int,
                      autocast: torch.dtype | None, encode_kwargs: dict[str, Any]) -> np.ndarray:
        context: contextlib.AbstractContextManager = contextlib.nullcontext()
        if autocast is not None:
            device = getattr(model, "device", torch.device("cpu"))
            context = torch.autocast(device_type=torch.device(device).type, dtype=autocast)
        bucketed = getattr(self, "_bucketed", None)
        with context:
            # model.encode's own extras (a default prompt, truncation) stay with model.encode
            plain = getattr(model, "default_prompt_name", None) is None and getattr(model, "truncate_dim", None) is None
            packed = getattr(self, "_packed_chunk", None)
            if packed and plain and set(encode_kwargs) <= {"normalize_embeddings"}:
                from .._packed import encode_packed

                vecs = encode_packed(model, chunk, batch_size=batch_size, chunk_size=packed,
                                     normalize_embeddings=bool(encode_kwargs.get("normalize_embeddings")))
            elif bucketed is not None and plain and set(encode_kwargs) <= {"normalize_embeddings"}:
                from .._compile import encode_bucketed

                vecs = encode_bucketed(model, chunk, batch_size=batch_size, layers=bucketed,
                                       normalize_embeddings=bool(encode_kwargs.get("normalize_embeddings")))
            else:
                vecs = model.encode(chunk, batch_size=batch_size, convert_to_numpy=False, convert_to_tensor=True,
                                    show_progress_bar=False, **encode_kwargs)
        if isinstance(vecs, torch.Tensor):
            return vecs.detach().float().cpu().numpy()
        return np.asarray(vecs, dtype=np.float32)

    def lookup(self, texts: Sequence[str]) -> np.ndarray:
        """Cached vectors of ``texts`` made with the model's defaults (no keyed encode option); a text that was never
        encoded raises ``KeyError`` naming it."""
        return self._gather([text_key(t) for t in texts], texts)

    def _gather(self, keys: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """The cached vectors under ``keys`` (one per text of ``texts``, which name a missing one)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        try:
            where = np.array([self._keys[k] for k in keys], dtype=np.int64)
        except KeyError:
            t = next(t for t, k in zip(texts, keys) if k not in self._keys)
            raise KeyError(f"text not in the embedding cache {str(self.dir)!r}: {t[:80]!r}") from None
        shard_ids = np.unique(where[:, 0])
        first = self._shard(int(shard_ids[0]))
        out = np.empty((len(texts), first.shape[1]), dtype=np.float32)
        for s in shard_ids.tolist():  # one fancy-indexing gather per shard
            rows = where[:, 0] == s
            shard = self._shard(s)
            wanted = where[rows, 1]
            if shard.ndim != 2 or shard.shape[1] != out.shape[1] or wanted.max() >= len(shard):
                raise EmbeddingCacheError(
                    f"embedding cache {str(self.dir)!r}: shard {self._shard_names[s]!r} has shape {shard.shape}, the "
                    f"index needs row {int(wanted.max())} of dimension {out.shape[1]}; delete the folder to encode again"
                )
            out[rows] = shard[wanted]
        return out


class EmbeddingLookup(InputModule):
    """Input module that returns precomputed vectors for known texts (the frozen encoder's outputs).

    ``preprocess`` maps each text (with its prompt prepended, exactly as the collator or ``encode`` passes it) to a
    row of ``weights`` (as ``input_ids``); ``forward`` returns those rows as ``sentence_embedding``. Unknown texts raise ``KeyError``.
    It is a training device: save the real model with :func:`compose_with_encoder`.
    """

    def __init__(self, texts: Sequence[str], weights: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        weights = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if weights.ndim != 2 or weights.shape[0] != len(texts):
            raise ValueError(f"weights must be [len(texts) x dim], got {tuple(weights.shape)} for {len(texts)} texts")
        self.register_buffer("weights", weights, persistent=False)
        self._row = {t: i for i, t in enumerate(texts)}

    def get_embedding_dimension(self) -> int:
        return int(self.weights.shape[1])

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        # Unknown texts get id -1 and fail in forward(): preprocessing alone (e.g. the trainer's model-card
        # statistics, which tokenize rows without their prompts) must not fail.
        texts = [(prompt or "") + t for t in inputs]
        ids = [self._row.get(t, -1) for t in texts]
        # named input_ids so that the trainer's collect_features() recognises the column's features
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "lookup_texts": texts}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, torch.Tensor]:
        ids = features["input_ids"]
        if (ids < 0).any():
            missing = [t for t, i in zip(features.get("lookup_texts", []), ids.tolist()) if i < 0]
            raise KeyError(f"EmbeddingLookup: {int((ids < 0).sum())} text(s) not precomputed, e.g. {missing[:1]!r}")
        features["sentence_embedding"] = self.weights[ids.to(self.weights.device)]
        return features

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("EmbeddingLookup is a training device; save with compose_with_encoder()")


def identity_dense(dim: int, bias: bool = True):
    """A ``Dense`` layer ``dim -> dim`` initialised to the identity (training starts at the frozen encoder)."""
    from sentence_transformers.base.modules.dense import Dense

    dense = Dense(dim, dim, bias=bias, activation_function=torch.nn.Identity())
    with torch.no_grad():
        dense.linear.weight.copy_(torch.eye(dim))
        if bias:
            dense.linear.bias.zero_()
    return dense


def lookup_head_model(texts: Sequence[str], vectors: np.ndarray, prompts: dict[str, str] | None = None,
                      device: str | None = None) -> SentenceTransformer:
    """``EmbeddingLookup -> Dense (identity init) -> Normalize``: the trainable stand-in of ``encoder -> head``."""
    from sentence_transformers.base.modules.normalize import Normalize

    dim = int(vectors.shape[1])
    return SentenceTransformer(
        modules=[EmbeddingLookup(texts, vectors), identity_dense(dim), Normalize()],
        prompts=prompts,
        device=device or "cpu",
    )


def compose_with_encoder(encoder_path: str, head_model: SentenceTransformer, output_path: str | Path) -> str:
    """Write ``encoder modules + trained head`` as a regular SentenceTransformer directory and return its path."""
    encoder = SentenceTransformer(encoder_path, device="cpu")
    head = [m for m in head_model if not isinstance(m, EmbeddingLookup)]
    model = SentenceTransformer(modules=[*encoder, *head], prompts=dict(encoder.prompts), device="cpu")
    model.save(str(output_path))
    return str(output_path)


# ---------------------------------------------------------------------------------------------- frozen parameters
def freeze_word_embeddings(model: SentenceTransformer, frozen: bool = True) -> int:
    """Freeze (or unfreeze) the word-embedding matrix of a Transformer-based SentenceTransformer.

    For e5-small the matrix is 96M of the 118M parameters; freezing it makes CPU fine-tuning of the
    transformer layers cheaper (no gradient or optimizer state for it).

    Returns:
        The number of parameters whose ``requires_grad`` was set.

    Example:
        >>> from sentence_transformers_hybrid.models.e5 import convert_e5_small
        >>> model = SentenceTransformer(convert_e5_small())   # ~30 s conversion (tests/test_convert.py freezes it)  # doctest: +SKIP
        >>> freeze_word_embeddings(model)  # needs model above  # doctest: +SKIP
        96014208

    Any Transformer-based model, e.g. a tiny offline one::

        >>> import tempfile
        >>> from sentence_transformers_hybrid.testing import tiny_transformer_model
        >>> tiny = tiny_transformer_model(tempfile.mkdtemp(), ["hello world"])
        >>> freeze_word_embeddings(tiny) == tiny[0].auto_model.get_input_embeddings().weight.numel()
        True
        >>> tiny[0].auto_model.get_input_embeddings().weight.requires_grad
        False
    """
    emb = word_embeddings(model)
    emb.weight.requires_grad_(not frozen)
    return emb.weight.numel()


def transformer_module(model: SentenceTransformer) -> torch.nn.Module:
    """The model's Transformer module (the one with an ``auto_model`` and a ``tokenizer``); ``ValueError`` if none."""
    for module in model.modules():
        if hasattr(module, "auto_model") and hasattr(module, "tokenizer"):
            return module
    raise ValueError(f"{type(model).__name__}: no Transformer module (auto_model + tokenizer)")


def word_embeddings(model: SentenceTransformer) -> torch.nn.Module:
    """The input word-embedding layer of the model's Transformer (its ``weight`` is ``[vocabulary x hidden]``)."""
    emb = transformer_module(model).auto_model.get_input_embeddings()
    if emb is None or not hasattr(emb, "weight"):
        raise ValueError("the Transformer's model has no input word-embedding matrix")
    return emb
