"""MIRACL (Zhang et al., 2023) exactly as distributed: topics, TREC qrels and the passage corpus, per language.

The layout (the Hub datasets ``miracl/miracl`` and ``miracl/miracl-corpus``, or a local folder holding both)::

    {data_dir}/miracl-v1.0-{lang}/topics/topics.miracl-v1.0-{lang}-{split}.tsv    qid<TAB>query
    {data_dir}/miracl-v1.0-{lang}/qrels/qrels.miracl-v1.0-{lang}-{split}.tsv      qid Q0 docid rel
    {data_dir}/miracl-corpus-v1.0-{lang}/docs-*.jsonl.gz                           {"docid", "title", "text"}

Topics and qrels are small and read whole (qrels rows with ``rel`` 0 are kept: judged, not relevant); the corpus is
a :class:`~.passages.PassageSource`, streamed file by file when encoded.

Example:
    >>> import gzip, json, pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_miracl_layout(root, "sw", {"q1": "Nairobi iko wapi?"}, {"q1": {"d1": 1, "d2": 0}},
    ...                         [{"docid": "d1", "title": "Nairobi", "text": "ni mji mkuu wa Kenya."},
    ...                          {"docid": "d2", "title": "Lima", "text": "ni mji mkuu wa Peru."}])
    >>> data = load_miracl("sw", data_dir=root)
    >>> data.queries, data.qrels, data.corpus.count()
    ({'q1': 'Nairobi iko wapi?'}, {'q1': {'d1': 1, 'd2': 0}}, 2)
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .passages import TITLE_FORMAT, PassageSource, encode_docids
from .validation import DataValidationError

__all__ = ["MIRACL_LANGUAGES", "MiraclData", "check_qrels_docids", "load_miracl", "miracl_paths",
           "read_qrels", "read_topics", "write_miracl_layout"]

#: MIRACL's 18 languages (16 with training data + the surprise languages de and yo).
MIRACL_LANGUAGES: tuple[str, ...] = ("ar", "bn", "de", "en", "es", "fa", "fi", "fr", "hi", "id", "ja", "ko", "ru",
                                     "sw", "te", "th", "yo", "zh")
#: The Hub datasets MIRACL is distributed in (topics + qrels; the corpus).
HUB_TOPICS_REPO = "miracl/miracl"
HUB_CORPUS_REPO = "miracl/miracl-corpus"


@dataclass
class MiraclData:
    """One language and split of MIRACL: ``queries`` ``{qid: text}``, ``qrels`` ``{qid: {docid: rel}}`` (rel 0
    rows kept) and the streamed ``corpus``."""

    language: str
    split: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    corpus: PassageSource

    @property
    def judged_queries(self) -> list[str]:
        """The topics with at least one relevant (rel > 0) passage: the queries trec_eval scores."""
        return [q for q in self.queries if any(r > 0 for r in self.qrels.get(q, {}).values())]


def _file_order(path: Path) -> tuple[int, str]:
    """Corpus files in MIRACL's numeric order: ``docs-2`` before ``docs-10`` (the Hub's names are not zero-padded,
    and the corpus row order, so the tie rule's order, follows this).

    Example::

        >>> [p.name for p in sorted(map(Path, ["docs-10.jsonl.gz", "docs-2.jsonl.gz", "docs-1.jsonl.gz"]), key=_file_order)]
        ['docs-1.jsonl.gz', 'docs-2.jsonl.gz', 'docs-10.jsonl.gz']
    """
    stem = path.name.split(".", 1)[0].removeprefix("docs-")
    return (int(stem), path.name) if stem.isdigit() else (-1, path.name)


def miracl_paths(language: str, split: str, data_dir: str | os.PathLike) -> tuple[Path, Path, str]:
    """``(topics file, qrels file, corpus glob)`` of a language and split under ``data_dir``."""
    root = Path(data_dir)
    base = root / f"miracl-v1.0-{language}"
    return (base / "topics" / f"topics.miracl-v1.0-{language}-{split}.tsv",
            base / "qrels" / f"qrels.miracl-v1.0-{language}-{split}.tsv",
            str(root / f"miracl-corpus-v1.0-{language}" / "docs-*.jsonl.gz"))


def load_miracl(language: str, split: str = "dev", data_dir: str | os.PathLike | None = None, *,
                title_format: str = TITLE_FORMAT) -> MiraclData:
    """Read MIRACL's ``language`` / ``split`` from ``data_dir`` (the layout above), or from the Hub when
    ``data_dir`` is ``None``.

    Without ``data_dir``, the files of that language are downloaded (once, into the Hugging Face cache) from the
    dataset repositories ``miracl/miracl`` (``miracl-v1.0-{lang}/``) and ``miracl/miracl-corpus``
    (``miracl-corpus-v1.0-{lang}/``) with ``huggingface_hub.snapshot_download``: the same files, the same reader.
    Both repositories are gated: accept their terms on the Hub and log in (``hf auth login``) first. English's
    corpus is 66 files.

    ``title_format``: how a passage becomes the encoded text (default ``"{title} {text}"``, as MIRACL's baselines;
    ``"{text}"`` leaves titles out).

    Raises:
        FileNotFoundError: a language with no files, naming every path tried.
        DataValidationError: a malformed topics or qrels line (file and line), a query id twice, qrels of a query
            the topics lack.
    """
    if data_dir is None:
        topics_root, corpus_root = _download(language, split)
    else:
        topics_root = corpus_root = Path(data_dir)
    topics, qrels_path, _ = miracl_paths(language, split, topics_root)
    _, _, corpus_glob = miracl_paths(language, split, corpus_root)
    corpus_dir = Path(corpus_glob).parent
    files = sorted(corpus_dir.glob("docs-*.jsonl.gz"), key=_file_order) if corpus_dir.is_dir() else []
    missing = [str(p) for p in (topics, qrels_path) if not p.is_file()] + ([] if files else [corpus_glob])
    if missing:
        where = f"under {data_dir}" if data_dir is not None else "in the Hub download"
        raise FileNotFoundError(f"MIRACL {language!r} ({split}): no files {where}; tried: {', '.join(missing)}")
    queries = read_topics(topics)
    qrels = read_qrels(qrels_path)
    unknown = [q for q in qrels if q not in queries]
    if unknown:
        raise DataValidationError(f"{qrels_path}: judges {len(unknown)} queries that {topics.name} lacks, e.g. "
                                  f"{unknown[0]!r}")
    return MiraclData(language, split, queries, qrels, PassageSource.from_jsonl_gz(files, title_format=title_format))


def _download(language: str, split: str) -> tuple[Path, Path]:  # pragma: no cover - needs the network
    from huggingface_hub import snapshot_download

    topics = snapshot_download(HUB_TOPICS_REPO, repo_type="dataset", allow_patterns=[f"miracl-v1.0-{language}/*"])
    corpus = snapshot_download(HUB_CORPUS_REPO, repo_type="dataset",
                               allow_patterns=[f"miracl-corpus-v1.0-{language}/*"])
    return Path(topics), Path(corpus)


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            yield i, line.rstrip("\n").rstrip("\r")


def read_topics(path: str | os.PathLike) -> dict[str, str]:
    """``{qid: query}`` of a ``qid<TAB>query`` file; a malformed line or a qid twice names the file and line(s)."""
    path = Path(path)
    out: dict[str, str] = {}
    where: dict[str, int] = {}
    for i, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise DataValidationError(f"{path}, line {i}: expected 'qid<TAB>query', got {line[:80]!r}")
        qid = parts[0].strip()
        if qid in out:
            raise DataValidationError(f"{path}: query id {qid!r} occurs twice, lines {where[qid]} and {i}")
        out[qid], where[qid] = parts[1].strip(), i
    return out


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """``{qid: {docid: rel}}`` of a TREC qrels file (``qid Q0 docid rel``, whitespace-separated); rel 0 rows are
    kept. A malformed line, or a (qid, docid) judged twice, names the file and line(s)."""
    path = Path(path)
    out: dict[str, dict[str, int]] = {}
    where: dict[tuple[str, str], int] = {}
    for i, line in _lines(path):
        parts = line.split()
        if not parts:
            raise DataValidationError(f"{path}, line {i}: a blank line; expected 'qid Q0 docid rel'")
        if len(parts) != 4 or not _is_int(parts[3]):
            raise DataValidationError(f"{path}, line {i}: expected 'qid Q0 docid rel' (rel an integer), got "
                                      f"{line[:80]!r}")
        qid, _, docid, rel = parts
        if (qid, docid) in where:
            raise DataValidationError(f"{path}: query {qid!r} judges {docid!r} twice, lines {where[qid, docid]} and {i}")
        where[qid, docid] = i
        out.setdefault(qid, {})[docid] = int(rel)
    return out


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def check_qrels_docids(qrels: Mapping[str, Mapping[str, int]], corpus_docids: np.ndarray, *, language: str = "",
                       qrels_file: str | None = None) -> None:
    """Raise :class:`DataValidationError` naming a qrels docid (and its query) absent from the corpus.

    ``corpus_docids``: every docid of the corpus as an ``S`` array (e.g. ``CorpusIndex.docid_bytes()``); the
    check is one vectorised ``np.isin`` over the judged docids.
    """
    pairs = [(q, d) for q, judged in qrels.items() for d in judged]
    if not pairs:
        return
    judged = encode_docids([d for _, d in pairs])
    width = max(judged.dtype.itemsize, corpus_docids.dtype.itemsize if len(corpus_docids) else 1)
    found = np.isin(judged.astype(f"S{width}"), np.asarray(corpus_docids).astype(f"S{width}"))
    if not found.all():
        missing = np.nonzero(~found)[0]
        q, d = pairs[int(missing[0])]
        src = f" ({qrels_file})" if qrels_file else ""
        lang = f"{language}: " if language else ""
        raise DataValidationError(f"{lang}qrels{src} judge docid {d!r} (query {q!r}) that is not in the corpus; "
                                  f"{len(missing)} judged docid(s) missing in all")


def write_miracl_layout(
    root: str | os.PathLike,
    language: str,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    passages: Sequence[Mapping[str, str]],
    *,
    split: str = "dev",
    files: int = 1,
) -> Path:
    """Write a small corpus in MIRACL's layout under ``root`` (tests, examples, converted benchmarks): topics,
    qrels and ``files`` gzipped ``docs-NN.jsonl.gz`` files (the passages split evenly, in order). Returns ``root``.
    """
    root = Path(root)
    topics, qrels_path, corpus_glob = miracl_paths(language, split, root)
    topics.parent.mkdir(parents=True, exist_ok=True)
    qrels_path.parent.mkdir(parents=True, exist_ok=True)
    topics.write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()), encoding="utf-8")
    qrels_path.write_text("".join(f"{q}\tQ0\t{d}\t{r}\n" for q, judged in qrels.items() for d, r in judged.items()),
                          encoding="utf-8")
    corpus_dir = Path(corpus_glob).parent
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for n, part in enumerate(np.array_split(np.arange(len(passages)), max(1, files))):
        with gzip.open(corpus_dir / f"docs-{n:02d}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i in part:
                f.write(json.dumps(dict(passages[int(i)]), ensure_ascii=False) + "\n")
    return root
