"""MIRACL-style evaluation on the corpus engine: encode to disk in shards, exact top-k search, official scoring.

* :func:`evaluate_language`: one corpus + topics + qrels -> a run and its trec_eval scores (the one code path);
* :func:`evaluate_miracl`: every language of a MIRACL folder, in one process, under ``torchrun`` (ranks encode
  their shards, rank 0 searches and scores) or as independent shard jobs; writes ``metrics.json``,
  ``runs/{lang}.trec`` and ``results.md``;
* :class:`MIRACLEvaluator`: the same path as a ``SentenceEvaluator`` for a trainer (small corpora).

Example:
    >>> import tempfile
    >>> from sentence_transformers_hybrid.data.miracl import write_miracl_layout
    >>> from sentence_transformers_hybrid.testing import tiny_static_model
    >>> passages = [{"docid": f"d{i}", "title": "", "text": f"passage {i} on topic {i % 3}"} for i in range(12)]
    >>> root = write_miracl_layout(tempfile.mkdtemp(), "sw", {"q1": "topic 1"}, {"q1": {"d1": 1, "d2": 0}}, passages)
    >>> model = tiny_static_model([p["text"] for p in passages], dim=16)
    >>> out = evaluate_miracl(model, ["sw"], root, tempfile.mkdtemp(), shard_size=5, show_progress_bar=False)
    >>> sorted(out["languages"]["sw"]), out["languages"]["sw"]["passages"]
    (['judged_queries', 'ndcg@10', 'passages', 'queries', 'recall@100'], 12)
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from .._utils import append_csv_rows, atomic_write_json, atomic_write_text, default_progress
from ..data.miracl import MiraclData, check_qrels_docids, load_miracl
from ..data.passages import PassageSource
from ..index import (
    APPROXIMATE_BACKENDS,
    BACKENDS,
    CorpusIndex,
    barrier,
    check_unique_docids,
    dist_context,
    encode_corpus,
    init_distributed,
    model_fingerprint,
    rank_device,
    resolve_prompt,
    search,
    write_trec_run,
)
from ..metrics.ranking import TIE_RULE
from ..metrics.trec import MIRACL_MEASURES, mean_over_queries, trec_eval

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

__all__ = ["MIRACLEvaluator", "evaluate_language", "evaluate_miracl"]

METRICS = tuple(MIRACL_MEASURES)


def _normalized(model: Any) -> bool:
    return getattr(model, "similarity_fn_name", "cosine") in (None, "cosine")


def evaluate_language(
    model: SentenceTransformer,
    data: MiraclData,
    index: CorpusIndex,
    *,
    top_k: int = 100,
    backend: str = "exact",
    batch_size: int = 32,
    query_prompt: str | None = None,
    query_prompt_name: str | None = None,
    chunk_size: int = 50_000,
    run_path: str | os.PathLike | None = None,
    run_tag: str = "st-hybrid",
    show_progress_bar: bool = False,
) -> dict[str, Any]:
    """Search ``data``'s topics in ``index`` and score the run with trec_eval (``-c -M 100``).

    Checks first that every qrels docid is in the corpus (naming the first missing one). Returns
    ``{"ndcg@10", "recall@100", "queries", "judged_queries", "passages", "run"}`` (``run``: ``{qid: {docid: score}}``);
    writes the TREC run to ``run_path`` when given.
    """
    check_qrels_docids(data.qrels, index.docid_bytes(), language=data.language)
    qids = list(data.queries)
    device = str(next(model.parameters()).device) if any(True for _ in model.parameters()) else None
    q_emb = model.encode_query([data.queries[q] for q in qids], prompt=query_prompt, prompt_name=query_prompt_name,
                               batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=_normalized(model),
                               show_progress_bar=show_progress_bar)
    result = search(q_emb, index, top_k, chunk_size=chunk_size, backend=backend,
                    device=device if backend == "exact" else None, show_progress_bar=show_progress_bar)
    if run_path is not None:
        write_trec_run(run_path, qids, result, run_tag)
    run = result.to_run(qids)
    per_query = trec_eval(data.qrels, run, tuple(MIRACL_MEASURES.values()), depth=100, complete=True)
    scores = {name: mean_over_queries(per_query, m) for name, m in MIRACL_MEASURES.items()}
    return {**scores, "queries": len(qids), "judged_queries": len(data.judged_queries), "passages": len(index),
            "approximate": result.approximate, "run": run}


def evaluate_miracl(
    model: SentenceTransformer,
    languages: Sequence[str],
    data_dir: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    *,
    split: str = "dev",
    top_k: int = 100,
    batch_size: int = 32,
    shard_size: int = 100_000,
    encode_dtype: str = "float16",
    index: str = "exact",
    shard_id: int | None = None,
    num_shards: int | None = None,
    overwrite: bool = False,
    query_prompt: str | None = None,
    query_prompt_name: str | None = None,
    corpus_prompt: str | None = None,
    corpus_prompt_name: str | None = None,
    chunk_size: int = 50_000,
    model_name: str | None = None,
    show_progress_bar: bool | None = None,
    pack_tokens: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on MIRACL ``languages`` (``split``) from ``data_dir`` (``None``: the Hub), into
    ``output_dir``.

    Writes ``index/{lang}/`` (the encoded corpus: shards + manifests; resumable), ``runs/{lang}.trec`` (``top_k``
    hits a query), ``metrics.json`` = ``{"languages": {lang: {"ndcg@10", "recall@100", "queries",
    "judged_queries", "passages"}}, "macro": {"ndcg@10", "recall@100"}, "model": ..., "index": ...}`` and
    ``results.md``.

    * Under ``torchrun`` every rank encodes its shards on its own device (CUDA when there, else CPU with gloo);
      after a barrier rank 0 searches and scores; the other ranks return ``{}``.
    * With ``shard_id`` / ``num_shards`` only those shards are encoded and nothing is scored (returns
      ``{"shards_done": {lang: [...]}}``); a final call without them encodes what is left, searches and scores.

    Args:
        index: search backend: ``exact`` (default), ``faiss`` (flat, exact), ``faiss-hnsw`` / ``faiss-ivfpq``
            (approximate: said in ``metrics.json``, the run tags and ``results.md``).
        encode_dtype: storage dtype of the corpus embeddings (``float16`` default, ``float32``, ``bfloat16``).
        overwrite: replace an index of another model / prompt / dtype in ``output_dir`` instead of refusing.
        model_name: how ``metrics.json`` names the model (default: the model's own name or path).
        pack_tokens: encode the corpus packed (no padding outside attention; BERT / RoBERTa / XLM-R encoders;
            see :func:`~sentence_transformers_hybrid.index.encode_corpus`); said in ``metrics.json``'s ``index``.
    """
    if index not in BACKENDS:
        raise ValueError(f"index must be one of {', '.join(BACKENDS)}, got {index!r}")
    if not languages:
        raise ValueError("languages is empty")
    distributed = init_distributed() and num_shards is None
    if distributed:
        model.to(rank_device())
    rank, world = dist_context()
    progress = default_progress(show_progress_bar, logger)
    out = Path(output_dir)
    datas = {lang: load_miracl(lang, split, data_dir) for lang in languages}  # bad folders fail before encoding

    indexes: dict[str, CorpusIndex] = {}
    for lang, data in datas.items():
        indexes[lang] = encode_corpus(model, data.corpus, out / "index" / lang, prompt=corpus_prompt,
                                      prompt_name=corpus_prompt_name, batch_size=batch_size, shard_size=shard_size,
                                      dtype=encode_dtype, shard_id=shard_id, num_shards=num_shards,
                                      overwrite=overwrite, show_progress_bar=progress and rank == 0,
                                      pack_tokens=pack_tokens)
    if num_shards is not None:
        return {"shards_done": {lang: ix.info.get("shards_done", list(range(len(ix.shards))))
                                for lang, ix in indexes.items()}}
    if distributed:
        barrier()
        if rank != 0:
            return {}
        for lang, ix in indexes.items():
            if not ix.info.get("complete"):
                indexes[lang] = CorpusIndex.open(ix.path)  # the other ranks' shards are there now
                check_unique_docids(indexes[lang])

    name = model_name or _model_name(model)
    tag = _run_tag(name)
    results: dict[str, dict[str, Any]] = {}
    for lang, data in datas.items():
        r = evaluate_language(model, data, indexes[lang], top_k=top_k, backend=index, batch_size=batch_size,
                              query_prompt=query_prompt, query_prompt_name=query_prompt_name, chunk_size=chunk_size,
                              run_path=out / "runs" / f"{lang}.trec", run_tag=tag, show_progress_bar=progress)
        results[lang] = {k: r[k] for k in ("ndcg@10", "recall@100", "queries", "judged_queries", "passages")}
        logger.info("MIRACL %s: nDCG@10 %.4f, Recall@100 %.4f (%d queries, %d passages)", lang, r["ndcg@10"],
                    r["recall@100"], r["queries"], r["passages"])
    macro = {m: sum(results[lang][m] for lang in results) / len(results) for m in METRICS}
    first = indexes[next(iter(indexes))].info
    metrics = {
        "languages": results,
        "macro": macro,
        "model": {"name": name, "fingerprint": model_fingerprint(model),
                  "query_prompt": resolve_prompt(model, query_prompt, query_prompt_name, "query"),
                  "corpus_prompt": first.get("prompt"), "max_length": first.get("max_length"),
                  "normalized": first.get("normalized")},
        "index": {"backend": index, "approximate": index in APPROXIMATE_BACKENDS, "dtype": encode_dtype,
                  "packed_encoding": bool(pack_tokens),
                  "shard_size": shard_size, "top_k": top_k, "tie_rule": TIE_RULE, "processes": world},
        "split": split,
        "scoring": "trec_eval via pytrec_eval: -c -M 100 -m ndcg_cut.10; -c -m recall.100",
    }
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "results.md", results_markdown(metrics))
    return metrics


