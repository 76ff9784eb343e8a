"""One writer per checkpoint under DDP: :func:`save_from_main_process`.

In transformers 5.25 ``Trainer.save_model`` calls ``Trainer._save`` on every rank and the "only the main process
saves" check (``args.should_save``) lives inside ``_save`` (under tensor parallelism every rank must reach
``save_pretrained``; see the discussion in huggingface/transformers#48569). sentence-transformers (up to at least
6.3.0) overrides ``_save`` and assumes it is only called on the main process, so under ``torchrun`` **every rank
writes the model files of every checkpoint into the same folder at once**. Two ranks truncating and rewriting
``tokenizer.json`` or ``model.safetensors`` together can leave a file with the tail of the other's write, and the
resume then fails (``trailing characters at line 261``) or, worse, loads a mix. Our 2-process test
(``tests/test_distributed.py``) met exactly that.

:func:`save_from_main_process` wraps one trainer's ``_save`` so that only the ranks with
``args.should_save`` (the main process, or each node's with ``save_on_each_node``) write; optimizer, scheduler and
each rank's RNG state are saved by transformers as before. It changes nothing on one process, and nothing when the
installed sentence-transformers already checks. It is a patch of one trainer instance, not of the class.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

__all__ = ["save_from_main_process"]

T = TypeVar("T")

_MARK = "_sth_main_process_only"


def save_from_main_process(trainer: T) -> T:
    """Make ``trainer`` write model files from the saving process only; returns ``trainer``.

    Call it once after building the trainer of a multi-process run (calling it again does nothing)::

        trainer = save_from_main_process(SentenceTransformerTrainer(model=model, args=args, ...))

    Example: on a rank that must not save (here faked with ``should_save=False``), nothing is written::

        >>> import types
        >>> written = []
        >>> trainer = types.SimpleNamespace(args=types.SimpleNamespace(should_save=False),
        ...                                 _save=lambda output_dir=None, state_dict=None: written.append(output_dir))
        >>> trainer = save_from_main_process(trainer)
        >>> trainer._save("checkpoint-8"); written
        []
        >>> trainer.args.should_save = True
        >>> trainer._save("checkpoint-8"); written
        ['checkpoint-8']
    """
    save = getattr(trainer, "_save", None)
    if not callable(save):
        raise TypeError(
            f"save_from_main_process needs a transformers Trainer (with _save), got {type(trainer).__name__}")
    if getattr(save, _MARK, False):
        return trainer

    @functools.wraps(save)
    def _save(output_dir: str | None = None, state_dict: Any = None) -> Any:
        if not trainer.args.should_save:
            return None
        return save(output_dir, state_dict=state_dict)

    setattr(_save, _MARK, True)
    trainer._save = _save
    return trainer
