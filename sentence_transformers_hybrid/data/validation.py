"""Errors and reports for bad input data.

Every loader raises :class:`DataValidationError` (a ``ValueError``) that names the file, the row or question id,
the group and the language at fault. With ``strict=False`` a loader skips the bad rows instead, and records each
one in a :class:`ValidationReport` (also logged as a warning) so that nothing is dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


class DataValidationError(ValueError):
    """Bad input data. The message names the file, row / question id, group and language at fault."""


@dataclass
class Issue:
    """One skipped row or question: where it was and why it was skipped."""

    reason: str
    file: str | None = None
    row: int | str | None = None
    group: str | None = None
    language: str | None = None

    def __str__(self) -> str:
        where = ", ".join(
            f"{k} {v!r}" if isinstance(v, str) else f"{k} {v}"
            for k, v in (("file", self.file), ("row", self.row), ("group", self.group), ("language", self.language))
            if v is not None
        )
        return f"{where}: {self.reason}" if where else self.reason


@dataclass
class ValidationReport:
    """What a non-strict load skipped. ``len(report)`` is the number of skipped rows or questions."""

    issues: list[Issue] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.issues)

    def __bool__(self) -> bool:
        return bool(self.issues)

    def __iter__(self):
        return iter(self.issues)

    def summary(self, limit: int = 10) -> str:
        lines = [f"skipped {len(self.issues)} bad row(s):"] + [f"  - {i}" for i in self.issues[:limit]]
        if len(self.issues) > limit:
            lines.append(f"  ... and {len(self.issues) - limit} more (see .issues)")
        return "\n".join(lines)


class Validator:
    """Raises at the first problem (``strict=True``) or collects it into a report (``strict=False``).

    Example::

        >>> from sentence_transformers_hybrid.data.validation import Validator
        >>> Validator().problem("empty query", file="train.jsonl", row=7, language="de")
        Traceback (most recent call last):
        ...
        sentence_transformers_hybrid.data.validation.DataValidationError: file 'train.jsonl', row 7, language 'de': empty query ...
        >>> lenient = Validator(strict=False)
        >>> lenient.problem("empty query", file="train.jsonl", row=7, language="de")
        >>> print(lenient.report.summary())
        skipped 1 bad row(s):
          - file 'train.jsonl', row 7, language 'de': empty query
    """

    def __init__(self, strict: bool = True, report: ValidationReport | None = None) -> None:
        self.strict = strict
        self.report = report if report is not None else ValidationReport()

    def problem(self, reason: str, **where) -> None:
        issue = Issue(reason, **where)
        if self.strict:
            raise DataValidationError(f"{issue} (pass strict=False to skip such rows and get a report)")
        self.report.issues.append(issue)

    def finish(self, what: str) -> ValidationReport:
        if self.report:
            logger.warning("%s: %s", what, self.report.summary())
        return self.report


EXAMPLES_LOGGED = 3


def log_removed(what: str, issues: Sequence[Issue], kept: int, logger: logging.Logger = logger) -> None:
    """Log a count per reason and a few examples of what an adapter removed."""
    if not issues:
        logger.info("%s: kept all %d rows", what, kept)
        return
    by_reason: dict[str, list[Issue]] = {}
    for issue in issues:
        by_reason.setdefault(issue.reason.split(":")[0], []).append(issue)
    lines = [f"{what}: kept {kept} rows, removed {len(issues)}:"]
    for reason, items in by_reason.items():
        lines.append(f"  {len(items)} x {reason}, e.g.")
        lines.extend(f"    - {i}" for i in items[:EXAMPLES_LOGGED])
    logger.warning("\n".join(lines))
