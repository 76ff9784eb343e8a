"""Evaluators for the sentence-transformers trainer: LAReQA mono / cross / multi retrieval and BEIR data sets.

Both are :class:`~sentence_transformers.sentence_transformer.evaluation.SentenceEvaluator` subclasses: they
encode, call :func:`~sentence_transformers_hybrid.metrics.ranking_metrics` on score matrices and name the results.
They never parse files (see :mod:`sentence_transformers_hybrid.evaluation.beir` for loading BEIR folders).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
from tqdm.auto import tqdm

from .._utils import append_csv_rows, append_json_history
from .encoding import QueryDocumentEncoding, Similarity, cosine_scores

from ..data.benchmark import CANDIDATE_WITH_CONTEXT, RetrievalBenchmark
from ..metrics.bias import language_centered, same_language_share
from ..metrics.retrieval import (
    LAREQA_METRICS,
    check_finite_scores,
    max_cutoff,
    merge_top_k,
    ranking_metrics,
    top_k_indices,
)

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

__all__ = [
    "EVALUATOR_METRICS", "MULTI_METRICS", "MultilingualRetrievalEvaluator", "SETTINGS", "pair_matrix",
    "setting_metrics",
]

#: The LAReQA settings, in the order they are reported.
SETTINGS: tuple[str, ...] = ("mono", "cross", "multi")
#: The metrics of every setting: LAReQA's six and ``map``, mean average precision over the full ranking.
EVALUATOR_METRICS: tuple[str, ...] = (*LAREQA_METRICS, "map")
#: The metrics of the multi setting only: the share of a query's 20 best candidates in its own language.
MULTI_METRICS: tuple[str, ...] = ("same_language@20",)


def setting_metrics(setting: str) -> tuple[str, ...]:
    """The metric names the evaluator reports for ``setting`` (``f"{name}_{setting}_{metric}"``).

    Example:
        >>> setting_metrics("multi")[-2:]
        ('map', 'same_language@20')
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    return EVALUATOR_METRICS + (MULTI_METRICS if setting == "multi" else ())



def pair_matrix(
    rows: Sequence[Mapping[str, Any]],
    metric: str = "map@20",
    *,
    languages: Sequence[str] | None = None,
    multilingual: bool = True,
) -> tuple[list[str], list[str], np.ndarray]:
    """The evaluator's per-pair rows (``MultilingualRetrievalEvaluator.results``, a run record's ``pairs``) laid out
    as ``(query languages, candidate pools, M)``, ``M[i, j]`` the ``metric`` of queries ``i`` against pool ``j``.

    Rows and pools are ``languages`` (default: the languages the rows name, sorted); with ``multilingual`` the
    multilingual pool (``corpus_language == "all"``) is the last column when the rows have it. NaN where no row.

    Example:
        >>> rows = [{"query_language": "de", "corpus_language": "de", "map@20": 0.5},
        ...         {"query_language": "de", "corpus_language": "en", "map@20": 0.25},
        ...         {"query_language": "de", "corpus_language": "all", "map@20": 0.75}]
        >>> queries, pools, m = pair_matrix(rows)
        >>> queries, pools, m.tolist()
        (['de'], ['de', 'en', 'all'], [[0.5, 0.25, 0.75]])
    """
    pooled = [r for r in rows if r["corpus_language"] != "all"]
    queries = list(languages) if languages is not None else sorted({r["query_language"] for r in rows})
    pools = list(languages) if languages is not None else sorted({r["corpus_language"] for r in pooled})
    if multilingual and len(pooled) < len(rows):
        pools.append("all")
    q_index = {lang: i for i, lang in enumerate(queries)}
    p_index = {lang: j for j, lang in enumerate(pools)}
    mat = np.full((len(queries), len(pools)), np.nan)
    for r in rows if multilingual else pooled:
        mat[q_index[r["query_language"]], p_index[r["corpus_language"]]] = r[metric]
    return queries, pools, mat


