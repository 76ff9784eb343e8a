"""``torchrun --nproc_per_node=2 -m sentence_transformers_hybrid miracl`` (gloo, CPU): the ranks split the shards,
rank 0 searches and scores, and the run files equal one process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentence_transformers_hybrid.data.miracl import write_miracl_layout
from sentence_transformers_hybrid.testing import tiny_static_model

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [f"passage {i} about subject {i % 9} and {i % 4}" for i in range(90)]
PASSAGES = [{"docid": f"{i // 5}#{i % 5}", "title": "", "text": t} for i, t in enumerate(TEXTS)]
QUERIES = {f"q{t}": f"subject {t}" for t in range(9)}
QRELS = {f"q{t}": {PASSAGES[t]["docid"]: 1, PASSAGES[t + 9]["docid"]: 0} for t in range(9)}


def test_two_processes_write_the_run_files_of_one(tmp_path):
    import socket

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    data = write_miracl_layout(tmp_path / "data", "sw", QUERIES, QRELS, PASSAGES, files=2)
    write_miracl_layout(tmp_path / "data", "yo", QUERIES, QRELS, PASSAGES[:50] + PASSAGES[60:], files=1)
    model_dir = tmp_path / "model"
    tiny_static_model(TEXTS + list(QUERIES.values()), dim=16).save(str(model_dir))
    args = ["miracl", "--model", str(model_dir), "--data-dir", str(data), "--languages", "sw", "yo",
            "--shard-size", "10", "--batch-size", "8", "--top-k", "20"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    from sentence_transformers import SentenceTransformer

    from sentence_transformers_hybrid.evaluation.miracl import evaluate_miracl

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker (OMP_NUM_THREADS=1): a float sum's order follows the threads
    try:
        evaluate_miracl(SentenceTransformer(str(model_dir), device="cpu"), ["sw", "yo"], data, tmp_path / "one",
                        shard_size=10, batch_size=8, top_k=20, model_name=str(model_dir), show_progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                          "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "sentence_transformers_hybrid",
                          *args, "--output-dir", str(tmp_path / "two")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, f"{two.stdout[-2000:]}\n{two.stderr[-4000:]}"
    for lang in ("sw", "yo"):
        assert (tmp_path / "two/runs" / f"{lang}.trec").read_text() == (tmp_path / "one/runs" / f"{lang}.trec").read_text()
        # each rank encoded its own shards (round robin)
        shards = sorted((tmp_path / "two/index" / lang).glob("shard-*.json"))
        assert len(shards) == (9 if lang == "sw" else 8)
        assert [json.loads(p.read_text())["encoded_by"] for p in shards] == [f"{s % 2}/2" for s in range(len(shards))]
    m1 = json.loads((tmp_path / "one/metrics.json").read_text())
    m2 = json.loads((tmp_path / "two/metrics.json").read_text())
    assert m2["languages"] == m1["languages"] and m2["index"]["processes"] == 2
