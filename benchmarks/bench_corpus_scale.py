"""Corpora beyond memory: encode to disk and exact search at 100k, 1M and 10M passages (issue 21 item 8). Run alone.

    python benchmarks/bench_corpus_scale.py                        # 100k, 1M, 10M (disk: about 2 x 8 GB at 10M)
    python benchmarks/bench_corpus_scale.py --sizes 100k 1M        # choose sizes
    python benchmarks/bench_corpus_scale.py --quick                # about a minute: 20k and 50k, small peers

Per size, a synthetic corpus in MIRACL's layout (``miracl-corpus-v1.0-xx/docs-N.jsonl.gz``, plus topics and qrels,
so ``st-hybrid miracl`` runs on it too) is generated vectorised (fixed-width JSON lines built as one byte array) and
then, each in **its own subprocess** so that one size's peak memory never carries into the next:

* **encode**: :func:`~sentence_transformers_hybrid.index.encode_corpus` with a static-embedding model (a word-level
  ``StaticEmbedding``, ``--dim`` 384; encoding is cheap, so reading, shard writing and search show), float16 shards;
  passages/s;
* **search**: ``--queries`` random unit vectors against the encoded index with
  :func:`~sentence_transformers_hybrid.index.search` (exact, ``top_k`` 100); query x passage pairs/s;
* **search alone**: the same on random unit vectors written straight to a memory-mapped shard (no model, no text);
* **peers**, at the sizes up to ``--peer-max`` (they hold the corpus and its float32 matrix in RAM): the same search
  through BEIR's ``DenseRetrievalExactSearch`` and sentence-transformers' ``InformationRetrievalEvaluator``
  (``compute_metrices`` with the corpus embeddings given), both fed the same vectors; printed as time ratios
  (``peer / ours``: above 1 means ours is faster);
* **torchrun**: at ``--torchrun-size`` passages, the encode under ``torchrun --nproc_per_node=2`` against one process,
  each process with ``--threads`` torch threads; printed as a ratio (2 means perfect scaling).

Peak memory is each subprocess's own peak resident set (``VmHWM``, what ``ru_maxrss`` means, read from
``/proc/self/status`` because Linux's ``ru_maxrss`` keeps the forked parent's peak across ``exec``; it counts the pages of memory-mapped shards the search
has touched, which the kernel can drop at any time) and its peak ``RssAnon`` sampled every 20 ms (the memory the
process itself holds: what must stay flat from 100k to 10M). Disk: the corpus files and the index folder. The last
line extrapolates the measured rates to MIRACL English (32,893,221 passages) on this machine.

Timings depend on what else runs: the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: MIRACL English (MIRACL README): passages of the corpus, topics of the dev split.
MIRACL_EN_PASSAGES = 32_893_221
LANG = "xx"
WORD_LEN = 6  # letters per synthetic word (+ 1 space)
VOCAB = 20_000


# ---------------------------------------------------------------------------------------------- helpers
def parse_size(text: str) -> int:
    """``"100k"`` -> 100000, ``"1M"`` -> 1000000, ``"2500"`` -> 2500."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected a number with an optional k or M")
    return int(float(m.group(1)) * {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}[m.group(2)])


