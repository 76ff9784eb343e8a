"""The ``beyond`` preset's outputs, from the files of its folder alone: ``runs.json`` (the ``finetune`` schema plus
``method`` and ``phase``; the dev runs under ``dev_runs``) and ``results.md`` (the selection on dev, the test table,
the non-inferiority claims, CKA by layer for each method, the per-run times, and whether ``selection.json`` changed
after the test runs began). A report of unfinished runs says PARTIAL and names the missing runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._utils import atomic_write_json, atomic_write_text
from .report import RUN_KEYS as FINETUNE_RUN_KEYS
from .stats import format_value, mean_sd, sd_shown
from .selection import (
    BASELINES,
    NON_INFERIORITY_RULE,
    SETTINGS,
    best_baseline,
    finetune_run_id,
    non_inferior,
    worst_margin,
)

__all__ = ["beyond_markdown", "beyond_records", "beyond_runs_json", "claims", "finetune_twins", "summary_text",
           "write_beyond_outputs"]

#: the finetune schema's run keys (report.RUN_KEYS), led by which method and phase the run belongs to
RUN_KEYS = ("method", "phase", *FINETUNE_RUN_KEYS)


def selection_sha256(path: str | Path) -> str | None:
    """The SHA-256 of the selection file (``None`` when there is none); each test record holds it."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def beyond_records(out: str | Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"pretrained", "runs" (the planned runs that have records, in plan order), "missing" (run ids), "selection",
    "selection_sha256", "twins" (:func:`finetune_twins`)}`` read from ``out``."""
    out = Path(out)
    runs, missing = [], []
    for planned in config.get("runs", []):
        path = out / "runs" / f"{planned['run_id']}.json"
        if path.is_file():
            runs.append(json.loads(path.read_text(encoding="utf-8")))
        else:
            missing.append(planned["run_id"])
    pretrained_file = out / "runs" / "pretrained.json"
    selection_file = out / "selection.json"
    pretrained = json.loads(pretrained_file.read_text(encoding="utf-8")) if pretrained_file.is_file() else None
    return {
        "twins": finetune_twins(out, runs, pretrained),
        "pretrained": pretrained,
        "runs": runs,
        "missing": missing,
        "selection": json.loads(selection_file.read_text(encoding="utf-8")) if selection_file.is_file() else None,
        "selection_sha256": selection_sha256(selection_file),
    }


def beyond_runs_json(config: Mapping[str, Any], records: Mapping[str, Any], device: str,
                     command: str | None = None) -> dict[str, Any]:
    """The compact record (``runs.json``): the ``finetune`` schema (``device``, ``command``, ``config``,
    ``pretrained``, ``runs``) with each test run's ``method`` and ``phase``; the dev runs under ``dev_runs``."""
    pretrained = records.get("pretrained") or {}
    flat = {f"{s}_map@20": pretrained.get(f"{s}_map@20") for s in SETTINGS}
    flat.update(rank_distance=pretrained.get("rank_distance"), cka_by_layer=pretrained.get("cka_by_layer"))
    rows = [{k: r.get(k) for k in RUN_KEYS} for r in records["runs"]]
    out = {
        "device": device,
        "command": command if command is not None else config.get("command"),
        "config": dict(config),
        "pretrained": flat,
        "runs": [r for r in rows if r["phase"] == "test"],
        "dev_runs": [r for r in rows if r["phase"] == "dev"],
        "selection_sha256": records.get("selection_sha256"),
    }
    if records["missing"]:
        out["partial"] = {"missing": list(records["missing"])}
    return out