def _model_name(model: Any) -> str:
    card = getattr(model, "model_card_data", None)
    name = getattr(card, "base_model", None) or getattr(model, "name_or_path", None)
    return str(name) if name else type(model).__name__


def _run_tag(name: str) -> str:
    tag = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in Path(str(name)).name)
    return tag or "st-hybrid"


def results_markdown(metrics: Mapping[str, Any]) -> str:
    """The ``results.md`` table: one row per language and the macro average (MIRACL / Pyserini's layout)."""
    idx = metrics["index"]
    approx = " **(approximate search)**" if idx["approximate"] else ""
    lines = [f"# MIRACL {metrics.get('split', 'dev')}: {metrics['model']['name']}", "",
             f"Search: {idx['backend']}{approx}, top {idx['top_k']}, corpus stored as {idx['dtype']}; "
             f"scored by {metrics.get('scoring', 'trec_eval')}.", "",
             "| language | nDCG@10 | Recall@100 | queries | judged | passages |", "|---|---:|---:|---:|---:|---:|"]
    for lang, r in metrics["languages"].items():
        lines.append(f"| {lang} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {r['queries']} | "
                     f"{r.get('judged_queries', '')} | {r['passages']} |")
    m = metrics["macro"]
    lines.append(f"| **macro** | **{m['ndcg@10']:.4f}** | **{m['recall@100']:.4f}** | | | |")
    return "\n".join(lines) + "\n"