def human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def human_bytes(n: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def vocabulary() -> np.ndarray:
    """``[VOCAB x WORD_LEN]`` uint8: lowercase words, the base-26 digits of their index."""
    digits = (np.arange(VOCAB)[:, None] // 26 ** np.arange(WORD_LEN - 1, -1, -1)) % 26
    return (digits + ord("a")).astype(np.uint8)


def status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``RssAnon``, ``VmHWM``) in bytes; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakAnon:
    """Peak ``RssAnon`` (bytes) of this process, sampled every 20 ms in a thread (Linux; 0 elsewhere)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        return status_bytes("RssAnon") or 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(0.02)

    def __enter__(self) -> PeakAnon:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def max_rss_bytes() -> int:
    """This process's peak resident set (``VmHWM``). Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that
    across ``exec`` from the forked parent, so every child would report at least the parent's peak."""
    hwm = status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best there is
    return kb if sys.platform == "darwin" else kb * 1024


# ----------------------------------------------------------------------------------------- generation
def write_corpus(root: Path, n: int, words: int, n_queries: int, seed: int, per_file: int = 1_000_000) -> Path:
    """A synthetic MIRACL-layout language ``xx`` under ``root``: ``n`` passages of ``words`` random words in
    ``docs-NN.jsonl.gz`` files of ``per_file`` lines, ``n_queries`` topics and one relevant passage each."""
    import gzip

    rng = np.random.default_rng(seed)
    vocab = np.concatenate([vocabulary(), np.full((VOCAB, 1), ord(" "), np.uint8)], axis=1)  # word + space
    corpus_dir = root / f"miracl-corpus-v1.0-{LANG}"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    prefix, mid, suffix = b'{"docid": "', b'", "title": "", "text": "', b'"}\n'
    id_width = max(9, len(str(n)))
    n_files = -(-n // per_file)
    width = len(str(max(0, n_files - 1)))
    chunk = 50_000
    for f in range(n_files):
        lo, hi = f * per_file, min(n, (f + 1) * per_file)
        with open(corpus_dir / f"docs-{f:0{width}d}.jsonl.gz", "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1, filename="") as gz:
            for a in range(lo, hi, chunk):
                b = min(hi, a + chunk)
                rows = np.arange(a, b, dtype=np.int64)
                ids = ((rows[:, None] // 10 ** np.arange(id_width - 1, -1, -1)) % 10 + ord("0")).astype(np.uint8)
                ids = np.concatenate([ids, np.full((len(rows), 2), [ord("#"), ord("0")], np.uint8)], axis=1)
                text = vocab[rng.integers(0, VOCAB, size=(len(rows), words))].reshape(len(rows), -1)[:, :-1]
                parts = [np.broadcast_to(np.frombuffer(prefix, np.uint8), (len(rows), len(prefix))), ids,
                         np.broadcast_to(np.frombuffer(mid, np.uint8), (len(rows), len(mid))), text,
                         np.broadcast_to(np.frombuffer(suffix, np.uint8), (len(rows), len(suffix)))]
                gz.write(np.concatenate(parts, axis=1).tobytes())
    topic_dir, qrels_dir = root / f"miracl-v1.0-{LANG}" / "topics", root / f"miracl-v1.0-{LANG}" / "qrels"
    topic_dir.mkdir(parents=True, exist_ok=True)
    qrels_dir.mkdir(parents=True, exist_ok=True)
    words_q = vocabulary()[rng.integers(0, VOCAB, size=(n_queries, 8))]
    relevant = rng.integers(0, n, size=n_queries)
    (topic_dir / f"topics.miracl-v1.0-{LANG}-dev.tsv").write_text(
        "".join(f"{i}\t{' '.join(w.tobytes().decode() for w in q)}\n" for i, q in enumerate(words_q)))
    (qrels_dir / f"qrels.miracl-v1.0-{LANG}-dev.tsv").write_text(
        "".join(f"{i}\tQ0\t{r:0{id_width}d}#0\t1\n" for i, r in enumerate(relevant.tolist())))
    return corpus_dir


def build_model(path: Path, dim: int, seed: int = 0) -> None:
    """A word-level ``StaticEmbedding`` over the synthetic vocabulary, saved to ``path``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [w.tobytes().decode() for w in vocabulary()]
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    weights = np.random.default_rng(seed).standard_normal((VOCAB + 1, dim)).astype(np.float32)
    SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=weights)], device="cpu").save(str(path))


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------- children
def child_encode(args: argparse.Namespace) -> dict:
    """Encode ``args.data``'s corpus into ``args.index`` (also under torchrun: each rank its shards)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from sentence_transformers_hybrid.data.passages import PassageSource
    from sentence_transformers_hybrid.index import barrier, dist_context, encode_corpus, init_distributed

    torch.set_num_threads(args.threads)
    init_distributed()
    rank, world = dist_context()
    model = SentenceTransformer(args.model, device="cpu")
    files = sorted((Path(args.data) / f"miracl-corpus-v1.0-{LANG}").glob("docs-*.jsonl.gz"))
    source = PassageSource.from_jsonl_gz(files)
    barrier()
    t = time.perf_counter()
    with PeakAnon() as anon:
        encode_corpus(model, source, args.index, batch_size=args.batch_size, shard_size=args.shard_size,
                      dtype="float16", show_progress_bar=False)
        barrier()
    seconds = time.perf_counter() - t
    return {"rank": rank, "world": world, "encode_s": seconds, "passages": args.size,
            "peak_anon": anon.peak, "max_rss": max_rss_bytes()}


def child_search(args: argparse.Namespace) -> dict:
    """Our exact search of random unit queries against the index at ``args.index`` (or random unit vectors)."""
    import torch

    from sentence_transformers_hybrid.index import CorpusIndex, Shard, search

    torch.set_num_threads(args.threads)
    q = unit_rows(args.queries, args.dim, seed=1)
    if args.vectors:  # random unit vectors written straight to a memory-mapped shard: search alone
        path = Path(args.index) / "vectors.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        emb = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(args.size, args.dim))
        for a in range(0, args.size, 200_000):
            b = min(args.size, a + 200_000)
            emb[a:b] = unit_rows(b - a, args.dim, seed=1000 + a // 200_000)
        emb.flush()
        del emb
    with PeakAnon() as anon:  # from here on: what the search holds
        if args.vectors:
            emb = np.load(Path(args.index) / "vectors.npy", mmap_mode="r")
            index = CorpusIndex([Shard(emb, np.zeros(args.size, dtype="S1"), {"rows": args.size, "finished": True})])
        else:
            index = CorpusIndex.open(args.index)
        t = time.perf_counter()
        result = search(q, index, top_k=100)
        seconds = time.perf_counter() - t
    disk = folder_bytes(Path(args.index))
    return {"search_s": seconds, "pairs": args.queries * len(index), "peak_anon": anon.peak,
            "max_rss": max_rss_bytes(), "index_bytes": disk, "top_rows": result.rows[:, :10].tolist()}


def child_peer(args: argparse.Namespace) -> dict:
    """The same search through BEIR's DenseRetrievalExactSearch or sentence-transformers' IR evaluator."""
    import torch

    from sentence_transformers_hybrid.index import CorpusIndex

    torch.set_num_threads(args.threads)
    q = torch.from_numpy(unit_rows(args.queries, args.dim, seed=1))
    index = CorpusIndex.open(args.index)
    with PeakAnon() as anon:
        c = torch.from_numpy(np.concatenate([np.asarray(s.embeddings, dtype=np.float32) for s in index.shards]))
        qids = [f"q{i}" for i in range(len(q))]
        if args.peer == "beir":
            from beir.retrieval.search.dense import DenseRetrievalExactSearch

            class Fixed:  # hands BEIR the stored vectors instead of encoding text
                def encode_queries(self, queries, batch_size=None, **kw):
                    return q

                def encode_corpus(self, corpus, batch_size=None, **kw):
                    return c[torch.tensor([d["row"] for d in corpus])]

            corpus = {str(i): {"title": "", "text": "", "row": i} for i in range(len(c))}
            dres = DenseRetrievalExactSearch(Fixed(), batch_size=1024, corpus_chunk_size=50_000)
            t = time.perf_counter()
            dres.search(corpus, dict(zip(qids, [""] * len(qids))), top_k=100, score_function="dot")
            seconds = time.perf_counter() - t
        else:
            from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
            from sentence_transformers.util import dot_score

            class Fixed:  # hands the evaluator the stored query vectors
                def encode_query(self, sentences, **kw):
                    return q

            docids = [str(i) for i in range(len(c))]
            ev = InformationRetrievalEvaluator(
                dict(zip(qids, qids)), dict(zip(docids, docids)), {qid: {"0"} for qid in qids},
                corpus_chunk_size=50_000, mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[10],
                precision_recall_at_k=[100], map_at_k=[100], write_csv=False, score_functions={"dot": dot_score})
            t = time.perf_counter()
            ev.compute_metrices(Fixed(), corpus_embeddings=c)
            seconds = time.perf_counter() - t
    return {"search_s": seconds, "peak_anon": anon.peak, "max_rss": max_rss_bytes()}


def run_child(argv: list[str], result_dir: Path, torchrun: int = 0, threads: int = 1) -> dict:
    """Run this script as a child (under ``torchrun`` with ``torchrun`` processes) and read what its ranks wrote."""
    for old in result_dir.glob("result-*.json"):
        old.unlink()
    script = str(Path(__file__).resolve())
    cmd = [sys.executable, script, *argv, "--result-dir", str(result_dir)]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
               script, *argv, "--result-dir", str(result_dir)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    results = [json.loads(p.read_text()) for p in sorted(result_dir.glob("result-*.json"))]
    if out.returncode != 0 or not results:
        raise RuntimeError(f"child {' '.join(argv)} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return max(results, key=lambda r: r.get("encode_s", r.get("search_s", 0)))  # the slowest rank


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=parse_size, default=None, help="passages per corpus (100k 1M 10M)")
    ap.add_argument("--quick", action="store_true", help="about a minute: 20k and 50k, peers and torchrun at 20k")
    ap.add_argument("--out-dir", default=None, help="where corpora and indexes go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep each size's corpus and index (default: removed)")
    ap.add_argument("--queries", type=int, default=1000, help="random unit query vectors for the search")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--words", type=int, default=48, help="words per synthetic passage")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--shard-size", type=int, default=100_000)
    ap.add_argument("--peer-max", type=parse_size, default=parse_size("1M"), help="largest size the peers run at")
    ap.add_argument("--torchrun-size", type=parse_size, default=parse_size("200k"))
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="torch threads per process (the torchrun comparison gives each of its 2 processes as many)")
    ap.add_argument("--no-vectors", action="store_true", help="skip the search on random unit vectors")
    # children (internal)
    ap.add_argument("--child", choices=["encode", "search", "peer"], help=argparse.SUPPRESS)
    ap.add_argument("--peer", choices=["beir", "st"], help=argparse.SUPPRESS)
    ap.add_argument("--vectors", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--result-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        result = {"encode": child_encode, "search": child_search, "peer": child_peer}[args.child](args)
        rank = os.environ.get("RANK", "0")
        (Path(args.result_dir) / f"result-{rank}.json").write_text(json.dumps(result))
        return

    if args.quick:
        args.sizes = args.sizes or [20_000, 50_000]
        args.peer_max = min(args.peer_max, 20_000)
        args.torchrun_size = min(args.torchrun_size, 20_000)
        args.queries = min(args.queries, 200)
        args.shard_size = min(args.shard_size, 10_000)
    sizes = sorted(args.sizes or [100_000, 1_000_000, 10_000_000])
    out = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="bench_corpus_scale_"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        run(args, sizes, out)
    finally:
        if not args.out_dir and not args.keep:
            shutil.rmtree(out, ignore_errors=True)


def run(args: argparse.Namespace, sizes: list[int], out: Path) -> None:
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; torch threads per process: {args.threads}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"sizes {', '.join(human(s) for s in sizes)}; {args.queries} queries, dim {args.dim}, {args.words} words a "
          f"passage, shards of {human(args.shard_size)}, float16; output {out}")
    model = out / "static-model"
    if not model.is_dir():
        build_model(model, args.dim)
    common = ["--model", str(model), "--queries", str(args.queries), "--dim", str(args.dim),
              "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size),
              "--threads", str(args.threads)]

    rows = []
    for n in sizes:
        data, index = out / f"corpus-{n}", out / f"index-{n}"
        t = time.perf_counter()
        write_corpus(data, n, args.words, args.queries, seed=n)
        gen_s = time.perf_counter() - t
        shutil.rmtree(index, ignore_errors=True)
        enc = run_child(["--child", "encode", "--size", str(n), "--data", str(data), "--index", str(index), *common],
                        out, threads=args.threads)
        srch = run_child(["--child", "search", "--size", str(n), "--index", str(index), *common], out, threads=args.threads)
        row = {"passages": n, "generate_s": gen_s, "corpus_bytes": folder_bytes(data), "index_bytes": srch["index_bytes"],
               "encode_per_s": n / enc["encode_s"], "encode_anon": enc["peak_anon"], "encode_rss": enc["max_rss"],
               "search_pairs_per_s": srch["pairs"] / srch["search_s"], "search_s": srch["search_s"],
               "search_anon": srch["peak_anon"], "search_rss": srch["max_rss"]}
        if not args.no_vectors:
            vec_dir = out / f"vectors-{n}"
            vec = run_child(["--child", "search", "--vectors", "--size", str(n), "--index", str(vec_dir), *common],
                            out, threads=args.threads)
            shutil.rmtree(vec_dir, ignore_errors=True)
            row.update(vectors_pairs_per_s=vec["pairs"] / vec["search_s"], vectors_anon=vec["peak_anon"],
                       vectors_rss=vec["max_rss"])
        if n <= args.peer_max:
            for peer in ("beir", "st"):
                p = run_child(["--child", "peer", "--peer", peer, "--size", str(n), "--index", str(index), *common],
                              out, threads=args.threads)
                row[f"{peer}_ratio"] = p["search_s"] / srch["search_s"]
                row[f"{peer}_anon"] = p["peak_anon"]
        rows.append(row)
        print(f"\n{human(n)} passages (generated in {gen_s:.1f} s): disk {human_bytes(row['corpus_bytes'])} corpus + "
              f"{human_bytes(row['index_bytes'])} index")
        print(f"  encode  {row['encode_per_s']:,.0f} passages/s   peak RssAnon {human_bytes(row['encode_anon'])}, "
              f"peak RSS {human_bytes(row['encode_rss'])}")
        print(f"  search  {human(row['search_pairs_per_s'])} query x passage/s ({row['search_s']:.2f} s)   peak RssAnon "
              f"{human_bytes(row['search_anon'])}, peak RSS {human_bytes(row['search_rss'])}")
        if "vectors_pairs_per_s" in row:
            print(f"  search on random unit vectors  {human(row['vectors_pairs_per_s'])} query x passage/s   peak "
                  f"RssAnon {human_bytes(row['vectors_anon'])}, peak RSS {human_bytes(row['vectors_rss'])}")
        if "beir_ratio" in row:
            print(f"  peers (time / ours): BEIR DenseRetrievalExactSearch {row['beir_ratio']:.2f}x (peak RssAnon "
                  f"{human_bytes(row['beir_anon'])}), InformationRetrievalEvaluator {row['st_ratio']:.2f}x (peak "
                  f"RssAnon {human_bytes(row['st_anon'])})")
        else:
            print(f"  peers: not run above --peer-max {human(args.peer_max)} (they hold the corpus in RAM)")
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(index, ignore_errors=True)

    # torchrun: 2 processes against 1 on the same corpus
    n = args.torchrun_size
    data = out / f"corpus-torchrun-{n}"
    write_corpus(data, n, args.words, args.queries, seed=7)
    shard = max(1, min(args.shard_size, n // 8))
    tr = {}
    for procs in (1, 2):
        index = out / f"index-torchrun-{procs}"
        shutil.rmtree(index, ignore_errors=True)
        argv = ["--child", "encode", "--size", str(n), "--data", str(data), "--index", str(index), *common,
                "--shard-size", str(shard)]
        tr[procs] = run_child(argv, out, torchrun=procs, threads=args.threads)
    from sentence_transformers_hybrid.index import CorpusIndex

    one, two = (CorpusIndex.open(out / f"index-torchrun-{p}") for p in (1, 2))
    same = all(np.array_equal(x.embeddings, y.embeddings) for x, y in zip(one.shards, two.shards))
    print(f"\ntorchrun encode of {human(n)} passages ({shard} a shard, {args.threads} threads a process): 1 process "
          f"{n / tr[1]['encode_s']:,.0f} passages/s, 2 processes {n / tr[2]['encode_s']:,.0f} passages/s: "
          f"{tr[1]['encode_s'] / tr[2]['encode_s']:.2f}x (the two indexes equal: {same})")
    if not args.keep:
        for p in (data, out / "index-torchrun-1", out / "index-torchrun-2"):
            shutil.rmtree(p, ignore_errors=True)

    last = rows[-1]
    enc_s = MIRACL_EN_PASSAGES / last["encode_per_s"]
    srch_s = args.queries * MIRACL_EN_PASSAGES / last["search_pairs_per_s"]
    print(f"\nMIRACL en ({MIRACL_EN_PASSAGES:,} passages) at the {human(last['passages'])} rates on this machine: "
          f"encode with this static model {enc_s / 3600:.2f} h, search of {args.queries} queries {srch_s / 60:.1f} min; "
          f"index {human_bytes(MIRACL_EN_PASSAGES * args.dim * 2)} (float16, dim {args.dim}); a transformer encoder's "
          "time is its own passages/s into the same division")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
