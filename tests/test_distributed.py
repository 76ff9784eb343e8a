"""A real 2-process run (torchrun, gloo, CPU) of the stock trainer with HybridBatchSampler and gathered MNRL.

The worker (tests/distributed_train.py) records which examples each rank trained on at every step; this test reads
both ranks' records and checks the DDP guarantees of docs/sampling.md and that a run resumed in epoch 1 trains the
batches of the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "distributed_train.py"


def _gloo_available() -> tuple[bool, str]:
    import torch.distributed as dist

    if not dist.is_available():
        return False, "torch.distributed is not available in this torch build"
    if not dist.is_gloo_available():
        return False, "torch.distributed has no gloo backend in this torch build"
    return True, ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    ok, why = _gloo_available()
    if not ok:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(WORKER), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return [json.loads((out / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]


def _steps(ranks: list[dict], run: str) -> list[list[list[str]]]:
    """Per step, the two rank batches concatenated (rank 0 first)."""
    return [a + b for a, b in zip(ranks[0][run], ranks[1][run])]


def test_two_processes_train_one_global_batch_per_step(ranks):
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    B = ranks[0]["batch_size"]
    kinds = set()
    for run in ("full", "stopped", "resumed"):
        assert len(ranks[0][run]) == len(ranks[1][run])
        for i, (b0, b1) in enumerate(zip(ranks[0][run], ranks[1][run])):
            assert len(b0) == len(b1) == B, (run, i)
            both = b0 + b1
            groups = [g for g, _, _, _ in both]
            assert len(set(groups)) == 2 * B, f"{run} step {i}: a group twice in one step: {groups}"
            assert len({src for *_, src in both}) == 1, f"{run} step {i}: several sources"
            mono = [q == p for _, q, p, _ in both]
            if all(mono):
                assert len({q for _, q, _, _ in both}) == 1, f"{run} step {i}: mono batch in several languages"
                kinds.add("mono")
            else:
                assert not any(mono), f"{run} step {i}: mono and cross pairs in one step"
                kinds.add("cross")
    assert kinds == {"mono", "cross"}  # hybrid mode drew both kinds, so the checks above were exercised


def test_every_group_once_per_epoch_on_two_processes(ranks):
    per_epoch = 48 // (2 * ranks[0]["batch_size"])  # 2 sources x 24 groups, 8 per step: 6 steps per epoch
    for run in ("full", "resumed"):
        steps = _steps(ranks, "full") if run == "full" else _steps(ranks, "stopped") + _steps(ranks, "resumed")
        for epoch in (0, 1):
            groups = [g for step in steps[epoch * per_epoch : (epoch + 1) * per_epoch] for g, *_ in step]
            assert len(groups) == len(set(groups)) == 48, (run, epoch)


def test_resume_in_epoch_1_on_two_processes_trains_the_uninterrupted_batches(ranks):
    stop = ranks[0]["stop_at"]
    for r in ranks:
        assert len(r["full"]) == r["max_steps"] and len(r["stopped"]) == stop
        assert len(r["resumed"]) == r["max_steps"] - stop
        assert r["stopped"] == r["full"][:stop]
        # the resumed steps are epoch 1's (and then epoch 2's), not a replay of epoch 0's order
        assert r["resumed"] == r["full"][stop:], f"rank {r['rank']}: resumed batches differ from the uninterrupted run"


def _trainer(tmp_path):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from sentence_transformers_hybrid import ParallelCorpus
    from sentence_transformers_hybrid.losses import hybrid_loss
    from sentence_transformers_hybrid.testing import tiny_static_model

    recs = [{"group": f"g{i}", "lang": lang, "query": f"q{i} {lang}", "passage": f"p{i} {lang}"}
            for i in range(4) for lang in ("de", "en")]
    model = tiny_static_model([r["query"] + " " + r["passage"] for r in recs], dim=8, seed=0)
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    return SentenceTransformerTrainer(model=model, args=args, train_dataset=ParallelCorpus.from_records(recs).to_dataset(),
                                      loss=hybrid_loss(model))


@pytest.mark.parametrize("main_process", [False, True])
def test_save_from_main_process_writes_model_files_on_the_saving_rank_only(tmp_path, monkeypatch, main_process):
    """The stock trainer's save path (save_model -> _save), with ``should_save`` as a non-main rank sees it."""
    from sentence_transformers_hybrid import save_from_main_process

    trainer = _trainer(tmp_path)
    assert save_from_main_process(save_from_main_process(trainer)) is trainer  # twice: one wrapper
    monkeypatch.setattr(type(trainer.args), "should_save", property(lambda self: main_process))
    trainer.save_model(str(tmp_path / "ckpt"))
    written = sorted(p.name for p in (tmp_path / "ckpt").iterdir()) if (tmp_path / "ckpt").is_dir() else []
    if main_process:
        assert {"model.safetensors", "modules.json", "tokenizer.json"} <= set(written), written
    else:
        assert written == [], f"a rank with should_save=False wrote {written}"


def test_save_from_main_process_rejects_what_is_not_a_trainer():
    from sentence_transformers_hybrid import save_from_main_process

    with pytest.raises(TypeError, match="needs a transformers Trainer"):
        save_from_main_process(object())
