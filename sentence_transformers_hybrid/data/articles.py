"""A LAReQA benchmark split by *article* into train and dev parts: :func:`split_lareqa_by_article`,
:func:`lareqa_dev_protocol`, :class:`ArticleSplit`.

The questions of one paragraph share its candidate sentences, and the paragraphs of one article share its topic, so
a dev split that cuts through an article leaks: it is cut by article, never by question. The rule is fixed
(:data:`DEV_EVERY`, :data:`DEV_OFFSET`): the articles at positions ``0, 5, 10, ...`` of the file (every fifth,
starting with the first) are dev, the others train. XQuAD-R's 48 articles (5 paragraphs each, the same articles in
the same order in all 11 files) give 10 dev articles and 38 train articles.

Refused (:class:`DataValidationError`): files whose article titles differ between languages, a dev article that is
also a train article (by title, or by a question id found in both), and a split that leaves a language with no dev
or no train question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .benchmark import RetrievalBenchmark, build_split
from .lareqa import LAREQA_LANGUAGES, read_json, resolve_lareqa_dir, squad_paragraphs
from .validation import DataValidationError, Validator

if TYPE_CHECKING:  # pragma: no cover
    from .corpus import ParallelCorpus

__all__ = ["ArticleSplit", "DEV_EVERY", "DEV_OFFSET", "dev_article_positions", "lareqa_dev_protocol",
           "split_lareqa_by_article"]

#: every ``DEV_EVERY``-th article of the file is a dev article ...
DEV_EVERY = 5
#: ... starting at this position (0: the first article)
DEV_OFFSET = 0


def dev_article_positions(num_articles: int, every: int = DEV_EVERY, offset: int = DEV_OFFSET) -> list[int]:
    """The positions of the dev articles among ``num_articles``: ``offset, offset + every, ...``.

    Example::

        >>> positions = dev_article_positions(48)
        >>> len(positions), positions[:3], positions[-1]
        (10, [0, 5, 10], 45)
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 2:
        raise ValueError(f"every must be an int >= 2 (a dev article every `every` articles), got {every!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < every:
        raise ValueError(f"offset must be an int in [0, every={every}), got {offset!r}")
    return list(range(offset, num_articles, every))


@dataclass(frozen=True)
class ArticleSplit:
    """A benchmark cut by article: ``train`` and ``dev`` (two :class:`RetrievalBenchmark`), the article titles of each
    (in file order) and the rule that made the cut, in words."""

    train: RetrievalBenchmark
    dev: RetrievalBenchmark
    train_articles: list[str]
    dev_articles: list[str]
    rule: str

    def train_corpus(self, passage: str = "sentence") -> ParallelCorpus:
        """The training view of the train articles (:meth:`RetrievalBenchmark.to_parallel_corpus`)."""
        return self.train.to_parallel_corpus(passage=passage)  # type: ignore[arg-type]


def split_lareqa_by_article(
    name: str = "xquad-r",
    data_dir: str | Path | None = None,
    languages: Sequence[str] | None = None,
    every: int = DEV_EVERY,
    offset: int = DEV_OFFSET,
    dev_titles: Sequence[str] | None = None,
    strict: bool = True,
    download: bool = True,
) -> ArticleSplit:
    """Load a LAReQA benchmark and cut it by article into train and dev (see the module docstring for the rule).

    Args:
        name: ``"xquad-r"`` (or ``"mlqa-r"``, whose articles are not parallel across languages: refused there).
        data_dir, languages, strict, download: as :func:`~sentence_transformers_hybrid.data.load_lareqa`.
        every, offset: the rule: the articles at positions ``offset, offset + every, ...`` are dev.
        dev_titles: the dev articles by title instead of the rule (each must be an article of the files).

    Returns:
        :class:`ArticleSplit`; its benchmarks are named ``"{name}-train"`` and ``"{name}-dev"``.

    Example::

        >>> split = split_lareqa_by_article("xquad-r", languages=["en", "de"])   # data from $STH_DATA_DIR
        >>> len(split.dev_articles), len(split.train_articles), split.dev_articles[:2]
        (10, 38, ['Super_Bowl_50', 'Teacher'])
        >>> split.dev.name, len(split.dev.group_ids) + len(split.train.group_ids)
        ('xquad-r-dev', 1190)
    """
    key = name.lower()
    if key not in LAREQA_LANGUAGES:
        raise ValueError(f"unknown LAReQA benchmark {name!r}; expected one of {sorted(LAREQA_LANGUAGES)}")
    langs = list(languages) if languages is not None else LAREQA_LANGUAGES[key]
    unknown = [lang for lang in langs if lang not in LAREQA_LANGUAGES[key]]
    if unknown or not langs:
        raise DataValidationError(f"language(s) {unknown or langs} for {key}; it has {LAREQA_LANGUAGES[key]}")
    root = resolve_lareqa_dir(key, data_dir, download=download)
    articles: dict[str, list[dict]] = {}
    titles: list[str] | None = None
    first = None
    for lang in langs:
        path = root / key / f"{lang}.json"
        if not path.is_file():
            raise DataValidationError(f"file {str(path)!r} not found (language {lang!r} of {key})")
        data = read_json(path)
        squad_paragraphs(data, str(path))  # the shape checks of load_lareqa
        articles[lang] = data["data"]
        these = [str(a.get("title", f"#{i}")) for i, a in enumerate(data["data"])]
        if titles is None:
            titles, first = these, lang
        elif these != titles:
            at = next((i for i, (a, b) in enumerate(zip(titles, these)) if a != b), min(len(titles), len(these)))
            raise DataValidationError(
                f"file {str(path)!r}: its articles differ from those of language {first!r} at position {at} "
                f"({these[at] if at < len(these) else '<none>'!r} vs {titles[at] if at < len(titles) else '<none>'!r}, "
                f"{len(these)} vs {len(titles)} articles): a split by article needs the same articles in every language"
            )
    assert titles is not None
    duplicated = sorted({t for t in titles if titles.count(t) > 1})
    if duplicated:
        raise DataValidationError(f"{key}: article title(s) {duplicated} appear more than once in the files of "
                                  f"{langs}: an article would be in both splits")
    if dev_titles is not None:
        missing = [t for t in dev_titles if t not in titles]
        if missing:
            raise DataValidationError(f"{key}: dev article(s) {missing} are not articles of the files")
        dev_pos = sorted(titles.index(t) for t in dict.fromkeys(dev_titles))
        rule = f"dev = the articles {list(dict.fromkeys(dev_titles))} (by title), train = the others"
    else:
        dev_pos = dev_article_positions(len(titles), every, offset)
        rule = (f"dev = every {every}th article of the {key} files starting at position {offset} (positions "
                f"{offset}, {offset + every}, ...; {len(dev_pos)} of {len(titles)}), train = the other "
                f"{len(titles) - len(dev_pos)}; split by article, never by question")
    dev_set = set(dev_pos)
    train_pos = [i for i in range(len(titles)) if i not in dev_set]
    if not dev_pos or not train_pos:
        raise DataValidationError(f"{key}: the rule gives {len(dev_pos)} dev and {len(train_pos)} train articles of "
                                  f"{len(titles)}: both need at least one")
    train = _benchmark(key, f"{key}-train", root, articles, train_pos, strict)
    dev = _benchmark(key, f"{key}-dev", root, articles, dev_pos, strict)
    check_disjoint(train, dev)
    return ArticleSplit(train=train, dev=dev, train_articles=[titles[i] for i in train_pos],
                        dev_articles=[titles[i] for i in dev_pos], rule=rule)


def _benchmark(key: str, name: str, root: Path, articles: dict[str, list[dict]], positions: list[int],
               strict: bool) -> RetrievalBenchmark:
    validator = Validator(strict)
    splits = {}
    for lang, arts in articles.items():
        file = str(root / key / f"{lang}.json")
        paragraphs = [par for i in positions for par in arts[i]["paragraphs"]]
        has_question = any(isinstance(par, dict) and par.get("qas") for par in paragraphs)
        if not has_question:
            raise DataValidationError(
                f"{name}: language {lang!r} (file {file!r}) has no question in the articles "
                f"{[arts[i].get('title') for i in positions]}: refused (every language needs questions on both sides)"
            )
        try:
            splits[lang] = build_split(lang, paragraphs, file, validator)
        except DataValidationError as err:
            raise DataValidationError(f"{name}: {err}") from None
    return RetrievalBenchmark(splits, name=name, report=validator.finish(f"split_lareqa_by_article({key!r}) {name}"))


def check_disjoint(train: RetrievalBenchmark, dev: RetrievalBenchmark) -> None:
    """Refuse a train and a dev benchmark that share a question id (an article in both splits).

    Example::

        >>> split = split_lareqa_by_article("xquad-r", languages=["en"])   # data from $STH_DATA_DIR
        >>> check_disjoint(split.train, split.train)
        Traceback (most recent call last):
        ...
        sentence_transformers_hybrid.data.validation.DataValidationError: xquad-r-train and xquad-r-train share 899 question id(s) ...: an article in both splits
    """
    shared = sorted(set(train.group_ids) & set(dev.group_ids))
    if shared:
        langs = [lang for lang in dev.languages if shared[0] in dev.splits[lang].question_ids]
        raise DataValidationError(f"{train.name} and {dev.name} share {len(shared)} question id(s) (e.g. "
                                  f"{shared[0]!r} in {langs}): an article in both splits")


def lareqa_dev_protocol(
    data_dir: str | Path | None = None,
    languages: Sequence[str] | None = None,
    passage: str = "sentence",
    name: str = "xquad-r",
) -> tuple[ParallelCorpus, RetrievalBenchmark, list[str]]:
    """``(train corpus, dev benchmark, dev article titles)`` of the fixed dev protocol: :func:`split_lareqa_by_article`
    with the default rule; the corpus is the train articles' training view (``passage`` as
    :meth:`RetrievalBenchmark.to_parallel_corpus`), the dev benchmark is named ``"xquad-r-dev"``.

    Example::

        >>> corpus, dev, titles = lareqa_dev_protocol(languages=["en", "de"])   # data from $STH_DATA_DIR
        >>> dev.name, len(titles), sorted(set(corpus.groups) & set(dev.group_ids))
        ('xquad-r-dev', 10, [])
    """
    split = split_lareqa_by_article(name, data_dir=data_dir, languages=languages)
    return split.train_corpus(passage), split.dev, split.dev_articles