class MultilingualRetrievalEvaluator(QueryDocumentEncoding, SentenceEvaluator):
    """LAReQA answer retrieval in the mono, cross and multi settings, with the language-bias rank distance.

    For every query language ``X`` and every setting:

    * **mono**: ``X -> X`` (questions of ``X`` against the candidates of ``X``), averaged over ``X``;
    * **cross**: ``X -> Y`` for every ``Y != X``, averaged over all such pairs;
    * **multi**: ``X ->`` the pool of the candidates of *all* evaluated languages (the relevant candidates of a
      question are its answer sentence in every language the question exists in: 11 on XQuAD-R, 2 to 4 on
      MLQA-R), averaged over ``X``.

    Metrics per pair are those of :func:`~sentence_transformers_hybrid.metrics.retrieval_metrics` (``map@20``,
    ``recall@1``, ``recall@10``, ``ndcg@10``, ``mrr@10``, ``rank_distance``) and ``map`` (mean average precision
    over the full ranking), averaged over the pair's queries, then macro-averaged over pairs. The multi setting also
    has ``same_language@20``: per query, the share of its 20 best candidates in the pool that are in the query's own
    language. ``multi_rank_distance`` is the paper's language bias. The result keys are
    ``f"{name}_{setting}_{metric}"`` (see :func:`setting_metrics`); ``primary_metric`` is
    ``f"{name}_multi_map@20"``. :attr:`results` has one row per language pair, the multi rows one per query
    language.

    **The centering control.** With ``center_languages=True`` every embedding has the mean embedding of its
    language and side removed before scoring (a question: the mean of that language's questions; a candidate: the
    mean of that language's candidates; embeddings normalised to unit length first, re-normalised after; see
    :func:`~sentence_transformers_hybrid.metrics.language_centered`): a free post-hoc baseline against language
    bias, with the same keys. To get both from one encoding, call :meth:`encode` once and
    :meth:`compute_metrics_from_embeddings` twice, with ``center_languages=False`` and ``True``.

    Each language's questions and candidates are encoded once and reused for every pair: the multi score matrix
    of a query language holds every mono and cross block of it.

    **Text encoded.** A question is its text (``query_prompt`` / ``query_prompt_name`` applied by
    ``model.encode_query``). A candidate is, by default, the answer sentence followed by a newline and its whole
    paragraph, ``f"{sentence}\\n{paragraph}"`` (:data:`~sentence_transformers_hybrid.CANDIDATE_WITH_CONTEXT`, as
    LAReQA encodes the sentence with its context), or the sentence alone with ``candidate_context=False``;
    ``corpus_prompt`` / ``corpus_prompt_name`` are applied by ``model.encode_document``.

    Args:
        benchmark: a :class:`~sentence_transformers_hybrid.RetrievalBenchmark` (e.g. ``load_lareqa("xquad-r")``).
        name: prefix of the result keys; default ``benchmark.name``.
        settings: a subset of ``("mono", "cross", "multi")``.
        languages: the languages evaluated (queries and pool); default all of the benchmark's.
        batch_size: encoding batch size.
        query_prompt: prompt prepended to questions (e.g. ``"query: "``).
        corpus_prompt: prompt prepended to candidates (e.g. ``"passage: "``).
        show_progress_bar: progress bars; default on when logging is at INFO or below (like the library).
        query_prompt_name: name of a prompt of the model for the questions (instead of ``query_prompt``).
        corpus_prompt_name: name of a prompt of the model for the candidates.
        candidate_context: encode candidates with their paragraph (default) or the sentence alone.
        truncate_dim: truncate embeddings to this dimension (Matryoshka models).
        write_csv: with ``output_path``, write the per-pair CSV and the summary JSON.
        chunk_size: queries per chunk of the metric kernel (default: the kernel's).
        center_languages: score language-centered embeddings (the post-hoc control above).

    Example:
        >>> from sentence_transformers_hybrid import load_lareqa
        >>> from sentence_transformers_hybrid.evaluation import MultilingualRetrievalEvaluator
        >>> from sentence_transformers_hybrid.testing import tiny_static_model
        >>> bench = load_lareqa("xquad-r", languages=["de", "en"])          # data from $STH_DATA_DIR
        >>> evaluator = MultilingualRetrievalEvaluator(bench)
        >>> # any SentenceTransformer, e.g. SentenceTransformer("all-MiniLM-L6-v2"); here a tiny offline one
        >>> model = tiny_static_model(bench.splits["de"].questions + bench.splits["en"].questions, dim=16)
        >>> metrics = evaluator(model)
        >>> evaluator.primary_metric
        'xquad-r_multi_map@20'
        >>> evaluator.results[0]
        {'setting': 'multi', 'query_language': 'de', 'corpus_language': 'all', 'queries': 1190, 'candidates': 2456, ...}
    """

    def __init__(
        self,
        benchmark: RetrievalBenchmark,
        name: str | None = None,
        settings: Sequence[str] = SETTINGS,
        languages: Sequence[str] | None = None,
        batch_size: int = 32,
        query_prompt: str | None = None,
        corpus_prompt: str | None = None,
        show_progress_bar: bool | None = None,
        *,
        query_prompt_name: str | None = None,
        corpus_prompt_name: str | None = None,
        candidate_context: bool = True,
        truncate_dim: int | None = None,
        write_csv: bool = True,
        chunk_size: int | None = None,
        center_languages: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(benchmark, RetrievalBenchmark):
            raise ValueError(f"benchmark must be a RetrievalBenchmark, got {type(benchmark).__name__}")
        settings = (settings,) if isinstance(settings, str) else tuple(settings)
        unknown = [s for s in settings if s not in SETTINGS]
        if unknown or not settings or len(set(settings)) != len(settings):
            raise ValueError(f"settings must be distinct values among {SETTINGS}, got {list(settings)}")
        self.settings = tuple(s for s in SETTINGS if s in settings)
        if languages is None:
            languages = benchmark.languages
        languages = sorted(set(languages))
        missing = [lang for lang in languages if lang not in benchmark.splits]
        if missing or not languages:
            raise ValueError(f"{benchmark.name}: languages {missing or languages} not in {benchmark.languages}")
        if "cross" in self.settings and len(languages) < 2:
            raise ValueError(f"the cross setting needs at least two languages, got {languages}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.benchmark = benchmark
        self.name = benchmark.name if name is None else name
        self.languages = languages
        self.set_encoding(batch_size, query_prompt, corpus_prompt, query_prompt_name, corpus_prompt_name,
                           show_progress_bar, truncate_dim, write_csv)
        self.candidate_context = candidate_context
        self.chunk_size = chunk_size
        self.metrics = EVALUATOR_METRICS
        self.multi_metrics = MULTI_METRICS
        self.center_languages = bool(center_languages)
        main = "multi" if "multi" in self.settings else self.settings[0]
        self.primary_metric = f"{main}_map@20"
        self.results: list[dict[str, Any]] = []
        self._relevance: dict[tuple[str, str | None], tuple[np.ndarray, sp.csr_matrix]] = {}
        file_name = "MultilingualRetrieval_evaluation" + (f"_{self.name}" if self.name else "")
        self.csv_file = file_name + "_pairs.csv"
        self.json_file = file_name + "_summary.json"

    # ------------------------------------------------------------------------------------------ texts

    def query_texts(self, language: str) -> list[str]:
        """The questions of ``language``, as encoded (without the prompt, which the model adds)."""
        return list(self.benchmark.splits[language].questions)

    def candidate_texts(self, language: str) -> list[str]:
        """The candidates of ``language``, as encoded: sentence + newline + paragraph, or the sentence alone."""
        return self.benchmark.splits[language].candidate_texts(with_context=self.candidate_context)

    def encode(self, model: SentenceTransformer) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(query_embeddings, candidate_embeddings)``: one tensor per language, each text encoded once."""
        queries, candidates = {}, {}
        for lang in self.languages:
            queries[lang] = self.encode_texts(model, self.query_texts(lang), "query")
            candidates[lang] = self.encode_texts(model, self.candidate_texts(lang), "corpus")
        return queries, candidates

    # ----------------------------------------------------------------------------------------- scoring

    def setting_metrics(self, setting: str) -> tuple[str, ...]:
        """The metrics this evaluator reports for ``setting``: :attr:`metrics`, plus :attr:`multi_metrics` in multi."""
        return tuple(self.metrics) + (tuple(self.multi_metrics) if setting == "multi" else ())

    def relevance(self, query_language: str, corpus_language: str | None) -> tuple[np.ndarray, sp.csr_matrix]:
        """``(query_rows, rel)`` of a pair (``corpus_language=None``: the pool of all evaluated languages)."""
        key = (query_language, corpus_language)
        if key not in self._relevance:
            pool = self.languages if corpus_language is None else corpus_language
            self._relevance[key] = self.benchmark.relevance(query_language, pool)
        return self._relevance[key]

    def compute_metrics_from_embeddings(
        self,
        query_embeddings: Mapping[str, Any],
        candidate_embeddings: Mapping[str, Any],
        similarity: Similarity | None = None,
        *,
        center_languages: bool | None = None,
    ) -> dict[str, float]:
        """All settings from precomputed embeddings (one ``[n x dim]`` array per language, in benchmark order).

        Fills :attr:`results` (one row per language pair) and returns the macro-averages as
        ``{f"{setting}_{metric}": value}`` (without the name prefix). ``similarity`` defaults to cosine.
        ``center_languages`` (default: the evaluator's) scores the language-centered embeddings instead, so one
        encoding serves both the plain and the centered figures::

            queries, candidates = evaluator.encode(model)
            plain = evaluator.compute_metrics_from_embeddings(queries, candidates, model.similarity)
            centered = evaluator.compute_metrics_from_embeddings(queries, candidates, model.similarity,
                                                                 center_languages=True)
        """
        similarity = similarity or cosine_scores
        center = self.center_languages if center_languages is None else bool(center_languages)
        q_emb, c_emb = {}, {}
        for lang in self.languages:
            split = self.benchmark.splits[lang]
            for emb, store, n, what in (
                (query_embeddings, q_emb, len(split.questions), "questions"),
                (candidate_embeddings, c_emb, len(split.sentences), "candidates"),
            ):
                if lang not in emb:
                    raise ValueError(f"{self.name}: no {what} embeddings for language {lang!r}")
                t = torch.as_tensor(emb[lang])
                if t.ndim != 2 or t.shape[0] != n:
                    raise ValueError(
                        f"{self.name}: {what} embeddings of language {lang!r} have shape {tuple(t.shape)}, "
                        f"expected ({n}, dim)"
                    )
                store[lang] = t
        if center:
            try:
                q_emb = language_centered(q_emb, side="questions")
                c_emb = language_centered(c_emb, side="candidates")
            except ValueError as err:
                raise ValueError(f"{self.name}: center_languages: {err}") from None
        pool = torch.cat([c_emb[lang] for lang in self.languages])
        offsets = np.cumsum([0] + [len(c_emb[lang]) for lang in self.languages])
        span = {lang: (int(offsets[i]), int(offsets[i + 1])) for i, lang in enumerate(self.languages)}
        pool_language = torch.from_numpy(np.repeat(np.arange(len(self.languages)), np.diff(offsets)))
        share_k = int(MULTI_METRICS[0].split("@")[1])

        rows: list[dict[str, Any]] = []
        bar = tqdm(self.languages, desc=f"{self.name}: scoring", disable=not self.show_progress_bar)
        for x in bar:
            pairs = []
            if "multi" in self.settings:
                pairs.append(("multi", None))
            for y in self.languages:
                if (x == y and "mono" in self.settings) or (x != y and "cross" in self.settings):
                    pairs.append(("mono" if x == y else "cross", y))
            if "multi" in self.settings or "cross" in self.settings:
                scores = similarity(q_emb[x], pool)  # [Q_x x pool]: every block of this query language
                block = {y: scores[:, a:b] for y, (a, b) in span.items()}
            else:
                a, b = span[x]
                scores = similarity(q_emb[x], pool[a:b])
                block = {x: scores}
            try:  # checked once here rather than once per pair
                check_finite_scores(scores)
            except ValueError as err:
                raise ValueError(f"{self.name}: query language {x!r}: {err}") from None
            # the first k candidates of every block, once for all rows; the multi top k is their merge
            k = max(max_cutoff(self.metrics), share_k if "multi" in self.settings else 0)
            tops = {y: top_k_indices(s, k) for y, s in block.items()} if k else {}
            if k and "multi" in self.settings:
                cand = torch.cat([tops[y] + span[y][0] for y in self.languages], 1)
                tops[None] = merge_top_k(scores, cand, min(k, scores.shape[1]))
            for setting, y in pairs:
                query_rows, rel = self.relevance(x, y)
                row = {
                    "setting": setting,
                    "query_language": x,
                    "corpus_language": y if y is not None else "all",
                    "queries": len(query_rows),
                    "candidates": rel.shape[1],
                }
                names = self.setting_metrics(setting)
                if len(query_rows) == 0:
                    logger.warning(f"{self.name}: no question of {x!r} has an answer in {row['corpus_language']!r}")
                    row.update({m: float("nan") for m in names})
                else:
                    s = scores if y is None else block[y]
                    top = tops.get(y)
                    if len(query_rows) != s.shape[0]:
                        index = torch.as_tensor(query_rows, device=s.device)
                        s = s.index_select(0, index)
                        top = None if top is None else top.index_select(0, index.to(top.device))
                    row.update(
                        ranking_metrics(
                            s, rel, self.metrics, chunk_size=self.chunk_size, check_finite=False, top_indices=top
                        )
                    )
                    if setting == "multi" and MULTI_METRICS[0] in self.multi_metrics:
                        code = self.languages.index(x)
                        share = same_language_share(top, pool_language.to(top.device), code, k=share_k)
                        row[MULTI_METRICS[0]] = float(share.mean(dtype=torch.float64))
                rows.append(row)
        self.results = rows

        summary: dict[str, float] = {}
        for setting in self.settings:
            table = [r for r in rows if r["setting"] == setting and r["queries"] > 0]
            for m in self.setting_metrics(setting):
                summary[f"{setting}_{m}"] = float(np.mean([r[m] for r in table])) if table else float("nan")
        return summary

    def pair_matrix(self, metric: str = "map@20") -> tuple[list[str], np.ndarray]:
        """``(languages, M)`` with ``M[i, j]`` the metric of queries ``i`` -> candidates ``j`` (mono on the
        diagonal, cross elsewhere; NaN where not evaluated), from the last call. For heatmaps; the module's
        :func:`pair_matrix` on :attr:`results`, without the multilingual pool."""
        languages, _, mat = pair_matrix(self.results, metric, languages=self.languages, multilingual=False)
        return languages, mat

    # ------------------------------------------------------------------------------------------- call

    def __call__(
        self,
        model: SentenceTransformer,
        output_path: str | None = None,
        epoch: int = -1,
        steps: int = -1,
        *args: Any,
        **kwargs: Any,
    ) -> dict[str, float]:
        if epoch != -1:
            out_txt = f" after epoch {epoch}" if steps == -1 else f" in epoch {epoch} after {steps} steps"
        else:
            out_txt = ""
        centered = " (language-centered embeddings)" if self.center_languages else ""
        logger.info(
            f"Multilingual retrieval evaluation of the model on {self.name} ({', '.join(self.languages)}){out_txt}"
            f"{centered}:"
        )
        queries, candidates = self.encode(model)
        summary = self.compute_metrics_from_embeddings(queries, candidates, similarity=model.similarity)
        for setting in self.settings:
            logger.info(
                f"  {setting:5s}  "
                + "  ".join(f"{m}: {summary[f'{setting}_{m}']:.4f}" for m in self.setting_metrics(setting))
            )
        if output_path is not None and self.write_csv:
            self.write_results(output_path, summary, epoch, steps)
        metrics = self.prefix_name_to_metrics(summary, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def write_results(self, output_path: str, summary: dict[str, float], epoch: int = -1, steps: int = -1) -> None:
        """Append the per-pair rows of the last run to the CSV and ``summary`` to the JSON in ``output_path``.

        Both files are rewritten atomically (a crash leaves the previous version); a damaged one is moved aside
        as ``*.corrupt`` with a warning, and a CSV whose columns differ from the current metrics is rewritten with
        the union of the columns (see :func:`~sentence_transformers_hybrid._utils.append_csv_rows`).
        """
        os.makedirs(output_path, exist_ok=True)
        header = ["epoch", "steps", "setting", "query_language", "corpus_language", "queries", "candidates"]
        header += list(self.metrics) + (list(self.multi_metrics) if "multi" in self.settings else [])
        rows = [{"epoch": epoch, "steps": steps, **{h: r.get(h, "") for h in header[2:]}} for r in self.results]
        append_csv_rows(os.path.join(output_path, self.csv_file), header, rows)
        append_json_history(
            os.path.join(output_path, self.json_file),
            {
                "epoch": epoch,
                "steps": steps,
                "name": self.name,
                "languages": list(self.languages),
                "candidate_context": self.candidate_context,
                "candidate_text": CANDIDATE_WITH_CONTEXT if self.candidate_context else "{sentence}",
                "center_languages": self.center_languages,
                "metrics": summary,
            },
        )

    def get_config_dict(self) -> dict[str, Any]:
        config = {"languages": list(self.languages), "candidate_context": self.candidate_context, **self.prompt_config()}
        if self.center_languages:
            config["center_languages"] = True
        return config
