"""Pure metric kernels on arrays: no models, no I/O, nothing else of this package imported.

* :mod:`.retrieval`: :func:`retrieval_metrics` / :func:`ranking_metrics` (LAReQA mAP@20, full-ranking mAP, Recall,
  nDCG, MRR, rank distance), top-k selection and :func:`relevant_ranks`;
* :mod:`.ranking`: the one ranking rule (score descending, then index ascending): top-k, running merges, ranks;
* :mod:`.bias`: language-bias figures (rank distance, same-language share) and the centering control;
* :mod:`.graded`: cutoff metrics of ranked top-k lists under graded qrels (:func:`ranked_list_metrics`);
* :mod:`.trec`: trec_eval scoring through pytrec_eval (``-c -M 100``), MIRACL's nDCG@10 / Recall@100;
* :mod:`.cka`: CKA estimators (linear biased / debiased, Gram, RBF, minibatch, matrices).
"""

from .bias import language_centered, rank_distance_rows, ranks_of, same_language_share
from .cka import MinibatchCKA, gram_cka, linear_cka, linear_cka_matrix, minibatch_cka, rbf_cka
from .graded import ranked_list_metrics
from .ranking import TIE_RULE, merge_ranked, order_ranked, top_k
from .retrieval import (
    LAREQA_METRICS,
    MIRACL_METRICS,
    as_score_tensor,
    check_finite_scores,
    max_cutoff,
    merge_top_k,
    ranking_metrics,
    relevant_ranks,
    retrieval_metrics,
    top_k_indices,
)

__all__ = [
    "LAREQA_METRICS",
    "MIRACL_METRICS",
    "MinibatchCKA",
    "TIE_RULE",
    "as_score_tensor",
    "check_finite_scores",
    "gram_cka",
    "language_centered",
    "linear_cka",
    "linear_cka_matrix",
    "max_cutoff",
    "merge_ranked",
    "merge_top_k",
    "order_ranked",
    "minibatch_cka",
    "rank_distance_rows",
    "ranked_list_metrics",
    "ranking_metrics",
    "ranks_of",
    "rbf_cka",
    "relevant_ranks",
    "retrieval_metrics",
    "same_language_share",
    "top_k",
    "top_k_indices",
]
