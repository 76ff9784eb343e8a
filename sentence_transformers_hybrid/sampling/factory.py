"""The factory of :class:`~sentence_transformers_hybrid.sampling.HybridBatchSampler` and its trainer callback: the
glue between the sampler and the stock trainer (formerly ``sampling/trainer.py``; that path still imports, with a
``DeprecationWarning``).

* :class:`HybridBatchSamplerFactory`: what ``HybridBatchSampler.configure(...)`` returns and
  ``SentenceTransformerTrainingArguments(batch_sampler=...)`` takes; the trainer calls it to build the sampler.
* :class:`SamplerConfigCallback` (``factory.callback``): pass it to the trainer (``callbacks=[factory.callback]``)
  to record the configuration in the model card and in ``hybrid_sampler_config.json``, to give ``alpha`` schedules
  the trainer's horizon, and to keep the batch order of every process tied to the trainer's epoch.
* :func:`write_sampler_config`: the one writer of ``hybrid_sampler_config.json``.

The sampler class is not imported here (``configure`` passes it as ``sampler_class``); what the factory and the
callback use of a sampler is the :class:`BuiltSampler` protocol, so this module sits below :mod:`.sampler`.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from transformers import TrainerCallback

from .._utils import atomic_write_text
from ..data.pair_dataset import pair_layout
from .modes import AlphaLike, alpha_record, describe_alpha, resolve_alpha
from .plan import usable_groups

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from datasets import Dataset

    from ..data.corpus import ParallelCorpus

logger = logging.getLogger("sentence_transformers_hybrid.sampling")

CONFIG_FILE = "hybrid_sampler_config.json"

__all__ = [
    "BuiltSampler", "CONFIG_FILE", "HybridBatchSamplerFactory", "SamplerConfigCallback", "trainer_epoch",
    "write_sampler_config",
]


class BuiltSampler(Protocol):
    """What the factory and :class:`SamplerConfigCallback` use of the sampler they build
    (:class:`~sentence_transformers_hybrid.HybridBatchSampler` has it all)."""

    num_processes: int
    total_batches: int | None

    def set_epoch(self, epoch: int) -> None:
        """Switch to the batches of ``epoch``."""

    def config(self) -> dict[str, Any]:
        """The configuration, for the model card and ``hybrid_sampler_config.json``."""

    def __len__(self) -> int:
        """Batches per epoch, all processes together."""

    def __iter__(self) -> Iterator[list[int]]:
        """The batches of the current epoch (lists of dataset row ids)."""


def write_sampler_config(path: str | Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as ``hybrid_sampler_config.json`` into the directory ``path`` (atomically); returns the file.

    Example::

        >>> import tempfile, json
        >>> out = write_sampler_config(tempfile.mkdtemp(), {"mode": "hybrid", "alpha": 0.5})
        >>> out.name, json.loads(out.read_text())["mode"]
        ('hybrid_sampler_config.json', 'hybrid')
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path / CONFIG_FILE, json.dumps(config, indent=2, default=str) + "\n")


class HybridBatchSamplerFactory:
    """What :meth:`HybridBatchSampler.configure` returns: a callable the trainer calls to build the sampler.

    Holds the corpus (checked against the dataset), the options, and weak references to the samplers it built.
    Pickles without the corpus and with ``alpha`` schedules replaced by their description, because transformers
    saves ``training_args.bin`` with every checkpoint; an unpickled factory refuses to build samplers.
    """

    def __init__(self, corpus: ParallelCorpus, *, alpha: AlphaLike | None, mode: str, seed: int | None,
                 num_processes: int | None, num_epochs: float, sampler_class: Callable[..., BuiltSampler]) -> None:
        alpha = resolve_alpha(mode, alpha)
        skipped = int((~usable_groups(pair_layout(corpus), mode)).sum())
        if skipped:
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
        self._callback: SamplerConfigCallback | None = None
        self._attached = False  # set by the callback when a trainer is built with it
        self._warned = False

    def __call__(
        self,
        dataset: Dataset,
        batch_size: int,
        drop_last: bool = False,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> BuiltSampler:
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
        if not self._attached and not self._warned:
            self._warned = True
            logger.warning(
                "HybridBatchSampler: no trainer has this factory's SamplerConfigCallback, so the sampler configuration "
                "is not written to the model card or hybrid_sampler_config.json, an alpha schedule uses num_epochs=%s "
                "as its horizon, and a run resumed into epoch >= 1 on several processes replays epoch 0's batch order. Pass "
                "callbacks=[factory.callback] to SentenceTransformerTrainer.", self.num_epochs,
            )
        return sampler

    @property
    def callback(self) -> SamplerConfigCallback:
        """The :class:`SamplerConfigCallback` of this factory: pass it to the trainer, ``callbacks=[factory.callback]``."""
        if self._callback is None:
            self._callback = SamplerConfigCallback(self)
        return self._callback

    @property
    def samplers(self) -> list[BuiltSampler]:
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
            **alpha_record(self.alpha),
            "languages": self.languages,
            "sources": self.sources,
            "seed": self.seed,
            "groups": self.num_groups,
        }

    def save_config(self, path: str | Path) -> Path:
        """Write ``hybrid_sampler_config.json`` into the directory ``path`` (e.g. next to ``model.save(path)``)."""
        return write_sampler_config(path, self.config())

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("corpus", "_samplers", "_callback")}
        state["alpha"] = describe_alpha(self.alpha) if callable(self.alpha) else self.alpha
        state["corpus"] = None
        state["_samplers"] = []
        state["_callback"] = None
        return state

    def __repr__(self) -> str:
        alpha = f", alpha={describe_alpha(self.alpha)!r}" if self.alpha is not None else ""
        return (
            f"HybridBatchSamplerFactory(mode={self.mode!r}{alpha}, "
            f"groups={self.num_groups}, languages={self.languages}, sources={self.sources})"
        )


def trainer_epoch(global_step: int, steps_in_epoch: int, gradient_accumulation_steps: int = 1) -> int:
    """The epoch the trainer is in at ``global_step``, computed as transformers does when it resumes
    (``global_step // num_update_steps_per_epoch``, with ``steps_in_epoch`` batches per rank and epoch).

    Example::

        >>> trainer_epoch(8, steps_in_epoch=6), trainer_epoch(6, 6), trainer_epoch(5, 6)
        (1, 1, 0)
        >>> trainer_epoch(3, steps_in_epoch=5, gradient_accumulation_steps=2)  # 3 updates per epoch
        1
    """
    ga = max(int(gradient_accumulation_steps), 1)
    updates_per_epoch = max(int(steps_in_epoch) // ga + int(int(steps_in_epoch) % ga > 0), 1)
    return int(global_step) // updates_per_epoch


def _steps_in_epoch(train_dataloader: Any, sampler: BuiltSampler) -> int:
    """Batches per rank and epoch: the prepared data loader's length (what the trainer counts), else the sampler's."""
    try:
        return int(len(train_dataloader))
    except TypeError:  # no data loader passed (or one without a length)
        return len(sampler) // sampler.num_processes


class SamplerConfigCallback(TrainerCallback):
    """Records the sampler configuration where sentence-transformers cannot (it drops callables from the args).

    * model card: ``batch_sampler`` in the training hyperparameters (all and non-default) and the tags
      ``hybrid-batch-sampling`` / ``sampler-mode:<mode>``;
    * ``hybrid_sampler_config.json`` in every checkpoint and in ``output_dir`` at the end of training
      (``factory.save_config(path)`` writes it next to a model saved elsewhere);
    * the progress horizon of ``alpha`` schedules, from ``state.max_steps``;
    * the sampler's epoch at every ``on_epoch_begin``, from ``state.global_step`` (:func:`trainer_epoch`), on
      every rank: a run resumed into epoch >= 1 on several processes continues with that epoch's batches
      (accelerate's ``BatchSamplerShard`` / ``SkipBatchSampler`` do not pass ``set_epoch`` on).

    Pass it to the trainer: ``SentenceTransformerTrainer(..., callbacks=[factory.callback])``; without it the sampler
    still trains, but records nothing and logs a warning.
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

    def on_init_end(self, args, state, control, **kwargs):
        self.factory._attached = True

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._apply(args, state, model)

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        # The trainer calls this before it builds the epoch's iterator (and before a resumed epoch's
        # skip_first_batches), on every rank. accelerate does not forward set_epoch through BatchSamplerShard +
        # SkipBatchSampler, so a run resumed into epoch >= 1 on several processes would otherwise replay epoch 0.
        samplers = self.factory.samplers
        if not samplers or state is None:
            return
        epoch = trainer_epoch(state.global_step, _steps_in_epoch(train_dataloader, samplers[-1]),
                              int(getattr(args, "gradient_accumulation_steps", 1) or 1))
        for sampler in samplers:
            sampler.set_epoch(epoch)

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
