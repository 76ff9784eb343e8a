"""One training run of the experiment: the stock ``SentenceTransformerTrainer`` + ``HybridBatchSampler`` + the
paper's MNRL, on the device and precision the experiment chose, resumable inside the run.

* checkpoints every ``preset.save_steps`` steps (50), the last two kept; a rerun resumes from the newest
  *complete* one, so a run killed anywhere loses at most 50 steps. A checkpoint is complete when its
  ``trainer_state.json`` parses and names its step, its weights are whole safetensors files, and its optimizer,
  scheduler and RNG archives pass their zip CRC checks (nothing is unpickled to check them). An incomplete one is
  named in a warning and skipped, and the run resumes from the previous one (or from the start).
* :class:`TrainingProgress`: a progress bar with pairs/s and the time left (the trainer's own bar is switched off).
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from ..data import ParallelCorpus
from .presets import Preset, RunSpec

if TYPE_CHECKING:  # pragma: no cover
    from .devices import DeviceSetup

logger = logging.getLogger(__name__)

#: written into every checkpoint: the training seconds up to it, so a resumed run reports its whole training time
ELAPSED_FILE = "elapsed_seconds.json"

__all__ = ["TrainResult", "TrainingProgress", "checkpoint_problem", "resumable_checkpoint", "train_model", "train_run"]


@dataclass
class TrainResult:
    """What :func:`train_run` reports: the training seconds, the sampler configuration it trained with, the
    checkpoint it resumed from (``None``: from the start) and which training path the loss ran
    (``LengthSortedMultipleNegativesRankingLoss.training_path()``: compiled or not and why, graphs built; ``None``
    for the stock loss), and the training loss the trainer logged (``{step: mean loss since the previous log}``,
    every ``logging_steps``)."""

    seconds: float
    sampler_config: dict[str, Any]
    resumed_from: str | None = None
    training_path: dict[str, Any] | None = None
    loss_curve: dict[int, float] | None = None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the trainer checkpoint ``path`` cannot be resumed from, or ``None`` when it is complete.

    Example::

        >>> import tempfile
        >>> checkpoint_problem(tempfile.mkdtemp())
        'no trainer_state.json'
    """
    path = Path(path)
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        return "no trainer_state.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"trainer_state.json is not valid JSON ({e})"
    step = path.name.rsplit("-", 1)[-1]
    if str(state.get("global_step")) != step:
        return f"trainer_state.json says step {state.get('global_step')}, the folder step {step}"
    weights = list(path.rglob("*.safetensors"))
    if not weights:
        return "no *.safetensors weights"
    for w in weights:
        problem = _safetensors_problem(w)
        if problem:
            return f"{w.relative_to(path)}: {problem}"
    for name in ("optimizer.pt", "scheduler.pt"):
        f = path / name
        if not f.is_file():
            return f"no {name}"
    for f in [path / "optimizer.pt", path / "scheduler.pt", *path.glob("rng_state*.pth")]:
        try:
            with zipfile.ZipFile(f) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError) as e:
            return f"{f.name}: not a complete torch archive ({e})"
        if bad is not None:
            return f"{f.name}: member {bad} fails its CRC check"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is whole when its header parses and the tensors' byte ranges end at the file's end."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or 8 + n > size:
                return f"truncated (header of {n} bytes, file of {size})"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        return f"unreadable header ({e})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"truncated ({size} bytes, the header says {8 + n + end})"
    return None


def resumable_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-*`` folder of ``output_dir``; incomplete newer ones are named in a warning."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    ckpts = sorted((p for p in output_dir.glob("checkpoint-*") if p.name.rsplit("-", 1)[-1].isdigit()),
                   key=lambda p: int(p.name.rsplit("-", 1)[-1]), reverse=True)
    for ckpt in ckpts:
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return str(ckpt)
        logger.warning("checkpoint %s cannot be resumed from (%s): skipped, trying the previous one", ckpt, problem)
    return None


