"""``st-hybrid`` answers a bad input with ``st-hybrid: error: <message>`` on stderr and exit status 2; the
traceback only with ``-v``. A bug (any other exception) keeps its traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentence_transformers_hybrid import cli
from sentence_transformers_hybrid.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _error(capsys, argv: list[str]) -> str:
    """Run ``main(argv)``, check exit status 2 and a one-line error without traceback; return the message."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("st-hybrid: error: ")]
    assert len(lines) == 1, err
    return lines[0][len("st-hybrid: error: "):]


def test_benchmark_typo_is_answered_with_the_nearest_name(capsys, tmp_path):
    msg = _error(capsys, ["evaluate", "--model", "unused", "--benchmark", "xquad", "--output-dir", str(tmp_path)])
    assert msg.startswith("unknown benchmark 'xquad'") and "did you mean 'xquad-r'?" in msg
    assert not any(tmp_path.iterdir())  # nothing written before the error


def test_missing_data_folder(capsys, tmp_path):
    msg = _error(capsys, ["experiment", "--preset", "smoke", "--data-dir", str(tmp_path / "nowhere"),
                          "--output-dir", str(tmp_path / "out")])
    assert "nowhere' has no 'xquad-r' folder" in msg


def test_unknown_preset(capsys, tmp_path):
    msg = _error(capsys, ["experiment", "--preset", "fast", "--output-dir", str(tmp_path / "out")])
    assert msg.startswith("unknown preset 'fast'; choose one of ['auto', 'smoke', 'cpu', 'gpu', 'finetune', 'paper', 'beyond']")


def test_gpu_preset_without_cuda(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    msg = _error(capsys, ["experiment", "--preset", "gpu", "--output-dir", str(tmp_path / "out")])
    assert "preset 'gpu' trains the full model and needs a CUDA GPU" in msg and "--device cpu" in msg


def test_squad_json_as_train_data_needs_its_language(capsys, tmp_path):
    doc = {"data": [{"title": "t", "paragraphs": [{"context": "Goethe wrote Faust.", "qas": [
        {"id": "q1", "question": "Who wrote Faust?", "answers": [{"text": "Goethe", "answer_start": 0}]}]}]}]}
    (tmp_path / "train.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    msg = _error(capsys, ["train", "--model", "unused", "--train-data", str(tmp_path / "train.json"),
                          "--output-dir", str(tmp_path / "out")])
    assert "is a SQuAD-format file" in msg and "--languages en" in msg


def test_missing_train_data(capsys, tmp_path):
    msg = _error(capsys, ["train", "--model", "unused", "--train-data", str(tmp_path / "nope.jsonl"),
                          "--output-dir", str(tmp_path / "out")])
    assert "nope.jsonl': no such file or folder" in msg


def test_report_on_a_folder_that_is_not_an_experiment(capsys, tmp_path):
    msg = _error(capsys, ["report", "--output-dir", str(tmp_path)])
    assert "is not a finished experiment folder: no" in msg and "config.json" in msg


def test_convert_e5_trim_without_output_file(capsys, tmp_path):
    msg = _error(capsys, ["convert-e5", "--trim-to", str(tmp_path)])
    assert msg == "--trim-to needs --q4-output FILE (the trimmed weight file to write)"


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_prints_the_traceback_too(capsys, tmp_path, where):
    args = ["evaluate", "--model", "unused", "--benchmark", "xquad", "--output-dir", str(tmp_path)]
    argv = ["-v", *args] if where == "before" else [*args[:1], "-v", *args[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "DataValidationError" in err
    assert err.rstrip().splitlines()[-1].startswith("st-hybrid: error: unknown benchmark 'xquad'")


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_report", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["report", "--output-dir", str(tmp_path)])


def test_python_dash_m_exits_2_with_the_message():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "sentence_transformers_hybrid", "evaluate", "--model", "unused",
                           "--benchmark", "mlqa", "--output-dir", "unused"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("st-hybrid: error: unknown benchmark 'mlqa'")
    assert "Traceback" not in proc.stderr


def test_experiment_modes_pick_and_order_the_runs(monkeypatch):
    import sentence_transformers_hybrid.experiment as experiment

    seen = {}

    def fake_run(preset, **kwargs):
        seen.update(kwargs)
        return {"preset": preset}

    monkeypatch.setattr(experiment, "run_experiment", fake_run)
    monkeypatch.setattr("sentence_transformers_hybrid.experiment.tables.results_table", lambda summary: "")
    assert main(["experiment", "--preset", "smoke", "--modes", "hybrid", "mono", "--output-dir", "x"]) == 0
    assert seen["modes"] == ("hybrid", "mono")
    plan = experiment.plan_runs(experiment.resolve_preset("smoke", modes=("hybrid", "mono")))
    assert [r.mode for r in plan][:2] == ["hybrid", "mono"]


def test_experiment_training_path_flags_reach_the_preset(monkeypatch):
    import sentence_transformers_hybrid.experiment as experiment

    seen = {}

    def fake_run(preset, **kwargs):
        seen.clear()
        seen.update(kwargs)
        return {"preset": preset}

    monkeypatch.setattr(experiment, "run_experiment", fake_run)
    monkeypatch.setattr("sentence_transformers_hybrid.experiment.tables.results_table", lambda summary: "")
    assert main(["experiment", "--preset", "smoke", "--output-dir", "x"]) == 0
    assert not {"pack_tokens", "fast_dropout", "compile_encoder"} & set(seen)  # the preset's own (off)
    assert main(["experiment", "--preset", "smoke", "--pack-tokens", "--fast-dropout", "--output-dir", "x"]) == 0
    assert seen["pack_tokens"] is True and seen["fast_dropout"] is True and "compile_encoder" not in seen
    preset = experiment.resolve_preset("smoke", pack_tokens=True, fast_dropout=True)
    assert preset.pack_tokens and preset.fast_dropout
