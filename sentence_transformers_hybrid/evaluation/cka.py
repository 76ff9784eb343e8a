"""CKAEvaluator: cross-lingual alignment of a model's embeddings, measured by linear CKA on parallel text.

An evaluator in the sentence-transformers sense (``__call__(model, output_path, epoch, steps)`` returning a metrics
dict, ``primary_metric``, CSV logging, model-card metrics), so it runs both on its own and inside
``SentenceTransformerTrainer(evaluator=...)``. The math lives in :mod:`sentence_transformers_hybrid.metrics.cka`.

Also here, the model-side helpers of layer-wise CKA: :func:`layer_embeddings` (mean-pooled hidden states of every
layer), :func:`layerwise_cka`, :func:`cka_matrix` and :func:`plot_cka_heatmap`.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._utils import append_csv_rows, default_progress
from ..metrics.cka import linear_cka, linear_cka_matrix
from .plots import plot_heatmap

from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

__all__ = ["CKAEvaluator", "cka_matrix", "layer_embeddings", "layerwise_cka", "plot_cka_heatmap"]


class CKAEvaluator(SentenceEvaluator):
    """Linear CKA between the embeddings of parallel sentences in every pair of languages.

    ``sentences`` maps a language to its sentences; by default the lists are parallel (same length, row ``i`` is
    the same item in every language). With ``groups`` (a language -> group ids mapping, e.g. question ids) the lists
    may differ in length and order: each language pair is compared on the groups both languages have, aligned by
    group id. Every language is encoded once with ``model.encode(prompt=prompt)``; the evaluator then returns

    - ``{name}_cka_{a}_{b}`` for every language pair ``a < b`` (sorted), and ``{name}_cka_mean``, their mean
      (the ``primary_metric``; higher = more aligned);
    - with ``passages`` (a second, parallel mapping: e.g. each question's answer sentence), query-vs-passage CKA:
      the sentences encoded with ``model.encode_query(prompt=query_prompt)`` against the passages of the same groups
      encoded with ``model.encode_document(prompt=passage_prompt)``, for every ordered pair (query language ``a``,
      passage language ``b``): ``{name}_cka_qp_{a}_{b}``, plus ``{name}_cka_qp_mono_mean`` (``a == b``) and
      ``{name}_cka_qp_cross_mean`` (``a != b``). Pass ``passages=sentences`` to measure what the query/document
      prompts alone do to the same text.

    Debiased CKA (the default) is the one to compare across runs: the biased estimator is inflated by an amount
    that depends on n and d (see docs/cka.md). After a call, ``evaluator.last_matrix`` holds the language x language
    CKA matrix (languages in ``evaluator.languages`` order) for :func:`plot_cka_heatmap`.

    Args:
        sentences: language -> list of sentences (parallel across languages unless ``groups`` is given).
        name: prefix of the metric names (``None`` or ``""``: no prefix).
        debiased: unbiased HSIC estimator (Song et al. 2012); needs >= 4 items per pair.
        batch_size: encoding batch size.
        prompt: prompt prepended by ``model.encode`` to every sentence.
        show_progress_bar: encoding progress bars; ``None`` follows the logging level (INFO or below: on).
        groups: optional language -> group id per sentence (see above).
        passages: optional language -> passages, aligned with ``sentences`` (same lengths; same ``groups``).
        query_prompt: prompt for the query side of query-vs-passage CKA (``None``: the model's "query" prompt if any).
        passage_prompt: prompt for the passage side (``None``: the model's "document" prompt if any).
        write_csv: append the metrics to ``cka_evaluation_{name}_results.csv`` in ``output_path``.
        truncate_dim: truncate embeddings to this many dimensions (``None``: the model's setting).

    Example:
        >>> from sentence_transformers_hybrid import CKAEvaluator, load_lareqa
        >>> from sentence_transformers_hybrid.testing import tiny_static_model
        >>> bench = load_lareqa("xquad-r", languages=["ar", "de", "en"])   # data from $STH_DATA_DIR
        >>> evaluator = CKAEvaluator.from_benchmark(bench, name="xquad-r", prompt="query: ", max_groups=200)
        >>> # any SentenceTransformer, e.g. SentenceTransformer("intfloat/multilingual-e5-small"); here a tiny one
        >>> model = tiny_static_model([q for s in bench.splits.values() for q in s.questions], dim=16)
        >>> results = evaluator(model)
        >>> sorted(results)
        ['xquad-r_cka_ar_de', 'xquad-r_cka_ar_en', 'xquad-r_cka_de_en', 'xquad-r_cka_mean']
        >>> evaluator.primary_metric
        'xquad-r_cka_mean'
    """

    def __init__(
        self,
        sentences: Mapping[str, Sequence[str]],
        name: str | None = None,
        debiased: bool = True,
        batch_size: int = 32,
        prompt: str | None = None,
        show_progress_bar: bool | None = None,
        *,
        groups: Mapping[str, Sequence[Hashable]] | None = None,
        passages: Mapping[str, Sequence[str]] | None = None,
        query_prompt: str | None = None,
        passage_prompt: str | None = None,
        write_csv: bool = True,
        truncate_dim: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(sentences, Mapping):
            raise ValueError(f"sentences must map language -> list of sentences, got {type(sentences).__name__}")
        self.languages = sorted(sentences)
        if len(self.languages) < 2 and passages is None:
            raise ValueError(f"CKAEvaluator needs at least 2 languages to compare, got {self.languages}")
        self.sentences = {lang: list(sentences[lang]) for lang in self.languages}
        for lang, texts in self.sentences.items():
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise ValueError(f"sentences[{lang!r}][{i}] is {type(t).__name__}, expected str")
        self.groups = self._check_groups(groups)
        self.passages: dict[str, list[str]] | None = None
        if passages is not None:
            missing = set(self.languages) ^ set(passages)
            if missing:
                raise ValueError(f"passages must have the same languages as sentences; differing: {sorted(missing)}")
            self.passages = {lang: list(passages[lang]) for lang in self.languages}
            for lang in self.languages:
                if len(self.passages[lang]) != len(self.sentences[lang]):
                    raise ValueError(
                        f"passages[{lang!r}] has {len(self.passages[lang])} items but sentences[{lang!r}] has "
                        f"{len(self.sentences[lang])}; passage i must belong to the group of sentence i"
                    )
        self._pair_rows = self._align_pairs(debiased)

        self.name = name or ""
        self.debiased = debiased
        self.batch_size = batch_size
        self.prompt = prompt
        self.query_prompt = query_prompt
        self.passage_prompt = passage_prompt
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
        self.show_progress_bar = show_progress_bar
        self.write_csv = write_csv
        self.truncate_dim = truncate_dim
        self.primary_metric = "cka_mean"
        self.greater_is_better = True
        self.csv_file = "cka_evaluation" + (f"_{self.name}" if self.name else "") + "_results.csv"
        self.alignment = "position" if self.groups is None else "groups"
        self.last_matrix: np.ndarray | None = None
        self.last_query_passage_matrix: np.ndarray | None = None

    # ---------------------------------------------------------------------------------------------------------------
    # construction helpers
    # ---------------------------------------------------------------------------------------------------------------
    def _check_groups(self, groups: Mapping[str, Sequence[Hashable]] | None) -> dict[str, list[Hashable]] | None:
        if groups is None:
            lengths = {lang: len(t) for lang, t in self.sentences.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(
                    f"sentences must be parallel (same length in every language) unless groups are given; got {lengths}"
                )
            return None
        missing = set(self.languages) ^ set(groups)
        if missing:
            raise ValueError(f"groups must have the same languages as sentences; differing: {sorted(missing)}")
        out = {}
        for lang in self.languages:
            g = list(groups[lang])
            if len(g) != len(self.sentences[lang]):
                raise ValueError(f"groups[{lang!r}] has {len(g)} ids but sentences[{lang!r}] has {len(self.sentences[lang])}")
            seen: dict[Hashable, int] = {}
            for i, gid in enumerate(g):
                if gid in seen:
                    raise ValueError(f"groups[{lang!r}]: group {gid!r} appears at rows {seen[gid]} and {i}; "
                                     "each group may have one sentence per language")
                seen[gid] = i
            out[lang] = g
        return out

    def _align_pairs(self, debiased: bool) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """Row indices (into language a, into language b) of the shared items, for every ordered language pair."""
        pairs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        need = 4 if debiased else 2
        for a, b in itertools.product(self.languages, repeat=2):
            if self.groups is None:
                idx = np.arange(len(self.sentences[a]), dtype=np.int64)
                ia, ib = idx, idx
            else:
                pos_b = {g: i for i, g in enumerate(self.groups[b])}
                shared = [(i, pos_b[g]) for i, g in enumerate(self.groups[a]) if g in pos_b]
                ia = np.array([s[0] for s in shared], dtype=np.int64)
                ib = np.array([s[1] for s in shared], dtype=np.int64)
            if len(ia) < need:
                raise ValueError(
                    f"languages {a!r} and {b!r} share {len(ia)} items; {'debiased ' if debiased else ''}CKA needs at "
                    f"least {need}"
                )
            pairs[(a, b)] = (ia, ib)
        return pairs

    @classmethod
    def from_benchmark(
        cls,
        bench: Any,
        languages: Sequence[str] | None = None,
        *,
        alignment: Literal["auto", "intersection", "pairwise"] = "auto",
        passages: Literal["sentence", "paragraph", "candidate"] | None = None,
        max_groups: int | None = None,
        seed: int = 0,
        name: str | None = None,
        min_intersection: int = 100,
        **kwargs: Any,
    ) -> CKAEvaluator:
        """Aligned questions (and optionally their answer passages) from a ``RetrievalBenchmark`` (XQuAD-R, MLQA-R).

        Questions are aligned across languages by their group (``LanguageSplit.question_groups``, i.e. the original
        question id). ``alignment="intersection"`` keeps the groups present in every chosen language, so all pairs
        are measured on the same items and their CKA values are directly comparable: on XQuAD-R that is all 1,190
        questions. MLQA-R questions exist in only 2-4 of its 7 languages (no question is in all 7), so there
        ``alignment="pairwise"`` measures each pair on the groups those two languages share (161 to 517 per pair
        for all 7 languages: different items and sizes per pair, so compare pairs with care; debiased CKA keeps the
        size effect small). ``"auto"`` (default) uses the intersection when it holds at least
        ``min_intersection`` groups, else pairwise; the choice is logged and kept in ``evaluator.alignment``. Groups are taken in ascending group order; ``max_groups`` keeps a random subset of that
        many (drawn with ``seed``, the same for every language) to bound encoding time.

        ``passages="sentence"`` adds query-vs-passage CKA against each question's answer sentence,
        ``"paragraph"`` against the answer's whole paragraph, ``"candidate"`` against the exact candidate text the
        LAReQA retrieval protocol encodes (``LanguageSplit.candidate_texts()``: sentence with its context). Other
        keyword arguments go to the constructor.

        Example:
            >>> from sentence_transformers_hybrid import load_lareqa
            >>> bench = load_lareqa("xquad-r", languages=["de", "en", "zh"])   # data from $STH_DATA_DIR
            >>> ev = CKAEvaluator.from_benchmark(bench, max_groups=500, name="xquad-r")
            >>> len(ev.sentences["en"])
            500
        """
        langs = sorted(languages) if languages is not None else list(bench.languages)
        unknown = [lang for lang in langs if lang not in bench.splits]
        if unknown:
            raise ValueError(f"{getattr(bench, 'name', 'benchmark')} has no language(s) {unknown}; it has {list(bench.splits)}")
        if passages not in (None, "sentence", "paragraph", "candidate"):
            raise ValueError(f"passages must be None, 'sentence', 'paragraph' or 'candidate', got {passages!r}")
        if alignment not in ("auto", "intersection", "pairwise"):
            raise ValueError(f"alignment must be 'auto', 'intersection' or 'pairwise', got {alignment!r}")
        bench_name = getattr(bench, "name", "benchmark")
        group_rows: dict[str, dict[int, int]] = {}
        for lang in langs:
            qg = np.asarray(bench.splits[lang].question_groups, dtype=np.int64)
            rows = {int(g): i for i, g in enumerate(qg)}
            if len(rows) != len(qg):
                raise ValueError(f"{bench_name} {lang}: a group has more than one question; cannot align by group")
            group_rows[lang] = rows
        common = set.intersection(*(set(r) for r in group_rows.values()))
        if alignment == "auto":
            alignment = "intersection" if len(common) >= min_intersection else "pairwise"
            logger.info(f"{bench_name}: {len(common)} question groups are in all of {langs}: {alignment} alignment")
        if alignment == "intersection":
            keep = sorted(common)
            if len(keep) < 4:
                raise ValueError(
                    f"{bench_name}: only {len(keep)} question groups are present in all of {langs}; choose fewer "
                    "languages or alignment='pairwise'"
                )
        else:
            keep = sorted(set.union(*(set(r) for r in group_rows.values())))
        if max_groups is not None and max_groups < len(keep):
            rng = np.random.default_rng(seed)
            keep = sorted(int(g) for g in rng.choice(np.array(keep, dtype=np.int64), size=max_groups, replace=False))
        sentences: dict[str, list[str]] = {}
        pas: dict[str, list[str]] = {}
        groups: dict[str, list[int]] = {}
        for lang in langs:
            split = bench.splits[lang]
            rows = [group_rows[lang][g] for g in keep if g in group_rows[lang]]
            sentences[lang] = [split.questions[r] for r in rows]
            groups[lang] = [int(split.question_groups[r]) for r in rows]
            if passages is not None:
                ans = np.asarray(split.answer_sentence, dtype=np.int64)[rows]
                if passages == "sentence":
                    pas[lang] = [split.sentences[s] for s in ans]
                elif passages == "candidate":
                    cand = split.candidate_texts(with_context=True)
                    pas[lang] = [cand[s] for s in ans]
                else:
                    sp = np.asarray(split.sentence_paragraph, dtype=np.int64)
                    pas[lang] = [split.paragraphs[sp[s]] for s in ans]
        evaluator = cls(
            sentences,
            name=name if name is not None else bench_name,
            groups=groups if alignment == "pairwise" else None,
            passages=pas if passages is not None else None,
            **kwargs,
        )
        evaluator.alignment = alignment
        return evaluator

    # ---------------------------------------------------------------------------------------------------------------
    # evaluation
    # ---------------------------------------------------------------------------------------------------------------
    def _encode(self, model: SentenceTransformer, texts: list[str], fn: str, prompt: str | None) -> np.ndarray:
        encode = getattr(model, fn, None) if fn != "encode" else model.encode
        if encode is None:  # older sentence-transformers: no encode_query / encode_document
            encode = model.encode
        return encode(
            texts,
            prompt=prompt,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
            convert_to_numpy=True,
            truncate_dim=self.truncate_dim,
        )

    def _pair_matrix(self, emb_a: dict[str, np.ndarray], emb_b: dict[str, np.ndarray], symmetric: bool) -> np.ndarray:
        """The language x language CKA matrix, computed from embeddings (not the same job as
        :func:`~sentence_transformers_hybrid.evaluation.retrieval.pair_matrix`, which lays evaluated rows out)."""
        langs = self.languages
        if self.groups is None:  # one shared row set: every centred matrix is computed once
            return linear_cka_matrix(
                [emb_a[lang] for lang in langs],
                None if symmetric else [emb_b[lang] for lang in langs],
                self.debiased,
                names=([f"{lang} embeddings" for lang in langs],) * 2,
            )
        out = np.empty((len(langs), len(langs)))
        for (i, a), (j, b) in itertools.product(enumerate(langs), repeat=2):
            if symmetric and j < i:
                out[i, j] = out[j, i]
                continue
            ia, ib = self._pair_rows[(a, b)]
            out[i, j] = linear_cka_matrix([emb_a[a][ia]], [emb_b[b][ib]], self.debiased,
                                          names=([f"{a} embeddings"], [f"{b} embeddings"]))[0, 0]
        return out

    def __call__(
        self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        if epoch != -1:
            out_txt = f" after epoch {epoch}" if steps == -1 else f" in epoch {epoch} after {steps} steps"
        else:
            out_txt = ""
        logger.info(f"CKA evaluation ({'debiased' if self.debiased else 'biased'}) of {self.name or 'the'} "
                    f"parallel sentences{out_txt}:")

        emb = {lang: self._encode(model, self.sentences[lang], "encode", self.prompt) for lang in self.languages}
        mat = self._pair_matrix(emb, emb, symmetric=True)
        self.last_matrix = mat
        metrics: dict[str, float] = {}
        pair_values = []
        for (i, a), (j, b) in itertools.combinations(enumerate(self.languages), 2):
            metrics[f"cka_{a}_{b}"] = float(mat[i, j])
            pair_values.append(float(mat[i, j]))
        metrics["cka_mean"] = float(np.mean(pair_values)) if pair_values else float("nan")

        if self.passages is not None:
            q = {lang: self._encode(model, self.sentences[lang], "encode_query", self.query_prompt) for lang in self.languages}
            p = {lang: self._encode(model, self.passages[lang], "encode_document", self.passage_prompt)
                 for lang in self.languages}
            qp = self._pair_matrix(q, p, symmetric=False)
            self.last_query_passage_matrix = qp
            for (i, a), (j, b) in itertools.product(enumerate(self.languages), repeat=2):
                metrics[f"cka_qp_{a}_{b}"] = float(qp[i, j])
            eye = np.eye(len(self.languages), dtype=bool)
            metrics["cka_qp_mono_mean"] = float(qp[eye].mean())
            metrics["cka_qp_cross_mean"] = float(qp[~eye].mean()) if len(self.languages) > 1 else float("nan")

        for key, value in metrics.items():
            logger.info(f"{key}:\t{value:.4f}")

        if output_path is not None and self.write_csv:
            append_csv_rows(os.path.join(output_path, self.csv_file), ["epoch", "steps", *metrics],
                            [{"epoch": epoch, "steps": steps, **metrics}])  # atomic; see append_csv_rows

        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    @property
    def description(self) -> str:
        return "Cross-lingual CKA"

    def get_config_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = {"debiased": self.debiased, "languages": self.languages}
        for key in ("prompt", "query_prompt", "passage_prompt", "truncate_dim"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        return config


# --------------------------------------------------------------------------------------------------------------------
# models: per-layer mean-pooled hidden states
# --------------------------------------------------------------------------------------------------------------------
def _hf_model(model: Any) -> Any:
    first = model[0] if hasattr(model, "__getitem__") else None
    hf = getattr(first, "auto_model", None) or getattr(first, "model", None)
    if hf is None or not hasattr(hf, "config"):
        raise ValueError(
            f"{type(model).__name__} has no Hugging Face transformer as its first module (found "
            f"{type(first).__name__}); layer-wise CKA needs output_hidden_states, e.g. a models.Transformer"
        )
    return hf


def layer_embeddings(
    model: Any,
    sentences: Sequence[str],
    layers: Literal["all"] | Sequence[int] = "all",
    *,
    batch_size: int = 32,
    prompt: str | None = None,
    show_progress_bar: bool | None = None,
    normalize: bool = False,
) -> list[np.ndarray]:
    """Mean-pooled (optionally L2-normalised) hidden states of every (chosen) layer of a SentenceTransformer's underlying HF transformer.

    The first module must be a ``models.Transformer``. Texts are tokenized exactly as ``model.encode`` does (same
    preprocessing, truncation and ``prompt``), the HF model runs with ``output_hidden_states=True``, and each layer is
    averaged over the non-padding tokens (attention mask; prompt tokens included). Index 0 is the embedding output,
    index ``i`` the output of block ``i``; negative indices count from the last layer.

    Returns:
        One float32 ``[len(sentences), hidden]`` array per chosen layer, rows in input order.

    Example:
        >>> import tempfile
        >>> from sentence_transformers_hybrid.testing import tiny_transformer_model
        >>> model = tiny_transformer_model(tempfile.mkdtemp(), ["a question", "another one"])   # a 2-layer BERT
        >>> embs = layer_embeddings(model, ["a question", "another one"])
        >>> len(embs) == model[0].auto_model.config.num_hidden_layers + 1, embs[0].shape
        (True, (2, 32))
    """
    import torch
    from tqdm.auto import tqdm

    hf = _hf_model(model)
    texts = list(sentences)
    if not texts:
        raise ValueError("layer_embeddings needs at least one sentence")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"sentences[{i}] is {type(t).__name__}, expected str")
    import inspect

    accepted = set(inspect.signature(hf.forward).parameters)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    pooled: list[list[torch.Tensor]] | None = None
    chosen: list[int] | None = None
    was_training = model.training
    model.eval()
    device = getattr(model, "device", torch.device("cpu"))
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), desc="Layer embeddings",
                              disable=not default_progress(show_progress_bar, logger)):
                batch = [texts[k] for k in order[start : start + batch_size]]
                feats = model.preprocess(batch, prompt=prompt)
                inputs = {k: v.to(device) for k, v in feats.items() if k in accepted and torch.is_tensor(v)}
                mask = feats["attention_mask"].to(device)
                out = hf(**inputs, output_hidden_states=True, return_dict=True)
                hidden = out.hidden_states
                if hidden is None:
                    raise ValueError(f"{type(hf).__name__} returned no hidden_states")
                if chosen is None:
                    total = len(hidden)
                    idx = list(range(total)) if layers == "all" else list(layers)  # type: ignore[arg-type]
                    for li in idx:
                        if not -total <= li < total:
                            raise ValueError(f"layer {li} does not exist: the model has {total} hidden states "
                                             f"(0 = embeddings, {total - 1} = last block)")
                    chosen = [li % total for li in idx]
                    pooled = [[] for _ in chosen]
                m = mask.unsqueeze(-1).to(hidden[0].dtype)
                denom = m.sum(dim=1).clamp(min=1.0)
                for slot, li in enumerate(chosen):
                    pooled[slot].append(((hidden[li] * m).sum(dim=1) / denom).float().cpu())  # type: ignore[index]
    finally:
        model.train(was_training)
    inverse = np.argsort(order)
    out = [torch.cat(p).numpy()[inverse] for p in pooled]  # type: ignore[union-attr]
    if normalize:  # unit rows, as the model's own Normalize module would give at the last layer
        out = [x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in out]
    return out


def cka_matrix(
    model_a: Any,
    model_b: Any | None,
    sentences: Sequence[str],
    layers: Literal["all"] | Sequence[int] = "all",
    *,
    sentences_b: Sequence[str] | None = None,
    layers_b: Literal["all"] | Sequence[int] | None = None,
    debiased: bool = True,
    batch_size: int = 32,
    prompt: str | None = None,
    show_progress_bar: bool | None = None,
) -> np.ndarray:
    """Layer-by-layer CKA between two models (or one model with itself): ``[layers_a, layers_b]``.

    Each layer is mean-pooled over tokens (:func:`layer_embeddings`); entry ``[i, j]`` is the linear CKA between
    layer ``i`` of ``model_a`` on ``sentences`` and layer ``j`` of ``model_b`` (default: ``model_a``) on
    ``sentences_b`` (default: the same sentences). Use it to compare e.g. the X-X-mono, X-Y and hybrid models
    trained from the same base; row/column 0 is the embedding output. Plot with :func:`plot_cka_heatmap`.

    Example:
        >>> import tempfile
        >>> from sentence_transformers_hybrid.testing import tiny_transformer_model
        >>> questions_en = ["Who wrote Faust?", "Where is Lima?", "What is CKA?", "Why is the sky blue?"]
        >>> folder = tempfile.mkdtemp()   # two tiny 2-layer BERTs stand in for the mono and hybrid models
        >>> model_mono, model_hybrid = (tiny_transformer_model(folder, questions_en, seed=s) for s in (0, 1))
        >>> m = cka_matrix(model_mono, model_hybrid, questions_en)
        >>> m.shape
        (3, 3)
        >>> fig = plot_cka_heatmap(m, xlabel="hybrid layer", ylabel="mono layer")
    """
    kw = dict(batch_size=batch_size, prompt=prompt, show_progress_bar=show_progress_bar)
    a = layer_embeddings(model_a, sentences, layers, **kw)
    other = model_a if model_b is None else model_b
    texts_b = sentences if sentences_b is None else sentences_b
    if len(texts_b) != len(sentences):
        raise ValueError(f"sentences_b has {len(texts_b)} texts but sentences has {len(sentences)}; they must be parallel")
    if model_b is None and sentences_b is None and layers_b is None:
        return linear_cka_matrix(a, None, debiased, names=([f"layer {i}" for i in range(len(a))],) * 2)
    b = layer_embeddings(other, texts_b, layers if layers_b is None else layers_b, **kw)
    return linear_cka_matrix(
        a, b, debiased, names=([f"model_a layer {i}" for i in range(len(a))], [f"model_b layer {j}" for j in range(len(b))])
    )


def layerwise_cka(
    model: Any,
    sentences_a: Sequence[str],
    sentences_b: Sequence[str],
    layers: Literal["all"] | Sequence[int] = "all",
    *,
    debiased: bool = True,
    batch_size: int = 32,
    prompt: str | None = None,
    show_progress_bar: bool | None = None,
    normalize: bool = False,
) -> np.ndarray:
    """Per-layer CKA between two parallel text sets under one model: ``out[l] = CKA(layer l on A, layer l on B)``.

    The research use: English questions vs the same questions in another language; entry 0 is the embedding output,
    so the curve shows where in the network the two languages align.

    Example:
        >>> import tempfile
        >>> from sentence_transformers_hybrid.testing import tiny_transformer_model
        >>> questions = {"en": ["Who wrote Faust?", "Where is Lima?", "What is CKA?", "Why is the sky blue?"],
        ...              "de": ["Wer schrieb Faust?", "Wo liegt Lima?", "Was ist CKA?", "Warum ist der Himmel blau?"]}
        >>> model = tiny_transformer_model(tempfile.mkdtemp(), questions["en"] + questions["de"])   # a 2-layer BERT
        >>> curve = layerwise_cka(model, questions["en"], questions["de"])
        >>> curve.shape == (model[0].auto_model.config.num_hidden_layers + 1,)
        True
    """
    if len(sentences_a) != len(sentences_b):
        raise ValueError(f"sentences_a has {len(sentences_a)} texts, sentences_b has {len(sentences_b)}; "
                         "they must be parallel (row i = the same item)")
    kw = dict(batch_size=batch_size, prompt=prompt, show_progress_bar=show_progress_bar, normalize=normalize)
    ea = layer_embeddings(model, sentences_a, layers, **kw)
    eb = layer_embeddings(model, sentences_b, layers, **kw)
    return np.array([linear_cka(x, y, debiased=debiased) for x, y in zip(ea, eb)])


# --------------------------------------------------------------------------------------------------------------------
# plotting
# --------------------------------------------------------------------------------------------------------------------
def plot_cka_heatmap(
    matrix: np.ndarray | Sequence[Sequence[float]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Figure:
    """Heatmap of any CKA matrix (layers x layers, languages x languages) with a colour bar labelled "CKA".

    :func:`~sentence_transformers_hybrid.evaluation.plots.plot_heatmap` (the package's one heatmap) with CKA's
    defaults: the colour range 0..1, ``magma``, and ``origin="lower"``, which puts layer 0 at the bottom-left as
    in Kornblith et al. / Nguyen et al.; use ``origin="upper"`` for language matrices. Uses the Agg canvas directly
    (no pyplot, no global backend change), so it works headless and in threads. Cells are annotated with their
    value when the matrix is at most 16x16 (or when ``annotate=True``). With ``path`` the figure is also saved
    (format from the suffix). ``options``: any keyword of ``plot_heatmap`` (``ax``, ``title``, ``xlabel``,
    ``ylabel``, ``vmin``, ``vmax``, ``cmap``, ``annotate``, ``origin``, ...), over CKA's defaults.

    Example:
        >>> import numpy as np
        >>> fig = plot_cka_heatmap(np.eye(3), ["en", "de", "ar"], ["en", "de", "ar"], origin="upper")
        >>> fig.axes[0].get_title()
        ''
    """
    return plot_heatmap(matrix, row_labels, col_labels, path, **{**CKA_HEATMAP_DEFAULTS, **options})


#: what makes a heatmap a CKA heatmap (the rest is :func:`plot_heatmap`'s)
CKA_HEATMAP_DEFAULTS: dict[str, Any] = {"vmin": 0.0, "vmax": 1.0, "cmap": "magma", "origin": "lower",
                                        "colorbar_label": "CKA"}