class TrainingProgress(TrainerCallback):
    """A tqdm bar over the optimizer steps that shows pairs/s (``pairs_per_step`` = the global batch) and the time
    left; it starts at the resumed step, and its rate counts only this process's steps."""

    def __init__(self, pairs_per_step: int, desc: str = "train", prior_seconds: float = 0.0) -> None:
        self.pairs_per_step = int(pairs_per_step)
        self.desc = desc
        self.prior_seconds = float(prior_seconds)  # training time before the checkpoint this run resumed from
        self.bar = None
        self._start = None
        self._first_step = 0

    def seconds(self) -> float:
        """Training seconds of the run so far: before the resumed checkpoint plus this process's."""
        return self.prior_seconds + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                from .._utils import atomic_write_json

                atomic_write_json(ckpt / ELAPSED_FILE, {"seconds": self.seconds(), "global_step": state.global_step})

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step",
                            dynamic_ncols=True)
        self._start, self._first_step = time.perf_counter(), state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        self.bar.update(state.global_step - self.bar.n)
        done = state.global_step - self._first_step
        elapsed = time.perf_counter() - self._start
        if done and elapsed > 0:
            rate = done * self.pairs_per_step / elapsed
            left = (state.max_steps - state.global_step) * elapsed / done
            self.bar.set_postfix_str(f"{rate:.1f} pairs/s, {left / 60:.1f} min left", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def train_model(model, corpus: ParallelCorpus, spec: RunSpec, preset: Preset, output_dir: Path, prompts: dict[str, str],
                resume: bool = True) -> float:
    """Train ``model`` in place with the stock trainer + HybridBatchSampler + MNRL; returns the training seconds."""
    return train_run(model, corpus, spec, preset, output_dir, prompts, resume=resume).seconds


def train_run(model, corpus: ParallelCorpus, spec: RunSpec, preset: Preset, output_dir: Path, prompts: dict[str, str],
              resume: bool = True, setup: DeviceSetup | None = None, consistency_weight: float = 0.0,
              label: str | None = None) -> TrainResult:
    """:func:`train_model`, also returning the sampler configuration (``factory.config()``) for the records.

    ``consistency_weight`` > 0 (the ``beyond`` preset's consistency candidates) trains on
    :func:`~sentence_transformers_hybrid.sampling.parallel_query_dataset` (a translation of each question, chosen from
    ``spec.seed``) with :class:`~sentence_transformers_hybrid.losses.ParallelConsistencyLoss` around the same loss.

    ``setup`` (from :func:`~sentence_transformers_hybrid.experiment.devices.select_device`) decides ``bf16`` and
    ``use_cpu``; without it ``preset.bf16`` is used as given (``"auto"`` meaning: bf16 where supported).

    ``label`` names the run in the progress bar and the log (default ``spec.run_id``, which names only the sampler's
    mode, alpha and seed: the ``beyond`` preset passes its own run id, e.g. ``dev-consistency-b0.1-s0``).
    """
    import transformers
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from ..losses import hybrid_loss
    from ..sampling import HybridBatchSampler, save_from_main_process

    output_dir = Path(output_dir)
    if setup is None and preset.bf16 == "auto":
        from .devices import select_device

        setup = select_device(None if model.device.type == "cuda" else "cpu")
    device_args = setup.training_arguments() if setup is not None else {"bf16": bool(preset.bf16)}
    save = preset.save_steps and preset.max_steps > preset.save_steps
    # transformers 5 takes the warmup ratio as a float warmup_steps; 4.x has warmup_ratio
    warmup = ({"warmup_steps": float(preset.warmup_ratio)} if int(transformers.__version__.split(".")[0]) >= 5
              else {"warmup_ratio": preset.warmup_ratio})
    sampler = HybridBatchSampler.configure(corpus, mode=spec.mode, alpha=spec.alpha)  # alpha: None but for hybrid
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=preset.batch_size,
        learning_rate=preset.learning_rate,
        weight_decay=preset.weight_decay,
        **warmup,
        lr_scheduler_type="linear",
        max_steps=preset.max_steps,
        seed=spec.seed,
        **device_args,
        logging_steps=max(1, min(10, preset.max_steps // 10)),  # a loss curve of 30 points over 300 steps
        save_strategy="steps" if save else "no",
        save_steps=preset.save_steps or preset.max_steps,
        save_total_limit=2,  # the newest may be cut off by a kill: keep the one before it
        report_to="none",
        disable_tqdm=True,  # TrainingProgress shows pairs/s and the time left instead
        dataloader_pin_memory=False,
        batch_sampler=sampler,
        prompts={k: v for k, v in prompts.items() if v} or None,
    )
    if consistency_weight and prompts.get("query"):  # the translation is a question: the query prompt
        args.prompts = {**(args.prompts or {}), "query_parallel": prompts["query"]}
    loss_kwargs = ({"chunk_size": preset.chunk_size, "compile_encoder": bool(preset.compile_encoder),
                    "pack_tokens": bool(preset.pack_tokens), "fast_dropout": bool(preset.fast_dropout)}
                   if preset.chunk_size else {})
    loss = hybrid_loss(model, scale=preset.scale, **loss_kwargs)
    train_dataset = corpus.to_dataset()
    if consistency_weight:
        from ..losses import ParallelConsistencyLoss
        from ..sampling.parallel import parallel_query_dataset

        loss = ParallelConsistencyLoss(model, loss, weight=consistency_weight)
        train_dataset = parallel_query_dataset(corpus, seed=spec.seed)
    label = label or spec.run_id
    progress = TrainingProgress(preset.batch_size * sampler_world_size(), desc=label)
    trainer = save_from_main_process(SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_dataset, loss=loss,
        callbacks=[sampler.callback, progress],
    ))
    last = resumable_checkpoint(output_dir) if resume and save else None
    if last:
        logger.info("run %s resumes from %s", label, last)
        progress.prior_seconds = _prior_seconds(Path(last))
    trainer.train(resume_from_checkpoint=last)
    inner = getattr(loss, "base_loss", loss)  # the consistency term wraps the chunked loss
    path = inner.training_path() if hasattr(inner, "training_path") else None
    curve = {int(e["step"]): float(e["loss"]) for e in trainer.state.log_history if "loss" in e and "step" in e}
    return TrainResult(progress.seconds(), sampler.config(), last, path, curve)


def _prior_seconds(checkpoint: Path) -> float:
    try:
        return float(json.loads((checkpoint / ELAPSED_FILE).read_text(encoding="utf-8"))["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("%s has no readable %s: the run's train_seconds count only the time after it", checkpoint,
                       ELAPSED_FILE)
        return 0.0


def sampler_world_size() -> int:
    from ..sampling.sampler import world_size

    return world_size()
