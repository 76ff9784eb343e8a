"""The end-to-end experiment: train one encoder with X-X-mono, X-Y and hybrid batches, evaluate, CKA, report.

* :mod:`.presets`: :class:`Preset`, :data:`PRESETS`, :class:`RunSpec`, :func:`plan_runs`, :func:`resolve_preset`;
* :mod:`.backbones`: what each preset trains (static, frozen e5 + head, e5, any SentenceTransformer);
* :mod:`.runner`: :func:`run_experiment` and its steps (:func:`load_data`, :func:`evaluate_model`), resumable run by
  run; :mod:`.training`: :func:`train_model` (one run through the stock trainer, resumable from checkpoints);
* :mod:`.report`: writes ``results.json``, ``runs.json``, ``results.md`` with its plots, and the model cards, from
  :mod:`.stats` (typed run records, mean ± sd over seeds), :mod:`.claims` (the paper's claims), :mod:`.tables`
  (Markdown) and :mod:`.plots` (PNG);
* :mod:`.hub`: :func:`push_model`;
* :mod:`.beyond` (issue 22): :func:`run_beyond`, the ``beyond`` preset's dev selection and test, with
  :mod:`.selection` (the fixed selection and non-inferiority rules) and :mod:`.beyond_report`.

Every run trains through the **stock** ``SentenceTransformerTrainer`` with :class:`HybridBatchSampler` and the
paper's MNRL configuration, then is evaluated on the held-out benchmark with :class:`MultilingualRetrievalEvaluator`
(mono / cross / multi mAP@20, rank distance) and by linear CKA between English questions and the same questions in
every other language.

Example::

    >>> from sentence_transformers_hybrid.experiment import run_experiment
    >>> summary = run_experiment("smoke", output_dir="runs/smoke")  # trains 3 models, minutes on 2 cores (tests/test_experiment.py runs it)  # doctest: +SKIP
"""

from ..data import parallel_questions, subsample_benchmark
from .backbones import Backbone, E5Backbone, FrozenE5Backbone, HubBackbone, StaticBackbone, make_backbone
from .hub import push_model
from .presets import MODES, PRESETS, Preset, RunSpec, plan_runs, resolve_preset
from .beyond import DEV_CANDIDATES, Candidate, plan_beyond_runs, run_beyond
from .selection import non_inferior, select_candidate
from .runner import (
    ExperimentConfigError,
    evaluate_model,
    evaluator_pairs,
    load_data,
    run_experiment,
)
from .training import train_model

__all__ = [
    "Candidate",
    "DEV_CANDIDATES",
    "non_inferior",
    "plan_beyond_runs",
    "run_beyond",
    "select_candidate",
    "Backbone",
    "E5Backbone",
    "ExperimentConfigError",
    "FrozenE5Backbone",
    "HubBackbone",
    "MODES",
    "PRESETS",
    "Preset",
    "RunSpec",
    "StaticBackbone",
    "evaluate_model",
    "evaluator_pairs",
    "load_data",
    "make_backbone",
    "parallel_questions",
    "plan_runs",
    "push_model",
    "resolve_preset",
    "run_experiment",
    "subsample_benchmark",
    "train_model",
]
