"""The package's one heatmap: a labelled matrix with its values in the cells (CKA matrices, mAP per language pair).

:func:`~sentence_transformers_hybrid.evaluation.cka.plot_cka_heatmap` is this function with CKA's defaults, and the
experiment report's per-pair and CKA heatmaps call it too, so every heatmap of the package is drawn by one piece
of code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_heatmap"]


def plot_heatmap(
    matrix: np.ndarray | Sequence[Sequence[float]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    annotate: bool | None = None,
    fmt: str = ".2f",
    origin: Literal["upper", "lower"] = "upper",
    colorbar_label: str | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = 150,
) -> Figure:
    """Heatmap of a matrix with a colour bar; cells annotated with their value (``fmt``), NaN cells left blank.

    Uses the Agg canvas directly (no pyplot, no global backend change), so it works headless and in threads.
    ``vmin`` / ``vmax`` ``None`` take the colour range from the data (NaN ignored). Cells are annotated when the
    matrix is at most 16x16 (or when ``annotate=True``), in black on the bright half of the colour range and white
    on the dark half. ``origin="lower"`` puts row 0 at the bottom (layer x layer matrices); ``figsize`` defaults to
    a size that grows with the matrix. With ``path`` the figure is also saved (format from the suffix, ``dpi``).

    Example:
        >>> import numpy as np
        >>> m = np.array([[0.5, np.nan], [0.25, 0.75]])   # e.g. mAP@20 per query language x candidate pool
        >>> fig = plot_heatmap(m, ["de", "en"], ["de", "all"], title="mAP@20", vmin=0.0)
        >>> fig.axes[0].get_title(), sorted(t.get_text() for t in fig.axes[0].texts)
        ('mAP@20', ['0.25', '0.50', '0.75'])
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {m.shape}")
    if row_labels is not None and len(row_labels) != m.shape[0]:
        raise ValueError(f"{len(row_labels)} row_labels for {m.shape[0]} rows")
    if col_labels is not None and len(col_labels) != m.shape[1]:
        raise ValueError(f"{len(col_labels)} col_labels for {m.shape[1]} columns")
    if ax is None:
        size = figsize or (1.2 + 0.45 * m.shape[1], 0.8 + 0.45 * m.shape[0])
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure  # type: ignore[assignment]
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap, origin=origin, aspect="auto")
    fig.colorbar(im, ax=ax, **({"label": colorbar_label} if colorbar_label else {}))
    ax.set_xticks(range(m.shape[1]), labels=list(col_labels) if col_labels is not None else range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]), labels=list(row_labels) if row_labels is not None else range(m.shape[0]))
    if title:
        ax.set_title(title, fontsize=10)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if annotate or (annotate is None and max(m.shape) <= 16):
        low, high = im.norm.vmin, im.norm.vmax  # the colour range actually drawn (from the data when not given)
        mid = (low + high) / 2 if low is not None and high is not None else 0.0
        for (i, j), v in np.ndenumerate(m):
            if not np.isnan(v):
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
                        color="black" if v > mid else "white")
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig
