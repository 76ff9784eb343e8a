"""The finetune preset: device and precision choice, checkpoints every few steps, resuming a killed run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sentence_transformers_hybrid.experiment import PRESETS, Preset, RunSpec, load_data
from sentence_transformers_hybrid.experiment.devices import DeviceSetup, cpu_info, select_device
from sentence_transformers_hybrid.experiment.training import (
    ELAPSED_FILE,
    checkpoint_problem,
    resumable_checkpoint,
    train_run,
)
from sentence_transformers_hybrid.testing import tiny_transformer_model


def test_finetune_preset_is_the_gpu_protocol_on_any_device():
    gpu, ft = PRESETS["gpu"].to_dict(), PRESETS["finetune"].to_dict()
    protocol = ("backbone", "train", "eval", "train_languages", "eval_languages", "passage_view", "candidate_context",
                "modes", "alpha", "alpha_sweep", "seeds", "sweep_seeds", "batch_size", "max_steps", "learning_rate",
                "weight_decay", "warmup_ratio", "max_seq_length", "query_prompt", "passage_prompt", "scale", "cka_layers")
    assert {k: ft[k] for k in protocol} == {k: gpu[k] for k in protocol}
    assert ft["bf16"] == "auto" and not ft["needs_cuda"] and ft["save_steps"] == 50 and ft["trim_vocabulary"]
    # the compiled path is an option of the preset, off until measured faster (docs/results.md)
    assert ft["chunk_size"] == 16 and ft["compile_encoder"] is False


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    info = cpu_info(f)
    assert info["model"] == "Test CPU 9000" and info["bf16_flags"] == ["avx512_bf16"]
    f.write_text("model name\t: Old CPU\nflags\t\t: fpu avx2\n")
    assert cpu_info(f)["bf16_flags"] == []


def test_a_cpu_without_bf16_falls_back_to_float32_with_a_warning(monkeypatch, caplog):
    import sentence_transformers_hybrid.experiment.devices as devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "cpu_info", lambda: {"model": "Old CPU", "cores": 2, "bf16_flags": []})
    with caplog.at_level("WARNING"):
        setup = select_device(None, seconds_per_run_fp32=1800)
    assert (setup.device, setup.dtype) == ("cpu", "float32")
    assert "no bf16 instructions" in caplog.text and "30 min a run" in caplog.text
    monkeypatch.setattr(devices, "cpu_info", lambda: {"model": "New CPU", "cores": 2, "bf16_flags": ["amx_bf16"]})
    setup = select_device(None)
    assert setup.dtype == "bfloat16" and "amx_bf16" in setup.describe() and "bf16 autocast" in setup.describe()


def test_precision_fields_resolve_against_the_device():
    setup = DeviceSetup("cpu", "bfloat16", "cpu (x)", cpu={"bf16_flags": ["avx512_bf16"]})
    assert setup.with_dtype("auto").dtype == "bfloat16" and setup.with_dtype(False).dtype == "float32"
    assert DeviceSetup("cpu", "float32", "cpu").with_dtype(True).bf16
    with pytest.raises(ValueError, match="precision"):
        setup.with_dtype("fp8")


def test_bf16_autocast_encodes_in_bf16_and_scores_stay_float32():
    from sentence_transformers_hybrid.evaluation.encoding import cosine_scores

    setup = DeviceSetup("cpu", "bfloat16", "cpu")
    a, b = torch.randn(5, 8), torch.randn(7, 8)
    with setup.autocast():
        assert (a @ b.T).dtype == torch.bfloat16
        s = cosine_scores(a, b)
    assert s.dtype == torch.float32
    torch.testing.assert_close(s, torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T)


# ----------------------------------------------------------------------------------------------------- checkpoints
class _Kill(Exception):
    pass


def _preset(**kw) -> Preset:
    base = {**PRESETS["finetune"].to_dict(), "name": "tiny-finetune", "trim_vocabulary": False, "max_steps": 6,
            "save_steps": 2, "batch_size": 8, "max_train_groups": 60, "train_languages": ["de", "en"],
            "learning_rate": 1e-3, "warmup_ratio": 0.0, "bf16": False, "chunk_size": None,
            "compile_encoder": False}  # the compiled path has its own test (test_chunked_loss.py)
    return Preset(**{**base, **kw})


def _weights(model) -> np.ndarray:
    return torch.cat([p.detach().float().flatten() for p in model.parameters()]).numpy()


def _train(tmp_path, name, data_dir, corpus, kill_at=None, resume=True):
    from transformers import TrainerCallback

    from sentence_transformers import SentenceTransformer

    preset = _preset()
    base = tmp_path / "base-model"
    if not base.is_dir():  # built once: the tokenizer trainer is not deterministic across builds
        tiny_transformer_model(tmp_path / "tok", corpus.queries[:100] + corpus.passages[:100], seed=0).save(str(base))
    model = SentenceTransformer(str(base), device="cpu")
    callbacks = []
    if kill_at is not None:
        class Killer(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == kill_at:
                    raise _Kill(f"killed at step {kill_at}")

        callbacks.append(Killer())
    from sentence_transformers import SentenceTransformerTrainer

    init = SentenceTransformerTrainer.__init__

    def patched(self, *a, **k):
        k["callbacks"] = list(k.get("callbacks") or []) + callbacks
        init(self, *a, **k)

    SentenceTransformerTrainer.__init__ = patched
    try:
        result = train_run(model, corpus, RunSpec("hybrid", 0.5, 0), preset, tmp_path / name,
                           {"query": "query: ", "passage": "passage: "}, resume=resume)
    finally:
        SentenceTransformerTrainer.__init__ = init
    return model, result


@pytest.fixture(scope="module")
def small_corpus(data_dir):
    corpus, _ = load_data(_preset(), data_dir)
    return corpus


def test_a_run_killed_mid_way_resumes_from_the_last_complete_checkpoint(tmp_path, data_dir, small_corpus, caplog):
    full, full_result = _train(tmp_path, "full", data_dir, small_corpus)
    assert full_result.resumed_from is None
    with pytest.raises(_Kill):
        _train(tmp_path, "killed", data_dir, small_corpus, kill_at=5)
    ckpts = sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-2", "checkpoint-4"]  # every save_steps, the last two kept
    assert json.loads((tmp_path / "killed" / "checkpoint-4" / ELAPSED_FILE).read_text())["global_step"] == 4
    # a kill during the save of step 4: its weights are cut off
    w = next((tmp_path / "killed" / "checkpoint-4").rglob("model.safetensors"))
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    assert "truncated" in checkpoint_problem(tmp_path / "killed" / "checkpoint-4")
    with caplog.at_level("WARNING"):
        assert resumable_checkpoint(tmp_path / "killed").endswith("checkpoint-2")
    assert "checkpoint-4 cannot be resumed from" in caplog.text
    resumed, result = _train(tmp_path, "killed", data_dir, small_corpus)
    assert result.resumed_from.endswith("checkpoint-2")
    # same batches, same RNG states, same optimizer: the resumed run ends where the uninterrupted one ended
    np.testing.assert_allclose(_weights(resumed), _weights(full), rtol=1e-5, atol=1e-6)
    assert result.seconds > 0


@pytest.mark.parametrize("damage", ["state", "optimizer", "missing"])
def test_incomplete_checkpoints_are_named(tmp_path, damage):
    ckpt = tmp_path / "checkpoint-3"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4)}, str(ckpt / "model.safetensors"))
    torch.save({"a": torch.zeros(2)}, ckpt / "optimizer.pt")
    torch.save({"b": 1}, ckpt / "scheduler.pt")
    assert checkpoint_problem(ckpt) is None
    if damage == "state":
        (ckpt / "trainer_state.json").write_text('{"global_step": 3')
        assert "not valid JSON" in checkpoint_problem(ckpt)
    elif damage == "optimizer":
        data = (ckpt / "optimizer.pt").read_bytes()
        (ckpt / "optimizer.pt").write_bytes(data[: len(data) // 2])
        assert "optimizer.pt" in checkpoint_problem(ckpt)
    else:
        (ckpt / "scheduler.pt").unlink()
        assert checkpoint_problem(ckpt) == "no scheduler.pt"
    assert resumable_checkpoint(tmp_path) is None


def test_the_preset_path_trains_in_bf16_autocast_with_the_chunked_loss(tmp_path, small_corpus):
    """The finetune path on a tiny BERT: chunked MNRL, eager attention, bf16 autocast on the CPU; the weights move and
    the loss the trainer logs is finite."""
    from sentence_transformers import SentenceTransformer

    tiny_transformer_model(tmp_path / "tok", small_corpus.queries[:100] + small_corpus.passages[:100],
                           seed=0).save(str(tmp_path / "base"))
    model = SentenceTransformer(str(tmp_path / "base"), device="cpu", model_kwargs={"attn_implementation": "eager"})
    before = _weights(model)
    setup = DeviceSetup("cpu", "bfloat16", "cpu (test)")
    result = train_run(model, small_corpus, RunSpec("mono", None, 0), _preset(chunk_size=3, max_steps=3),
                       tmp_path / "run", {"query": "query: ", "passage": "passage: "}, setup=setup)
    assert np.abs(_weights(model) - before).max() > 0
    assert result.sampler_config["mode"] == "mono" and result.seconds > 0
    assert next(model.parameters()).dtype == torch.float32  # autocast: the weights stay float32
    assert result.training_path["chunk_size"] == 3 and result.training_path["path"].startswith("uncompiled")
    assert sorted(result.loss_curve) == [1, 2, 3] and all(np.isfinite(v) for v in result.loss_curve.values())


def test_bf16_encoding_gives_the_float32_metrics_within_rounding(tmp_path, data_dir):
    """Evaluation encodes in bf16 autocast but scores in float32: the figures stay those of a float32 encoding."""
    from sentence_transformers_hybrid.experiment import evaluate_model

    preset = Preset(**{**PRESETS["smoke"].to_dict(), "query_prompt": "query: ", "passage_prompt": "passage: "})
    corpus, bench = load_data(preset, data_dir)
    model = tiny_transformer_model(tmp_path, corpus.queries[:200] + corpus.passages[:200], seed=0)
    fp32 = evaluate_model(model, bench, preset, name="m")
    bf16 = evaluate_model(model, bench, preset, name="m", setup=DeviceSetup("cpu", "bfloat16", "cpu"))
    for key in ("mono_map@20", "cross_map@20", "multi_map@20"):
        assert abs(fp32[key] - bf16[key]) < 0.02, (key, fp32[key], bf16[key])
    assert abs(fp32["cka"] - bf16["cka"]) < 0.02


def test_presets_that_train_for_minutes_checkpoint_and_the_frozen_head_does_not():
    assert PRESETS["finetune"].save_steps == 50 and PRESETS["gpu"].save_steps == 50
    # the cpu preset's head trains in seconds on cached vectors, and its lookup input module cannot be saved
    assert not PRESETS["cpu"].save_steps
