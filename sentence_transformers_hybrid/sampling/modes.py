"""The batch modes, under one name each, mapped to the paper's names; ``alpha`` checks and descriptions.

=========  ============  =====================================================================================
mode       paper         a batch
=========  ============  =====================================================================================
``mono``   X-X-mono      every query and passage in one language (the language varies from batch to batch)
``cross``  X-Y           per example a query language X and a different passage language Y
``mixed``  X-X           per example one language X for query and passage, languages mixed in a batch
``hybrid`` hybrid        each batch ``mono`` with probability alpha, else ``cross``
=========  ============  =====================================================================================

The experiment compares ``EXPERIMENT_MODES`` (``mono``, ``cross``, ``hybrid``), as the paper does.

``alpha`` belongs to ``hybrid`` alone (:func:`resolve_alpha`): it defaults there to the paper's
:data:`DEFAULT_ALPHA`, another mode takes none, and a configuration records it only for ``hybrid``.

Example::

    >>> PAPER_NAMES["cross"], EXPERIMENT_MODES
    ('X-Y', ('mono', 'cross', 'hybrid'))
    >>> resolve_alpha("hybrid", None), resolve_alpha("mono", None)
    (0.5, None)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Union

MODES: tuple[str, ...] = ("mono", "cross", "mixed", "hybrid")
EXPERIMENT_MODES: tuple[str, ...] = ("mono", "cross", "hybrid")
PAPER_NAMES: dict[str, str] = {"mono": "X-X-mono", "cross": "X-Y", "mixed": "X-X", "hybrid": "Hybrid"}
AlphaLike = Union[float, Callable[[float], float]]
#: the paper's mono-batch probability, ``hybrid``'s default
DEFAULT_ALPHA = 0.5

__all__ = [
    "AlphaLike", "DEFAULT_ALPHA", "EXPERIMENT_MODES", "MODES", "PAPER_NAMES", "check_mode_alpha", "describe_alpha",
    "alpha_record", "resolve_alpha",
]


def resolve_alpha(mode: str, alpha: AlphaLike | None) -> AlphaLike | None:
    """The ``alpha`` a sampler of ``mode`` uses: ``hybrid``'s (``None``: :data:`DEFAULT_ALPHA`), checked; ``None``
    for every other mode, which has no ``alpha``.

    An ``alpha`` given with another mode is refused (``ValueError`` naming it): it would change nothing, and a
    record of it would claim a mixing the run never did.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode != "hybrid":
        if alpha is not None:
            raise ValueError(
                f"alpha={alpha!r} applies to mode='hybrid' only; mode={mode!r} has no alpha "
                "(leave it out, or pass alpha=None)"
            )
        return None
    alpha = DEFAULT_ALPHA if alpha is None else alpha
    check_mode_alpha(mode, alpha)
    return alpha


def check_mode_alpha(mode: str, alpha: AlphaLike) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if callable(alpha):
        for p in (0.0, 0.25, 0.5, 0.75, 1.0):
            try:
                a = float(alpha(p))
            except Exception as exc:
                raise ValueError(f"alpha schedule failed at progress {p}: {exc!r}") from exc
            if not 0.0 <= a <= 1.0:
                raise ValueError(f"alpha schedule returned {a} at progress {p}; expected a value in [0, 1]")
        return
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a float in [0, 1] or a callable of progress, got {alpha!r}") from None
    if not 0.0 <= a <= 1.0 or math.isnan(a):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


def describe_alpha(alpha: AlphaLike) -> Any:
    """JSON-friendly description of ``alpha``: the float, or the schedule's name and values at 0, .25, .5, .75, 1
    (a description passes through unchanged: an unpickled factory holds one)."""
    if isinstance(alpha, dict):
        return alpha
    if not callable(alpha):
        return float(alpha)
    name = getattr(alpha, "__qualname__", None) or repr(alpha)
    try:
        values = {f"{p:g}": round(float(alpha(p)), 6) for p in (0.0, 0.25, 0.5, 0.75, 1.0)}
    except Exception as exc:  # pragma: no cover - reported, not fatal
        values = f"not evaluable: {exc}"
    return {"schedule": name, "values": values}


def alpha_record(alpha: AlphaLike | None) -> dict[str, Any]:
    """``{"alpha": describe_alpha(alpha)}`` for a configuration record, or ``{}`` for a mode without ``alpha``.

    Example::

        >>> alpha_record(0.25), alpha_record(None)
        ({'alpha': 0.25}, {})
    """
    return {} if alpha is None else {"alpha": describe_alpha(alpha)}
