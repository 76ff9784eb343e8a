"""``RetrievalBenchmark``: answer retrieval from a (multilingual) sentence pool, in the LAReQA protocol.

For each language the candidate pool is **every sentence of every paragraph** (duplicates kept, as LAReQA does),
and the relevant candidates of a question are the sentence holding its answer **in every language** the question
exists in. Questions are aligned across languages by their id (the *group*).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from .validation import DataValidationError, ValidationReport, Validator

if TYPE_CHECKING:  # pragma: no cover
    from .corpus import ParallelCorpus

#: How a candidate is written when it is encoded with its paragraph as context (LAReQA encodes the answer
#: sentence together with its paragraph). ``LanguageSplit.candidate_texts(with_context=True)`` uses it.
CANDIDATE_WITH_CONTEXT = "{sentence}\n{context}"


_ARRAYS = ("question_groups", "sentence_paragraph", "answer_sentence", "answer_counts")
_LISTS = ("question_ids", "questions", "sentences", "paragraphs", "answers")


def _frozen(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """An int64 copy that cannot be written to (the caller's array is left as it was)."""
    arr = np.array(values, dtype=np.int64, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class LanguageSplit:
    """One language of a :class:`RetrievalBenchmark`: its questions and its candidate pool.

    Immutable: its fields cannot be reassigned and its arrays are read-only copies, so a benchmark derived from
    another one (``select_languages``, :func:`subsample_benchmark`) can never change the original. Derive a
    changed split with ``dataclasses.replace(split, field=...)``.
    """

    language: str
    question_ids: list[str]
    questions: list[str]
    question_groups: np.ndarray
    sentences: list[str]
    paragraphs: list[str]
    sentence_paragraph: np.ndarray
    answer_sentence: np.ndarray
    answer_counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    answers: list[str] = field(default_factory=list)
    file: str | None = None

    def __post_init__(self) -> None:
        if self.answer_counts is None:
            object.__setattr__(self, "answer_counts", np.ones(len(self.questions), dtype=np.int64))
        for name in _ARRAYS:
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        for name in _LISTS:  # own copies: the caller's lists stay the caller's
            object.__setattr__(self, name, list(getattr(self, name)))

    @property
    def contexts(self) -> list[str]:
        """The paragraph of each candidate sentence."""
        return [self.paragraphs[i] for i in self.sentence_paragraph]

    def candidate_texts(self, with_context: bool = True) -> list[str]:
        """The text encoded for each candidate: ``CANDIDATE_WITH_CONTEXT`` or the sentence alone."""
        if not with_context:
            return list(self.sentences)
        return [
            CANDIDATE_WITH_CONTEXT.format(sentence=s, context=self.paragraphs[p])
            for s, p in zip(self.sentences, self.sentence_paragraph)
        ]

    def __repr__(self) -> str:
        return f"LanguageSplit({self.language!r}, questions={len(self.questions)}, candidates={len(self.sentences)})"


class RetrievalBenchmark:
    """Questions and candidate pools in several languages, aligned by question id (LAReQA protocol).

    ``relevance`` and ``beir`` give the mono (X -> X), cross (X -> Y) and multilingual (X -> pool of all languages)
    settings. Query ids (``"{lang}/{question_id}"``) and doc ids (``"{lang}/{sentence_index}"``) are unique across
    languages.

    A benchmark never changes once built: it holds its own copies of the splits it is given (the caller's are
    left as they were), ``splits`` is a read-only mapping of immutable :class:`LanguageSplit`, and every derived
    benchmark (:meth:`select_languages`, :func:`subsample_benchmark`) is a new one.

    Example::

        >>> from sentence_transformers_hybrid import load_lareqa
        >>> bench = load_lareqa("xquad-r", languages=["en", "de"])     # data from $STH_DATA_DIR
        >>> bench
        RetrievalBenchmark('xquad-r', languages=['de', 'en'], groups=1190)
        >>> corpus, queries, qrels = bench.beir("en")          # multilingual pool of en + de
        >>> len(queries), len(corpus), len(qrels["en/56beb4343aeaaa14008c925b"])
        (1190, 2456, 2)
    """

    def __init__(
        self,
        splits: dict[str, LanguageSplit] | Sequence[LanguageSplit],
        name: str = "benchmark",
        report: ValidationReport | None = None,
    ) -> None:
        if not isinstance(splits, Mapping):
            splits = {s.language: s for s in splits}
        if not splits:
            raise DataValidationError(f"{name}: no language")
        mismatched = [(key, s.language) for key, s in splits.items() if key != s.language]
        if mismatched:
            raise DataValidationError(f"{name}: split(s) filed under another language (key, split.language): {mismatched}")
        self.name = name
        self.languages = sorted(splits)
        self.report = report if report is not None else ValidationReport()
        self.group_ids, groups = _align_groups(name, [splits[lang] for lang in self.languages])
        self._splits = {lang: dataclasses.replace(splits[lang], question_groups=g) for lang, g in zip(self.languages, groups)}

    @property
    def splits(self) -> Mapping[str, LanguageSplit]:
        """``{language: LanguageSplit}``, read-only."""
        return MappingProxyType(self._splits)

    def __repr__(self) -> str:
        return f"RetrievalBenchmark({self.name!r}, languages={self.languages}, groups={len(self.group_ids)})"

    def _pool_languages(self, corpus_languages: str | Sequence[str] | None) -> list[str]:
        if corpus_languages is None:
            return list(self.languages)
        langs = [corpus_languages] if isinstance(corpus_languages, str) else list(corpus_languages)
        self._check_languages(langs)
        return langs

    def _check_languages(self, langs: Sequence[str]) -> None:
        unknown = [lang for lang in langs if lang not in self.splits]
        if unknown:
            raise ValueError(f"{self.name}: unknown language(s) {unknown}; it has {self.languages}")

    def pool(self, corpus_languages: str | Sequence[str] | None = None) -> list[tuple[str, int]]:
        """``(language, sentence index)`` of each column of the candidate pool, in pool order."""
        return [(lang, i) for lang in self._pool_languages(corpus_languages) for i in range(len(self.splits[lang].sentences))]

    def group_answer_columns(self, corpus_languages: str | Sequence[str] | None = None) -> np.ndarray:
        """int64 ``[groups x pool languages]``: the pool column of each group's answer per language, -1 if absent."""
        langs = self._pool_languages(corpus_languages)
        table = np.full((len(self.group_ids), len(langs)), -1, dtype=np.int64)
        offset = 0
        for j, lang in enumerate(langs):
            split = self.splits[lang]
            table[split.question_groups, j] = offset + split.answer_sentence
            offset += len(split.sentences)
        return table

    def relevance(
        self, query_language: str, corpus_languages: str | Sequence[str] | None = None
    ) -> tuple[np.ndarray, sp.csr_matrix]:
        """Relevance of the queries of ``query_language`` against a pool (None = all languages).

        Returns ``(query_rows, rel)``: the indices (into ``splits[query_language].questions``) of the queries with at
        least one relevant candidate in the pool, and a boolean CSR matrix ``[len(query_rows) x pool size]``.
        """
        self._check_languages([query_language])
        langs = self._pool_languages(corpus_languages)
        columns = self.group_answer_columns(langs)[self.splits[query_language].question_groups]
        present = columns >= 0
        query_rows = np.flatnonzero(present.any(axis=1))
        columns, present = columns[query_rows], present[query_rows]
        indptr = np.concatenate([[0], np.cumsum(present.sum(axis=1))])
        indices = columns[present]  # row-major order
        size = sum(len(self.splits[lang].sentences) for lang in langs)
        rel = sp.csr_matrix((np.ones(len(indices), dtype=bool), indices, indptr), shape=(len(query_rows), size))
        rel.sort_indices()
        return query_rows, rel

    def beir(
        self, query_language: str, corpus_languages: str | Sequence[str] | None = None, with_context: bool = True
    ) -> tuple[dict[str, dict[str, str]], dict[str, str], dict[str, dict[str, int]]]:
        """The setting as BEIR dicts ``(corpus, queries, qrels)``.

        ``corpus[doc_id] = {"text": sentence, "title": "", "context": paragraph}`` (``context`` omitted with
        ``with_context=False``), ``queries[qid] = question``, ``qrels[qid] = {doc_id: 1}``. Queries with no relevant
        candidate in the pool are left out. ``corpus_languages=None`` is the multilingual pool of all languages.
        """
        langs = self._pool_languages(corpus_languages)
        doc_ids: list[str] = []
        corpus: dict[str, dict[str, str]] = {}
        for lang in langs:
            split = self.splits[lang]
            for i, (sentence, p) in enumerate(zip(split.sentences, split.sentence_paragraph)):
                doc_id = f"{lang}/{i}"
                doc_ids.append(doc_id)
                corpus[doc_id] = {"text": sentence, "title": ""}
                if with_context:
                    corpus[doc_id]["context"] = split.paragraphs[p]
        query_rows, rel = self.relevance(query_language, langs)
        split = self.splits[query_language]
        queries, qrels = {}, {}
        for r, row in enumerate(query_rows):
            qid = f"{query_language}/{split.question_ids[row]}"
            queries[qid] = split.questions[row]
            qrels[qid] = {doc_ids[c]: 1 for c in rel.indices[rel.indptr[r] : rel.indptr[r + 1]]}
        return corpus, queries, qrels

    def to_parallel_corpus(
        self, passage: Literal["sentence", "paragraph", "sentence_with_context"] = "sentence"
    ) -> ParallelCorpus:
        """The (question, answer passage) training view: one group per question id, one row per language.

        ``passage`` chooses the positive: the answer sentence (default), its paragraph, or the sentence with its
        paragraph as the evaluator encodes candidates (``CANDIDATE_WITH_CONTEXT``).
        """
        from .corpus import ParallelCorpus

        if passage not in ("sentence", "paragraph", "sentence_with_context"):
            raise ValueError(f"passage must be 'sentence', 'paragraph' or 'sentence_with_context', got {passage!r}")
        records = []
        for lang in self.languages:
            split = self.splits[lang]
            for qid, question, s in zip(split.question_ids, split.questions, split.answer_sentence):
                par = split.paragraphs[split.sentence_paragraph[s]]
                text = {
                    "sentence": split.sentences[s],
                    "paragraph": par,
                    "sentence_with_context": CANDIDATE_WITH_CONTEXT.format(sentence=split.sentences[s], context=par),
                }[passage]
                records.append({"group": qid, "lang": lang, "query": question, "passage": text, "source": self.name})
        return ParallelCorpus.from_records(records, name=self.name)

    def select_languages(self, languages: Sequence[str]) -> RetrievalBenchmark:
        """A new benchmark restricted to ``languages`` (this one is left as it is).

        Group indices are assigned afresh over the kept languages; ``report`` is a copy of this one's.
        """
        if isinstance(languages, str):
            languages = [languages]
        self._check_languages(list(languages))
        if not languages:
            raise ValueError(f"{self.name}: select_languages needs at least one language; it has {self.languages}")
        return RetrievalBenchmark({lang: self.splits[lang] for lang in languages}, name=self.name,
                                  report=ValidationReport(list(self.report.issues)))


def _align_groups(name: str, splits: Sequence[LanguageSplit]) -> tuple[list[str], list[np.ndarray]]:
    """Group ids (question ids in order of first appearance over ``splits``) and each split's group indices.

    Aligned questions must agree on their number of answers; a mismatch raises naming the id and both languages.
    Vectorised in Arrow.
    """
    sizes = [len(s.question_ids) for s in splits]
    per_split = []
    for s in splits:
        try:
            ids = pa.array(s.question_ids, pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            kinds = sorted({type(q).__name__ for q in s.question_ids})
            raise DataValidationError(
                f"{name}: language {s.language!r}" + (f" (file {s.file})" if s.file else "")
                + f": question ids must be strings, got {kinds}"
            ) from None
        if ids.null_count:
            raise DataValidationError(
                f"{name}: language {s.language!r}" + (f" (file {s.file})" if s.file else "")
                + f": question {int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])} has no id (None)"
            )
        per_split.append(ids)
    ids = pa.concat_arrays(per_split)
    encoded = pc.dictionary_encode(ids)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    group_ids = encoded.dictionary.to_pylist()
    counts = np.concatenate([np.asarray(s.answer_counts, dtype=np.int64) for s in splits])
    lang_of = np.repeat(np.arange(len(splits)), sizes)
    _, first = np.unique(codes, return_index=True)  # first occurrence of each group (codes are 0..groups-1)
    bad = np.flatnonzero(counts != counts[first[codes]])
    if len(bad):
        i = int(bad[0])
        f = int(first[codes[i]])
        split = splits[lang_of[i]]
        raise DataValidationError(
            f"{name}: question id {group_ids[codes[i]]!r} has {int(counts[f])} answer(s) in language "
            f"{splits[lang_of[f]].language!r} but {int(counts[i])} in language {split.language!r}"
            + (f" (file {split.file})" if split.file else "")
        )
    return group_ids, np.split(codes, np.cumsum(sizes)[:-1])


def _kind(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    text = repr(value)
    return f"{names.get(type(value), type(value).__name__)} ({text[:40] + '...' if len(text) > 40 else text})"


def paragraph_questions(par: dict, p_idx: int, file: str, language: str, validator: Validator) -> list:
    """The ``qas`` list of a SQuAD paragraph; anything but a list is a problem (reported, no question kept)."""
    qas = par.get("qas", [])
    if qas is None:
        return []
    if not isinstance(qas, list):
        validator.problem(f"'qas' is {_kind(qas)}, expected a list of questions", file=file,
                          row=f"paragraph {p_idx}", language=language)
        return []
    return qas


def question_problem(qa: object) -> str | None:
    """What is wrong with the shape of one SQuAD question entry, or ``None`` when it has the expected shape
    (an object whose ``answers``, when present, is a list of objects)."""
    if not isinstance(qa, dict):
        return f"the question is {_kind(qa)}, expected an object with 'id', 'question' and 'answers'"
    answers = qa.get("answers")
    if answers is not None and not isinstance(answers, list):
        return f"'answers' is {_kind(answers)}, expected a list of objects"
    for j, ans in enumerate(answers or []):
        if not isinstance(ans, dict):
            return f"answer {j} is {_kind(ans)}, expected an object with 'text' and 'answer_start'"
    return None


def checked_question(
    qa: object, p_idx: int, q_idx: int, file: str, language: str, validator: Validator, seen: Mapping[str, str]
) -> tuple[str, str, dict[str, str]] | None:
    """``(id, question, where)`` of one SQuAD question entry, or ``None`` after reporting what is wrong with it.

    The checks every SQuAD-format reader shares: the entry's shape (:func:`question_problem`), a non-empty id not in
    ``seen`` (id -> where the first one was, for the message), and a non-empty question string. ``where`` names the
    file, the row (the id, or paragraph and question index) and the language, for the reader's own later checks.

    Example::

        >>> from sentence_transformers_hybrid.data.validation import Validator
        >>> v = Validator(strict=False)
        >>> checked_question({"id": "q1", "question": "Who?"}, 0, 0, "en.json", "en", v, {})[:2]
        ('q1', 'Who?')
        >>> checked_question({"id": "q1", "question": "Who?"}, 0, 1, "en.json", "en", v, {"q1": "question #0"})
        >>> print(v.report.issues[-1])
        file 'en.json', row 'q1', language 'en': duplicate question id (also question #0)
    """
    shape = question_problem(qa)
    if shape:
        validator.problem(shape, file=file, row=f"paragraph {p_idx}, question {q_idx}", language=language)
        return None
    assert isinstance(qa, dict)
    qid = str(qa.get("id", "") or "")
    where = {"file": file, "row": qid or f"paragraph {p_idx}, question {q_idx}", "language": language}
    question = qa.get("question")
    if not qid:
        validator.problem("question without an id", **where)
    elif qid in seen:
        validator.problem(f"duplicate question id (also {seen[qid]})", **where)
    elif question is not None and not isinstance(question, str):
        validator.problem(f"'question' is {_kind(question)}, expected a string", **where)
    elif not question or not question.strip():
        validator.problem("empty question", **where)
    else:
        return qid, question, where
    return None


def build_split(
    language: str,
    paragraphs: Sequence[dict],
    file: str,
    validator: Validator,
) -> LanguageSplit:
    """Build a :class:`LanguageSplit` from SQuAD-layout paragraphs that carry ``sentences`` and ``sentence_breaks``.

    Each paragraph: ``{"context", "sentences", "sentence_breaks": [[start, end), ...], "qas": [{"id", "question",
    "answers": [{"text", "answer_start"}]}]}``. The answer sentence of a question is the one whose span holds its
    first answer's ``answer_start`` (a start in the whitespace between two sentences belongs to the next one).
    """
    question_ids: list[str] = []
    questions: list[str] = []
    answer_sentence: list[int] = []
    answer_counts: list[int] = []
    answers: list[str] = []
    sentences: list[str] = []
    sentence_paragraph: list[int] = []
    paragraph_texts: list[str] = []
    seen: dict[str, str] = {}  # id -> "question #i of this file"
    for p_idx, par in enumerate(paragraphs):
        context = par["context"]
        where_par = f"file {file!r}, language {language!r}, paragraph {p_idx}"
        sents = par["sentences"]
        if not isinstance(sents, list) or not all(isinstance(t, str) for t in sents):
            raise DataValidationError(f"{where_par}: 'sentences' is {_kind(sents)}, expected a list of strings")
        try:
            breaks = np.asarray(par["sentence_breaks"], dtype=np.int64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise DataValidationError(
                f"{where_par}: 'sentence_breaks' is {_kind(par['sentence_breaks'])}, expected [[start, end], ...] integers"
            ) from None
        if len(sents) != len(breaks) or not sents:
            raise DataValidationError(
                f"file {file!r}, language {language!r}, paragraph {p_idx}: {len(sents)} sentences but "
                f"{len(breaks)} sentence_breaks (expected the same, at least one)"
            )
        offset = len(sentences)
        paragraph_texts.append(context)
        sentences.extend(sents)
        sentence_paragraph.extend([p_idx] * len(sents))
        ends = breaks[:, 1]
        for q_idx, qa in enumerate(paragraph_questions(par, p_idx, file, language, validator)):
            checked = checked_question(qa, p_idx, q_idx, file, language, validator, seen)
            if checked is None:
                continue
            qid, question, where = checked
            ans = qa.get("answers") or []
            if not ans:
                validator.problem("question without an answer", **where)
                continue
            start = ans[0].get("answer_start")
            if not isinstance(start, int) or not 0 <= start < len(context):
                validator.problem(
                    f"answer_start {start!r} outside the paragraph (length {len(context)}, paragraph {p_idx})", **where
                )
                continue
            s = int(np.searchsorted(ends, start, side="right"))
            if s >= len(sents):
                validator.problem(f"answer_start {start} after the last sentence break {ends[-1]}", **where)
                continue
            seen[qid] = f"question #{len(question_ids)} of this file"
            question_ids.append(qid)
            questions.append(question)
            answer_sentence.append(offset + s)
            answer_counts.append(len(ans))
            answers.append(str(ans[0].get("text", "")))
    if not question_ids:
        raise DataValidationError(f"file {file!r}, language {language!r}: no valid question")
    return LanguageSplit(
        language=language,
        question_ids=question_ids,
        questions=questions,
        question_groups=np.zeros(len(question_ids), dtype=np.int64),
        sentences=sentences,
        paragraphs=paragraph_texts,
        sentence_paragraph=np.asarray(sentence_paragraph, dtype=np.int64),
        answer_sentence=np.asarray(answer_sentence, dtype=np.int64),
        answer_counts=np.asarray(answer_counts, dtype=np.int64),
        answers=answers,
        file=file,
    )


def subsample_benchmark(bench: RetrievalBenchmark, max_questions: int) -> RetrievalBenchmark:
    """A smaller benchmark for quick checks: the first ``max_questions`` groups (question ids) in every language,
    and as candidate pool every sentence of the paragraphs that hold their answers (all languages).

    A new benchmark: ``bench`` is left as it is; the new one keeps a copy of ``bench.report``.
    """
    if isinstance(max_questions, bool) or not isinstance(max_questions, (int, np.integer)) or max_questions < 1:
        raise ValueError(f"max_questions must be a positive integer, got {max_questions!r}")
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
    return RetrievalBenchmark(splits, name=bench.name, report=ValidationReport(list(bench.report.issues)))


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
