"""Carry the `gpu` preset to a GPU machine that has torch / transformers / sentence-transformers but no network.

Two steps, one script:

    # here (with network to PyPI): trimmed weight file, compressed data, wheels -> .carry/ (about 35 MB)
    python scripts/gpu_preset.py pack --data-dir ../shared/data/lareqa
    # there (repository root, .carry/ carried along; $OUT comes back):
    python3 scripts/gpu_preset.py run --output-dir "$OUT/gpu"

`run` installs the wheels into /tmp/site (no network, no dependency resolution), unpacks the data, converts the
trimmed e5-small (the full weight file does not fit in a 64 MiB transfer; trimming keeps every piece that
XQuAD-R + MLQA-R use, so their pieces and embeddings are unchanged) and runs
`run_experiment("gpu", ...)`, which writes results.json, results.md, the plots and runs.json into --output-dir.
Copy those into docs/results/gpu/.

Status: written without a GPU at hand; the pieces it calls are tested (trimming, conversion, the gpu preset's
code path with a tiny transformer), the script as a whole has not run on a GPU machine yet.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRY = ROOT / ".carry"
#: Not on the GPU machine (torch, transformers, sentence-transformers, numpy, pandas, pyarrow, matplotlib are).
WHEELS = ["datasets", "dill", "multiprocess", "xxhash", "fsspec", "beir", "pytrec-eval-terrier", "sentencex"]


def pack(data_dir: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from sentence_transformers_hybrid.models.trim import collect_texts, trim_e5_weight_file

    CARRY.mkdir(exist_ok=True)
    texts = collect_texts(data_dir)
    print(f"trimming the e5 weight file to the {len(texts):,} LAReQA texts")
    trim_e5_weight_file(texts, CARRY / "e5-lareqa-q4.bin")
    with tarfile.open(CARRY / "lareqa.tar.gz", "w:gz") as tar:
        for name in ("xquad-r", "mlqa-r"):
            tar.add(data_dir / name, arcname=f"lareqa/{name}")
    wheels = CARRY / "wheels"
    wheels.mkdir(exist_ok=True)
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")]
    for name in WHEELS:  # one at a time, so that a wheel pip skips cannot go unnoticed
        before = set(wheels.iterdir())
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(wheels), name],
                       check=True)
        if set(wheels.iterdir()) == before and not any(p.name.lower().startswith(name.replace("-", "_"))
                                                        for p in wheels.iterdir()):
            raise SystemExit(f"no wheel of {name!r} was downloaded")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)], check=True)
    size = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    print(f"packed {size / 2**20:.1f} MiB into {CARRY} (limit per device call: 64 MiB with the working tree)")
    print("device command:  python3 scripts/gpu_preset.py run --output-dir \"$OUT/gpu\"   (carry: .carry)")


def run(output_dir: Path) -> None:
    site = Path("/tmp/site")
    wheels = sorted(str(p) for p in (CARRY / "wheels").glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--upgrade", "--target", str(site), *wheels], check=True)
    sys.path.insert(0, str(site))
    data = Path("/tmp/lareqa-data")
    with tarfile.open(CARRY / "lareqa.tar.gz") as tar:
        tar.extractall(data, filter="data")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("STH_CACHE_DIR", "/tmp/sth-cache")
    from sentence_transformers_hybrid.models.e5 import convert_e5_small
    from sentence_transformers_hybrid.experiment import run_experiment

    model = convert_e5_small(output_dir="/tmp/e5-small-lareqa", model_file=CARRY / "e5-lareqa-q4.bin")
    command = "python3 scripts/gpu_preset.py run --output-dir " + str(output_dir)
    run_experiment("gpu", data_dir=data / "lareqa", output_dir=output_dir, model_path=model, command=command)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("STH_DATA_DIR", ROOT.parent / "shared/data/lareqa")))
    r = sub.add_parser("run")
    r.add_argument("--output-dir", type=Path, required=True)
    args = ap.parse_args()
    pack(args.data_dir) if args.step == "pack" else run(args.output_dir)


if __name__ == "__main__":
    main()
