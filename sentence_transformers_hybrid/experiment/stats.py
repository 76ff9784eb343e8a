"""Seed statistics of an experiment: a run's record and a mode's summary as types, and the mean ± sd between them.

* :class:`RunRecord`: one run's record (``runs/<run_id>.json``), typed: its figures (:class:`Evaluation`), with
  the language-centering control's, CKA and training time;
* :class:`ModeSummary`: a mode's figures over its seeds (each a :class:`Stat`: mean, sd, number of seeds), built by
  :func:`summarise_mode` and written to / read from ``results.json`` (:meth:`ModeSummary.to_dict`,
  :func:`model_stat`);
* :func:`mean_sd`: the mean ± sd of one figure over the seeds; a figure some seeds have and others lack is an
  error naming the runs (a mean over the others would be reported as over every seed).

Pure functions, no I/O; the tables (:mod:`.tables`), the claims (:mod:`.claims`) and the plots (:mod:`.plots`)
read the summary through :func:`model_stat`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..evaluation.retrieval import SETTINGS, setting_metrics
from ..sampling.modes import MODES, PAPER_NAMES

__all__ = [
    "MODELS", "MODE_LABELS", "Evaluation", "Figures", "MissingFigureError", "ModeSummary", "RunRecord", "Stat",
    "format_value", "mean_sd", "model_label", "model_stat", "nest", "pooled_sd", "sd_shown", "summarise_mode",
    "summary_models",
]

#: How each mode is named in tables and plots (the paper's names).
MODE_LABELS = PAPER_NAMES
#: The models of the bias tables and the scatter plot, in order (those in the summary).
MODELS: tuple[str, ...] = ("pretrained", *MODES)


class MissingFigureError(ValueError):
    """A figure that some runs of a mode have and others lack: averaging the others would misstate the seeds."""


@dataclass(frozen=True)
class Stat:
    """A row's figure: mean over seeds, sd over seeds (ddof 1; NaN or 0 with one seed) and the number of seeds."""

    mean: float
    sd: float
    n: int


# ------------------------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class Evaluation:
    """One model's figures on the benchmark: ``setting -> metric -> value`` (the metrics it has, in
    :func:`~sentence_transformers_hybrid.evaluation.retrieval.setting_metrics` order) and the multi rank distance.

    Example:
        >>> e = Evaluation.from_flat({"mono_map@20": 0.5, "multi_map@20": 0.25, "rank_distance": 40.0})
        >>> e.settings["mono"], e.settings["cross"], e.rank_distance
        ({'map@20': 0.5}, {}, 40.0)
    """

    settings: Mapping[str, Mapping[str, float | None]]
    rank_distance: float | None

    @classmethod
    def from_flat(cls, record: Mapping[str, Any]) -> Evaluation:
        """From a record's flat keys (``"mono_map@20"``, ..., ``"rank_distance"``)."""
        return cls({s: {m: record[f"{s}_{m}"] for m in setting_metrics(s) if f"{s}_{m}" in record} for s in SETTINGS},
                   record.get("rank_distance"))


@dataclass(frozen=True)
class RunRecord:
    """One training run's record, typed: what the seed statistics read of ``runs/<run_id>.json``.

    ``centered``: the same figures with the language-centering control (None when not measured, or when centering
    was impossible and the record holds ``{"error": ...}``).

    Example:
        >>> r = RunRecord.from_dict({"run_id": "mono-s0", "mode": "mono", "alpha": None, "seed": 0,
        ...                          "mono_map@20": 0.5, "rank_distance": 40.0, "cka": 0.7, "train_seconds": 12.0})
        >>> r.run_id, r.evaluation.settings["mono"], r.cka, r.centered
        ('mono-s0', {'map@20': 0.5}, 0.7, None)
    """

    run_id: str
    mode: str
    alpha: float | None
    seed: int
    evaluation: Evaluation
    centered: Evaluation | None
    cka: float | None
    cka_by_layer: tuple[float, ...] | None
    train_seconds: float | None

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> RunRecord:
        layers = record.get("cka_by_layer")
        return cls(
            run_id=str(record.get("run_id", f"{record['mode']}-s{record['seed']}")),
            mode=record["mode"], alpha=record.get("alpha"), seed=record["seed"],
            evaluation=Evaluation.from_flat(record),
            centered=_centered(record),
            cka=record.get("cka"), cka_by_layer=tuple(layers) if layers else None,
            train_seconds=record.get("train_seconds"),
        )


def nest(record: Mapping[str, Any]) -> dict[str, Any]:
    """``{"mono_map@20": x, ...}`` -> ``{"mono": {"map@20": x, ...}, ..., "rank_distance", "cka", "centered"}``
    (``centered``: the same settings and ``rank_distance`` with the language-centering control, when measured).

    Example:
        >>> nest({"mono_map@20": 0.5, "rank_distance": 40.0})["mono"]
        {'map@20': 0.5}
    """
    out: dict[str, Any] = {s: dict(v) for s, v in Evaluation.from_flat(record).settings.items()}
    out["rank_distance"] = record.get("rank_distance")
    out["cka"] = record.get("cka")
    out["cka_en"] = record.get("cka_en")
    out["cka_by_layer"] = record.get("cka_by_layer")
    centered = _centered(record)
    if centered is not None:
        out["centered"] = {**{s: dict(v) for s, v in centered.settings.items()},
                           "rank_distance": centered.rank_distance}
    return out


def _centered(record: Mapping[str, Any]) -> Evaluation | None:
    """A record's language-centered figures; None when not measured or when centering failed (``{"error": ...}``)."""
    c = record.get("centered")
    return Evaluation.from_flat(c) if c and "error" not in c else None


# ------------------------------------------------------------------------------------------- over seeds
def mean_sd(values: Mapping[str, float | None], what: str = "figure") -> Stat:
    """Mean and sd (ddof 1; 0.0 for one value) of one figure over runs (``run_id -> value``).

    A value every run lacks (``None``) is not measured: NaN, NaN, ``n = 0``. A value some runs lack raises
    :class:`MissingFigureError` naming them and ``what``: averaging the others would state a mean over fewer seeds
    than the summary counts.

    Example:
        >>> mean_sd({"hybrid-s0": 0.5, "hybrid-s1": 0.75})
        Stat(mean=0.625, sd=0.1767766952966369, n=2)
        >>> mean_sd({"hybrid-s0": 0.5, "hybrid-s1": None}, "hybrid: cka")
        Traceback (most recent call last):
        ...
        sentence_transformers_hybrid.experiment.stats.MissingFigureError: hybrid: cka: no value in run hybrid-s1 ...
    """
    missing = [rid for rid, v in values.items() if v is None]
    if missing and len(missing) < len(values):
        present = [rid for rid in values if rid not in missing]
        raise MissingFigureError(
            f"{what}: no value in run{'s' if len(missing) > 1 else ''} {', '.join(missing)} (present in "
            f"{', '.join(present)}); a mean over the others would be reported as over all {len(values)} seeds. "
            f"Re-evaluate {'those runs' if len(missing) > 1 else 'that run'} (delete runs/<run_id>.json and rerun "
            f"st-hybrid experiment with the same --output-dir), or plan the experiment without "
            f"{'them' if len(missing) > 1 else 'it'}"
        )
    arr = np.asarray([v for v in values.values() if v is not None], dtype=np.float64)
    if arr.size == 0:
        return Stat(float("nan"), float("nan"), 0)
    return Stat(float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0, int(arr.size))


@dataclass(frozen=True)
class Figures:
    """One block of a mode's summary (plain or language-centered): ``setting -> metric -> Stat``, rank distance."""

    n_seeds: int
    settings: Mapping[str, Mapping[str, Stat]]
    rank_distance: Stat | None

    def stat(self, setting: str | None, metric: str) -> Stat | None:
        """The figure (``setting=None`` for ``rank_distance``), or None where not measured (absent or NaN)."""
        if setting is None:
            st = self.rank_distance if metric == "rank_distance" else None
        else:
            st = (self.settings.get(setting) or {}).get(metric)
        return None if st is None or math.isnan(st.mean) else st

    def _settings_dict(self) -> dict[str, dict[str, float]]:
        return {s: {k: v for m, st in ms.items() for k, v in ((m, st.mean), (f"{m}_sd", st.sd))}
                for s, ms in self.settings.items()}


