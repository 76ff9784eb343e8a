"""Hybrid batches for the stock ``SentenceTransformerTrainer``: ``training_dataset`` and ``HybridBatchSampler``.

The stock collator tokenizes every column of a row, so the training dataset carries no metadata columns. Instead:

* :func:`training_dataset` (= ``ParallelCorpus.to_dataset()``) returns a ``datasets.Dataset`` with one row per
  *pair* ``(group, query language, passage language)`` that the corpus can form. A ``with_transform`` resolver turns
  a row into ``{"query": ..., "passage": ...}`` texts at load time, so the collator, the prompts
  (``{"query": "Query: ", "passage": "Passage: "}``) and the loss see ordinary text pairs.
* :class:`HybridBatchSampler` decides which pairs form a batch (mono, cross, mixed or hybrid), epoch by epoch, with
  numpy array operations over the corpus's ``[groups x languages]`` index.

See ``docs/sampling.md`` for the design, the determinism and DDP rules, and a runnable example.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import sys
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import pyarrow as pa
from sentence_transformers.base.sampler import DefaultBatchSampler
from transformers import TrainerCallback

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from datasets import Dataset

    from .data.corpus import ParallelCorpus

logger = logging.getLogger(__name__)

MODES = ("mono", "cross", "mixed", "hybrid")
CONFIG_FILE = "hybrid_sampler_config.json"
PAIR_COLUMNS = ("hybrid_pair_a", "hybrid_pair_b")
AlphaLike = Union[float, Callable[[float], float]]


# ---------------------------------------------------------------------------------------------------------- layout
class PairLayout:
    """The integer index shared by :func:`training_dataset` and :class:`HybridBatchSampler`.

    Pairs are numbered group by group: group ``g`` with ``n_g`` languages owns the ``n_g * n_g`` pair ids
    ``pair_offset[g] + x * n_g + y`` where ``x``/``y`` are ranks among the group's languages (query / passage).
    Every id in ``[0, num_pairs)`` is a valid pair, so every dataset row resolves. Memory: O(groups + rows).
    """

    def __init__(self, corpus: ParallelCorpus) -> None:
        row_index = np.asarray(corpus.row_index)
        if row_index.ndim != 2 or row_index.shape[0] == 0 or row_index.shape[1] == 0:
            raise ValueError(f"the corpus is empty: row_index has shape {row_index.shape}")
        mask = row_index >= 0
        self.num_groups, self.num_languages = mask.shape
        self.languages = list(corpus.languages)
        self.sources = list(corpus.sources)
        self.group_source = np.asarray(corpus.group_source, dtype=np.int64)
        self.mask = mask
        self.n_lang = mask.sum(axis=1).astype(np.int64)
        if (self.n_lang == 0).any():
            g = int(np.flatnonzero(self.n_lang == 0)[0])
            raise ValueError(f"group {corpus.groups[g]!r} has no language in row_index")
        li = np.flatnonzero(mask) % self.num_languages  # row-major: cells sorted by (group, language)
        self.cell_start = np.concatenate([[0], np.cumsum(self.n_lang)]).astype(np.int64)
        self.cell_lang = li.astype(np.int16 if self.num_languages < 2**15 else np.int64)
        self.row_index = row_index  # the corpus's own array, shared (not copied)
        self.pair_offset = np.concatenate([[0], np.cumsum(self.n_lang * self.n_lang)]).astype(np.int64)
        self.num_pairs = int(self.pair_offset[-1])
        # language set of each group (its row of the mask), as an id into set_masks
        if self.num_languages <= 62:
            keys = np.zeros(self.num_groups, dtype=np.int64)
            for lang in range(self.num_languages):  # a loop over languages, not rows
                keys |= mask[:, lang].astype(np.int64) << lang
            uniq, set_id = np.unique(keys, return_inverse=True)
            self.set_masks = ((uniq[:, None] >> np.arange(self.num_languages)) & 1).astype(bool)
        else:
            uniq, set_id = np.unique(np.packbits(mask, axis=1), axis=0, return_inverse=True)
            self.set_masks = np.unpackbits(uniq, axis=1, count=self.num_languages).astype(bool)
        self.set_id = set_id.reshape(-1).astype(np.int32)
        # rank of each present language among its group's languages (-1 where absent)
        rank_dtype = np.int8 if self.num_languages < 128 else np.int32
        self.lang_rank = np.where(mask, np.cumsum(mask, axis=1, dtype=rank_dtype) - 1, -1).astype(rank_dtype)
        # two coprime moduli whose product covers every pair id (see _pair_table)
        self.mod_a = max(2, math.isqrt(self.num_pairs - 1) + 1)
        self.mod_b = self.mod_a + 1
        digest = hashlib.blake2b(digest_size=8)
        for arr in (row_index, self.group_source):
            digest.update(np.ascontiguousarray(arr).tobytes())
        digest.update(json.dumps([self.languages, self.sources]).encode())
        self.signature = digest.hexdigest()

    # -- pair ids <-> (group, query language, passage language)
    def pair_ids(self, groups: np.ndarray, x_rank: np.ndarray, y_rank: np.ndarray) -> np.ndarray:
        """Pair ids of (group, query-language rank, passage-language rank) triples (ranks among the group's languages)."""
        n = self.n_lang[groups]
        return self.pair_offset[groups] + x_rank * n + y_rank

    def decode(self, pair_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(group, query language, passage language) of each pair id; languages index ``corpus.languages``."""
        p = np.asarray(pair_ids, dtype=np.int64)
        if p.size and (p.min() < 0 or p.max() >= self.num_pairs):
            bad = int(p[(p < 0) | (p >= self.num_pairs)][0])
            raise IndexError(f"pair id {bad} outside [0, {self.num_pairs})")
        g = np.searchsorted(self.pair_offset, p, side="right") - 1
        n = self.n_lang[g]
        q = p - self.pair_offset[g]
        start = self.cell_start[g]
        return g, self.cell_lang[start + q // n].astype(np.int64), self.cell_lang[start + q % n].astype(np.int64)

    def rows(self, pair_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query row id, passage row id) of each pair id."""
        p = np.asarray(pair_ids, dtype=np.int64)
        g = np.searchsorted(self.pair_offset, p, side="right") - 1
        n = self.n_lang[g]
        q = p - self.pair_offset[g]
        start = self.cell_start[g]
        qlang, plang = self.cell_lang[start + q // n], self.cell_lang[start + q % n]
        return self.row_index[g, qlang], self.row_index[g, plang]

    def nbytes(self) -> int:
        """Bytes held by the index arrays (the corpus's own ``row_index`` excluded)."""
        arrays = (self.mask, self.n_lang, self.cell_start, self.cell_lang, self.pair_offset,
                  self.set_id, self.set_masks, self.lang_rank)
        return int(sum(a.nbytes for a in arrays))


_LAYOUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pair_layout(corpus: ParallelCorpus) -> PairLayout:
    """The (cached) :class:`PairLayout` of ``corpus``."""
    layout = _LAYOUTS.get(corpus)
    if layout is None or layout.num_groups != len(corpus) or layout.num_languages != len(corpus.languages):
        layout = PairLayout(corpus)
        _LAYOUTS[corpus] = layout
    return layout


class PairResolver:
    """The ``with_transform`` of :func:`training_dataset`: pair-id columns -> ``{"query", "passage"}`` texts.

    Holds the layout and the corpus's two Arrow text arrays only (not the corpus object), so it pickles quickly
    for DataLoader workers.
    """

    def __init__(self, corpus: ParallelCorpus, layout: PairLayout) -> None:
        self.queries = corpus._queries
        self.passages = corpus._passages
        self.layout = layout

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        a = np.asarray(batch[PAIR_COLUMNS[0]], dtype=np.int64)
        b = np.asarray(batch[PAIR_COLUMNS[1]], dtype=np.int64)
        pair_ids = a + self.layout.mod_a * ((a - b) % self.layout.mod_b)
        q_rows, p_rows = self.layout.rows(pair_ids)
        return {
            "query": self.queries.take(pa.array(q_rows)).to_pylist(),
            "passage": self.passages.take(pa.array(p_rows)).to_pylist(),
        }

    def __repr__(self) -> str:  # used by datasets' fingerprinting and the model card: keep it short
        return f"PairResolver(pairs={self.layout.num_pairs}, signature={self.layout.signature})"


def _repeating(modulus: int, length: int) -> pa.ChunkedArray:
    """``i % modulus`` for ``i < length`` as chunks that all share one ``arange(modulus)`` buffer."""
    base = pa.array(np.arange(modulus, dtype=np.int32 if modulus < 2**31 else np.int64))
    full, rest = divmod(length, modulus)
    return pa.chunked_array([base] * full + ([base.slice(0, rest)] if rest else []), type=base.type)


def training_dataset(corpus: ParallelCorpus) -> Dataset:
    """The ``train_dataset`` to pair with :class:`HybridBatchSampler`: one row per (group, query lang, passage lang).

    Rows read as ``{"query": str, "passage": str}`` (a ``with_transform`` resolves them), so the stock collator,
    ``prompts={"query": ..., "passage": ...}`` and the stock losses work unchanged. Every row resolves to a valid pair
    (the model-card callback reads rows at start-up), but the sampler alone decides which rows a batch holds: with a
    stock sampler you would train on all n x n language pairs of every group, translations sharing batches.

    Storage: the pair id ``i`` is stored as ``(i mod a, i mod (a + 1))`` with ``a = ceil(sqrt(rows))`` in two columns
    whose chunks all share one ``arange`` buffer (Chinese remainder theorem), so 100M rows cost ~80 KB instead of
    400 MB.

    Example::

        >>> from sentence_transformers_hybrid import ParallelCorpus
        >>> corpus = ParallelCorpus.from_records([
        ...     {"group": "q1", "lang": "en", "query": "Who wrote Faust?", "passage": "Goethe wrote Faust."},
        ...     {"group": "q1", "lang": "de", "query": "Wer schrieb Faust?", "passage": "Goethe schrieb Faust."},
        ... ])
        >>> ds = corpus.to_dataset()
        >>> len(ds), ds[1]
        (4, {'query': 'Wer schrieb Faust?', 'passage': 'Goethe wrote Faust.'})
    """
    from datasets import Dataset
    from datasets.table import InMemoryTable

    layout = pair_layout(corpus)
    table = pa.table(
        {
            PAIR_COLUMNS[0]: _repeating(layout.mod_a, layout.num_pairs),
            PAIR_COLUMNS[1]: _repeating(layout.mod_b, layout.num_pairs),
        }
    )
    # explicit fingerprints: datasets would otherwise hash the table and the resolver's texts (seconds at 2M rows)
    dataset = Dataset(InMemoryTable(table), fingerprint=f"hybrid-pairs-{layout.signature}")
    resolver = PairResolver(corpus, layout)
    set_format = getattr(Dataset.set_format, "__wrapped__", None)
    if set_format is None:  # pragma: no cover - a datasets version without the fingerprint decorator
        return dataset.with_transform(resolver)
    set_format(dataset, "custom", columns=None, output_all_columns=False, transform=resolver)
    dataset._fingerprint = f"hybrid-pairs-{layout.signature}-resolved"
    return dataset


def _dataset_resolver(dataset: Any) -> PairResolver | None:
    """The PairResolver behind ``dataset``'s transform, also through the trainer's ``add_dataset_name_transform``."""
    fmt = getattr(dataset, "format", None)
    if not isinstance(fmt, dict) or fmt.get("type") != "custom":
        return None
    transform = fmt.get("format_kwargs", {}).get("transform")
    for _ in range(4):
        if isinstance(transform, PairResolver):
            return transform
        if isinstance(transform, functools.partial):
            transform = transform.keywords.get("transform")
        else:
            return None
    return None


# ---------------------------------------------------------------------------------------------------------- plan
@dataclass
class EpochPlan:
    """One epoch of batches, as the sampler yields them (one entry per *yielded* batch, i.e. per rank batch).

    Attributes:
        pairs: int64 pair ids of every example, batch after batch.
        bounds: int64 ``[num_batches + 1]``: batch ``i`` is ``pairs[bounds[i]:bounds[i + 1]]``.
        batch_mode: ``"mono"``, ``"cross"`` or ``"mixed"`` per batch.
        batch_language: mono batches' language index (into ``languages``), ``-1`` otherwise.
        batch_source: source index of each batch.
        step: the optimizer-step (global batch) index of each batch: ``batch // num_processes``.
        topped_up: number of examples re-drawn to fill a source's last global batch (several processes only).
    """

    pairs: np.ndarray
    bounds: np.ndarray
    batch_mode: np.ndarray
    batch_language: np.ndarray
    batch_source: np.ndarray
    step: np.ndarray
    topped_up: int = 0

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def batch(self, i: int) -> np.ndarray:
        return self.pairs[self.bounds[i] : self.bounds[i + 1]]


def _small(a: np.ndarray) -> np.ndarray:
    """``a`` as the smallest unsigned dtype that holds it (numpy radix-sorts 8/16-bit ints when kind="stable")."""
    top = int(a.max()) if a.size else 0
    return a.astype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int64, copy=False)


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([stream, int(seed) % (2**63), int(epoch) % (2**63)])


def _max_flow(supply: np.ndarray, compat: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """Integer transport plan ``f[t, c] <= supply[t]`` row sums, ``<= demand[c]`` column sums, maximal total."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    T, C = compat.shape
    src, sink = T + C, T + C + 1
    rows, cols, caps = [], [], []
    big = int(supply.sum()) + 1
    for t in range(T):
        rows.append(src), cols.append(t), caps.append(int(supply[t]))
    ts, cs = np.nonzero(compat)
    rows += ts.tolist()
    cols += (cs + T).tolist()
    caps += [big] * len(ts)
    for c in range(C):
        rows.append(T + c), cols.append(sink), caps.append(int(demand[c]))
    graph = csr_matrix((np.asarray(caps, np.int32), (rows, cols)), shape=(T + C + 2, T + C + 2))
    flow = maximum_flow(graph, src, sink).flow.toarray()
    return np.maximum(flow[:T, T : T + C], 0).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------- sampler
class HybridBatchSampler(DefaultBatchSampler):
    """Batches of (query, passage) pairs with the paper's language mixing, one group at most once per batch.

    Build it through :meth:`configure`, which returns the factory that ``SentenceTransformerTrainingArguments``
    takes as ``batch_sampler``; the trainer then calls it with the dataset of ``corpus.to_dataset()``.

    What a batch looks like (``B`` = ``per_device_train_batch_size``, ``W`` = number of processes):

    * ``mode="mono"`` (X-X-mono): one language for the whole batch, every query and passage in it. The batch
      languages are stratified over the source's languages (equal shares, also when groups lack languages).
    * ``mode="cross"`` (X-Y): per example a query language X and a different passage language Y, drawn uniformly
      among the ordered pairs of the group's languages. Groups with one language are left out (see below).
    * ``mode="mixed"`` (X-X): per example one language X (uniform among the group's), languages mixed in a batch.
    * ``mode="hybrid"``: each batch is mono with probability ``alpha`` (a float or a schedule ``alpha(progress)``
      with training progress in [0, 1]), otherwise cross.

    Guarantees: no group twice in a batch, nor in the ``W`` batches of one step (the W ranks' batches of a step
    share one batch type/language and one source: together they form one "global batch" of ``W * B`` groups, which
    makes ``MultipleNegativesRankingLoss(gather_across_devices=True)`` correct); each batch from one source, sources
    interleaved in proportion to their remaining batches; each usable group used once per epoch; the same batches
    for the same ``seed`` and epoch (``set_epoch`` changes them; resuming from a checkpoint replays them).

    Groups with a single language can only form X-X pairs: ``mono`` and ``mixed`` use them, ``cross`` and
    ``hybrid`` leave them out of every epoch (reserving them for hybrid's mono batches would make the epoch length
    depend on the random batch types, or bias ``alpha``); a warning gives their number.

    Last batches: with ``drop_last=False`` a source's last batch is smaller on one process, and topped up with other
    groups of the same source drawn again on several processes (accelerate silently skips uneven steps in the middle
    of an epoch); with ``drop_last=True`` the remainder of each source (< ``W * B`` groups) sits out that epoch.
    A source with fewer usable groups than ``W * B`` raises ``ValueError`` naming it, unless a single process
    with ``drop_last=False`` can give it one smaller batch.

    Recommended for :class:`~sentence_transformers.losses.MultipleNegativesRankingLoss` and its cached and
    symmetric variants (see :func:`sentence_transformers_hybrid.losses.hybrid_loss`).

    Args:
        dataset: the ``Dataset`` made by ``corpus.to_dataset()`` (checked).
        batch_size: examples per batch on each process.
        drop_last: see "Last batches" above.
        valid_label_columns: unused (the dataset has no label column); kept for the signature.
        generator: unused: batches come from numpy generators seeded with ``(seed, epoch)``, so they do not depend
            on the global torch RNG state (which is what makes resuming exact).
        seed: base seed; the trainer passes ``args.seed`` unless :meth:`configure` fixed one.
        mode: ``"hybrid"``, ``"mono"``, ``"cross"`` or ``"mixed"``.
        alpha: probability of a mono batch in ``hybrid`` mode, or a callable of progress in [0, 1].
        num_processes: ``W``; default: ``accelerate.PartialState().num_processes``.
        num_epochs: training length used for ``alpha(progress)`` until a trainer reports its own (the
            :class:`SamplerConfigCallback` sets :attr:`total_batches` from ``state.max_steps``).
        corpus: the corpus the factory was configured with, to check the dataset against.

    Example::

        >>> from sentence_transformers_hybrid import ParallelCorpus, HybridBatchSampler
        >>> records = [{"group": f"g{i}", "lang": lang, "query": f"q{i} {lang}", "passage": f"p{i} {lang}"}
        ...            for i in range(8) for lang in ("de", "en", "fr")]
        >>> corpus = ParallelCorpus.from_records(records)
        >>> factory = HybridBatchSampler.configure(corpus, alpha=0.5, mode="hybrid")
        >>> sampler = factory(corpus.to_dataset(), batch_size=4, drop_last=False, seed=0)
        >>> [len(batch) for batch in sampler]
        [4, 4]
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        *,
        mode: str = "hybrid",
        alpha: AlphaLike = 0.5,
        num_processes: int | None = None,
        num_epochs: float = 1.0,
        corpus: ParallelCorpus | None = None,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        _check_mode_alpha(mode, alpha)
        if corpus is None and _calling_trainer() is not None:
            raise ValueError(
                "batch_sampler=HybridBatchSampler (the class) gives the sampler neither its options nor a place to "
                "record them; pass batch_sampler=HybridBatchSampler.configure(corpus, alpha=..., mode=...)"
            )
        resolver = _dataset_resolver(dataset)
        if resolver is None:
            cols = getattr(dataset, "column_names", None)
            raise ValueError(
                "HybridBatchSampler needs the train_dataset made by corpus.to_dataset() (a pair index resolved by a "
                f"with_transform); got {type(dataset).__name__} with columns {cols}. Pass "
                "train_dataset=corpus.to_dataset() for the same corpus given to HybridBatchSampler.configure()."
            )
        layout = resolver.layout
        if corpus is not None:
            mine = pair_layout(corpus)
            if mine.signature != layout.signature:
                raise ValueError(
                    "train_dataset was made by to_dataset() of another corpus than the one given to "
                    f"HybridBatchSampler.configure(): {layout.num_groups} groups x {layout.languages} "
                    f"(sources {layout.sources}) vs {mine.num_groups} groups x {mine.languages} (sources {mine.sources})"
                )
        if len(dataset) != layout.num_pairs or getattr(dataset, "_indices", None) is not None:
            raise ValueError(
                f"train_dataset ({len(dataset)} rows) is not corpus.to_dataset() as made ({layout.num_pairs} rows, no "
                "indices mapping): it was filtered, selected or shuffled; pass corpus.to_dataset() unchanged (the "
                "sampler does the selection and the shuffling)"
            )
        if num_processes is None:
            num_processes = _world_size()
        if int(num_processes) < 1:
            raise ValueError(f"num_processes must be >= 1, got {num_processes}")
        if not num_epochs or num_epochs <= 0:
            raise ValueError(f"num_epochs must be > 0, got {num_epochs}")
        self.dataset = dataset
        self.layout = layout
        self.mode = mode
        self.alpha = alpha
        self.num_processes = int(num_processes)
        self.num_epochs = float(num_epochs)
        self.total_batches: int | None = None
        self.global_batch_size = self.batch_size * self.num_processes
        self._plan_cache: tuple[tuple, EpochPlan] | None = None
        self._setup()

    # -- validation and static counts (independent of the epoch, so __len__ is exact without building a plan)
    def _setup(self) -> None:
        lay, K, W = self.layout, self.global_batch_size, self.num_processes
        multi = lay.n_lang >= 2
        if self.mode in ("cross", "hybrid"):
            if not multi.any():
                raise ValueError(
                    f"mode={self.mode!r} needs groups in at least two languages, but every group of the corpus has "
                    f"one language ({lay.languages}); use mode='mono' or 'mixed', or add translations"
                )
            usable = multi
        else:
            usable = np.ones(lay.num_groups, dtype=bool)
        self.usable = usable
        n_src = np.bincount(lay.group_source[usable], minlength=len(lay.sources))
        self.source_groups = n_src
        full, rest = np.divmod(n_src, K)
        for s, name in enumerate(lay.sources):
            if n_src[s] == 0:
                if (lay.group_source == s).any():
                    logger.warning(f"source {name!r} has no group usable in mode={self.mode!r}; it is left out")
                continue
            if n_src[s] < K and (self.drop_last or W > 1):
                why = "drop_last=True would never use it" if self.drop_last else (
                    f"with {W} processes its only batch cannot be filled without repeating a group"
                )
                raise ValueError(
                    f"source {name!r} has {n_src[s]} usable group(s), fewer than the global batch of {K} "
                    f"(batch_size {self.batch_size} x {W} process(es)): {why}. Lower the batch size, merge the "
                    "source with another, or use drop_last=False on one process (one smaller batch)"
                )
        self.global_batches = full + ((rest > 0) & (not self.drop_last))
        self.source_rest = np.where(self.drop_last, 0, rest)
        if self.global_batches.sum() == 0:
            raise ValueError(f"no batch can be formed: {int(usable.sum())} usable groups, global batch {K}")

    def __len__(self) -> int:
        """Number of batches per epoch (all processes together; accelerate gives each rank 1/W of them)."""
        G = int(self.global_batches.sum())
        if self.num_processes == 1:
            return G
        return G * self.num_processes

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "batch_sampler= got a HybridBatchSampler *instance*; sentence-transformers would call it like a factory "
            "(and silently train with batch size 1 if it were not callable). Pass the factory instead: "
            "batch_sampler=HybridBatchSampler.configure(corpus, alpha=..., mode=...)"
        )

    def __iter__(self) -> Iterator[list[int]]:
        plan = self.epoch_plan(self.epoch)
        pairs = plan.pairs.tolist()
        bounds = plan.bounds.tolist()
        for i in range(len(bounds) - 1):
            yield pairs[bounds[i] : bounds[i + 1]]

    # -- the epoch plan
    def alpha_at(self, progress: np.ndarray) -> np.ndarray:
        """``alpha`` at each progress value (schedules are called once per global batch)."""
        progress = np.clip(np.asarray(progress, dtype=np.float64), 0.0, 1.0)
        if not callable(self.alpha):
            return np.full(progress.shape, float(self.alpha))
        values = np.array([float(self.alpha(float(p))) for p in progress.ravel()]).reshape(progress.shape)
        bad = ~((values >= 0) & (values <= 1))
        if bad.any():
            i = int(np.flatnonzero(bad.ravel())[0])
            raise ValueError(f"alpha schedule returned {values.ravel()[i]} at progress {progress.ravel()[i]:.4f}; expected [0, 1]")
        return values

    def epoch_plan(self, epoch: int | None = None) -> EpochPlan:
        """The batches of ``epoch`` (default: the current one), built with array operations and cached."""
        epoch = self.epoch if epoch is None else int(epoch)
        key = (epoch, self.seed, self.total_batches)
        if self._plan_cache is not None and self._plan_cache[0] == key:
            return self._plan_cache[1]
        plan = self._build_plan(epoch)
        self._plan_cache = (key, plan)
        return plan

    def _build_plan(self, epoch: int) -> EpochPlan:
        lay, K, W, B = self.layout, self.global_batch_size, self.num_processes, self.batch_size
        L = lay.num_languages
        seed = 0 if self.seed is None else self.seed
        rng = _rng(seed, epoch, 1)
        S = len(lay.sources)
        nb = self.global_batches
        # 1. interleave sources: a uniform permutation of the multiset = drawing a source with probability
        #    proportional to its remaining batches, batch after batch
        src_seq = rng.permutation(np.repeat(np.arange(S), nb))
        T = len(src_seq)
        # position of each global batch inside its source; the source's last one may be short
        order = np.argsort(src_seq, kind="stable")
        pos_in_src = np.empty(T, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(nb)])
        pos_in_src[order] = np.arange(T) - np.repeat(starts[:-1], nb)
        cap = np.full(T, K, dtype=np.int64)
        is_last = pos_in_src == nb[src_seq] - 1
        short = is_last & (self.source_rest[src_seq] > 0)
        cap[short] = self.source_rest[src_seq[short]]
        # 2. batch types: 0..L-1 mono language, L cross, L + 1 mixed
        CROSS, MIXED = L, L + 1
        horizon = self.total_batches if self.total_batches else self.num_epochs * T * W
        progress = (epoch * T + np.arange(T)) * W / max(horizon, 1)
        if self.mode == "mono":
            is_mono = np.ones(T, dtype=bool)
        elif self.mode == "hybrid":
            is_mono = rng.random(T) < self.alpha_at(progress)
        else:
            is_mono = np.zeros(T, dtype=bool)
        btype = np.where(is_mono, -1, CROSS if self.mode in ("cross", "hybrid") else MIXED).astype(np.int64)
        # 3. per source: mono languages (stratified), then groups to batches by a max-flow over language sets
        group_of_slot = np.empty(int(cap.sum()), dtype=np.int64)
        slot_start = np.concatenate([[0], np.cumsum(cap)])
        topups: list[tuple[int, np.ndarray]] = []
        for s in range(S):
            sel = np.flatnonzero(src_seq == s)
            if len(sel) == 0:
                continue
            groups = np.flatnonzero(self.usable & (lay.group_source == s))
            groups = groups[rng.permutation(len(groups))]
            sid = lay.set_id[groups]
            set_present = np.flatnonzero(np.bincount(sid, minlength=len(lay.set_masks)))
            remap = np.zeros(len(lay.set_masks), dtype=np.int64)
            remap[set_present] = np.arange(len(set_present))
            tid = remap[sid]
            tmask = lay.set_masks[set_present]
            supply = np.bincount(tid, minlength=len(set_present))
            lang_counts = tmask.T.astype(np.int64) @ supply
            mono_b = sel[btype[sel] < 0]
            if len(mono_b):
                btype[mono_b] = self._mono_languages(lang_counts, cap[mono_b], rng)
            # categories: mono language l (0..L-1), cross, mixed, unused (drop_last remainder)
            C = L + 3
            demand = np.bincount(btype[sel], weights=cap[sel], minlength=C).astype(np.int64)
            demand[L + 2] = len(groups) - demand.sum()
            compat = np.zeros((len(set_present), C), dtype=bool)
            compat[:, :L] = tmask
            compat[:, CROSS] = tmask.sum(axis=1) >= 2
            compat[:, MIXED] = True
            compat[:, L + 2] = True
            flow = _max_flow(supply, compat, demand)
            for _ in range(4 * L + 4):
                missing = demand - flow.sum(axis=0)
                if not missing[:L].any():
                    break
                btype, demand, flow = self._rebalance(btype, sel, cap, demand, flow, supply, compat, tmask, missing)
            missing = demand - flow.sum(axis=0)
            if missing.any():
                short_l = [lay.languages[c] if c < L else ("cross", "mixed", "unused")[c - L] for c in np.flatnonzero(missing)]
                raise ValueError(
                    f"source {lay.sources[s]!r}: cannot fill the batches of {short_l} with distinct groups "
                    f"({len(groups)} groups, language counts {dict(zip(lay.languages, lang_counts.tolist()))})"
                )
            # groups ordered by type, each type split over categories by the flow, then shuffled inside a category
            if len(set_present) == 1:  # one language set (e.g. fully parallel): already random, split in order
                g_sorted = groups
            else:
                by_type = np.argsort(_small(tid), kind="stable")  # radix sort on small ints
                cat_sorted = np.repeat(np.tile(np.arange(C), len(set_present)), flow.ravel())
                cat = np.empty(len(groups), dtype=np.int64)
                cat[by_type] = cat_sorted
                shuffled = rng.permutation(len(groups))
                g_sorted = groups[shuffled[np.argsort(_small(cat[shuffled]), kind="stable")]]
            # batches of this source sorted by (category, position) take consecutive runs of g_sorted
            border = sel[np.lexsort((sel, btype[sel]))]
            run_start = np.concatenate([[0], np.cumsum(cap[border])[:-1]])
            k = np.arange(int(cap[border].sum()))
            dst = np.repeat(slot_start[border] - run_start, cap[border]) + k
            group_of_slot[dst] = g_sorted[k]
            if W > 1:
                for t in sel[cap[sel] < K]:
                    in_batch = group_of_slot[slot_start[t] : slot_start[t + 1]]
                    c = btype[t]
                    ok = lay.mask[groups, c] if c < L else (lay.n_lang[groups] >= 2 if c == CROSS else np.ones(len(groups), bool))
                    pool = np.setdiff1d(groups[ok], in_batch)
                    need = K - len(in_batch)
                    if len(pool) < need:
                        raise ValueError(
                            f"source {lay.sources[s]!r}: its last global batch ({len(in_batch)} groups) cannot be "
                            f"topped up to {K} with distinct groups; use drop_last=True or a smaller batch size"
                        )
                    topups.append((int(t), rng.choice(pool, need, replace=False)))
        if topups:
            at = np.concatenate([np.full(len(gx), slot_start[t + 1]) for t, gx in topups])
            group_of_slot = np.insert(group_of_slot, at, np.concatenate([gx for _, gx in topups]))
            for t, gx in topups:
                cap[t] += len(gx)
        # 4. languages per example -> pair ids
        # pair id = pair_offset[g] + x * n + y, x/y the ranks of the query/passage language among g's n languages
        slot_type = np.repeat(btype, cap)
        g = group_of_slot
        n = lay.n_lang[g]
        pairs = lay.pair_offset[g]
        mono = slot_type < L
        if mono.any():  # x = y = rank of the batch language
            pairs[mono] += lay.lang_rank[g[mono], slot_type[mono]] * (n[mono] + 1)
        cross = slot_type == CROSS
        if cross.any():  # one uniform ordered pair x != y: k < n (n - 1), x = k // (n - 1), y skips x
            nc = n[cross]
            k = np.minimum((rng.random(len(nc)) * (nc * (nc - 1))).astype(np.int64), nc * (nc - 1) - 1)
            x, yc = np.divmod(k, nc - 1)
            pairs[cross] += x * nc + yc + (yc >= x)
        mixed = slot_type == MIXED
        if mixed.any():  # x = y uniform among the group's languages
            nm = n[mixed]
            pairs[mixed] += np.minimum((rng.random(len(nm)) * nm).astype(np.int64), nm - 1) * (nm + 1)
        # 5. split each global batch into its W rank batches
        if W == 1:
            bounds = np.concatenate([[0], np.cumsum(cap)])
            rep = 1
        else:
            bounds = np.arange(0, T * K + 1, B, dtype=np.int64)
            rep = W
        modes = np.where(btype < L, "mono", np.where(btype == CROSS, "cross", "mixed"))
        return EpochPlan(
            pairs=pairs,
            bounds=bounds.astype(np.int64),
            batch_mode=np.repeat(modes, rep),
            batch_language=np.repeat(np.where(btype < L, btype, -1), rep),
            batch_source=np.repeat(src_seq, rep),
            step=np.repeat(np.arange(T), rep),
            topped_up=int(sum(len(gx) for _, gx in topups)),
        )

    def _mono_languages(self, counts: np.ndarray, caps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Stratified mono languages: each of the source's languages gets floor/ceil of an equal share, shuffled."""
        langs = np.flatnonzero(counts >= min(self.global_batch_size, int(caps.max())))
        if len(langs) == 0:
            langs = np.flatnonzero(counts > 0)
        seq = np.resize(rng.permutation(langs), len(caps))
        return seq[rng.permutation(len(seq))]

    def _rebalance(self, btype, sel, cap, demand, flow, supply, compat, tmask, missing):
        """Move one mono batch from the language that cannot be filled to the one with most spare groups."""
        L = self.layout.num_languages
        worst = int(np.argmax(missing[:L]))
        have = tmask.T.astype(np.int64) @ supply  # groups of the source with each language
        spare = np.where(demand[:L] > 0, have - demand[:L], have) - np.where(np.arange(L) == worst, 10**12, 0)
        target = int(np.argmax(spare))
        cand = sel[(btype[sel] == worst)]
        if len(cand) == 0 or spare[target] <= 0:
            return btype, demand, flow
        t = cand[np.argmax(cap[cand])]
        btype = btype.copy()
        btype[t] = target
        demand = demand.copy()
        demand[worst] -= cap[t]
        demand[target] += cap[t]
        return btype, demand, _max_flow(supply, compat, demand)

    # -- records
    def config(self) -> dict[str, Any]:
        """The configuration, for the model card and ``hybrid_sampler_config.json``."""
        lay = self.layout
        return {
            "sampler": "sentence_transformers_hybrid.HybridBatchSampler",
            "mode": self.mode,
            "alpha": describe_alpha(self.alpha),
            "languages": lay.languages,
            "sources": lay.sources,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_processes": self.num_processes,
            "global_batch_size": self.global_batch_size,
            "drop_last": self.drop_last,
            "groups": lay.num_groups,
            "groups_used_per_epoch": int(self.usable.sum()),
            "single_language_groups_left_out": int((~self.usable).sum()),
            "batches_per_epoch": len(self),
        }

    # -- factory
    @classmethod
    def configure(
        cls,
        corpus: ParallelCorpus,
        alpha: AlphaLike = 0.5,
        mode: str = "hybrid",
        *,
        seed: int | None = None,
        num_processes: int | None = None,
        num_epochs: float = 1.0,
    ) -> HybridBatchSamplerFactory:
        """The ``batch_sampler`` factory for ``SentenceTransformerTrainingArguments``.

        Args:
            corpus: the training corpus (pass ``corpus.to_dataset()`` as ``train_dataset``).
            alpha: mono-batch probability for ``mode="hybrid"`` (paper: 0.5), or a schedule ``alpha(progress)``
                with progress in [0, 1] over the whole training run.
            mode: ``"hybrid"``, ``"mono"``, ``"cross"`` or ``"mixed"``.
            seed: fixes the sampling seed; default: the trainer's ``args.seed``.
            num_processes: overrides the world size (default: accelerate's ``PartialState().num_processes``).
            num_epochs: progress horizon when no trainer reports one (outside ``trainer.train()``).

        The factory registers a :class:`SamplerConfigCallback` on the trainer that calls it, which writes the
        configuration into the model card and into ``hybrid_sampler_config.json`` (checkpoints and output dir).

        Example::

            >>> from sentence_transformers_hybrid import ParallelCorpus, HybridBatchSampler
            >>> corpus = ParallelCorpus.from_records(
            ...     {"group": f"g{i}", "lang": lang, "query": f"q{i}{lang}", "passage": f"p{i}{lang}"}
            ...     for i in range(6) for lang in ("en", "es"))
            >>> HybridBatchSampler.configure(corpus, alpha=0.5, mode="hybrid")
            HybridBatchSamplerFactory(mode='hybrid', alpha=0.5, groups=6, languages=['en', 'es'], sources=['default'])
        """
        return HybridBatchSamplerFactory(corpus, alpha=alpha, mode=mode, seed=seed, num_processes=num_processes,
                                         num_epochs=num_epochs, sampler_class=cls)


def _check_mode_alpha(mode: str, alpha: AlphaLike) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if callable(alpha):
        for p in (0.0, 0.25, 0.5, 0.75, 1.0):
            try:
                a = float(alpha(p))
            except Exception as exc:
                raise ValueError(f"alpha schedule failed at progress {p}: {exc!r}") from exc
            if not 0.0 <= a <= 1.0:
                raise ValueError(f"alpha schedule returned {a} at progress {p}; expected a value in [0, 1]")
        return
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a float in [0, 1] or a callable of progress, got {alpha!r}") from None
    if not 0.0 <= a <= 1.0 or math.isnan(a):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


def describe_alpha(alpha: AlphaLike) -> Any:
    """JSON-friendly description of ``alpha``: the float, or the schedule's name and values at 0, .25, .5, .75, 1."""
    if not callable(alpha):
        return float(alpha)
    name = getattr(alpha, "__qualname__", None) or repr(alpha)
    try:
        values = {f"{p:g}": round(float(alpha(p)), 6) for p in (0.0, 0.25, 0.5, 0.75, 1.0)}
    except Exception as exc:  # pragma: no cover - reported, not fatal
        values = f"not evaluable: {exc}"
    return {"schedule": name, "values": values}


def _world_size() -> int:
    try:
        from accelerate import PartialState

        return int(PartialState().num_processes)
    except Exception:  # pragma: no cover - accelerate missing or not initialisable
        return 1


def _calling_trainer(depth: int = 6) -> Any:
    """The sentence-transformers trainer whose ``get_batch_sampler`` is calling us, if any."""
    try:
        from sentence_transformers.base.trainer import BaseTrainer
    except ImportError:  # pragma: no cover
        return None
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, BaseTrainer):
            return owner
        frame = frame.f_back
    return None


class HybridBatchSamplerFactory:
    """What :meth:`HybridBatchSampler.configure` returns: a callable the trainer calls to build the sampler.

    Holds the corpus (checked against the dataset), the options, and weak references to the samplers it built.
    Pickles without the corpus and with ``alpha`` schedules replaced by their description, because transformers
    saves ``training_args.bin`` with every checkpoint; an unpickled factory refuses to build samplers.
    """

    def __init__(self, corpus: ParallelCorpus, *, alpha: AlphaLike, mode: str, seed: int | None,
                 num_processes: int | None, num_epochs: float, sampler_class: type = HybridBatchSampler) -> None:
        _check_mode_alpha(mode, alpha)
        layout = pair_layout(corpus)
        if mode in ("cross", "hybrid") and not (layout.n_lang >= 2).any():
            raise ValueError(
                f"mode={mode!r} needs groups in at least two languages, but every group of the corpus has one "
                f"language ({layout.languages}); use mode='mono' or 'mixed', or add translations"
            )
        skipped = int((layout.n_lang < 2).sum())
        if mode in ("cross", "hybrid") and skipped:
            logger.warning(
                f"mode={mode!r}: {skipped} group(s) exist in one language only and are left out of every epoch "
                "(a single-language group cannot form a cross-lingual pair)"
            )
        if num_processes is not None and int(num_processes) < 1:
            raise ValueError(f"num_processes must be >= 1, got {num_processes}")
        if num_epochs <= 0:
            raise ValueError(f"num_epochs must be > 0, got {num_epochs}")
        self.corpus: ParallelCorpus | None = corpus
        self.alpha = alpha
        self.mode = mode
        self.seed = seed
        self.num_processes = num_processes
        self.num_epochs = num_epochs
        self.sampler_class = sampler_class
        self.languages = list(corpus.languages)
        self.sources = list(corpus.sources)
        self.num_groups = len(corpus)
        self._samplers: list[weakref.ref] = []

    def __call__(
        self,
        dataset: Dataset,
        batch_size: int,
        drop_last: bool = False,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> HybridBatchSampler:
        if self.corpus is None:
            raise ValueError("this HybridBatchSampler factory was unpickled without its corpus; call configure() again")
        sampler = self.sampler_class(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=self.seed if self.seed is not None else seed,
            mode=self.mode,
            alpha=self.alpha,
            num_processes=self.num_processes,
            num_epochs=self.num_epochs,
            corpus=self.corpus,
        )
        self._samplers = [r for r in self._samplers if r() is not None] + [weakref.ref(sampler)]
        trainer = _calling_trainer()
        if trainer is not None:
            handler = trainer.callback_handler
            if not any(isinstance(cb, SamplerConfigCallback) and cb.factory is self for cb in handler.callbacks):
                trainer.add_callback(SamplerConfigCallback(self))
        return sampler

    @property
    def samplers(self) -> list[HybridBatchSampler]:
        """The live samplers this factory built (normally one per ``trainer.train()``)."""
        return [s for s in (r() for r in self._samplers) if s is not None]

    def config(self) -> dict[str, Any]:
        """The configuration of the latest sampler, or of the factory when none was built yet."""
        live = self.samplers
        if live:
            return live[-1].config()
        return {
            "sampler": "sentence_transformers_hybrid.HybridBatchSampler",
            "mode": self.mode,
            "alpha": describe_alpha(self.alpha),
            "languages": self.languages,
            "sources": self.sources,
            "seed": self.seed,
            "groups": self.num_groups,
        }

    def save_config(self, path: str | Path) -> Path:
        """Write ``hybrid_sampler_config.json`` into the directory ``path`` (e.g. next to ``model.save(path)``)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        out = path / CONFIG_FILE
        out.write_text(json.dumps(self.config(), indent=2, default=str) + "\n", encoding="utf-8")
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("corpus", "_samplers")}
        state["alpha"] = describe_alpha(self.alpha) if callable(self.alpha) else self.alpha
        state["corpus"] = None
        state["_samplers"] = []
        return state

    def __repr__(self) -> str:
        return (
            f"HybridBatchSamplerFactory(mode={self.mode!r}, alpha={describe_alpha(self.alpha)!r}, "
            f"groups={self.num_groups}, languages={self.languages}, sources={self.sources})"
        )


class SamplerConfigCallback(TrainerCallback):
    """Records the sampler configuration where sentence-transformers cannot (it drops callables from the args).

    * model card: ``batch_sampler`` in the training hyperparameters (all and non-default) and the tags
      ``hybrid-batch-sampling`` / ``sampler-mode:<mode>``;
    * ``hybrid_sampler_config.json`` in every checkpoint and in ``output_dir`` at the end of training
      (``factory.save_config(path)`` writes it next to a model saved elsewhere);
    * the progress horizon of ``alpha`` schedules, from ``state.max_steps``.

    The factory adds it by itself to the trainer that calls it; adding it by hand is harmless.
    """

    def __init__(self, factory: HybridBatchSamplerFactory) -> None:
        self.factory = factory

    def _apply(self, args: Any, state: Any, model: Any) -> None:
        samplers = self.factory.samplers
        if samplers and state is not None and getattr(state, "max_steps", 0):
            for sampler in samplers:
                total = int(state.max_steps) * int(getattr(args, "gradient_accumulation_steps", 1)) * sampler.num_processes
                if sampler.total_batches != total:
                    sampler.total_batches = total
        card = getattr(model, "model_card_data", None)
        if card is None:
            return
        config = self.factory.config()
        text = json.dumps(config, default=str)
        card.all_hyperparameters = {**(card.all_hyperparameters or {}), "batch_sampler": text}
        card.non_default_hyperparameters = {**(card.non_default_hyperparameters or {}), "batch_sampler": text}
        card.add_tags(["hybrid-batch-sampling", f"sampler-mode:{config['mode']}"])
        if getattr(card, "ir_model", None) is None:  # the dataset's columns are pair ids, so the card cannot tell
            card.ir_model = True

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._apply(args, state, model)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        # once more after every on_train_begin ran (the model-card callback resets the hyperparameters there)
        card = getattr(model, "model_card_data", None)
        if card is not None and "batch_sampler" not in (card.all_hyperparameters or {}):
            self._apply(args, state, model)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                self.factory.save_config(ckpt)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.factory.save_config(args.output_dir)


__all__ = [
    "EpochPlan",
    "HybridBatchSampler",
    "HybridBatchSamplerFactory",
    "PairLayout",
    "PairResolver",
    "SamplerConfigCallback",
    "describe_alpha",
    "pair_layout",
    "training_dataset",
]