def _by_method(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        if r.get("phase") == "test":
            out.setdefault(r["method"], []).append(r)
    return out


def claims(runs: Sequence[Mapping[str, Any]], chosen: str | None) -> list[dict[str, Any]]:
    """The non-inferiority verdict of ``chosen`` in each setting: once it and every baseline have a record, in each
    setting where the candidate and that setting's best baseline have 3 values together (their pooled sd)."""
    by = _by_method(runs)
    if chosen is None or chosen in BASELINES or chosen not in by or any(b not in by for b in BASELINES):
        return []
    out = []
    for s in SETTINGS:
        cand = [float(r[f"{s}_map@20"]) for r in by[chosen]]
        base = {b: [float(r[f"{s}_map@20"]) for r in by[b]] for b in BASELINES}
        if len(cand) + len(base[best_baseline(base)]) < 3:  # the candidate's sd is pooled with the best baseline's
            continue
        out.append({"setting": s, "candidate": chosen, "seeds": len(cand), **non_inferior(cand, base)})
    return out


def _dev_so_far(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The finished dev runs before the selection: their scores, and each candidate's worst margin over the three
    baselines once all three have run (the selection rule's quantity; nothing is chosen until every candidate has
    run)."""
    dev = [r for r in runs if r.get("phase") == "dev"]
    if not dev:
        return []
    baselines = [r for r in dev if r.get("method") in BASELINES]
    complete = {r.get("method") for r in baselines} >= set(BASELINES)
    lines = ["Dev runs finished so far (one seed"
             + ("; worst margin = the selection rule's quantity against the three baselines" if complete else
                "; margins once the three baselines have run") + "):", "",
             "| run | method | mono mAP@20 | cross mAP@20 | multi mAP@20 | rank distance | worst margin |",
             "|---|---|---|---|---|---|---|"]
    for r in dev:
        margin = ("baseline" if r.get("method") in BASELINES else
                  format_value(worst_margin(r, baselines), digits=4) if complete else "")
        maps = " | ".join(format_value(r.get(f"{s}_map@20")) for s in SETTINGS)
        lines.append(f"| `{r.get('run_id')}` | `{r.get('method')}` | {maps} | "
                     f"{format_value(r.get('rank_distance'), digits=1)} | {margin} |")
    return lines + [""]


def _devices_section(runs: Sequence[Mapping[str, Any]], chosen: str | None) -> list[str]:
    """Where the test runs trained, when not all on one device and precision (a reused ``finetune`` record keeps the
    device it was trained on): the seeds of each method per device, and the claims on each device's runs alone where
    they allow them. A difference between devices (precision, kernels) is confounded with the method wherever the
    methods' seeds are spread unevenly over them, as when the baselines' seeds 0-2 are reused."""
    by_device: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        if r.get("phase") == "test":
            by_device.setdefault(str(r.get("device") or "unknown"), []).append(r)
    devices = sorted(by_device)
    if len(devices) < 2:
        return []
    lines = ["## Where the test runs trained", "",
             "The test runs were trained on more than one device or precision. A difference between them is "
             "confounded with the method wherever the methods' seeds are spread unevenly over the devices; the "
             "claims above pool all seeds, the lines below repeat them on each device's runs alone where every "
             "method has a seed there.", "",
             "| method | " + " | ".join(f"seeds on `{d}`" for d in devices) + " |", "|---|" + "---|" * len(devices)]
    seeds = {d: _by_method(rs) for d, rs in by_device.items()}
    for method in _by_method(runs):
        cells = [", ".join(str(r.get("seed")) for r in seeds[d].get(method, [])) or "–" for d in devices]
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    lines.append("")
    for d in devices:
        verdicts = claims(by_device[d], chosen)
        if verdicts:
            lines.append(f"- on `{d}` alone: " + "; ".join(
                f"{v['setting']} {format_value(v['candidate_mean'])} vs `{v['best']}` {format_value(v['best_mean'])}"
                f" ({v['seeds']} seeds of the candidate, margin {format_value(v['margin'], digits=4)}, threshold "
                f"{format_value(v['threshold'])}): {'holds' if v['holds'] else 'does not hold'}" for v in verdicts))
    return lines + [""]


def _reused_runs_dir(out: Path, reused: Sequence[Any]) -> tuple[Path, Path] | None:
    """The ``runs/`` folder of the ``finetune`` experiment this one reused records from, as the records name it and
    where it is (``reused_from`` paths are written relative to the folder the experiment ran in: the nearest of
    ``out``'s parents that holds the path, as the repository root does for ``docs/results/beyond``, else the
    current folder)."""
    for src in reused:
        path = Path(src.get("path") if isinstance(src, Mapping) else src)
        bases = [Path()] if path.is_absolute() else [*out.resolve().parents, Path()]
        for base in bases:
            if (base / path).is_file():
                return path.parent, (base / path).parent
    return None


def finetune_twins(out: str | Path, runs: Sequence[Mapping[str, Any]],
                   pretrained: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The baselines' test runs trained by this experiment whose run (same mode, seed and configuration) the reused
    ``finetune`` experiment also trained: ``[{"run_id", "twin" (its path), "record", "twin_record"}]``.

    The ``finetune`` experiment is the one records were reused from (``reused_from``), whose configuration was then
    checked equal to this one's but for the run set; when nothing was reused, there are no twins. Its record of the
    same run was trained on its own device: the pair measures what another machine and precision alone move."""
    out = Path(out)
    reused = [r["reused_from"] for r in [*runs, pretrained or {}] if r.get("reused_from")]
    found = _reused_runs_dir(out, reused)
    if found is None:
        return []
    named, runs_dir = found
    twins = []
    for r in runs:
        if r.get("phase") != "test" or r.get("method") not in BASELINES or r.get("reused_from"):
            continue
        path = runs_dir / f"{finetune_run_id(r['method'], r.get('seed'))}.json"
        if path.is_file():
            twins.append({"run_id": r.get("run_id"), "twin": str(named / path.name), "record": r,
                          "twin_record": json.loads(path.read_text(encoding="utf-8"))})
    return twins


def _signed(x: float | None, digits: int) -> str:
    return "–" if x is None else f"{x:+.{digits}f}"


def _difference(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> float | None:
    """``a[key] - b[key]``; None where either record lacks the figure."""
    return None if a.get(key) is None or b.get(key) is None else a[key] - b[key]


def _twins_section(twins: Sequence[Mapping[str, Any]]) -> list[str]:
    """The same runs trained twice, here and by the reused ``finetune`` experiment: their differences."""
    if not twins:
        return []
    lines = ["## The same runs on two machines", "",
             "These baseline runs were trained here and, with the same configuration, seed and batches, by the "
             "`finetune` experiment this one reuses records from (on its own device and precision). Their "
             "differences are what the machine and precision alone move, the kind of difference the reused "
             "records carry into the pooled test table.", "",
             "| run | other record | device here | its device | Δ mono | Δ cross | Δ multi | Δ rank distance |",
             "|---|---|---|---|---|---|---|---|"]
    deltas = []
    for t in twins:
        a, b = t["record"], t["twin_record"]
        d = [_difference(a, b, f"{s}_map@20") for s in SETTINGS]
        deltas += [x for x in d if x is not None]
        rank = _difference(a, b, "rank_distance")
        lines.append(f"| `{t['run_id']}` | `{t['twin']}` | {a.get('device') or '–'} | {b.get('device') or '–'} | "
                     + " | ".join(_signed(x, 4) for x in d) + f" | {_signed(rank, 1)} |")
    if deltas:
        lines += ["", f"Largest |Δ| mAP@20 over these {len(twins)} run(s): "
                      f"{format_value(max(abs(x) for x in deltas), digits=4)}; mean |Δ| "
                      f"{format_value(sum(abs(x) for x in deltas) / len(deltas), digits=4)}."]
    return lines + [""]


def beyond_markdown(config: Mapping[str, Any], records: Mapping[str, Any]) -> str:
    """``results.md``: the protocol, the dev selection, the test table, the claims, CKA by layer, per-run times."""
    runs, missing, selection = records["runs"], records["missing"], records.get("selection")
    planned = len(config.get("runs", []))
    title = "# Results: `beyond` preset"
    if missing:
        title += f" — PARTIAL ({planned - len(missing)} of {planned} runs)"
    lines = [title, ""]
    if missing:
        lines += [f"Runs not finished yet: {', '.join(f'`{m}`' for m in missing)}. Every number below is of the "
                  "finished runs only.", ""]
    lines += ["## Protocol", "", f"**Selection rule** (fixed before any run): {config.get('selection_rule', '')}", "",
              f"**Non-inferiority** (the test): {NON_INFERIORITY_RULE}", ""]
    chosen = selection.get("chosen") if selection else None
    if selection:
        dev = selection.get("dev", {})
        lines += [f"Dev benchmark `{dev.get('benchmark')}`: {dev.get('split', '')}. Dev articles: "
                  + ", ".join(dev.get("articles", [])) + ".", "",
                  "## Dev: the candidates (one seed)", "",
                  "| candidate | params | mono mAP@20 | cross mAP@20 | multi mAP@20 | rank distance | worst margin |",
                  "|---|---|---|---|---|---|---|"]
        for c in selection.get("candidates", []):
            mark = " **(chosen)**" if c["name"] == chosen else ""
            maps = " | ".join(format_value(c.get(f"{s}_map@20")) for s in SETTINGS)
            lines.append(f"| `{c['name']}`{mark} | `{json.dumps(c.get('params', {}))}` | {maps} | "
                         f"{format_value(c.get('rank_distance'), digits=1)} | "
                         f"{format_value(c.get('worst_margin'), digits=4)} |")
        lines += ["", f"Chosen: `{chosen}`.", ""]
    else:
        lines += ["## Dev", "", "No selection yet (the dev phase has not finished).", ""]
        lines += _dev_so_far(runs)

    by = _by_method(runs)
    lines += ["## Test: MLQA-R, mean ± sd over seeds", "",
              "| method | seeds | mono mAP@20 | cross mAP@20 | multi mAP@20 | rank distance |",
              "|---|---|---|---|---|---|"]
    for method, rs in by.items():
        cells = []
        for key in [f"{s}_map@20" for s in SETTINGS] + ["rank_distance"]:
            # a figure some seeds lack is an error naming them (stats.mean_sd), never a mean over the others
            stat = mean_sd({str(r.get("run_id")): r.get(key) for r in rs}, f"{method}: {key}")
            cells.append(format_value(stat.mean, sd_shown(stat), 1 if key == "rank_distance" else 3))
        seeds = ", ".join(str(r["seed"]) for r in rs)
        lines.append(f"| `{method}` | {seeds} | " + " | ".join(cells) + " |")
    lines.append("")

    verdicts = claims(runs, chosen)
    lines += ["## Claims: is the chosen candidate non-inferior to the best baseline?", ""]
    if verdicts:
        lines += ["| setting | candidate mean | best baseline (mean) | pooled sd | margin | threshold | holds |",
                  "|---|---|---|---|---|---|---|"]
        for v in verdicts:
            lines.append(f"| {v['setting']} | {format_value(v['candidate_mean'])} | `{v['best']}` "
                         f"({format_value(v['best_mean'])}) | {format_value(v['pooled_sd'], digits=4)} | "
                         f"{format_value(v['margin'], digits=4)} | {format_value(v['threshold'])} | "
                         f"{'yes' if v['holds'] else 'no'} |")
        held = [v["setting"] for v in verdicts if v["holds"]]
        lines += ["", f"`{chosen}` is non-inferior to the best baseline in {len(held)} of {len(verdicts)} settings"
                  + (f" ({', '.join(held)})." if held else ". As measured: no setting holds."), ""]
        if missing:
            lines += [f"**Interim**: these claims pool the finished runs only (the candidate's seeds "
                      f"{', '.join(str(r['seed']) for r in by[chosen])}); the test's verdict waits for "
                      f"the {len(missing)} missing run(s) above.", ""]
    else:
        lines += ["Not yet: the claims need the chosen candidate and every baseline on MLQA-R, with seeds enough for a "
                  "pooled sd (three values of the candidate and the setting's best baseline together).", ""]

    lines += _devices_section(runs, chosen)
    lines += _twins_section(records.get("twins") or [])

    cka = {m: [r["cka_by_layer"] for r in rs if r.get("cka_by_layer")] for m, rs in by.items()}
    cka = {m: v for m, v in cka.items() if v}
    if cka:
        depth = max(len(v[0]) for v in cka.values())
        lines += ["## CKA by layer (English vs each language's questions, mean over seeds; layer 0 = embeddings)", "",
                  "| method | " + " | ".join(f"L{i}" for i in range(depth)) + " |", "|---|" + "---|" * depth]
        pre = (records.get("pretrained") or {}).get("cka_by_layer")
        if pre:
            lines.append("| pretrained | " + " | ".join(format_value(x) for x in pre) + " |")
        for m, layers in cka.items():
            means = [sum(col) / len(col) for col in zip(*layers)]
            lines.append(f"| `{m}` | " + " | ".join(format_value(x) for x in means) + " |")
        lines.append("")

    lines += ["## Per-run times", "",
              "| run | method | seed | train minutes | load average at the end | device | note |",
              "|---|---|---|---|---|---|---|"]
    for r in runs:
        note = ""
        if r.get("reused_from"):
            src = r["reused_from"]
            note = f"reused from `{src.get('path') if isinstance(src, dict) else src}`"
        elif r.get("resumed_from"):  # train_seconds = before the checkpoint + after the resume
            note = (f"resumed from `{Path(str(r['resumed_from'])).name}`: its minutes up to that checkpoint plus after "
                    "the resume")
        elif r.get("mode") == "merge":
            note = f"merge, {format_value(r.get('merge_seconds'), digits=1)} s"
        minutes = r.get("train_seconds")
        lines.append(f"| `{r.get('run_id')}` | `{r.get('method')}` | {r.get('seed')} | "
                     f"{format_value(minutes / 60 if minutes is not None else None, digits=1)} | "
                     f"{r.get('load_average') or '–'} | {r.get('device') or '–'} | {note} |")
    lines.append("")

    sha = records.get("selection_sha256")
    changed = sorted({r["run_id"] for r in runs if r.get("phase") == "test" and r.get("selection_sha256") != sha})
    lines += ["## selection.json", "", f"SHA-256 now: `{sha}`."]
    if changed:
        lines.append(f"**selection.json changed after the test runs began**: the test run(s) {', '.join(changed)} "
                     "were recorded under another selection file (their `selection_sha256` differs).")
    elif any(r.get("phase") == "test" for r in runs):
        lines.append("Every test record holds this hash: the file is unchanged since the test runs began.")
    return "\n".join(lines) + "\n"


def write_beyond_outputs(out: str | Path, config: Mapping[str, Any], device: str,
                         command: str | None = None) -> dict[str, Any]:
    """Write ``runs.json`` and ``results.md`` from the folder's records; returns the summary
    ``{"config", "selection", "chosen", "pretrained", "runs", "missing", "partial", "claims"}``."""
    out = Path(out)
    records = beyond_records(out, config)
    atomic_write_json(out / "runs.json", beyond_runs_json(config, records, device=device, command=command))
    atomic_write_text(out / "results.md", beyond_markdown(config, records))
    selection = records.get("selection")
    chosen = selection.get("chosen") if selection else None
    return {"config": dict(config), "selection": selection, "chosen": chosen, "pretrained": records["pretrained"],
            "runs": records["runs"], "missing": records["missing"], "partial": bool(records["missing"]),
            "claims": claims(records["runs"], chosen)}


def summary_text(summary: Mapping[str, Any], output_dir: str | Path) -> str:
    """Three lines for the console: the choice, the claims, what was written (PARTIAL when runs are missing)."""
    out = Path(output_dir)
    lines = [f"beyond: chosen on dev: {summary.get('chosen') or '(dev phase not finished)'}"]
    interim = " (interim: runs missing)" if summary.get("partial") else ""
    for v in summary.get("claims") or []:
        lines.append(f"  {v['setting']}: {v['candidate_mean']:.3f} vs best baseline {v['best']} {v['best_mean']:.3f} "
                     f"(threshold {v['threshold']:.3f}): {'non-inferior' if v['holds'] else 'inferior'}{interim}")
    if summary.get("partial"):
        lines.append(f"PARTIAL: {len(summary.get('missing') or [])} run(s) missing: {', '.join(summary['missing'])}")
    # selection.json is the protocol's own (written once, when the dev phase ends), not the report's
    selection = (f"read {out / 'selection.json'}" if (out / "selection.json").is_file()
                 else "no selection.json yet (written once, when the dev phase ends)")
    lines.append(f"written: {out / 'runs.json'}, {out / 'results.md'}; {selection}")
    return "\n".join(lines)