def _figures(mode: str, runs: Sequence[tuple[str, Evaluation]], block: str = "") -> Figures:
    """The mean ± sd of every figure the runs hold (a metric is kept when any run holds it; one some lack raises)."""
    where = f"{mode}{' ' + block if block else ''}"
    settings: dict[str, dict[str, Stat]] = {}
    for s in SETTINGS:
        settings[s] = {}
        for m in setting_metrics(s):
            if any(m in e.settings[s] for _, e in runs):
                settings[s][m] = mean_sd({rid: e.settings[s].get(m) for rid, e in runs}, f"{where}: {s}_{m}")
    rank_distance = mean_sd({rid: e.rank_distance for rid, e in runs}, f"{where}: rank_distance")
    return Figures(len(runs), settings, rank_distance)


@dataclass(frozen=True)
class ModeSummary:
    """A mode's figures over its seeds: what ``results.json`` holds under the mode's name (:meth:`to_dict`).

    ``centered``: the same over the seeds whose centering was measured (its own ``n_seeds``); ``cka_by_layer``: the
    mean curve over seeds (None when no run measured it).
    """

    mode: str
    seeds: tuple[int, ...]
    alpha: float | None
    figures: Figures
    cka: Stat
    train_seconds: Stat
    centered: Figures | None
    cka_by_layer: list[float] | None

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` layout: ``{"n_seeds", "seeds", ["alpha"], setting: {metric, metric_sd}, ...,
        "rank_distance", "rank_distance_sd", "cka", "cka_sd", "train_seconds", "train_seconds_sd", ["centered"],
        ["cka_by_layer"]}``."""
        entry: dict[str, Any] = {"n_seeds": self.n_seeds, "seeds": list(self.seeds)}
        if self.alpha is not None:
            entry["alpha"] = self.alpha
        entry.update(self.figures._settings_dict())
        for key, st in (("rank_distance", self.figures.rank_distance), ("cka", self.cka),
                        ("train_seconds", self.train_seconds)):
            entry[key], entry[f"{key}_sd"] = st.mean, st.sd
        if self.centered is not None:
            c = self.centered
            entry["centered"] = {"n_seeds": c.n_seeds, **c._settings_dict(), "rank_distance": c.rank_distance.mean,
                                 "rank_distance_sd": c.rank_distance.sd}
        if self.cka_by_layer is not None:
            entry["cka_by_layer"] = self.cka_by_layer
        return entry


def summarise_mode(mode: str, records: Sequence[RunRecord], alpha: float | None = None) -> ModeSummary:
    """The mean ± sd over seeds of every figure of one mode's runs (``alpha``: the hybrid mode's main α).

    Every run must hold the figures the others hold (:func:`mean_sd`); the centered block averages the runs whose
    centering was measured and says how many (``centered.n_seeds``).

    Example:
        >>> runs = [RunRecord.from_dict({"run_id": f"mono-s{s}", "mode": "mono", "seed": s, "mono_map@20": v,
        ...                              "rank_distance": 10.0, "cka": 0.5, "train_seconds": 1.0})
        ...         for s, v in ((0, 0.5), (1, 0.7))]
        >>> m = summarise_mode("mono", runs)
        >>> m.n_seeds, round(m.figures.stat("mono", "map@20").mean, 3), m.to_dict()["mono"]["map@20_sd"] > 0
        (2, 0.6, True)
    """
    if not records:
        raise ValueError(f"summarise_mode({mode!r}): no runs")
    ids = [r.run_id for r in records]
    figures = _figures(mode, [(r.run_id, r.evaluation) for r in records])
    cka = mean_sd(dict(zip(ids, (r.cka for r in records))), f"{mode}: cka")
    seconds = mean_sd(dict(zip(ids, (r.train_seconds for r in records))), f"{mode}: train_seconds")
    centered_runs = [(r.run_id, r.centered) for r in records if r.centered is not None]
    centered = _figures(mode, centered_runs, "centered") if centered_runs else None
    layers = None
    with_layers = {r.run_id: r.cka_by_layer for r in records}
    if any(v is not None for v in with_layers.values()):
        lengths = {rid: None if v is None else len(v) for rid, v in with_layers.items()}
        if len(set(lengths.values())) > 1:
            raise MissingFigureError(f"{mode}: cka_by_layer: the runs differ in layers measured ({lengths}); a mean "
                                     "curve needs every run's curve, of one length")
        layers = np.mean(np.asarray(list(with_layers.values()), dtype=np.float64), axis=0).tolist()
    return ModeSummary(mode, tuple(r.seed for r in records), alpha, figures, cka, seconds, centered, layers)


# ------------------------------------------------------------------------------------------- reading a summary
def summary_models(summary: Mapping[str, Any]) -> list[str]:
    """The models a summary holds, in :data:`MODELS` order (the pretrained model and each summarised mode)."""
    return [m for m in MODELS if isinstance(summary.get(m), dict) and (m == "pretrained" or "n_seeds" in summary[m])]


def model_label(summary: Mapping[str, Any], model: str) -> str:
    """A model's row label: the paper's name, with the hybrid mode's α (``"Hybrid (α=0.5)"``)."""
    e = summary.get(model) or {}
    return MODE_LABELS.get(model, model) + (f" (α={e['alpha']:g})" if "alpha" in e else "")


def model_stat(summary: Mapping[str, Any], model: str, setting: str | None, metric: str,
               centered: bool = False) -> Stat | None:
    """A model's figure from the summary (``setting=None`` for ``rank_distance``), or None where not measured.

    The pretrained model is one deterministic evaluation: ``n = 1``, no sd.

    Example:
        >>> summary = {"hybrid": {"n_seeds": 3, "multi": {"map@20": 0.5, "map@20_sd": 0.02}}}
        >>> model_stat(summary, "hybrid", "multi", "map@20")
        Stat(mean=0.5, sd=0.02, n=3)
    """
    entry = summary.get(model)
    if not isinstance(entry, Mapping):
        return None
    n = 1 if model == "pretrained" else int(entry.get("n_seeds", 1))
    if centered:
        entry = entry.get("centered")
        if not isinstance(entry, Mapping):
            return None
        n = int(entry.get("n_seeds", n))
    src = entry if setting is None else entry.get(setting) or {}
    mean = src.get(metric)
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return None
    sd = src.get(f"{metric}_sd")
    return Stat(float(mean), float("nan") if sd is None or model == "pretrained" else float(sd), n)


def pooled_sd(a: Stat, b: Stat) -> float | None:
    """The pooled sd of two rows, ``sqrt(((n_a - 1) sd_a² + (n_b - 1) sd_b²) / (n_a + n_b - 2))``; None when
    ``n_a + n_b - 2 = 0`` (one seed each: no spread measured). A row of one evaluation (the pretrained model)
    contributes no degree of freedom, so against it the pooled sd is the other row's sd.

    Example:
        >>> round(pooled_sd(Stat(0.5, 0.03, 3), Stat(0.4, 0.04, 3)), 4)   # sqrt((2 * 0.0009 + 2 * 0.0016) / 4)
        0.0354
    """
    df = a.n + b.n - 2
    if df <= 0:
        return None
    ss = sum((x.n - 1) * x.sd**2 for x in (a, b) if x.n > 1)
    return math.sqrt(ss / df)


def format_value(mean: float | None, sd: float | None = None, digits: int = 3) -> str:
    """``"0.500 ± 0.010"``; the mean alone without an sd (None or NaN); ``"–"`` for a figure not measured.

    Example:
        >>> format_value(0.5, 0.01), format_value(123.456, digits=1), format_value(float("nan"))
        ('0.500 ± 0.010', '123.5', '–')
    """
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "–"
    if sd is None or np.isnan(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def sd_shown(stat: Stat) -> float | None:
    """The sd a table shows: None for one seed (0.000 would read as measured)."""
    return stat.sd if stat.n > 1 else None