class MIRACLEvaluator(SentenceEvaluator):
    """MIRACL's nDCG@10 / Recall@100 of a model during training, on the engine's code path
    (:func:`evaluate_language`: corpus encoded into shards, exact search, trec_eval scoring).

    Args:
        queries: ``{qid: text}``.
        corpus: ``{docid: {"title", "text"} | str}`` (BEIR) or a :class:`PassageSource`.
        qrels: ``{qid: {docid: rel}}`` (rel 0: judged non-relevant).
        name: prefix of the result keys.
        batch_size, show_progress_bar, query_prompt, query_prompt_name, corpus_prompt, corpus_prompt_name,
            write_csv: as in the library's ``InformationRetrievalEvaluator``.
        top_k: hits a query. index_dir: where the corpus is encoded (default: a temporary folder per call).
        shard_size, encode_dtype, index, pack_tokens: as in :func:`evaluate_miracl`.

    Example:
        >>> from sentence_transformers_hybrid.testing import tiny_static_model
        >>> corpus = {"d1": {"title": "Nairobi", "text": "capital of Kenya"}, "d2": "Lima, capital of Peru"}
        >>> evaluator = MIRACLEvaluator({"q1": "Kenya"}, corpus, {"q1": {"d1": 1}}, name="sw")
        >>> model = tiny_static_model(["Nairobi capital of Kenya", "Lima, capital of Peru"], dim=8)
        >>> sorted(evaluator(model))
        ['sw_ndcg@10', 'sw_recall@100']
    """

    def __init__(
        self,
        queries: Mapping[str, str],
        corpus: Mapping[str, Any] | PassageSource,
        qrels: Mapping[str, Mapping[str, int]],
        name: str = "",
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        query_prompt: str | None = None,
        corpus_prompt: str | None = None,
        write_csv: bool = True,
        *,
        query_prompt_name: str | None = None,
        corpus_prompt_name: str | None = None,
        top_k: int = 100,
        index_dir: str | os.PathLike | None = None,
        shard_size: int = 100_000,
        encode_dtype: str = "float32",
        index: str = "exact",
        pack_tokens: bool = False,
    ) -> None:
        super().__init__()
        source = corpus if isinstance(corpus, PassageSource) else PassageSource.from_dict(corpus)
        self.data = MiraclData(name or "miracl", "dev", dict(queries), {q: dict(j) for q, j in qrels.items()}, source)
        self.name = name
        self.batch_size = batch_size
        self.show_progress_bar = default_progress(show_progress_bar, logger)
        self.query_prompt, self.query_prompt_name = query_prompt, query_prompt_name
        self.corpus_prompt, self.corpus_prompt_name = corpus_prompt, corpus_prompt_name
        self.write_csv = write_csv
        self.top_k, self.index_dir, self.shard_size = top_k, index_dir, shard_size
        self.encode_dtype, self.index, self.pack_tokens = encode_dtype, index, pack_tokens
        self.primary_metric = "ndcg@10"
        self.csv_file = "MIRACL_evaluation" + (f"_{name}" if name else "") + "_results.csv"

    def __call__(self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1,
                 steps: int = -1) -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="sth-miracl-") as tmp:
            folder = Path(self.index_dir) if self.index_dir is not None else Path(tmp)
            ix = encode_corpus(model, self.data.corpus, folder, prompt=self.corpus_prompt,
                               prompt_name=self.corpus_prompt_name, batch_size=self.batch_size,
                               shard_size=self.shard_size, dtype=self.encode_dtype, overwrite=True,
                               show_progress_bar=self.show_progress_bar, pack_tokens=self.pack_tokens)
            r = evaluate_language(model, self.data, ix, top_k=self.top_k, backend=self.index,
                                  batch_size=self.batch_size, query_prompt=self.query_prompt,
                                  query_prompt_name=self.query_prompt_name, show_progress_bar=self.show_progress_bar)
        metrics = {m: float(r[m]) for m in METRICS}
        if output_path is not None and self.write_csv:
            append_csv_rows(Path(output_path) / self.csv_file, ["epoch", "steps", *METRICS],
                            [{"epoch": epoch, "steps": steps, **metrics}])
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics
