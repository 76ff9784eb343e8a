"""The sampler: :class:`HybridBatchSampler` decides which pairs form a batch (mono, cross, mixed or hybrid).

It validates its options and counts batches; the batches of each epoch come from the pure planner
(:func:`~sentence_transformers_hybrid.sampling.plan.plan_epoch`). See ``docs/sampling.md`` for the design, the
determinism and DDP rules, and a runnable example.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from sentence_transformers.base.sampler import DefaultBatchSampler

from ..data.pair_dataset import dataset_resolver, is_unchanged_pair_dataset, pair_layout
from .factory import HybridBatchSamplerFactory
from .modes import AlphaLike, alpha_record, resolve_alpha
from .plan import EpochPlan, plan_epoch, usable_groups

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from datasets import Dataset

    from ..data.corpus import ParallelCorpus

logger = logging.getLogger("sentence_transformers_hybrid.sampling")

__all__ = ["HybridBatchSampler", "world_size"]


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
        alpha: probability of a mono batch in ``hybrid`` mode, or a callable of progress in [0, 1]; default 0.5 (the
            paper's). Other modes have none: leave it ``None`` (an ``alpha`` given with them is a ``ValueError``).
        num_processes: ``W``; default: ``accelerate.PartialState().num_processes`` (:func:`world_size`: an error
            when accelerate cannot tell).
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
        alpha: AlphaLike | None = None,
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
        alpha = resolve_alpha(mode, alpha)
        if corpus is None:
            raise ValueError(
                "HybridBatchSampler was built without its corpus (batch_sampler=HybridBatchSampler, the class, gives "
                "the sampler neither its options nor a place to record them); pass "
                "batch_sampler=HybridBatchSampler.configure(corpus, alpha=..., mode=...)"
            )
        resolver = dataset_resolver(dataset)
        if resolver is None:
            cols = getattr(dataset, "column_names", None)
            raise ValueError(
                "HybridBatchSampler needs the train_dataset made by corpus.to_dataset() (a pair index resolved by a "
                f"with_transform); got {type(dataset).__name__} with columns {cols}. Pass "
                "train_dataset=corpus.to_dataset() for the same corpus given to HybridBatchSampler.configure()."
            )
        layout = resolver.layout
        mine = pair_layout(corpus)
        if mine.signature != layout.signature:
            raise ValueError(
                "train_dataset was made by to_dataset() of another corpus than the one given to "
                f"HybridBatchSampler.configure(): {layout.num_groups} groups x {layout.languages} "
                f"(sources {layout.sources}) vs {mine.num_groups} groups x {mine.languages} (sources {mine.sources})"
            )
        if not is_unchanged_pair_dataset(dataset, layout):
            raise ValueError(
                f"train_dataset ({len(dataset)} rows) is not corpus.to_dataset() as made ({layout.num_pairs} rows, row "
                "i = pair i): it was filtered, selected or shuffled; pass corpus.to_dataset() unchanged (the "
                "sampler does the selection and the shuffling)"
            )
        if num_processes is None:
            num_processes = world_size()
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
        self.usable = usable = usable_groups(lay, self.mode)
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
        if self.alpha is None:
            raise ValueError(f"mode={self.mode!r} has no alpha (only mode='hybrid' mixes batch types)")
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
        plan = plan_epoch(
            self.layout, mode=self.mode, usable=self.usable, global_batches=self.global_batches,
            source_rest=self.source_rest, batch_size=self.batch_size, num_processes=self.num_processes,
            seed=self.seed, epoch=epoch, total_batches=self.total_batches, num_epochs=self.num_epochs,
            alpha_at=self.alpha_at,
        )
        self._plan_cache = (key, plan)
        return plan

    # -- records
    def config(self) -> dict[str, Any]:
        """The configuration, for the model card and ``hybrid_sampler_config.json``."""
        lay = self.layout
        return {
            "sampler": "sentence_transformers_hybrid.HybridBatchSampler",
            "mode": self.mode,
            **alpha_record(self.alpha),
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
        alpha: AlphaLike | None = None,
        mode: str = "hybrid",
        *,
        seed: int | None = None,
        num_processes: int | None = None,
        num_epochs: float = 1.0,
    ) -> HybridBatchSamplerFactory:
        """The ``batch_sampler`` factory for ``SentenceTransformerTrainingArguments``.

        Args:
            corpus: the training corpus (pass ``corpus.to_dataset()`` as ``train_dataset``).
            alpha: mono-batch probability for ``mode="hybrid"`` (default: the paper's 0.5), or a schedule
                ``alpha(progress)`` with progress in [0, 1] over the whole training run. Only ``hybrid`` has one:
                with another mode leave it ``None`` (given, it is a ``ValueError``), and the configuration records
                no ``alpha``.
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


def world_size() -> int:
    """The number of processes the sampler plans for: ``accelerate.PartialState().num_processes``.

    Never a guess: if accelerate fails to tell, a ``RuntimeError`` names why (planning for one process under DDP
    would put one group into several ranks' batches, silently). Without accelerate installed, a process that is not
    part of a distributed launch counts as one, and an initialised ``torch.distributed`` gives its world size.
    ``configure(num_processes=...)`` skips this.

    Example::

        >>> world_size()  # a plain Python process
        1
    """
    try:
        from accelerate import PartialState
    except ImportError:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_world_size())
        launched = os.environ.get("WORLD_SIZE", "1")
        if launched != "1":
            raise RuntimeError(
                f"HybridBatchSampler cannot tell the number of processes: WORLD_SIZE={launched!r} says this is a "
                "distributed launch, but accelerate is not installed and torch.distributed is not initialised. "
                "Install accelerate (pip install 'sentence-transformers[train]') or pass num_processes= to "
                "HybridBatchSampler.configure()"
            ) from None
        return 1
    try:
        return int(PartialState().num_processes)
    except Exception as err:
        raise RuntimeError(
            f"HybridBatchSampler cannot tell the number of processes: accelerate.PartialState() failed "
            f"({type(err).__name__}: {err}). Planning for one process under DDP would put one group into several "
            "ranks' batches; fix the distributed setup, or pass num_processes= to HybridBatchSampler.configure()"
        ) from err
