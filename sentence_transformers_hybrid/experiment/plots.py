"""The PNG plots of an experiment's report: each a function of the summary (or of a matrix) and a path.

:func:`plot_alpha_sweep`, :func:`plot_cka_by_layer`, :func:`plot_bias_scatter` (with its points,
:func:`bias_points`) and :func:`plot_matrix` (the per-pair and CKA heatmaps, drawn by the package's one heatmap,
:func:`~sentence_transformers_hybrid.evaluation.plots.plot_heatmap`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.plots import plot_heatmap
from ..evaluation.retrieval import SETTINGS
from .stats import MODE_LABELS, model_label, model_stat, summary_models

__all__ = ["bias_points", "plot_alpha_sweep", "plot_bias_scatter", "plot_cka_by_layer", "plot_matrix"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_matrix(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, path: str | Path,
                xlabel: str = "", ylabel: str = "", vmin: float | None = 0.0, vmax: float | None = None) -> str:
    """A report heatmap (values in the cells, viridis, the report's size and resolution) saved to ``path``; returns
    the path. The drawing is :func:`~sentence_transformers_hybrid.evaluation.plots.plot_heatmap`'s."""
    plot_heatmap(matrix, rows, cols, path, title=title, xlabel=xlabel or None, ylabel=ylabel or None, vmin=vmin,
                 vmax=vmax, annotate=True, figsize=(0.6 * len(cols) + 2.5, 0.5 * len(rows) + 1.8), dpi=110)
    return str(path)


def plot_alpha_sweep(summary: Mapping[str, Any], path: str | Path) -> str | None:
    """mAP@20 of each setting against α (mean over the sweep's seeds); None with fewer than two α."""
    rows = summary.get("alpha_sweep") or []
    if len({r["alpha"] for r in rows}) < 2:
        return None
    plt = _plt()
    alphas = sorted({r["alpha"] for r in rows})
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for s in SETTINGS:
        ax.plot(alphas, [np.mean([r[f"{s}_map@20"] for r in rows if r["alpha"] == a]) for a in alphas], marker="o",
                label=s)
    ax.set_xlabel("α (share of X-X-mono batches)")
    ax.set_ylabel("mAP@20")
    ax.set_title(f"alpha sweep ({summary['preset']} preset)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_cka_by_layer(summary: Mapping[str, Any], path: str | Path) -> str | None:
    """CKA (English vs X) per layer, one curve per model; None when no model measured it."""
    curves = {m: summary[m]["cka_by_layer"] for m in ("mono", "cross", "hybrid") if summary.get(m, {}).get("cka_by_layer")}
    if summary.get("pretrained", {}).get("cka_by_layer"):
        curves = {"pretrained": summary["pretrained"]["cka_by_layer"], **curves}
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, values in curves.items():
        ax.plot(range(len(values)), values, marker=".", label=MODE_LABELS.get(name, name))
    ax.set_xlabel("layer (0 = embedding output)")
    ax.set_ylabel("linear CKA, en vs X (mean)")
    ax.set_title("cross-lingual alignment by layer", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def bias_points(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The scatter plot's points: per model, mean multi mAP@20 and rank distance, plain and centered (None where the
    centered figures were not measured)."""
    points = []
    for m in summary_models(summary):
        plain_map, plain_rd = model_stat(summary, m, "multi", "map@20"), model_stat(summary, m, None, "rank_distance")
        if plain_map is None or plain_rd is None:
            continue
        c_map = model_stat(summary, m, "multi", "map@20", centered=True)
        c_rd = model_stat(summary, m, None, "rank_distance", centered=True)
        points.append({"model": m, "label": model_label(summary, m), "rank_distance": plain_rd.mean,
                       "multi_map@20": plain_map.mean,
                       "centered_rank_distance": c_rd.mean if c_rd else None,
                       "centered_multi_map@20": c_map.mean if c_map else None})
    return points


def plot_bias_scatter(summary: Mapping[str, Any], path: str | Path) -> str | None:
    """Multi mAP@20 against rank distance, one point per model (:func:`bias_points`), with an arrow from each model
    to its language-centered version; None when there is no point."""
    points = bias_points(summary)
    if not points:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, p in enumerate(points):
        color = colors[i % len(colors)]
        ax.scatter([p["rank_distance"]], [p["multi_map@20"]], color=color, label=p["label"], zorder=3)
        if p["centered_multi_map@20"] is not None:
            ax.annotate("", xy=(p["centered_rank_distance"], p["centered_multi_map@20"]),
                        xytext=(p["rank_distance"], p["multi_map@20"]),
                        arrowprops={"arrowstyle": "->", "color": color, "lw": 1.2})
            ax.scatter([p["centered_rank_distance"]], [p["centered_multi_map@20"]], color=color, marker="x", zorder=3)
    ax.set_xlabel("multi rank distance (language bias; lower is better)")
    ax.set_ylabel("multi mAP@20")
    ax.set_title(f"language bias vs multilingual retrieval ({summary.get('preset', '')} preset)\n"
                 "● plain, × language-centered (arrow: the control)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
