"""Write a LAReQA benchmark (MLQA-R, XQuAD-R) in MIRACL's on-disk layout, a real-text check of the MIRACL path.

    python scripts/lareqa_to_miracl.py --benchmark mlqa-r --languages de en --output-dir /tmp/mlqa-miracl
    st-hybrid miracl --model M --data-dir /tmp/mlqa-miracl --languages de en --split dev --output-dir /tmp/out

For each language ``L`` (monolingual retrieval, as MIRACL: ``L`` questions against the ``L`` pool):

* ``miracl-v1.0-L/topics/topics.miracl-v1.0-L-{split}.tsv``: ``qid<TAB>question`` (the LAReQA question id; a tab
  or line break inside a question becomes a space);
* ``miracl-v1.0-L/qrels/qrels.miracl-v1.0-L-{split}.tsv``: ``qid<TAB>Q0<TAB>docid<TAB>rel``, rel 1 for the
  passage holding the answer; with ``passages="sentences"`` the other sentences of the answer's paragraph are
  written as judged non-relevant (rel 0), as MIRACL's annotators judge the passages they read;
* ``miracl-corpus-v1.0-L/docs-NN.jsonl.gz``: ``{"docid", "title", "text"}`` a line, about ``docs_per_file`` a file.

Passages. ``"sentences"`` (default) is LAReQA's candidate pool: every sentence of every paragraph (the
``sentences`` field, duplicates kept), the answer sentence relevant; so the MIRACL path scores the same pool the
LAReQA evaluator ranks with ``candidate_context=False`` (title empty, text the sentence: LAReQA's paragraph context
has no place in MIRACL's ``title + " " + text``). docid ``"{paragraph}#{sentence in paragraph}"``, shaped like
MIRACL's ``"{article}#{passage}"``. ``"paragraphs"``: one passage per paragraph (docid ``"{paragraph}"``), the
answer's paragraph relevant; a coarser pool than LAReQA's.

Files are written in the pool's order (row ``i`` of the corpus is candidate ``i``) by the package's own MIRACL
writer (:func:`sentence_transformers_hybrid.data.miracl.write_miracl_layout`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from sentence_transformers_hybrid import load_lareqa  # noqa: E402
from sentence_transformers_hybrid.data.benchmark import RetrievalBenchmark, subsample_benchmark  # noqa: E402
from sentence_transformers_hybrid.data.miracl import write_miracl_layout  # noqa: E402

PASSAGES = ("sentences", "paragraphs")


def _clean(text: str) -> str:
    """One TSV field: no tab, no line break."""
    return " ".join(str(text).replace("\t", " ").splitlines()).strip()


def language_tables(bench: RetrievalBenchmark, lang: str, passages: str = "sentences", judge_paragraph: bool = True
                    ) -> tuple[list[str], list[str], list[tuple[str, str]], list[tuple[str, str, int]]]:
    """``(docids, passage texts, topics [(qid, question)], qrels [(qid, docid, rel)])`` of one language, in pool
    order. Only questions with a relevant passage in the language's own pool are topics."""
    if passages not in PASSAGES:
        raise ValueError(f"passages must be one of {PASSAGES}, got {passages!r}")
    split = bench.splits[lang]
    par = np.asarray(split.sentence_paragraph)
    if passages == "sentences":
        order = np.argsort(par, kind="stable")  # a sentence's position inside its paragraph
        pos = np.empty(len(par), dtype=np.int64)
        pos[order] = np.arange(len(par)) - np.searchsorted(par[order], par[order], side="left")
        docids = [f"{p}#{j}" for p, j in zip(par.tolist(), pos.tolist())]
        texts = list(split.sentences)
    else:
        docids = [str(p) for p in range(len(split.paragraphs))]
        texts = list(split.paragraphs)
    query_rows, rel = bench.relevance(lang, [lang])
    topics, qrels = [], []
    for r, row in enumerate(query_rows.tolist()):
        qid = _clean(split.question_ids[row])
        topics.append((qid, _clean(split.questions[row])))
        cols = rel.indices[rel.indptr[r]:rel.indptr[r + 1]]
        if passages == "sentences":
            relevant = set(cols.tolist())
            judged = np.flatnonzero(np.isin(par, par[cols])) if judge_paragraph else cols
            qrels += [(qid, docids[c], int(c in relevant)) for c in judged.tolist()]
        else:
            qrels += [(qid, docids[p], 1) for p in np.unique(par[cols]).tolist()]
    return docids, texts, topics, qrels


def write_lareqa_as_miracl(
    bench: RetrievalBenchmark,
    output_dir: str | Path,
    *,
    languages: Sequence[str] | None = None,
    split: str = "dev",
    passages: str = "sentences",
    docs_per_file: int = 100_000,
    judge_paragraph: bool = True,
) -> dict[str, dict[str, int]]:
    """Write ``bench`` in MIRACL's layout under ``output_dir`` (through the package's own writer,
    :func:`sentence_transformers_hybrid.data.miracl.write_miracl_layout`); returns ``{lang: {"topics", "qrels",
    "passages", "files"}}`` counts."""
    if docs_per_file < 1:
        raise ValueError(f"docs_per_file must be >= 1, got {docs_per_file}")
    counts: dict[str, dict[str, int]] = {}
    for lang in languages or bench.languages:
        docids, texts, topics, qrels = language_tables(bench, lang, passages, judge_paragraph)
        qrel_dict: dict[str, dict[str, int]] = {}
        for qid, docid, rel in qrels:
            qrel_dict.setdefault(qid, {})[docid] = rel
        n_files = max(1, -(-len(docids) // docs_per_file))
        corpus_dir = Path(output_dir) / f"miracl-corpus-v1.0-{lang}"
        for old in corpus_dir.glob("docs-*.jsonl.gz"):  # a rerun with fewer files leaves none behind
            old.unlink()
        write_miracl_layout(output_dir, lang, dict(topics), qrel_dict,
                            [{"docid": d, "title": "", "text": t} for d, t in zip(docids, texts)],
                            split=split, files=n_files)
        counts[lang] = {"topics": len(topics), "qrels": len(qrels), "passages": len(docids), "files": n_files}
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmark", default="mlqa-r", choices=["mlqa-r", "xquad-r"])
    ap.add_argument("--languages", nargs="+", default=None, help="default: all of the benchmark's")
    ap.add_argument("--data-dir", default=None, help="folder holding xquad-r/ and mlqa-r/ (default $STH_DATA_DIR)")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--passages", default="sentences", choices=PASSAGES)
    ap.add_argument("--max-questions", type=int, default=None,
                    help="keep the first N questions and the paragraphs holding their answers (subsample_benchmark)")
    ap.add_argument("--docs-per-file", type=int, default=100_000)
    ap.add_argument("--no-judged-negatives", action="store_true",
                    help="write only the rel 1 rows (default: the answer paragraph's other sentences as rel 0)")
    args = ap.parse_args(argv)
    bench = load_lareqa(args.benchmark, data_dir=args.data_dir, languages=args.languages, download=False)
    if args.max_questions:
        bench = subsample_benchmark(bench, args.max_questions)
    counts = write_lareqa_as_miracl(bench, args.output_dir, split=args.split, passages=args.passages,
                                 docs_per_file=args.docs_per_file, judge_paragraph=not args.no_judged_negatives)
    for lang, c in counts.items():
        print(f"{lang}: {c['topics']} topics, {c['qrels']} qrels rows, {c['passages']} passages in {c['files']} file(s)")


if __name__ == "__main__":
    main()
