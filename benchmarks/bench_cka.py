"""Benchmark: sentence_transformers_hybrid.metrics.cka.linear_cka against ckatorch and pytorch-cka on the same data.

Run once from the repository root (2 cores, ~24 GB RAM):

    /work/venv/bin/python benchmarks/bench_cka.py            # everything, ckatorch n=20,000 guarded
    /work/venv/bin/python benchmarks/bench_cka.py --skip-20k  # without the 16 GB ckatorch run

Data: float32 "embeddings" X [n x 384] and Y [n x 384] that share a 32-dimensional latent (CKA about 0.5), generated
from a fixed seed, so every peer sees identical inputs. Peers run in a child process (same data regenerated from the
seed) so that their peak memory can be measured and a watchdog can kill them before the machine runs out of memory.
Timings are wall-clock; ours is the best of 3, each peer runs once (they take seconds to minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

D = 384


def make_data(n: int, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 32), dtype=np.float32)
    X = z @ rng.standard_normal((32, d), dtype=np.float32) + 2.0 * rng.standard_normal((n, d), dtype=np.float32)
    Y = np.tanh(z @ rng.standard_normal((32, d), dtype=np.float32))
    Y += 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    X += 0.3  # a common offset, as real embeddings have
    return X, Y


def bare_float64(X: np.ndarray, Y: np.ndarray) -> float:
    """The textbook feature-space formula (biased) on a full float64 copy: no validation, no chunking."""
    Xc = X.astype(np.float64)
    Xc -= Xc.mean(0)
    Yc = Y.astype(np.float64)
    Yc -= Yc.mean(0)
    return float(np.linalg.norm(Xc.T @ Yc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)))


def best_of(fn, repeats: int = 3) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return min(times), value


# ---------------------------------------------------------------------------------------------------------------------
# peers, run in a child process
# ---------------------------------------------------------------------------------------------------------------------
def worker(peer: str, n: int, debiased: bool) -> None:
    import torch

    X, Y = make_data(n)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    t = time.perf_counter()
    if peer == "ckatorch":
        from ckatorch.core import cka_base

        value = float(cka_base(x, y, kernel="linear", unbiased=debiased))
    elif peer == "pytorch-cka":
        from cka import cka_from_features  # pytorch-cka: Gram-based, in the input dtype, clamped to [0, 1]

        if not debiased:
            raise SystemExit("pytorch-cka only implements the unbiased estimator")
        value = float(cka_from_features(x, y).squeeze())
    else:
        raise SystemExit(f"unknown peer {peer}")
    print(json.dumps({"seconds": time.perf_counter() - t, "value": value}))


def run_peer(peer: str, n: int, debiased: bool, min_free_gb: float = 1.5) -> dict:
    """Run a peer in a child process; sample its RSS; kill it if the machine's free memory drops below min_free_gb."""
    import psutil

    cmd = [sys.executable, __file__, "--worker", peer, str(n), "1" if debiased else "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    base_rss = None
    peak, killed = 0, None
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss
        except psutil.Error:
            break
        base_rss = rss if base_rss is None else base_rss
        peak = max(peak, rss)
        if psutil.virtual_memory().available < min_free_gb * 2**30:
            proc.kill()
            killed = f"killed by the watchdog at {peak / 2**30:.1f} GB RSS (machine had < {min_free_gb} GB free)"
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    if killed:
        return {"error": killed, "peak_rss_gb": peak / 2**30}
    if proc.returncode != 0:
        return {"error": (err.strip().splitlines() or ["?"])[-1], "peak_rss_gb": peak / 2**30}
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_gb"] = peak / 2**30
    return res


# ---------------------------------------------------------------------------------------------------------------------
def peak_memory_growth(fn) -> tuple[float, float, float]:
    """(seconds, tracemalloc peak MB, peak RSS growth MB) of fn(), RSS sampled every 10 ms in a thread."""
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    th = threading.Thread(target=sample, daemon=True)
    tracemalloc.start()
    th.start()
    t = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t
    stop.set()
    th.join()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return seconds, traced_peak / 2**20, (peak[0] - base) / 2**20


def main() -> None:
    from sentence_transformers_hybrid.metrics.cka import linear_cka

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-20k", action="store_true", help="skip the ckatorch run at n=20,000 (needs ~16 GB)")
    ap.add_argument("--skip-200k", action="store_true")
    args = ap.parse_args()
    import psutil

    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GB RAM, "
          f"{psutil.virtual_memory().available / 2**30:.1f} GB available; load average {os.getloadavg()[0]:.2f}")

    # ---------------- n = 8,000 ----------------
    n = 8000
    X, Y = make_data(n)
    print(f"\n== n={n}, d={D}, float32 input ==")
    t_b, v_b = best_of(lambda: linear_cka(X, Y))
    t_d, v_d = best_of(lambda: linear_cka(X, Y, debiased=True))
    t_bare, v_bare = best_of(lambda: bare_float64(X, Y))
    print(f"ours biased     {t_b * 1e3:8.1f} ms  CKA={v_b:.10f}")
    print(f"ours debiased   {t_d * 1e3:8.1f} ms  CKA={v_d:.10f}")
    print(f"bare float64    {t_bare * 1e3:8.1f} ms  CKA={v_bare:.10f}  (ours/bare time: {t_b / t_bare:.2f})")
    for peer, deb, ours_t, ours_v in [("ckatorch", False, t_b, v_b), ("ckatorch", True, t_d, v_d),
                                      ("pytorch-cka", True, t_d, v_d)]:
        r = run_peer(peer, n, deb)
        label = f"{peer} {'debiased' if deb else 'biased'}"
        if "error" in r:
            print(f"{label:22s} FAILED: {r['error']}")
            continue
        print(f"{label:22s} {r['seconds']:8.2f} s  CKA={r['value']:.10f}  peak RSS {r['peak_rss_gb']:.2f} GB  "
              f"|diff|={abs(r['value'] - ours_v):.1e}  -> ours is {r['seconds'] / ours_t:.0f}x faster")

    # ---------------- n = 20,000 ----------------
    n = 20000
    X, Y = make_data(n)
    print(f"\n== n={n}, d={D} ==")
    t_b, v_b = best_of(lambda: linear_cka(X, Y))
    t_d, v_d = best_of(lambda: linear_cka(X, Y, debiased=True))
    print(f"ours biased     {t_b * 1e3:8.1f} ms  CKA={v_b:.10f}")
    print(f"ours debiased   {t_d * 1e3:8.1f} ms  CKA={v_d:.10f}")
    if args.skip_20k:
        print("ckatorch biased: skipped (--skip-20k)")
    else:
        avail = psutil.virtual_memory().available / 2**30
        if avail < 17:
            print(f"ckatorch biased: skipped, only {avail:.1f} GB available (it needs ~16 GB)")
        else:
            r = run_peer("ckatorch", n, False)
            if "error" in r:
                print(f"ckatorch biased FAILED: {r['error']}")
            else:
                print(f"ckatorch biased {r['seconds']:8.2f} s  CKA={r['value']:.10f}  peak RSS {r['peak_rss_gb']:.2f} GB  "
                      f"|diff|={abs(r['value'] - v_b):.1e}  -> ours is {r['seconds'] / t_b:.0f}x faster")
    del X, Y

    # ---------------- n = 200,000 ----------------
    if not args.skip_200k:
        n = 200_000
        X, Y = make_data(n)
        print(f"\n== n={n}, d={D}, debiased (inputs: {(X.nbytes + Y.nbytes) / 2**20:.0f} MB float32) ==")
        secs, traced, rss = peak_memory_growth(lambda: linear_cka(X, Y, debiased=True))
        print(f"ours debiased   {secs:8.2f} s  tracemalloc peak {traced:.0f} MB  peak RSS growth {rss:.0f} MB "
              f"(a float64 copy of the inputs would be {(X.nbytes + Y.nbytes) * 2 / 2**20:.0f} MB)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")
    else:
        main()
