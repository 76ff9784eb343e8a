"""Evaluators for the sentence-transformers trainer: LAReQA mono / cross / multi retrieval and BEIR data sets.

Both are :class:`~sentence_transformers.evaluation.SentenceEvaluator` subclasses: they encode, call
:func:`~sentence_transformers_hybrid.metrics.ranking_metrics` on score matrices and name the results. They
never parse files (see :mod:`sentence_transformers_hybrid.beir_interop` for loading BEIR folders).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
from tqdm.auto import tqdm

from .data.benchmark import CANDIDATE_WITH_CONTEXT, RetrievalBenchmark
from .metrics import (
    LAREQA_METRICS,
    MIRACL_METRICS,
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

__all__ = ["BEIRRetrievalEvaluator", "MultilingualRetrievalEvaluator", "SETTINGS"]

#: The LAReQA settings, in the order they are reported.
SETTINGS: tuple[str, ...] = ("mono", "cross", "multi")

Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _default_progress(show_progress_bar: bool | None) -> bool:
    if show_progress_bar is None:  # the library's default: on when logging is at INFO or below
        return logger.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
    return bool(show_progress_bar)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float(), dim=-1)
    return a @ b.T


class _QueryDocumentEncoding:
    """What both evaluators share: the encoding settings, encoding queries / documents with them, and their config."""

    _PROMPT_KEYS = ("query_prompt", "query_prompt_name", "corpus_prompt", "corpus_prompt_name", "truncate_dim")

    def _set_encoding(self, batch_size: int, query_prompt: str | None, corpus_prompt: str | None,
                      query_prompt_name: str | None, corpus_prompt_name: str | None,
                      show_progress_bar: bool | None, truncate_dim: int | None, write_csv: bool) -> None:
        self.batch_size = batch_size
        self.query_prompt = query_prompt
        self.corpus_prompt = corpus_prompt
        self.query_prompt_name = query_prompt_name
        self.corpus_prompt_name = corpus_prompt_name
        self.show_progress_bar = _default_progress(show_progress_bar)
        self.truncate_dim = truncate_dim
        self.write_csv = write_csv

    def _encode(self, model: SentenceTransformer, texts: list[str], side: str) -> torch.Tensor:
        """``model.encode_query`` (side "query") or ``model.encode_document`` (side "corpus") with our settings."""
        encode = model.encode_query if side == "query" else model.encode_document
        return encode(
            texts,
            prompt_name=getattr(self, f"{side}_prompt_name"),
            prompt=getattr(self, f"{side}_prompt"),
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
            convert_to_tensor=True,
            truncate_dim=self.truncate_dim,
        )

    def _prompt_config(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._PROMPT_KEYS if getattr(self, key) is not None}


class MultilingualRetrievalEvaluator(_QueryDocumentEncoding, SentenceEvaluator):
    """LAReQA answer retrieval in the mono, cross and multi settings, with the language-bias rank distance.

    For every query language ``X`` and every setting:

    * **mono**: ``X -> X`` (questions of ``X`` against the candidates of ``X``), averaged over ``X``;
    * **cross**: ``X -> Y`` for every ``Y != X``, averaged over all such pairs;
    * **multi**: ``X ->`` the pool of the candidates of *all* evaluated languages (the relevant candidates of a
      question are its answer sentence in every language the question exists in: 11 on XQuAD-R, 2 to 4 on
      MLQA-R), averaged over ``X``.

    Metrics per pair are those of :func:`~sentence_transformers_hybrid.metrics.retrieval_metrics` (``map@20``,
    ``recall@1``, ``recall@10``, ``ndcg@10``, ``mrr@10``, ``rank_distance``), averaged over the pair's queries,
    then macro-averaged over pairs. ``multi_rank_distance`` is the paper's language bias. The result keys are
    ``f"{name}_{setting}_{metric}"``; ``primary_metric`` is ``f"{name}_multi_map@20"``.

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

    Example:
        >>> from sentence_transformers import SentenceTransformer
        >>> from sentence_transformers_hybrid import load_lareqa
        >>> from sentence_transformers_hybrid.evaluation import MultilingualRetrievalEvaluator
        >>> bench = load_lareqa("xquad-r", languages=["de", "en"])        # doctest: +SKIP
        >>> evaluator = MultilingualRetrievalEvaluator(bench)               # doctest: +SKIP
        >>> metrics = evaluator(SentenceTransformer("all-MiniLM-L6-v2"))    # doctest: +SKIP
        >>> evaluator.primary_metric                                        # doctest: +SKIP
        'xquad-r_multi_map@20'
        >>> evaluator.results[0]                                            # doctest: +SKIP
        {'setting': 'mono', 'query_language': 'de', 'corpus_language': 'de', 'queries': 1190, ...}
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
        self._set_encoding(batch_size, query_prompt, corpus_prompt, query_prompt_name, corpus_prompt_name,
                           show_progress_bar, truncate_dim, write_csv)
        self.candidate_context = candidate_context
        self.chunk_size = chunk_size
        self.metrics = LAREQA_METRICS
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
            queries[lang] = self._encode(model, self.query_texts(lang), "query")
            candidates[lang] = self._encode(model, self.candidate_texts(lang), "corpus")
        return queries, candidates

    # ----------------------------------------------------------------------------------------- scoring

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
    ) -> dict[str, float]:
        """All settings from precomputed embeddings (one ``[n x dim]`` array per language, in benchmark order).

        Fills :attr:`results` (one row per language pair) and returns the macro-averages as
        ``{f"{setting}_{metric}": value}`` (without the name prefix). ``similarity`` defaults to cosine.
        """
        similarity = similarity or _cosine
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
        pool = torch.cat([c_emb[lang] for lang in self.languages])
        offsets = np.cumsum([0] + [len(c_emb[lang]) for lang in self.languages])
        span = {lang: (int(offsets[i]), int(offsets[i + 1])) for i, lang in enumerate(self.languages)}

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
            k = max_cutoff(self.metrics)
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
                if len(query_rows) == 0:
                    logger.warning(f"{self.name}: no question of {x!r} has an answer in {row['corpus_language']!r}")
                    row.update({m: float("nan") for m in self.metrics})
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
                rows.append(row)
        self.results = rows

        summary: dict[str, float] = {}
        for setting in self.settings:
            table = [r for r in rows if r["setting"] == setting and r["queries"] > 0]
            for m in self.metrics:
                summary[f"{setting}_{m}"] = float(np.mean([r[m] for r in table])) if table else float("nan")
        return summary

    def pair_matrix(self, metric: str = "map@20") -> tuple[list[str], np.ndarray]:
        """``(languages, M)`` with ``M[i, j]`` the metric of queries ``i`` -> candidates ``j`` (mono on the
        diagonal, cross elsewhere; NaN where not evaluated), from the last call. For heatmaps."""
        index = {lang: i for i, lang in enumerate(self.languages)}
        mat = np.full((len(self.languages), len(self.languages)), np.nan)
        for r in self.results:
            if r["setting"] in ("mono", "cross"):
                mat[index[r["query_language"]], index[r["corpus_language"]]] = r[metric]
        return list(self.languages), mat

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
        logger.info(f"Multilingual retrieval evaluation of the model on {self.name} ({', '.join(self.languages)}){out_txt}:")
        queries, candidates = self.encode(model)
        summary = self.compute_metrics_from_embeddings(queries, candidates, similarity=model.similarity)
        for setting in self.settings:
            logger.info(
                f"  {setting:5s}  "
                + "  ".join(f"{m}: {summary[f'{setting}_{m}']:.4f}" for m in self.metrics)
            )
        if output_path is not None and self.write_csv:
            self.write_results(output_path, summary, epoch, steps)
        metrics = self.prefix_name_to_metrics(summary, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def write_results(self, output_path: str, summary: dict[str, float], epoch: int = -1, steps: int = -1) -> None:
        """Append the per-pair rows of the last run to the CSV and ``summary`` to the JSON in ``output_path``."""
        os.makedirs(output_path, exist_ok=True)
        csv_path = os.path.join(output_path, self.csv_file)
        header = ["epoch", "steps", "setting", "query_language", "corpus_language", "queries", "candidates"]
        header += list(self.metrics)
        new = not os.path.isfile(csv_path)
        with open(csv_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(header)
            for r in self.results:
                writer.writerow([epoch, steps] + [r[h] for h in header[2:]])
        json_path = os.path.join(output_path, self.json_file)
        history = []
        if os.path.isfile(json_path):
            with open(json_path, encoding="utf-8") as f:
                history = json.load(f)
        history.append(
            {
                "epoch": epoch,
                "steps": steps,
                "name": self.name,
                "languages": list(self.languages),
                "candidate_context": self.candidate_context,
                "candidate_text": CANDIDATE_WITH_CONTEXT if self.candidate_context else "{sentence}",
                "metrics": summary,
            }
        )
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(history, f, indent=2)

    def get_config_dict(self) -> dict[str, Any]:
        return {"languages": list(self.languages), "candidate_context": self.candidate_context, **self._prompt_config()}


class BEIRRetrievalEvaluator(_QueryDocumentEncoding, SentenceEvaluator):
    """Retrieval on a BEIR-format data set (e.g. a MIRACL language): nDCG@10 and Recall@100 by default.

    Takes BEIR's dicts as they are: ``corpus[doc_id] = {"title": ..., "text": ...}`` (or a plain string),
    ``queries[qid] = text``, ``qrels[qid] = {doc_id: grade}``; a document is relevant when its grade is > 0
    (gains are binary: MIRACL's qrels are 0/1). Queries without a relevant document are left out, as BEIR
    and the library's ``InformationRetrievalEvaluator`` do. A document is encoded as
    ``(title + " " + text).strip()``, as the library's evaluator does. The whole corpus is scored exactly
    (no approximate search), in chunks of queries; metrics follow :mod:`sentence_transformers_hybrid.metrics`
    (ties broken by the corpus order).

    Args:
        corpus: ``{doc_id: {"title", "text"} | str}``.
        queries: ``{qid: text}``.
        qrels: ``{qid: {doc_id: grade}}``; every judged ``doc_id`` must be in the corpus.
        name: prefix of the result keys (``f"{name}_{metric}"``).
        metrics: metric names for :func:`~sentence_transformers_hybrid.metrics.ranking_metrics`; the first is
            the ``primary_metric``.
        batch_size, query_prompt, corpus_prompt, query_prompt_name, corpus_prompt_name, show_progress_bar,
            truncate_dim, write_csv: as in the library's ``InformationRetrievalEvaluator``.
        query_chunk_size: queries scored against the whole corpus at a time.

    Example:
        >>> from sentence_transformers_hybrid.beir_interop import load_beir_folder
        >>> corpus, queries, qrels = load_beir_folder("miracl-sw", split="dev")        # doctest: +SKIP
        >>> evaluator = BEIRRetrievalEvaluator(corpus, queries, qrels, name="miracl-sw")  # doctest: +SKIP
        >>> evaluator(model)                                                             # doctest: +SKIP
        {'miracl-sw_ndcg@10': 0.41..., 'miracl-sw_recall@100': 0.78...}
    """

    def __init__(
        self,
        corpus: Mapping[str, Any],
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        name: str = "",
        metrics: Sequence[str] = MIRACL_METRICS,
        batch_size: int = 32,
        query_prompt: str | None = None,
        corpus_prompt: str | None = None,
        show_progress_bar: bool | None = None,
        *,
        query_prompt_name: str | None = None,
        corpus_prompt_name: str | None = None,
        truncate_dim: int | None = None,
        write_csv: bool = True,
        query_chunk_size: int = 1024,
    ) -> None:
        super().__init__()
        from .beir_interop import relevance_from_qrels

        self.metrics = tuple(metrics)
        max_cutoff(self.metrics)  # validates the names
        self.doc_ids = list(corpus)
        self.corpus = [_doc_text(corpus[d], d) for d in self.doc_ids]
        judged = [q for q in queries if any(g > 0 for g in qrels.get(q, {}).values())]
        skipped = len(queries) - len(judged)
        if skipped:
            logger.info(f"{name or 'BEIR'}: {skipped} of {len(queries)} queries have no relevant document; left out")
        if not judged:
            raise ValueError(f"{name or 'BEIR'}: no query has a relevant document in qrels")
        self.query_ids = judged
        self.queries = [queries[q] for q in judged]
        self.relevance_matrix = relevance_from_qrels(qrels, self.query_ids, self.doc_ids)
        self.name = name
        self._set_encoding(batch_size, query_prompt, corpus_prompt, query_prompt_name, corpus_prompt_name,
                           show_progress_bar, truncate_dim, write_csv)
        self.query_chunk_size = query_chunk_size
        self.primary_metric = self.metrics[0]
        self.csv_file = "BEIR-Retrieval_evaluation" + (f"_{name}" if name else "") + "_results.csv"

    def compute_metrics_from_embeddings(
        self, query_embeddings: Any, corpus_embeddings: Any, similarity: Similarity | None = None
    ) -> dict[str, float]:
        """The metrics (without the name prefix) from ``[queries x dim]`` and ``[corpus x dim]`` embeddings."""
        similarity = similarity or _cosine
        q, c = torch.as_tensor(query_embeddings), torch.as_tensor(corpus_embeddings)
        if q.shape[0] != len(self.query_ids) or c.shape[0] != len(self.doc_ids):
            raise ValueError(
                f"{self.name or 'BEIR'}: embeddings for {q.shape[0]} queries and {c.shape[0]} documents, "
                f"expected {len(self.query_ids)} and {len(self.doc_ids)}"
            )
        parts: dict[str, list[np.ndarray]] = {m: [] for m in self.metrics}
        for start in range(0, q.shape[0], self.query_chunk_size):
            stop = min(start + self.query_chunk_size, q.shape[0])
            per_query = ranking_metrics(
                similarity(q[start:stop], c), self.relevance_matrix[start:stop], self.metrics, reduction="none"
            )
            for m, v in per_query.items():
                parts[m].append(v)
        return {m: float(np.concatenate(v).mean()) for m, v in parts.items()}

    def __call__(
        self,
        model: SentenceTransformer,
        output_path: str | None = None,
        epoch: int = -1,
        steps: int = -1,
        *args: Any,
        **kwargs: Any,
    ) -> dict[str, float]:
        logger.info(f"BEIR retrieval evaluation on {self.name or 'the data set'}: {len(self.queries)} queries, "
                    f"{len(self.corpus)} documents")
        q = self._encode(model, self.queries, "query")
        c = self._encode(model, self.corpus, "corpus")
        summary = self.compute_metrics_from_embeddings(q, c, similarity=model.similarity)
        logger.info("  " + "  ".join(f"{m}: {v:.4f}" for m, v in summary.items()))
        if output_path is not None and self.write_csv:
            os.makedirs(output_path, exist_ok=True)
            path = os.path.join(output_path, self.csv_file)
            new = not os.path.isfile(path)
            with open(path, "a", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(["epoch", "steps", *self.metrics])
                writer.writerow([epoch, steps, *(summary[m] for m in self.metrics)])
        metrics = self.prefix_name_to_metrics(summary, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    @classmethod
    def from_folder(cls, data_folder: str, split: str = "test", **kwargs: Any) -> BEIRRetrievalEvaluator:
        """Load a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``) with BEIR's loader."""
        from .beir_interop import load_beir_folder

        corpus, queries, qrels = load_beir_folder(data_folder, split=split)
        kwargs.setdefault("name", os.path.basename(os.path.normpath(data_folder)))
        return cls(corpus, queries, qrels, **kwargs)

    def get_config_dict(self) -> dict[str, Any]:
        return self._prompt_config()


def _doc_text(doc: Any, doc_id: str) -> str:
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Mapping) and "text" in doc:
        return (str(doc.get("title") or "") + " " + str(doc["text"])).strip()
    raise ValueError(f"corpus[{doc_id!r}] must be a string or a dict with 'text' (and 'title'), got {doc!r:.80}")
