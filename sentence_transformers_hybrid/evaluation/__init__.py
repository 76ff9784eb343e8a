"""Evaluators in the sentence-transformers sense: they encode, call the metric kernels and name the results.

* :mod:`.retrieval`: :class:`MultilingualRetrievalEvaluator` (LAReQA mono / cross / multi, rank distance,
  same-language share, the language-centering control);
* :mod:`.beir`: :class:`BEIRRetrievalEvaluator` and BEIR interop (qrels <-> relevance, runs, the cross-check);
* :mod:`.miracl`: :class:`MIRACLEvaluator`, :func:`evaluate_miracl` (the corpus engine: shards, search, trec_eval);
* :mod:`.cka`: :class:`CKAEvaluator` and the layer-wise helpers (:func:`layer_embeddings`, :func:`layerwise_cka`,
  :func:`cka_matrix`, :func:`plot_cka_heatmap`);
* :mod:`.encoding`: what the retrieval evaluators share (encoding settings, cosine scores);
* :mod:`.plots`: :func:`plot_heatmap`, the package's one heatmap (CKA matrices, mAP per language pair).

None of them parses files; loaders live in :mod:`sentence_transformers_hybrid.data`.
"""

from .beir import BEIRRetrievalEvaluator, beir_evaluate, load_beir_folder, relevance_from_qrels, run_from_scores
from .miracl import MIRACLEvaluator, evaluate_miracl
from .cka import CKAEvaluator, cka_matrix, layer_embeddings, layerwise_cka, plot_cka_heatmap
from .plots import plot_heatmap
from .retrieval import (
    EVALUATOR_METRICS,
    MULTI_METRICS,
    SETTINGS,
    MultilingualRetrievalEvaluator,
    pair_matrix,
    setting_metrics,
)

__all__ = [
    "BEIRRetrievalEvaluator",
    "CKAEvaluator",
    "EVALUATOR_METRICS",
    "MIRACLEvaluator",
    "MULTI_METRICS",
    "MultilingualRetrievalEvaluator",
    "SETTINGS",
    "beir_evaluate",
    "cka_matrix",
    "evaluate_miracl",
    "layer_embeddings",
    "layerwise_cka",
    "load_beir_folder",
    "pair_matrix",
    "plot_cka_heatmap",
    "plot_heatmap",
    "relevance_from_qrels",
    "run_from_scores",
    "setting_metrics",
]
